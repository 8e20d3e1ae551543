//! Environments, projects, DB sets, targets and the worker fleet.

use common::{
    domain::ProjectSlug,
    store::{
        audit,
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

/// A DB set with its targets.
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
    pub targets: Vec<TargetRow>,
}
