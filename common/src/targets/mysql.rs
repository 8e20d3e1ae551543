//! MySQL and MariaDB targets over mysql_async: one session, opened with the
//! target's TLS mode and session settings within a bounded wait.

use std::time::Duration;

use mysql_async::{Conn, OptsBuilder, SslOpts, prelude::Queryable};

use super::{ConnectError, Endpoint, HISTORY_TABLE, Password, bounded};
use crate::domain::TlsMode;

/// The history table inside every target, so the hub can detect drift: the
/// PostgreSQL table's columns, plus how many statements the script had.
/// Versions and checksums are ASCII, which keeps the key short on any
/// server's index limits.
const HISTORY_COLUMNS: &str = "(
    version      varchar(255) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    checksum     char(64) CHARACTER SET ascii NOT NULL,
    name         text NOT NULL,
    applied_at   timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    run_id       char(36) CHARACTER SET ascii NULL,
    execution_ms bigint NULL,
    statements   int NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";

/// Opens a session on `target` and runs its session settings, all within
/// `wait`.
///
/// TLS modes follow libpq's meaning: `prefer` tries TLS and falls back to a
/// plain session only when the server offers no TLS at all; `require`
/// encrypts without checking the certificate; `verify-full` checks the chain
/// (built-in Mozilla roots) and that it names the host.
pub async fn connect(
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
) -> Result<Conn, ConnectError> {
    let encrypt_only = SslOpts::default()
        .with_danger_accept_invalid_certs(true)
        .with_danger_skip_domain_validation(true);
    let tls = match target.tls_mode {
        TlsMode::Disable => None,
        TlsMode::Prefer | TlsMode::Require => Some(encrypt_only),
        TlsMode::VerifyFull => Some(SslOpts::default()),
    };
    if tls.is_some() {
        // mysql_async builds its TLS config from the process's default
        // provider; make it ring (the only one compiled in) explicitly, so a
        // second provider entering the tree one day cannot make it panic.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    bounded(wait, async {
        let conn = match Conn::new(options(target, password, tls)).await {
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if target.tls_mode == TlsMode::Prefer => {
                Conn::new(options(target, password, None)).await
            }
            other => other,
        };
        let mut conn = conn.map_err(|e| ConnectError::Driver(describe(&e)))?;
        let settings = target.session_settings.trim();
        if !settings.is_empty()
            && let Err(e) = conn.query_drop(settings).await
        {
            let _ = conn.disconnect().await;
            return Err(ConnectError::SessionSettings(describe(&e)));
        }
        Ok(conn)
    })
    .await
}

fn options(target: &Endpoint, password: Option<&Password>, tls: Option<SslOpts>) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(target.host.as_str())
        .tcp_port(target.port)
        .user(Some(target.username.as_str()))
        .pass(password.map(|p| p.expose().to_owned()))
        .db_name(Some(target.database.as_str()))
        // Always TCP: never silently switch to a local socket with other grants.
        .prefer_socket(false)
        // Given, so the driver does not ask the server for them on every
        // connect. The server still refuses a packet over its own limit.
        .max_allowed_packet(Some(MAX_PACKET))
        .wait_timeout(Some(SERVER_WAIT_TIMEOUT_S))
        .ssl_opts(tls)
}

/// The client's packet limit: the largest MySQL allows, so only the
/// server's own `max_allowed_packet` ever refuses a statement.
const MAX_PACKET: usize = 1 << 30;

/// The server's default `wait_timeout`; the driver uses it only to expire
/// pooled sessions, and the hub pools none.
const SERVER_WAIT_TIMEOUT_S: usize = 28_800;

/// `text` as a string literal that reads the same whatever the session's
/// `sql_mode` (`NO_BACKSLASH_ESCAPES`, `ANSI_QUOTES`): a hex literal with a
/// `utf8mb4` introducer, the value a bound parameter would carry. Lets a
/// statement go as plain text, in one round trip, where a prepared
/// statement takes two on a new session.
pub fn text_literal(text: &str) -> String {
    format!("_utf8mb4 X'{}'", hex::encode(text))
}

/// Connects and answers the server's `VERSION()` (which names MariaDB for
/// MariaDB), within `wait`.
pub async fn server_version(
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
) -> Result<String, ConnectError> {
    let started = tokio::time::Instant::now();
    let mut conn = connect(target, password, wait).await?;
    let rest = wait.saturating_sub(started.elapsed());
    let version = bounded(rest, async {
        conn.query_first::<String, _>("SELECT VERSION()")
            .await
            .map_err(|e| ConnectError::Driver(describe(&e)))
    })
    .await;
    let _ = conn.disconnect().await;
    Ok(version?.unwrap_or_default())
}

/// Connects and reads the target's history table, within `wait`. A target
/// without the table (never migrated by the hub) has an empty history.
pub async fn read_history(
    target: &Endpoint,
    password: Option<&Password>,
    wait: Duration,
) -> Result<Vec<(String, String)>, ConnectError> {
    let started = tokio::time::Instant::now();
    let mut conn = connect(target, password, wait).await?;
    let rest = wait.saturating_sub(started.elapsed());
    let history = bounded(rest, async {
        let exists: Option<i64> = conn
            .query_first(format!(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = '{HISTORY_TABLE}'"
            ))
            .await
            .map_err(|e| ConnectError::Driver(describe(&e)))?;
        if exists.unwrap_or(0) == 0 {
            return Ok(Vec::new());
        }
        conn.query::<(String, String), _>(format!("SELECT version, checksum FROM {HISTORY_TABLE}"))
            .await
            .map_err(|e| ConnectError::Driver(describe(&e)))
    })
    .await;
    let _ = conn.disconnect().await;
    history
}

/// The history table, qualified with the target's database so a script's
/// `USE other_db` cannot send the hub's records elsewhere.
pub fn history_table(database: &str) -> String {
    format!("`{}`.{HISTORY_TABLE}", database.replace('`', "``"))
}

/// Creates the history table of `database` if it does not exist yet. Run by
/// the worker before every job and by a baseline, both under the target
/// lock, so concurrent first runs cannot race on it.
pub fn history_ddl(database: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} {HISTORY_COLUMNS}",
        history_table(database)
    )
}

/// Which server a session talks to: MariaDB and MySQL name some session
/// variables differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

impl Flavor {
    /// From `SELECT VERSION()`, which says `…-MariaDB…` on MariaDB.
    pub fn of(version: &str) -> Self {
        if version.to_ascii_lowercase().contains("mariadb") {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        }
    }

    /// The `SET` assignment that bounds every statement of the session to
    /// `timeout_ms` (0: no bound). MariaDB's `max_statement_time` (seconds)
    /// covers every statement; MySQL's `max_execution_time` (ms) only
    /// read-only `SELECT`s — the closest MySQL has.
    pub fn statement_timeout(self, timeout_ms: u64) -> String {
        match self {
            Flavor::MariaDb => format!(
                "SESSION max_statement_time = {}.{:03}",
                timeout_ms / 1000,
                timeout_ms % 1000
            ),
            Flavor::MySql => format!("SESSION max_execution_time = {timeout_ms}"),
        }
    }
}

/// The server's own words as the `mysql` client shows them
/// (`ERROR 1045 (28000): Access denied …`), else the driver's. Never
/// contains the password.
pub fn describe(err: &mysql_async::Error) -> String {
    match err {
        mysql_async::Error::Server(server) => server.to_string(),
        other => other.to_string(),
    }
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
    let mut conn = connect(target, password, wait).await?;
    let rest = wait.saturating_sub(started.elapsed());
    let result = bounded(rest, async {
        let result = match change {
            super::HistoryChange::Record { version, checksum, name, run_id } => {
                conn.exec_drop(
                    format!(
                        "INSERT IGNORE INTO {HISTORY_TABLE} (version, checksum, name, run_id) VALUES (?, ?, ?, ?)"
                    ),
                    (*version, *checksum, *name, run_id.to_string()),
                )
                .await
            }
            super::HistoryChange::Forget { version } => {
                conn.exec_drop(format!("DELETE FROM {HISTORY_TABLE} WHERE version = ?"), (*version,))
                    .await
            }
        };
        result.map_err(|e| ConnectError::Driver(describe(&e)))
    })
    .await;
    let _ = conn.disconnect().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_follows_the_version_string() {
        assert_eq!(Flavor::of("10.11.19-MariaDB-0+deb12u1"), Flavor::MariaDb);
        assert_eq!(Flavor::of("8.0.36"), Flavor::MySql);
        assert_eq!(
            Flavor::MariaDb.statement_timeout(1_500),
            "SESSION max_statement_time = 1.500"
        );
        assert_eq!(
            Flavor::MySql.statement_timeout(60_000),
            "SESSION max_execution_time = 60000"
        );
    }

    #[test]
    fn text_literals_are_hex_whatever_they_hold() {
        assert_eq!(text_literal("ab"), "_utf8mb4 X'6162'");
        assert_eq!(text_literal(""), "_utf8mb4 X''");
        assert_eq!(text_literal("it's \\ é"), "_utf8mb4 X'69742773205c20c3a9'");
    }

    #[test]
    fn history_table_is_qualified_and_quoted() {
        assert_eq!(history_table("app"), "`app`.migrate_hub_history");
        assert_eq!(history_table("we`ird"), "`we``ird`.migrate_hub_history");
        assert!(
            history_ddl("we`ird")
                .starts_with("CREATE TABLE IF NOT EXISTS `we``ird`.migrate_hub_history (")
        );
    }

    #[test]
    fn server_errors_read_like_the_mysql_client() {
        let err = mysql_async::Error::Server(mysql_async::ServerError {
            code: 1050,
            message: "Table 'gadgets' already exists".into(),
            state: "42S01".into(),
        });
        assert_eq!(
            describe(&err),
            "ERROR 1050 (42S01): Table 'gadgets' already exists"
        );
    }
}
