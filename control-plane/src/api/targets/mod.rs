//! The routes of `targets` over [`crate::service::targets`].

use axum::{Json, extract::State, http::StatusCode};
use common::{domain::Capability, store::inventory::TargetRow};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    routes::{Access, Routes},
    service::targets::{TargetPatch, delete_target, update_target},
    state::AppState,
};

pub mod baseline;
pub mod bulk;
pub mod drift;
pub mod live;
pub mod resolve;
pub mod snapshots;

pub fn router() -> Routes {
    Routes::new()
        .patch(
            "/targets/{id}",
            Access::Needs(Capability::ManageTargets),
            update,
        )
        .delete(
            "/targets/{id}",
            Access::Needs(Capability::ManageTargets),
            delete,
        )
        .post(
            "/targets/{id}/test",
            Access::Needs(Capability::ManageTargets),
            live::test,
        )
        .get(
            "/targets/{id}/state",
            Access::Needs(Capability::View),
            live::state,
        )
        .get(
            "/targets/{id}/snapshots",
            Access::Needs(Capability::View),
            snapshots::list,
        )
        .get(
            "/targets/{id}/schema",
            Access::Needs(Capability::View),
            snapshots::schema,
        )
        .get(
            "/targets/{id}/schema/diff",
            Access::Needs(Capability::View),
            snapshots::diff,
        )
        .get(
            "/targets/{id}/drift",
            Access::Needs(Capability::View),
            drift::show,
        )
        .post(
            "/targets/{id}/drift/accept",
            Access::Needs(Capability::Administer),
            drift::accept,
        )
        .post(
            "/targets/{id}/resolve",
            Access::Needs(Capability::Administer),
            resolve::resolve,
        )
        .post(
            "/targets/{id}/baseline",
            Access::Needs(Capability::Administer),
            baseline::record,
        )
        .get(
            "/targets/{id}/baseline",
            Access::Needs(Capability::Administer),
            baseline::preview,
        )
        .post(
            "/projects/{slug}/db-sets/{id}/targets/bulk",
            Access::Needs(Capability::ManageTargets),
            bulk::create,
        )
}

#[utoipa::path(patch, path = "/api/v1/targets/{id}", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    request_body = TargetPatch,
    responses(
        (status = 200, description = "The target; changing how it is reached invalidates its DB set's waiting runs", body = TargetRow),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`duplicate_name`; `run_in_progress`: a run of its DB set is queued or running", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the field at fault", body = ErrorBody),
    ))]
pub(crate) async fn update(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<TargetPatch>,
) -> Result<Json<TargetRow>, ApiError> {
    Ok(Json(update_target(&state, &user, id, &body).await?))
}

#[utoipa::path(delete, path = "/api/v1/targets/{id}", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    responses(
        (status = 204, description = "Removed from its DB set; the set's waiting runs are invalidated"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`run_in_progress`: a run of its DB set is queued or running", body = ErrorBody),
    ))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    delete_target(&state, &user, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
