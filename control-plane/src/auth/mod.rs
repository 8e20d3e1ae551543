//! Who is calling, and what they may do: API tokens, browser sessions signed
//! in through OIDC, CSRF for those sessions, and the role extractors.

pub mod bearer;
pub mod csrf;
pub mod extract;
pub mod oidc;
pub mod rate_limit;
pub mod session_store;

pub use extract::{Authorized, CurrentUser, rules};
