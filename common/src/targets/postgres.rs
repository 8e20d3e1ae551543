//! PostgreSQL targets over tokio-postgres: one session, opened with the
//! target's TLS mode and session settings within a bounded wait.

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage, config::SslMode};

use super::{ConnectError, Endpoint, HISTORY_TABLE, Password, bounded, tls::MakeRustls};
use crate::domain::TlsMode;

/// Shown in the target's `pg_stat_activity`, so its DBAs can tell who is
/// connected.
const APPLICATION_NAME: &str = "migrate-hub";

/// The history table inside every target, so the hub can detect drift. The
/// shape is fixed: other hub installations and humans read it. Run by the
/// worker before every job and by a baseline, both under the target lock. Created in a
/// `DO` block rather than with `IF NOT EXISTS`, which would log a notice on
/// every job.
pub const HISTORY_DDL: &str = "DO $migrate_hub$ BEGIN
IF to_regclass('migrate_hub_history') IS NULL THEN
    CREATE TABLE migrate_hub_history (
        version      text PRIMARY KEY,
        checksum     text NOT NULL,
        name         text NOT NULL DEFAULT '',
        applied_at   timestamptz NOT NULL DEFAULT now(),
        run_id       uuid,
        execution_ms bigint
    );
END IF;
END $migrate_hub$";

/// Opens a session on `target` and runs its session settings, all within
/// `wait` (TCP connect, TLS, authentication and the settings together). The
/// connection's background task ends when the returned client is dropped.
pub async fn connect(
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
) -> Result<Client, ConnectError> {
    let (ssl_mode, tls) = match target.tls_mode {
        TlsMode::Disable => (SslMode::Disable, MakeRustls::encrypt_only()),
        TlsMode::Prefer => (SslMode::Prefer, MakeRustls::encrypt_only()),
        TlsMode::Require => (SslMode::Require, MakeRustls::encrypt_only()),
        TlsMode::VerifyFull => (SslMode::Require, MakeRustls::verify_full()),
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .dbname(&target.database)
        .user(&target.username)
        .application_name(APPLICATION_NAME)
        .connect_timeout(wait)
        .ssl_mode(ssl_mode);
    if let Some(password) = password {
        config.password(password.expose());
    }
    bounded(wait, async move {
        let (client, connection) = config
            .connect(tls)
            .await
            .map_err(|e| ConnectError::Driver(describe(&e)))?;
        // The connection future owns the socket; it ends when `client` is dropped.
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "target connection ended with an error");
            }
        });
        let settings = target.session_settings.trim();
        if !settings.is_empty() {
            client
                .simple_query(settings)
                .await
                .map_err(|e| ConnectError::SessionSettings(describe(&e)))?;
        }
        Ok(client)
    })
    .await
}

/// Connects and answers `PostgreSQL <server_version>`, within `wait`.
pub async fn server_version(
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
) -> Result<String, ConnectError> {
    let started = tokio::time::Instant::now();
    let client = connect(target, password, wait).await?;
    let rest = wait.saturating_sub(started.elapsed());
    bounded(rest, async {
        let rows = client
            .simple_query("SHOW server_version")
            .await
            .map_err(|e| ConnectError::Driver(describe(&e)))?;
        Ok(format!(
            "PostgreSQL {}",
            first_value(&rows).unwrap_or_default()
        ))
    })
    .await
}

/// Connects and reads the target's history table, within `wait`. A target
/// without the table (never migrated by the hub) has an empty history.
///
/// The session settings run first, as they do for the worker, so a
/// `search_path` in them finds the table where the worker created it.
pub async fn read_history(
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
) -> Result<Vec<(String, String)>, ConnectError> {
    let started = tokio::time::Instant::now();
    let client = connect(target, password, wait).await?;
    let rest = wait.saturating_sub(started.elapsed());
    bounded(rest, async {
        let exists = client
            .simple_query(&format!(
                "SELECT to_regclass('{HISTORY_TABLE}') IS NOT NULL"
            ))
            .await
            .map_err(|e| ConnectError::Driver(describe(&e)))?;
        if first_value(&exists) != Some("t") {
            return Ok(Vec::new());
        }
        let rows = client
            .simple_query(&format!("SELECT version, checksum FROM {HISTORY_TABLE}"))
            .await
            .map_err(|e| ConnectError::Driver(describe(&e)))?;
        Ok(rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some((
                    row.get(0).unwrap_or_default().to_owned(),
                    row.get(1).unwrap_or_default().to_owned(),
                )),
                _ => None,
            })
            .collect())
    })
    .await
}

fn first_value(messages: &[SimpleQueryMessage]) -> Option<&str> {
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0),
        _ => None,
    })
}

/// The database's own words, as psql would show them:
/// `ERROR: message (SQLSTATE code)` plus detail, hint and context. Errors
/// without a server message (refused connection, TLS, I/O) are described by
/// the driver's error chain. Neither ever contains the password.
pub fn describe(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut text = format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            text.push_str(&format!("\nDETAIL: {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("\nHINT: {hint}"));
        }
        if let Some(context) = db.where_() {
            text.push_str(&format!("\nCONTEXT: {context}"));
        }
        return text;
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Records or forgets one version in the target's history (the table exists:
/// only a target a run has reached can need it).
pub async fn change_history(
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
    change: &super::HistoryChange<'_>,
) -> Result<(), ConnectError> {
    let started = tokio::time::Instant::now();
    let client = connect(target, password, wait).await?;
    let rest = wait.saturating_sub(started.elapsed());
    bounded(rest, async {
        let result = match change {
            super::HistoryChange::Record { version, checksum, name, run_id } => {
                client
                    .execute(
                        &format!(
                            "INSERT INTO {HISTORY_TABLE} (version, checksum, name, run_id) VALUES ($1, $2, $3, $4)
                             ON CONFLICT (version) DO NOTHING"
                        ),
                        &[version, checksum, name, run_id],
                    )
                    .await
            }
            super::HistoryChange::Forget { version } => {
                client
                    .execute(&format!("DELETE FROM {HISTORY_TABLE} WHERE version = $1"), &[version])
                    .await
            }
        };
        result.map(|_| ()).map_err(|e| ConnectError::Driver(describe(&e)))
    })
    .await
}
