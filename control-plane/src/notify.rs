//! Webhook delivery: a background task of every control-plane replica sends
//! the queued notifications, in order per webhook, retrying with backoff.

use std::time::Duration;

use common::store::webhooks;

use crate::state::AppState;

/// Sends due deliveries until the process ends.
pub async fn deliver_forever(state: AppState) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("migrate-hub/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client cannot be built; notifications are not sent");
            return;
        }
    };
    loop {
        match deliver_once(&state, &client).await {
            Ok(0) => tokio::time::sleep(Duration::from_secs(1)).await,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "webhook delivery round failed");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// One round: claims the due head of each webhook's queue and sends it.
/// Returns how many deliveries were attempted.
pub async fn deliver_once(state: &AppState, client: &reqwest::Client) -> anyhow::Result<usize> {
    let mut tx = state.db.begin().await?;
    let due = webhooks::claim_due(&mut tx, 20).await?;
    for delivery in &due {
        let outcome = match state
            .keys()
            .open(delivery.webhook_id.as_bytes(), &delivery.sealed_url())
        {
            Ok(url) => {
                let url = String::from_utf8_lossy(&url).into_owned();
                match client.post(&url).json(&delivery.payload).send().await {
                    Ok(resp) => (Some(i32::from(resp.status().as_u16())), None),
                    // The error text can contain the URL, which may hold a secret.
                    Err(e) => (None, Some(describe(&e))),
                }
            }
            Err(e) => (None, Some(e.to_string())),
        };
        webhooks::record_attempt(&mut tx, delivery.id, outcome.0, outcome.1.as_deref()).await?;
    }
    tx.commit().await?;
    Ok(due.len())
}

fn describe(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        "timed out".into()
    } else if err.is_connect() {
        "could not connect".into()
    } else if err.is_request() {
        "request failed".into()
    } else {
        "delivery failed".into()
    }
}
