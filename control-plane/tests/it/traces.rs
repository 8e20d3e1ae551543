//! OpenTelemetry traces of a run, end to end: the control plane and a worker
//! export over OTLP/HTTP to a receiver in this test; one trace covers the
//! Execute request, each target's execution and each migration applied.
//! Also: the target's password reaches neither the logs nor the traces.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use crate::support::{
    self, CapturedLogs, Fleet, TestApp,
    otlp::{OtlpReceiver, ReceivedSpan},
    pg_target_json,
};
use common::{
    config::{LogFormat, OtelSettings},
    testing::{TestDatabase, wait_for},
};
use serde_json::json;

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
        let mut target = pg_target_json(&format!("shard-{i}"), &db);
        target["password"] = PASSWORD.into();
        target_ids.push(app.add_target(&slug, &set, target).await);
        dbs.push(db);
    }
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    app.migration(&slug, "2", "CREATE TABLE b (id int);", "DROP TABLE b;")
        .await;
    // Canary 1: the second target is queued when the first finishes, by the
    // worker; its job must still join the Execute request's trace.
    let run = app
        .request_run_with(&slug, &set, "2", json!({"canary": 1}))
        .await;
    app.approve(&run).await;

    let fleet = Fleet::start(&app);
    app.execute(&run).await;
    let done = app.wait_until_final(&run).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    fleet.stop().await;

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
    assert_eq!(
        execute.attributes["user_id"],
        app.user_id(support::USER).await
    );

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
    assert!(
        !logs.text().contains(PASSWORD),
        "a log line holds the password"
    );

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
