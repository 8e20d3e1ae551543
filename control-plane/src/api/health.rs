//! Liveness and readiness.

use crate::routes::{Access, Routes};
use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::app::AppState;

pub fn router() -> Routes {
    Routes::new()
        .get("/healthz", Access::Public, healthz)
        .get("/readyz", Access::Public, readyz)
        // Open like the health checks; restrict it at the ingress in production.
        .get("/metrics", Access::Public, crate::metrics::scrape)
}

/// The process answers.
async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// The tool database answers and its migrations are current.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = match common::db::migrations_current(&state.db).await {
        Ok(true) => "ok",
        Ok(false) => "migrations pending",
        Err(_) => "unreachable",
    };
    // SSO trouble does not make the instance unready: API tokens still work.
    let sso = match &state.oidc {
        None => "off",
        Some(oidc) if oidc.reachable().await => "configured",
        Some(_) => "issuer_unreachable",
    };
    let status = if database == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "database": database,
            "sso": sso,
        })),
    )
}
