//! Resolving a dirty target (admins): after looking at the target, an admin
//! states whether the interrupted migration counts as applied or as rolled
//! back. The target's history and the hub's applied state are brought to
//! that answer, the dirty mark is cleared, and the decision is audited.
//! Or the admin resumes the script: the run that left the target dirty
//! queues its execution again, and its worker continues from the statement
//! that stopped (or the one after it) once it has proven that the applied
//! prefix is unchanged.

use axum::{Json, extract::State};
use common::{
    domain::{Direction, resume},
    store::{audit, target_state},
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

#[utoipa::path(post, path = "/api/v1/targets/{id}/resolve", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "Resolved: the target's history and the hub agree, the dirty mark is cleared; or, for `resume`, the run's execution on the target is queued again", body = Resolved),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`target_not_dirty`; `target_unreachable`: nothing changed; `run_not_resumable`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `version`, `as`, `reason` or `from_statement`", body = ErrorBody),
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
    let mut tx = state.db.begin().await?;
    let (run_id, version, direction, statement) = locked_dirty(&mut tx, id, &body.version).await?;
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
        scoped.target.engine,
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
    let (run_id, version, _, statement) = locked_dirty(&mut tx, id, &body.version).await?;
    let from = resume::resume_from(statement, body.from_statement)
        .map_err(|e| ApiError::invalid("from_statement", e.to_string()))?;
    let Some(execution_id) = target_state::request_resume(&mut tx, id, run_id, from).await? else {
        return Err(ApiError::conflict(
            "run_not_resumable",
            "the run that left the target dirty is not waiting for a resume (its execution on \
             the target is still running, or the run was cancelled); resolve the target as \
             applied or rolled back instead",
        ));
    };
    let project_id: Uuid = sqlx::query_scalar("SELECT project_id FROM runs WHERE id = $1")
        .bind(run_id)
        .fetch_one(&mut *tx)
        .await?;
    audit::append(
        &mut tx,
        &admin
            .audit("target.resume_requested", "target", id)
            .project(project_id)
            .details(json!({
                "version": version,
                "run_id": run_id,
                "execution_id": execution_id,
                "statement_reached": statement,
                "from_statement": from,
                "reason": reason,
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(Resolved {
        target_id: id,
        version,
        outcome: body.outcome,
        applied: false,
        run_id: Some(run_id),
        execution_id: Some(execution_id),
        from_statement: Some(from),
    })
}

/// The target's dirty mark (run, version, direction, statement reached),
/// locked for the decision; refused when there is none or the admin named
/// another version.
async fn locked_dirty(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    asked: &str,
) -> Result<(Uuid, String, String, i32), ApiError> {
    let dirty: Option<(Uuid, String, String, i32)> = sqlx::query_as(
        "SELECT run_id, version, direction, statement_index FROM target_dirty_states WHERE target_id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(dirty) = dirty else {
        return Err(ApiError::conflict(
            "target_not_dirty",
            "the target is not dirty; there is nothing to resolve",
        ));
    };
    if asked.trim() != dirty.1 {
        return Err(ApiError::invalid(
            "version",
            format!("the target is dirty at version {}", dirty.1),
        ));
    }
    Ok(dirty)
}
