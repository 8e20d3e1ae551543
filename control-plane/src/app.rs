//! Builds the application: router and server. `serve` and the tests both
//! start from here.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{HeaderValue, header},
    middleware,
    serve::ListenerExt,
};
use tokio::net::TcpListener;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use tower_sessions::{Expiry, SessionManagerLayer, cookie::SameSite};

use crate::{
    api,
    auth::{
        csrf,
        session_store::{self, PgSessionStore},
    },
    http_trace::REQUEST_ID,
    routes::RouteInfo,
    security_headers,
    shared_reads::WriteMark,
    state::AppState,
    web,
};

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
    let sessions = SessionManagerLayer::new(PgSessionStore::new(state.db.clone()))
        .with_name(session_store::COOKIE_NAME)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.settings.public_url.starts_with("https://"))
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(i64::from(
            state.settings.session_idle_minutes,
        ))));
    let pages = web::router().layer_router(|r| {
        r.layer(middleware::from_fn_with_state(
            state.clone(),
            web::errors_as_pages,
        ))
    });
    let csp = security_headers::content_security_policy_header(
        state.settings.oidc.as_ref().map(|o| o.issuer.as_str()),
    );
    let (router, _) = api::router().merge(pages).into_parts();
    crate::metrics::handle();
    router
        .route_layer(middleware::from_fn(crate::metrics::track_http))
        .route_layer(middleware::from_fn(crate::http_trace::name_by_route))
        .layer(middleware::from_fn_with_state(state.clone(), csrf::guard))
        .layer(middleware::from_fn_with_state(
            state.writes.clone(),
            WriteMark::after_writes,
        ))
        .layer(sessions)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone())
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            state.settings.request_timeout,
        ))
        .layer(CatchPanicLayer::new())
        // Inside the header layers: the answers it completes get them too.
        .layer(middleware::from_fn_with_state(
            state.templates.clone(),
            crate::bare_errors::complete,
        ))
        .layer(middleware::from_fn(
            security_headers::no_store_with_credentials,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            csp,
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(middleware::from_fn(crate::http_trace::keep_request_span))
        .layer(TraceLayer::new_for_http().make_span_with(crate::http_trace::request_span))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Every route of the app with its access rule.
pub fn route_table() -> Vec<RouteInfo> {
    api::router().merge(web::router()).into_parts().1
}

/// Serves the app on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // The recorder first: the background tasks below set gauges at once.
    crate::metrics::handle();
    // Expired sessions are removed in the background by every replica; the
    // DELETE is idempotent, so replicas do not need to coordinate.
    let store = PgSessionStore::new(state.db.clone());
    let cleanup = tokio::spawn(async move {
        use tower_sessions::session_store::ExpiredDeletion;
        let _ = store
            .continuously_delete_expired(Duration::from_secs(300))
            .await;
    });
    let notifications = tokio::spawn(crate::notify::deliver_forever(state.clone()));
    let retention = tokio::spawn(prune_snapshots_forever(
        state.db.clone(),
        state.settings.snapshot_retention_days,
    ));
    let finished_jobs = tokio::spawn(prune_jobs_forever(state.db.clone()));
    let changes = tokio::spawn(crate::changes::listen_forever(
        state.db.clone(),
        crate::changes::Listeners {
            writes: state.writes.clone(),
            runs: state.run_reads.clone(),
            live: state.live.clone(),
        },
    ));
    let sweeps = tokio::spawn(crate::dead_workers::sweep_forever(state.db.clone()));
    let live = state.live.clone();
    let app = router(state);
    // hyper's own refusals get the answers the app renders for them; the
    // no-op tap makes the peer address available as `ConnectInfo`.
    let refusals = crate::listener::Refusals::prepare(app.clone()).await;
    let listener = crate::listener::EdgeListener::new(listener, refusals).tap_io(|_| {});
    let result = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        // Live streams never end by themselves: end them, or the
        // connections they hold keep the server from stopping.
        live.close();
    })
    .await;
    cleanup.abort();
    notifications.abort();
    retention.abort();
    finished_jobs.abort();
    changes.abort();
    sweeps.abort();
    result
}

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(600);
/// How often finished queue jobs are removed.
const FINISHED_JOBS_EVERY: Duration = Duration::from_secs(5);

/// Removes finished queue jobs every few seconds on every replica (the
/// delete is idempotent; see [`common::queue::prune_finished`]).
async fn prune_jobs_forever(db: sqlx::PgPool) {
    let mut tick = tokio::time::interval(FINISHED_JOBS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let removed = match db.acquire().await {
            Ok(mut conn) => common::queue::prune_finished(&mut conn).await,
            Err(err) => Err(err),
        };
        match removed {
            Ok(jobs) => tracing::debug!(jobs, "finished queue jobs removed"),
            Err(err) => tracing::warn!(error = %err, "could not remove finished queue jobs"),
        }
    }
}

/// Keeps schema snapshots bounded, on every replica (the deletes are
/// idempotent): every ten minutes, those older than the retention, never
/// with a retention of 0 days.
async fn prune_snapshots_forever(db: sqlx::PgPool, snapshot_days: u32) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    loop {
        tick.tick().await;
        if snapshot_days == 0 {
            continue;
        }
        let Ok(mut conn) = db.acquire().await else {
            tracing::warn!("could not reach the tool database for retention");
            continue;
        };
        match common::store::snapshots::prune(&mut conn, snapshot_days).await {
            Ok(p) if p.snapshots + p.texts > 0 => tracing::info!(
                snapshots = p.snapshots,
                texts = p.texts,
                "old schema snapshots removed"
            ),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "could not remove old schema snapshots"),
        }
    }
}
