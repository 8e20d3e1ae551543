//! Environments, projects, DB sets, targets and the worker fleet.

use common::{
    domain::{
        Engine, ProjectSlug, TlsMode,
        fleet::{Counts, Sort, StateFilter},
    },
    store::{
        audit,
        fleet::{self, TargetStanding},
        inventory::{self, DbSetRow, ProjectRow, TargetRow},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::CurrentUser,
    error::ApiError,
    input::{optional_text, required_text},
    state::AppState,
};

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

/// A DB set with its targets and where each stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct DbSetView {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub environment: String,
    /// The DB set's own maintenance window (`always`: none), overriding
    /// its environment's; `null`: its environment's.
    pub maintenance_window: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// "14 at 20261201, 2 behind, 1 dirty": every live target, whatever
    /// the filter.
    pub summary: String,
    pub counts: Counts,
    /// The targets (those in `state` when asked), by name.
    pub targets: Vec<DbSetTarget>,
}

/// A target (as `GET /api/v1/targets/…` shows it) with where it stands;
/// one flat object.
#[derive(Debug, Serialize, ToSchema)]
pub struct DbSetTarget {
    pub id: Uuid,
    pub db_set_id: Uuid,
    pub name: String,
    #[schema(value_type = String)]
    pub engine: Engine,
    pub host: String,
    pub port: i32,
    pub database: String,
    pub username: String,
    #[schema(value_type = String)]
    pub tls_mode: TlsMode,
    pub session_settings: String,
    pub worker_pool: String,
    pub has_password: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The newest version the hub records as applied (`null`: none).
    pub current_version: Option<String>,
    /// How many of the project's migrations are not applied on it.
    pub pending: i64,
    /// A script stopped part-way on it: an admin must resolve it.
    pub dirty: bool,
    /// Its schema differs from its baseline.
    pub drifted: bool,
    /// Why the last drift scan could not read it (`null`: it could, or it
    /// was never scanned).
    pub unreachable: Option<String>,
    /// Its newest execution's run, state, and when it ended (or started).
    pub last_run_id: Option<Uuid>,
    pub last_run_state: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_run_at: Option<OffsetDateTime>,
}

impl DbSetTarget {
    fn new(t: TargetRow, s: TargetStanding) -> Self {
        Self {
            id: t.id,
            db_set_id: t.db_set_id,
            name: t.name,
            engine: t.engine,
            host: t.host,
            port: t.port,
            database: t.database,
            username: t.username,
            tls_mode: t.tls_mode,
            session_settings: t.session_settings,
            worker_pool: t.worker_pool,
            has_password: t.has_password,
            created_at: t.created_at,
            current_version: s.current_version,
            pending: s.pending,
            dirty: s.dirty,
            drifted: s.drifted,
            unreachable: s.unreachable,
            last_run_id: s.last_run_id,
            last_run_state: s.last_run_state,
            last_run_at: s.last_run_at,
        }
    }
}

/// The DB set `id` of project `slug` with its targets — those that stand
/// as `filter` says, when given, in `sort` order — and the counts over all
/// of them.
pub async fn db_set_view(
    state: &AppState,
    slug: &str,
    id: Uuid,
    filter: Option<StateFilter>,
    sort: Sort,
) -> Result<DbSetView, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (_, set) = db_set(&mut conn, slug, id).await?;
    let targets = inventory::list_targets(&mut conn, set.id).await?;
    let standings = fleet::standings(
        &mut conn,
        set.id,
        filter,
        sort,
        fleet::Paging::Start,
        i64::MAX,
    )
    .await?;
    let counts = fleet::counts(&mut conn, set.id).await?;
    Ok(DbSetView {
        id: set.id,
        project_id: set.project_id,
        name: set.name,
        environment: set.environment,
        maintenance_window: set.maintenance_window,
        created_at: set.created_at,
        summary: common::domain::fleet::summary(&counts),
        counts,
        targets: with_standings(targets, standings),
    })
}

/// The targets that have a standing, in the standings' order.
pub fn with_standings(targets: Vec<TargetRow>, standings: Vec<TargetStanding>) -> Vec<DbSetTarget> {
    let mut by_id: std::collections::HashMap<Uuid, TargetRow> =
        targets.into_iter().map(|t| (t.id, t)).collect();
    standings
        .into_iter()
        .filter_map(|standing| {
            by_id
                .remove(&standing.target_id)
                .map(|target| DbSetTarget::new(target, standing))
        })
        .collect()
}
