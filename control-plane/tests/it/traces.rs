//! OpenTelemetry traces of a run, end to end: the control plane and a worker
//! export over OTLP/HTTP to a receiver in this test; one trace covers the
//! Execute request, each target's execution and each migration applied.
//! Also: the target's password reaches neither the logs nor the traces.

use std::{
    collections::{BTreeSet, HashMap},
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::support::{
    self, TestApp,
    otlp::{OtlpReceiver, ReceivedSpan},
};
use common::{
    config::{LogFormat, OtelSettings},
    testing::{TestDatabase, wait_for},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Log lines of this test process.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

const PASSWORD: &str = "Trace-S3cret-pw";

/// Walks parent links from `span` up; true when `ancestor` is on the way.
fn descends_from(span: &ReceivedSpan, ancestor: &ReceivedSpan, all: &[ReceivedSpan]) -> bool {
    let by_id: HashMap<&str, &ReceivedSpan> = all.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut parent = span.parent_span_id.as_str();
    for _ in 0..32 {
        if parent == ancestor.span_id {
            return true;
        }
        match by_id.get(parent) {
            Some(next) => parent = next.parent_span_id.as_str(),
            None => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_covers_execute_every_target_and_every_migration() {
    let receiver = OtlpReceiver::start().await;
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let telemetry = Arc::new(common::telemetry::init_with_writer(
        Some(LogFormat::Json),
        Some(&OtelSettings {
            traces_endpoint: format!("{}/v1/traces", receiver.endpoint()),
            service_name: "migrate-hub-test".into(),
        }),
        move || writer.clone(),
    ));
    assert!(telemetry.exporting());

    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let mut dbs = Vec::new();
    let mut target_ids = Vec::new();
    for i in 0..2 {
        let db = TestDatabase::create("mh_test_trace").await;
        let (status, body) = app
            .post(
                &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
                &app.manager,
                json!({"name": format!("shard-{i}"), "engine": "postgres", "host": "127.0.0.1",
                       "port": 5432, "database": db.name, "username": "postgres",
                       "password": PASSWORD, "tls_mode": "disable"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        target_ids.push(body["id"].as_str().unwrap().to_owned());
        dbs.push(db);
    }
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    app.migration(&slug, "2", "CREATE TABLE b (id int);", "DROP TABLE b;")
        .await;
    let (status, run) = app
        .post(
            &format!("/api/v1/projects/{slug}/runs"),
            &app.user,
            // Canary 1: the second target is queued when the first finishes,
            // by the worker; its job must still join the Execute request's trace.
            json!({"db_set_id": set, "direction": "up", "target_version": "2", "canary": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let run = run["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .post(
            &format!("/api/v1/runs/{run}/approve"),
            &app.manager,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let worker = worker::Worker::new(app.pool.clone(), app.keys.clone(), "default", 4, 5_000);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));
    let (status, body) = app
        .post(&format!("/api/v1/runs/{run}/execute"), &app.user, json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let done = wait_for(Duration::from_secs(60), "the run to finish", || async {
        let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
        matches!(body["state"].as_str(), Some("succeeded" | "failed")).then_some(body)
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let _ = stop.send(());
    worker.await.unwrap().unwrap();

    // Everything ended is exported; wait until the receiver has it all.
    let spans = wait_for(Duration::from_secs(30), "the run's spans", || {
        let telemetry = telemetry.clone();
        let receiver = receiver.clone();
        let run = run.clone();
        async move {
            tokio::task::spawn_blocking(move || telemetry.flush())
                .await
                .unwrap();
            let spans = receiver.spans();
            let migrations = spans
                .iter()
                .filter(|s| s.name.starts_with("migration "))
                .count();
            let targets = spans
                .iter()
                .filter(|s| s.name == "target_execution" && s.attributes["run_id"] == run)
                .count();
            (migrations >= 4 && targets >= 2).then_some(spans)
        }
    })
    .await;

    let execute: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == "POST /api/v1/runs/{id}/execute")
        .collect();
    let names: BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(execute.len(), 1, "one Execute request span among {names:?}");
    let execute = execute[0];
    assert_eq!(execute.service, "migrate-hub-test");
    assert_eq!(
        execute.attributes["http.route"],
        "/api/v1/runs/{id}/execute"
    );
    assert_eq!(execute.attributes["http.response.status_code"], "202");
    assert!(!execute.attributes["request_id"].is_empty());
    // The caller, known once the token was checked.
    let user_id: String = sqlx::query_scalar("SELECT id::text FROM users WHERE email = $1")
        .bind(support::USER)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(execute.attributes["user_id"], user_id);

    let executions: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.name == "target_execution" && s.attributes["run_id"] == run)
        .collect();
    assert_eq!(executions.len(), 2, "{executions:#?}");
    let mut traced_targets: Vec<&str> = executions
        .iter()
        .map(|s| s.attributes["target_id"].as_str())
        .collect();
    traced_targets.sort();
    target_ids.sort();
    assert_eq!(traced_targets, target_ids);
    for execution in &executions {
        assert_eq!(execution.trace_id, execute.trace_id, "one trace per run");
        assert!(
            descends_from(execution, execute, &spans),
            "{execution:#?} descends from the Execute request span {execute:#?}"
        );
        assert_eq!(execution.attributes["state"], "succeeded");
        assert_ne!(
            execution.status, 2,
            "a succeeded target has no error status"
        );
        let migrations: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| s.name.starts_with("migration ") && s.parent_span_id == execution.span_id)
            .collect();
        let mut versions: Vec<&str> = migrations
            .iter()
            .map(|s| s.attributes["version"].as_str())
            .collect();
        versions.sort();
        assert_eq!(
            versions,
            ["1", "2"],
            "each migration is a child of its target's span"
        );
        for migration in migrations {
            assert_eq!(migration.trace_id, execute.trace_id);
            assert_eq!(migration.attributes["direction"], "up");
        }
    }
    // Every migration span of the run belongs to one of its targets.
    let executions_ids: Vec<&str> = executions.iter().map(|s| s.span_id.as_str()).collect();
    for migration in spans.iter().filter(|s| s.name.starts_with("migration ")) {
        assert!(executions_ids.contains(&migration.parent_span_id.as_str()));
    }

    // The password reaches no span attribute and no log line.
    for span in &spans {
        for (key, value) in &span.attributes {
            assert!(
                !value.contains(PASSWORD),
                "{key} of {} holds the password",
                span.name
            );
        }
    }
    let raw = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(!raw.contains(PASSWORD), "a log line holds the password");

    // Log lines of a target's execution carry the run and the target.
    let lines = logs.lines();
    for target in &target_ids {
        assert!(
            lines
                .iter()
                .any(|l| l["message"] == "target execution finished"
                    && l["span"]["run_id"] == run.as_str()
                    && l["span"]["target_id"] == target.as_str()),
            "a log line names run {run} and target {target}"
        );
    }
    drop(dbs);
}
