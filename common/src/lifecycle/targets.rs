//! A run's targets as workers take and end them.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{LifecycleError, operate::after_ending};
use crate::{
    domain::{
        RunState, TargetState,
        run::{RunEvent, derive_outcome},
    },
    store::{
        audit::{self, Actor, Entry},
        executions::{self, AppliedStep, ClaimedExecution, DirtyMark, Ending},
        runs, webhooks,
    },
};

/// Claims a `queued` execution for `worker_id`, and returns it with its run
/// as the claim leaves it. `None` when it is not queued any more
/// (cancelled, or already claimed by a redelivered job): then the job must
/// do nothing, which is what makes redelivery harmless. The first claim of
/// a run moves it from `queued` to `running`.
pub async fn claim(
    conn: &mut PgConnection,
    execution_id: Uuid,
    worker_id: Uuid,
) -> Result<Option<(ClaimedExecution, runs::RunRow)>, LifecycleError> {
    let Some(claimed) = executions::claim(conn, execution_id, worker_id).await? else {
        return Ok(None);
    };
    // Only a run's first claim changes the run; the others leave its row
    // alone, so that claims never queue behind the run's finishing targets.
    let no_run = || LifecycleError::Corrupt(format!("execution {execution_id} has no run"));
    let mut run = runs::get(conn, claimed.run_id).await?.ok_or_else(no_run)?;
    if run.state.transition(RunEvent::Start).is_ok() {
        run = runs::lock(conn, claimed.run_id).await?.ok_or_else(no_run)?;
        if let Ok(next) = run.state.transition(RunEvent::Start) {
            runs::set_state(conn, &run, next, None, None).await?;
            run.state = next;
        }
    }
    Ok(Some((claimed, run)))
}

/// The `target.started` audit row of a claimed execution, by the worker
/// that claimed it. Appended last in the claim's transaction (it holds the
/// audit chain's head until commit).
pub async fn started(
    conn: &mut PgConnection,
    worker: &Actor,
    worker_id: Uuid,
    claimed: &ClaimedExecution,
    project_id: Uuid,
) -> Result<(), LifecycleError> {
    audit::append(
        conn,
        &Entry::new(
            worker.clone(),
            "target.started",
            "target_execution",
            claimed.id,
        )
        .project(project_id)
        .details(serde_json::json!({
            "run_id": claimed.run_id,
            "target_id": claimed.target_id,
            "worker_id": worker_id,
            "attempt": claimed.attempt,
        })),
    )
    .await?;
    Ok(())
}

/// Steps that committed on the target, recorded in the hub: each one's
/// history row and the target's applied set. Called only after the target
/// committed them, so a lost record leaves the target ahead of the hub
/// (which the next claim catches up or reports as drift), never behind.
pub async fn record_steps(
    conn: &mut PgConnection,
    steps: &[AppliedStep<'_>],
) -> Result<(), LifecycleError> {
    executions::record_steps(conn, steps).await?;
    Ok(())
}

/// How far a running script has got: its version, the statement reached
/// (1-based) and the hash of the statements applied so far — what a resume
/// proves on the target before it goes on.
pub async fn progress(
    conn: &mut PgConnection,
    execution_id: Uuid,
    version: &str,
    statement: i32,
    applied_hash: &str,
) -> Result<(), LifecycleError> {
    executions::progress(conn, execution_id, version, statement, applied_hash).await?;
    Ok(())
}

/// What a running execution waits for, shown live (its lock budget ran out
/// and it retries after a pause; `retried` counts the retry), or `None`
/// when it goes on.
pub async fn waiting(
    conn: &mut PgConnection,
    execution_id: Uuid,
    waiting: Option<&str>,
    retried: bool,
) -> Result<(), LifecycleError> {
    executions::waiting(conn, execution_id, waiting, retried).await?;
    Ok(())
}

/// A blocking session a worker terminated for a target execution.
#[derive(Debug, Clone, Copy)]
pub struct Terminated<'a> {
    pub execution_id: Uuid,
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub project_id: Uuid,
    /// Who it was and what it ran ([`crate::domain::blockers::Blocker::describe`]).
    pub description: &'a str,
}

/// The `target.blocker_terminated` audit row of a session a worker
/// terminated (the environment opted in), with the victim's description.
pub async fn blocker_terminated(
    conn: &mut PgConnection,
    worker: &Actor,
    t: Terminated<'_>,
) -> Result<(), LifecycleError> {
    audit::append(
        conn,
        &Entry::new(
            worker.clone(),
            "target.blocker_terminated",
            "target_execution",
            t.execution_id,
        )
        .project(t.project_id)
        .details(serde_json::json!({
            "run_id": t.run_id,
            "target_id": t.target_id,
            "blocker": t.description,
        })),
    )
    .await?;
    Ok(())
}

/// How an execution ended, and who says so (the worker that ran it, the
/// recovery of a dead worker's target, an admin).
#[derive(Debug, Clone)]
pub struct Finish<'a> {
    pub execution_id: Uuid,
    pub state: TargetState,
    pub error: Option<&'a str>,
    /// The migration that failed, if one did.
    pub failed_version: Option<&'a str>,
    /// The statement reached (1-based) when a statement-by-statement script failed.
    pub statement: Option<i32>,
    /// The target is left dirty: a script stopped part-way, or its history
    /// could not be written.
    pub dirty: Option<&'a DirtyMark>,
    pub worker: &'a Actor,
}

/// Ends a running execution and audits it, and starts what may start next
/// (concurrency, canary) or stops the rest (stop on failure, a failed
/// canary). A target left dirty is marked first. Returns the execution's
/// run, which the caller settles ([`settle`]) once this is committed; `None`
/// for a report of an execution that is not running (late, or repeated),
/// which changes nothing.
///
/// The run's outcome is not decided here: two targets ending together each
/// see the other still running until it commits, and neither would see the
/// run's last ending. After its commit, each finisher sees every ending
/// committed before it, so the last one settles the run. Holding the run's
/// lock instead made every finished target of a run wait for all the
/// others' commits.
pub async fn finish(
    conn: &mut PgConnection,
    f: &Finish<'_>,
) -> Result<Option<Uuid>, LifecycleError> {
    // Before the audit row below, which holds the chain's head until commit.
    if let Some(mark) = f.dirty {
        executions::mark_dirty(conn, mark, f.error.unwrap_or_default()).await?;
    }
    let ending = Ending {
        execution_id: f.execution_id,
        state: f.state,
        error: f.error,
        failed_version: f.failed_version,
        statement: f.statement,
    };
    let Some(ended) = executions::finish(conn, &ending).await? else {
        return Ok(None);
    };
    // Before the audit head, the order `claim` (run, then its audit row)
    // uses too when it takes the run's lock; the other order deadlocks.
    after_ending(conn, ended.run_id).await?;
    let action = match f.state {
        TargetState::Succeeded => "target.succeeded",
        TargetState::Skipped => "target.skipped",
        TargetState::Interrupted => "target.interrupted",
        _ => "target.failed",
    };
    // The target-side error text is product output, not a secret: it is
    // what the user needs to fix the migration.
    audit::append(
        conn,
        &Entry::new(f.worker.clone(), action, "target_execution", f.execution_id)
            .project(ended.project_id)
            .details(serde_json::json!({
                "run_id": ended.run_id,
                "target_id": ended.target_id,
                "error": f.error,
                "version": f.failed_version,
                "statement": f.statement,
                "lock_retries": ended.lock_retries,
            })),
    )
    .await?;
    Ok(Some(ended.run_id))
}

/// Records the run's outcome once all its executions are final, and returns
/// it; in its own transaction, after the commit of a [`finish`] once
/// [`settle_due`] says so (or when a sweep finds a run whose last finisher
/// stopped before settling it). The run's lock and every state only when
/// none is open.
pub async fn settle(
    conn: &mut PgConnection,
    run_id: Uuid,
    actor: &Actor,
) -> Result<Option<RunState>, LifecycleError> {
    if executions::any_open(conn, run_id).await? {
        return Ok(None);
    }
    let run = runs::lock(conn, run_id)
        .await?
        .ok_or(LifecycleError::NotFound("run"))?;
    // Again under the lock: a resume may have queued one meanwhile.
    if executions::any_open(conn, run_id).await? {
        return Ok(None);
    }
    let states = executions::states(conn, run_id).await?;
    let Some(outcome) = derive_outcome(&states) else {
        return Ok(None);
    };
    let Ok(next) = run.state.transition(RunEvent::Finish(outcome)) else {
        return Ok(None);
    };
    runs::set_state(conn, &run, next, None, None).await?;
    let event = if next == RunState::Succeeded {
        "succeeded"
    } else {
        "failed"
    };
    webhooks::notify_run(conn, run_id, event).await?;
    audit::append(
        conn,
        &Entry::new(actor.clone(), "run.finished", "run", run_id)
            .project(run.project_id)
            .details(serde_json::json!({ "state": next.as_str() })),
    )
    .await?;
    Ok(Some(next))
}

/// Whether [`settle`] has anything to do: none of the run's executions is
/// open. One index probe outside any transaction, so a finishing target of
/// a run that goes on pays no transaction for it; `settle` looks again
/// under the run's lock.
pub async fn settle_due(conn: &mut PgConnection, run_id: Uuid) -> Result<bool, LifecycleError> {
    Ok(!executions::any_open(conn, run_id).await?)
}

/// Runs whose executions are all final but that are still `queued` or
/// `running`: their last finisher stopped between its commit and
/// [`settle`]. At most `limit`; a sweep settles each.
pub async fn unsettled(conn: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, LifecycleError> {
    Ok(runs::unsettled(conn, limit).await?)
}
