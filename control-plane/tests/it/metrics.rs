//! `GET /metrics` of the control plane: what it reports, and that
//! Prometheus' own `promtool check metrics` accepts it.

use std::{io::Write, process::Stdio, time::Duration};

use crate::support::{Fleet, TestApp};
use common::testing::{TestDatabase, wait_for};
use reqwest::{Method, StatusCode};

/// Runs `promtool check metrics` on `text`; returns its verdict and output.
pub fn promtool_check(text: &str) -> (bool, String) {
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool runs (Debian package prometheus; scripts/ensure-services.sh installs it)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The text a metrics endpoint serves.
async fn scrape(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn control_plane_metrics_are_valid_prometheus_text() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    app.db_set(&slug, "orders", "daily").await;
    assert_eq!(app.get("/api/v1/me", &app.user).await.0, StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/projects/nope", &app.user).await.0,
        StatusCode::NOT_FOUND
    );

    let (status, _) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = scrape(&app.url("/metrics")).await;
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

#[tokio::test]
async fn worker_metrics_count_executions_migrations_and_lock_waits() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = TestDatabase::create("mh_test_target").await;
    app.pg_target(&slug, &set, "t1", &db).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let run = app.request_run(&slug, &set, "1").await;
    app.approve(&run).await;

    // The worker's endpoint, as the binary serves it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(worker::metrics::serve(listener));
    let fleet = Fleet::start_with(&app, 2);
    app.execute(&run).await;
    assert_eq!(app.wait_until_final(&run).await["state"], "succeeded");
    fleet.stop().await;

    let text = scrape(&metrics_url).await;
    for needle in [
        "migrate_hub_target_executions_total{engine=\"postgres\",outcome=\"succeeded\"}",
        "migrate_hub_migration_duration_seconds_count{direction=\"up\"}",
        "migrate_hub_lock_wait_seconds_count{engine=\"postgres\"}",
        "migrate_hub_target_execution_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool rejects the worker's output: {report}\n{text}");
}

#[tokio::test]
async fn admins_see_the_worker_fleet() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::in_pool(&app, "eu-west", 3);
    let body = wait_for(
        Duration::from_secs(20),
        "the worker to register",
        || async {
            let (status, body) = app.page("/admin/workers", &app.admin).await;
            (status == StatusCode::OK && body.contains("eu-west")).then_some(body)
        },
    )
    .await;
    assert!(body.contains("alive"), "{body}");
    assert_eq!(
        app.page("/admin/workers", &app.manager).await.0,
        StatusCode::FORBIDDEN
    );
    fleet.stop().await;
    let (_, body) = app.page("/admin/workers", &app.admin).await;
    assert!(
        body.contains("stopped"),
        "a stopped worker is shown as such"
    );
}

#[tokio::test]
async fn the_fleet_page_tells_due_from_later_and_alerts_on_a_pool_without_workers() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = TestDatabase::create("mh_test_backlog").await;
    let mut target = crate::support::pg_target_json("t1", &db);
    target["worker_pool"] = serde_json::json!("nobody-home");
    app.add_target(&slug, &set, target).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    // One run due now, one scheduled for tomorrow, one cancelled.
    let now_run = app.request_run(&slug, &set, "1").await;
    app.approve(&now_run).await;
    app.execute(&now_run).await;
    let later = app.request_run(&slug, &set, "1").await;
    app.approve(&later).await;
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, body) = app
        .post(
            &format!("/api/v1/runs/{later}/execute"),
            &app.user,
            serde_json::json!({ "not_before": tomorrow }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let cancelled = app.request_run(&slug, &set, "1").await;
    app.approve(&cancelled).await;
    app.execute(&cancelled).await;
    assert_eq!(app.queue_jobs_of(&cancelled).await, 1);
    let (status, _) = app
        .post(
            &format!("/api/v1/runs/{cancelled}/cancel"),
            &app.user,
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.queue_jobs_of(&cancelled).await,
        0,
        "a cancelled run's jobs are removed"
    );

    let (_, body) = app.page("/admin/workers", &app.admin).await;
    let row = &body[body
        .find("<code>nobody-home</code>")
        .expect("the pool is listed")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("<td>1 <strong class=\"badge badge-bad\">no live worker</strong></td>"),
        "{row}"
    );
    assert!(row.contains("<td>1</td>"), "one scheduled later: {row}");
    assert!(row.contains("<td>0</td>"), "nothing left over: {row}");
    assert!(row.contains("0 live"), "{row}");
    assert!(
        body.contains("Pool <code>nobody-home</code> has 1 job due and no live worker"),
        "{body}"
    );
}

/// Anyone can send any method and any path: neither may add label values
/// (each would be a new series, with histogram buckets, for the life of
/// the process).
#[tokio::test]
async fn invented_methods_and_unknown_paths_add_no_series() {
    let app = TestApp::spawn().await;
    let client = reqwest::Client::new();
    let invented: Vec<String> = (0..5)
        .map(|i| format!("SECX{i}{}", uuid::Uuid::new_v4().simple()).to_uppercase())
        .collect();
    let unknown_paths: Vec<String> = (0..5)
        .map(|i| format!("/probe-{i}-{}", uuid::Uuid::new_v4().simple()))
        .chain([format!("/api/v1/{}", uuid::Uuid::new_v4().simple())])
        .collect();
    for method in &invented {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        for path in ["/healthz", "/api/v1/me", "/metrics"] {
            let resp = client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_client_error(), "{method} {path}");
        }
        for path in &unknown_paths {
            client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
        }
    }
    for path in &unknown_paths {
        let resp = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }

    let text = scrape(&app.url("/metrics")).await;
    for sent in invented.iter().chain(&unknown_paths) {
        assert!(
            !text.contains(sent.as_str()),
            "{sent} became a label:\n{text}"
        );
    }
    assert!(
        text.contains("http_requests_total{method=\"other\",route=\"/healthz\",status=\"405\"}"),
        "invented methods are counted as `other`:\n{text}"
    );
    let routes: Vec<String> = control_plane::app::route_table()
        .into_iter()
        .map(|r| r.path)
        .chain(["unmatched".to_owned()])
        .collect();
    let known_methods = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other",
    ];
    for line in text.lines().filter(|l| l.starts_with("http_request")) {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("no {name} label: {line}"))
                .to_owned()
        };
        assert!(known_methods.contains(&label("method").as_str()), "{line}");
        assert!(routes.contains(&label("route")), "{line}");
    }
    let (ok, report) = promtool_check(&text);
    assert!(ok, "promtool rejects the output: {report}\n{text}");
}
