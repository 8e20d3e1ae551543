//! Executors: one per database engine. Each takes the target lock, checks the
//! target's history against the hub, applies the pending steps of one job
//! over one dedicated connection, and reports every step as it commits.

mod failure;
pub mod mysql;
pub mod postgres;
mod preflight;

use std::time::Duration;

use common::{
    crypto::{Keyring, Sealed},
    domain::{Direction, Engine, blockers::describe_all, drift, lock_retry},
    store::{executions::DirtyMark, inventory::TargetRow, target_state::DirtyState},
};
use uuid::Uuid;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    claim::{self, HistoryRow, TargetClaim},
    plan::{self, Step},
    report::{Reporter, StepRecord, StepTiming},
};

pub use common::targets::{Endpoint, Password};

/// The target a job runs on: its engine, where it is and how the job signs
/// in, through the connect code the control plane uses too
/// (`common::targets`).
#[derive(Debug, Clone)]
pub struct TargetSpec {
    pub engine: Engine,
    pub endpoint: Endpoint,
    /// Opened from its sealed form just before the job connects.
    pub password: Option<Password>,
}

impl TargetSpec {
    /// How to reach `target`, with its password opened. The error names
    /// what is wrong without any secret material.
    pub fn open(
        keys: &Keyring,
        target: &TargetRow,
        sealed: Option<&Sealed>,
    ) -> Result<Self, String> {
        let password = match sealed {
            None => None,
            Some(sealed) => {
                let bytes = keys
                    .open(target.id.as_bytes(), sealed)
                    .map_err(|e| format!("the target's password cannot be decrypted: {e}"))?;
                let text = String::from_utf8(bytes)
                    .map_err(|_| "the target's password is not valid UTF-8".to_owned())?;
                Some(Password::new(text))
            }
        };
        Ok(Self {
            engine: target.engine,
            endpoint: Endpoint::try_from(target)?,
            password,
        })
    }
}

/// How long opening a job's session may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one job asks of its target.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub run_id: Uuid,
    pub direction: Direction,
    /// Verified pinned steps, in the run's execution order.
    pub steps: &'a [Step],
    /// From the environment's policy, pinned by the run.
    pub lock_timeout_ms: i32,
    pub statement_timeout_ms: i32,
    /// How long to wait for another migration to release the target.
    pub lock_wait: Duration,
    /// How often a migration whose lock budget ran out is tried again,
    /// where that is safe (`common::domain::lock_retry`).
    pub lock_retries: u32,
    /// The pre-flight ([`preflight`]): how long to wait for blocking
    /// sessions to go, and from what age an open transaction blocks; no
    /// pre-flight for `None` (runs requested before it existed).
    pub preflight: Option<(Duration, i64)>,
    /// Opt-in: after the pre-flight's wait, terminate blockers `idle in
    /// transaction` for at least this many milliseconds.
    pub terminate_after_ms: Option<i64>,
    /// When the maintenance window closes: no migration starts after it.
    pub window_closes_at: Option<time::OffsetDateTime>,
}

impl Job<'_> {
    /// Whether the maintenance window has closed: the migration running
    /// finishes, the next ones wait for the next window.
    pub fn window_closed(&self) -> bool {
        self.window_closes_at
            .is_some_and(|t| time::OffsetDateTime::now_utc() >= t)
    }

    fn preflight_wait(&self) -> Duration {
        self.preflight.map_or(Duration::ZERO, |(wait, _)| wait)
    }
}

/// A migration that stopped because its lock budget ran out, before it
/// changed anything on the target: it may be tried again.
#[derive(Debug)]
pub struct LockTimedOut {
    /// The server's error text.
    pub message: String,
}

/// The lock retries of one migration on one target. The executor loops:
/// each attempt that ends in [`LockTimedOut`] goes to [`Self::timed_out`],
/// which pauses ([`lock_retry::pause`]) and says on the run page what the
/// target waits for — or, after `1 + job.lock_retries` attempts, answers
/// the failure; whatever else the attempt ends in goes to [`Self::over`].
pub(crate) struct LockRetries<'a> {
    job: &'a Job<'a>,
    engine: Engine,
    version: String,
    retries: u32,
    /// What the last pre-flight left: named in the waiting note and in the
    /// failure.
    pub blockers: Vec<common::domain::blockers::Blocker>,
}

impl<'a> LockRetries<'a> {
    pub fn new(job: &'a Job<'a>, engine: Engine, version: String) -> Self {
        Self {
            job,
            engine,
            version,
            retries: 0,
            blockers: Vec::new(),
        }
    }

    /// Whether no retry is left: the next timeout is the failure.
    pub fn exhausted(&self) -> bool {
        self.retries >= self.job.lock_retries
    }

    /// After an attempt whose lock budget ran out: pauses before the next
    /// attempt, or fails with the last timeout's text when none is left.
    pub async fn timed_out(
        &mut self,
        reporter: &Reporter,
        timed_out: LockTimedOut,
    ) -> Result<(), ExecError> {
        let job = self.job;
        // Nothing of this migration was applied: past the window's end it
        // waits for the next window instead of trying again.
        if job.window_closed() {
            return Err(ExecError::WindowClosed);
        }
        let blocked_by = if self.blockers.is_empty() {
            String::new()
        } else {
            format!("; blocked by {}", describe_all(&self.blockers))
        };
        if self.retries >= job.lock_retries {
            return Err(ExecError::Target {
                message: format!(
                    "{}\n(the lock budget of {} ms ran out on each of {} attempt(s){blocked_by})",
                    timed_out.message,
                    job.lock_timeout_ms,
                    self.retries + 1
                ),
                version: Some(self.version.clone()),
            });
        }
        self.retries += 1;
        let pause = lock_retry::pause(self.retries, rand::random::<f64>());
        let note = format!(
            "{}: the lock budget of {} ms ran out (attempt {} of {}); trying again in {:.1} s: {}{blocked_by}",
            self.version,
            job.lock_timeout_ms,
            self.retries,
            job.lock_retries + 1,
            pause.as_secs_f64(),
            first_line(&timed_out.message),
        );
        tracing::info!(version = %self.version, retry = self.retries, "lock budget ran out; retrying");
        crate::metrics::lock_retry(self.engine);
        reporter.waiting(Some(&note), true).await;
        tokio::time::sleep(pause).await;
        Ok(())
    }

    /// After an attempt that did not time out on its lock budget: the wait,
    /// if there was one, is over.
    pub async fn over<T>(&self, reporter: &Reporter, result: T) -> T {
        if self.retries > 0 {
            reporter.waiting(None, false).await;
        }
        result
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// What an executor did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// This many steps were applied (or rolled back).
    Steps(usize),
    /// The target was already where the run wants it.
    Nothing,
    /// The maintenance window closed after this many steps; the rest waits
    /// for the next one.
    Paused(usize),
}

/// Why an executor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The target refused: connection, lock, drift, or a failing script. The
    /// message is the product's output and is shown on the run page.
    #[error("{message}")]
    Target {
        message: String,
        /// The version whose script failed, if one did.
        version: Option<String>,
    },
    /// A script run statement by statement (MySQL) stopped at the 1-based
    /// `statement`. With `dirty`, statements before it were applied, so the
    /// target is marked dirty when the execution finishes.
    #[error("{message}")]
    Statement {
        message: String,
        version: String,
        statement: usize,
        dirty: Option<Box<DirtyMark>>,
    },
    /// The tool database failed while the job needed it (reading the
    /// applied state, or recording a step that already committed on the
    /// target). Its text is for the logs, not for users.
    /// The maintenance window closed while a migration that had applied
    /// nothing waited for its lock: it waits for the next window.
    #[error("the maintenance window closed")]
    WindowClosed,
    #[error("{what}: {source}")]
    Hub {
        what: String,
        #[source]
        source: sqlx::Error,
    },
}

impl ExecError {
    pub fn target(message: impl Into<String>) -> Self {
        ExecError::Target {
            message: message.into(),
            version: None,
        }
    }
}

/// A resume an admin asked for, admitted under the target lock: the script
/// of `version` continues from statement `from` once the statements before
/// `stopped` are proven to be the ones applied.
#[derive(Debug, Clone)]
pub struct Resume {
    pub version: String,
    pub stopped: usize,
    pub applied_hash: String,
    pub from: usize,
}

impl Resume {
    /// The 0-based index of the first statement to run of `step`'s split
    /// script, when `step` is the one to resume; `Ok(None)` for other steps.
    pub fn start(
        resume: Option<&Resume>,
        step: &Step,
        statements: &[common::domain::split::Statement<'_>],
    ) -> Result<Option<usize>, ExecError> {
        let Some(resume) = resume.filter(|r| r.version == step.version.to_string()) else {
            return Ok(None);
        };
        common::domain::resume::start_index(
            &resume.version,
            statements,
            resume.stopped,
            &resume.applied_hash,
            resume.from,
        )
        .map(Some)
        .map_err(|e| ExecError::Target {
            message: e.to_string(),
            version: Some(resume.version.clone()),
        })
    }
}

/// Under the target lock: the hub's record of the target (see
/// [`TargetClaim::record`]).
pub(super) async fn hub_record(claim: &TargetClaim) -> Result<claim::HubRecord, ExecError> {
    claim.record().await.map_err(|source| ExecError::Hub {
        what: "reading the hub's record of the target".into(),
        source,
    })
}

/// Under the target lock: a dirty target refuses the job, unless an admin
/// asked this very run to resume it — then the resume is taken up (so a
/// resume that fails again waits for a new decision) and returned.
pub(super) async fn admit(
    claim: &TargetClaim,
    dirty: Option<DirtyState>,
    job: &Job<'_>,
) -> Result<Option<Resume>, ExecError> {
    let hub = |what: &str| {
        let what = what.to_owned();
        move |source| ExecError::Hub { what, source }
    };
    let Some(dirty) = dirty else {
        return Ok(None);
    };
    let (Some(from), true, true) = (
        dirty.resume_from,
        dirty.run_id == job.run_id,
        dirty.direction == job.direction.as_str(),
    ) else {
        return Err(ExecError::target(claim::dirty_refusal(&dirty)));
    };
    claim
        .take_resume()
        .await
        .map_err(hub("taking up the resume"))?;
    Ok(Some(Resume {
        version: dirty.version,
        stopped: usize::try_from(dirty.statement_index).unwrap_or(1),
        applied_hash: dirty.statements_hash,
        from: usize::try_from(from).unwrap_or(1),
    }))
}

/// Under the target lock: compares the target's history with the hub's
/// applied state and returns the target's (version, checksum) pairs, or the
/// drift that blocks the target.
///
/// Versions the target shows applied by one of this hub's own runs — the
/// run pinned that version with that checksum for this very target — that
/// the hub has not recorded are recorded first: a worker that died after
/// the target committed, before its batched hub record, left them behind.
/// Anything else the two sides disagree on is drift.
pub(super) async fn agree_with_hub(
    claim: &TargetClaim,
    mut hub: Vec<(String, String)>,
    history: Vec<HistoryRow>,
) -> Result<Vec<(String, String)>, ExecError> {
    let hub_error = |source| ExecError::Hub {
        what: "reading or catching up the hub's applied state".into(),
        source,
    };
    let recorded: std::collections::HashSet<&str> = hub.iter().map(|(v, _)| v.as_str()).collect();
    let unrecorded: Vec<&HistoryRow> = history
        .iter()
        .filter(|row| row.run_id.is_some() && !recorded.contains(row.version.as_str()))
        .collect();
    if !unrecorded.is_empty() {
        let caught_up = claim.catch_up(&unrecorded).await.map_err(hub_error)?;
        if caught_up > 0 {
            tracing::warn!(
                versions = caught_up,
                "recorded versions the target's history shows applied by this hub's runs"
            );
            hub = claim.applied().await.map_err(hub_error)?;
        }
    }
    let history: Vec<(String, String)> = history
        .into_iter()
        .map(|row| (row.version, row.checksum))
        .collect();
    if let Some(difference) = drift::first_difference(&hub, &history) {
        return Err(ExecError::target(
            plan::PlanError::Drift(difference).to_string(),
        ));
    }
    Ok(history)
}

/// Records applied steps in the hub in the background, in order, while the
/// next step already runs on the target: the target never waits for the
/// tool database. Steps are gathered for up to [`RECORD_WINDOW`] and written
/// together in one statement (one round trip per batch, whatever its size),
/// so a long history costs a handful of tool-database round trips, not
/// several per migration; the run page sees a step at most that much later.
/// A step is still recorded only after it committed on the target; a hub
/// write that fails for good stops the job at the next step boundary and
/// leaves the target ahead of the hub, which the next run detects as drift.
pub(super) struct HubRecorder {
    steps: mpsc::UnboundedSender<StepRecord>,
    task: JoinHandle<Result<(), ExecError>>,
}

/// The most steps one hub statement records.
const RECORD_BATCH: usize = 500;
/// How long steps are gathered before they are written together.
const RECORD_WINDOW: Duration = Duration::from_millis(250);

impl HubRecorder {
    pub(super) fn start(reporter: &Reporter) -> Self {
        let (steps, mut done) = mpsc::unbounded_channel::<StepRecord>();
        let reporter = reporter.clone();
        let task = tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                if done.recv_many(&mut batch, RECORD_BATCH).await == 0 {
                    return Ok(());
                }
                // Gather what the target commits over a short window: fewer
                // hub commits, whose disk flushes would otherwise compete
                // with the target's own. The job's end closes the channel,
                // which ends the window at once.
                let window_ends = tokio::time::Instant::now() + RECORD_WINDOW;
                let mut closed = false;
                while batch.len() < RECORD_BATCH {
                    let room = RECORD_BATCH - batch.len();
                    match tokio::time::timeout_at(window_ends, done.recv_many(&mut batch, room))
                        .await
                    {
                        Ok(0) => {
                            closed = true;
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                reporter
                    .steps_done(&batch)
                    .await
                    .map_err(|source| ExecError::Hub {
                        what: format!(
                            "recording versions {} to {} in the hub",
                            batch[0].version,
                            batch[batch.len() - 1].version
                        ),
                        source,
                    })?;
                batch.clear();
                if closed {
                    return Ok(());
                }
            }
        });
        Self { steps, task }
    }

    /// Whether a hub write failed: then no further step may run.
    pub(super) fn failed(&self) -> bool {
        self.steps.is_closed()
    }

    pub(super) fn record(&self, step: &Step, timing: StepTiming) {
        // A closed channel means a failed write, reported by `finish`.
        let _ = self.steps.send(StepRecord::new(step, timing));
    }

    /// Waits until every step handed over is recorded, and says how the job
    /// ended: a target left dirty above all (its mark must be written), then
    /// a hub failure (whatever stopped the loop after it, the hub is behind
    /// the target), then what the steps did.
    pub(super) async fn settle(
        self,
        result: Result<Applied, ExecError>,
    ) -> Result<Applied, ExecError> {
        let recorded = self.finish().await;
        match result {
            Err(stopped @ ExecError::Statement { dirty: Some(_), .. }) => Err(stopped),
            result => recorded.and(result),
        }
    }

    /// Waits until every step handed over is recorded.
    async fn finish(self) -> Result<(), ExecError> {
        drop(self.steps);
        match self.task.await {
            Ok(result) => result,
            Err(join) => Err(ExecError::target(format!(
                "recording applied versions in the hub crashed: {join}; compare the target's \
                 migrate_hub_history with the hub before running again"
            ))),
        }
    }
}

/// Runs `job` on `target` with its engine's executor: `claim` is the hub's
/// record of the target, taken under its lock; `reporter` records what the
/// job does.
pub async fn execute(
    target: &TargetSpec,
    job: &Job<'_>,
    claim: &TargetClaim,
    reporter: &Reporter,
) -> Result<Applied, ExecError> {
    match target.engine {
        Engine::Postgres => postgres::execute(target, job, claim, reporter).await,
        Engine::Mysql => mysql::execute(target, job, claim, reporter).await,
    }
}

/// The span of one migration applied on a target: a child of the target's
/// execution span. Names the version, never the SQL.
pub(crate) fn migration_span(step: &Step, direction: Direction) -> tracing::Span {
    tracing::info_span!(
        "migration",
        otel.name = format!("migration {}", step.version),
        version = %step.version,
        migration_id = %step.migration_id,
        direction = direction.as_str(),
        transactional = step.transactional,
        otel.status_code = tracing::field::Empty,
    )
}

/// Marks a migration's span as failed.
pub(crate) fn mark_failed(span: &tracing::Span) {
    span.record("otel.status_code", "ERROR");
}

#[cfg(test)]
mod tests {
    use common::domain::TlsMode;

    use super::*;

    #[test]
    fn passwords_never_print() {
        let target = TargetSpec {
            engine: Engine::Postgres,
            endpoint: Endpoint {
                host: "db".into(),
                port: 5432,
                database: "app".into(),
                username: "u".into(),
                tls_mode: TlsMode::Disable,
                session_settings: String::new(),
            },
            password: Some(Password::new("hunter2".into())),
        };
        assert!(!format!("{target:?}").contains("hunter2"));
    }
}
