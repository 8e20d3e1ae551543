//! Domain rules: pure functions and types, no I/O.

pub mod approval;
pub mod baseline;
pub mod blockers;
pub mod checksum;
pub mod directives;
pub mod dispatch;
pub mod drift;
pub mod import;
pub mod lock_retry;
pub mod order;
pub mod resume;
pub mod role;
pub mod run;
pub mod schema;
pub mod signin;
pub mod slug;
pub mod split;
pub mod target;
pub mod text_enum;
pub mod version;
pub mod window;

pub use checksum::Checksum;
pub use role::{Capability, Role};
pub use run::{Direction, RunState, TargetState};
pub use slug::ProjectSlug;
pub use target::{Engine, TlsMode};
pub use version::Version;
