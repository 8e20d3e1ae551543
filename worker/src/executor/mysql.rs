//! MySQL/MariaDB targets, over one mysql_async session per job.
//!
//! MySQL commits DDL implicitly, so a script cannot run in one transaction:
//! it is split into statements (`common::domain::split`, the rules of the
//! `mysql` client) and run one statement per round trip, keeping a running
//! hash of the statements applied. When a statement fails after others of
//! the same script were applied, the target is left **dirty**: the
//! execution fails and, in the same tool-database transaction, the target
//! records the version, the statement reached and the hash of the applied
//! prefix, so a later resume can prove the prefix did not change. A dirty
//! target takes no run until an admin resolves it.
//!
//! Progress reaches the run page without costing the statements anything:
//! each statement only updates a watch channel, and a background task
//! writes the latest value at most every [`PROGRESS_EVERY`]. Applied
//! versions are recorded in the hub by another background task, in order,
//! while the next version already runs (see [`super::HubRecorder`]).

use std::{collections::HashSet, time::Duration};

use common::{
    domain::{
        Direction, Engine,
        blockers::Blocker,
        lock_retry,
        split::{Statement, StatementsHash, split_mysql},
    },
    store::snapshots::Taken,
    targets::{
        HISTORY_TABLE,
        mysql::{self, Flavor, describe},
    },
};
use mysql_async::{Conn, prelude::Queryable};
use time::OffsetDateTime;
use tokio::{
    sync::{oneshot, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::Instrument;

use super::{
    Applied, CONNECT_TIMEOUT, ExecError, HubRecorder, Job, LockRetries, LockTimedOut, Resume,
    TargetSpec, admit, agree_with_hub,
    failure::{self, StatementStop, not_pending},
    hub_record, preflight,
};
use crate::{
    claim::{HistoryRow, TargetClaim},
    lock,
    plan::{self, Step},
    report::{Reporter, StepTiming},
};

/// `ER_LOCK_WAIT_TIMEOUT`: a metadata lock (`lock_wait_timeout`) or a row
/// lock (`innodb_lock_wait_timeout`) was not granted in time.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

fn lock_timed_out(err: &mysql_async::Error) -> bool {
    matches!(err, mysql_async::Error::Server(e) if e.code == ER_LOCK_WAIT_TIMEOUT)
}

/// How often, at most, the statement reached is written to the hub.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// `lock_wait_timeout` when the policy sets no lock timeout (0): its maximum.
const NO_LOCK_TIMEOUT_S: u64 = 31_536_000;

pub async fn execute(
    target: &TargetSpec,
    job: &Job<'_>,
    claim: &TargetClaim,
    reporter: &Reporter,
) -> Result<Applied, ExecError> {
    let endpoint = &target.endpoint;
    let mut conn = mysql::connect(endpoint, target.password.as_ref(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| failure::unreachable(endpoint, e))?;
    let result = run_session(&mut conn, &endpoint.database, job, claim, reporter).await;
    if let Err(err) = conn.disconnect().await {
        tracing::debug!(error = %err, "target session ended with an error");
    }
    result
}

/// Everything between connect and disconnect: the lock and what it guards.
async fn run_session(
    conn: &mut Conn,
    database: &str,
    job: &Job<'_>,
    claim: &TargetClaim,
    reporter: &Reporter,
) -> Result<Applied, ExecError> {
    let flavor = lock::acquire_mysql(conn, database, job.lock_wait)
        .await
        .map_err(|err| ExecError::target(err.to_string()))?;
    if !claim.has_snapshot {
        snapshot(conn, database, reporter, Taken::Before).await;
    }
    let result = run_locked(conn, database, flavor, job, claim, reporter).await;
    lock::release_mysql(conn, database).await;
    result
}

/// Reads the target's schema over the job's session, under the target
/// lock, and records it (the `before` of a target without any snapshot; the
/// `after` is taken when the worker is idle, `crate::snapshot`). A schema
/// that cannot be read is logged; the target is never failed for it.
async fn snapshot(conn: &mut Conn, database: &str, reporter: &Reporter, taken: Taken) {
    match common::targets::introspect::mysql(conn, database).await {
        Ok(read) => reporter.snapshot(Engine::Mysql, read, taken).await,
        Err(err) => {
            tracing::warn!(error = %err, "could not read the target's schema for a snapshot")
        }
    }
}

/// Everything that happens while the target lock is held.
async fn run_locked(
    conn: &mut Conn,
    database: &str,
    flavor: Flavor,
    job: &Job<'_>,
    claim: &TargetClaim,
    reporter: &Reporter,
) -> Result<Applied, ExecError> {
    let history_table = mysql::history_table(database);
    // The session's bounds and the target's history, and meanwhile the
    // hub's record of it.
    let (history, record) =
        tokio::try_join!(prepare(conn, database, flavor, job), hub_record(claim))?;
    let history = agree_with_hub(claim, record.applied, history).await?;
    // The job checked at its start; a job that stopped part-way on this
    // target since then held this lock, so this answer is final.
    let resume = admit(claim, record.dirty, job).await?;
    let applied: HashSet<&str> = history.iter().map(|(v, _)| v.as_str()).collect();
    let todo = plan::pending(job.steps, job.direction, &applied)
        .map_err(|e| ExecError::target(e.to_string()))?;
    if todo.is_empty() {
        return Ok(Applied::Nothing);
    }
    // Every script is split before the first statement runs, so a script
    // that cannot be split stops the job with nothing applied.
    let scripts = todo
        .iter()
        .map(|step| {
            split_mysql(step.script(job.direction))
                .map_err(|e| failure::unsplittable(step, job.direction, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let starts = todo
        .iter()
        .zip(&scripts)
        .map(|(step, statements)| Resume::start(resume.as_ref(), step, statements))
        .collect::<Result<Vec<_>, _>>()?;
    if resume.is_some() && starts.iter().all(Option::is_none) {
        return Err(not_pending(resume.as_ref(), job.direction));
    }
    // Before the first migration: who would block them.
    let mut blockers = look_for_blockers(conn, job, reporter, false).await;
    let progress = ProgressFeed::start(reporter);
    let recorder = HubRecorder::start(reporter);
    let mut result = Ok(Applied::Steps(todo.len()));
    for (i, ((step, statements), start)) in todo.iter().zip(&scripts).zip(starts).enumerate() {
        if recorder.failed() {
            break;
        }
        if job.window_closed() {
            result = Ok(Applied::Paused(i));
            break;
        }
        let step_run = StepRun {
            step,
            statements,
            start,
            direction: job.direction,
            run_id: job.run_id,
            history_table: &history_table,
        };
        let span = super::migration_span(step, job.direction);
        let mut retries = LockRetries::new(job, Engine::Mysql, step.version.to_string());
        retries.blockers = std::mem::take(&mut blockers);
        let applied = async {
            loop {
                match step_run.apply(conn, reporter, &progress).await {
                    Ok(Err(timed_out)) => {
                        if retries.exhausted() {
                            // The failure names who blocks it now.
                            retries.blockers = look_for_blockers(conn, job, reporter, true).await;
                        }
                        retries.timed_out(reporter, timed_out).await?;
                        // Before every retry: who blocks it now, and the wait for them.
                        retries.blockers = look_for_blockers(conn, job, reporter, false).await;
                    }
                    Ok(Ok(timing)) => break retries.over(reporter, Ok(timing)).await,
                    Err(err) => break retries.over(reporter, Err(err)).await,
                }
            }
        }
        .instrument(span.clone())
        .await;
        let timing = match applied {
            Ok(timing) => timing,
            Err(err) => {
                super::mark_failed(&span);
                result = Err(err);
                break;
            }
        };
        recorder.record(step, timing);
    }
    progress.stop().await;
    recorder.settle(result).await
}

/// The pre-flight on this target (see [`preflight`]): waits while old
/// transactions on its database may block the migration, up to the
/// policy's wait; returns those still there. A pre-flight that cannot look
/// lets the migration go on.
async fn look_for_blockers(
    conn: &mut Conn,
    job: &Job<'_>,
    reporter: &Reporter,
    look_once: bool,
) -> Vec<Blocker> {
    let Some((_, blocker_age_ms)) = job.preflight else {
        return Vec::new();
    };
    let mut wait = preflight::Wait::new(job, reporter, look_once);
    loop {
        let found = match preflight::mysql(conn, blocker_age_ms).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(error = %describe(&err), "the pre-flight could not look for blockers");
                return Vec::new();
            }
        };
        if !wait.again(&found).await {
            return terminate(conn, job, reporter, found, look_once).await;
        }
    }
}

/// After a wait that ran out: terminates the blockers the environment opted
/// to (idle in transaction, old enough), audits each, and returns the rest.
async fn terminate(
    conn: &mut Conn,
    job: &Job<'_>,
    reporter: &Reporter,
    left: Vec<Blocker>,
    look_once: bool,
) -> Vec<Blocker> {
    let mut outcomes = Vec::new();
    for victim in preflight::victims(job, &left, look_once) {
        let outcome = preflight::terminate_mysql(conn, victim.pid)
            .await
            .map(|()| true)
            .map_err(|e| describe(&e));
        outcomes.push((victim.pid, outcome));
    }
    preflight::settle(reporter, left, outcomes).await
}

/// Runs the policy's bounds on the session — `lock_wait_timeout`
/// (metadata locks) and `innodb_lock_wait_timeout` (row locks) from the
/// lock timeout, rounded up to whole seconds, and the flavour's statement
/// time limit; autocommit forced on, as statements of a script are applied
/// one by one — then creates the history table if needed and reads it. One
/// round trip: the bounds come first, so the `CREATE TABLE` already waits
/// within them. Runs under the target lock, so concurrent first runs cannot
/// race on the `CREATE TABLE`.
async fn prepare(
    conn: &mut Conn,
    database: &str,
    flavor: Flavor,
    job: &Job<'_>,
) -> Result<Vec<HistoryRow>, ExecError> {
    let lock_ms = u64::try_from(job.lock_timeout_ms).unwrap_or(0);
    let lock_s = if lock_ms == 0 {
        NO_LOCK_TIMEOUT_S
    } else {
        lock_ms.div_ceil(1000)
    };
    let statement_ms = u64::try_from(job.statement_timeout_ms).unwrap_or(0);
    let sql = format!(
        "SET SESSION autocommit = 1, SESSION lock_wait_timeout = {lock_s}, \
         SESSION innodb_lock_wait_timeout = {lock_s}, {}; {}; \
         SELECT version, checksum, run_id FROM {}",
        flavor.statement_timeout(statement_ms),
        mysql::history_ddl(database),
        mysql::history_table(database)
    );
    // The first result is the `SET`'s: an error there is the bounds'.
    let mut result = conn.query_iter(sql).await.map_err(|e| {
        ExecError::target(format!(
            "could not set the session's timeouts: {}",
            describe(&e)
        ))
    })?;
    let failed = |e: mysql_async::Error| failure::history_unreadable(&describe(&e));
    let mut history = Vec::new();
    // Then the `CREATE TABLE`'s (no rows), then the history's.
    while !result.is_empty() {
        let rows: Vec<(String, String, Option<String>)> = result.collect().await.map_err(failed)?;
        history.extend(
            rows.into_iter()
                .map(|(version, checksum, run_id)| HistoryRow {
                    version,
                    checksum,
                    run_id,
                }),
        );
    }
    Ok(history)
}

/// One pending step's script, split, on its way to the target.
struct StepRun<'a> {
    step: &'a Step,
    statements: &'a [Statement<'a>],
    /// Where a resumed script starts (0-based); `None` for a whole script.
    start: Option<usize>,
    direction: Direction,
    run_id: uuid::Uuid,
    history_table: &'a str,
}

impl StepRun<'_> {
    /// Runs the statements one by one, then records the step in the target's
    /// history. Returns how long it took, or why and where it stopped; a
    /// lock wait that timed out on the first statement of this attempt
    /// (nothing applied) is `Ok(Err(_))`: it may be tried again.
    async fn apply(
        &self,
        conn: &mut Conn,
        reporter: &Reporter,
        progress: &ProgressFeed,
    ) -> Result<Result<StepTiming, LockTimedOut>, ExecError> {
        let version = self.step.version.to_string();
        let started_at = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let skip = self.start.unwrap_or(0);
        let total = self.statements.len();
        // A script that ends by changing rows commits its last statement
        // and its history row together: one durable commit instead of two,
        // and no moment at which the one is there without the other.
        let shared_commit = total > skip && self.statements[total - 1].changes_rows_only();
        let mut applied = StatementsHash::of(self.statements[..skip].iter().map(|s| s.text));
        // What the dirty mark needs if that shared commit fails.
        let mut before_last = None;
        for (i, statement) in self.statements.iter().enumerate().skip(skip) {
            let index = i + 1;
            progress.reached(&version, index, &applied);
            let ran = if shared_commit && index == total {
                before_last = Some(applied.clone());
                let ran = conn
                    .query_drop(format!("START TRANSACTION;\n{}", statement.text))
                    .await;
                if ran.is_err() {
                    rollback(conn).await;
                }
                ran
            } else {
                conn.query_drop(statement.text).await
            };
            if let Err(err) = ran {
                if lock_timed_out(&err) && lock_retry::retry_is_safe(false, index - skip) {
                    return Ok(Err(LockTimedOut {
                        message: describe(&err),
                    }));
                }
                return Err(self.stopped(reporter, &version, index, &applied, &err));
            }
            applied.push(statement.text);
        }
        let execution_ms = i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);
        // Plain text: a prepared statement costs a round trip more on the
        // job's new session.
        let record = match self.direction {
            Direction::Up => format!(
                "INSERT INTO {} (version, checksum, name, run_id, execution_ms, statements) \
                 VALUES ({}, {}, {}, {}, {execution_ms}, {})",
                self.history_table,
                mysql::text_literal(&version),
                mysql::text_literal(self.step.checksum.as_str()),
                mysql::text_literal(&self.step.name),
                mysql::text_literal(&self.run_id.to_string()),
                self.statements.len(),
            ),
            Direction::Down => format!(
                "DELETE FROM {} WHERE version = {}",
                self.history_table,
                mysql::text_literal(&version)
            ),
        };
        if let Some(before_last) = before_last {
            if let Err(err) = conn.query_drop(format!("{record};\nCOMMIT")).await {
                rollback(conn).await;
                return Err(self.commit_failed(reporter, &version, &before_last, &err));
            }
        } else if let Err(err) = conn.query_drop(record).await {
            return Err(failure::history_write_failed(
                reporter,
                self.direction,
                &version,
                total,
                &applied,
                &describe(&err),
            ));
        }
        Ok(Ok(StepTiming {
            started_at,
            duration: clock.elapsed(),
            statements: total - skip,
            resumed: self.start.is_some(),
        }))
    }

    /// The error for a script whose last statement and history row were to
    /// commit together and did not: the row was refused or the session
    /// lost. The transaction was rolled back, but a statement on a table
    /// that ignores transactions (MyISAM) stays applied, so whether the last
    /// statement was applied is unknown: the target is left dirty at it.
    fn commit_failed(
        &self,
        reporter: &Reporter,
        version: &str,
        before_last: &StatementsHash,
        err: &mysql_async::Error,
    ) -> ExecError {
        let index = self.statements.len();
        let stop = StatementStop {
            version,
            direction: self.direction,
            index,
            total: index,
            line: self.statements[index - 1].line,
            resumed: self.start.is_some(),
            applied: before_last,
        };
        let cause = format!(
            "could not record version {version} in {HISTORY_TABLE} together with its last \
             statement: {}",
            describe(err)
        );
        let why = format!(
            "statement {index} of version {version} was to commit with its history row, and \
             the commit did not succeed"
        );
        stop.unknown(reporter, &cause, &why)
    }

    /// The error for a script that stopped at the 1-based statement
    /// `index`. Only an error the server answered proves the session still
    /// stands; after any other, whether the statement was applied is unknown.
    fn stopped(
        &self,
        reporter: &Reporter,
        version: &str,
        index: usize,
        applied: &StatementsHash,
        err: &mysql_async::Error,
    ) -> ExecError {
        let stop = StatementStop {
            version,
            direction: self.direction,
            index,
            total: self.statements.len(),
            line: self.statements[index - 1].line,
            resumed: self.start.is_some(),
            applied,
        };
        let lost = !matches!(err, mysql_async::Error::Server(_));
        stop.error(reporter, &describe(err), lost)
    }
}

/// Ends the session's open transaction after a statement of it failed. A
/// session that cannot be told is lost, and the server rolls its
/// transaction back itself.
async fn rollback(conn: &mut Conn) {
    if let Err(err) = conn.query_drop("ROLLBACK").await {
        tracing::debug!(error = %describe(&err), "could not roll the transaction back");
    }
}

/// Where a script has got: what a worker that dies leaves the target
/// marked dirty with.
#[derive(Debug, Clone)]
struct Reached {
    version: String,
    statement: usize,
    applied: StatementsHash,
}

/// Carries the statement reached to the hub in the background, so running a
/// statement never waits for the tool database: each statement replaces
/// the latest value, and one task writes it at most every
/// [`PROGRESS_EVERY`].
struct ProgressFeed {
    latest: watch::Sender<Option<Reached>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ProgressFeed {
    fn start(reporter: &Reporter) -> Self {
        let (latest, mut updates) = watch::channel(None::<Reached>);
        let (stop, mut stopped) = oneshot::channel::<()>();
        let reporter = reporter.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => return,
                    changed = updates.changed() => if changed.is_err() { return },
                }
                let reached = updates.borrow_and_update().clone();
                if let Some(Reached {
                    version,
                    statement,
                    applied,
                }) = reached
                {
                    reporter.progress(&version, statement, &applied.hex()).await;
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(PROGRESS_EVERY) => {}
                }
            }
        });
        Self { latest, stop, task }
    }

    /// The 1-based statement of `version` about to run, after the
    /// statements hashed in `applied`.
    fn reached(&self, version: &str, statement: usize, applied: &StatementsHash) {
        self.latest.send_modify(|latest| match latest {
            Some(r) if r.version == version => {
                r.statement = statement;
                r.applied = applied.clone();
            }
            _ => {
                *latest = Some(Reached {
                    version: version.to_owned(),
                    statement,
                    applied: applied.clone(),
                })
            }
        });
    }

    /// Stops the feed once a write in flight has finished, so nothing is
    /// written after the execution's own final record.
    async fn stop(self) {
        let _ = self.stop.send(());
        drop(self.latest);
        if let Err(err) = self.task.await {
            tracing::debug!(error = %err, "progress feed ended abnormally");
        }
    }
}
