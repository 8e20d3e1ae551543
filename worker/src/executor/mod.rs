//! Executors: one per database engine. Each takes the target lock, checks the
//! target's history against the hub, applies the pending steps of one job
//! over one dedicated connection, and reports every step as it commits.

pub mod mysql;
pub mod postgres;
pub mod tls;

use std::{fmt, time::Duration};

use common::domain::Direction;
use uuid::Uuid;

use crate::{plan::Step, report::Reporter};

/// A target password, opened from its sealed form just before connecting.
/// Its `Debug` never prints it, so it cannot leak through a log line or an
/// error built with `{:?}`.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// How to reach a target, without the tool database's bookkeeping.
#[derive(Debug, Clone)]
pub struct Connection {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: Option<Password>,
    /// `disable`, `prefer`, `require` or `verify-full` (checked by the schema).
    pub tls_mode: String,
    /// Statements run on every new session before anything else (like
    /// Flyway's `initSql`): `SET search_path = app`, `SET ROLE migrator`, …
    pub session_settings: String,
}

impl Connection {
    /// `host:port/database`, for messages. Never includes credentials.
    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }
}

/// What one job asks of its target.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub run_id: Uuid,
    pub direction: Direction,
    /// Verified pinned steps, in the run's execution order.
    pub steps: &'a [Step],
    /// From the environment's policy, pinned by the run.
    pub lock_timeout_ms: i32,
    pub statement_timeout_ms: i32,
    /// How long to wait for another migration to release the target.
    pub lock_wait: Duration,
}

/// What an executor did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// This many steps were applied (or rolled back).
    Steps(usize),
    /// The target was already where the run wants it.
    Nothing,
}

/// Why an executor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The target refused: connection, lock, drift, or a failing script. The
    /// message is the product's output and is shown on the run page.
    #[error("{message}")]
    Target {
        message: String,
        /// The version whose script failed, if one did.
        version: Option<String>,
    },
    /// The tool database failed while the job needed it (reading the
    /// applied state, or recording a step that already committed on the
    /// target). Its text is for the logs, not for users.
    #[error("{what}: {source}")]
    Hub {
        what: String,
        #[source]
        source: sqlx::Error,
    },
}

impl ExecError {
    pub fn target(message: impl Into<String>) -> Self {
        ExecError::Target {
            message: message.into(),
            version: None,
        }
    }
}

/// Runs `job` on a target of `engine`.
pub async fn execute(
    engine: &str,
    target: &Connection,
    job: &Job<'_>,
    reporter: &Reporter,
) -> Result<Applied, ExecError> {
    match engine {
        "postgres" => postgres::execute(target, job, reporter).await,
        "mysql" => mysql::execute(target, job, reporter).await,
        other => Err(ExecError::target(format!(
            "engine {other:?} is not supported by this worker"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let target = Connection {
            host: "db".into(),
            port: 5432,
            database: "app".into(),
            username: "u".into(),
            password: Some(Password::new("hunter2".into())),
            tls_mode: "disable".into(),
            session_settings: String::new(),
        };
        assert!(!format!("{target:?}").contains("hunter2"));
        assert_eq!(target.describe(), "db:5432/app");
    }
}
