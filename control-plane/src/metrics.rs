//! Prometheus metrics of the control plane (`GET /metrics`).
//!
//! HTTP traffic is recorded as it happens. Every label value comes from a
//! closed set ([`method_label`], [`route_label`], the status code), because
//! anyone can send any method or path and each new value would be a new
//! series kept for the life of the process. The state of runs, executions,
//! queues, workers and webhooks is read from the tool database at scrape
//! time, so every replica reports the same truth.

use std::{fmt::Write as _, sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{error::ApiError, state::AppState};

/// The process-wide recorder, with the HTTP metrics described.
pub fn handle() -> &'static PrometheusHandle {
    static DESCRIBED: OnceLock<()> = OnceLock::new();
    let handle = common::telemetry::metrics_handle();
    DESCRIBED.get_or_init(|| {
        metrics::describe_counter!(
            "http_requests_total",
            "HTTP requests by method, route template and status."
        );
        metrics::describe_histogram!(
            "http_request_duration_seconds",
            metrics::Unit::Seconds,
            "HTTP request latency by method, route template and status."
        );
        metrics::describe_histogram!(
            "migrate_hub_shared_read_duration_seconds",
            metrics::Unit::Seconds,
            "Duration of the database reads shared by requests (kind: run, token)."
        );
        metrics::describe_counter!(
            "migrate_hub_shared_read_requests_total",
            "Requests served a shared read, by kind and whether they took the latest read or waited for the next."
        );
        metrics::describe_gauge!(
            "migrate_hub_changes_listening",
            "1 while this replica listens for changes made elsewhere (revoked tokens, disabled users); 0 while it cannot, and every request reads for itself."
        );
        metrics::describe_counter!(
            "migrate_hub_changes_heard_total",
            "Changes made elsewhere heard by this replica, by kind: identity (retires every shared read), run (retires that run's reads and wakes its live streams)."
        );
        metrics::describe_counter!(
            "migrate_hub_executions_interrupted_total",
            "Running executions this replica marked interrupted because their worker was dead."
        );
    });
    handle
}

/// The method as a label value: the standard methods by name, anything
/// else (`SECX1`, `PROPFIND`, …) as `other`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The route as a label value: the matched route template (from the route
/// table, never the raw path), else `unmatched`.
pub fn route_label(route: Option<&MatchedPath>) -> &str {
    route.map_or("unmatched", MatchedPath::as_str)
}

/// Records method, route template, status and latency of every routed request.
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = route_label(req.extensions().get::<MatchedPath>()).to_owned();
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

fn gauge_family(out: &mut String, name: &str, help: &str, rows: &[(Vec<(&str, String)>, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (labels, value) in rows {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n")
                )
            })
            .collect();
        let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
    }
}

async fn database_gauges(state: &AppState) -> Result<String, sqlx::Error> {
    use common::store::stats;
    let mut out = String::new();
    let runs = stats::runs_by_state(&state.db).await?;
    let rows: Vec<_> = runs
        .into_iter()
        .map(|(s, n)| (vec![("state", s)], n as f64))
        .collect();
    gauge_family(&mut out, "migrate_hub_runs", "Runs by state.", &rows);

    let executions = stats::executions_by_state_and_engine(&state.db).await?;
    let rows: Vec<_> = executions
        .into_iter()
        .map(|(s, e, n)| (vec![("state", s), ("engine", e)], n as f64))
        .collect();
    gauge_family(
        &mut out,
        "migrate_hub_target_executions",
        "Target executions by outcome and engine.",
        &rows,
    );

    let queues = common::queue::waiting_per_pool(&mut *state.db.acquire().await?).await?;
    let rows: Vec<_> = queues
        .into_iter()
        .map(|(pool, n)| (vec![("pool", pool)], n as f64))
        .collect();
    gauge_family(
        &mut out,
        "migrate_hub_queue_depth",
        "Jobs waiting in each worker pool's queue.",
        &rows,
    );

    let workers = stats::live_workers(&state.db).await?;
    let age: Vec<_> = workers
        .iter()
        .map(|(p, w, age, _)| (vec![("pool", p.clone()), ("worker", w.clone())], *age))
        .collect();
    gauge_family(
        &mut out,
        "migrate_hub_worker_heartbeat_age_seconds",
        "Seconds since each live worker's last heartbeat.",
        &age,
    );
    let jobs: Vec<_> = workers
        .iter()
        .map(|(p, w, _, n)| {
            (
                vec![("pool", p.clone()), ("worker", w.clone())],
                f64::from(*n),
            )
        })
        .collect();
    gauge_family(
        &mut out,
        "migrate_hub_worker_running_jobs",
        "Jobs each live worker is running.",
        &jobs,
    );

    let drifted = common::store::schema_drift::count_by_environment(&state.db).await?;
    let rows: Vec<_> = drifted
        .into_iter()
        .map(|(e, n)| (vec![("environment", e)], n as f64))
        .collect();
    gauge_family(
        &mut out,
        "migrate_hub_targets_drifted",
        "Targets whose schema differs from their baseline, by environment.",
        &rows,
    );

    let deliveries = stats::deliveries_by_state(&state.db).await?;
    let rows: Vec<_> = deliveries
        .into_iter()
        .map(|(s, n)| (vec![("state", s)], n as f64))
        .collect();
    gauge_family(
        &mut out,
        "migrate_hub_webhook_deliveries",
        "Webhook deliveries by state.",
        &rows,
    );
    Ok(out)
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain; version=0.0.4")))]
pub async fn scrape(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut body = handle().render();
    body.push_str(&database_gauges(&state).await?);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        for (method, label) in [
            ("GET", "GET"),
            ("HEAD", "HEAD"),
            ("POST", "POST"),
            ("PUT", "PUT"),
            ("PATCH", "PATCH"),
            ("DELETE", "DELETE"),
            ("OPTIONS", "OPTIONS"),
            ("SECX1", "other"),
            ("get", "other"),
            ("TRACE", "other"),
            ("CONNECT", "other"),
            ("PROPFIND", "other"),
        ] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&method), label, "{method}");
        }
    }

    #[test]
    fn requests_without_a_route_are_unmatched() {
        assert_eq!(route_label(None), "unmatched");
    }
}
