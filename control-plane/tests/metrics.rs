//! `GET /metrics` of the control plane: what it reports, and that
//! Prometheus' own `promtool check metrics` accepts it.

mod support;

use std::{io::Write, process::Stdio};

use reqwest::{Method, StatusCode};
use support::TestApp;

/// Runs `promtool check metrics` on `text`; returns its verdict and output.
pub fn promtool_check(text: &str) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; scripts/ensure-services.sh installs it)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn control_plane_metrics_are_valid_prometheus_text() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    app.db_set(&slug, "orders", "daily").await;
    assert_eq!(app.get("/api/v1/me", &app.user).await.0, StatusCode::OK);
    assert_eq!(app.get("/api/v1/projects/nope", &app.user).await.0, StatusCode::NOT_FOUND);

    let (status, _) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = reqwest::get(app.url("/metrics")).await.unwrap().text().await.unwrap();
    for needle in [
        "http_requests_total{method=\"GET\",route=\"/api/v1/me\",status=\"200\"}",
        "route=\"/api/v1/projects/{slug}\",status=\"404\"",
        "http_request_duration_seconds_bucket",
        "migrate_hub_runs{state=\"pending_approval\"} 0",
        "# TYPE migrate_hub_queue_depth gauge",
        "migrate_hub_webhook_deliveries{state=\"pending\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool rejects the output: {report}\n{text}");
}
