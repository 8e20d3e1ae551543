//! Approving, denying and invalidating runs.

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Caller, LifecycleError};
use crate::{
    domain::{
        Role, RunState,
        approval::{self, ApprovalContext, ApprovalError},
        run::RunEvent,
    },
    store::{
        audit, inventory,
        runs::{self, InvalidatedRun, RunRow, RunScope},
        webhooks,
    },
};

/// Records `caller`'s approval; the run moves to `approved` once it has the
/// approvals its environment requires.
pub async fn approve(
    conn: &mut PgConnection,
    caller: &Caller,
    run_id: Uuid,
    comment: &str,
) -> Result<(), LifecycleError> {
    let run = super::lock_run(conn, run_id).await?;
    let facts = Facts::load(conn, &run).await?;
    let outcome = match approval::decide_approval(
        &facts.policy,
        &facts.context(&run),
        caller.id,
        caller.role,
    ) {
        Ok(outcome) => outcome,
        Err(err) => return Err(refuse(conn, caller, &run, err).await),
    };
    super::review::check_before_approval(conn, caller, &run, &facts.env).await?;
    runs::insert_decision(
        conn,
        run.id,
        caller.id,
        caller.role.as_str(),
        "approved",
        comment,
        &run.digest,
    )
    .await?;
    if outcome.fully_approved {
        let next = transition(&run, RunEvent::FullyApproved, "be approved")?;
        runs::set_state(conn, &run, next, Some(caller.id), None).await?;
        webhooks::notify_run(conn, run.id, "approved").await?;
    }
    audit::append(
        conn,
        &caller
            .audit("run.approved", "run", run.id)
            .project(run.project_id)
            .details(json!({
                "digest": run.digest,
                "comment": comment,
                "approvals": outcome.count,
                "required": facts.requirement(&run).approvals,
                "risk": run.risk,
            })),
    )
    .await?;
    Ok(())
}

/// Records `caller`'s denial; the run is final.
pub async fn deny(
    conn: &mut PgConnection,
    caller: &Caller,
    run_id: Uuid,
    reason: &str,
) -> Result<(), LifecycleError> {
    let run = super::lock_run(conn, run_id).await?;
    let facts = Facts::load(conn, &run).await?;
    if let Err(err) =
        approval::check_denial(&facts.policy, &facts.context(&run), caller.id, caller.role)
    {
        return Err(refuse(conn, caller, &run, err).await);
    }
    runs::insert_decision(
        conn,
        run.id,
        caller.id,
        caller.role.as_str(),
        "denied",
        reason,
        &run.digest,
    )
    .await?;
    let next = transition(&run, RunEvent::Deny, "be denied")?;
    runs::set_state(conn, &run, next, Some(caller.id), Some(reason)).await?;
    webhooks::notify_run(conn, run.id, "denied").await?;
    audit::append(
        conn,
        &caller
            .audit("run.denied", "run", run.id)
            .project(run.project_id)
            .details(json!({ "reason": reason })),
    )
    .await?;
    Ok(())
}

/// What the approval rule needs about a locked run.
struct Facts {
    env: inventory::EnvironmentRow,
    policy: approval::Policy,
    authors: Vec<Uuid>,
    /// Approvals on record for the pinned digest.
    approvers: Vec<Uuid>,
    /// Whether an admin is among them.
    admin_approved: bool,
    digest_current: bool,
}

impl Facts {
    async fn load(conn: &mut PgConnection, run: &RunRow) -> Result<Self, LifecycleError> {
        let env = environment_of(conn, run).await?;
        let authors = runs::covered_authors(conn, run.id).await?;
        let approvals = approvals(conn, run).await?;
        let digest_current = runs::digest_is_current(conn, run).await?;
        Ok(Self {
            policy: env.policy(),
            env,
            authors,
            approvers: approvals.iter().map(|a| a.user_id).collect(),
            admin_approved: approvals
                .iter()
                .any(|a| a.role.as_deref() == Some(Role::Admin.as_str())),
            digest_current,
        })
    }

    fn context<'a>(&'a self, run: &RunRow) -> ApprovalContext<'a> {
        ApprovalContext {
            state: run.state,
            requested_by: run.requested_by,
            authors: &self.authors,
            approvers: &self.approvers,
            digest_current: self.digest_current,
            high_risk: is_high_risk(run),
            admin_approved: self.admin_approved,
        }
    }

    fn requirement(&self, run: &RunRow) -> approval::Requirement {
        self.policy.requirement(is_high_risk(run))
    }
}

/// Whether the run's review rated it high-risk.
pub fn is_high_risk(run: &RunRow) -> bool {
    run.risk.as_deref() == Some("high")
}

/// The run's environment (its policy and timeouts).
pub(super) async fn environment_of(
    conn: &mut PgConnection,
    run: &RunRow,
) -> Result<inventory::EnvironmentRow, LifecycleError> {
    inventory::environment(conn, &run.environment)
        .await?
        .ok_or_else(|| {
            LifecycleError::Corrupt(format!("run {} names a missing environment", run.id))
        })
}

/// Whether the approvals on record for the run's digest meet what its
/// environment requires of a run of its risk.
pub(super) async fn approvals_met(
    conn: &mut PgConnection,
    run: &RunRow,
    env: &inventory::EnvironmentRow,
) -> Result<bool, LifecycleError> {
    let approvals = approvals(conn, run).await?;
    let needs = env.policy().requirement(is_high_risk(run));
    let admin = approvals
        .iter()
        .any(|a| a.role.as_deref() == Some(Role::Admin.as_str()));
    Ok(approvals.len() as i32 >= needs.approvals && (admin || !needs.admin))
}

/// The approvals of the run's pinned digest.
async fn approvals(
    conn: &mut PgConnection,
    run: &RunRow,
) -> Result<Vec<runs::ApprovalRow>, LifecycleError> {
    Ok(runs::approvals(conn, run.id)
        .await?
        .into_iter()
        .filter(|a| a.decision == "approved" && a.digest == run.digest)
        .collect())
}

/// The answer to a refused approval or denial, with what it writes: a
/// stale run is invalidated; a refusal for separation of duties is audited
/// (`access.denied`, with the run).
async fn refuse(
    conn: &mut PgConnection,
    caller: &Caller,
    run: &RunRow,
    err: ApprovalError,
) -> LifecycleError {
    let message = err.to_string();
    let written = match err {
        ApprovalError::Stale => {
            invalidate_stale(conn, caller, run)
                .await
                .map(|()| LifecycleError::Conflict {
                    code: "run_invalidated",
                    message: STALE.into(),
                    recorded: true,
                })
        }
        ApprovalError::SelfApproval(_) | ApprovalError::AuthorApproval(_) => {
            let mut entry = caller
                .denial("separation_of_duties", &message)
                .project(run.project_id);
            entry.details["run"] = json!(run.id);
            audit::append(conn, &entry)
                .await
                .map(|_| LifecycleError::Forbidden {
                    code: "separation_of_duties",
                    message,
                })
        }
        ApprovalError::NotAllowed => {
            let entry = caller.denial("forbidden", &message).project(run.project_id);
            audit::append(conn, &entry)
                .await
                .map(|_| LifecycleError::Forbidden {
                    code: "forbidden",
                    message,
                })
        }
        ApprovalError::WrongState(RunState::Invalidated) => {
            Ok(LifecycleError::conflict("run_invalidated", message))
        }
        ApprovalError::WrongState(_) => Ok(LifecycleError::conflict("invalid_state", message)),
        ApprovalError::AlreadyApproved => Ok(LifecycleError::conflict("already_decided", message)),
    };
    written.unwrap_or_else(LifecycleError::Db)
}

const STALE: &str = "what this run covers changed since it was requested; it is invalidated and a new run must be requested";
const STALE_REASON: &str = "a migration, the DB set's targets or the environment's timeouts changed since the run was requested";

/// Invalidates the locked run if something its digest covers changed since
/// it was requested: then the caller commits and answers with the error.
pub async fn invalidate_if_stale(
    conn: &mut PgConnection,
    caller: &Caller,
    run: &RunRow,
) -> Result<(), LifecycleError> {
    if runs::digest_is_current(conn, run).await? {
        return Ok(());
    }
    invalidate_stale(conn, caller, run).await?;
    Err(LifecycleError::Conflict {
        code: "run_invalidated",
        message: STALE.into(),
        recorded: true,
    })
}

async fn invalidate_stale(
    conn: &mut PgConnection,
    caller: &Caller,
    run: &RunRow,
) -> Result<(), sqlx::Error> {
    runs::set_state(
        conn,
        run,
        RunState::Invalidated,
        Some(caller.id),
        Some(STALE_REASON),
    )
    .await?;
    webhooks::notify_run(conn, run.id, "invalidated").await?;
    audit::append(
        conn,
        &caller
            .audit("run.invalidated", "run", run.id)
            .project(run.project_id)
            .details(json!({ "reason": STALE_REASON, "pinned_digest": run.digest })),
    )
    .await?;
    Ok(())
}

/// Invalidates every run of `scope` still waiting for approval or execution,
/// because something its approval covers changed (rule 2), in the
/// transaction of the change. Call it before the change's own audit rows
/// and pass the result to [`announce_invalidated`] with them: the audit head
/// is held from the first append to commit, and waiting for a run's lock
/// while holding it could deadlock with an approval.
pub async fn invalidate_where(
    conn: &mut PgConnection,
    caller: &Caller,
    scope: RunScope<'_>,
    reason: &str,
) -> Result<Vec<InvalidatedRun>, LifecycleError> {
    Ok(runs::invalidate_where(conn, scope, reason, Some(caller.id)).await?)
}

/// The webhook and `run.invalidated` audit row of each run
/// [`invalidate_where`] invalidated.
pub async fn announce_invalidated(
    conn: &mut PgConnection,
    caller: &Caller,
    invalidated: &[InvalidatedRun],
    reason: &str,
) -> Result<(), LifecycleError> {
    for run in invalidated {
        webhooks::notify_run(conn, run.id, "invalidated").await?;
        audit::append(
            conn,
            &caller
                .audit("run.invalidated", "run", run.id)
                .project(run.project_id)
                .details(json!({
                    "reason": reason,
                    "from_state": run.from_state,
                    "pinned_digest": run.digest,
                })),
        )
        .await?;
    }
    Ok(())
}

/// The run's next state after `event`, or the conflict that names it.
pub(super) fn transition(
    run: &RunRow,
    event: RunEvent,
    doing: &str,
) -> Result<RunState, LifecycleError> {
    run.state
        .transition(event)
        .map_err(|_| wrong_state(run, doing))
}

fn wrong_state(run: &RunRow, doing: &str) -> LifecycleError {
    let code = match run.state {
        RunState::Invalidated => "run_invalidated",
        RunState::Queued
        | RunState::Running
        | RunState::Succeeded
        | RunState::Failed
        | RunState::PartiallyFailed
            if doing == "execute" =>
        {
            "already_executed"
        }
        _ => "invalid_state",
    };
    LifecycleError::conflict(code, format!("the run is {}; it cannot {doing}", run.state))
}
