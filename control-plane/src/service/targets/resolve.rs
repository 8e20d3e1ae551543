//! Resolving a dirty target (admins): after looking at the target, an admin
//! states whether the interrupted migration counts as applied or as rolled
//! back. The target's history and the hub's applied state are brought to
//! that answer, the dirty mark is cleared, and the decision is audited.
//! Or the admin resumes the script: the run that left the target dirty
//! queues its execution again, and its worker continues from the statement
//! that stopped (or the one after it) once it has proven that the applied
//! prefix is unchanged.

use common::{
    lifecycle,
    targets::{self, HistoryChange},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::live::{WAIT, reach};
use crate::{auth::CurrentUser, error::ApiError, input::required_text, state::AppState};

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResolveBody {
    /// The version the target is dirty at.
    pub version: String,
    /// `applied` or `rolled_back`: what the interrupted migration counts as;
    /// or `resume`: continue its script on the target.
    #[serde(rename = "as")]
    pub outcome: String,
    /// Required: why, for the audit log.
    #[serde(default)]
    pub reason: String,
    /// For `as: "resume"`: the 1-based statement to continue from; the one
    /// that stopped when absent.
    #[serde(default)]
    pub from_statement: Option<i32>,
}

/// The decision, as recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resolved {
    pub target_id: Uuid,
    pub version: String,
    /// `applied`, `rolled_back` or `resume`, as asked.
    #[serde(rename = "as")]
    pub outcome: String,
    /// Whether the version now counts as applied on the target (for a
    /// resume: not until its worker has finished the script).
    pub applied: bool,
    /// For a resume: the run whose execution on the target was queued again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<Uuid>,
    /// For a resume: the 1-based statement the script continues from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_statement: Option<i32>,
}

pub async fn resolve_target(
    state: &AppState,
    admin: &CurrentUser,
    id: Uuid,
    body: ResolveBody,
) -> Result<Resolved, ApiError> {
    let applied = match body.outcome.as_str() {
        "applied" => true,
        "rolled_back" => false,
        "resume" => return resume_target(state, admin, id, body).await,
        _ => {
            return Err(ApiError::invalid(
                "as",
                "must be applied, rolled_back or resume",
            ));
        }
    };
    let reason = required_text("reason", &body.reason, 2000)?;
    let (scoped, reachable) = reach(state, id).await?;
    let caller = admin.caller();
    let mut tx = state.db.begin().await?;
    let decision = lifecycle::lock_dirty(&mut tx, id, &body.version).await?;
    let (dirty, pinned) = &decision;
    let now_applied = lifecycle::resolve::now_applied(dirty, applied)?;

    // The target first: if it cannot be reached, nothing changes anywhere.
    let (endpoint, password) =
        reachable.map_err(|e| ApiError::conflict("target_unreachable", e))?;
    let change = if now_applied {
        HistoryChange::Record {
            version: &dirty.version,
            checksum: &pinned.checksum,
            name: &pinned.name,
            run_id: dirty.run_id,
        }
    } else {
        HistoryChange::Forget {
            version: &dirty.version,
        }
    };
    targets::change_history(
        scoped.target.engine,
        &endpoint,
        password.as_ref(),
        WAIT,
        &change,
    )
    .await
    .map_err(|e| ApiError::conflict("target_unreachable", e))?;

    lifecycle::resolve(&mut tx, &caller, id, &decision, &body.outcome, &reason).await?;
    tx.commit().await?;
    Ok(Resolved {
        target_id: id,
        version: decision.0.version,
        outcome: body.outcome,
        applied: now_applied,
        run_id: None,
        execution_id: None,
        from_statement: None,
    })
}

/// Queues the dirty run's execution on the target again, to continue its
/// script from `from_statement`. Nothing touches the target here: the
/// worker proves the applied prefix under the target lock before it runs
/// anything.
async fn resume_target(
    state: &AppState,
    admin: &CurrentUser,
    id: Uuid,
    body: ResolveBody,
) -> Result<Resolved, ApiError> {
    let reason = required_text("reason", &body.reason, 2000)?;
    let mut tx = state.db.begin().await?;
    let resumed = lifecycle::resume(
        &mut tx,
        &admin.caller(),
        id,
        &body.version,
        body.from_statement,
        &reason,
    )
    .await?;
    tx.commit().await?;
    Ok(Resolved {
        target_id: id,
        version: resumed.version,
        outcome: body.outcome,
        applied: false,
        run_id: Some(resumed.run_id),
        execution_id: Some(resumed.execution_id),
        from_statement: Some(resumed.from_statement),
    })
}
