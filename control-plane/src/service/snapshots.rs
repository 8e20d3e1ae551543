//! Schema snapshots for people: what a run changed on one target.

use common::{
    domain::schema::{self, SchemaDiff},
    store::snapshots::{self, SnapshotRow},
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// What one run changed on one target: the target's snapshot before the
/// execution and after it, and their difference.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetSchemaChange {
    pub run_id: Uuid,
    pub target_id: Uuid,
    pub target_name: String,
    pub execution_id: Uuid,
    /// The target's schema before the execution (its own snapshot taken
    /// then, else the newest earlier one); `null` when the hub has none.
    pub before: Option<SnapshotRow>,
    /// The snapshot taken after the execution; `null` while it runs or when
    /// none could be taken.
    pub after: Option<SnapshotRow>,
    /// `null` unless both snapshots exist.
    pub diff: Option<SchemaDiff>,
}

/// What the run `run_id` changed on `target_id`; 404 when the run has no
/// execution on that target.
pub async fn run_target_change(
    state: &AppState,
    run_id: Uuid,
    target_id: Uuid,
) -> Result<TargetSchemaChange, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (execution_id, target_name) = snapshots::execution_of(&mut conn, run_id, target_id)
        .await?
        .ok_or(ApiError::NotFound("target execution"))?;
    let (before, after) = snapshots::around_execution(&mut conn, target_id, execution_id).await?;
    let diff = match (&before, &after) {
        (Some(b), Some(a)) => {
            let old = snapshots::text(&mut conn, &b.hash)
                .await?
                .unwrap_or_default();
            let new = if a.hash == b.hash {
                old.clone()
            } else {
                snapshots::text(&mut conn, &a.hash)
                    .await?
                    .unwrap_or_default()
            };
            Some(schema::diff(&old, &new))
        }
        _ => None,
    };
    Ok(TargetSchemaChange {
        run_id,
        target_id,
        target_name,
        execution_id,
        before,
        after,
        diff,
    })
}
