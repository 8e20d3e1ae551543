//! The worker binary exports its spans over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, under its default service name, and
//! flushes them when it stops on SIGTERM.

use std::process::Stdio;

use crate::support::otlp::OtlpReceiver;
use crate::support::{self, TestHub, eventually};
use common::domain::{Direction, RunState};

#[tokio::test]
async fn binary_exports_its_spans_and_flushes_them_on_sigterm() {
    let receiver = OtlpReceiver::start().await;
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", "CREATE TABLE t (id int);", "DROP TABLE t;")
        .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .env_clear()
        .args(["--pool", &hub.pool_name])
        .env("MH_DATABASE_URL", &hub.url)
        .env("MH_ENCRYPTION_KEYS", &hub.keys_spec)
        .env("MH_LOG_FORMAT", "json")
        .env("MH_METRICS_LISTEN", "127.0.0.1:0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let registered = eventually(|| async {
        sqlx::query_scalar::<_, i32>("SELECT concurrency FROM workers WHERE pool = $1")
            .bind(&hub.pool_name)
            .fetch_optional(&hub.db)
            .await
            .unwrap()
    })
    .await;
    assert!(registered.is_some(), "the worker registered");
    hub.execute(run).await;
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);

    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let output = tokio::time::timeout(support::DEADLINE, child.wait_with_output())
        .await
        .expect("worker exits after SIGTERM")
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{logs}");

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
