//! One job, start to finish: claim the target execution, load what it needs,
//! re-verify the pinned checksums, run the engine's executor, finish.
//!
//! Every way a target can fail (bad checksum, unreachable, locked, drift,
//! failing SQL) ends as a `failed` execution with a message for the run page;
//! only a tool database that stays unreachable makes the job itself fail.

use std::time::Duration;

use common::{
    domain::{TargetState, window::WindowState},
    lifecycle::{self, dead_workers},
    queue::TargetJob,
    store::{executions, target_state::DirtyState},
};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    claim::{self, Claim, Claimed, TargetClaim},
    env::{HEARTBEAT, JobEnv},
    executor::{self, Applied, ExecError, Job, TargetSpec},
    plan,
    report::{self, Outcome, Reporter},
    retry::with_retry,
    snapshot::Pending,
};

/// How long a redelivered job waits for a silent worker to be declared dead
/// before leaving its execution alone.
const ORPHAN_WAIT: Duration = Duration::from_secs(6 * HEARTBEAT.as_secs());

/// The tool database failed the job beyond what retries could mend.
#[derive(Debug, thiserror::Error)]
#[error("tool database error while {what}: {source}")]
pub struct JobError {
    what: &'static str,
    #[source]
    source: sqlx::Error,
}

/// Executes one target job. A job whose execution is no longer `queued`
/// (cancelled, or redelivered after another worker claimed it) does nothing.
pub async fn run(env: &JobEnv, job: &TargetJob) -> Result<(), JobError> {
    let span = tracing::info_span!(
        "target_execution",
        execution_id = %job.execution_id,
        run_id = %job.run_id,
        target_id = %job.target_id,
        state = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // Part of the trace of the run's Execute request.
    common::telemetry::continue_trace(&span, &job.trace_context);
    let recorder = span.clone();
    async {
        let claimed = claim::execution(env, job)
            .await
            .map_err(|source| JobError {
                what: "claiming the target execution",
                source,
            })?;
        let claimed = match claimed {
            Claim::Claimed(claimed) => claimed,
            Claim::WaitsForWindow(opens_at) => {
                tracing::info!(%opens_at, "outside the maintenance window; waiting for it");
                return Ok(());
            }
            Claim::NotQueued => return settle_orphan(env, job.execution_id).await,
        };
        tracing::info!(
            attempt = claimed.execution.attempt,
            "target execution started"
        );
        let (outcome, snapshot) = execute(env, job, &claimed).await;
        recorder.record("state", outcome.state.as_str());
        if outcome.state == TargetState::WaitingForWindow {
            tracing::info!("the maintenance window ended; the rest waits for the next one");
            let waits =
                report::wait_for_window(&env.db, claimed.execution.id, job.run_id, &env.actor())
                    .await
                    .map_err(|source| JobError {
                        what: "leaving the execution waiting for its window",
                        source,
                    });
            if let Some(pending) = snapshot {
                env.snapshots.defer(pending);
            }
            return waits;
        }
        if outcome.state == TargetState::Failed {
            recorder.record("otel.status_code", "ERROR");
        }
        tracing::info!(
            state = outcome.state.as_str(),
            error = outcome.error.as_deref(),
            "target execution finished"
        );
        report::finish(&env.db, claimed.execution.id, &outcome, &env.actor())
            .await
            .map_err(|source| JobError {
                what: "finishing the target execution",
                source,
            })?;
        if let Some(pending) = snapshot {
            env.snapshots.defer(pending);
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// A job whose execution is not `queued` any more: cancelled, finished, or
/// claimed by a worker. apalis redelivers a claimed job when the consumer
/// that held it went silent; if the claiming worker is indeed dead, its
/// execution is over and is marked `interrupted` by the rule every
/// control-plane replica applies too ([`dead_workers`]), whichever comes
/// first. Nothing is ever re-applied.
async fn settle_orphan(env: &JobEnv, execution_id: Uuid) -> Result<(), JobError> {
    let give_up = tokio::time::Instant::now() + ORPHAN_WAIT;
    loop {
        let dead = with_retry("check the claiming worker", || async move {
            let mut conn = env.db.acquire().await?;
            executions::running_on_dead_worker(&mut conn, execution_id, dead_workers::SILENT_AFTER)
                .await
        })
        .await
        .map_err(|source| JobError {
            what: "checking the claiming worker",
            source,
        })?;
        match dead {
            None => {
                tracing::info!(
                    "execution is not queued any more (cancelled or done); nothing to do"
                );
                return Ok(());
            }
            Some(true) => {
                tracing::warn!("the worker running this execution died; marking it interrupted");
                let actor = env.actor();
                let interrupted = with_retry("mark the execution interrupted", || async {
                    let mut tx = env.db.begin().await?;
                    let interrupted =
                        dead_workers::interrupt_if_dead(&mut tx, execution_id, &actor).await?;
                    tx.commit().await?;
                    Ok(interrupted)
                })
                .await;
                let settled = match interrupted {
                    Ok(Some(done)) => report::settle(&env.db, done.run_id, &actor).await,
                    Ok(None) => Ok(()),
                    Err(err) => Err(err),
                };
                return settled.map_err(|source| JobError {
                    what: "marking the execution interrupted",
                    source,
                });
            }
            Some(false) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(HEARTBEAT).await;
            }
            Some(false) => {
                tracing::info!("execution is still running on a live worker; leaving it alone");
                return Ok(());
            }
        }
    }
}

/// Runs the claimed execution and says how it ended. Never fails: every
/// problem becomes the target's outcome.
async fn execute(env: &JobEnv, job: &TargetJob, claimed: &Claimed) -> (Outcome, Option<Pending>) {
    let Claimed {
        execution,
        run,
        migrations,
        target,
        secret,
        dirty,
        window,
        has_snapshot,
        drift_blocks,
    } = claimed;
    if execution.run_id != job.run_id || execution.target_id != job.target_id {
        return (
            Outcome::failed(
                "the queued job does not match its target execution; nothing was applied",
                None,
            ),
            None,
        );
    }
    let Some(target) = target else {
        return (
            Outcome::failed("the target was deleted; nothing was applied", None),
            None,
        );
    };
    // A dirty target takes no run until an admin resolves it, or asks this
    // run to resume it. Checked again under the target lock.
    let resuming = |d: &&DirtyState| d.resume_from.is_some() && d.run_id == run.id;
    if let Some(dirty) = dirty.as_ref().filter(|d| !resuming(d)) {
        return (Outcome::failed(claim::dirty_refusal(dirty), None), None);
    }
    // A drifted target of an environment that blocks drift takes no run
    // until an admin accepts the drift or it is reverted.
    if let Some(detected_at) = drift_blocks {
        return (
            Outcome::failed(lifecycle::schema_drift::refusal(*detected_at), None),
            None,
        );
    }
    // Rule 2: checksums are verified again right before anything runs.
    let steps = match plan::verify(migrations.clone()) {
        Ok(steps) => steps,
        Err(err) => {
            return (
                Outcome::failed(err.to_string(), err.version().map(str::to_owned)),
                None,
            );
        }
    };
    // Claimed inside the window: the last migration starts before it closes.
    let window_closes_at = match window {
        Ok(schedule) => match schedule.state_at(time::OffsetDateTime::now_utc()) {
            WindowState::Open { closes_at } => closes_at,
            WindowState::Closed { .. } => Some(time::OffsetDateTime::now_utc()),
        },
        Err(err) => {
            return (
                Outcome::failed(
                    format!("the maintenance window cannot be read: {err}; nothing was applied"),
                    None,
                ),
                None,
            );
        }
    };
    let spec = match TargetSpec::open(&env.keys, target, secret.as_ref()) {
        Ok(spec) => spec,
        Err(message) => return (Outcome::failed(message, None), None),
    };
    let direction = run.direction;
    let plan = Job {
        run_id: run.id,
        direction,
        steps: &steps,
        lock_timeout_ms: run.lock_timeout_ms,
        statement_timeout_ms: run.statement_timeout_ms,
        lock_wait: env.lock_wait,
        // Runs requested before retries existed are not retried.
        lock_retries: run
            .lock_retries
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        terminate_after_ms: run.terminate_idle_blockers_after_ms.map(i64::from),
        preflight: run
            .preflight_wait_ms
            .zip(run.blocker_age_ms)
            .map(|(wait, age)| {
                (
                    Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
                    i64::from(age),
                )
            }),
        window_closes_at,
    };
    let claim = TargetClaim {
        db: env.db.clone(),
        target_id: target.id,
        has_snapshot: *has_snapshot,
    };
    let reporter = Reporter {
        db: env.db.clone(),
        execution_id: execution.id,
        run_id: run.id,
        target_id: target.id,
        project_id: run.project_id,
        direction,
        actor: env.actor(),
    };
    let started = std::time::Instant::now();
    let applied = executor::execute(&spec, &plan, &claim, &reporter).await;
    // The target may have changed: its schema snapshot follows when the
    // worker is idle (nothing applied, nothing to see).
    let changed = matches!(
        applied,
        Ok(Applied::Steps(_) | Applied::Paused(_))
            | Err(ExecError::Statement { .. } | ExecError::WindowClosed)
            | Err(ExecError::Target {
                version: Some(_),
                ..
            })
    );
    let pending = changed.then(|| Pending::new(spec.clone(), reporter.clone()));
    let outcome = match applied {
        Ok(Applied::Steps(count)) => {
            tracing::info!(
                steps = count,
                direction = direction.as_str(),
                "migrations applied"
            );
            Outcome::succeeded()
        }
        Ok(Applied::Nothing) => Outcome::skipped(),
        Err(ExecError::WindowClosed) => {
            tracing::info!("the maintenance window ended while a migration waited for its lock");
            return (Outcome::waiting_for_window(), pending);
        }
        Ok(Applied::Paused(count)) => {
            tracing::info!(
                steps = count,
                "the maintenance window ended; stopped between migrations"
            );
            return (Outcome::waiting_for_window(), pending);
        }
        Err(ExecError::Target { message, version }) => Outcome::failed(message, version),
        Err(ExecError::Statement {
            message,
            version,
            statement,
            dirty,
        }) => Outcome::failed(message, Some(version))
            .at_statement(statement)
            .leaving_dirty(dirty.map(|mark| *mark)),
        Err(err @ ExecError::Hub { .. }) => {
            // The driver's text for the tool database stays in the logs.
            tracing::error!(error = %err, "tool database failed during execution");
            Outcome::failed(
                "the worker lost the tool database during execution; the target may be ahead of \
                 the hub, so compare its migrate_hub_history before running again",
                None,
            )
        }
    };
    crate::metrics::execution_finished(target.engine, outcome.state.as_str(), started.elapsed());
    (outcome, pending)
}

/// Best effort after a job crashed (a panic in the executor): the execution
/// must not stay `running` forever. Does nothing when it is not running.
pub async fn abandon(env: &JobEnv, execution_id: Uuid, reason: &str) {
    let outcome = Outcome::failed(reason, None);
    if let Err(err) = report::finish(&env.db, execution_id, &outcome, &env.actor()).await {
        tracing::error!(error = %err, %execution_id, "could not mark the abandoned execution as failed");
    }
}
