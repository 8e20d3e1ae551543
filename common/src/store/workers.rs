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

/// The pools that the run's executions still to be done (`pending`,
/// `queued`, `running`) need and that no live worker serves — none
/// heartbeating in the last `silent_for` without having stopped — with when
/// a worker of each was last heard from.
pub async fn pools_without_workers(
    conn: &mut sqlx::PgConnection,
    run_id: Uuid,
    silent_for: std::time::Duration,
) -> Result<Vec<crate::domain::pools::PoolWithoutWorker>, sqlx::Error> {
    let rows: Vec<(String, Option<OffsetDateTime>, OffsetDateTime)> = sqlx::query_as(
        "WITH needed AS (
             SELECT DISTINCT worker_pool FROM target_executions
             WHERE run_id = $1 AND state IN ('pending', 'queued', 'running'))
         SELECT n.worker_pool, max(COALESCE(w.stopped_at, w.last_heartbeat_at)), now()
         FROM needed n LEFT JOIN workers w ON w.pool = n.worker_pool
         GROUP BY n.worker_pool
         HAVING NOT COALESCE(bool_or(w.stopped_at IS NULL
                    AND w.last_heartbeat_at > now() - make_interval(secs => $2)), false)
         ORDER BY n.worker_pool",
    )
    .bind(run_id)
    .bind(silent_for.as_secs_f64())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(pool, seen, now)| crate::domain::pools::PoolWithoutWorker::new(pool, seen, now))
        .collect())
}
