//! The routes of `targets::resolve` over [`crate::service::targets::resolve`].

use axum::{Json, extract::State};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    service::targets::resolve::{ResolveBody, Resolved, resolve_target},
    state::AppState,
};

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
