//! The routes of `projects` over [`crate::service::projects`].

use axum::{Json, extract::State, http::StatusCode};
use common::{domain::Capability, store::inventory::ProjectRow};

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    routes::{Access, Routes},
    service::projects::{UpdateProject, archive_project, update_project},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .patch(
            "/projects/{slug}",
            Access::Needs(Capability::ManageProjects),
            update,
        )
        .delete(
            "/projects/{slug}",
            Access::Needs(Capability::ManageProjects),
            archive,
        )
}

#[utoipa::path(patch, path = "/api/v1/projects/{slug}", tag = "projects",
    params(("slug" = String, Path, description = "The project's slug")),
    request_body = UpdateProject,
    responses(
        (status = 200, description = "The project", body = ProjectRow),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `name` or `description`", body = ErrorBody),
    ))]
pub(crate) async fn update(
    State(state): State<AppState>,
    admin: Authorized<rules::ManageProjects>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateProject>,
) -> Result<Json<ProjectRow>, ApiError> {
    Ok(Json(update_project(&state, &admin, &slug, &body).await?))
}

#[utoipa::path(delete, path = "/api/v1/projects/{slug}", tag = "projects",
    params(("slug" = String, Path, description = "The project's slug")),
    responses(
        (status = 204, description = "Archived; its waiting runs are invalidated"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`run_in_progress`: a run of the project is queued or running", body = ErrorBody),
    ))]
pub(crate) async fn archive(
    State(state): State<AppState>,
    admin: Authorized<rules::ManageProjects>,
    ApiPath(slug): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    archive_project(&state, &admin, &slug).await?;
    Ok(StatusCode::NO_CONTENT)
}
