//! The target lock: held on the target database itself, so no two workers,
//! runs or hub installations ever execute on one target at once (rule 5),
//! and an admin's baseline never races a migration.
//!
//! PostgreSQL: a session-level advisory lock on the session's dedicated
//! connection. It dies with the connection, so a crashed worker never leaves
//! a stale lock behind (unlike a lock table). Advisory locks are scoped to
//! one database, so targets that share a server do not block each other.
//!
//! MySQL/MariaDB: `GET_LOCK` on the session, which also dies with it. Its
//! names are server-wide, so the name carries the database (see
//! [`mysql_lock_name`]) to keep targets that share a server independent.
//!
//! The worker (its executors) and the control plane (baselines) both take
//! the lock through this module, so they cannot disagree on its name.

use std::time::Duration;

use tokio_postgres::{Client, error::SqlState};

use super::mysql::{Flavor, text_literal};

/// The advisory lock key every migrate-hub installation uses: the ASCII
/// bytes `mig-hub!` read as a big-endian integer. Fixed forever, because two
/// hub versions must exclude each other on one target.
pub const PG_ADVISORY_KEY: i64 = i64::from_be_bytes(*b"mig-hub!");

/// Why the target lock was not taken, on either engine. The texts are shown
/// to people as the job's or the baseline's error.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("target is locked by another migration (waited {waited_ms} ms)")]
    Busy { waited_ms: u64 },
    /// The target failed while the lock was asked for: the database's own
    /// words.
    #[error("could not take the target lock: {0}")]
    Target(String),
}

impl From<tokio_postgres::Error> for LockError {
    fn from(err: tokio_postgres::Error) -> Self {
        LockError::Target(super::postgres::describe(&err))
    }
}

/// Takes the target lock, waiting at most `wait` for a holder to release it.
///
/// The wait is bounded with `lock_timeout`, which PostgreSQL applies to
/// advisory locks too: one round trip, and the lock is granted the moment
/// the holder releases it (no polling). `SET LOCAL` keeps the timeout from
/// leaking into the session; the session-level lock itself survives the
/// transaction's end. A zero wait means "try once".
pub async fn acquire_pg(client: &Client, wait: Duration) -> Result<(), LockError> {
    let waited_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    if wait.is_zero() {
        let row = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PG_ADVISORY_KEY])
            .await?;
        return if row.get::<_, bool>(0) {
            Ok(())
        } else {
            Err(LockError::Busy { waited_ms })
        };
    }
    // lock_timeout is an int of milliseconds; larger waits are capped (~24 days).
    let timeout_ms = waited_ms.min(i32::MAX as u64);
    let sql = format!(
        "BEGIN; SET LOCAL lock_timeout = {timeout_ms}; SELECT pg_advisory_lock({PG_ADVISORY_KEY}); COMMIT"
    );
    match client.simple_query(&sql).await {
        Ok(_) => Ok(()),
        Err(err) => {
            // The failed statement left the transaction aborted.
            let _ = client.simple_query("ROLLBACK").await;
            if err.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                Err(LockError::Busy { waited_ms })
            } else {
                Err(err.into())
            }
        }
    }
}

/// Releases the lock. Best effort: closing the connection releases it anyway.
pub async fn release_pg(client: &Client) {
    if let Err(err) = client
        .simple_query(&format!("SELECT pg_advisory_unlock({PG_ADVISORY_KEY})"))
        .await
    {
        tracing::debug!(error = %err, "advisory unlock failed; the lock ends with the connection");
    }
}

/// The prefix of every MySQL lock name. Fixed forever, like
/// [`PG_ADVISORY_KEY`].
pub const MYSQL_LOCK_PREFIX: &str = "migrate_hub";

/// The `GET_LOCK` name of a MySQL/MariaDB target: `migrate_hub.<database>`.
/// MySQL limits lock names to 64 characters; a longer one is shortened to
/// the prefix and a SHA-256 of the database name, stable across versions.
pub fn mysql_lock_name(database: &str) -> String {
    const MAX: usize = 64;
    let name = format!("{MYSQL_LOCK_PREFIX}.{database}");
    if name.chars().count() <= MAX {
        return name;
    }
    let digest = crate::domain::Checksum::of_text(database).to_string();
    let mut short = format!("{MYSQL_LOCK_PREFIX}#{digest}");
    short.truncate(MAX);
    short
}

/// Takes the target lock on a MySQL/MariaDB session, waiting at most `wait`,
/// and answers which server it is: the executor sets flavour-specific
/// session bounds next, and the same round trip reads `VERSION()`.
///
/// `GET_LOCK` answers 1 (taken), 0 (the wait passed) or NULL (an error, such
/// as the session being killed). The wait is given in seconds with
/// millisecond precision; MariaDB honours the fraction, MySQL rounds it.
/// The statement goes as plain text: on a new session a prepared statement
/// would cost a second round trip.
pub async fn acquire_mysql(
    conn: &mut mysql_async::Conn,
    database: &str,
    wait: Duration,
) -> Result<Flavor, LockError> {
    use mysql_async::prelude::Queryable as _;
    let waited_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    // GET_LOCK's timeout is an int of seconds (or a decimal on MariaDB).
    let seconds = format!("{}.{:03}", waited_ms / 1000, waited_ms % 1000);
    let name = text_literal(&mysql_lock_name(database));
    let got: Option<(Option<i64>, String)> = conn
        .query_first(format!("SELECT GET_LOCK({name}, {seconds}), VERSION()"))
        .await
        .map_err(|e| LockError::Target(super::mysql::describe(&e)))?;
    match got {
        Some((Some(1), version)) => Ok(Flavor::of(&version)),
        Some((Some(_), _)) => Err(LockError::Busy { waited_ms }),
        _ => Err(LockError::Target("GET_LOCK returned NULL".into())),
    }
}

/// Releases the MySQL target lock. Best effort: closing the session releases
/// it anyway.
pub async fn release_mysql(conn: &mut mysql_async::Conn, database: &str) {
    use mysql_async::prelude::Queryable as _;
    let name = text_literal(&mysql_lock_name(database));
    if let Err(err) = conn.query_drop(format!("DO RELEASE_LOCK({name})")).await {
        tracing::debug!(error = %err, "RELEASE_LOCK failed; the lock ends with the session");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_stable() {
        // Changing the key would let an old and a new worker run on one target.
        assert_eq!(PG_ADVISORY_KEY, 0x6d69_672d_6875_6221);
    }

    #[test]
    fn mysql_lock_names_are_per_database_and_bounded() {
        assert_eq!(mysql_lock_name("app"), "migrate_hub.app");
        let long = "d".repeat(64);
        let name = mysql_lock_name(&long);
        assert_eq!(name.len(), 64);
        assert!(name.starts_with("migrate_hub#"));
        assert_eq!(name, mysql_lock_name(&long));
        assert_ne!(name, mysql_lock_name(&"e".repeat(64)));
    }

    #[test]
    fn refusals_name_the_wait_or_the_database_error() {
        assert_eq!(
            LockError::Busy { waited_ms: 250 }.to_string(),
            "target is locked by another migration (waited 250 ms)"
        );
        assert_eq!(
            LockError::Target("GET_LOCK returned NULL".into()).to_string(),
            "could not take the target lock: GET_LOCK returned NULL"
        );
    }
}
