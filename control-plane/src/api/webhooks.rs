//! Project webhooks (manager+). The URL is sealed at rest and never shown
//! again; responses carry only its scheme and host.

use axum::{Json, extract::State, http::StatusCode};
use common::{
    domain::Capability,
    store::{audit, webhooks},
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::inventory::project;
use crate::{
    app::AppState,
    auth::{Authorized, CurrentUser, rules},
    error::{ApiError, ApiJson, ApiPath},
    routes::{Access, Routes},
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/projects/{slug}/webhooks",
            Access::Needs(Capability::ManageTargets),
            list,
        )
        .post(
            "/projects/{slug}/webhooks",
            Access::Needs(Capability::ManageTargets),
            create,
        )
        .delete(
            "/projects/{slug}/webhooks/{id}",
            Access::Needs(Capability::ManageTargets),
            remove,
        )
        .get(
            "/projects/{slug}/webhooks/{id}/deliveries",
            Access::Needs(Capability::ManageTargets),
            deliveries,
        )
}

#[derive(Debug, Default, Deserialize)]
pub struct CreateWebhook {
    pub url: String,
    /// Absent: every event.
    pub events: Option<Vec<String>>,
}

/// `https://hooks.example.com/…`: enough to recognise, nothing secret.
fn url_hint(url: &reqwest::Url) -> String {
    format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or(""))
}

async fn create(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<webhooks::WebhookRow>), ApiError> {
    let hook = create_webhook(&state, &user, &slug, &body).await?;
    Ok((StatusCode::CREATED, Json(hook)))
}

/// Adds a webhook to the project; its URL is sealed and shown only as a hint.
pub async fn create_webhook(
    state: &AppState,
    user: &CurrentUser,
    slug: &str,
    body: &CreateWebhook,
) -> Result<webhooks::WebhookRow, ApiError> {
    let url = reqwest::Url::parse(body.url.trim())
        .map_err(|_| ApiError::invalid("url", "must be an absolute http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || body.url.len() > 2000
    {
        return Err(ApiError::invalid(
            "url",
            "must be an absolute http(s) URL of at most 2000 characters",
        ));
    }
    let events = body
        .events
        .clone()
        .unwrap_or_else(|| webhooks::EVENTS.iter().map(|e| e.to_string()).collect());
    if events.is_empty() {
        return Err(ApiError::invalid("events", "name at least one event"));
    }
    if let Some(bad) = events
        .iter()
        .find(|e| !webhooks::EVENTS.contains(&e.as_str()))
    {
        return Err(ApiError::invalid(
            "events",
            format!(
                "unknown event {bad:?}; known: {}",
                webhooks::EVENTS.join(", ")
            ),
        ));
    }
    let mut tx = state.db.begin().await?;
    let project = project(&mut tx, slug).await?;
    let hook = webhooks::insert(
        &mut tx,
        state.keys(),
        project.id,
        url.as_str(),
        &url_hint(&url),
        &events,
    )
    .await?;
    audit::append(
        &mut tx,
        &user
            .audit("webhook.created", "webhook", hook.id)
            .project(project.id)
            .details(json!({ "url": hook.url_hint, "events": hook.events })),
    )
    .await?;
    tx.commit().await?;
    Ok(hook)
}

async fn list(
    State(state): State<AppState>,
    _user: Authorized<rules::ManageTargets>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    let items = webhooks::list(&state.db, project.id).await?;
    Ok(Json(json!({ "items": items, "next_cursor": null })))
}

async fn remove(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<StatusCode, ApiError> {
    remove_webhook(&state, &user, &slug, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deactivates a webhook of the project; its pending deliveries are dropped.
pub async fn remove_webhook(
    state: &AppState,
    user: &CurrentUser,
    slug: &str,
    id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let project = project(&mut tx, slug).await?;
    if !webhooks::deactivate(&mut tx, project.id, id).await? {
        return Err(ApiError::NotFound("webhook"));
    }
    audit::append(
        &mut tx,
        &user
            .audit("webhook.removed", "webhook", id)
            .project(project.id),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn deliveries(
    State(state): State<AppState>,
    _user: Authorized<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    type DeliveryRow = (i64, String, String, i32, Option<i32>, Option<String>);
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT d.id, d.event, d.state, d.attempts, d.last_status, d.last_error
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.webhook_id = $1 AND w.project_id = $2 ORDER BY d.id DESC LIMIT 100",
    )
    .bind(id)
    .bind(project.id)
    .fetch_all(&mut *conn)
    .await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|(id, event, state, attempts, status, error)| {
            json!({ "id": id, "event": event, "state": state, "attempts": attempts, "last_status": status, "last_error": error })
        })
        .collect();
    Ok(Json(json!({ "items": items, "next_cursor": null })))
}
