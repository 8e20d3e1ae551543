//! Migrations of a project.

use common::{
    domain::{
        Checksum, Engine, Version,
        directives::needs_no_transaction,
        import::{self, Layout},
        order,
    },
    lifecycle,
    review::{self, Context, Finding},
    store::{
        audit, inventory,
        migrations::{self, MigrationRow, NewMigration},
        runs::{self, RunScope},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::inventory::project;
use crate::{
    auth::CurrentUser,
    error::{ApiError, ErrorBody, ErrorDetail},
    input::required_text,
    state::AppState,
};

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateMigration {
    /// Dot-separated integers: `1`, `1.2`, `20261124093000`.
    pub version: String,
    pub name: String,
    /// May be empty (or only comments): a no-op version that is recorded as
    /// applied without running anything.
    pub up_sql: String,
    /// Absent or `null`: the migration cannot be rolled back. A string,
    /// even `""`: the down script (empty: rolling back needs no SQL).
    #[serde(default)]
    pub down_sql: Option<String>,
    /// Overrides detection of statements that cannot run in a transaction.
    pub transactional: Option<bool>,
    /// Allows a version lower than one already applied on a target of the
    /// project (Flyway's `outOfOrder`); refused with `409 out_of_order`
    /// otherwise. Default false.
    #[serde(default)]
    pub allow_out_of_order: bool,
}

/// The rules every migration's scripts follow, on create, edit and import.
/// An empty up script is allowed (a no-op version), and so is an empty down
/// script (rolling back needs no SQL).
fn check_scripts(state: &AppState, up_sql: &str, down_sql: Option<&str>) -> Result<(), ApiError> {
    let max = state.settings.max_sql_bytes;
    let size = up_sql.len() + down_sql.map_or(0, str::len);
    if size > max {
        return Err(ApiError::TooLarge(format!(
            "up_sql and down_sql together are {size} bytes; the limit is {max}"
        )));
    }
    for (field, sql) in [("up_sql", Some(up_sql)), ("down_sql", down_sql)] {
        if sql.is_some_and(|sql| sql.contains('\0')) {
            return Err(ApiError::invalid(field, "must not contain NUL characters"));
        }
    }
    Ok(())
}

fn detect_transactional(up_sql: &str, down_sql: Option<&str>) -> bool {
    !needs_no_transaction(up_sql) && !down_sql.is_some_and(needs_no_transaction)
}

/// Refuses new versions below the project's highest applied one unless the
/// caller allowed it; returns whether any new version is out of order.
async fn check_out_of_order<'a>(
    conn: &mut sqlx::PgConnection,
    project_id: uuid::Uuid,
    new: impl IntoIterator<Item = &'a Version> + Clone,
    allow: bool,
) -> Result<bool, ApiError> {
    let highest = migrations::highest_applied(conn, project_id).await?;
    let highest = highest.as_ref().map(|(v, target)| (v, target.as_str()));
    order::check_new(new.clone(), highest, allow)
        .map_err(|e| ApiError::conflict("out_of_order", e.to_string()))?;
    Ok(order::check_new(new, highest, false).is_err())
}

/// `Some(None)` for a field given as `null`, `None` for a missing one, so a
/// partial edit can tell "make it irreversible" from "keep it".
fn explicit_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub async fn create_migration(
    state: &AppState,
    user: &CurrentUser,
    slug: String,
    body: CreateMigration,
) -> Result<MigrationRow, ApiError> {
    let version =
        Version::parse(&body.version).map_err(|e| ApiError::invalid("version", e.to_string()))?;
    let name = required_text("name", &body.name, 200)?;
    let down_sql = body.down_sql.as_deref();
    check_scripts(state, &body.up_sql, down_sql)?;
    let transactional = body
        .transactional
        .unwrap_or_else(|| detect_transactional(&body.up_sql, down_sql));

    let mut tx = state.db.begin().await?;
    let project = project(&mut tx, &slug).await?;
    if migrations::by_version(&mut tx, project.id, &version)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "duplicate_version",
            format!(
                "version {version} already exists in project {}",
                project.slug
            ),
        ));
    }
    let out_of_order =
        check_out_of_order(&mut tx, project.id, [&version], body.allow_out_of_order).await?;
    let new = NewMigration {
        version: &version,
        name: &name,
        up_sql: &body.up_sql,
        down_sql,
        transactional,
    };
    migrations::insert(&mut tx, project.id, user.id, &new).await?;
    audit::append(
        &mut tx,
        &user
            .audit(
                "migration.created",
                "migration",
                format!("{}@{version}", project.slug),
            )
            .project(project.id)
            .details(json!({
                "version": version,
                "name": name,
                "checksum": Checksum::of(&body.up_sql, down_sql),
                "reversible": down_sql.is_some(),
                "out_of_order": out_of_order,
            })),
    )
    .await?;
    let row = migrations::by_version(&mut tx, project.id, &version)
        .await?
        .ok_or_else(|| anyhow::anyhow!("inserted migration not found"))?;
    tx.commit().await?;
    Ok(row)
}

/// A partial edit; absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct EditMigration {
    pub name: Option<String>,
    pub up_sql: Option<String>,
    /// Missing: unchanged; `null`: the migration can no longer be rolled
    /// back; a string (even `""`): the new down script.
    #[serde(default, deserialize_with = "explicit_null")]
    #[schema(value_type = Option<String>, nullable)]
    pub down_sql: Option<Option<String>>,
    pub transactional: Option<bool>,
}

/// Edits a migration that has not been applied anywhere: a new revision,
/// a new checksum, and every run that pinned the old one invalidated — in
/// one transaction.
pub async fn edit_migration(
    state: &AppState,
    user: &CurrentUser,
    slug: &str,
    version: &str,
    body: EditMigration,
) -> Result<MigrationRow, ApiError> {
    let version = Version::parse(version).map_err(|_| ApiError::NotFound("migration"))?;
    let mut tx = state.db.begin().await?;
    let project = project(&mut tx, slug).await?;
    let current = migrations::by_version(&mut tx, project.id, &version)
        .await?
        .ok_or(ApiError::NotFound("migration"))?;
    if migrations::lock_for_edit(&mut tx, current.id).await? {
        return Err(ApiError::conflict(
            "migration_immutable",
            format!(
                "version {version} has been applied to a target and can no longer change; add a new migration instead"
            ),
        ));
    }
    if let Some(run) = runs::in_progress(&mut tx, RunScope::Migration(current.id)).await? {
        return Err(ApiError::conflict(
            "migration_in_use",
            format!("run {run} is executing this migration; wait for it to finish"),
        ));
    }
    let name = match &body.name {
        Some(n) => required_text("name", n, 200)?,
        None => current.name.clone(),
    };
    let up_sql = body.up_sql.unwrap_or_else(|| current.up_sql.clone());
    let down_sql = body.down_sql.unwrap_or_else(|| current.down_sql.clone());
    let down_sql = down_sql.as_deref();
    check_scripts(state, &up_sql, down_sql)?;
    // Not given: an earlier "no transaction" (detected or chosen) stays, and
    // new scripts that need it turn it on; nothing turns it off silently.
    let transactional = body
        .transactional
        .unwrap_or_else(|| current.transactional && detect_transactional(&up_sql, down_sql));
    let checksum = Checksum::of(&up_sql, down_sql);
    if checksum.as_str() == current.checksum
        && name == current.name
        && transactional == current.transactional
    {
        // Nothing changed: no revision, no invalidation.
        return Ok(current);
    }
    let reason = format!("migration {version} was edited");
    let invalidated = lifecycle::invalidate_where(
        &mut tx,
        &user.caller(),
        RunScope::Migration(current.id),
        &reason,
    )
    .await?;
    let revision = migrations::update(
        &mut tx,
        current.id,
        user.id,
        &name,
        &up_sql,
        down_sql,
        transactional,
    )
    .await?;
    audit::append(
        &mut tx,
        &user
            .audit(
                "migration.updated",
                "migration",
                format!("{}@{version}", project.slug),
            )
            .project(project.id)
            .details(json!({
                "version": version,
                "revision": revision,
                "changed": what_changed(&current, &name, &checksum, transactional),
                "checksum": { "from": current.checksum, "to": checksum },
                "runs_invalidated": invalidated.len(),
            })),
    )
    .await?;
    lifecycle::announce_invalidated(&mut tx, &user.caller(), &invalidated, &reason).await?;
    let row = migrations::by_version(&mut tx, project.id, &version)
        .await?
        .ok_or_else(|| anyhow::anyhow!("edited migration not found"))?;
    tx.commit().await?;
    Ok(row)
}

/// What an edit changed, each as `{"from", "to"}`: the name, the scripts
/// (by checksum) and whether it runs in a transaction. A change of
/// `transactional` alone leaves the checksum as it was, so the audit row
/// has to say it.
fn what_changed(
    current: &MigrationRow,
    name: &str,
    checksum: &Checksum,
    transactional: bool,
) -> Value {
    let mut changed = serde_json::Map::new();
    if name != current.name {
        changed.insert("name".into(), json!({ "from": current.name, "to": name }));
    }
    if checksum.as_str() != current.checksum {
        changed.insert(
            "scripts".into(),
            json!({ "from": current.checksum, "to": checksum }),
        );
    }
    if transactional != current.transactional {
        changed.insert(
            "transactional".into(),
            json!({ "from": current.transactional, "to": transactional }),
        );
    }
    Value::Object(changed)
}

/// A folder of migration files (Flyway, golang-migrate, dbmate, goose or Diesel layout).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportBody {
    pub files: Vec<ImportFile>,
    /// Allows new versions lower than one already applied on a target of
    /// the project; refused with `409 out_of_order` otherwise. Default false.
    #[serde(default)]
    pub allow_out_of_order: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ImportFile {
    /// The file's path in the folder, e.g. `V1__init.sql` or `1/up.sql`.
    pub path: String,
    pub content: String,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ImportConflict {
    pub version: String,
    pub reason: String,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ImportReport {
    pub layout: Option<Layout>,
    /// Versions created by this import.
    pub created: Vec<String>,
    /// Versions that exist with the same scripts.
    pub unchanged: Vec<String>,
    /// Versions that exist with different scripts.
    pub conflicts: Vec<ImportConflict>,
}

/// An import refused because of conflicts: the report and the error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportRefused {
    pub layout: Option<Layout>,
    pub created: Vec<String>,
    pub unchanged: Vec<String>,
    pub conflicts: Vec<ImportConflict>,
    /// `import_conflicts`.
    pub error: ErrorDetail,
}

/// The two bodies of a refused import (OpenAPI only): the report with
/// `import_conflicts`, or a plain error (`out_of_order`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum ImportRefusal {
    Conflicts(ImportRefused),
    Error(ErrorBody),
}

/// Imports a folder of migration files into a project: all or nothing, and
/// importing the same files again changes nothing. Versions that exist with
/// different scripts are reported as conflicts and nothing is written.
pub async fn import_migrations(
    state: &AppState,
    author_id: uuid::Uuid,
    actor: &common::store::audit::Actor,
    ip: Option<String>,
    slug: &str,
    files: &[(String, String)],
    allow_out_of_order: bool,
) -> Result<ImportReport, ApiError> {
    let (layout, imported) =
        import::read(files).map_err(|e| ApiError::invalid("files", e.to_string()))?;
    for m in &imported {
        check_scripts(state, &m.up_sql, m.down_sql.as_deref()).map_err(|e| match e {
            ApiError::Invalid { field, message } => {
                ApiError::invalid("files", format!("version {}: {field} {message}", m.version))
            }
            ApiError::TooLarge(message) => {
                ApiError::TooLarge(format!("version {}: {message}", m.version))
            }
            other => other,
        })?;
    }
    let mut tx = state.db.begin().await?;
    let project = project(&mut tx, slug).await?;
    let existing: std::collections::HashMap<String, MigrationRow> =
        migrations::list(&mut tx, project.id)
            .await?
            .into_iter()
            .map(|m| (m.version.clone(), m))
            .collect();
    let mut report = ImportReport {
        layout: Some(layout),
        ..ImportReport::default()
    };
    let mut to_create = Vec::new();
    for m in &imported {
        match existing.get(&m.version.to_string()) {
            Some(stored) if m.matches_stored(&stored.checksum, stored.down_sql.is_some()) => {
                report.unchanged.push(m.version.to_string())
            }
            Some(stored) => report.conflicts.push(ImportConflict {
                version: m.version.to_string(),
                reason: format!(
                    "differs from the stored migration (checksum {} here, {} stored)",
                    &m.checksum().as_str()[..12],
                    &stored.checksum[..12.min(stored.checksum.len())]
                ),
            }),
            None => to_create.push(m),
        }
    }
    if !report.conflicts.is_empty() {
        return Ok(report);
    }
    let out_of_order = check_out_of_order(
        &mut tx,
        project.id,
        to_create.iter().map(|m| &m.version),
        allow_out_of_order,
    )
    .await?;
    for m in &to_create {
        let name = m.name.chars().take(200).collect::<String>();
        migrations::insert(
            &mut tx,
            project.id,
            author_id,
            &NewMigration {
                version: &m.version,
                name: &name,
                up_sql: &m.up_sql,
                down_sql: m.down_sql.as_deref(),
                transactional: detect_transactional(&m.up_sql, m.down_sql.as_deref()),
            },
        )
        .await?;
        report.created.push(m.version.to_string());
    }
    if !report.created.is_empty() {
        audit::append(
            &mut tx,
            &common::store::audit::Entry::new(
                actor.clone(),
                "migrations.imported",
                "project",
                &project.slug,
            )
            .project(project.id)
            .ip(ip)
            .details(json!({
                "layout": layout,
                "created": report.created.len(),
                "unchanged": report.unchanged.len(),
                "first": report.created.first(),
                "last": report.created.last(),
                "out_of_order": out_of_order,
            })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// What the SQL analyzers see in a migration's scripts on one engine, at the
/// catalogue's severities (a run applies its environment's policy).
#[derive(Debug, Serialize)]
pub struct EngineReview {
    pub engine: Engine,
    pub up: Vec<Finding>,
    pub down: Vec<Finding>,
}

/// Reviews the migration's up and down scripts for each engine the
/// project's targets use (none while it has no targets: the review depends
/// on the engine).
pub async fn review_for_project(
    conn: &mut sqlx::PgConnection,
    project_id: uuid::Uuid,
    migration: &MigrationRow,
) -> Result<Vec<EngineReview>, ApiError> {
    let engines = inventory::project_engines(conn, project_id).await?;
    Ok(engines
        .into_iter()
        .map(|engine| {
            let check =
                |sql: &str| review::review(engine, sql, &mut Context::for_script(engine, sql));
            EngineReview {
                engine,
                up: check(&migration.up_sql),
                down: migration.down_sql.as_deref().map(check).unwrap_or_default(),
            }
        })
        .collect())
}
