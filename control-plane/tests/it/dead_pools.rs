//! No run waits silently on a dead pool: the only worker of a pool is
//! killed (`kill -9`, a real `worker` process) mid-migration, nobody takes
//! its place, and the control plane — always up — marks the execution
//! `interrupted` within 30 s, so the run ends; a run whose pool has no live
//! worker says so in the API, on its page and in Execute's answer.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{
    crypto::Keyring,
    testing::{TestDatabase, TestMysqlDatabase, wait_for},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestApp, mysql_target_json, pg_target_json};

/// The pool of the test's targets, served by the one worker it kills.
const POOL: &str = "eu";

/// How soon after the kill the execution must be over.
const WITHIN: Duration = Duration::from_secs(30);

/// The `worker` binary, built beside the control plane's.
fn worker_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_control-plane")).with_file_name("worker");
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries (cargo build --workspace)",
        path.display()
    );
    path
}

/// A `worker --pool eu` process against the app's tool database, killed
/// when dropped.
struct Worker(Child);

impl Worker {
    fn start(app: &TestApp, keys: &str) -> Worker {
        let child = Command::new(worker_binary())
            .env_clear()
            .args(["--pool", POOL, "--concurrency", "1"])
            .env("MH_DATABASE_URL", &app.db.url)
            .env("MH_ENCRYPTION_KEYS", keys)
            .env("MH_METRICS_LISTEN", "127.0.0.1:0")
            .env("MH_DRIFT_SCAN_MINUTES", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the worker binary");
        Worker(child)
    }

    /// `kill -9`: no goodbye, no cleanup.
    fn kill(&mut self) {
        self.0.kill().expect("SIGKILL the worker");
        self.0.wait().expect("reap the worker");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The app, with the encryption keys its worker is given.
async fn app() -> (TestApp, String) {
    let keys = Keyring::generate_entry("k1");
    let spec = keys.clone();
    let app = TestApp::spawn_with(move |env, _| {
        env.insert("MH_ENCRYPTION_KEYS", spec);
    })
    .await;
    (app, keys)
}

/// A project whose one target (`body`) is served by pool `eu`, with
/// migration 1 (`up`); returns the project's slug, the DB set and the target.
async fn project(app: &TestApp, mut body: Value, up: &str) -> (String, String, String) {
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    body["worker_pool"] = json!(POOL);
    let target = app.add_target(&slug, &set, body).await;
    app.migration(&slug, "1", up, "SELECT 1").await;
    (slug, set, target)
}

fn pools(run: &Value) -> Vec<String> {
    run["pools_without_workers"]
        .as_array()
        .unwrap_or_else(|| panic!("pools_without_workers in {run}"))
        .iter()
        .map(|p| p["message"].as_str().unwrap().to_owned())
        .collect()
}

/// Starts the pool's worker and waits until a run's answer no longer
/// misses it.
async fn start_worker(app: &TestApp, keys: &str, run: &str) -> Worker {
    let worker = Worker::start(app, keys);
    wait_for(
        Duration::from_secs(30),
        "the worker to register",
        || async {
            let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
            pools(&body).is_empty().then_some(())
        },
    )
    .await;
    worker
}

/// Kills the only worker once `running` says the migration is under way,
/// and waits (at most [`WITHIN`]) for the run to end; returns it.
async fn kill_and_wait(
    app: &TestApp,
    mut worker: Worker,
    run: &str,
    running: impl AsyncFn() -> bool,
) -> Value {
    wait_for(
        Duration::from_secs(60),
        "the migration to be under way",
        || async { running().await.then_some(()) },
    )
    .await;
    worker.kill();
    wait_for(
        WITHIN,
        "the control plane to interrupt the dead worker's execution",
        || async {
            let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
            (body["state"] == "failed").then_some(body)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_postgres_worker_killed_mid_migration_is_interrupted_by_the_control_plane() {
    let (app, keys) = app().await;
    let db = TestDatabase::create("mh_test_dead_pool").await;
    let (slug, set, _target) = project(
        &app,
        pg_target_json("pg-eu", &db),
        "CREATE TABLE half_done (id int); SELECT pg_sleep(120);",
    )
    .await;
    let run = app.request_run(&slug, &set, "1").await;
    let approved = app.approve(&run).await;
    assert_eq!(
        pools(&approved),
        ["no worker of pool `eu` has ever registered"],
        "{approved}"
    );

    let worker = start_worker(&app, &keys, &run).await;
    app.execute(&run).await;
    let done = kill_and_wait(&app, worker, &run, || async {
        let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
        body["targets"][0]["state"] == "running"
            && app
                .count(&format!(
                    "SELECT count(*) FROM target_executions WHERE run_id = '{run}' AND state = 'running'"
                ))
                .await
                == 1
            && sessions_sleeping(&db).await
    })
    .await;
    let execution = &done["targets"][0];
    assert_eq!(execution["state"], "interrupted", "{done}");
    assert!(
        execution["error"]
            .as_str()
            .unwrap()
            .contains("rolled back the migration in progress"),
        "{execution}"
    );
    assert!(pools(&done).is_empty(), "a finished run waits on nobody");
    let audited = app.audit_rows("target.interrupted").await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].0, "system:control-plane");
    assert_eq!(
        app.count("SELECT count(*) FROM applied_migrations").await,
        0
    );

    // The pool is still dead: the next run says so, on Execute too, and on
    // its page, with how long the pool has been silent.
    let next = app.request_run(&slug, &set, "1").await;
    app.approve(&next).await;
    let (status, queued) = app.execute_as(&next, &app.user).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let said = pools(&queued);
    assert_eq!(said.len(), 1, "{queued}");
    assert!(
        said[0].starts_with("no worker of pool `eu` seen for ") && said[0].ends_with(" s"),
        "{said:?}"
    );
    let (status, page) = app.page(&format!("/runs/{next}"), &app.user).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Waiting on a worker"), "{page}");
    assert!(page.contains("no worker of pool `eu` seen for"), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_mariadb_worker_killed_mid_script_leaves_the_target_dirty_at_the_last_statement() {
    let (app, keys) = app().await;
    let db = TestMysqlDatabase::create("mh_test_dead_pool").await;
    let (slug, set, target) = project(
        &app,
        mysql_target_json("my-eu", &db),
        "CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\nSELECT SLEEP(120);\n\
         CREATE TABLE rest (id int);",
    )
    .await;
    let run = app.request_run(&slug, &set, "1").await;
    app.approve(&run).await;
    let worker = start_worker(&app, &keys, &run).await;
    app.execute(&run).await;
    let done = kill_and_wait(&app, worker, &run, || async {
        let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
        body["targets"][0]["statement"] == 3
    })
    .await;
    let execution = &done["targets"][0];
    assert_eq!(execution["state"], "interrupted", "{done}");
    let error = execution["error"].as_str().unwrap();
    assert!(
        error.contains("stopped while statement 3 of version 1 ran"),
        "{error}"
    );
    let state = app.target_state(&target).await;
    assert_eq!(state["dirty"]["version"], "1", "{state}");
    assert_eq!(state["dirty"]["statement_index"], 3, "{state}");
    assert_eq!(app.audit_rows("target.interrupted").await.len(), 1);
}

/// Whether the migration's `pg_sleep` runs on the target.
async fn sessions_sleeping(db: &TestDatabase) -> bool {
    use crate::support::PgTarget;
    db.number(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND query LIKE '%pg_sleep(120)%' \
         AND pid <> pg_backend_pid()",
        db.name
    ))
    .await
        == 1
}

/// A worker that dies between committing its target's ending and settling
/// the run leaves the run `running` with nothing open: the control plane's
/// sweep records the outcome.
#[tokio::test]
async fn a_run_whose_last_finisher_died_before_settling_it_settles_from_the_sweep() {
    let (app, _keys) = app().await;
    let db = TestDatabase::create("mh_test_dead_pool").await;
    let (slug, set, _target) = project(&app, pg_target_json("pg-eu", &db), "SELECT 1").await;
    let run = app.request_run(&slug, &set, "1").await;
    app.approve(&run).await;
    app.execute(&run).await;
    let run_id: uuid::Uuid = run.parse().unwrap();

    // The worker's claim and ending, committed (together: a worker the
    // hub does not know counts as dead, and the sweep would interrupt the
    // claim in between); it dies before settling.
    let worker = common::store::audit::Actor::system("worker");
    let execution: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM target_executions WHERE run_id = $1")
            .bind(run_id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    common::lifecycle::claim(&mut tx, execution, uuid::Uuid::new_v4())
        .await
        .unwrap()
        .expect("queued");
    let ended = common::lifecycle::finish(
        &mut tx,
        &common::lifecycle::Finish {
            execution_id: execution,
            state: common::domain::TargetState::Succeeded,
            error: None,
            failed_version: None,
            statement: None,
            dirty: None,
            worker: &worker,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ended, Some(run_id));
    let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
    assert_eq!(
        body["state"], "running",
        "not settled by the finish: {body}"
    );

    let done = wait_for(
        WITHIN,
        "the control plane's sweep to settle the run",
        || async {
            let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
            (body["state"] == "succeeded").then_some(body)
        },
    )
    .await;
    assert_eq!(done["targets"][0]["state"], "succeeded", "{done}");
    let finished = app.audit_rows("run.finished").await;
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert_eq!(finished[0].0, "system:control-plane");
}
