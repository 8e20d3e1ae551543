//! The routes of `inventory` over [`crate::service::inventory`].

use axum::{Json, extract::State, http::StatusCode};
use common::domain::{Capability, fleet::Sort};
use common::store::{
    inventory::{self, DbSetRow, EnvironmentRow, ProjectRow, TargetRow},
    workers::{self, WorkerRow},
};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody},
    paging::{Page, PageQuery},
    routes::{Access, Routes},
    service::{
        inventory::{
            CreateDbSet, CreateProject, DbSetView, create_db_set, create_project, db_set,
            db_set_view, project,
        },
        targets::{self, TargetInput},
    },
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/environments",
            Access::Needs(Capability::View),
            list_environments,
        )
        .get("/projects", Access::Needs(Capability::View), list_projects)
        .post(
            "/projects",
            Access::Needs(Capability::ManageProjects),
            post_project,
        )
        .get(
            "/projects/{slug}",
            Access::Needs(Capability::View),
            get_project,
        )
        .get(
            "/projects/{slug}/db-sets",
            Access::Needs(Capability::View),
            list_db_sets,
        )
        .post(
            "/projects/{slug}/db-sets",
            Access::Needs(Capability::ManageTargets),
            post_db_set,
        )
        .get(
            "/projects/{slug}/db-sets/{id}",
            Access::Needs(Capability::View),
            get_db_set,
        )
        .get(
            "/projects/{slug}/db-sets/{id}/targets",
            Access::Needs(Capability::View),
            list_targets,
        )
        .post(
            "/projects/{slug}/db-sets/{id}/targets",
            Access::Needs(Capability::ManageTargets),
            create_target,
        )
        .get("/targets/{id}", Access::Needs(Capability::View), get_target)
        .get(
            "/workers",
            Access::Needs(Capability::Administer),
            list_workers,
        )
}

#[utoipa::path(get, path = "/api/v1/environments", tag = "environments",
    responses((status = 200, description = "Every environment in promotion order, whole", body = Page<EnvironmentRow>)))]
pub(crate) async fn list_environments(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
) -> Result<Json<Page<EnvironmentRow>>, ApiError> {
    Ok(Json(Page::all(
        inventory::list_environments(&state.db).await?,
    )))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects",
    request_body = CreateProject,
    responses(
        (status = 201, description = "The project", body = ProjectRow),
        (status = 409, description = "`duplicate_slug`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `slug`, `name` or `description`", body = ErrorBody),
    ))]
pub(crate) async fn post_project(
    State(state): State<AppState>,
    admin: Authorized<rules::ManageProjects>,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<ProjectRow>), ApiError> {
    let project = create_project(&state, &admin, &body).await?;
    Ok((StatusCode::CREATED, Json(project)))
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of live projects, by slug", body = Page<ProjectRow>),
        (status = 400, description = "`bad_request`: a malformed query string", body = ErrorBody),
    ))]
pub(crate) async fn list_projects(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<ProjectRow>>, ApiError> {
    let limit = page.limit();
    let rows = inventory::list_projects(&state.db, page.cursor.as_deref(), limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |p| p.slug.clone())))
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}", tag = "projects",
    params(("slug" = String, Path, description = "The project's slug")),
    responses(
        (status = 200, description = "The project", body = ProjectRow),
        (status = 404, description = "`not_found`: no live project with this slug", body = ErrorBody),
    ))]
pub(crate) async fn get_project(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<ProjectRow>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(Json(project(&mut conn, &slug).await?))
}

#[utoipa::path(post, path = "/api/v1/projects/{slug}/db-sets", tag = "db-sets",
    params(("slug" = String, Path, description = "The project's slug")),
    request_body = CreateDbSet,
    responses(
        (status = 201, description = "The DB set", body = DbSetRow),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
        (status = 409, description = "`duplicate_name`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `name`, or an unknown `environment`", body = ErrorBody),
    ))]
pub(crate) async fn post_db_set(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<CreateDbSet>,
) -> Result<(StatusCode, Json<DbSetRow>), ApiError> {
    let set = create_db_set(&state, &user, &slug, &body).await?;
    Ok((StatusCode::CREATED, Json(set)))
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/db-sets", tag = "db-sets",
    params(("slug" = String, Path, description = "The project's slug")),
    responses(
        (status = 200, description = "The project's DB sets, whole", body = Page<DbSetRow>),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn list_db_sets(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<Page<DbSetRow>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    Ok(Json(Page::all(
        inventory::list_db_sets(&state.db, project.id).await?,
    )))
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/db-sets/{id}", tag = "db-sets",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The DB set's id"),
        DbSetQuery,
    ),
    responses(
        (status = 200, description = "The DB set with its targets, where each stands (version, pending migrations, dirty, drifted, unreachable, last run) and the counts", body = DbSetView),
        (status = 404, description = "`not_found`: no such project or DB set", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `state` or `sort`", body = ErrorBody),
    ))]
pub(crate) async fn get_db_set(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
    ApiQuery(query): ApiQuery<DbSetQuery>,
) -> Result<Json<DbSetView>, ApiError> {
    let filter = match query.state.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse().map_err(|_| {
            ApiError::invalid(
                "state",
                "must be up_to_date, behind, dirty, drifted, unreachable or failed",
            )
        })?),
    };
    let sort = match query.sort.as_deref() {
        None | Some("") => Sort::default(),
        Some(text) => text
            .parse()
            .map_err(|_| ApiError::invalid("sort", "must be name, behind or last_run"))?,
    };
    Ok(Json(db_set_view(&state, &slug, id, filter, sort).await?))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DbSetQuery {
    /// Only the targets that are `up_to_date`, `behind`, `dirty`,
    /// `drifted`, `unreachable` (at the last drift scan) or `failed` (in
    /// their last run).
    pub state: Option<String>,
    /// `name` (default), `behind` (the most migrations behind first) or
    /// `last_run` (the most recently run first).
    pub sort: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/db-sets/{id}/targets", tag = "targets",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The DB set's id"),
    ),
    responses(
        (status = 200, description = "The DB set's targets, whole (never their passwords)", body = Page<TargetRow>),
        (status = 404, description = "`not_found`: no such project or DB set", body = ErrorBody),
    ))]
pub(crate) async fn list_targets(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<Json<Page<TargetRow>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (_, set) = db_set(&mut conn, &slug, id).await?;
    Ok(Json(Page::all(
        inventory::list_targets(&mut conn, set.id).await?,
    )))
}

#[utoipa::path(post, path = "/api/v1/projects/{slug}/db-sets/{id}/targets", tag = "targets",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The DB set's id"),
    ),
    request_body = TargetInput,
    responses(
        (status = 201, description = "The target (its password is never returned)", body = TargetRow),
        (status = 404, description = "`not_found`: no such project or DB set", body = ErrorBody),
        (status = 409, description = "`duplicate_name`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: the field at fault", body = ErrorBody),
    ))]
pub(crate) async fn create_target(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
    ApiJson(body): ApiJson<TargetInput>,
) -> Result<(StatusCode, Json<TargetRow>), ApiError> {
    let target = targets::create_target(&state, &user, &slug, id, &body).await?;
    Ok((StatusCode::CREATED, Json(target)))
}

#[utoipa::path(get, path = "/api/v1/targets/{id}", tag = "targets",
    params(("id" = Uuid, Path, description = "The target's id")),
    responses(
        (status = 200, description = "The target (never its password)", body = TargetRow),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn get_target(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<TargetRow>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let target = inventory::target(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("target"))?;
    Ok(Json(target))
}

#[utoipa::path(get, path = "/api/v1/workers", tag = "workers",
    responses((status = 200, description = "Workers seen in the last day, newest heartbeat first, whole", body = Page<WorkerRow>)))]
pub(crate) async fn list_workers(
    State(state): State<AppState>,
    _admin: Authorized<rules::Administer>,
) -> Result<Json<Page<WorkerRow>>, ApiError> {
    Ok(Json(Page::all(workers::list(&state.db).await?)))
}
