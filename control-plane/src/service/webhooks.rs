//! Project webhooks (manager+). The URL is sealed at rest and never shown
//! again; responses carry only its scheme and host.

use common::store::{
    audit,
    webhooks::{self},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::inventory::project;
use crate::{auth::CurrentUser, error::ApiError, state::AppState};

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
