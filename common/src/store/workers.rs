//! Worker registration and heartbeats.

use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

pub async fn register(
    pool: &PgPool,
    id: Uuid,
    worker_pool: &str,
    hostname: &str,
    concurrency: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO workers (id, pool, hostname, pid, version, concurrency) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(worker_pool)
    .bind(hostname)
    .bind(std::process::id() as i32)
    .bind(env!("CARGO_PKG_VERSION"))
    .bind(concurrency)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn heartbeat(pool: &PgPool, id: Uuid, running_jobs: i32) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE workers SET last_heartbeat_at = now(), running_jobs = $2 WHERE id = $1")
        .bind(id)
        .bind(running_jobs)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn stopped(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE workers SET stopped_at = now(), running_jobs = 0 WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct WorkerRow {
    pub id: Uuid,
    pub pool: String,
    pub hostname: String,
    pub pid: i32,
    pub version: String,
    pub concurrency: i32,
    pub running_jobs: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_heartbeat_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub stopped_at: Option<OffsetDateTime>,
}

/// Workers seen in the last day, newest heartbeat first.
pub async fn list(pool: &PgPool) -> Result<Vec<WorkerRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, pool, hostname, pid, version, concurrency, running_jobs, started_at, last_heartbeat_at, stopped_at
         FROM workers WHERE last_heartbeat_at > now() - interval '1 day'
         ORDER BY pool, last_heartbeat_at DESC",
    )
    .fetch_all(pool)
    .await
}
