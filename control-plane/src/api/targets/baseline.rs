//! The routes of `targets::baseline` over [`crate::service::targets::baseline`].

use axum::{Json, extract::State};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody},
    service::targets::baseline::{BaselineBody, Baselined, baseline_target},
    state::AppState,
};

#[utoipa::path(post, path = "/api/v1/targets/{id}/baseline", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    request_body = BaselineBody,
    responses(
        (status = 200, description = "Baselined: the versions are recorded as applied in the hub and the target's migrate_hub_history", body = Baselined),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = BASELINE_CONFLICTS, body = ErrorBody),
        (status = 422, description = "`invalid_field`: `version`, `from` or `table`", body = ErrorBody),
    ))]
pub(crate) async fn record(
    State(state): State<AppState>,
    admin: Authorized<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<BaselineBody>,
) -> Result<Json<Baselined>, ApiError> {
    baseline_target(&state, &admin, id, &body, true)
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/api/v1/targets/{id}/baseline", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id"), BaselineBody),
    responses(
        (status = 200, description = "What a baseline would record (`dry_run: true`)", body = Baselined),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = BASELINE_CONFLICTS, body = ErrorBody),
        (status = 422, description = "`invalid_field`: `version`, `from` or `table`", body = ErrorBody),
    ))]
pub(crate) async fn preview(
    State(state): State<AppState>,
    admin: Authorized<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(body): ApiQuery<BaselineBody>,
) -> Result<Json<Baselined>, ApiError> {
    baseline_target(&state, &admin, id, &body, false)
        .await
        .map(Json)
}

const BASELINE_CONFLICTS: &str = "`target_not_empty`, `target_dirty`, `external_dirty`, `baseline_mismatch`, \
`nothing_to_baseline`, `external_table_not_found`, `target_busy`, `target_unreachable`, `target_error`: nothing changed";
