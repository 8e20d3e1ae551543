//! Builds the application: state, router, server. `serve` and the tests both
//! start from here.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, http::HeaderName};
use common::{config::ControlPlaneSettings, crypto::Keyring};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::api;

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub settings: Arc<ControlPlaneSettings>,
}

impl AppState {
    pub fn keys(&self) -> &Keyring {
        &self.settings.common.keys
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The complete router with its middleware.
pub fn router(state: AppState) -> Router {
    // Room for a migration's up and down scripts at the configured limit plus
    // the JSON around them; larger bodies get a 413 before they are parsed.
    let body_limit = state
        .settings
        .max_sql_bytes
        .saturating_mul(3)
        .max(64 * 1024)
        + 64 * 1024;
    api::router()
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(CatchPanicLayer::new())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                let request_id = req
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id)
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Serves the app on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
