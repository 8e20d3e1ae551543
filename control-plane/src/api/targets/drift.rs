//! The routes of a target's schema drift over
//! [`crate::service::schema_drift`].

use axum::{Json, extract::State};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    service::schema_drift::{
        AcceptDriftBody, AcceptedDrift, TargetDrift, accept_drift, target_drift,
    },
    state::AppState,
};

#[utoipa::path(get, path = "/api/v1/targets/{id}/drift", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    responses(
        (status = 200, description = "Whether the target's schema has drifted from its baseline, with the difference, and its last scan", body = TargetDrift),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn show(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<TargetDrift>, ApiError> {
    Ok(Json(target_drift(&state, id).await?))
}

#[utoipa::path(post, path = "/api/v1/targets/{id}/drift/accept", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    request_body = AcceptDriftBody,
    responses(
        (status = 200, description = "Accepted: the drifted schema is the target's new baseline, the flag is cleared (audited `target.drift_accepted`)", body = AcceptedDrift),
        (status = 403, description = "`forbidden`: admins only", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_drifted`: nothing to accept", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `reason`", body = ErrorBody),
    ))]
pub(crate) async fn accept(
    State(state): State<AppState>,
    admin: Authorized<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AcceptDriftBody>,
) -> Result<Json<AcceptedDrift>, ApiError> {
    accept_drift(&state, &admin, id, body).await.map(Json)
}
