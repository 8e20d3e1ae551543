//! The tool database: connection pool and migrations (ours and the queue's).

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

/// The tool database's own migrations, from `migrations/` at the workspace root.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    options(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
}

/// A pool that connects on first use, so a server can start while the tool
/// database is briefly unavailable and report it on `/readyz`.
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    options(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(url)
}

fn options(max_connections: u32) -> PgPoolOptions {
    // The check below doubles as the liveness test sqlx would otherwise
    // make with a ping of its own: one round trip per checkout, not two.
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .before_acquire(|conn, _| Box::pin(async move { outside_transaction(conn).await }))
}

/// Whether a connection about to be handed out is alive and outside any
/// transaction. A task cancelled while its `BEGIN` was on the wire (a
/// request that timed out, a client that went away) gives its connection
/// back inside a transaction that sqlx does not know about and so never
/// rolls back; every later statement on it would join that transaction and
/// be lost. Such a connection is closed instead (the server rolls it back),
/// and so is one that does not answer. Inside a transaction `now()` is the
/// transaction's start, earlier than the statement's; outside, a
/// simple-protocol statement is its own transaction.
async fn outside_transaction(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Row;
    // The simple protocol: one message, so outside a transaction the
    // statement starts its own (the extended protocol's Bind would start
    // it before Execute sets the statement's time).
    let outside: bool = sqlx::raw_sql("SELECT now() = statement_timestamp()")
        .fetch_one(conn)
        .await?
        .try_get(0)?;
    if !outside {
        tracing::warn!("a tool-database connection came back inside a transaction; closing it");
    }
    Ok(outside)
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("tool database migration failed: {0}")]
    Tool(#[from] sqlx::migrate::MigrateError),
    #[error("queue schema set-up failed: {0}")]
    Queue(#[from] apalis_postgres::Error),
    #[error("queue index set-up failed: {0}")]
    QueueIndex(#[from] sqlx::Error),
}

/// Applies the tool database's migrations and the queue's schema (`apalis`).
/// Both keep their own bookkeeping table, so they never disturb each other.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await?;
    apalis_postgres::PostgresStorage::setup(pool).await?;
    crate::queue::add_indexes(pool).await?;
    Ok(())
}

/// Whether every migration this binary knows is applied.
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?;
    let expected = MIGRATOR.iter().map(|m| m.version).max();
    Ok(latest >= expected)
}
