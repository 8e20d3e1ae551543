//! The routes of `targets::live` over [`crate::service::targets::live`].

use axum::{Json, extract::State};
use common::targets::Probe;
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiPath, ErrorBody},
    service::targets::live::{TargetStateView, target_state, test_connection},
    state::AppState,
};

#[utoipa::path(post, path = "/api/v1/targets/{id}/test", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    responses(
        (status = 200, description = "What the connection test found; a failure is `ok: false` with the driver's message", body = Probe),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn test(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Probe>, ApiError> {
    Ok(Json(test_connection(&state, &user, id).await?))
}

#[utoipa::path(get, path = "/api/v1/targets/{id}/state", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    responses(
        (status = 200, description = "Applied versions, dirty flag and live drift", body = TargetStateView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn state(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<TargetStateView>, ApiError> {
    Ok(Json(target_state(&state, id).await?))
}
