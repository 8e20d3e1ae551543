//! MySQL/MariaDB targets.
//!
//! Not available yet: MySQL commits DDL implicitly, so a script must run
//! statement by statement with its progress (and a running hash of the
//! applied prefix) recorded, and a failure must leave the target marked
//! dirty. That needs the statement splitter (`split.rs`), which comes with
//! this executor. Until then a MySQL target fails clearly and untouched
//! instead of half-applying a script.

use super::{Applied, Connection, ExecError, Job};
use crate::report::Reporter;

pub async fn execute(
    _target: &Connection,
    _job: &Job<'_>,
    _reporter: &Reporter,
) -> Result<Applied, ExecError> {
    Err(ExecError::target(
        "MySQL executor is not available in this version of the worker; nothing was applied",
    ))
}
