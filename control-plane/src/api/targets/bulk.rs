//! The routes of `targets::bulk` over [`crate::service::targets::bulk`].

use axum::{Json, extract::State, http::StatusCode};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    service::targets::bulk::{BulkCreated, BulkTargets, create_targets},
    state::AppState,
};

#[utoipa::path(post, path = "/api/v1/projects/{slug}/db-sets/{id}/targets/bulk", tag = "targets",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The DB set's id"),
    ),
    request_body = BulkTargets,
    responses(
        (status = 201, description = "Every target added, in one transaction", body = BulkCreated),
        (status = 404, description = "`not_found`: no such project or DB set", body = ErrorBody),
        (status = 409, description = "`duplicate_name`: a name exists in the DB set", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the entry at fault (`targets[3].port`, `lines[7]`); nothing was added", body = ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
    ApiJson(body): ApiJson<BulkTargets>,
) -> Result<(StatusCode, Json<BulkCreated>), ApiError> {
    let items = create_targets(&state, &user, &slug, id, &body).await?;
    Ok((
        StatusCode::CREATED,
        Json(BulkCreated {
            count: items.len(),
            items,
        }),
    ))
}
