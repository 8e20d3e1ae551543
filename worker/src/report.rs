//! Reporting to the tool database: each applied step, how far a running
//! script has got, and how a target execution ended. Claiming the
//! execution and the target's record comes before, in [`crate::claim`].
//!
//! A step is recorded in the hub only after it committed on the target, so a
//! hub write that is lost leaves the target *ahead* of the hub — which the
//! next run detects as drift instead of applying anything twice. To make that
//! rare, writes are retried ([`crate::retry`]) before the job gives up.

use std::time::Duration;

use common::{
    domain::{
        Direction, Engine, TargetState, schema,
        window::{Schedule, WindowState},
    },
    lifecycle::{self, Finish},
    store::{
        audit::Actor,
        executions::{AppliedStep, DirtyMark},
        snapshots::{self, NewSnapshot, Taken},
    },
    targets::introspect::Introspected,
};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{plan::Step, retry::with_retry};

/// Writes one target execution's progress to the hub.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub db: PgPool,
    pub execution_id: Uuid,
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub project_id: Uuid,
    pub direction: Direction,
    /// This worker, in audit rows.
    pub actor: Actor,
}

/// A step that committed on the target, waiting to be recorded in the hub.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub migration_id: Uuid,
    pub version: common::domain::Version,
    pub checksum: String,
    pub timing: StepTiming,
}

impl StepRecord {
    pub fn new(step: &Step, timing: StepTiming) -> Self {
        Self {
            migration_id: step.migration_id,
            version: step.version.clone(),
            checksum: step.checksum.to_string(),
            timing,
        }
    }
}

/// Timing of one step on the target.
#[derive(Debug, Clone, Copy)]
pub struct StepTiming {
    pub started_at: OffsetDateTime,
    pub duration: Duration,
    /// Statements the script executed (as counted by the server).
    pub statements: usize,
    /// The step finished a script resumed on a dirty target.
    pub resumed: bool,
}

impl Reporter {
    /// Records steps that have committed on the target, in order: the
    /// hub's applied state and the per-migration history, in one statement.
    pub async fn steps_done(&self, steps: &[StepRecord]) -> Result<(), sqlx::Error> {
        let records: Vec<AppliedStep<'_>> = steps
            .iter()
            .map(|step| AppliedStep {
                execution_id: self.execution_id,
                target_id: self.target_id,
                run_id: self.run_id,
                migration_id: step.migration_id,
                version: &step.version,
                direction: self.direction,
                checksum: &step.checksum,
                started_at: step.timing.started_at,
                duration_ms: i64::try_from(step.timing.duration.as_millis()).unwrap_or(i64::MAX),
                statements: i32::try_from(step.timing.statements).unwrap_or(i32::MAX),
                resumed: step.timing.resumed,
            })
            .collect();
        with_retry("record applied steps", || async {
            let mut conn = self.db.acquire().await?;
            Ok(lifecycle::record_steps(&mut conn, &records).await?)
        })
        .await?;
        for step in steps {
            crate::metrics::migration_done(self.direction.as_str(), step.timing.duration);
        }
        Ok(())
    }

    /// Audits the termination of a blocking session (`description` says
    /// who it was and what it ran). Retried like the step records: a
    /// termination must not go unaccounted.
    pub async fn blocker_terminated(&self, description: &str) {
        let result = with_retry("audit a terminated blocker", || async {
            let mut tx = self.db.begin().await?;
            lifecycle::blocker_terminated(
                &mut tx,
                &self.actor,
                lifecycle::Terminated {
                    execution_id: self.execution_id,
                    run_id: self.run_id,
                    target_id: self.target_id,
                    project_id: self.project_id,
                    description,
                },
            )
            .await?;
            tx.commit().await
        })
        .await;
        if let Err(err) = result {
            tracing::error!(error = %err, blocker = description, "could not audit a terminated blocker");
        }
    }

    /// Records a snapshot of the target's schema (rendered here), retried
    /// like the step records. Best effort: a snapshot that cannot be
    /// recorded is logged and never fails the target.
    pub async fn snapshot(&self, engine: Engine, read: Introspected, taken: Taken) {
        let schema = schema::render(read.objects);
        let snapshot = NewSnapshot {
            target_id: self.target_id,
            execution_id: Some(self.execution_id),
            engine,
            schema: &schema,
            sizes: &read.sizes,
            taken,
        };
        let result = with_retry("record a schema snapshot", || async {
            let mut tx = self.db.begin().await?;
            let recorded = snapshots::record(&mut tx, &snapshot).await?;
            if taken == Taken::After {
                // The new baseline: drift flagged before is part of it now.
                lifecycle::schema_drift::after_execution(
                    &mut tx,
                    &self.actor,
                    self.target_id,
                    self.execution_id,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(recorded.stored)
        })
        .await;
        match result {
            Ok(stored) => tracing::debug!(hash = %schema.hash, stored, "schema snapshot recorded"),
            Err(err) => tracing::warn!(error = %err, "could not record a schema snapshot"),
        }
    }

    /// Whether the target has begun another execution since this one
    /// finished (then this one's snapshot is not taken).
    pub async fn superseded(&self) -> Result<bool, sqlx::Error> {
        let mut conn = self.db.acquire().await?;
        snapshots::superseded(&mut conn, self.target_id, self.execution_id).await
    }

    /// Says on the run page what the target waits for (`None`: it goes
    /// on); `retried` counts a lock retry. Best effort, like progress.
    pub async fn waiting(&self, note: Option<&str>, retried: bool) {
        let result = async {
            let mut conn = self.db.acquire().await?;
            lifecycle::waiting(&mut conn, self.execution_id, note, retried).await
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not record a wait");
        }
    }

    /// Records how far the running script has got (best effort: a lost
    /// report only makes the run page lag). Callers batch these; see the
    /// MySQL executor.
    pub async fn progress(&self, version: &str, statement: usize, applied_hash: &str) {
        let statement = i32::try_from(statement).unwrap_or(i32::MAX);
        let result = async {
            let mut conn = self.db.acquire().await?;
            lifecycle::progress(
                &mut conn,
                self.execution_id,
                version,
                statement,
                applied_hash,
            )
            .await
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "could not record progress");
        }
    }

    /// The dirty mark of a script of `version` that stopped at the 1-based
    /// `statement_index`, after the statements hashed in `applied`.
    pub fn dirty_mark(&self, version: &str, statement_index: usize, applied: &str) -> DirtyMark {
        DirtyMark {
            target_id: self.target_id,
            run_id: self.run_id,
            version: version.to_owned(),
            direction: self.direction,
            statement_index: i32::try_from(statement_index).unwrap_or(i32::MAX),
            statements_hash: applied.to_owned(),
        }
    }
}

/// How a target execution ended, as shown on the run page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub state: TargetState,
    /// The target-side error, shown to users (never a secret, never the tool
    /// database's driver text).
    pub error: Option<String>,
    pub failed_version: Option<String>,
    /// The 1-based statement reached, when a script ran statement by statement.
    pub statement: Option<i32>,
    /// Set when a script stopped part-way: the target is marked dirty in the
    /// same transaction that finishes the execution.
    pub dirty: Option<DirtyMark>,
}

impl Outcome {
    pub fn succeeded() -> Self {
        Self {
            state: TargetState::Succeeded,
            error: None,
            failed_version: None,
            statement: None,
            dirty: None,
        }
    }
    /// Stopped between two migrations at the end of its maintenance window.
    pub fn waiting_for_window() -> Self {
        Self {
            state: TargetState::WaitingForWindow,
            ..Self::succeeded()
        }
    }
    pub fn skipped() -> Self {
        Self {
            state: TargetState::Skipped,
            ..Self::succeeded()
        }
    }
    pub fn failed(error: impl Into<String>, version: Option<String>) -> Self {
        Self {
            state: TargetState::Failed,
            error: Some(error.into()),
            failed_version: version,
            ..Self::succeeded()
        }
    }
    /// The statement a statement-by-statement script reached.
    pub fn at_statement(mut self, statement: usize) -> Self {
        self.statement = Some(i32::try_from(statement).unwrap_or(i32::MAX));
        self
    }
    /// Leaves the target dirty (see [`Outcome::dirty`]).
    pub fn leaving_dirty(mut self, mark: Option<DirtyMark>) -> Self {
        self.dirty = mark;
        self
    }
}

/// Finishes the execution (audited; the run settles when it was the last).
/// Idempotent: an execution that is no longer running is left alone.
pub async fn finish(
    db: &PgPool,
    execution_id: Uuid,
    outcome: &Outcome,
    worker: &Actor,
) -> Result<(), sqlx::Error> {
    let finish = Finish {
        execution_id,
        state: outcome.state,
        error: outcome.error.as_deref(),
        failed_version: outcome.failed_version.as_deref(),
        statement: outcome.statement,
        dirty: outcome.dirty.as_ref(),
        worker,
    };
    let run_id = with_retry("finish target execution", || async {
        let mut tx = db.begin().await?;
        let run_id = lifecycle::finish(&mut tx, &finish).await?;
        tx.commit().await?;
        Ok(run_id)
    })
    .await?;
    match run_id {
        Some(run_id) => settle(db, run_id, worker).await,
        None => Ok(()),
    }
}

/// Records the run's outcome when its executions are all final, after the
/// commit of one of them ([`lifecycle::settle`]).
pub async fn settle(db: &PgPool, run_id: Uuid, actor: &Actor) -> Result<(), sqlx::Error> {
    let due = with_retry("look whether the run is over", || async {
        let mut conn = db.acquire().await?;
        Ok(lifecycle::settle_due(&mut conn, run_id).await?)
    })
    .await?;
    if !due {
        return Ok(());
    }
    let settled = with_retry("settle the run", || async {
        let mut tx = db.begin().await?;
        let settled = lifecycle::settle(&mut tx, run_id, actor).await?;
        tx.commit().await?;
        Ok(settled)
    })
    .await?;
    if let Some(run_state) = settled {
        tracing::info!(run_state = run_state.as_str(), "run finished");
    }
    Ok(())
}

/// Leaves an execution that stopped at its window's end waiting for the
/// next opening, as the schedule now says (an admin may have changed it
/// meanwhile: a window open again makes its job due at once).
pub async fn wait_for_window(
    db: &PgPool,
    execution_id: Uuid,
    run_id: Uuid,
    worker: &Actor,
) -> Result<(), sqlx::Error> {
    with_retry("wait for the maintenance window", || async {
        let mut tx = db.begin().await?;
        let now = OffsetDateTime::now_utc();
        // A schedule that no longer reads was read when the job started;
        // the job then looks again at once, and fails the target.
        let schedule = lifecycle::window::schedule(&mut tx, run_id)
            .await?
            .unwrap_or_else(|_| Schedule::always());
        let opens_at = match schedule.state_at(now) {
            WindowState::Closed { opens_at } => opens_at,
            WindowState::Open { .. } => now,
        };
        lifecycle::window::wait_for_window(&mut tx, worker, execution_id, &schedule, opens_at)
            .await?;
        tx.commit().await
    })
    .await
}
