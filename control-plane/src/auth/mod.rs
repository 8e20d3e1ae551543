//! Who is calling, and what they may do.

pub mod extract;

pub use extract::{Authorized, CurrentUser, rules};
