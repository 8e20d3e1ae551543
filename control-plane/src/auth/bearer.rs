//! What the API-token lookups shared by concurrent requests hold
//! (`AppState::token_reads`).

use std::sync::atomic::AtomicBool;

use common::store::users;

/// One token lookup, shared by the requests that waited for it.
pub struct SharedBearer {
    pub bearer: Option<users::TokenBearer>,
    pub use_audited: AtomicBool,
}
