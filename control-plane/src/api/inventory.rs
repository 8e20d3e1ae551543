//! Environments, projects, DB sets, targets and the worker fleet.

use crate::routes::{Access, Routes};
use axum::{Json, extract::State, http::StatusCode};
use common::domain::Capability;
use common::{
    domain::ProjectSlug,
    store::{
        audit,
        inventory::{self, DbSetRow, EnvironmentRow, ProjectRow, TargetRow},
        workers::{self, WorkerRow},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    Page, PageQuery, optional_text, required_text,
    targets::{self, TargetInput},
};
use crate::{
    auth::{Authorized, CurrentUser, rules},
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody},
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

/// The project named by a URL slug, or 404.
pub async fn project(conn: &mut PgConnection, slug: &str) -> Result<ProjectRow, ApiError> {
    let slug = ProjectSlug::parse(slug).map_err(|_| ApiError::NotFound("project"))?;
    inventory::project_by_slug(conn, slug.as_str())
        .await?
        .ok_or(ApiError::NotFound("project"))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateProject {
    /// `[a-z0-9-]{2,40}`; fixed once created.
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
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

/// Creates a project; its slug is checked here and unique (409 otherwise).
pub async fn create_project(
    state: &AppState,
    admin: &CurrentUser,
    body: &CreateProject,
) -> Result<ProjectRow, ApiError> {
    let slug =
        ProjectSlug::parse(&body.slug).map_err(|e| ApiError::invalid("slug", e.to_string()))?;
    let name = required_text("name", &body.name, 200)?;
    let description = optional_text("description", &body.description, 5000)?;
    let mut tx = state.db.begin().await?;
    let project =
        inventory::insert_project(&mut tx, slug.as_str(), &name, &description, admin.id).await?;
    audit::append(
        &mut tx,
        &admin
            .audit("project.created", "project", project.id)
            .project(project.id)
            .details(json!({ "slug": project.slug, "name": project.name })),
    )
    .await?;
    tx.commit().await?;
    Ok(project)
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

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateDbSet {
    pub name: String,
    pub environment: String,
}

/// DB set and target names appear in URLs and logs: keep them simple.
pub fn parse_object_name(field: &str, raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    let valid = (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(name.to_owned())
    } else {
        Err(ApiError::invalid(
            field,
            "must be 1-100 characters of letters, digits, '-', '_' and '.'",
        ))
    }
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

/// Creates a DB set of the project in an existing environment.
pub async fn create_db_set(
    state: &AppState,
    user: &CurrentUser,
    slug: &str,
    body: &CreateDbSet,
) -> Result<DbSetRow, ApiError> {
    let name = parse_object_name("name", &body.name)?;
    let mut tx = state.db.begin().await?;
    let project = project(&mut tx, slug).await?;
    if inventory::environment(&mut tx, &body.environment)
        .await?
        .is_none()
    {
        return Err(ApiError::invalid(
            "environment",
            format!("unknown environment {:?}", body.environment),
        ));
    }
    let set = inventory::insert_db_set(&mut tx, project.id, &name, &body.environment).await?;
    audit::append(
        &mut tx,
        &user
            .audit("db_set.created", "db_set", set.id)
            .project(project.id)
            .details(json!({ "name": set.name, "environment": set.environment })),
    )
    .await?;
    tx.commit().await?;
    Ok(set)
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

/// The live DB set of the project named by a URL slug, or 404.
pub async fn db_set(
    conn: &mut PgConnection,
    slug: &str,
    id: Uuid,
) -> Result<(ProjectRow, DbSetRow), ApiError> {
    let project = project(conn, slug).await?;
    let set = inventory::db_set(conn, project.id, id)
        .await?
        .ok_or(ApiError::NotFound("DB set"))?;
    Ok((project, set))
}

/// A DB set with its targets.
#[derive(Debug, Serialize, ToSchema)]
pub struct DbSetView {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub environment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub targets: Vec<TargetRow>,
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/db-sets/{id}", tag = "db-sets",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The DB set's id"),
    ),
    responses(
        (status = 200, description = "The DB set with its targets", body = DbSetView),
        (status = 404, description = "`not_found`: no such project or DB set", body = ErrorBody),
    ))]
pub(crate) async fn get_db_set(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<Json<DbSetView>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (_, set) = db_set(&mut conn, &slug, id).await?;
    let targets = inventory::list_targets(&mut conn, set.id).await?;
    Ok(Json(DbSetView {
        id: set.id,
        project_id: set.project_id,
        name: set.name,
        environment: set.environment,
        created_at: set.created_at,
        targets,
    }))
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
