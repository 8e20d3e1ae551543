//! The DB set page (its targets a page at a time, with the forms to add one,
//! add many, edit, delete and test a connection) and the target state page.
//! Every form calls the service function of the JSON API.
//!
//! A target's password is write-only here too: forms have an empty password
//! field, and a refused form is re-rendered without what was typed in it.

use axum::{
    extract::State,
    response::{Html, Response},
};
use common::{
    domain::{
        Capability, Engine, TlsMode,
        baseline::Source,
        fleet::{Sort, StateFilter},
    },
    store::{
        self,
        inventory::{self, TargetRow},
    },
    targets::Password,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Viewer,
    inventory::{FormData, field_errors, text, unprocessable},
    render, see_other,
};
use crate::{
    auth::rules,
    error::{ApiError, ApiForm, ApiPath, ApiQuery},
    paging::PageQuery,
    routes::{Access, Routes},
    service::{
        db_sets::{UpdateDbSet, update_db_set},
        inventory::{db_set, with_standings},
        targets::{
            TargetInput, TargetPatch,
            baseline::{BaselineBody, baseline_target},
            bulk::{BulkDefaults, BulkTargets, create_targets},
            create_target, delete_target,
            live::{target_state, test_connection},
            update_target,
        },
    },
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/projects/{slug}/db-sets/{id}",
            Access::Needs(Capability::View),
            db_set_page,
        )
        .post(
            "/projects/{slug}/db-sets/{id}/targets",
            Access::Needs(Capability::ManageTargets),
            create_target_form,
        )
        .post(
            "/projects/{slug}/db-sets/{id}/window",
            Access::Needs(Capability::ManageTargets),
            window_form,
        )
        .post(
            "/projects/{slug}/db-sets/{id}/targets/bulk",
            Access::Needs(Capability::ManageTargets),
            bulk_form,
        )
        .get(
            "/targets/{id}",
            Access::Needs(Capability::View),
            target_page,
        )
        .get(
            "/targets/{id}/schema",
            Access::Needs(Capability::View),
            schema_page,
        )
        .post(
            "/targets/{id}/drift/accept",
            Access::Needs(Capability::Administer),
            accept_drift_form,
        )
        .post(
            "/targets/{id}/resolve",
            Access::Needs(Capability::Administer),
            resolve_form,
        )
        .post(
            "/targets/{id}/baseline",
            Access::Needs(Capability::Administer),
            baseline_form,
        )
        .post(
            "/targets/{id}/edit",
            Access::Needs(Capability::ManageTargets),
            edit_target_form,
        )
        .post(
            "/targets/{id}/delete",
            Access::Needs(Capability::ManageTargets),
            delete_target_form,
        )
        .post(
            "/targets/{id}/test",
            Access::Needs(Capability::ManageTargets),
            test_form,
        )
}

/// The DB set page with a page of its targets; `extra` holds a refused
/// form's input and errors, or a connection test's result.
async fn render_db_set(
    state: &AppState,
    viewer: &Viewer,
    slug: &str,
    id: Uuid,
    page: Option<&PageQuery>,
    listing: Listing,
    extra: Value,
) -> Result<Html<String>, ApiError> {
    let limit = page.map_or(PageQuery::DEFAULT, PageQuery::limit);
    let cursor = page.and_then(|p| p.cursor.as_deref());
    let mut conn = state.db.acquire().await?;
    let (project, set) = db_set(&mut conn, slug, id).await?;
    let environment = inventory::environment(&mut conn, &set.environment).await?;
    drop(conn);
    let fleet = crate::service::snapshots::fleet_schema(state, set.id).await?;
    let mut conn = state.db.acquire().await?;
    let Listing {
        filter,
        sort,
        offset,
    } = listing;
    let from = match (sort, cursor) {
        (Sort::Name, Some(name)) => store::fleet::Paging::AfterName(name),
        (Sort::Name, None) => store::fleet::Paging::Start,
        _ => store::fleet::Paging::Offset(offset),
    };
    let mut standings =
        store::fleet::standings(&mut conn, set.id, filter, sort, from, limit + 1).await?;
    let more = standings.len() as i64 > limit;
    standings.truncate(limit as usize);
    let counts = store::fleet::counts(&mut conn, set.id).await?;
    // Only the page's targets are read, whatever the fleet's size.
    let ids: Vec<Uuid> = standings.iter().map(|s| s.target_id).collect();
    let targets = with_standings(inventory::targets_by_ids(&mut conn, &ids).await?, standings);
    // The next page: after the last name shown, or so many further on.
    let next_cursor = (more && sort == Sort::Name)
        .then(|| targets.last().map(|t| t.name.clone()))
        .flatten();
    let next_offset = (more && sort != Sort::Name).then_some(offset + limit);
    let filters: Vec<Value> = [
        (StateFilter::UpToDate, "up to date", counts.up_to_date),
        (StateFilter::Behind, "behind", counts.behind),
        (StateFilter::Dirty, "dirty", counts.dirty),
        (StateFilter::Drifted, "drifted", counts.drifted),
        (StateFilter::Unreachable, "unreachable", counts.unreachable),
        (StateFilter::Failed, "failed last run", counts.failed),
    ]
    .into_iter()
    .map(|(f, label, count)| json!({ "value": f, "label": label, "count": count }))
    .collect();
    let mut context = json!({
        "summary": common::domain::fleet::summary(&counts),
        "counts": counts,
        "filter": filter,
        "filters": filters,
        "sort": sort,
        "offset": offset,
        "next_offset": next_offset,
        "project": project,
        "set": set,
        "targets": targets,
        "cursor": cursor,
        "next_cursor": next_cursor,
        "can_manage": viewer.user.can(Capability::ManageTargets),
        "engines": Engine::ALL,
        "tls_modes": TlsMode::ALL,
        "add": {
            "form": {
                "engine": Engine::Postgres,
                "port": Engine::Postgres.default_port(),
                "tls_mode": TlsMode::default(),
                "worker_pool": "default",
            },
            "errors": {},
        },
        "bulk": { "form": { "engine": Engine::Postgres, "tls_mode": TlsMode::default() }, "errors": {} },
        "edit": { "id": null, "form": {}, "errors": {} },
        "probe": null,
        "environment_window": environment.and_then(|e| e.maintenance_window),
        "fleet": fleet,
        "window": { "form": { "maintenance_window": set.maintenance_window }, "errors": {} },
    });
    if let (Some(ctx), Some(extra)) = (context.as_object_mut(), extra.as_object()) {
        ctx.extend(extra.clone());
    }
    render(state, "targets/db_set.html", context, Some(viewer))
}

async fn db_set_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
    ApiQuery(page): ApiQuery<PageQuery>,
    ApiQuery(shown): ApiQuery<ShownQuery>,
) -> Result<Html<String>, ApiError> {
    let listing = Listing {
        filter: match shown.state.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse()
                    .map_err(|_| ApiError::invalid("state", "no such state to filter by"))?,
            ),
        },
        sort: match shown.sort.as_deref() {
            None | Some("") => Sort::default(),
            Some(text) => text
                .parse()
                .map_err(|_| ApiError::invalid("sort", "no such order"))?,
        },
        offset: shown.offset.unwrap_or(0).max(0),
    };
    render_db_set(&state, &viewer, &slug, id, Some(&page), listing, json!({})).await
}

/// Which of a DB set's targets its page lists, and in what order.
#[derive(Debug, Default, serde::Deserialize)]
struct ShownQuery {
    state: Option<String>,
    sort: Option<String>,
    offset: Option<i64>,
}

/// The targets a DB set page lists: by where they stand, in an order,
/// from a place in it (name order pages by the last name shown instead).
#[derive(Debug, Default, Clone, Copy)]
struct Listing {
    filter: Option<StateFilter>,
    sort: Sort,
    offset: i64,
}

/// What a refused form showed, minus the password (never sent back) and
/// the CSRF token (the page has its own).
fn kept(form: &FormData) -> Value {
    let mut form = form.clone();
    form.remove("password");
    form.remove("csrf_token");
    json!(form)
}

fn non_empty(form: &FormData, key: &str) -> Option<String> {
    Some(text(form, key).trim().to_owned()).filter(|v| !v.is_empty())
}

fn password(form: &FormData) -> Option<Password> {
    form.get("password")
        .filter(|p| !p.is_empty())
        .map(|p| Password::new(p.clone()))
}

fn port(form: &FormData) -> Result<i64, ApiError> {
    text(form, "port")
        .trim()
        .parse()
        .map_err(|_| ApiError::invalid("port", "must be a number between 1 and 65535"))
}

async fn create_target_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let input = port(&form).map(|port| TargetInput {
        name: text(&form, "name"),
        engine: text(&form, "engine"),
        host: text(&form, "host"),
        port,
        database: text(&form, "database"),
        username: text(&form, "username"),
        password: password(&form),
        tls_mode: non_empty(&form, "tls_mode"),
        session_settings: text(&form, "session_settings"),
        worker_pool: non_empty(&form, "worker_pool"),
    });
    let result = match input {
        Ok(input) => create_target(&state, &viewer.user, &slug, id, &input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(see_other(&format!("/projects/{slug}/db-sets/{id}"))),
        Err(err) => {
            let extra = json!({ "add": { "form": kept(&form), "errors": field_errors(err)? } });
            let page = db_set_again(&state, &viewer.plain(), &slug, id, extra).await?;
            Ok(unprocessable(page))
        }
    }
}

/// Sets (or clears, to follow the environment) the DB set's own
/// maintenance window.
async fn window_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let body = UpdateDbSet {
        maintenance_window: Some(Some(text(&form, "maintenance_window"))),
        ..Default::default()
    };
    match update_db_set(&state, &viewer.user, &slug, id, &body).await {
        Ok(_) => Ok(see_other(&format!("/projects/{slug}/db-sets/{id}"))),
        Err(err) => {
            let extra = json!({ "window": { "form": kept(&form), "errors": field_errors(err)? } });
            let page = db_set_again(&state, &viewer.plain(), &slug, id, extra).await?;
            Ok(unprocessable(page))
        }
    }
}

/// Bulk errors name `lines[3]` or `defaults.engine`; the form's fields are
/// `lines` and `engine`.
fn bulk_errors(err: ApiError) -> Result<Value, ApiError> {
    match err {
        ApiError::Invalid { field, message } => {
            if let Some(default) = field.strip_prefix("defaults.") {
                Ok(json!({ default: message }))
            } else if let Some(n) = field
                .strip_prefix("lines[")
                .and_then(|r| r.strip_suffix(']'))
            {
                Ok(json!({ "lines": format!("line {n}: {message}") }))
            } else {
                Ok(json!({ "lines": message }))
            }
        }
        ApiError::Conflict {
            code: "duplicate_name",
            message,
        } => Ok(json!({ "lines": message })),
        other => Err(other),
    }
}

async fn bulk_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let body = BulkTargets {
        targets: None,
        lines: Some(text(&form, "lines")),
        defaults: BulkDefaults {
            engine: non_empty(&form, "engine"),
            username: non_empty(&form, "username"),
            password: password(&form),
            tls_mode: non_empty(&form, "tls_mode"),
            worker_pool: non_empty(&form, "worker_pool"),
            session_settings: text(&form, "session_settings"),
            name_prefix: non_empty(&form, "name_prefix"),
        },
    };
    match create_targets(&state, &viewer.user, &slug, id, &body).await {
        Ok(_) => Ok(see_other(&format!("/projects/{slug}/db-sets/{id}"))),
        Err(err) => {
            let extra = json!({ "bulk": { "form": kept(&form), "errors": bulk_errors(err)? } });
            let page = db_set_again(&state, &viewer.plain(), &slug, id, extra).await?;
            Ok(unprocessable(page))
        }
    }
}

/// The target (visible: its DB set and project are live) with the slug of
/// its project and its DB set's id and name.
async fn located(
    state: &AppState,
    id: Uuid,
) -> Result<(TargetRow, String, Uuid, String), ApiError> {
    let mut conn = state.db.acquire().await?;
    let target = inventory::target(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("target"))?;
    let (slug, set_id, set_name) = inventory::target_location(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("target"))?;
    Ok((target, slug, set_id, set_name))
}

async fn edit_target_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let (_, slug, set_id, _) = located(&state, id).await?;
    // The form shows every field, so every field is sent. The password
    // field starts empty: left empty it keeps the stored password; the
    // checkbox clears it.
    let new_password = if form.contains_key("clear_password") {
        Some(None)
    } else {
        password(&form).map(Some)
    };
    let patch = port(&form).map(|port| TargetPatch {
        name: Some(text(&form, "name")),
        engine: Some(text(&form, "engine")),
        host: Some(text(&form, "host")),
        port: Some(port),
        database: Some(text(&form, "database")),
        username: Some(text(&form, "username")),
        password: new_password,
        tls_mode: Some(text(&form, "tls_mode")),
        session_settings: Some(text(&form, "session_settings")),
        // Empty means the default pool, as when the target was added.
        worker_pool: Some(non_empty(&form, "worker_pool").unwrap_or_else(|| "default".into())),
    });
    let result = match patch {
        Ok(patch) => update_target(&state, &viewer.user, id, &patch).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(see_other(&format!("/projects/{slug}/db-sets/{set_id}"))),
        Err(err) => {
            let extra =
                json!({ "edit": { "id": id, "form": kept(&form), "errors": field_errors(err)? } });
            let page = db_set_again(&state, &viewer.plain(), &slug, set_id, extra).await?;
            Ok(unprocessable(page))
        }
    }
}

async fn delete_target_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let (_, slug, set_id, _) = located(&state, id).await?;
    delete_target(&state, &viewer.user, id).await?;
    Ok(see_other(&format!("/projects/{slug}/db-sets/{set_id}")))
}

/// Tests the connection and shows the result on the DB set page (not a
/// redirect: the result is this response's content).
async fn test_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Html<String>, ApiError> {
    let (target, slug, set_id, _) = located(&state, id).await?;
    let probe = test_connection(&state, &viewer.user, id).await?;
    let mut result = json!(probe);
    result["target_id"] = json!(target.id);
    result["target_name"] = json!(target.name);
    db_set_again(
        &state,
        &viewer.plain(),
        &slug,
        set_id,
        json!({ "probe": result }),
    )
    .await
}

/// The DB set page as first shown, with `extra`: a refused form's input and
/// errors, or a connection test's result.
async fn db_set_again(
    state: &AppState,
    viewer: &Viewer,
    slug: &str,
    id: Uuid,
    extra: Value,
) -> Result<Html<String>, ApiError> {
    render_db_set(state, viewer, slug, id, None, Listing::default(), extra).await
}

/// What the hub knows about the target, and whether the target's own
/// history agrees (read live, bounded).
async fn target_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Html<String>, ApiError> {
    render_target(&state, &viewer, id, Value::Null).await
}

/// What the schema page is asked for: a snapshot and a search, or the
/// difference between two snapshots.
#[derive(Debug, Default, serde::Deserialize)]
struct SchemaPageQuery {
    snapshot: Option<Uuid>,
    q: Option<String>,
    from: Option<Uuid>,
    to: Option<Uuid>,
}

/// The target's schema (searchable), its snapshot history, and the
/// difference between two snapshots.
async fn schema_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<SchemaPageQuery>,
) -> Result<Html<String>, ApiError> {
    use crate::service::snapshots::{target_schema, target_schema_diff, target_snapshots};
    let (target, slug, set_id, set_name) = located(&state, id).await?;
    let shown = target_schema(&state, id, query.snapshot, query.q.as_deref()).await?;
    let history = target_snapshots(&state, id).await?;
    let diff = match (query.from, query.to) {
        (Some(from), Some(to)) => Some(target_schema_diff(&state, id, from, to).await?),
        _ => None,
    };
    let drift = crate::service::schema_drift::target_drift(&state, id).await?;
    render(
        &state,
        "targets/schema.html",
        json!({
            "drift": drift,
            "can_accept": viewer.user.can(Capability::Administer),
            "target": target,
            "project_slug": slug,
            "set": { "id": set_id, "name": set_name },
            "shown": shown,
            "history": history,
            "q": query.q,
            "diff": diff,
            "from": query.from,
            "to": query.to,
        }),
        Some(&viewer),
    )
}

/// The target page; `baselined` is a baseline's result to show.
async fn render_target(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    baselined: Value,
) -> Result<Html<String>, ApiError> {
    let (target, slug, set_id, set_name) = located(state, id).await?;
    let live = target_state(state, id).await?;
    let schema_drift = crate::service::schema_drift::target_drift(state, id).await?;
    render(
        state,
        "targets/state.html",
        json!({
            "schema_drift": schema_drift,
            "target": target,
            "project_slug": slug,
            "set": { "id": set_id, "name": set_name },
            "applied": live.applied,
            "dirty": live.dirty,
            "drift": live.drift,
            "can_manage": viewer.user.can(Capability::ManageTargets),
            "can_resolve": viewer.user.can(Capability::Administer),
            "baseline_sources": Source::ALL.map(|s| json!({ "value": s.as_str(), "table": s.default_table() })),
            "baselined": baselined,
        }),
        Some(viewer),
    )
}

/// An admin adopts the target: at a version (`from` empty) or from another
/// tool's history table. The result is shown on the target page; a refusal
/// is an error page saying why.
async fn baseline_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Html<String>, ApiError> {
    let from = non_empty(&form, "from");
    let body = BaselineBody {
        // The form has both fields; the chosen source decides which counts.
        version: if from.is_none() {
            non_empty(&form, "version")
        } else {
            None
        },
        table: from.as_ref().and_then(|_| non_empty(&form, "table")),
        from,
        allow_mismatch: form.contains_key("allow_mismatch"),
    };
    let result = baseline_target(&state, &viewer.user, id, &body, true).await?;
    render_target(
        &state,
        &viewer.plain(),
        id,
        serde_json::to_value(result).map_err(anyhow::Error::from)?,
    )
    .await
}

/// An admin accepts the target's drift as its new baseline.
async fn accept_drift_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<std::collections::HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    let body = crate::service::schema_drift::AcceptDriftBody {
        reason: form.get("reason").cloned().unwrap_or_default(),
    };
    crate::service::schema_drift::accept_drift(&state, &viewer.user, id, body).await?;
    Ok(super::see_other(&format!("/targets/{id}/schema")))
}

/// An admin's answer for a dirty target: the interrupted migration counts
/// as applied or as rolled back, or its script resumes.
async fn resolve_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<std::collections::HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let body =
        crate::service::targets::resolve::ResolveBody {
            version: field("version"),
            outcome: field("as"),
            reason: field("reason"),
            from_statement: match form.get("from_statement").map(|v| v.trim()) {
                None | Some("") => None,
                Some(v) => Some(v.parse().map_err(|_| {
                    ApiError::invalid("from_statement", "must be a statement number")
                })?),
            },
        };
    crate::service::targets::resolve::resolve_target(&state, &viewer.user, id, body).await?;
    Ok(super::see_other(&format!("/targets/{id}")))
}
