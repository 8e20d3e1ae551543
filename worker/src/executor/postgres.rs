//! PostgreSQL targets, over one dedicated tokio-postgres session per job.
//!
//! A transactional migration costs two round trips: `BEGIN; SET LOCAL
//! lock_timeout …; SET LOCAL statement_timeout …; <script>` as one
//! simple-query message, then `INSERT INTO migrate_hub_history …; COMMIT`.
//! PostgreSQL parses a whole message before running any of it, so a syntax
//! error anywhere in the script runs nothing, and a runtime error aborts the
//! transaction: the target is left untouched either way. That is fewer round
//! trips than `psql --single-transaction` pays (one per statement), which
//! keeps a 100-target fan-out close to the floor.

use std::collections::HashSet;

use common::{
    domain::{
        Direction, Engine,
        blockers::Blocker,
        lock_retry,
        split::{StatementsHash, split_postgres},
    },
    review::tables_touched,
    store::snapshots::Taken,
    targets::{self, HISTORY_TABLE, postgres::HISTORY_DDL},
};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage, error::ErrorPosition};
use tracing::Instrument;

pub use common::targets::postgres::describe;

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

/// Statements the worker sends before a transactional script (BEGIN and two
/// SETs); subtracted from the server's count.
const WRAPPER_STATEMENTS: usize = 3;

/// How the hub's session on the target shows in `pg_stat_activity` while it
/// runs `step`: `migrate-hub run <first 8 of the run id> <version>`, so a
/// DBA recognises it in their own tools.
fn application_name(job: &Job<'_>, step: &Step) -> String {
    let run = job.run_id.simple().to_string();
    let name = format!("migrate-hub run {} {}", &run[..8], step.version);
    // PostgreSQL keeps the first 63 bytes (NAMEDATALEN); versions are ASCII.
    name.chars().take(63).collect()
}

/// Sets the session's `application_name` (see [`application_name`]), on
/// its own: in a script's message it would belong to the transaction, and a
/// rollback would take it back.
async fn name_session(client: &Client, name: &str) -> Result<(), String> {
    client
        .simple_query(&format!("SET application_name = {}", literal(name)))
        .await
        .map(drop)
        .map_err(|e| format!("could not name the session: {}", describe(&e)))
}

/// How often a server (PostgreSQL 14+) checks, while running a statement,
/// whether the worker is still connected. A worker that dies mid-migration
/// then has its transaction rolled back and the target lock released within
/// about this long, instead of when the statement would have ended.
const DISCONNECT_CHECK_MS: u32 = 1_000;

pub async fn execute(
    target: &TargetSpec,
    job: &Job<'_>,
    claim: &TargetClaim,
    reporter: &Reporter,
) -> Result<Applied, ExecError> {
    let client = connect(target).await?;
    lock::acquire_pg(&client, job.lock_wait)
        .await
        .map_err(|err| ExecError::target(err.to_string()))?;
    if !claim.has_snapshot {
        snapshot(&client, reporter, Taken::Before).await;
    }
    let result = run_locked(&client, job, claim, reporter).await;
    lock::release_pg(&client).await;
    result
}

/// Reads the target's schema over the job's session, under the target
/// lock, and records it (the `before` of a target without any snapshot; the
/// `after` is taken when the worker is idle, `crate::snapshot`). A schema
/// that cannot be read is logged; the target is never failed for it.
async fn snapshot(client: &Client, reporter: &Reporter, taken: Taken) {
    match common::targets::introspect::postgres(client).await {
        Ok(read) => reporter.snapshot(Engine::Postgres, read, taken).await,
        Err(err) => {
            tracing::warn!(error = %err, "could not read the target's schema for a snapshot")
        }
    }
}

/// Opens the job's session (with the target's TLS mode and session
/// settings, through the connect code the control plane's connection test
/// uses too) and prepares it.
async fn connect(target: &TargetSpec) -> Result<Client, ExecError> {
    let client =
        targets::postgres::connect(&target.endpoint, target.password.as_ref(), CONNECT_TIMEOUT)
            .await
            .map_err(|e| failure::unreachable(&target.endpoint, e))?;
    // Only where the setting exists (PostgreSQL 14+); elsewhere a no-op.
    client
        .simple_query(&format!(
            "SELECT set_config('client_connection_check_interval', '{DISCONNECT_CHECK_MS}', false) \
             WHERE current_setting('server_version_num')::int >= 140000"
        ))
        .await
        .map_err(|e| {
            ExecError::target(format!("could not prepare the session: {}", describe(&e)))
        })?;
    Ok(client)
}

/// Everything that happens while the target lock is held.
async fn run_locked(
    client: &Client,
    job: &Job<'_>,
    claim: &TargetClaim,
    reporter: &Reporter,
) -> Result<Applied, ExecError> {
    // The target's history and the hub's record of it, read at once.
    let (history, record) = tokio::try_join!(read_history(client), hub_record(claim))?;
    let history = agree_with_hub(claim, record.applied, history).await?;
    // A non-transactional script that stopped part-way on this target held
    // this lock, so this answer is final.
    let resume = admit(claim, record.dirty, job).await?;
    let applied: HashSet<&str> = history.iter().map(|(v, _)| v.as_str()).collect();
    let todo = plan::pending(job.steps, job.direction, &applied)
        .map_err(|e| ExecError::target(e.to_string()))?;
    let resumes = |step: &&Step| {
        resume
            .as_ref()
            .is_some_and(|r| r.version == step.version.to_string() && !step.transactional)
    };
    if resume.is_some() && !todo.iter().any(resumes) {
        return Err(not_pending(resume.as_ref(), job.direction));
    }
    if todo.is_empty() {
        return Ok(Applied::Nothing);
    }
    let recorder = HubRecorder::start(reporter);
    let mut result = Ok(Applied::Steps(todo.len()));
    // Before the first migration: who would block any of them.
    let every_table: Vec<String> = todo
        .iter()
        .flat_map(|step| tables_touched(Engine::Postgres, step.script(job.direction)))
        .collect();
    let mut blockers = look_for_blockers(client, job, reporter, &every_table, false).await;
    // The session's `application_name` as last set, so that naming the
    // next step rides on the previous step's COMMIT message.
    let mut named: Option<String> = None;
    for (i, step) in todo.iter().enumerate() {
        if recorder.failed() {
            break;
        }
        if job.window_closed() {
            result = Ok(Applied::Paused(i));
            break;
        }
        let next_name = todo.get(i + 1).map(|next| application_name(job, next));
        let started_at = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let span = super::migration_span(step, job.direction);
        let mut retries = LockRetries::new(job, Engine::Postgres, step.version.to_string());
        retries.blockers = std::mem::take(&mut blockers);
        let applied = async {
            loop {
                // A transactional script is rolled back whole on a lock
                // timeout; a statement-by-statement one says whether its
                // first statement was the one that timed out.
                let attempt = if step.transactional {
                    let wanted = application_name(job, step);
                    if named.as_deref() != Some(wanted.as_str()) {
                        name_session(client, &wanted).await.map_err(|message| {
                            ExecError::Target {
                                message,
                                version: Some(step.version.to_string()),
                            }
                        })?;
                        named = Some(wanted);
                    }
                    match apply_in_transaction(client, job, step, next_name.as_deref()).await {
                        Ok(statements) => {
                            if next_name.is_some() {
                                named.clone_from(&next_name);
                            }
                            Ok(Ok(statements))
                        }
                        Err(Failed::LockTimeout(message)) => Ok(Err(LockTimedOut { message })),
                        Err(Failed::Other(message)) => Err(ExecError::Target {
                            message,
                            version: Some(step.version.to_string()),
                        }),
                    }
                } else {
                    named = Some(application_name(job, step));
                    apply_without_transaction(client, job, step, reporter, resume.as_ref()).await
                };
                match attempt {
                    Ok(Err(timed_out)) => {
                        let tables = tables_touched(Engine::Postgres, step.script(job.direction));
                        if retries.exhausted() {
                            // The failure names who blocks it now.
                            retries.blockers =
                                look_for_blockers(client, job, reporter, &tables, true).await;
                        }
                        retries.timed_out(reporter, timed_out).await?;
                        // Before every retry: who blocks it now, and the wait for them.
                        retries.blockers =
                            look_for_blockers(client, job, reporter, &tables, false).await;
                    }
                    Ok(Ok(statements)) => break retries.over(reporter, Ok(statements)).await,
                    Err(err) => break retries.over(reporter, Err(err)).await,
                }
            }
        }
        .instrument(span.clone())
        .await;
        let statements = match applied {
            Ok(statements) => statements,
            Err(err) => {
                super::mark_failed(&span);
                result = Err(err);
                break;
            }
        };
        recorder.record(
            step,
            StepTiming {
                started_at,
                duration: clock.elapsed(),
                statements,
                resumed: resumes(step),
            },
        );
    }
    recorder.settle(result).await
}

/// The pre-flight on this target (see [`preflight`]): waits while sessions
/// block the `tables`, up to the policy's wait (or only looks, with
/// `look_once`); returns those still there. A pre-flight that cannot look
/// (a permission) lets the migration go on.
async fn look_for_blockers(
    client: &Client,
    job: &Job<'_>,
    reporter: &Reporter,
    tables: &[String],
    look_once: bool,
) -> Vec<Blocker> {
    let Some((_, blocker_age_ms)) = job.preflight else {
        return Vec::new();
    };
    let mut wait = preflight::Wait::new(job, reporter, look_once);
    loop {
        let budget = i64::from(job.lock_timeout_ms);
        let found = match preflight::postgres(client, tables, blocker_age_ms, budget).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(error = %describe(&err), "the pre-flight could not look for blockers");
                return Vec::new();
            }
        };
        if !wait.again(&found).await {
            return terminate(client, job, reporter, found, look_once).await;
        }
    }
}

/// After a wait that ran out: terminates the blockers the environment opted
/// to (idle in transaction, old enough), audits each, and returns the rest.
async fn terminate(
    client: &Client,
    job: &Job<'_>,
    reporter: &Reporter,
    left: Vec<Blocker>,
    look_once: bool,
) -> Vec<Blocker> {
    let mut outcomes = Vec::new();
    for victim in preflight::victims(job, &left, look_once) {
        let outcome = preflight::terminate_postgres(client, victim.pid)
            .await
            .map_err(|e| describe(&e));
        outcomes.push((victim.pid, outcome));
    }
    preflight::settle(reporter, left, outcomes).await
}

/// Creates the history table if needed and reads it, in one round trip.
/// Runs under the target lock, so concurrent first runs cannot race on the
/// `CREATE TABLE`.
async fn read_history(client: &Client) -> Result<Vec<HistoryRow>, ExecError> {
    let sql = format!("{HISTORY_DDL}; SELECT version, checksum, run_id::text FROM {HISTORY_TABLE}");
    let messages = client
        .simple_query(&sql)
        .await
        .map_err(|e| failure::history_unreadable(&describe(&e)))?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(HistoryRow {
                version: row.get(0).unwrap_or_default().to_owned(),
                checksum: row.get(1).unwrap_or_default().to_owned(),
                run_id: row.get(2).map(str::to_owned),
            }),
            _ => None,
        })
        .collect())
}

/// The statement that records (up) or forgets (down) `step` in the target's
/// history, with how long its script ran.
fn history_write(job: &Job<'_>, step: &Step, execution_ms: &str) -> String {
    let version = literal(&step.version.to_string());
    match job.direction {
        Direction::Up => format!(
            "INSERT INTO {HISTORY_TABLE} (version, checksum, name, run_id, execution_ms) \
             VALUES ({version}, {}, {}, {}::uuid, {execution_ms})",
            literal(step.checksum.as_str()),
            literal(&step.name),
            literal(&job.run_id.to_string()),
        ),
        Direction::Down => {
            format!("DELETE FROM {HISTORY_TABLE} WHERE version = {version}")
        }
    }
}

/// Why a transactional script did not commit: its lock budget ran out
/// (rolled back whole, so it may be tried again), or anything else; with
/// the database's error text.
enum Failed {
    LockTimeout(String),
    Other(String),
}

/// Whether PostgreSQL refused for want of a lock within `lock_timeout`.
fn lock_timed_out(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
}

/// Runs the step's script and its history write in one transaction, in two
/// round trips. Returns the number of statements the script executed, or
/// the database's error text.
///
/// The script travels in the first message, the history write and `COMMIT`
/// in the second. Were they one message, a worker dying mid-script would not
/// stop the server from running the rest of it, `COMMIT` included, leaving
/// the target ahead of the hub; split, the server finds the client gone when
/// it waits for the second message and rolls back.
async fn apply_in_transaction(
    client: &Client,
    job: &Job<'_>,
    step: &Step,
    next_name: Option<&str>,
) -> Result<usize, Failed> {
    let script = step.script(job.direction);
    let prefix = format!(
        "BEGIN;\nSET LOCAL lock_timeout = {};\nSET LOCAL statement_timeout = {};\n",
        job.lock_timeout_ms, job.statement_timeout_ms
    );
    let clock = Instant::now();
    let messages = match client.simple_query(&format!("{prefix}{script}")).await {
        Ok(messages) => messages,
        Err(err) => {
            rollback(client, &err).await;
            let text = describe_in_script(&err, prefix.chars().count(), script, job.direction);
            return Err(if lock_timed_out(&err) {
                Failed::LockTimeout(text)
            } else {
                Failed::Other(text)
            });
        }
    };
    let execution_ms = clock.elapsed().as_millis().to_string();
    // The next step's name rides on this COMMIT (after it: outside the
    // transaction, so no rollback takes it back), saving a round trip.
    let rename = next_name.map_or(String::new(), |name| {
        format!(";\nSET application_name = {}", literal(name))
    });
    let record = format!(
        "{};\nCOMMIT{rename}",
        history_write(job, step, &execution_ms)
    );
    if let Err(err) = client.simple_query(&record).await {
        rollback(client, &err).await;
        return Err(Failed::Other(format!(
            "the script ran, but recording it in migrate_hub_history or committing failed, \
             so it was rolled back: {}",
            describe(&err)
        )));
    }
    Ok(completed(&messages).saturating_sub(WRAPPER_STATEMENTS))
}

/// Ends the transaction a failed statement left aborted. After a syntax
/// error nothing ran and this is a harmless no-op; on a closed connection
/// the server has rolled back already.
async fn rollback(client: &Client, err: &tokio_postgres::Error) {
    if !err.is_closed() {
        let _ = client.simple_query("ROLLBACK").await;
    }
}

/// Runs a script that must not run in a transaction (`CREATE INDEX
/// CONCURRENTLY` and the like, detected or declared) statement by
/// statement, then records it.
///
/// PostgreSQL wraps a multi-statement message in an implicit transaction,
/// which such statements refuse, so the script is split
/// ([`split_postgres`]) and each statement is sent alone, in autocommit
/// mode. Like a MySQL script, it can stop part-way: a statement that fails
/// after others were applied leaves the target **dirty**, with the
/// statement reached and the hash of the applied prefix.
async fn apply_without_transaction(
    client: &Client,
    job: &Job<'_>,
    step: &Step,
    reporter: &Reporter,
    resume: Option<&Resume>,
) -> Result<Result<usize, LockTimedOut>, ExecError> {
    let version = step.version.to_string();
    let script = step.script(job.direction);
    let statements =
        split_postgres(script).map_err(|e| failure::unsplittable(step, job.direction, e))?;
    let start = Resume::start(resume, step, &statements)?;
    let skip = start.unwrap_or(0);
    let timeouts = format!(
        "SET application_name = {}; SET lock_timeout = {}; SET statement_timeout = {}",
        literal(&application_name(job, step)),
        job.lock_timeout_ms,
        job.statement_timeout_ms
    );
    client
        .simple_query(&timeouts)
        .await
        .map_err(|e| ExecError::Target {
            message: describe(&e),
            version: Some(version.clone()),
        })?;
    let clock = Instant::now();
    let mut applied = StatementsHash::of(statements[..skip].iter().map(|s| s.text));
    for (i, statement) in statements.iter().enumerate().skip(skip) {
        let index = i + 1;
        // Statements of such scripts take long (they build indexes): one
        // progress write each is nothing next to them.
        reporter.progress(&version, index, &applied.hex()).await;
        if let Err(err) = client.simple_query(statement.text).await {
            // Nothing of this attempt was applied yet: it may be tried again.
            if lock_timed_out(&err) && lock_retry::retry_is_safe(false, index - skip) {
                return Ok(Err(LockTimedOut {
                    message: describe(&err),
                }));
            }
            let stop = StatementStop {
                version: &version,
                direction: job.direction,
                index,
                total: statements.len(),
                line: statement.line,
                resumed: start.is_some(),
                applied: &applied,
            };
            let lost = err.is_closed() || err.as_db_error().is_none();
            return Err(stop.error(reporter, &describe(&err), lost));
        }
        applied.push(statement.text);
    }
    let execution_ms = clock.elapsed().as_millis().to_string();
    if let Err(err) = client
        .simple_query(&history_write(job, step, &execution_ms))
        .await
    {
        return Err(failure::history_write_failed(
            reporter,
            job.direction,
            &version,
            statements.len(),
            &applied,
            &describe(&err),
        ));
    }
    Ok(Ok(statements.len() - skip))
}

fn completed(messages: &[SimpleQueryMessage]) -> usize {
    messages
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::CommandComplete(_)))
        .count()
}

/// A string literal that is safe whatever `standard_conforming_strings` is:
/// the `E''` form always reads backslash escapes, so doubling both quotes and
/// backslashes covers every character PostgreSQL text can hold.
fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// [`describe`], plus the line of the script the error points at, when the
/// server reported a position inside the script (not in the wrapper).
fn describe_in_script(
    err: &tokio_postgres::Error,
    prefix_chars: usize,
    script: &str,
    direction: Direction,
) -> String {
    let mut text = describe(err);
    let position = err.as_db_error().and_then(|db| match db.position() {
        Some(ErrorPosition::Original(p)) => Some(*p as usize),
        _ => None,
    });
    if let Some(line) = position.and_then(|p| script_line(p, prefix_chars, script)) {
        text.push_str(&format!("\nLINE: {line} of the {direction} script"));
    }
    text
}

/// Maps a 1-based character position in the sent message to a 1-based line
/// of the script that starts after `prefix_chars` characters.
fn script_line(position: usize, prefix_chars: usize, script: &str) -> Option<usize> {
    let offset = position.checked_sub(prefix_chars + 1)?;
    if offset >= script.chars().count() {
        return None;
    }
    Some(1 + script.chars().take(offset).filter(|c| *c == '\n').count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_survive_quotes_and_backslashes() {
        assert_eq!(literal("plain"), "E'plain'");
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(literal(r"a\'b"), r"E'a\\''b'");
    }

    #[test]
    fn error_positions_map_to_script_lines() {
        let prefix = "BEGIN;\n";
        let script = "CREATE TABLE a ();\nCREAT TABLE b ();";
        let at = prefix.chars().count() + script.find("CREAT TABLE").unwrap() + 1;
        assert_eq!(script_line(at, prefix.chars().count(), script), Some(2));
        assert_eq!(script_line(1, prefix.chars().count(), script), None);
        assert_eq!(script_line(10_000, prefix.chars().count(), script), None);
        // Positions count characters, not bytes.
        let script = "-- ünïcödé\nSELEC 1";
        let at = script.chars().position(|c| c == 'S').unwrap() + 1;
        assert_eq!(script_line(at, 0, script), Some(2));
    }
}
