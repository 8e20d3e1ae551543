//! Tool-database writes that survive a restart of the tool database:
//! transient errors (lost connections, deadlocks, serialization failures)
//! are retried for a while before the job gives up.

use std::{future::Future, time::Duration};

use tokio::time::Instant;

/// How long a hub write is retried before the job gives up on it.
const RETRY_FOR: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether `err` may succeed when simply tried again: the connection went
/// away, the pool could not hand one out, or PostgreSQL aborted the
/// transaction to break a deadlock or a serialization conflict.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // serialization_failure, deadlock_detected, admin/crash shutdown,
            // cannot_connect_now
            Some("40001" | "40P01" | "57P01" | "57P02" | "57P03")
        ),
        _ => false,
    }
}

/// Runs `op` until it succeeds, fails for good, or [`RETRY_FOR`] has passed.
pub async fn with_retry<T, F, Fut>(what: &str, mut op: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(err) if is_transient(&err) && Instant::now() + backoff < deadline => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "tool database write failed: {what}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_transient_but_bad_sql_is_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::PoolClosed));
    }
}
