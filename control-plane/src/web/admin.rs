//! Admin pages: users and roles.

use std::collections::HashMap;

use axum::{
    extract::State,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use common::domain::Capability;
use common::{domain::Role, store::users};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Viewer, render, see_other};
use crate::{
    auth::rules,
    error::{ApiError, ApiForm, ApiPath},
    routes::{Access, Routes},
    service::users::{
        self as user_service, CreateUser, UpdateUser, UserView, parse_email, revoke_users_token,
    },
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/admin/workers",
            Access::Needs(Capability::Administer),
            workers_page,
        )
        .get(
            "/admin/users",
            Access::Needs(Capability::Administer),
            users_page,
        )
        .post(
            "/admin/users",
            Access::Needs(Capability::Administer),
            create_user,
        )
        .post(
            "/admin/users/{id}",
            Access::Needs(Capability::Administer),
            update_user,
        )
        .post(
            "/admin/users/{id}/tokens/{token_id}/revoke",
            Access::Needs(Capability::Administer),
            revoke_token,
        )
}

async fn render_users(
    state: &AppState,
    viewer: &Viewer<rules::Administer>,
    extra: Value,
) -> Result<Html<String>, ApiError> {
    let list: Vec<UserView> = users::list(&state.db)
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    let tokens = users::list_all_tokens(&state.db).await?;
    let now = time::OffsetDateTime::now_utc();
    let tokens: Vec<Value> = tokens
        .into_iter()
        .map(|t| {
            let live = t.token.revoked_at.is_none() && t.token.expires_at > now;
            json!({ "token": t, "live": live })
        })
        .collect();
    let mut context =
        json!({ "users": list, "tokens": tokens, "form": { "role": "user" }, "errors": {} });
    if let (Some(ctx), Some(extra)) = (context.as_object_mut(), extra.as_object()) {
        ctx.extend(extra.clone());
    }
    render(state, "admin/users.html", context, Some(&viewer.plain()))
}

async fn users_page(
    State(state): State<AppState>,
    viewer: Viewer<rules::Administer>,
) -> Result<Html<String>, ApiError> {
    render_users(&state, &viewer, json!({})).await
}

async fn create_user(
    State(state): State<AppState>,
    viewer: Viewer<rules::Administer>,
    ApiForm(form): ApiForm<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let role: Option<Role> = form.get("role").and_then(|r| r.parse().ok());
    let email = parse_email("email", form.get("email").map(String::as_str).unwrap_or(""));
    let name = crate::input::optional_text(
        "name",
        form.get("name").map(|n| n.trim()).unwrap_or_default(),
        200,
    );
    let mut errors = serde_json::Map::new();
    if let Err(e) = &email {
        errors.insert("email".into(), json!(e.to_string()));
    }
    if let Err(e) = &name {
        errors.insert("name".into(), json!(e.to_string()));
    }
    if role.is_none() {
        errors.insert("role".into(), json!("Choose user, manager or admin."));
    }
    if let (Ok(email), Ok(name), Some(role)) = (email, name, role) {
        let body = CreateUser { email, name, role };
        match user_service::create_user(&state, &viewer.user, &body).await {
            Ok(_) => return Ok(see_other("/admin/users")),
            Err(ApiError::Conflict {
                code: "duplicate_email",
                ..
            }) => {
                errors.insert(
                    "email".into(),
                    json!("A user with this e-mail already exists."),
                );
            }
            Err(other) => return Err(other),
        }
    }
    let mut page = render_users(&state, &viewer, json!({ "form": form, "errors": errors }))
        .await?
        .into_response();
    *page.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(page)
}

async fn update_user(
    State(state): State<AppState>,
    viewer: Viewer<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let role: Option<Role> = form.get("role").and_then(|r| r.parse().ok());
    let disabled: Option<bool> = form.get("disabled").and_then(|d| d.parse().ok());
    user_service::update_user(&state, &viewer.user, id, &UpdateUser { role, disabled }).await?;
    Ok(see_other("/admin/users"))
}

/// Revokes any user's API token (the section of the users page).
async fn revoke_token(
    State(state): State<AppState>,
    viewer: Viewer<rules::Administer>,
    ApiPath((id, token_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    revoke_users_token(&state, &viewer.user, id, token_id).await?;
    Ok(see_other("/admin/users"))
}

/// The worker fleet: per pool, the jobs due now, due later and left over,
/// the oldest due job's age and the workers live, silent and stopped (a
/// pool with due jobs and no live worker is an alert); then each worker.
async fn workers_page(
    State(state): State<AppState>,
    viewer: Viewer<rules::Administer>,
) -> Result<Html<String>, ApiError> {
    let workers = common::store::workers::list(&state.db).await?;
    let now = time::OffsetDateTime::now_utc();
    let mut pools: std::collections::BTreeMap<String, PoolView> = Default::default();
    let rows: Vec<Value> = workers
        .iter()
        .map(|w| {
            let age = (now - w.last_heartbeat_at).whole_seconds();
            // Three missed heartbeats (5 s apart) and the worker counts as gone.
            let alive = w.stopped_at.is_none() && age < 20;
            let pool = pools.entry(w.pool.clone()).or_default();
            match (w.stopped_at.is_some(), alive) {
                (true, _) => pool.stopped += 1,
                (false, true) => pool.live += 1,
                (false, false) => pool.silent += 1,
            }
            json!({ "worker": w, "alive": alive })
        })
        .collect();
    for b in common::queue::backlog(&mut *state.db.acquire().await?).await? {
        let pool = b.pool.clone();
        pools.entry(pool).or_default().backlog = Some(b);
    }
    let pools: Vec<Value> = pools
        .into_iter()
        .map(|(name, p)| {
            let due = p.backlog.as_ref().map_or(0, |b| b.due);
            json!({
                "pool": name,
                "due": due,
                "later": p.backlog.as_ref().map_or(0, |b| b.later),
                "left_over": p.backlog.as_ref().map_or(0, |b| b.left_over),
                "oldest_due_ms": p.backlog.as_ref()
                    .and_then(|b| b.oldest_due_seconds)
                    .map(|s| (s * 1000.0) as i64),
                "live": p.live,
                "silent": p.silent,
                "stopped": p.stopped,
                "alert": due > 0 && p.live == 0,
            })
        })
        .collect();
    render(
        &state,
        "admin/workers.html",
        json!({ "workers": rows, "pools": pools }),
        Some(&viewer.plain()),
    )
}

/// One pool on the fleet page.
#[derive(Debug, Default)]
struct PoolView {
    backlog: Option<common::queue::Backlog>,
    live: u32,
    silent: u32,
    stopped: u32,
}
