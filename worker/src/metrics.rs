//! Prometheus metrics of a worker, served on `MH_METRICS_LISTEN` at `/metrics`.

use std::{net::SocketAddr, sync::OnceLock, time::Duration};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use common::domain::Engine;
use metrics::Unit;
use metrics_exporter_prometheus::PrometheusHandle;

/// The process-wide recorder, with this binary's metrics described.
pub fn handle() -> &'static PrometheusHandle {
    static DESCRIBED: OnceLock<()> = OnceLock::new();
    let handle = common::telemetry::metrics_handle();
    DESCRIBED.get_or_init(|| {
        metrics::describe_counter!(
            "migrate_hub_target_executions_total",
            "Target executions finished, by outcome and engine."
        );
        metrics::describe_histogram!(
            "migrate_hub_target_execution_duration_seconds",
            Unit::Seconds,
            "Time from claim to finish of one target execution, by engine."
        );
        metrics::describe_histogram!(
            "migrate_hub_migration_duration_seconds",
            Unit::Seconds,
            "Time to apply or roll back one migration on one target, by direction."
        );
        metrics::describe_histogram!(
            "migrate_hub_lock_wait_seconds",
            Unit::Seconds,
            "Time spent waiting for the target lock, by engine."
        );
        metrics::describe_counter!(
            "migrate_hub_lock_retries_total",
            "Migrations tried again after their lock budget ran out, by engine."
        );
        metrics::describe_counter!(
            "migrate_hub_worker_heartbeats_total",
            "Heartbeats this worker wrote."
        );
        metrics::describe_gauge!(
            "migrate_hub_worker_running_jobs",
            "Jobs this worker is running."
        );
    });
    handle
}

pub fn execution_finished(engine: Engine, outcome: &str, took: Duration) {
    handle();
    let labels = [
        ("engine", engine.as_str().to_owned()),
        ("outcome", outcome.to_owned()),
    ];
    metrics::counter!("migrate_hub_target_executions_total", &labels).increment(1);
    metrics::histogram!("migrate_hub_target_execution_duration_seconds", "engine" => engine.as_str())
        .record(took.as_secs_f64());
}

pub fn lock_retry(engine: Engine) {
    handle();
    metrics::counter!("migrate_hub_lock_retries_total", "engine" => engine.as_str()).increment(1);
}

pub fn migration_done(direction: &str, took: Duration) {
    handle();
    metrics::histogram!("migrate_hub_migration_duration_seconds", "direction" => direction.to_owned())
        .record(took.as_secs_f64());
}

pub fn lock_waited(engine: Engine, took: Duration) {
    handle();
    metrics::histogram!("migrate_hub_lock_wait_seconds", "engine" => engine.as_str())
        .record(took.as_secs_f64());
}

pub fn heartbeat(running: i32) {
    handle();
    metrics::counter!("migrate_hub_worker_heartbeats_total").increment(1);
    metrics::gauge!("migrate_hub_worker_running_jobs").set(f64::from(running));
}

/// Serves `/metrics` on `listen` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    handle();
    let app = Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                handle().render(),
            )
                .into_response()
        }),
    );
    axum::serve(listener, app).await
}

/// Binds the metrics listener, naming the setting when it cannot.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("MH_METRICS_LISTEN {listen}: {e}"))
}
