//! A run's SQL review: computed when the run is requested, computed again
//! before it is approved and when its environment's review policy changes
//! (a different result invalidates the run), and amended by admin waivers.

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Caller, LifecycleError};
use crate::{
    domain::{Capability, Engine, RunState, role::allows, run::Direction},
    review::run::{self, AdminWaiver, RunReview, Script},
    store::{
        audit,
        inventory::EnvironmentRow,
        runs::{self, InvalidatedRun, RunRow, RunScope},
    },
};

/// One migration as the review reads it.
pub(super) struct Source<'a> {
    pub version: &'a str,
    pub up_sql: &'a str,
    /// `None`: the migration has no down script.
    pub down_sql: Option<&'a str>,
    pub transactional: bool,
}

/// Reviews the scripts a run of `direction` executes, in execution order.
pub(super) fn review(
    env: &EnvironmentRow,
    direction: Direction,
    engines: &[Engine],
    sources: &[Source<'_>],
    waivers: &[AdminWaiver],
) -> RunReview {
    let scripts: Vec<Script<'_>> = sources
        .iter()
        .map(|m| Script {
            version: m.version,
            sql: match direction {
                Direction::Up => m.up_sql,
                Direction::Down => m.down_sql.unwrap_or_default(),
            },
            has_down: m.down_sql.is_some(),
            transactional: m.transactional,
        })
        .collect();
    run::review_run(&run::Inputs {
        environment: &env.name,
        policy: &env.review_policy,
        engines,
        scripts: &scripts,
        waivers,
    })
}

/// The review of a stored run as its scripts, its DB set's targets, its
/// environment's policy and its waivers make it now.
pub(super) async fn review_now(
    conn: &mut PgConnection,
    run: &RunRow,
    env: &EnvironmentRow,
) -> Result<RunReview, LifecycleError> {
    let migrations = runs::migrations(conn, run.id).await?;
    let engines: Vec<Engine> = runs::pinned_targets(conn, run.db_set_id)
        .await?
        .iter()
        .map(|t| t.engine)
        .collect();
    let waivers = runs::waivers(conn, run.id).await?;
    let sources: Vec<Source<'_>> = migrations
        .iter()
        .map(|m| Source {
            version: &m.version,
            up_sql: &m.up_sql,
            down_sql: m.reversible.then_some(m.down_sql.as_str()),
            transactional: m.transactional,
        })
        .collect();
    Ok(review(env, run.direction, &engines, &sources, &waivers))
}

const REVIEW_CHANGED: &str =
    "the run's SQL review changed (the environment's review policy or the analyzers)";

/// Checks a locked, reviewed run before an approval: a review that comes
/// out different now invalidates it (the caller commits and answers with
/// the error); error findings nobody waived refuse the approval
/// (`review_failed`, listing them).
pub(super) async fn check_before_approval(
    conn: &mut PgConnection,
    caller: &Caller,
    run: &RunRow,
    env: &EnvironmentRow,
) -> Result<(), LifecycleError> {
    let Some(pinned) = run.review_digest.as_deref() else {
        return Ok(());
    };
    let review = review_now(conn, run, env).await?;
    if review.digest() != pinned {
        return Err(invalidate_changed(conn, caller, run).await?);
    }
    let blocking = review.blocking();
    if blocking.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = blocking
        .iter()
        .map(|b| {
            let at = if b.line == 0 {
                String::new()
            } else {
                format!(" line {}", b.line)
            };
            format!(
                "{} ({}){at}: {} {}",
                b.version,
                b.engine.as_str(),
                b.code,
                b.message
            )
        })
        .collect();
    Err(LifecycleError::conflict(
        "review_failed",
        format!(
            "the SQL review found {} error(s) nobody waived; fix the scripts, or an admin waives each with a reason: {}",
            blocking.len(),
            listed.join("; ")
        ),
    ))
}

/// Invalidates a run whose review came out different, and returns the
/// error to answer with (its writes must be committed).
async fn invalidate_changed(
    conn: &mut PgConnection,
    caller: &Caller,
    run: &RunRow,
) -> Result<LifecycleError, LifecycleError> {
    let invalidated = runs::invalidate_where(
        conn,
        RunScope::Runs(&[run.id]),
        REVIEW_CHANGED,
        Some(caller.id),
    )
    .await?;
    super::announce_invalidated(conn, caller, &invalidated, REVIEW_CHANGED).await?;
    Ok(LifecycleError::Conflict {
        code: "run_invalidated",
        message: format!("{REVIEW_CHANGED}; it is invalidated and a new run must be requested"),
        recorded: true,
    })
}

/// Reviews every run of `env` waiting for approval or execution again,
/// after its review policy changed, and invalidates those whose review
/// came out different. Call it before the change's own audit rows, and
/// pass the result to [`super::announce_invalidated`] with them.
pub async fn review_waiting_runs(
    conn: &mut PgConnection,
    caller: &Caller,
    env: &EnvironmentRow,
) -> Result<Vec<InvalidatedRun>, LifecycleError> {
    let mut changed = Vec::new();
    for run in runs::waiting_in(conn, &env.name).await? {
        let Some(pinned) = run.review_digest.as_deref() else {
            continue;
        };
        if review_now(conn, &run, env).await?.digest() != pinned {
            changed.push(run.id);
        }
    }
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    Ok(runs::invalidate_where(
        conn,
        RunScope::Runs(&changed),
        &review_policy_changed(&env.name),
        Some(caller.id),
    )
    .await?)
}

/// Why [`review_waiting_runs`] invalidated a run.
pub fn review_policy_changed(environment: &str) -> String {
    format!("the review policy of environment {environment} changed this run's SQL review")
}

/// What an admin waives: one finding of the run's review.
#[derive(Debug, Clone)]
pub struct WaiverRequest {
    pub version: String,
    pub code: String,
    /// The finding's line (0 for a finding about the whole script).
    pub line: usize,
    /// Checked for length and characters by the caller.
    pub reason: String,
}

/// Records an admin's waiver of one finding of a run waiting for approval,
/// and returns the run's new review. The waiver is part of the review and
/// so of the run's digest: approvals given before it no longer count.
pub async fn waive(
    conn: &mut PgConnection,
    caller: &Caller,
    run_id: Uuid,
    ask: &WaiverRequest,
) -> Result<RunReview, LifecycleError> {
    if !allows(caller.role, Capability::WaiveFindings) {
        let (entry, message) = caller.lacking(Capability::WaiveFindings);
        audit::append(conn, &entry).await?;
        return Err(LifecycleError::Forbidden {
            code: "forbidden",
            message,
        });
    }
    if ask.reason.trim().is_empty() {
        return Err(LifecycleError::invalid("reason", "a waiver needs a reason"));
    }
    let run = super::lock_run(conn, run_id).await?;
    if run.state != RunState::PendingApproval {
        return Err(LifecycleError::conflict(
            "invalid_state",
            format!(
                "the run is {}; findings are waived while it waits for approval",
                run.state
            ),
        ));
    }
    super::invalidate_if_stale(conn, caller, &run).await?;
    let env = super::decide::environment_of(conn, &run).await?;
    let Some(pinned) = run.review_digest.as_deref() else {
        return Err(LifecycleError::conflict(
            "not_reviewed",
            "the run was requested before SQL reviews existed; it has no findings to waive",
        ));
    };
    let before = review_now(conn, &run, &env).await?;
    if before.digest() != pinned {
        return Err(invalidate_changed(conn, caller, &run).await?);
    }
    let item = before
        .find(&ask.version, &ask.code, ask.line)
        .ok_or_else(|| {
            LifecycleError::invalid(
                "code",
                format!(
                    "the run's review has no {} finding at line {} of version {}",
                    ask.code, ask.line, ask.version
                ),
            )
        })?;
    if item.waived.is_some() {
        return Err(LifecycleError::conflict(
            "already_waived",
            "that finding is already waived",
        ));
    }
    let waiver = AdminWaiver {
        version: ask.version.clone(),
        code: ask.code.clone(),
        line: ask.line,
        reason: ask.reason.trim().to_owned(),
        by: caller.email.clone(),
    };
    runs::insert_waiver(conn, run.id, &waiver, caller.id).await?;
    let after = review_now(conn, &run, &env).await?;
    let digest = runs::set_review(conn, &run, &after).await?;
    audit::append(
        conn,
        &caller
            .audit("run.finding_waived", "run", run.id)
            .project(run.project_id)
            .details(json!({
                "version": waiver.version,
                "code": waiver.code,
                "line": waiver.line,
                "reason": waiver.reason,
                "previous_digest": run.digest,
                "digest": digest,
                "risk": after.risk,
            })),
    )
    .await?;
    Ok(after)
}
