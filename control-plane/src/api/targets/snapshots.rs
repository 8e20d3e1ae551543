//! A target's schema snapshots: the history, the schema at one of them
//! (searchable), and the difference between two.

use axum::{Json, extract::State};
use common::{domain::schema::SchemaDiff, store::snapshots::SnapshotRow};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiPath, ApiQuery, ErrorBody},
    service::snapshots::{TargetSchema, target_schema, target_schema_diff, target_snapshots},
    state::AppState,
};

#[derive(Debug, Default, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct SchemaQuery {
    /// A snapshot of the target (default: its newest).
    pub snapshot: Option<Uuid>,
    /// Only the objects whose definition mentions this text (any case).
    pub q: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The earlier snapshot.
    pub from: Uuid,
    /// The later snapshot.
    pub to: Uuid,
}

#[utoipa::path(get, path = "/api/v1/targets/{id}/snapshots", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    responses(
        (status = 200, description = "The target's schema snapshots, newest first (at most 100)", body = Vec<SnapshotRow>),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Vec<SnapshotRow>>, ApiError> {
    Ok(Json(target_snapshots(&state, id).await?))
}

#[utoipa::path(get, path = "/api/v1/targets/{id}/schema", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id"), SchemaQuery),
    responses(
        (status = 200, description = "The target's schema at a snapshot (its newest by default), only the objects mentioning `q` when given", body = TargetSchema),
        (status = 404, description = "`not_found`: no such target, or no such snapshot of it", body = ErrorBody),
    ))]
pub(crate) async fn schema(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<SchemaQuery>,
) -> Result<Json<TargetSchema>, ApiError> {
    Ok(Json(
        target_schema(&state, id, query.snapshot, query.q.as_deref()).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/targets/{id}/schema/diff", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id"), DiffQuery),
    responses(
        (status = 200, description = "How the target's schema differs between two of its snapshots", body = SchemaDiff),
        (status = 404, description = "`not_found`: no such target, or no such snapshot of it", body = ErrorBody),
    ))]
pub(crate) async fn diff(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DiffQuery>,
) -> Result<Json<SchemaDiff>, ApiError> {
    Ok(Json(
        target_schema_diff(&state, id, query.from, query.to).await?,
    ))
}
