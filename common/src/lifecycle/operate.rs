//! Executing and cancelling runs, and queueing their targets.

use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{
    Caller, LifecycleError,
    decide::{approvals_met, environment_of, transition},
    invalidate_if_stale,
};
use crate::{
    domain::{Capability, dispatch, role::allows, run::RunEvent},
    queue,
    store::{
        audit,
        executions::{self, NotStarted, Queued},
        runs::{self, RunRow},
        webhooks,
    },
};

/// How far ahead a run may be scheduled.
const MAX_DELAY: time::Duration = time::Duration::days(30);

/// Execute: checks that the approved run is still what was approved, queues
/// its first targets (up to its concurrency, or its canary) as jobs in
/// their pools' queues, due at `not_before` — or at the maintenance
/// window's next opening after it, outside a window — and moves it to
/// `queued`. The
/// jobs continue the trace `traceparent` names. Queueing and the state
/// change commit together or not at all; each finishing target dispatches
/// the next ([`dispatch`]).
pub async fn execute(
    conn: &mut PgConnection,
    caller: &Caller,
    run_id: Uuid,
    not_before: Option<OffsetDateTime>,
    traceparent: Option<String>,
) -> Result<(), LifecycleError> {
    if not_before.is_some_and(|t| t > OffsetDateTime::now_utc() + MAX_DELAY) {
        return Err(LifecycleError::invalid(
            "not_before",
            "must be within 30 days",
        ));
    }
    let run = super::lock_run(conn, run_id).await?;
    require_operator(conn, caller, &run).await?;
    let next = transition(&run, RunEvent::Execute, "execute")?;
    invalidate_if_stale(conn, caller, &run).await?;
    // Defence in depth: the approvals on record must cover this digest.
    let env = environment_of(conn, &run).await?;
    if !approvals_met(conn, &run, &env).await? {
        return Err(LifecycleError::conflict(
            "not_approved",
            "the run lacks the approvals its environment requires",
        ));
    }
    // Outside the maintenance window, the first targets are due at its
    // next opening (after `not_before`, if any).
    let schedule = super::window::schedule(conn, run.id).await?.map_err(|e| {
        LifecycleError::conflict(
            "maintenance_window_invalid",
            format!("the maintenance window of the run's DB set cannot be read: {e}"),
        )
    })?;
    let due = not_before.unwrap_or_else(OffsetDateTime::now_utc);
    let scheduled_for = Some(schedule.next_start(due)).filter(|start| *start > due);
    let run = RunRow { traceparent, ..run };
    let queued = dispatch(conn, &run, scheduled_for.or(not_before)).await?;
    runs::mark_executed(
        conn,
        run.id,
        caller.id,
        not_before,
        scheduled_for,
        run.traceparent.as_deref(),
    )
    .await?;
    runs::set_state(conn, &run, next, Some(caller.id), None).await?;
    webhooks::notify_run(conn, run.id, "executed").await?;
    audit::append(
        conn,
        &caller
            .audit("run.executed", "run", run.id)
            .project(run.project_id)
            .details(json!({
                "digest": run.digest,
                "targets": queued.len(),
                "not_before": not_before.map(|t| t.unix_timestamp()),
                "scheduled_for": scheduled_for.map(|t| t.unix_timestamp()),
            })),
    )
    .await?;
    Ok(())
}

/// Cancel: targets not started are cancelled; running ones finish their
/// current migration and report as usual.
pub async fn cancel(
    conn: &mut PgConnection,
    caller: &Caller,
    run_id: Uuid,
) -> Result<(), LifecycleError> {
    let run = super::lock_run(conn, run_id).await?;
    require_operator(conn, caller, &run).await?;
    let next = transition(&run, RunEvent::Cancel, "be cancelled")?;
    let cancelled =
        executions::cancel_not_started(conn, run.id, NotStarted::PendingOrQueued, None).await?;
    // Their jobs would only be dropped by the worker that reaches them.
    crate::queue::discard_run(conn, run.id).await?;
    runs::set_state(conn, &run, next, Some(caller.id), Some("cancelled")).await?;
    audit::append(
        conn,
        &caller
            .audit("run.cancelled", "run", run.id)
            .project(run.project_id)
            .details(json!({ "targets_cancelled": cancelled })),
    )
    .await?;
    Ok(())
}

/// Requesters operate their own runs; managers and admins any run. A
/// refusal is audited.
async fn require_operator(
    conn: &mut PgConnection,
    caller: &Caller,
    run: &RunRow,
) -> Result<(), LifecycleError> {
    if run.requested_by == caller.id || allows(caller.role, Capability::OperateAnyRun) {
        return Ok(());
    }
    let (entry, message) = caller.lacking(Capability::OperateAnyRun);
    audit::append(conn, &entry).await?;
    Err(LifecycleError::Forbidden {
        code: "forbidden",
        message,
    })
}

/// Applies the dispatch rule to a run whose row the caller holds locked:
/// cancels what must not start (stop on failure, a failed canary), queues
/// what may (concurrency, canary) and pushes their jobs, due at
/// `not_before`. Returns the executions queued.
pub async fn dispatch(
    conn: &mut PgConnection,
    run: &RunRow,
    not_before: Option<OffsetDateTime>,
) -> Result<Vec<Queued>, sqlx::Error> {
    let tally = executions::tally(conn, run.id, run.concurrency, run.canary).await?;
    let decision = dispatch::next(&tally, run.concurrency, run.canary, run.stop_on_failure);
    if let Some(reason) = decision.cancel_pending {
        executions::cancel_not_started(conn, run.id, NotStarted::Pending, Some(reason)).await?;
    }
    if decision.queue.is_empty() {
        return Ok(Vec::new());
    }
    let queued = executions::queue(conn, run.id, &decision.queue).await?;
    push(conn, run, &queued, not_before).await?;
    Ok(queued)
}

/// What a finished target does about the rest of its run: refills the
/// place it freed without the run's lock when the dispatch rule allows
/// ([`dispatch::refills_alone`]), or else takes the lock and applies the
/// whole rule ([`dispatch`]). A run that is over starts nothing.
pub(super) async fn after_ending(
    conn: &mut PgConnection,
    run_id: Uuid,
) -> Result<(), LifecycleError> {
    let Some(run) = runs::get(conn, run_id).await? else {
        return Err(LifecycleError::NotFound("run"));
    };
    if run.state.is_final() {
        return Ok(());
    }
    let tally = executions::tally(conn, run.id, run.concurrency, run.canary).await?;
    let decision = dispatch::next(&tally, run.concurrency, run.canary, run.stop_on_failure);
    if !dispatch::refills_alone(&tally, &decision) {
        let run = super::lock_run(conn, run_id).await?;
        if !run.state.is_final() {
            dispatch(conn, &run, None).await?;
        }
        return Ok(());
    }
    if decision.queue.is_empty() {
        return Ok(());
    }
    let queued = executions::queue_next(conn, run.id, decision.queue.len()).await?;
    push(conn, &run, &queued, None).await?;
    Ok(())
}

/// Pushes the jobs of `queued` executions, due at `not_before`.
async fn push(
    conn: &mut PgConnection,
    run: &RunRow,
    queued: &[Queued],
    not_before: Option<OffsetDateTime>,
) -> Result<(), sqlx::Error> {
    if queued.is_empty() {
        return Ok(());
    }
    queue::push(conn, run.id, run.traceparent.as_deref(), queued, not_before).await
}
