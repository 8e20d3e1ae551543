//! The target lock, taken by every job before it reads or changes a target.
//! The lock itself (key, names, how it is taken) lives in
//! `common::targets::lock`, shared with the control plane's baselines; this
//! module adds the worker's wait metric.

use std::time::Duration;

use common::{domain::Engine, targets::mysql::Flavor};
use tokio_postgres::Client;

pub use common::targets::lock::{
    LockError, MYSQL_LOCK_PREFIX, PG_ADVISORY_KEY, mysql_lock_name, release_mysql, release_pg,
};

/// Takes the target lock, waiting at most `wait` (see
/// [`common::targets::lock::acquire_pg`]), and records the wait.
pub async fn acquire_pg(client: &Client, wait: Duration) -> Result<(), LockError> {
    let started = std::time::Instant::now();
    let result = common::targets::lock::acquire_pg(client, wait).await;
    crate::metrics::lock_waited(Engine::Postgres, started.elapsed());
    result
}

/// Takes the MySQL target lock, waiting at most `wait` (see
/// [`common::targets::lock::acquire_mysql`]), and records the wait.
/// Answers the server's flavour, read in the same round trip.
pub async fn acquire_mysql(
    conn: &mut mysql_async::Conn,
    database: &str,
    wait: Duration,
) -> Result<Flavor, LockError> {
    let started = std::time::Instant::now();
    let result = common::targets::lock::acquire_mysql(conn, database, wait).await;
    crate::metrics::lock_waited(Engine::Mysql, started.elapsed());
    result
}
