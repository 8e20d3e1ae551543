//! The job queue (apalis on the tool database), in one place: the payload
//! the control plane pushes and workers consume, the queue of each worker
//! pool, pushing jobs, and how many wait in each pool.
//!
//! A job names what to do, never how to reach it: no host, no password. The
//! worker reads everything else from the tool database.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Execute one run on one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetJob {
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub execution_id: Uuid,
    /// W3C trace context of the Execute request, so the worker's spans join its trace.
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
}

/// What every pool's queue name starts with.
const PREFIX: &str = "migrate-hub.pool.";

/// The apalis queue that the workers of `pool` consume.
pub fn queue_name(pool: &str) -> String {
    format!("{PREFIX}{pool}")
}

/// Jobs waiting (due or not) in each pool's queue, for every pool that has
/// any job on record, by pool name.
pub async fn waiting_per_pool(
    conn: &mut sqlx::PgConnection,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT substr(job_type, length($1) + 1), count(*) FILTER (WHERE status = 'Pending')
         FROM apalis.jobs WHERE starts_with(job_type, $1) GROUP BY job_type ORDER BY 1",
    )
    .bind(PREFIX)
    .fetch_all(conn)
    .await
}

/// What waits in one pool's queue, for the fleet page.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Backlog {
    pub pool: String,
    /// Due now, for executions still to run.
    pub due: i64,
    /// Due later (`not_before`, the next maintenance window).
    pub later: i64,
    /// Left from executions that will not run any more (cancelled or
    /// finished): a worker drops them unrun when it reaches them.
    pub left_over: i64,
    /// How long the oldest due job has been due, in seconds.
    pub oldest_due_seconds: Option<f64>,
}

/// The waiting jobs of every pool that has any, by pool name.
pub async fn backlog(conn: &mut sqlx::PgConnection) -> Result<Vec<Backlog>, sqlx::Error> {
    sqlx::query_as(
        "SELECT substr(j.job_type, length($1) + 1) AS pool,
                count(*) FILTER (WHERE live AND j.run_at <= now()) AS due,
                count(*) FILTER (WHERE live AND j.run_at > now()) AS later,
                count(*) FILTER (WHERE NOT live) AS left_over,
                extract(epoch FROM now() - min(j.run_at) FILTER (WHERE live AND j.run_at <= now()))::float8
                    AS oldest_due_seconds
         FROM apalis.jobs j
         LEFT JOIN target_executions e
                ON e.id = (convert_from(j.job, 'UTF8')::jsonb ->> 'execution_id')::uuid,
         LATERAL (SELECT COALESCE(e.state IN ('queued', 'waiting_for_window'), false) AS live) l
         WHERE j.status = 'Pending' AND starts_with(j.job_type, $1)
         GROUP BY j.job_type ORDER BY 1",
    )
    .bind(PREFIX)
    .fetch_all(conn)
    .await
}

/// Removes the run's jobs that still wait in a queue for an execution that
/// was cancelled: nothing is left for them to do. (A job that a dead
/// worker's execution still needs, to be found `interrupted`, stays.)
pub async fn discard_run(conn: &mut sqlx::PgConnection, run_id: Uuid) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM apalis.jobs j
         WHERE j.status = 'Pending' AND starts_with(j.job_type, $1)
           AND (convert_from(j.job, 'UTF8')::jsonb ->> 'run_id')::uuid = $2
           AND EXISTS (SELECT 1 FROM target_executions e
                       WHERE e.id = (convert_from(j.job, 'UTF8')::jsonb ->> 'execution_id')::uuid
                         AND e.state = 'cancelled')",
    )
    .bind(PREFIX)
    .bind(run_id)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Makes the waiting jobs of `executions` due at `at` (a time already past:
/// at once, on every clock, as in [`push`]). Returns how many jobs moved.
pub async fn reschedule(
    conn: &mut sqlx::PgConnection,
    executions: &[Uuid],
    at: time::OffsetDateTime,
) -> Result<u64, sqlx::Error> {
    let now = time::OffsetDateTime::now_utc();
    let at = if at > now {
        at
    } else {
        now - time::Duration::minutes(1)
    };
    Ok(sqlx::query(
        "UPDATE apalis.jobs SET run_at = $3
         WHERE status = 'Pending' AND starts_with(job_type, $1)
           AND (convert_from(job, 'UTF8')::jsonb ->> 'execution_id')::uuid = ANY($2)",
    )
    .bind(PREFIX)
    .bind(executions)
    .bind(at)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Pushes one job per (execution, target, pool) into each pool's queue, in
/// the caller's transaction, due at `not_before` or at once. Each job
/// carries the run's `traceparent` (from its Execute request), if any.
pub async fn push(
    conn: &mut sqlx::PgConnection,
    run_id: Uuid,
    traceparent: Option<&str>,
    executions: &[(Uuid, Uuid, String)],
    not_before: Option<time::OffsetDateTime>,
) -> Result<(), sqlx::Error> {
    use apalis::prelude::TaskBuilder;
    let mut by_pool: BTreeMap<&str, Vec<apalis_postgres::PgTask>> = BTreeMap::new();
    for (execution_id, target_id, pool) in executions {
        let job = TargetJob {
            run_id,
            target_id: *target_id,
            execution_id: *execution_id,
            trace_context: traceparent
                .map(|tp| BTreeMap::from([("traceparent".to_owned(), tp.to_owned())]))
                .unwrap_or_default(),
        };
        let payload = serde_json::to_vec(&job).expect("job serializes");
        // A migration job is never retried by the queue: a failed target
        // stays failed until a person asks for a new run.
        let task = TaskBuilder::new(payload).max_attempts(1);
        let task = match not_before.filter(|t| *t > time::OffsetDateTime::now_utc()) {
            Some(t) => task.run_at_timestamp(t.unix_timestamp() as u64),
            // The queue stores whole seconds and wakes listening workers only
            // for jobs already due by the database's clock; a due time in the
            // past makes the job due at once on every clock.
            None => {
                task.run_at_time(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
            }
        };
        by_pool.entry(pool.as_str()).or_default().push(task.build());
    }
    for (pool, tasks) in by_pool {
        apalis_postgres::queries::push_tasks(&mut *conn, &queue_name(pool), tasks)
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("queueing jobs for pool {pool}: {e}")))?;
    }
    Ok(())
}

/// Index the queue's own set-up lacks: apalis looks for the jobs of silent
/// workers (`reenqueue_orphaned`, on every worker's keep-alive) among the
/// jobs `Running` or `Queued`, and without it reads every job on record.
/// Applied after the queue's schema at every start; built once (building
/// it holds off the queue's writes for a moment, so it is not rebuilt or
/// locked again when it exists).
pub async fn add_indexes(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let missing: bool =
        sqlx::query_scalar("SELECT to_regclass('apalis.migrate_hub_jobs_live_lock_by') IS NULL")
            .fetch_one(pool)
            .await?;
    if missing {
        sqlx::query(
            "CREATE INDEX IF NOT EXISTS migrate_hub_jobs_live_lock_by ON apalis.jobs (lock_by)
             WHERE status = 'Running' OR status = 'Queued'",
        )
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Removes the jobs finished (done, killed, or failed for good), so the
/// queue's table holds only what waits or runs, whatever the size of the
/// runs and the age of the installation. The hub's record of an execution
/// is `target_executions`; a job is only its delivery. apalis acknowledges
/// a finished job with a join whose plan reads every job the worker has
/// locked, finished ones included (or the whole table): with finished jobs
/// kept, each acknowledgement would read more the larger the run. Returns
/// how many were removed.
pub async fn prune_finished(conn: &mut sqlx::PgConnection) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM apalis.jobs
         WHERE starts_with(job_type, $1)
           AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))",
    )
    .bind(PREFIX)
    .execute(conn)
    .await?
    .rows_affected())
}
