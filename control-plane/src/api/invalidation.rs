//! Inventory changes that invalidate runs (rule 2): an approval covers the
//! DB set's targets and the environment's timeouts, so changing either
//! invalidates every run of that scope still waiting for approval or
//! execution — in the transaction of the change itself.
//!
//! Two steps, because audit rows come last in a transaction: the audit head
//! is locked from the first append until commit, and waiting for a run's
//! row lock while holding it could deadlock with an approval that holds the
//! run and waits for the head.

use common::store::{
    audit,
    runs::{self, InvalidatedRun, RunScope},
    webhooks,
};
use serde_json::json;
use sqlx::PgConnection;

use crate::{auth::CurrentUser, error::ApiError};

/// Step 1, before any audit row: invalidates the runs of `scope`.
pub async fn invalidate_runs(
    conn: &mut PgConnection,
    user: &CurrentUser,
    scope: RunScope<'_>,
    reason: &str,
) -> Result<Vec<InvalidatedRun>, ApiError> {
    Ok(runs::invalidate_where(conn, scope, reason, Some(user.id)).await?)
}

/// Step 2, with the other audit rows at the end: one `run.invalidated` row
/// per run.
pub async fn audit_invalidated(
    conn: &mut PgConnection,
    user: &CurrentUser,
    invalidated: &[InvalidatedRun],
    reason: &str,
) -> Result<(), ApiError> {
    for run in invalidated {
        webhooks::notify_run(conn, run.id, "invalidated").await?;
        audit::append(
            conn,
            &user
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
