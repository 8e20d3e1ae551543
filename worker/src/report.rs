//! Reporting to the tool database: each applied step, and how a target
//! execution ended.
//!
//! A step is recorded in the hub only after it committed on the target, so a
//! hub write that is lost leaves the target *ahead* of the hub — which the
//! next run detects as drift instead of applying anything twice. To make that
//! rare, writes survive a tool-database restart: transient errors (lost
//! connections, deadlocks, serialization failures) are retried for a while
//! before the job gives up.

use std::{future::Future, time::Duration};

use common::{
    domain::{Direction, TargetState},
    lifecycle::{self, Finish},
    store::{
        audit::Actor,
        executions::{self, AppliedStep, DirtyMark},
        target_state::{self, DirtyState},
    },
};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::time::Instant;
use uuid::Uuid;

use crate::plan::Step;

/// How long a hub write is retried before the job gives up on it.
const RETRY_FOR: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether `err` may succeed when simply tried again: the connection went
/// away, the pool could not hand one out, or PostgreSQL aborted the
/// transaction to break a deadlock or a serialization conflict.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            // serialization_failure, deadlock_detected, admin/crash shutdown,
            // cannot_connect_now
            Some("40001" | "40P01" | "57P01" | "57P02" | "57P03")
        ),
        _ => false,
    }
}

/// Runs `op` until it succeeds, fails for good, or [`RETRY_FOR`] has passed.
pub async fn with_retry<T, F, Fut>(what: &str, mut op: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = FIRST_BACKOFF;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(err) if is_transient(&err) && Instant::now() + backoff < deadline => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "tool database write failed: {what}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(err) => return Err(err),
        }
    }
}

/// Writes one target execution's progress to the hub.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub db: PgPool,
    pub execution_id: Uuid,
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub direction: Direction,
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
    /// The hub's applied versions and checksums of this target. Read only
    /// while the target lock is held, so it cannot race another run's writes.
    pub async fn hub_applied(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        with_retry("read applied state", || async {
            let mut conn = self.db.acquire().await?;
            executions::applied(&mut conn, self.target_id).await
        })
        .await
    }

    /// Records, as applied, versions of the target's history that this
    /// hub's own runs applied there but never recorded. Returns how many.
    pub async fn catch_up(
        &self,
        rows: &[&crate::executor::HistoryRow],
    ) -> Result<u64, sqlx::Error> {
        let found: Vec<executions::Unrecorded> = rows
            .iter()
            .filter_map(|row| {
                Some(executions::Unrecorded {
                    version: common::domain::Version::parse(&row.version).ok()?,
                    checksum: row.checksum.clone(),
                    run_id: row.run_id.as_deref()?.parse().ok()?,
                })
            })
            .collect();
        with_retry("catch up applied state", || async {
            let mut tx = self.db.begin().await?;
            let count = executions::catch_up(&mut tx, self.target_id, &found).await?;
            tx.commit().await?;
            Ok(count)
        })
        .await
    }

    /// Records steps that have committed on the target, in order: the
    /// hub's applied state and the per-migration history, in one
    /// transaction.
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
            let mut tx = self.db.begin().await?;
            executions::record_steps(&mut tx, &records).await?;
            tx.commit().await
        })
        .await?;
        for step in steps {
            crate::metrics::migration_done(self.direction.as_str(), step.timing.duration);
        }
        Ok(())
    }

    /// Records how far the running script has got (best effort: a lost
    /// report only makes the run page lag). Callers batch these; see the
    /// MySQL executor.
    pub async fn progress(&self, version: &str, statement: usize, applied_hash: &str) {
        let statement = i32::try_from(statement).unwrap_or(i32::MAX);
        let result = async {
            let mut conn = self.db.acquire().await?;
            executions::progress(
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

    /// The target's dirty state, if a script stopped part-way on it. Read
    /// under the target lock, so no other job can mark it in between.
    pub async fn dirty_state(&self) -> Result<Option<DirtyState>, sqlx::Error> {
        with_retry("read dirty state", || async {
            let mut conn = self.db.acquire().await?;
            target_state::dirty(&mut conn, self.target_id).await
        })
        .await
    }

    /// Takes up the resume an admin asked for on this target (see
    /// [`target_state::take_resume`]).
    pub async fn take_resume(&self) -> Result<(), sqlx::Error> {
        with_retry("take up the resume", || async {
            let mut conn = self.db.acquire().await?;
            target_state::take_resume(&mut conn, self.target_id).await
        })
        .await
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

/// Why a dirty target refuses a job, for the run page.
pub fn dirty_refusal(dirty: &DirtyState) -> String {
    let since = dirty
        .since
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.to_offset(time::UtcOffset::UTC)
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| dirty.since.to_string());
    format!(
        "target is dirty since {since} (version {}, statement {}); an admin must resolve it; \
         nothing was applied",
        dirty.version, dirty.statement_index
    )
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
        worker,
    };
    with_retry("finish target execution", || async {
        let mut tx = db.begin().await?;
        // Before the audit row `finish` appends, which holds the chain's
        // head until commit.
        if let Some(mark) = &outcome.dirty {
            executions::mark_dirty(&mut tx, mark, outcome.error.as_deref().unwrap_or_default())
                .await?;
        }
        let settled = lifecycle::finish(&mut tx, &finish).await?;
        tx.commit().await?;
        Ok(settled)
    })
    .await
    .map(|settled| {
        if let Some(run_state) = settled {
            tracing::info!(run_state = run_state.as_str(), "run finished");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_are_transient_but_bad_sql_is_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        assert!(!is_transient(&sqlx::Error::PoolClosed));
    }
}
