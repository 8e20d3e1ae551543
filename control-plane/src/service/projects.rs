//! Editing and archiving projects (admin). Creating and reading them is in
//! `inventory.rs`.

use common::{
    domain::ProjectSlug,
    lifecycle,
    store::{
        audit,
        inventory::{self, ProjectRow},
        runs::{self, RunScope},
    },
};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::{
    auth::CurrentUser,
    error::ApiError,
    input::{optional_text, required_text},
    state::AppState,
};

/// Absent fields keep their value; the slug is fixed.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateProject {
    pub name: Option<String>,
    pub description: Option<String>,
}

/// The live project named by a URL slug, locked until the transaction ends, or 404.
async fn lock_project(conn: &mut PgConnection, slug: &str) -> Result<ProjectRow, ApiError> {
    let slug = ProjectSlug::parse(slug).map_err(|_| ApiError::NotFound("project"))?;
    inventory::lock_project(conn, slug.as_str())
        .await?
        .ok_or(ApiError::NotFound("project"))
}

/// Fails with 409 while a run of `scope` is queued or running: what it
/// executes on must not change or disappear under it.
pub async fn refuse_while_running(
    conn: &mut PgConnection,
    scope: RunScope<'_>,
    what: &str,
) -> Result<(), ApiError> {
    match runs::in_progress(conn, scope).await? {
        Some(run) => Err(ApiError::conflict(
            "run_in_progress",
            format!(
                "run {run} of this {what} is queued or running; wait for it to finish or cancel it first"
            ),
        )),
        None => Ok(()),
    }
}

/// Changes a project's name and description (its slug is fixed: URLs and
/// clients use it).
pub async fn update_project(
    state: &AppState,
    admin: &CurrentUser,
    slug: &str,
    body: &UpdateProject,
) -> Result<ProjectRow, ApiError> {
    let name = body
        .name
        .as_deref()
        .map(|n| required_text("name", n, 200))
        .transpose()?;
    let description = body
        .description
        .as_deref()
        .map(|d| optional_text("description", d, 5000))
        .transpose()?;
    let mut tx = state.db.begin().await?;
    let before = lock_project(&mut tx, slug).await?;
    let name = name.unwrap_or_else(|| before.name.clone());
    let description = description.unwrap_or_else(|| before.description.clone());
    if name == before.name && description == before.description {
        return Ok(before);
    }
    let project = inventory::update_project(&mut tx, before.id, &name, &description).await?;
    let mut changes = serde_json::Map::new();
    if project.name != before.name {
        changes.insert(
            "name".into(),
            json!({"from": before.name, "to": project.name}),
        );
    }
    if project.description != before.description {
        changes.insert(
            "description".into(),
            json!({"from": before.description, "to": project.description}),
        );
    }
    audit::append(
        &mut tx,
        &admin
            .audit("project.updated", "project", project.id)
            .project(project.id)
            .details(json!({ "slug": project.slug, "changes": changes })),
    )
    .await?;
    tx.commit().await?;
    Ok(project)
}

/// Archives a project: it vanishes from lists and look-ups (404), with its
/// DB sets and targets. Refused while one of its runs is queued or running;
/// runs still waiting for approval or execution are invalidated.
pub async fn archive_project(
    state: &AppState,
    admin: &CurrentUser,
    slug: &str,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let project = lock_project(&mut tx, slug).await?;
    // Invalidating first locks the waiting runs, so an Execute racing with
    // this either queued its run before (and is refused below) or finds
    // the run invalidated.
    let reason = format!("project {} was archived", project.slug);
    let invalidated = lifecycle::invalidate_where(
        &mut tx,
        &admin.caller(),
        RunScope::Project(project.id),
        &reason,
    )
    .await?;
    refuse_while_running(&mut tx, RunScope::Project(project.id), "project").await?;
    inventory::archive_project(&mut tx, project.id).await?;
    audit::append(
        &mut tx,
        &admin
            .audit("project.archived", "project", project.id)
            .project(project.id)
            .details(json!({ "slug": project.slug, "runs_invalidated": invalidated.len() })),
    )
    .await?;
    lifecycle::announce_invalidated(&mut tx, &admin.caller(), &invalidated, &reason).await?;
    tx.commit().await?;
    Ok(())
}
