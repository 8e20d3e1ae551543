//! Project webhooks (manager+). The URL is sealed at rest and never shown
//! again; responses carry only its scheme and host.

use axum::{Json, extract::State, http::StatusCode};
use common::{
    domain::Capability,
    store::{
        audit,
        webhooks::{self, WebhookRow},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, inventory::project};
use crate::{
    auth::{Authorized, CurrentUser, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    routes::{Access, Routes},
    state::AppState,
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

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct CreateWebhook {
    /// An absolute http(s) URL of at most 2000 characters; sealed, never shown again.
    pub url: String,
    /// Absent: every event (`requested`, `approved`, `denied`, `executed`,
    /// `succeeded`, `failed`, `invalidated`).
    pub events: Option<Vec<String>>,
}

/// `https://hooks.example.com/…`: enough to recognise, nothing secret.
fn url_hint(url: &reqwest::Url) -> String {
    format!("{}://{}/…", url.scheme(), url.host_str().unwrap_or(""))
}

#[utoipa::path(post, path = "/api/v1/projects/{slug}/webhooks", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug")),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "The webhook; its URL only as a hint", body = WebhookRow),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `url` or `events`", body = ErrorBody),
    ))]
pub(crate) async fn create(
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

#[utoipa::path(get, path = "/api/v1/projects/{slug}/webhooks", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug")),
    responses(
        (status = 200, description = "The project's webhooks, whole", body = Page<WebhookRow>),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _user: Authorized<rules::ManageTargets>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<Page<WebhookRow>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    Ok(Json(Page::all(
        webhooks::list(&state.db, project.id).await?,
    )))
}

#[utoipa::path(delete, path = "/api/v1/projects/{slug}/webhooks/{id}", tag = "webhooks",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The webhook's id"),
    ),
    responses(
        (status = 204, description = "Deactivated; its pending deliveries are dropped"),
        (status = 404, description = "`not_found`: no such project or webhook", body = ErrorBody),
    ))]
pub(crate) async fn remove(
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

/// One delivery of an event to a webhook.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: i64,
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i32,
    /// The HTTP status of the last attempt.
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/webhooks/{id}/deliveries", tag = "webhooks",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The webhook's id"),
    ),
    responses(
        (status = 200, description = "The webhook's last 100 deliveries, newest first", body = Page<Delivery>),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    _user: Authorized<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    let rows = webhooks::deliveries(&mut conn, id, project.id).await?;
    let items = rows
        .into_iter()
        .map(
            |(id, event, state, attempts, last_status, last_error)| Delivery {
                id,
                event,
                state,
                attempts,
                last_status,
                last_error,
            },
        )
        .collect();
    Ok(Json(Page::all(items)))
}
