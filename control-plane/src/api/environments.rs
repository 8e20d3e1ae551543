//! The routes of `environments` over [`crate::service::environments`].

use axum::{Json, extract::State, http::StatusCode};
use common::{domain::Capability, store::inventory::EnvironmentRow};

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    routes::{Access, Routes},
    service::environments::{EnvironmentInput, create_environment, update_environment},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .post(
            "/environments",
            Access::Needs(Capability::ManageProjects),
            create,
        )
        .patch(
            "/environments/{name}",
            Access::Needs(Capability::ManageProjects),
            update,
        )
}

#[utoipa::path(post, path = "/api/v1/environments", tag = "environments",
    request_body = EnvironmentInput,
    responses(
        (status = 201, description = "The environment", body = EnvironmentRow),
        (status = 409, description = "`duplicate_name`, `duplicate_position`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the field at fault", body = ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    admin: Authorized<rules::ManageProjects>,
    ApiJson(body): ApiJson<EnvironmentInput>,
) -> Result<(StatusCode, Json<EnvironmentRow>), ApiError> {
    let env = create_environment(&state, &admin, &body).await?;
    Ok((StatusCode::CREATED, Json(env)))
}

#[utoipa::path(patch, path = "/api/v1/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "The environment's name")),
    request_body = EnvironmentInput,
    responses(
        (status = 200, description = "The environment; new timeouts invalidate its waiting runs", body = EnvironmentRow),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`duplicate_position`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the field at fault (a `name` other than the current one)", body = ErrorBody),
    ))]
pub(crate) async fn update(
    State(state): State<AppState>,
    admin: Authorized<rules::ManageProjects>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<EnvironmentInput>,
) -> Result<Json<EnvironmentRow>, ApiError> {
    Ok(Json(
        update_environment(&state, &admin, &name, &body).await?,
    ))
}
