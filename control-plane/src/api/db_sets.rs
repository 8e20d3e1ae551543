//! The routes of `db_sets` over [`crate::service::db_sets`].

use axum::{Json, extract::State, http::StatusCode};
use common::{domain::Capability, store::inventory::DbSetRow};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    routes::{Access, Routes},
    service::{
        db_sets::{UpdateDbSet, delete_db_set, update_db_set},
        inventory::db_set,
        snapshots::{FleetSchema, fleet_schema},
    },
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .patch(
            "/projects/{slug}/db-sets/{id}",
            Access::Needs(Capability::ManageTargets),
            update,
        )
        .delete(
            "/projects/{slug}/db-sets/{id}",
            Access::Needs(Capability::ManageTargets),
            delete,
        )
        .get(
            "/projects/{slug}/db-sets/{id}/schema",
            Access::Needs(Capability::View),
            schema,
        )
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/db-sets/{id}/schema", tag = "db-sets",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The DB set's id"),
    ),
    responses(
        (status = 200, description = "Fleet consistency: the DB set's targets grouped by their newest schema snapshot within each version, each outlying group with its diff against the majority", body = FleetSchema),
        (status = 404, description = "`not_found`: no such project or DB set", body = ErrorBody),
    ))]
pub(crate) async fn schema(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<Json<FleetSchema>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (_, set) = db_set(&mut conn, &slug, id).await?;
    drop(conn);
    Ok(Json(fleet_schema(&state, set.id).await?))
}

#[utoipa::path(patch, path = "/api/v1/projects/{slug}/db-sets/{id}", tag = "db-sets",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The DB set's id"),
    ),
    request_body = UpdateDbSet,
    responses(
        (status = 200, description = "The DB set", body = DbSetRow),
        (status = 404, description = "`not_found`: no such project or DB set", body = ErrorBody),
        (status = 409, description = "`duplicate_name`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `name`, another `environment`, or a `maintenance_window` off the grammar", body = ErrorBody),
    ))]
pub(crate) async fn update(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
    ApiJson(body): ApiJson<UpdateDbSet>,
) -> Result<Json<DbSetRow>, ApiError> {
    Ok(Json(update_db_set(&state, &user, &slug, id, &body).await?))
}

#[utoipa::path(delete, path = "/api/v1/projects/{slug}/db-sets/{id}", tag = "db-sets",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The DB set's id"),
    ),
    responses(
        (status = 204, description = "Deleted with its targets; its waiting runs are invalidated"),
        (status = 404, description = "`not_found`: no such project or DB set", body = ErrorBody),
        (status = 409, description = "`run_in_progress`: a run of the DB set is queued or running", body = ErrorBody),
    ))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<StatusCode, ApiError> {
    delete_db_set(&state, &user, &slug, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
