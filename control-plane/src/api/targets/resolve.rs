//! Resolving a dirty target (admins): after looking at the target, an admin
//! states whether the interrupted migration counts as applied or as rolled
//! back. The target's history and the hub's applied state are brought to
//! that answer, the dirty mark is cleared, and the decision is audited.
//! Resuming from the next statement is not offered yet.

use axum::{Json, extract::State};
use common::{
    domain::Direction,
    store::audit,
    targets::{self, HistoryChange},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::live::{WAIT, reach};
use crate::{
    api::required_text,
    app::AppState,
    auth::{Authorized, CurrentUser, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResolveBody {
    /// The version the target is dirty at.
    pub version: String,
    /// `applied` or `rolled_back`: what the interrupted migration counts as.
    #[serde(rename = "as")]
    pub outcome: String,
    /// Required: why, for the audit log.
    #[serde(default)]
    pub reason: String,
}

/// The decision, as recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resolved {
    pub target_id: Uuid,
    pub version: String,
    /// `applied` or `rolled_back`, as asked.
    #[serde(rename = "as")]
    pub outcome: String,
    /// Whether the version now counts as applied on the target.
    pub applied: bool,
}

#[utoipa::path(post, path = "/api/v1/targets/{id}/resolve", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "Resolved: the target's history and the hub agree, the dirty mark is cleared", body = Resolved),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`target_not_dirty`; `target_unreachable`: nothing changed", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `version`, `as` or `reason`", body = ErrorBody),
    ))]
pub(crate) async fn resolve(
    State(state): State<AppState>,
    admin: Authorized<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Result<Json<Resolved>, ApiError> {
    resolve_target(&state, &admin, id, body).await.map(Json)
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
        _ => return Err(ApiError::invalid("as", "must be applied or rolled_back")),
    };
    let reason = required_text("reason", &body.reason, 2000)?;
    let (scoped, reachable) = reach(state, id).await?;
    let mut tx = state.db.begin().await?;
    let dirty: Option<(Uuid, String, String, i32)> = sqlx::query_as(
        "SELECT run_id, version, direction, statement_index FROM target_dirty_states WHERE target_id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((run_id, version, direction, statement)) = dirty else {
        return Err(ApiError::conflict(
            "target_not_dirty",
            "the target is not dirty; there is nothing to resolve",
        ));
    };
    if body.version.trim() != version {
        return Err(ApiError::invalid(
            "version",
            format!("the target is dirty at version {version}"),
        ));
    }
    let direction: Direction = direction
        .parse()
        .map_err(|_| anyhow::anyhow!("stored direction is invalid"))?;
    let (migration_id, checksum, name, project_id): (Uuid, String, String, Uuid) = sqlx::query_as(
        "SELECT m.id, rm.checksum, m.name, m.project_id FROM run_migrations rm JOIN migrations m ON m.id = rm.migration_id
         WHERE rm.run_id = $1 AND rm.version = $2",
    )
    .bind(run_id)
    .bind(&version)
    .fetch_one(&mut *tx)
    .await?;
    // Applied after an `up`, or a `down` that counts as not having happened.
    let now_applied = (direction == Direction::Up) == applied;

    // The target first: if it cannot be reached, nothing changes anywhere.
    let (endpoint, password) =
        reachable.map_err(|e| ApiError::conflict("target_unreachable", e))?;
    let change = if now_applied {
        HistoryChange::Record {
            version: &version,
            checksum: &checksum,
            name: &name,
            run_id,
        }
    } else {
        HistoryChange::Forget { version: &version }
    };
    targets::change_history(
        &scoped.target.engine,
        &endpoint,
        password.as_ref(),
        WAIT,
        &change,
    )
    .await
    .map_err(|e| ApiError::conflict("target_unreachable", e))?;

    let key: Vec<String> = common::domain::Version::parse(&version)
        .map_err(|_| anyhow::anyhow!("stored version is invalid"))?
        .sort_key();
    if now_applied {
        sqlx::query(
            "INSERT INTO applied_migrations (target_id, version, version_key, migration_id, checksum, run_id)
             VALUES ($1, $2, $3::numeric[], $4, $5, $6) ON CONFLICT (target_id, version) DO NOTHING",
        )
        .bind(id)
        .bind(&version)
        .bind(&key)
        .bind(migration_id)
        .bind(&checksum)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    } else {
        sqlx::query("DELETE FROM applied_migrations WHERE target_id = $1 AND version = $2")
            .bind(id)
            .bind(&version)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("DELETE FROM target_dirty_states WHERE target_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        &admin
            .audit("target.resolved", "target", id)
            .project(project_id)
            .details(json!({
                "version": version,
                "as": body.outcome,
                "direction": direction,
                "statement_reached": statement,
                "reason": reason,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(Resolved {
        target_id: id,
        version,
        outcome: body.outcome,
        applied: now_applied,
    })
}
