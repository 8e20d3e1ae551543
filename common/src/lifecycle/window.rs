//! Maintenance windows in a run's life: Execute outside a window schedules
//! the run's first targets for the next opening ([`super::execute`]); a
//! target is never started outside a window, and one whose window ends
//! between two migrations stops there. Either way it waits as
//! `waiting_for_window`, its job due at the next opening.
//!
//! Windows decide when, not what: they are read when a target starts and
//! when it stops, never pinned by the run, so an admin's change applies to
//! runs already approved and invalidates none.

use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::LifecycleError;
use crate::{
    domain::window::{Schedule, WindowError},
    queue,
    store::{
        audit::{self, Actor, Entry},
        executions,
        runs::{self, RunScope},
    },
};

/// The schedule in force for the run's DB set (its own, else its
/// environment's), or why the stored text no longer reads (a time zone
/// that left the tz database).
pub async fn schedule(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<Result<Schedule, WindowError>, sqlx::Error> {
    let (environment, db_set) = runs::windows(conn, run_id).await?;
    Ok(Schedule::effective(
        environment.as_deref(),
        db_set.as_deref(),
    ))
}

/// What a target waiting for its window shows on the run page.
pub fn waiting_note(schedule: &Schedule, opens_at: OffsetDateTime) -> String {
    format!(
        "waiting for the maintenance window ({schedule}), which opens {}",
        schedule.local_time(opens_at)
    )
}

/// Moves the execution to `waiting_for_window` and pushes its job, due at
/// `opens_at`, into its pool's queue. Audited as `target.waiting_for_window`
/// when it stops running or starts to wait (a job of one that already
/// waits is only pushed again). `false` when the execution waits for
/// nothing any more (cancelled, finished, or claimed by another job).
pub async fn wait_for_window(
    conn: &mut PgConnection,
    worker: &Actor,
    execution_id: Uuid,
    schedule: &Schedule,
    opens_at: OffsetDateTime,
) -> Result<bool, LifecycleError> {
    let note = waiting_note(schedule, opens_at);
    let Some(waits) = executions::wait_for_window(conn, execution_id, &note).await? else {
        return Ok(false);
    };
    queue::push(
        conn,
        waits.run_id,
        waits.traceparent.as_deref(),
        &[(execution_id, waits.target_id, waits.worker_pool.clone())],
        Some(opens_at),
    )
    .await?;
    if waits.was_waiting {
        return Ok(true);
    }
    audit::append(
        conn,
        &Entry::new(
            worker.clone(),
            "target.waiting_for_window",
            "target_execution",
            execution_id,
        )
        .project(waits.project_id)
        .details(json!({
            "run_id": waits.run_id,
            "target_id": waits.target_id,
            "window": schedule.to_string(),
            "opens_at": opens_at.unix_timestamp(),
            // Stopped between two migrations, rather than not started.
            "stopped_running": waits.was_running,
        })),
    )
    .await?;
    Ok(true)
}

/// After a change of the windows of `scope` (an environment, a DB set):
/// the targets of its queued and running runs that have not started, or
/// wait for a window, are due at the next opening the new schedule gives
/// (at once inside a window), and a queued run's `scheduled_for` follows.
/// Returns how many runs were rescheduled. Nothing is invalidated: a window
/// decides when, not what.
pub async fn reschedule(
    conn: &mut PgConnection,
    scope: RunScope<'_>,
) -> Result<usize, LifecycleError> {
    let runs = runs::waiting_to_start(conn, scope).await?;
    let now = OffsetDateTime::now_utc();
    for (run_id, not_before, executions) in &runs {
        let due = not_before.filter(|t| *t > now).unwrap_or(now);
        // A schedule that no longer reads leaves the jobs as they are; their
        // targets fail with the reason when they come due.
        let Ok(schedule) = schedule(conn, *run_id).await? else {
            continue;
        };
        let starts = schedule.next_start(due);
        queue::reschedule(conn, executions, starts).await?;
        runs::set_scheduled_for(conn, *run_id, Some(starts).filter(|s| *s > due)).await?;
    }
    Ok(runs.len())
}
