//! Renaming and deleting DB sets (manager+). Creating and reading them is
//! in `inventory.rs`.

use common::{
    lifecycle,
    store::{
        audit,
        inventory::{self, DbSetRow, ProjectRow},
        runs::RunScope,
    },
};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use super::inventory::{parse_object_name, project};
use super::projects::refuse_while_running;
use crate::{auth::CurrentUser, error::ApiError, state::AppState};

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateDbSet {
    pub name: Option<String>,
    /// Only accepted unchanged: a DB set stays in its environment.
    pub environment: Option<String>,
}

/// The live DB set of the project, locked until the transaction ends, or 404.
async fn lock_db_set(
    conn: &mut PgConnection,
    slug: &str,
    id: Uuid,
) -> Result<(ProjectRow, DbSetRow), ApiError> {
    let project = project(conn, slug).await?;
    let set = inventory::lock_db_set(conn, project.id, id)
        .await?
        .ok_or(ApiError::NotFound("DB set"))?;
    Ok((project, set))
}

/// Renames a DB set. Runs are not affected: an approval covers the set's
/// targets, not its name.
pub async fn update_db_set(
    state: &AppState,
    user: &CurrentUser,
    slug: &str,
    id: Uuid,
    body: &UpdateDbSet,
) -> Result<DbSetRow, ApiError> {
    let name = body
        .name
        .as_deref()
        .map(|n| parse_object_name("name", n))
        .transpose()?;
    let mut tx = state.db.begin().await?;
    let (project, before) = lock_db_set(&mut tx, slug, id).await?;
    if body
        .environment
        .as_deref()
        .is_some_and(|e| e != before.environment)
    {
        return Err(ApiError::invalid(
            "environment",
            "a DB set cannot move to another environment; create a new DB set there",
        ));
    }
    let Some(name) = name.filter(|n| *n != before.name) else {
        return Ok(before);
    };
    let set = inventory::rename_db_set(&mut tx, before.id, &name).await?;
    audit::append(
        &mut tx,
        &user
            .audit("db_set.updated", "db_set", set.id)
            .project(project.id)
            .details(json!({
                "environment": set.environment,
                "changes": { "name": { "from": before.name, "to": set.name } },
            })),
    )
    .await?;
    tx.commit().await?;
    Ok(set)
}

/// Deletes a DB set and its targets (soft: rows stay for the runs and audit
/// rows that name them). Refused while one of its runs is queued or
/// running; runs waiting for approval or execution are invalidated.
pub async fn delete_db_set(
    state: &AppState,
    user: &CurrentUser,
    slug: &str,
    id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let (project, set) = lock_db_set(&mut tx, slug, id).await?;
    let reason = format!("DB set {} was deleted", set.name);
    let invalidated =
        lifecycle::invalidate_where(&mut tx, &user.caller(), RunScope::DbSet(set.id), &reason)
            .await?;
    refuse_while_running(&mut tx, RunScope::DbSet(set.id), "DB set").await?;
    let targets = inventory::delete_db_set(&mut tx, set.id).await?;
    audit::append(
        &mut tx,
        &user
            .audit("db_set.deleted", "db_set", set.id)
            .project(project.id)
            .details(json!({
                "name": set.name,
                "environment": set.environment,
                "targets_deleted": targets,
                "runs_invalidated": invalidated.len(),
            })),
    )
    .await?;
    lifecycle::announce_invalidated(&mut tx, &user.caller(), &invalidated, &reason).await?;
    tx.commit().await?;
    Ok(())
}
