//! Schema drift for people: whether a target's schema still is what its
//! baseline says, the difference when it is not, and an admin's acceptance
//! of the drift as the new baseline.

use common::{
    domain::schema::{self, SchemaDiff},
    lifecycle,
    store::{
        schema_drift::{self as store, Flagged},
        snapshots,
    },
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{auth::CurrentUser, error::ApiError, input::required_text, state::AppState};

/// A target's drift state.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetDrift {
    pub target_id: Uuid,
    /// Whether a scan found the target's schema different from its
    /// baseline (and it was neither reverted nor accepted since).
    pub drifted: bool,
    /// The environment's policy: `warn` or `block`.
    pub on_drift: String,
    /// When a scan last read the target (`null`: never).
    #[serde(with = "time::serde::rfc3339::option")]
    pub scanned_at: Option<OffsetDateTime>,
    /// Why the last scan could not read it (`null`: it could).
    pub scan_error: Option<String>,
    /// The drift: the baseline and the reading that differs from it.
    pub drift: Option<Flagged>,
    /// How the reading differs from the baseline.
    pub diff: Option<SchemaDiff>,
}

pub async fn target_drift(state: &AppState, target_id: Uuid) -> Result<TargetDrift, ApiError> {
    let mut conn = state.db.acquire().await?;
    common::store::inventory::target(&mut conn, target_id)
        .await?
        .ok_or(ApiError::NotFound("target"))?;
    let (scanned_at, scan_error) = store::scan_state(&mut conn, target_id).await?;
    let on_drift = store::policy(&mut conn, target_id).await?;
    let drift = store::flagged(&mut conn, target_id).await?;
    let diff = match &drift {
        Some(flagged) => {
            let before = snapshots::text(&mut conn, &flagged.baseline_hash).await?;
            let after = snapshots::text(&mut conn, &flagged.snapshot_hash).await?;
            Some(schema::diff(
                &before.unwrap_or_default(),
                &after.unwrap_or_default(),
            ))
        }
        None => None,
    };
    Ok(TargetDrift {
        target_id,
        drifted: drift.is_some(),
        on_drift: on_drift.to_string(),
        scanned_at,
        scan_error,
        drift,
        diff,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct AcceptDriftBody {
    /// Required: why the drifted schema is right, for the audit log.
    #[serde(default)]
    pub reason: String,
}

/// The acceptance, as recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedDrift {
    pub target_id: Uuid,
    /// The new baseline: an `accepted` snapshot of the drifted schema.
    pub baseline_snapshot_id: Uuid,
    /// The baseline the target had drifted from.
    pub previous_baseline_snapshot_id: Uuid,
}

pub async fn accept_drift(
    state: &AppState,
    admin: &CurrentUser,
    target_id: Uuid,
    body: AcceptDriftBody,
) -> Result<AcceptedDrift, ApiError> {
    let reason = required_text("reason", &body.reason, 2000)?;
    let mut tx = state.db.begin().await?;
    let (flagged, accepted) =
        lifecycle::schema_drift::accept(&mut tx, &admin.caller(), target_id, &reason).await?;
    tx.commit().await?;
    Ok(AcceptedDrift {
        target_id,
        baseline_snapshot_id: accepted,
        previous_baseline_snapshot_id: flagged.baseline_id,
    })
}
