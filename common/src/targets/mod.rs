//! Talking to target databases: opening a session with a bounded wait, the
//! connection test, and reading a target's `migrate_hub_history`.
//!
//! Shared by the worker (whose executors open their sessions here) and the
//! control plane (connection test, drift on the target state page), so both
//! connect the same way: same TLS modes, same session settings, same error
//! texts.

pub mod baseline;
pub mod introspect;
pub mod lock;
pub mod mysql;
pub mod postgres;
pub mod tls;

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::{
    domain::{Engine, TlsMode},
    store::inventory::TargetRow,
};

/// The history table every target carries (both engines use this name), so
/// the hub can detect drift.
pub const HISTORY_TABLE: &str = "migrate_hub_history";

/// How to reach a target. Never holds the password: that travels separately,
/// opened just before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub tls_mode: TlsMode,
    /// Statements run on every new session before anything else (like
    /// Flyway's `initSql`): `SET search_path = app`, `SET ROLE migrator`, …
    pub session_settings: String,
}

impl Endpoint {
    /// `host:port/database`, for messages. Never includes credentials.
    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }
}

impl TryFrom<&TargetRow> for Endpoint {
    type Error = String;

    fn try_from(target: &TargetRow) -> Result<Self, String> {
        let port = u16::try_from(target.port)
            .map_err(|_| format!("the target's port {} is out of range", target.port))?;
        Ok(Endpoint {
            host: target.host.clone(),
            port,
            database: target.database.clone(),
            username: target.username.clone(),
            tls_mode: target.tls_mode,
            session_settings: target.session_settings.clone(),
        })
    }
}

/// A target password, opened from its sealed form just before connecting.
/// Its `Debug` never prints it, so it cannot leak through a log line or an
/// error built with `{:?}`.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn new(secret: String) -> Self {
        Self(secret)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Read from request bodies (write-only: there is deliberately no
/// `Serialize`, so a password cannot end up in a response or audit row).
impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Password)
    }
}

/// Why a session could not be opened. The texts are the driver's or the
/// server's own words (shown to people) and never contain the password.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server refused, or the network, TLS or authentication failed.
    #[error("{0}")]
    Driver(String),
    /// Nothing answered within the wait.
    #[error("timed out after {0} ms")]
    TimedOut(u128),
    /// Connected, but the target's session settings failed.
    #[error("the target's session settings failed: {0}")]
    SessionSettings(String),
}

/// `future`, or [`ConnectError::TimedOut`] once `wait` has passed.
pub(crate) async fn bounded<T>(
    wait: Duration,
    future: impl Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(wait, future)
        .await
        .unwrap_or(Err(ConnectError::TimedOut(wait.as_millis())))
}

/// What a connection test found, as the API answers it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub ok: bool,
    pub server_version: Option<String>,
    /// Connect, session settings and the version query, end to end.
    pub latency_ms: u64,
    pub error: Option<String>,
}

/// Connects to the target, runs its session settings and asks for the
/// server version, all within `wait`. Never fails: a failure is the probe's
/// answer, in the driver's words, with the password scrubbed out in case a
/// driver ever echoes it.
pub async fn probe(
    engine: Engine,
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
) -> Probe {
    let clock = Instant::now();
    let result = match engine {
        Engine::Postgres => postgres::server_version(target, password, wait).await,
        Engine::Mysql => mysql::server_version(target, password, wait).await,
    };
    let latency_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(version) => Probe {
            ok: true,
            server_version: Some(version),
            latency_ms,
            error: None,
        },
        Err(err) => Probe {
            ok: false,
            server_version: None,
            latency_ms,
            error: Some(redact(
                &format!("could not connect to {}: {err}", target.describe()),
                password,
            )),
        },
    }
}

/// The target's `migrate_hub_history` as (version, checksum) pairs; empty
/// when the table does not exist yet (no run has reached the target). Read
/// within `wait`; the error is the driver's text without the password.
pub async fn read_history(
    engine: Engine,
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
) -> Result<Vec<(String, String)>, String> {
    let result = match engine {
        Engine::Postgres => postgres::read_history(target, password, wait).await,
        Engine::Mysql => mysql::read_history(target, password, wait).await,
    };
    result.map_err(|err| {
        redact(
            &format!(
                "could not read {HISTORY_TABLE} on {}: {err}",
                target.describe()
            ),
            password,
        )
    })
}

/// `text` with every occurrence of the password replaced. Drivers do not
/// echo passwords, but a message shown to people and written to the audit
/// log must not depend on that.
pub fn redact(text: &str, password: Option<&Password>) -> String {
    match password.map(Password::expose) {
        Some(secret) if !secret.is_empty() => text.replace(secret, "<redacted>"),
        _ => text.to_owned(),
    }
}

/// A correction of a target's `migrate_hub_history`, made when an admin
/// resolves a dirty target.
#[derive(Debug, Clone)]
pub enum HistoryChange<'a> {
    /// The version counts as applied.
    Record {
        version: &'a str,
        checksum: &'a str,
        name: &'a str,
        run_id: uuid::Uuid,
    },
    /// The version counts as not applied.
    Forget { version: &'a str },
}

/// Applies `change` to the target's history within `wait`.
pub async fn change_history(
    engine: Engine,
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
    change: &HistoryChange<'_>,
) -> Result<(), String> {
    let result = match engine {
        Engine::Postgres => postgres::change_history(target, password, wait, change).await,
        Engine::Mysql => mysql::change_history(target, password, wait, change).await,
    };
    result.map_err(|err| {
        redact(
            &format!(
                "could not update {HISTORY_TABLE} on {}: {err}",
                target.describe()
            ),
            password,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print_and_are_scrubbed_from_messages() {
        let password = Password::new("hunter2".into());
        assert!(!format!("{password:?}").contains("hunter2"));
        assert_eq!(
            redact("auth failed for hunter2@db", Some(&password)),
            "auth failed for <redacted>@db"
        );
        assert_eq!(redact("plain", None), "plain");
        // An empty password would otherwise "match" between every character.
        assert_eq!(
            redact("plain", Some(&Password::new(String::new()))),
            "plain"
        );
    }

    #[test]
    fn endpoints_describe_without_credentials() {
        let endpoint = Endpoint {
            host: "db".into(),
            port: 5432,
            database: "app".into(),
            username: "u".into(),
            tls_mode: TlsMode::Disable,
            session_settings: String::new(),
        };
        assert_eq!(endpoint.describe(), "db:5432/app");
    }

    #[tokio::test]
    async fn waits_are_bounded() {
        let never = std::future::pending::<Result<(), ConnectError>>();
        let err = bounded(Duration::from_millis(30), never).await.unwrap_err();
        assert_eq!(err.to_string(), "timed out after 30 ms");
    }
}
