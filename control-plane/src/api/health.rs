//! Liveness and readiness.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    routes::{Access, Routes},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get("/healthz", Access::Public, healthz)
        .get("/readyz", Access::Public, readyz)
        // Open like the health checks; restrict it at the ingress in production.
        .get("/metrics", Access::Public, crate::metrics::scrape)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// The process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process runs", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// `ok`, `migrations pending` or `unreachable`.
    pub database: String,
    /// `off`, `configured` or `issuer_unreachable`.
    pub sso: String,
}

/// The tool database answers and its migrations are current.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "The tool database is unreachable or its migrations are pending", body = Readiness),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
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
        Json(Readiness {
            status: if status == StatusCode::OK {
                "ready"
            } else {
                "not_ready"
            }
            .into(),
            database: database.into(),
            sso: sso.into(),
        }),
    )
}
