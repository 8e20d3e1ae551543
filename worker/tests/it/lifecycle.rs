//! How a worker starts, stops and dies: graceful shutdown finishes running
//! jobs; a worker that dies mid-migration leaves the target untouched and
//! its execution `interrupted`; the binary's command line and signals.

use std::time::Duration;

use crate::support::{
    TestHub, eventually,
    processes::{terminate, worker_command},
};
use common::domain::{Direction, RunState, TargetState};
use sqlx::{Connection, PgConnection};
use worker::Worker;

/// Whether the target has a session running a statement that contains `text`.
async fn busy_with(conn: &mut PgConnection, text: &str) -> bool {
    sqlx::query_scalar(
        "SELECT count(*) > 0 FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'active'
           AND pid <> pg_backend_pid() AND query LIKE '%' || $1 || '%'",
    )
    .bind(text)
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn stopping_worker_finishes_its_running_job_first() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(
        &project,
        "1",
        "SELECT pg_sleep(1); CREATE TABLE finished (id int);",
        "DROP TABLE finished;",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;
    hub.wait_for_execution(run, target, TargetState::Running)
        .await;

    worker.stop().await;

    assert_eq!(
        hub.execution(run, target).await.state,
        TargetState::Succeeded
    );
    assert_eq!(hub.run_state(run).await, RunState::Succeeded);
    assert!(target.has_table("finished").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_dying_mid_migration_leaves_the_target_untouched_and_the_execution_interrupted() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(
        &project,
        "1",
        "CREATE TABLE half_done (id int); SELECT pg_sleep(60);",
        "DROP TABLE half_done;",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;

    // The victim lives on a runtime of its own: dropping that runtime ends it
    // the way `kill -9` would, with no cleanup and its sockets simply closed.
    let victim = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (url, keys, pool) = (hub.url.clone(), hub.keys.clone(), hub.pool_name.clone());
    victim.spawn(async move {
        let db = common::db::connect(&url, 8).await.unwrap();
        let _ = Worker::new(db, keys, pool, 4, 1_000)
            .run(std::future::pending())
            .await;
    });
    hub.wait_for_listener().await;
    hub.execute(run).await;
    hub.wait_for_execution(run, target, TargetState::Running)
        .await;
    assert!(
        eventually(|| async {
            busy_with(&mut target.connect().await, "pg_sleep")
                .await
                .then_some(())
        })
        .await
        .is_some(),
        "the migration never reached the target"
    );

    tokio::task::spawn_blocking(move || drop(victim))
        .await
        .unwrap();

    // The target rolled the migration back and released the lock.
    assert!(
        eventually(|| async {
            (!busy_with(&mut target.connect().await, "pg_sleep").await).then_some(())
        })
        .await
        .is_some(),
        "the dead worker's session outlived it"
    );
    assert!(!target.has_table("half_done").await);
    assert!(
        target.lock_is_free().await,
        "the dead worker's target lock was released"
    );

    // Another worker of the pool receives the orphaned job once apalis
    // presumes the victim dead (15 s), and settles the execution.
    let rescuer = hub.start_worker(1_000).await;
    assert_eq!(
        hub.wait_for_run_within(run, Duration::from_secs(60)).await,
        RunState::Failed
    );
    hub.assert_interrupted(run, target).await;
    assert!(!target.has_table("half_done").await);
    assert!(target.history().await.is_empty());
    assert_eq!(hub.audit_count("target.interrupted").await, 1);
    assert_eq!(hub.audit_count("target.started").await, 1);
    rescuer.stop().await;
}

#[tokio::test]
async fn losing_every_tool_database_connection_mid_run_is_survived() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(2).await;
    hub.migration(
        &project,
        "1",
        "SELECT pg_sleep(1); CREATE TABLE survived (id int);",
        "DROP TABLE survived;",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;
    for target in &project.targets {
        hub.wait_for_execution(run, target, TargetState::Running)
            .await;
    }

    // As if the tool database restarted: every session to it is cut,
    // including the queue consumer's and its LISTEN connection.
    let mut admin = PgConnection::connect(&hub.url).await.unwrap();
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()) AS t",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(cut > 0);

    // Running jobs record their results once the database answers again…
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    for target in &project.targets {
        assert!(target.has_table("survived").await);
        assert_eq!(hub.applied(target).await.len(), 1);
    }
    // …and the rebuilt consumer takes new jobs.
    hub.migration(
        &project,
        "2",
        "CREATE TABLE later (id int);",
        "DROP TABLE later;",
    )
    .await;
    let next = hub.approved_run(&project, Direction::Up, "2").await;
    assert_eq!(hub.execute_and_wait(next).await, RunState::Succeeded);
    worker.stop().await;
}

fn worker_binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_worker"));
    command.env_clear();
    command
}

#[test]
fn help_names_the_flags() {
    let output = worker_binary().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("--pool <POOL>"), "{help}");
    assert!(help.contains("--concurrency <N>"), "{help}");
}

#[test]
fn missing_configuration_exits_2_naming_the_variable() {
    let output = worker_binary().args(["--pool", "eu"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "configuration error: MH_DATABASE_URL: is required but not set\n"
    );
}

#[test]
fn malformed_flag_value_exits_2_naming_the_variable() {
    let output = worker_binary()
        .args(["--pool", "eu", "--concurrency", "0"])
        .env("MH_DATABASE_URL", "postgres://localhost/mh")
        .env(
            "MH_ENCRYPTION_KEYS",
            common::crypto::Keyring::generate_entry("k1"),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("MH_WORKER_CONCURRENCY"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn binary_executes_jobs_and_stops_gracefully_on_sigterm() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", "CREATE TABLE t (id int);", "DROP TABLE t;")
        .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let child = worker_command(&hub)
        .args(["--concurrency", "2"])
        .spawn()
        .unwrap();
    let registered = hub.registered_concurrency().await;
    assert_eq!(registered, Some(2));

    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);

    let (status, logs) = terminate(child).await;
    assert!(status.success(), "{logs}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(!logs.contains(&hub.keys_spec[3..]), "keys leaked to logs");
    let stopped: bool =
        sqlx::query_scalar("SELECT stopped_at IS NOT NULL FROM workers WHERE pool = $1")
            .bind(&hub.pool_name)
            .fetch_one(&hub.db)
            .await
            .unwrap();
    assert!(stopped);
}

#[tokio::test]
async fn a_taken_metrics_port_stops_the_worker_in_one_line_and_port_zero_picks_a_free_one() {
    use tokio::io::AsyncBufReadExt;

    let hub = TestHub::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = tokio::time::timeout(
        crate::support::DEADLINE,
        worker_command(&hub)
            .env("MH_METRICS_LISTEN", addr.to_string())
            .output(),
    )
    .await
    .expect("the worker exits")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("worker: "))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].contains(&format!("MH_METRICS_LISTEN {addr}")) && said[0].contains("in use"),
        "{stderr}"
    );
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM workers WHERE pool = $1")
        .bind(&hub.pool_name)
        .fetch_one(&hub.db)
        .await
        .unwrap();
    assert_eq!(
        registered, 0,
        "it stopped before registering or claiming anything"
    );
    drop(taken);

    // `127.0.0.1:0`: a free port, said in the log, serving the metrics.
    let mut child = worker_command(&hub).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let listen = tokio::time::timeout(crate::support::DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if entry["message"] == "metrics endpoint listening" {
                return entry["listen"].as_str().unwrap().to_owned();
            }
        }
        panic!("the worker ended without saying where its metrics are");
    })
    .await
    .expect("the worker says where its metrics are");
    assert!(
        listen.starts_with("127.0.0.1:") && !listen.ends_with(":0"),
        "{listen}"
    );
    let body = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&listen).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: worker\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).await.unwrap();
        body
    };
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    assert!(
        body.contains("content-type: text/plain; version=0.0.4"),
        "{body}"
    );
    // Registered (and listening for SIGTERM) before it is asked to stop.
    assert_eq!(hub.registered_concurrency().await, Some(4));
    // Keep reading what it says, as a terminal would, while it stops.
    let rest = tokio::spawn(async move {
        let mut said = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            said.push(line);
        }
        said.join("\n")
    });
    let (status, _) = terminate(child).await;
    let said = rest.await.unwrap();
    assert!(status.success(), "{status}: {said}");
}

#[tokio::test]
async fn finished_jobs_leave_the_queue_and_unfinished_ones_stay() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(2).await;
    hub.migration(
        &project,
        "1",
        "CREATE TABLE kept (id int);",
        "DROP TABLE kept;",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    hub.wait_for_idle_queue().await;
    worker.stop().await;
    let queue = common::queue::queue_name(&hub.pool_name);
    let jobs = |status: &'static str| {
        let db = hub.db.clone();
        let queue = queue.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM apalis.jobs WHERE job_type = $1 AND status = $2",
            )
            .bind(queue)
            .bind(status)
            .fetch_one(&db)
            .await
            .unwrap()
        }
    };
    assert_eq!(jobs("Done").await, 2);
    // And a job still waiting.
    let mut conn = hub.db.acquire().await.unwrap();
    let waiting = (
        uuid::Uuid::new_v4(),
        project.targets[0].id(),
        hub.pool_name.clone(),
    );
    common::queue::push(&mut conn, run, None, &[waiting], None)
        .await
        .unwrap();

    let removed = common::queue::prune_finished(&mut conn).await.unwrap();

    assert_eq!(removed, 2);
    assert_eq!(jobs("Done").await, 0);
    assert_eq!(jobs("Pending").await, 1);
    // The keep-alive's look for the jobs of silent workers has its index.
    let indexed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_indexes
                        WHERE schemaname = 'apalis' AND indexname = 'migrate_hub_jobs_live_lock_by')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(indexed);
}

/// A run of migration 1 (`CREATE TABLE one`) on `targets` new targets,
/// `concurrency` at a time, approved and executed: its first targets are
/// queued, with no worker to take them.
async fn executed_run(
    hub: &TestHub,
    targets: usize,
    concurrency: i32,
) -> (crate::support::Project, uuid::Uuid) {
    let project = hub.project_with_targets(targets).await;
    hub.migration(
        &project,
        "1",
        "CREATE TABLE one (id int);",
        "DROP TABLE one;",
    )
    .await;
    let run = hub
        .requested_and_approved(&project, Direction::Up, "1", concurrency)
        .await;
    hub.execute(run).await;
    (project, run)
}

/// Claims the queued `execution` for `worker`, as a worker's job does, and
/// commits; returns the run as the claim left it.
async fn claim(
    hub: &TestHub,
    execution: uuid::Uuid,
    worker: uuid::Uuid,
) -> common::store::runs::RunRow {
    let mut tx = hub.db.begin().await.unwrap();
    let (_, run) = common::lifecycle::claim(&mut tx, execution, worker)
        .await
        .unwrap()
        .expect("queued");
    tx.commit().await.unwrap();
    run
}

/// A transaction holding the run's row locked, as the run's own state
/// changes do.
async fn hold_run_row(
    hub: &TestHub,
    run: uuid::Uuid,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = hub.db.begin().await.unwrap();
    common::store::runs::lock(&mut tx, run)
        .await
        .unwrap()
        .expect("the run");
    tx
}

/// A transaction in which anything that would wait for a lock fails after
/// 2 s instead.
async fn impatient(hub: &TestHub) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = hub.db.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// While one target of a run settles (its transaction holds the run's row),
/// another target of the run can still be claimed and record what it
/// applied: neither waits for the settling to commit.
#[tokio::test]
async fn claims_and_records_of_a_run_do_not_wait_for_another_target_settling() {
    let hub = TestHub::new().await;
    let (project, run) = executed_run(&hub, 3, 8).await;
    let executions = hub.executions(run).await;
    let worker = uuid::Uuid::new_v4();
    // The run's first claim moves it to `running`.
    let first_run = claim(&hub, executions[0].id, worker).await;
    assert_eq!(first_run.state, RunState::Running, "as the claim left it");
    assert_eq!(hub.run_state(run).await, RunState::Running);

    // A target settling: its transaction holds the run's row as settling does.
    let settling = hold_run_row(&hub, run).await;
    let mut other = impatient(&hub).await;
    let (claimed, _) = common::lifecycle::claim(&mut other, executions[1].id, worker)
        .await
        .expect("a later claim does not wait for the run's row")
        .expect("queued");
    let mut conn = hub.db.acquire().await.unwrap();
    let migration = common::store::runs::migrations(&mut conn, run)
        .await
        .unwrap()
        .remove(0);
    let version: common::domain::Version = migration.version.parse().unwrap();
    common::store::executions::record_steps(
        &mut other,
        &[common::store::executions::AppliedStep {
            execution_id: claimed.id,
            target_id: claimed.target_id,
            run_id: run,
            migration_id: migration.migration_id,
            version: &version,
            direction: Direction::Up,
            checksum: &migration.checksum,
            started_at: time::OffsetDateTime::now_utc(),
            duration_ms: 1,
            statements: 1,
            resumed: false,
        }],
    )
    .await
    .expect("recording what a target applied does not wait for the run's row");
    other.commit().await.unwrap();
    settling.rollback().await.unwrap();
    let target = project
        .targets
        .iter()
        .find(|t| t.id() == claimed.target_id)
        .expect("a target of the project");
    assert_eq!(hub.applied_versions(target).await, vec!["1"]);
}

/// Ends the running `execution` as succeeded in the caller's transaction;
/// returns the run to settle after the commit.
async fn finish_succeeded(
    tx: &mut PgConnection,
    execution: uuid::Uuid,
    actor: &common::store::audit::Actor,
) -> Option<uuid::Uuid> {
    common::lifecycle::finish(
        tx,
        &common::lifecycle::Finish {
            execution_id: execution,
            state: TargetState::Succeeded,
            error: None,
            failed_version: None,
            statement: None,
            dirty: None,
            worker: actor,
        },
    )
    .await
    .expect("the finish does not wait for the run's row")
}

/// The executions of `run` in `state`.
async fn in_state(hub: &TestHub, run: uuid::Uuid, state: TargetState) -> Vec<uuid::Uuid> {
    let executions = hub.executions(run).await;
    executions
        .iter()
        .filter(|e| e.state == state)
        .map(|e| e.id)
        .collect()
}

/// A finished target refills the place it freed without the run's lock:
/// it does not wait for another transaction holding the run's row, and two
/// finishers refilling at once take different targets. The run's outcome
/// is recorded after the last finisher's commit, by it or, when it stopped
/// before, by the sweep of unsettled runs.
#[tokio::test]
async fn finished_targets_refill_their_places_alone_and_the_run_settles_after_the_last_commit() {
    let hub = TestHub::new().await;
    let (_, run) = executed_run(&hub, 4, 2).await;
    let worker = uuid::Uuid::new_v4();
    let actor = common::store::audit::Actor::system("test-worker");
    let first = in_state(&hub, run, TargetState::Queued).await;
    assert_eq!(first.len(), 2, "the run's concurrency");
    for id in &first {
        claim(&hub, *id, worker).await;
    }

    // Two finishers refilling at once: the second skips the target the
    // first is taking instead of waiting for it or coming away empty.
    let mut a = hub.db.begin().await.unwrap();
    let mut b = hub.db.begin().await.unwrap();
    let took_a = common::store::executions::queue_next(&mut a, run, 1)
        .await
        .unwrap();
    let took_b = common::store::executions::queue_next(&mut b, run, 1)
        .await
        .unwrap();
    assert_eq!((took_a.len(), took_b.len()), (1, 1));
    assert_ne!(took_a[0].0, took_b[0].0, "two different targets");
    a.rollback().await.unwrap();
    b.rollback().await.unwrap();

    // A target finishing while the run's row is held elsewhere.
    let holder = hold_run_row(&hub, run).await;
    let mut tx = impatient(&hub).await;
    let to_settle = finish_succeeded(&mut tx, first[0], &actor).await;
    tx.commit().await.unwrap();
    holder.rollback().await.unwrap();
    assert_eq!(to_settle, Some(run));
    let refilled = in_state(&hub, run, TargetState::Queued).await;
    assert_eq!(refilled.len(), 1, "the freed place is refilled");
    let mut tx = hub.db.begin().await.unwrap();
    assert_eq!(
        common::lifecycle::settle(&mut tx, run, &actor)
            .await
            .unwrap(),
        None,
        "targets are still open"
    );
    tx.commit().await.unwrap();

    // The rest end, and their finishers stop before settling the run.
    let mut open = vec![first[1]];
    while !open.is_empty() {
        for id in in_state(&hub, run, TargetState::Queued).await {
            claim(&hub, id, worker).await;
            open.push(id);
        }
        let id = open.remove(0);
        let mut tx = hub.db.begin().await.unwrap();
        assert_eq!(finish_succeeded(&mut tx, id, &actor).await, Some(run));
        tx.commit().await.unwrap();
    }
    assert!(in_state(&hub, run, TargetState::Pending).await.is_empty());
    assert_eq!(
        in_state(&hub, run, TargetState::Succeeded).await.len(),
        4,
        "every target ran"
    );
    assert_eq!(hub.run_state(run).await, RunState::Running);
    let mut conn = hub.db.acquire().await.unwrap();
    let unsettled = common::lifecycle::unsettled(&mut conn, 100_000)
        .await
        .unwrap();
    assert!(unsettled.contains(&run), "the sweep finds it");
    drop(conn);
    let mut tx = hub.db.begin().await.unwrap();
    assert_eq!(
        common::lifecycle::settle(&mut tx, run, &actor)
            .await
            .unwrap(),
        Some(RunState::Succeeded)
    );
    tx.commit().await.unwrap();
    assert_eq!(hub.run_state(run).await, RunState::Succeeded);
    assert_eq!(hub.audit_count("run.finished").await, 1);
    let mut conn = hub.db.acquire().await.unwrap();
    let unsettled = common::lifecycle::unsettled(&mut conn, 100_000)
        .await
        .unwrap();
    assert!(!unsettled.contains(&run));
}

/// Only a change of an execution's state is announced on the hub's change
/// channel: a target's progress (the migration and statement reached) is
/// written many times and announcing each made every running target's
/// commits queue behind PostgreSQL's notification lock.
#[tokio::test]
async fn progress_is_not_announced_and_a_state_change_is() {
    let hub = TestHub::new().await;
    let (_, run) = executed_run(&hub, 1, 1).await;
    let execution = hub.executions(run).await[0].id;
    claim(&hub, execution, uuid::Uuid::new_v4()).await;

    let mut listener = sqlx::postgres::PgListener::connect_with(&hub.db)
        .await
        .unwrap();
    listener.listen("migrate_hub_changes").await.unwrap();
    let mut conn = hub.db.acquire().await.unwrap();
    common::lifecycle::progress(&mut conn, execution, "1", 2, "abc")
        .await
        .unwrap();
    // Notifications arrive in commit order: a marker committed after the
    // progress comes first when the progress announced nothing.
    sqlx::query("SELECT pg_notify('migrate_hub_changes', 'marker')")
        .execute(&mut *conn)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(first.payload(), "marker", "progress was announced");

    let actor = common::store::audit::Actor::system("test-worker");
    let mut tx = hub.db.begin().await.unwrap();
    finish_succeeded(&mut tx, execution, &actor).await;
    tx.commit().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(next.payload(), format!("execution:{run}"));
}

/// Appends from many transactions at once stay one gap-free chain that
/// verifies: each append locks the head, hashes in the database and moves
/// the head in one statement.
#[tokio::test]
async fn concurrent_audit_appends_stay_one_verified_chain() {
    use common::store::audit::{self, Actor, Entry};
    let hub = TestHub::new().await;
    let before: i64 = sqlx::query_scalar("SELECT seq FROM audit_head")
        .fetch_one(&hub.db)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..16 {
        let db = hub.db.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let mut tx = db.begin().await.unwrap();
                let entry = Entry::new(Actor::system("test"), "test.appended", "test", task)
                    .details(serde_json::json!({"i": i, "text": "ü \"quoted\"\n"}));
                audit::append(&mut tx, &entry).await.unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let seqs: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM audit_log WHERE seq > $1 ORDER BY seq")
            .bind(before)
            .fetch_all(&hub.db)
            .await
            .unwrap();
    assert_eq!(seqs, (before + 1..=before + 160).collect::<Vec<_>>());
    let verified = audit::verify(&hub.db).await.unwrap();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.rows_checked, before + 160);
}
