//! Project webhooks: an outbox of deliveries written in the same transaction
//! as the event, delivered in order by a background task.

use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::crypto::{Keyring, Sealed};

/// The events a webhook can subscribe to.
pub const EVENTS: [&str; 8] = [
    "requested",
    "approved",
    "denied",
    "executed",
    "succeeded",
    "failed",
    "invalidated",
    "target.drifted",
];

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct WebhookRow {
    pub id: Uuid,
    pub project_id: Uuid,
    /// Scheme and host only; the full URL may carry a secret and is never shown.
    pub url_hint: String,
    pub events: Vec<String>,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub async fn insert(
    conn: &mut PgConnection,
    keys: &Keyring,
    project_id: Uuid,
    url: &str,
    url_hint: &str,
    events: &[String],
) -> Result<WebhookRow, sqlx::Error> {
    let id = Uuid::now_v7();
    let sealed = keys.seal(id.as_bytes(), url.as_bytes());
    sqlx::query_as(
        "INSERT INTO webhooks (id, project_id, url_ciphertext, url_key_id, url_hint, events)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, project_id, url_hint, events, active, created_at",
    )
    .bind(id)
    .bind(project_id)
    .bind(&sealed.ciphertext)
    .bind(&sealed.key_id)
    .bind(url_hint)
    .bind(events)
    .fetch_one(conn)
    .await
}

pub async fn list(pool: &PgPool, project_id: Uuid) -> Result<Vec<WebhookRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, project_id, url_hint, events, active, created_at FROM webhooks
         WHERE project_id = $1 AND active ORDER BY created_at",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await
}

/// Deactivates a webhook of the project; false when there is none.
pub async fn deactivate(
    conn: &mut PgConnection,
    project_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhooks SET active = false WHERE id = $1 AND project_id = $2 AND active",
    )
    .bind(id)
    .bind(project_id)
    .execute(&mut *conn)
    .await?;
    // Pending deliveries of a removed webhook are dropped, not sent.
    sqlx::query("UPDATE webhook_deliveries SET state = 'failed', last_error = 'webhook removed' WHERE webhook_id = $1 AND state = 'pending'")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Queues `payload` for every active webhook of the project subscribed to
/// `event`, in the caller's transaction: the notification exists exactly
/// when the event does.
pub async fn enqueue(
    conn: &mut PgConnection,
    project_id: Uuid,
    event: &str,
    payload: &Value,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (webhook_id, event, payload, state)
         SELECT id, $2, $3, 'pending' FROM webhooks
         WHERE project_id = $1 AND active AND $2 = ANY(events)",
    )
    .bind(project_id)
    .bind(event)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// A delivery ready to be sent, with its webhook's sealed URL.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: i64,
    pub webhook_id: Uuid,
    pub payload: Value,
    pub attempts: i32,
    pub url_ciphertext: Vec<u8>,
    pub url_key_id: String,
}

impl DueDelivery {
    pub fn sealed_url(&self) -> Sealed {
        Sealed {
            key_id: self.url_key_id.clone(),
            ciphertext: self.url_ciphertext.clone(),
        }
    }
}

/// Claims the oldest pending delivery of each webhook, when it is due. Only
/// the head of each webhook's queue is eligible, so a receiver sees events in
/// order even across retries; `SKIP LOCKED` lets several replicas share the
/// work without sending anything twice.
pub async fn claim_due(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<DueDelivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.webhook_id, d.payload, d.attempts, w.url_ciphertext, w.url_key_id
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.state = 'pending' AND d.next_attempt_at <= now()
           AND d.id = (SELECT min(h.id) FROM webhook_deliveries h WHERE h.webhook_id = d.webhook_id AND h.state = 'pending')
         ORDER BY d.id
         LIMIT $1
         FOR UPDATE OF d SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Most attempts before a delivery is given up.
pub const MAX_ATTEMPTS: i32 = 8;

/// Records the outcome of one attempt.
pub async fn record_attempt(
    conn: &mut PgConnection,
    id: i64,
    status: Option<i32>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let delivered = status.is_some_and(|s| (200..300).contains(&s));
    sqlx::query(
        "UPDATE webhook_deliveries SET
             attempts = attempts + 1,
             last_status = $2,
             last_error = $3,
             state = CASE WHEN $4 THEN 'delivered'
                          WHEN attempts + 1 >= $5 THEN 'failed' ELSE 'pending' END,
             delivered_at = CASE WHEN $4 THEN now() END,
             -- 5 s, 10 s, 20 s, … up to an hour between attempts.
             next_attempt_at = now() + least(interval '1 hour', interval '5 seconds' * power(2, attempts))
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(error)
    .bind(delivered)
    .bind(MAX_ATTEMPTS)
    .execute(conn)
    .await?;
    Ok(())
}

/// Queues the notification of a run event (JSON with a Slack-compatible
/// `text`) for the run's project.
pub async fn notify_run(
    conn: &mut PgConnection,
    run_id: Uuid,
    event: &str,
) -> Result<(), sqlx::Error> {
    let Some(run) = super::runs::get(conn, run_id).await? else {
        return Ok(());
    };
    let slug: String = sqlx::query_scalar("SELECT slug FROM projects WHERE id = $1")
        .bind(run.project_id)
        .fetch_one(&mut *conn)
        .await?;
    let text = format!(
        "[{slug}] run {} ({} to {} on {}) {}: state {}{}",
        &run.id.to_string()[..8],
        run.direction,
        run.target_version,
        run.environment,
        event,
        run.state,
        run.state_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
    );
    let payload = serde_json::json!({
        "event": event,
        "text": text,
        "project": slug,
        "run": {
            "id": run.id,
            "environment": run.environment,
            "direction": run.direction,
            "target_version": run.target_version,
            "state": run.state,
            "requested_by": run.requester,
            "digest": run.digest,
        },
        "at": OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
    });
    enqueue(conn, run.project_id, event, &payload).await?;
    Ok(())
}

/// A webhook's latest deliveries (at most 100, newest first): id, event,
/// state, attempts, last HTTP status, last error.
pub type DeliveryRow = (i64, String, String, i32, Option<i32>, Option<String>);

pub async fn deliveries(
    conn: &mut PgConnection,
    webhook_id: Uuid,
    project_id: Uuid,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.event, d.state, d.attempts, d.last_status, d.last_error
         FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         WHERE d.webhook_id = $1 AND w.project_id = $2 ORDER BY d.id DESC LIMIT 100",
    )
    .bind(webhook_id)
    .bind(project_id)
    .fetch_all(conn)
    .await
}
