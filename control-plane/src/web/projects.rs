//! Project pages: overview, migrations, and the forms to add a migration and
//! to request a run.

use std::collections::HashMap;

use axum::{
    extract::State,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use common::{
    domain::{Capability, Direction, Version},
    store::{
        inventory::{self, ProjectRow},
        migrations, runs, webhooks,
    },
};
use serde_json::{Value, json};

use super::{Viewer, diff, render, see_other};
use crate::{
    auth::rules,
    error::{ApiError, ApiForm, ApiPath, ApiQuery},
    routes::{Access, Routes},
    service::{
        inventory::project,
        migrations::{
            CreateMigration, EditMigration, create_migration, edit_migration, review_for_project,
        },
        runs::{RequestRun, request_run},
    },
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/projects/{slug}",
            Access::Needs(Capability::View),
            project_page,
        )
        .get(
            "/projects/{slug}/migrations/new",
            Access::Needs(Capability::Author),
            new_migration_page,
        )
        .post(
            "/projects/{slug}/migrations",
            Access::Needs(Capability::Author),
            create_migration_form,
        )
        .get(
            "/projects/{slug}/migrations/{version}",
            Access::Needs(Capability::View),
            migration_page,
        )
        .get(
            "/projects/{slug}/migrations/{version}/edit",
            Access::Needs(Capability::Author),
            edit_migration_page,
        )
        .post(
            "/projects/{slug}/migrations/{version}/edit",
            Access::Needs(Capability::Author),
            edit_migration_form,
        )
        .get(
            "/projects/{slug}/migrations/{version}/diff",
            Access::Needs(Capability::View),
            diff_page,
        )
        .post(
            "/projects/{slug}/runs",
            Access::Needs(Capability::Author),
            request_run_form,
        )
}

/// A form's field errors, from a 422; any other error propagates.
fn field_errors(err: ApiError) -> Result<Value, ApiError> {
    match err {
        ApiError::Invalid { field, message } => Ok(json!({ field: message })),
        ApiError::TooLarge(message) => Ok(json!({ "up_sql": message })),
        ApiError::Conflict {
            code: "duplicate_version" | "out_of_order",
            message,
        } => Ok(json!({ "version": message })),
        other => Err(other),
    }
}

fn with_status(page: Html<String>, status: StatusCode) -> Response {
    let mut response = page.into_response();
    *response.status_mut() = status;
    response
}

/// Everything the project page shows, with empty forms. The inventory
/// forms on it (`web/inventory.rs`) re-render it with their input and errors.
pub(super) async fn project_context(
    state: &AppState,
    slug: &str,
    viewer: &Viewer,
) -> Result<Value, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, slug).await?;
    let migrations = migrations::list(&mut conn, project.id).await?;
    let sets = inventory::list_db_sets(&state.db, project.id).await?;
    // Counts, not target lists: a DB set may hold a thousand shards; its
    // own page lists them a page at a time.
    let counts: HashMap<_, _> = inventory::target_counts(&state.db, project.id)
        .await?
        .into_iter()
        .collect();
    let db_sets: Vec<Value> = sets
        .into_iter()
        .map(|set| {
            let targets = counts.get(&set.id).copied().unwrap_or(0);
            json!({ "set": set, "target_count": targets })
        })
        .collect();
    let recent = runs::list(&state.db, project.id, None, 20).await?;
    let recent: Vec<Value> = recent
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "environment": r.environment, "direction": r.direction,
                "target_version": r.target_version, "state": r.state, "requester": r.requester,
                "created_at": r.created_at.to_string(),
            })
        })
        .collect();
    let latest = migrations.last().map(|m| m.version.clone());
    Ok(json!({
        "project": project,
        "migrations": migrations,
        "db_sets": db_sets,
        "runs": recent,
        "can_author": viewer.user.can(Capability::Author),
        "run_form": { "target_version": latest, "direction": "up" },
        "errors": {},
        "inventory": project_inventory(state, &project, viewer).await?,
    }))
}

/// The inventory part of the project page: what the viewer may change and
/// the empty forms to do it.
async fn project_inventory(
    state: &AppState,
    project: &ProjectRow,
    viewer: &Viewer,
) -> Result<Value, ApiError> {
    let can_manage_targets = viewer.user.can(Capability::ManageTargets);
    let environments: Vec<String> = inventory::list_environments(&state.db)
        .await?
        .into_iter()
        .map(|e| e.name)
        .collect();
    // Webhooks are a manager's business, like in the API.
    let hooks = if can_manage_targets {
        webhooks::list(&state.db, project.id).await?
    } else {
        Vec::new()
    };
    Ok(json!({
        "can_manage_projects": viewer.user.can(Capability::ManageProjects),
        "can_manage_targets": can_manage_targets,
        "environments": environments,
        "webhooks": hooks,
        "events": webhooks::EVENTS,
        "forms": {
            "project": { "name": project.name, "description": project.description },
            "db_set": {},
            "rename": {},
            "webhook": { "events": webhooks::EVENTS },
        },
        "errors": { "project": {}, "db_set": {}, "rename": {}, "webhook": {} },
    }))
}

async fn project_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(slug): ApiPath<String>,
) -> Result<Html<String>, ApiError> {
    let context = project_context(&state, &slug, &viewer).await?;
    render(&state, "projects/detail.html", context, Some(&viewer))
}

/// The form's down script: absent when "cannot be rolled back" is ticked,
/// else the text, even empty (rolling back needs no SQL).
fn form_down_sql(form: &HashMap<String, String>) -> Option<String> {
    if form.contains_key("irreversible") {
        None
    } else {
        Some(form.get("down_sql").cloned().unwrap_or_default())
    }
}

async fn new_migration_page(
    State(state): State<AppState>,
    viewer: Viewer<rules::Author>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Html<String>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    render(
        &state,
        "projects/new_migration.html",
        json!({ "project": project, "form": {}, "errors": {} }),
        Some(&viewer.plain()),
    )
}

async fn create_migration_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Author>,
    ApiPath(slug): ApiPath<String>,
    ApiForm(form): ApiForm<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let body = CreateMigration {
        version: field("version"),
        name: field("name"),
        up_sql: field("up_sql"),
        down_sql: form_down_sql(&form),
        transactional: None,
        allow_out_of_order: form.contains_key("allow_out_of_order"),
    };
    match create_migration(&state, &viewer.user, slug.clone(), body).await {
        Ok(created) => Ok(see_other(&format!(
            "/projects/{slug}/migrations/{}",
            created.version
        ))),
        Err(err) => {
            let errors = field_errors(err)?;
            let mut conn = state.db.acquire().await?;
            let project = project(&mut conn, &slug).await?;
            let page = render(
                &state,
                "projects/new_migration.html",
                json!({ "project": project, "form": form, "errors": errors }),
                Some(&viewer.plain()),
            )?;
            Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY))
        }
    }
}

async fn migration_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((slug, version)): ApiPath<(String, String)>,
) -> Result<Html<String>, ApiError> {
    let version = Version::parse(&version).map_err(|_| ApiError::NotFound("migration"))?;
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    let migration = migrations::by_version(&mut conn, project.id, &version)
        .await?
        .ok_or(ApiError::NotFound("migration"))?;
    let revisions = migrations::revisions(&mut conn, migration.id).await?;
    let reviews = review_for_project(&mut conn, project.id, &migration).await?;
    drop(conn);
    let schemas =
        crate::service::snapshots::project_version_schema(&state, &slug, &version.to_string())
            .await?;
    render(
        &state,
        "projects/migration.html",
        json!({ "project": project, "migration": migration, "revisions": revisions, "reviews": reviews, "schemas": schemas, "can_author": viewer.user.can(Capability::Author) }),
        Some(&viewer),
    )
}

async fn request_run_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Author>,
    ApiPath(slug): ApiPath<String>,
    ApiForm(form): ApiForm<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let field = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let parsed = (|| {
        let db_set_id = field("db_set_id")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ApiError::invalid("db_set_id", "choose a DB set"))?;
        let direction = match field("direction").as_deref() {
            Some("down") => Direction::Down,
            Some("up") | None => Direction::Up,
            Some(_) => return Err(ApiError::invalid("direction", "up or down")),
        };
        let number = |k: &str| -> Result<Option<i32>, ApiError> {
            field(k)
                .map(|v| {
                    v.parse()
                        .map_err(|_| ApiError::invalid(k, "must be a whole number"))
                })
                .transpose()
        };
        Ok(RequestRun {
            db_set_id,
            direction,
            target_version: field("target_version").unwrap_or_default(),
            note: field("note"),
            stop_on_failure: Some(form.contains_key("stop_on_failure")),
            concurrency: number("concurrency")?,
            canary: number("canary")?,
        })
    })();
    let result = match parsed {
        Ok(body) => request_run(&state, &viewer.user, slug.clone(), body).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(run) => Ok(see_other(&format!("/runs/{}", run.id))),
        Err(err) => {
            let errors = match err {
                ApiError::Conflict { message, .. } => json!({ "target_version": message }),
                other => field_errors(other)?,
            };
            let mut context = project_context(&state, &slug, &viewer.plain()).await?;
            context["run_form"] = json!(form);
            context["errors"] = errors;
            let page = render(
                &state,
                "projects/detail.html",
                context,
                Some(&viewer.plain()),
            )?;
            Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY))
        }
    }
}

async fn migration_and_project(
    state: &AppState,
    slug: &str,
    version: &str,
) -> Result<
    (
        common::store::inventory::ProjectRow,
        migrations::MigrationRow,
    ),
    ApiError,
> {
    let version = Version::parse(version).map_err(|_| ApiError::NotFound("migration"))?;
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, slug).await?;
    let migration = migrations::by_version(&mut conn, project.id, &version)
        .await?
        .ok_or(ApiError::NotFound("migration"))?;
    Ok((project, migration))
}

async fn edit_migration_page(
    State(state): State<AppState>,
    viewer: Viewer<rules::Author>,
    ApiPath((slug, version)): ApiPath<(String, String)>,
) -> Result<Html<String>, ApiError> {
    let (project, migration) = migration_and_project(&state, &slug, &version).await?;
    let form = json!({
        "name": migration.name,
        "up_sql": migration.up_sql,
        "down_sql": migration.down_sql.as_deref().unwrap_or(""),
        "irreversible": migration.down_sql.is_none().then_some("on"),
    });
    render(
        &state,
        "projects/edit_migration.html",
        json!({ "project": project, "migration": migration, "form": form, "errors": {} }),
        Some(&viewer.plain()),
    )
}

async fn edit_migration_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Author>,
    ApiPath((slug, version)): ApiPath<(String, String)>,
    ApiForm(form): ApiForm<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let body = EditMigration {
        name: form.get("name").cloned(),
        up_sql: form.get("up_sql").cloned(),
        down_sql: Some(form_down_sql(&form)),
        transactional: None,
    };
    match edit_migration(&state, &viewer.user, &slug, &version, body).await {
        Ok(edited) => Ok(see_other(&format!(
            "/projects/{slug}/migrations/{}",
            edited.version
        ))),
        Err(err) => {
            let errors = field_errors(err)?;
            let (project, migration) = migration_and_project(&state, &slug, &version).await?;
            let page = render(
                &state,
                "projects/edit_migration.html",
                json!({ "project": project, "migration": migration, "form": form, "errors": errors }),
                Some(&viewer.plain()),
            )?;
            Ok(with_status(page, StatusCode::UNPROCESSABLE_ENTITY))
        }
    }
}

#[derive(Debug, serde::Deserialize)]
struct DiffQuery {
    from: Option<i32>,
    to: Option<i32>,
}

async fn diff_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((slug, version)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<DiffQuery>,
) -> Result<Html<String>, ApiError> {
    let (project, migration) = migration_and_project(&state, &slug, &version).await?;
    let mut conn = state.db.acquire().await?;
    let revisions = migrations::revisions(&mut conn, migration.id).await?;
    let to = q.to.unwrap_or(migration.revision);
    let from = q.from.unwrap_or(to - 1).max(1);
    let pick = |n: i32| {
        revisions
            .iter()
            .find(|r| r.revision == n)
            .ok_or(ApiError::NotFound("revision"))
    };
    let (old, new) = (pick(from)?, pick(to)?);
    render(
        &state,
        "projects/diff.html",
        json!({
            "project": project,
            "migration": migration,
            "from": old,
            "to": new,
            "revisions": revisions.iter().map(|r| r.revision).collect::<Vec<_>>(),
            "up": diff::side_by_side(&old.up_sql, &new.up_sql),
            "down": diff::side_by_side(old.down_sql.as_deref().unwrap_or(""), new.down_sql.as_deref().unwrap_or("")),
            "reversible": { "from": old.down_sql.is_some(), "to": new.down_sql.is_some() },
        }),
        Some(&viewer),
    )
}
