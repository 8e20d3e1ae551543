//! Pages every signed-in person sees: dashboard, projects, tokens, audit.

use std::collections::HashMap;

use axum::{
    extract::State,
    response::{Html, IntoResponse, Response},
};
use common::{
    domain::{Capability, Role},
    store::{
        audit::{self as audit_store, Filter},
        inventory,
        runs::{self, DashboardList},
        users,
    },
};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use uuid::Uuid;

use super::{Viewer, render, see_other};
use crate::{
    auth::rules,
    error::{ApiError, ApiForm, ApiPath, ApiQuery},
    paging::PageQuery,
    routes::{Access, Routes},
    service::me::{DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, issue_token},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get("/", Access::Needs(Capability::View), dashboard)
        .get("/projects", Access::Needs(Capability::View), projects)
        .get("/tokens", Access::Needs(Capability::Author), tokens)
        .post("/tokens", Access::Needs(Capability::Author), create_token)
        .post(
            "/tokens/{id}/revoke",
            Access::Needs(Capability::View),
            revoke_token,
        )
        .get("/audit", Access::Needs(Capability::View), audit)
}

async fn dashboard(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Html<String>, ApiError> {
    let waiting = if viewer.user.can(Capability::Approve) {
        runs::dashboard(
            &state.db,
            DashboardList::AwaitingApprovalBy(viewer.user.id),
            50,
        )
        .await?
    } else {
        Vec::new()
    };
    let mine = runs::dashboard(&state.db, DashboardList::RequestedBy(viewer.user.id), 20).await?;
    let running = runs::dashboard(&state.db, DashboardList::Active, 50).await?;
    let failures = runs::dashboard(&state.db, DashboardList::RecentFailures, 20).await?;
    render(
        &state,
        "dashboard.html",
        json!({ "waiting": waiting, "mine": mine, "running": running, "failures": failures }),
        Some(&viewer),
    )
}

async fn projects(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Html<String>, ApiError> {
    projects_page(&state, &viewer, Some(&page), json!({}), json!({})).await
}

/// The list of projects (a page of it), with the admin's create form
/// holding `form` and its `errors`.
pub(super) async fn projects_page(
    state: &AppState,
    viewer: &Viewer,
    page: Option<&PageQuery>,
    form: Value,
    errors: Value,
) -> Result<Html<String>, ApiError> {
    let limit = page.map_or(PageQuery::DEFAULT, PageQuery::limit);
    let cursor = page.and_then(|p| p.cursor.as_deref());
    let mut rows = inventory::list_projects(&state.db, cursor, limit + 1).await?;
    let next_cursor = (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].slug.clone());
    rows.truncate(limit as usize);
    render(
        state,
        "projects.html",
        json!({
            "projects": rows,
            "next_cursor": next_cursor,
            "can_create": viewer.user.can(Capability::ManageProjects),
            "form": form,
            "errors": errors,
        }),
        Some(viewer),
    )
}

/// Roles a viewer may give a token: their own and below.
fn grantable(role: Role) -> Vec<&'static str> {
    Role::ALL
        .iter()
        .filter(|r| **r <= role)
        .map(|r| r.as_str())
        .collect()
}

async fn tokens_page(
    state: &AppState,
    viewer: &Viewer<rules::Author>,
    extra: Value,
) -> Result<Html<String>, ApiError> {
    let list = users::list_tokens(&state.db, viewer.user.id).await?;
    let mut context = json!({
        "tokens": list,
        "roles": grantable(viewer.user.role),
        "form": { "role": viewer.user.role },
        "errors": {},
    });
    if let (Some(ctx), Some(extra)) = (context.as_object_mut(), extra.as_object()) {
        ctx.extend(extra.clone());
    }
    render(state, "tokens.html", context, Some(&viewer.plain()))
}

async fn tokens(
    State(state): State<AppState>,
    viewer: Viewer<rules::Author>,
) -> Result<Html<String>, ApiError> {
    tokens_page(&state, &viewer, json!({})).await
}

async fn create_token(
    State(state): State<AppState>,
    viewer: Viewer<rules::Author>,
    ApiForm(form): ApiForm<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let name = form
        .get("name")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let role: Role = form
        .get("role")
        .and_then(|r| r.parse().ok())
        .unwrap_or(viewer.user.role);
    let days: Option<i64> = form
        .get("expires_in_days")
        .and_then(|d| d.trim().parse().ok());
    let mut errors = serde_json::Map::new();
    if crate::input::required_text("name", &name, 100).is_err() {
        errors.insert(
            "name".into(),
            json!("Give the token a name of at most 100 characters, without control characters."),
        );
    }
    if !days.is_some_and(|d| (1..=MAX_TOKEN_DAYS).contains(&d)) {
        errors.insert(
            "expires_in_days".into(),
            json!(format!("Between 1 and {MAX_TOKEN_DAYS} days.")),
        );
    }
    if role > viewer.user.role {
        errors.insert(
            "role".into(),
            json!("A token can carry at most your own role."),
        );
    }
    if !errors.is_empty() {
        let mut page = tokens_page(&state, &viewer, json!({ "form": form, "errors": errors }))
            .await?
            .into_response();
        *page.status_mut() = axum::http::StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(page);
    }
    let mut tx = state.db.begin().await?;
    let created = issue_token(
        &mut tx,
        viewer.user.id,
        &name,
        role,
        days.unwrap_or(DEFAULT_TOKEN_DAYS),
        &viewer.user.actor(),
        viewer.user.ip.clone(),
    )
    .await?;
    tx.commit().await?;
    // Shown once, on this response only.
    let mut page = tokens_page(&state, &viewer, json!({ "new_token": created }))
        .await?
        .into_response();
    page.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(page)
}

async fn revoke_token(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let mut tx = state.db.begin().await?;
    if !users::revoke_token(&mut tx, viewer.user.id, id).await? {
        return Err(ApiError::NotFound("token"));
    }
    audit_store::append(
        &mut tx,
        &viewer.user.audit("token.revoked", "api_token", id),
    )
    .await?;
    tx.commit().await?;
    Ok(see_other("/tokens"))
}

async fn audit(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiQuery(q): ApiQuery<HashMap<String, String>>,
) -> Result<Html<String>, ApiError> {
    let text = |k: &str| {
        q.get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let time = |k: &str| -> Result<Option<OffsetDateTime>, ApiError> {
        text(k)
            .map(|v| {
                OffsetDateTime::parse(&v, &Rfc3339).map_err(|_| {
                    ApiError::invalid(k, "use an RFC 3339 time like 2026-01-31T00:00:00Z")
                })
            })
            .transpose()
    };
    let all_rows = viewer.user.can(Capability::ReadAllAudit);
    let project_id = match text("project") {
        Some(slug) => {
            let mut conn = state.db.acquire().await?;
            inventory::project_by_slug(&mut conn, &slug)
                .await?
                .map(|p| p.id)
                .or(Some(Uuid::nil()))
        }
        None => None,
    };
    let limit = 100;
    let filter = Filter {
        actor: if all_rows {
            text("actor").map(|a| a.to_lowercase())
        } else {
            None
        },
        actor_id: if all_rows { None } else { Some(viewer.user.id) },
        action: text("action"),
        project_id,
        since: time("since")?,
        until: time("until")?,
        before_seq: text("cursor").and_then(|c| c.parse().ok()),
        limit: limit + 1,
    };
    let mut rows = audit_store::list(&state.db, &filter).await?;
    let next_cursor = (rows.len() as i64 > limit).then(|| rows[limit as usize - 1].seq);
    rows.truncate(limit as usize);
    let rows = crate::service::audit::describe(&state, rows).await?;
    let actions = audit_store::actions(&state.db).await?;
    // The chain's state, for admins (who can verify it through the API too).
    let chain = if viewer.user.can(Capability::Administer) {
        Some(audit_store::verify(&state.db).await?)
    } else {
        None
    };
    let keep: Vec<(&str, String)> = ["actor", "action", "project", "since", "until"]
        .into_iter()
        .filter_map(|k| text(k).map(|v| (k, v)))
        .collect();
    render(
        &state,
        "audit.html",
        json!({
            "rows": rows,
            "actions": actions,
            "chain": chain,
            "all_rows": all_rows,
            "can_export": viewer.user.can(Capability::ExportAudit),
            "filter": keep.iter().cloned().collect::<HashMap<_, _>>(),
            "query": serde_urlencoded::to_string(&keep).unwrap_or_default(),
            "next_cursor": next_cursor,
        }),
        Some(&viewer),
    )
}
