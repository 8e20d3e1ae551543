//! Target executions: claiming, recording each applied migration, progress,
//! dirty marks and endings. SQL only; what follows from them is decided in
//! `crate::lifecycle`.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{
    Engine, TargetState, Version,
    dispatch::{Slot, Tally},
    run::Direction,
};

/// The execution a worker has claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedExecution {
    pub id: Uuid,
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub attempt: i32,
}

/// Moves a `queued` execution (or one waiting for its maintenance window)
/// to `running` for `worker_id`. `None` when it is neither any more
/// (cancelled, or already claimed by a redelivered job).
pub async fn claim(
    conn: &mut PgConnection,
    execution_id: Uuid,
    worker_id: Uuid,
) -> Result<Option<ClaimedExecution>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE target_executions
         SET state = 'running', worker_id = $2, attempt = attempt + 1, waiting = NULL,
             started_at = CASE WHEN state = 'waiting_for_window' THEN COALESCE(started_at, now())
                               ELSE now() END
         WHERE id = $1 AND state IN ('queued', 'waiting_for_window')
         RETURNING id, run_id, target_id, attempt",
    )
    .bind(execution_id)
    .bind(worker_id)
    .fetch_optional(conn)
    .await
}

/// One migration applied (or rolled back) on a target.
#[derive(Debug, Clone)]
pub struct AppliedStep<'a> {
    pub execution_id: Uuid,
    pub target_id: Uuid,
    pub run_id: Uuid,
    pub migration_id: Uuid,
    pub version: &'a Version,
    pub direction: Direction,
    pub checksum: &'a str,
    pub started_at: OffsetDateTime,
    pub duration_ms: i64,
    pub statements: i32,
    /// The step finished a script resumed on a dirty target: the target is
    /// clean again once it is recorded.
    pub resumed: bool,
}

/// Records successful steps of one execution, in order, in one statement
/// whatever their count (one round trip, atomic on its own): the applied
/// state (added for `up`, removed for `down`), the per-migration history
/// rows, the execution's current version, and — when a step finished a
/// resumed script — the end of the target's dirty mark.
pub async fn record_steps(
    conn: &mut PgConnection,
    steps: &[AppliedStep<'_>],
) -> Result<(), sqlx::Error> {
    let (Some(first), Some(last)) = (steps.first(), steps.last()) else {
        return Ok(());
    };
    // The applied state: added for `up` (a version's sort key is numeric[],
    // sent as its text form, one per row), removed for `down`.
    let applied = match first.direction {
        Direction::Up => {
            "INSERT INTO applied_migrations (target_id, version, version_key, migration_id, checksum, run_id, duration_ms)
             SELECT $1, v, k::numeric[], m, c, $2, d FROM steps"
        }
        Direction::Down => {
            "DELETE FROM applied_migrations WHERE target_id = $1 AND version IN (SELECT v FROM steps)"
        }
    };
    let sql = format!(
        "WITH steps AS (
           SELECT * FROM UNNEST($3::text[], $4::text[], $5::uuid[], $6::text[], $7::int8[],
                                $8::timestamptz[], $9::int4[]) WITH ORDINALITY AS s(v, k, m, c, d, st, n, i)
         ), applied AS (
           {applied}
         ), history AS (
           INSERT INTO migration_executions (target_execution_id, target_id, version, direction, checksum, outcome,
                                             started_at, finished_at, duration_ms, statements)
           SELECT $10, $1, v, $11, c, 'succeeded', st, now(), d, n FROM steps ORDER BY i
         ), clean AS (
           DELETE FROM target_dirty_states WHERE target_id = $1 AND $12
         )
         UPDATE target_executions SET current_version = $13, statement_index = NULL, statements_hash = NULL
          WHERE id = $14"
    );
    let versions: Vec<String> = steps.iter().map(|s| s.version.to_string()).collect();
    let keys: Vec<String> = steps
        .iter()
        .map(|s| format!("{{{}}}", s.version.sort_key().join(",")))
        .collect();
    let migrations: Vec<Uuid> = steps.iter().map(|s| s.migration_id).collect();
    let checksums: Vec<&str> = steps.iter().map(|s| s.checksum).collect();
    let durations: Vec<i64> = steps.iter().map(|s| s.duration_ms).collect();
    let started: Vec<OffsetDateTime> = steps.iter().map(|s| s.started_at).collect();
    let statements: Vec<i32> = steps.iter().map(|s| s.statements).collect();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(first.target_id)
        .bind(first.run_id)
        .bind(&versions)
        .bind(&keys)
        .bind(&migrations)
        .bind(&checksums)
        .bind(&durations)
        .bind(&started)
        .bind(&statements)
        .bind(first.execution_id)
        .bind(first.direction.as_str())
        .bind(steps.iter().any(|s| s.resumed))
        .bind(last.version.to_string())
        .bind(last.execution_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A version a target's history shows applied by a hub run, unknown to the
/// hub's applied state.
#[derive(Debug, Clone)]
pub struct Unrecorded {
    pub version: Version,
    pub checksum: String,
    pub run_id: Uuid,
}

/// Records `found` as applied on the target when each is provably this
/// hub's own work: the run pinned that version with that checksum and has an
/// execution on this target. Anything else is left alone (it stays drift).
/// Returns how many were recorded.
pub async fn catch_up(
    conn: &mut PgConnection,
    target_id: Uuid,
    found: &[Unrecorded],
) -> Result<u64, sqlx::Error> {
    let versions: Vec<String> = found.iter().map(|f| f.version.to_string()).collect();
    let keys: Vec<String> = found
        .iter()
        .map(|f| format!("{{{}}}", f.version.sort_key().join(",")))
        .collect();
    let checksums: Vec<&str> = found.iter().map(|f| f.checksum.as_str()).collect();
    let runs: Vec<Uuid> = found.iter().map(|f| f.run_id).collect();
    let done = sqlx::query(
        "INSERT INTO applied_migrations (target_id, version, version_key, migration_id, checksum, run_id)
         SELECT $1, f.v, f.k::numeric[], rm.migration_id, rm.checksum, rm.run_id
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::uuid[]) AS f(v, k, c, r)
         JOIN run_migrations rm ON rm.run_id = f.r AND rm.version = f.v AND rm.checksum = f.c
         WHERE EXISTS (SELECT 1 FROM target_executions e WHERE e.run_id = f.r AND e.target_id = $1)
         ON CONFLICT (target_id, version) DO NOTHING",
    )
    .bind(target_id)
    .bind(&versions)
    .bind(&keys)
    .bind(&checksums)
    .bind(&runs)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// How an execution ended.
#[derive(Debug, Clone)]
pub struct Ending<'a> {
    pub execution_id: Uuid,
    pub state: TargetState,
    pub error: Option<&'a str>,
    /// The migration that failed, if one did.
    pub failed_version: Option<&'a str>,
    /// The statement reached (1-based) when a statement-by-statement script failed.
    pub statement: Option<i32>,
}

/// The execution a [`finish`] ended.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Ended {
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub project_id: Uuid,
    /// How many times a migration was retried after its lock budget ran out.
    pub lock_retries: i32,
}

/// Ends a `running` execution; `None` when it was not running (a late or
/// repeated report).
pub async fn finish(conn: &mut PgConnection, e: &Ending<'_>) -> Result<Option<Ended>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE target_executions
         SET state = $2, error = $3, statement_index = COALESCE($4, statement_index),
             current_version = COALESCE($5, current_version), finished_at = now(),
             duration_ms = (extract(epoch FROM now() - COALESCE(started_at, now())) * 1000)::bigint,
             waiting = NULL
         WHERE id = $1 AND state = 'running'
         RETURNING run_id, target_id, (SELECT project_id FROM runs WHERE id = run_id) AS project_id,
                   lock_retries",
    )
    .bind(e.execution_id)
    .bind(e.state.as_str())
    .bind(e.error)
    .bind(e.statement)
    .bind(e.failed_version)
    .fetch_optional(conn)
    .await
}

/// The states of every execution of a run.
pub async fn states(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Vec<TargetState>, sqlx::Error> {
    let states: Vec<String> =
        sqlx::query_scalar("SELECT state FROM target_executions WHERE run_id = $1")
            .bind(run_id)
            .fetch_all(conn)
            .await?;
    Ok(states
        .iter()
        .map(|s| s.parse().unwrap_or(TargetState::Pending))
        .collect())
}

/// The run's executions as the dispatch rule sees them: index probes of
/// the pending, active and failed ones and of the canary, never a read of
/// every execution (see the indexes of migration
/// `20261206000014_execution_probes.sql`).
pub async fn tally(
    conn: &mut PgConnection,
    run_id: Uuid,
    concurrency: i32,
    canary: i32,
) -> Result<Tally, sqlx::Error> {
    let (active, any_failed, first_pending, canary_positions, canary_states): (
        i32,
        bool,
        Vec<i32>,
        Vec<i32>,
        Vec<String>,
    ) = sqlx::query_as(
        "SELECT
           (SELECT count(*)::int FROM target_executions
            WHERE run_id = $1 AND state IN ('queued', 'running', 'waiting_for_window')),
           EXISTS (SELECT 1 FROM target_executions
                   WHERE run_id = $1 AND state IN ('failed', 'interrupted')),
           ARRAY(SELECT position FROM target_executions
                 WHERE run_id = $1 AND state = 'pending' ORDER BY position LIMIT $2),
           ARRAY(SELECT position FROM target_executions
                 WHERE run_id = $1 AND position <= $3 ORDER BY position),
           ARRAY(SELECT state FROM target_executions
                 WHERE run_id = $1 AND position <= $3 ORDER BY position)",
    )
    .bind(run_id)
    .bind(i64::from(concurrency.max(0)))
    .bind(canary)
    .fetch_one(conn)
    .await?;
    Ok(Tally {
        first_pending,
        active,
        any_failed,
        canary: canary_positions
            .into_iter()
            .zip(canary_states)
            .map(|(position, state)| Slot {
                position,
                state: state.parse().unwrap_or(TargetState::Pending),
            })
            .collect(),
    })
}

/// Whether some execution of the run is not final yet (pending, queued,
/// running or waiting for its window): two index probes.
pub async fn any_open(conn: &mut PgConnection, run_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM target_executions WHERE run_id = $1 AND state = 'pending')
             OR EXISTS (SELECT 1 FROM target_executions
                        WHERE run_id = $1 AND state IN ('queued', 'running', 'waiting_for_window'))",
    )
    .bind(run_id)
    .fetch_one(conn)
    .await
}

/// An execution moved to `queued`: its id, target and worker pool.
pub type Queued = (Uuid, Uuid, String);

/// Moves the run's `pending` executions at `positions` to `queued`.
pub async fn queue(
    conn: &mut PgConnection,
    run_id: Uuid,
    positions: &[i32],
) -> Result<Vec<Queued>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE target_executions SET state = 'queued', queued_at = now()
         WHERE run_id = $1 AND state = 'pending' AND position = ANY($2)
         RETURNING id, target_id, worker_pool",
    )
    .bind(run_id)
    .bind(positions)
    .fetch_all(conn)
    .await
}

/// Moves the run's first `n` `pending` executions to `queued`, skipping
/// any another transaction holds (a concurrent finisher taking it, a
/// cancel): what a finished target uses to refill its place without the
/// run's lock, so that two finishers never take the same one and neither
/// comes away empty-handed.
pub async fn queue_next(
    conn: &mut PgConnection,
    run_id: Uuid,
    n: usize,
) -> Result<Vec<Queued>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE target_executions SET state = 'queued', queued_at = now()
         WHERE id IN (SELECT id FROM target_executions
                      WHERE run_id = $1 AND state = 'pending'
                      ORDER BY position LIMIT $2
                      FOR UPDATE SKIP LOCKED)
         RETURNING id, target_id, worker_pool",
    )
    .bind(run_id)
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .fetch_all(conn)
    .await
}

/// Queues the run's execution on the target again when it stopped (failed
/// or interrupted); `None` when it did not (still running, or cancelled).
pub async fn requeue_stopped(
    conn: &mut PgConnection,
    run_id: Uuid,
    target_id: Uuid,
) -> Result<Option<Queued>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE target_executions
         SET state = 'queued', queued_at = now(), finished_at = NULL, duration_ms = NULL, error = NULL
         WHERE run_id = $1 AND target_id = $2 AND state IN ('failed', 'interrupted')
         RETURNING id, target_id, worker_pool",
    )
    .bind(run_id)
    .bind(target_id)
    .fetch_optional(conn)
    .await
}

/// Which executions that have not started [`cancel_not_started`] cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStarted {
    /// Only those no job was pushed for yet.
    Pending,
    /// Also those waiting in a queue or for their maintenance window (their
    /// jobs then find nothing to claim).
    PendingOrQueued,
}

/// Cancels the run's executions that have not started; returns how many.
pub async fn cancel_not_started(
    conn: &mut PgConnection,
    run_id: Uuid,
    which: NotStarted,
    reason: Option<&str>,
) -> Result<u64, sqlx::Error> {
    let states: &[&str] = match which {
        NotStarted::Pending => &["pending"],
        NotStarted::PendingOrQueued => &["pending", "queued", "waiting_for_window"],
    };
    Ok(sqlx::query(
        "UPDATE target_executions SET state = 'cancelled', error = COALESCE($3, error), finished_at = now()
         WHERE run_id = $1 AND state = ANY($2)",
    )
    .bind(run_id)
    .bind(states)
    .bind(reason)
    .execute(conn)
    .await?
    .rows_affected())
}

/// The hub's applied versions of a target with their checksums.
pub async fn applied(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT version, checksum FROM applied_migrations WHERE target_id = $1 ORDER BY version_key")
        .bind(target_id)
        .fetch_all(conn)
        .await
}

/// For a `running` execution: whether the worker that claimed it is gone
/// (marked stopped, unknown, or silent for `silent_for`). `None` when the
/// execution is not running. A redelivered job uses this to tell a dead
/// worker's execution (to be marked `interrupted`) from a live one.
pub async fn running_on_dead_worker(
    conn: &mut PgConnection,
    execution_id: Uuid,
    silent_for: std::time::Duration,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM target_executions e LEFT JOIN workers w ON w.id = e.worker_id
         WHERE e.id = $1 AND e.state = 'running'",
        DEAD_WORKER.replace("$SILENT", "$2")
    )))
    .bind(execution_id)
    .bind(silent_for.as_secs_f64())
    .fetch_optional(conn)
    .await
}

/// A worker counts as dead when it is unknown, marked stopped, or silent
/// for `silent_for` (the placeholder `$SILENT`, in seconds).
const DEAD_WORKER: &str = "(w.id IS NULL OR w.stopped_at IS NOT NULL
     OR w.last_heartbeat_at < now() - make_interval(secs => $SILENT))";

/// The `running` executions whose worker is dead, longest running first,
/// at most `limit`.
pub async fn running_on_dead_workers(
    conn: &mut PgConnection,
    silent_for: std::time::Duration,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT e.id FROM target_executions e LEFT JOIN workers w ON w.id = e.worker_id
         WHERE e.state = 'running' AND {}
         ORDER BY e.started_at LIMIT $2",
        DEAD_WORKER.replace("$SILENT", "$1")
    )))
    .bind(silent_for.as_secs_f64())
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Locks the execution if it is `running` on a dead worker and nobody else
/// holds it (a live finish, another replica's sweep), with what its worker
/// last reported; `None` otherwise.
pub async fn lock_if_on_dead_worker(
    conn: &mut PgConnection,
    execution_id: Uuid,
    silent_for: std::time::Duration,
) -> Result<Option<LastProgress>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT e.run_id, e.target_id, t.engine, r.direction, e.current_version AS version,
                e.statement_index, e.statements_hash
         FROM target_executions e JOIN targets t ON t.id = e.target_id JOIN runs r ON r.id = e.run_id
         LEFT JOIN workers w ON w.id = e.worker_id
         WHERE e.id = $1 AND e.state = 'running' AND {}
         FOR UPDATE OF e SKIP LOCKED",
        DEAD_WORKER.replace("$SILENT", "$2")
    )))
    .bind(execution_id)
    .bind(silent_for.as_secs_f64())
    .fetch_optional(conn)
    .await
}

/// A running execution as its worker last reported it: what a dead
/// worker's target is left with.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LastProgress {
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub engine: Engine,
    #[sqlx(try_from = "String")]
    pub direction: Direction,
    pub version: Option<String>,
    pub statement_index: Option<i32>,
    pub statements_hash: Option<String>,
}

/// Records how far a running execution has got inside a script run
/// statement by statement (the version, the 1-based statement reached and
/// the hash of the statements before it), for the run page and for marking
/// the target dirty should the worker die. Written in batches, never once per statement.
///
/// Progress travels on its own connection, so it may arrive after the
/// version was recorded as done by [`record_steps`]; such a late report (same
/// version, statement already cleared) is ignored.
pub async fn progress(
    conn: &mut PgConnection,
    execution_id: Uuid,
    version: &str,
    statement: i32,
    applied_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE target_executions SET current_version = $2, statement_index = $3, statements_hash = $4
         WHERE id = $1 AND state = 'running'
           AND (current_version IS DISTINCT FROM $2 OR statement_index IS NOT NULL)",
    )
    .bind(execution_id)
    .bind(version)
    .bind(statement)
    .bind(applied_hash)
    .execute(conn)
    .await?;
    Ok(())
}

/// A running execution waits: its lock budget ran out and it will try
/// again (`retried`: the retry is counted) — or the wait is over (`None`).
pub async fn waiting(
    conn: &mut PgConnection,
    execution_id: Uuid,
    waiting: Option<&str>,
    retried: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE target_executions
         SET waiting = $2, lock_retries = lock_retries + CASE WHEN $3 THEN 1 ELSE 0 END
         WHERE id = $1 AND state = 'running'",
    )
    .bind(execution_id)
    .bind(waiting)
    .bind(retried)
    .execute(conn)
    .await?;
    Ok(())
}

/// An execution that waits for its maintenance window.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WindowWait {
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub worker_pool: String,
    pub project_id: Uuid,
    /// It was running (stopped between two migrations), not waiting to start.
    pub was_running: bool,
    /// It already waited for its window (a job of it pushed again).
    pub was_waiting: bool,
    /// The run's trace, which the job continues.
    pub traceparent: Option<String>,
}

/// Moves a `queued` or `running` execution (or one already waiting) to
/// `waiting_for_window`, saying so in `waiting`; `None` when it is none of
/// these any more (cancelled, finished, or claimed by another job).
pub async fn wait_for_window(
    conn: &mut PgConnection,
    execution_id: Uuid,
    note: &str,
) -> Result<Option<WindowWait>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE target_executions t SET state = 'waiting_for_window', waiting = $2
         FROM target_executions before JOIN runs r ON r.id = before.run_id
         WHERE t.id = $1 AND before.id = t.id
           AND t.state IN ('queued', 'running', 'waiting_for_window')
         RETURNING t.run_id, t.target_id, t.worker_pool, r.project_id,
                   before.state = 'running' AS was_running,
                   before.state = 'waiting_for_window' AS was_waiting, r.traceparent",
    )
    .bind(execution_id)
    .bind(note)
    .fetch_optional(conn)
    .await
}

/// Where a script run statement by statement stopped on a target: the
/// statements before `statement_index` (1-based) were applied and hash to
/// `statements_hash`; the one at `statement_index` failed (or was never
/// confirmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirtyMark {
    pub target_id: Uuid,
    pub run_id: Uuid,
    pub version: String,
    pub direction: Direction,
    pub statement_index: i32,
    pub statements_hash: String,
}

/// Marks the target dirty: it takes no run until an admin resolves it. A
/// target that is dirty already keeps one row, describing the latest stop.
pub async fn mark_dirty(
    conn: &mut PgConnection,
    mark: &DirtyMark,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO target_dirty_states (target_id, run_id, version, direction, statement_index, statements_hash, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (target_id) DO UPDATE
         SET run_id = EXCLUDED.run_id, version = EXCLUDED.version, direction = EXCLUDED.direction,
             statement_index = EXCLUDED.statement_index, statements_hash = EXCLUDED.statements_hash,
             error = EXCLUDED.error, since = now()",
    )
    .bind(mark.target_id)
    .bind(mark.run_id)
    .bind(&mark.version)
    .bind(mark.direction.as_str())
    .bind(mark.statement_index)
    .bind(&mark.statements_hash)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}
