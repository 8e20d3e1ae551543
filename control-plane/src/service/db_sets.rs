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

use super::environments::{parse_window, present};
use super::inventory::{parse_object_name, project};
use super::projects::refuse_while_running;
use crate::{auth::CurrentUser, error::ApiError, state::AppState};

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct UpdateDbSet {
    pub name: Option<String>,
    /// Only accepted unchanged: a DB set stays in its environment.
    pub environment: Option<String>,
    /// The DB set's own maintenance window, overriding its environment's
    /// (grammar in docs/Requirements.md); `always`: none, whatever the
    /// environment says; `null` or `""`: follow the environment.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub maintenance_window: Option<Option<String>>,
}

/// The override as stored: `None` follows the environment, `always` is
/// kept as such, anything else in its canonical form.
fn window_override(input: &Option<String>) -> Result<Option<String>, ApiError> {
    match input.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => Ok(Some(
            parse_window("maintenance_window", text)?.unwrap_or_else(|| "always".into()),
        )),
    }
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

/// Renames a DB set or sets its maintenance window. Runs are not affected:
/// an approval covers the set's targets, not its name, and a window decides
/// when its targets run, not what.
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
    let window = body
        .maintenance_window
        .as_ref()
        .map(window_override)
        .transpose()?
        .filter(|w| *w != before.maintenance_window);
    let name = name.filter(|n| *n != before.name);
    if name.is_none() && window.is_none() {
        return Ok(before);
    }
    let mut set = before.clone();
    let mut changes = serde_json::Map::new();
    if let Some(name) = name {
        set = inventory::rename_db_set(&mut tx, before.id, &name).await?;
        changes.insert(
            "name".into(),
            json!({ "from": before.name, "to": set.name }),
        );
    }
    let mut rescheduled = 0;
    if let Some(window) = window {
        set = inventory::set_db_set_window(&mut tx, before.id, window.as_deref()).await?;
        changes.insert(
            "maintenance_window".into(),
            json!({ "from": before.maintenance_window, "to": set.maintenance_window }),
        );
        rescheduled = lifecycle::window::reschedule(&mut tx, RunScope::DbSet(set.id)).await?;
    }
    audit::append(
        &mut tx,
        &user
            .audit("db_set.updated", "db_set", set.id)
            .project(project.id)
            .details(json!({
                "environment": set.environment,
                "changes": changes,
                "runs_rescheduled": rescheduled,
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
