//! The worker binary exports its spans over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, under its default service name, and
//! flushes them when it stops on SIGTERM.

use crate::support::otlp::OtlpReceiver;
use crate::support::{
    TestHub,
    processes::{terminate, worker_command},
};
use common::domain::{Direction, RunState};

#[tokio::test]
async fn binary_exports_its_spans_and_flushes_them_on_sigterm() {
    let receiver = OtlpReceiver::start().await;
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", "CREATE TABLE t (id int);", "DROP TABLE t;")
        .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let child = worker_command(&hub)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .spawn()
        .unwrap();
    let registered = hub.registered_concurrency().await;
    assert!(registered.is_some(), "the worker registered");
    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);

    let (status, logs) = terminate(child).await;
    assert!(status.success(), "{logs}");

    // Exported by the time the process has exited: the last batch is
    // flushed at shutdown, not left to the next export interval.
    let spans = receiver.spans();
    let execution = spans
        .iter()
        .find(|s| s.name == "target_execution")
        .unwrap_or_else(|| panic!("no target_execution span among {spans:#?}\n{logs}"));
    assert_eq!(execution.service, "migrate-hub-worker");
    assert_eq!(execution.attributes["run_id"], run.to_string());
    assert_eq!(execution.attributes["state"], "succeeded");
    assert_ne!(execution.status, 2, "no error status");
    let migration = spans
        .iter()
        .find(|s| s.name == "migration 1")
        .expect("the migration's span");
    assert_eq!(migration.parent_span_id, execution.span_id);
    assert_eq!(migration.trace_id, execution.trace_id);
}
