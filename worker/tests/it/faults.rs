//! Faults survived by real `worker` processes: many workers racing over the
//! same targets from several runs at once, the tool database restarting
//! mid-run, a worker killed mid-migration, targets that cannot be reached, refuse the password or fail
//! the SQL next to healthy ones, and table locks held elsewhere.
//!
//! Runs are requested, approved and executed through the store functions
//! the control plane uses (the environment's timeouts, the dispatch rule);
//! the work is done by `worker` binaries started for the test and killed
//! when it ends. Faults that must not touch the shared PostgreSQL server (a
//! restart, password authentication) get a server of their own
//! ([`TestPgInstance`]).

use std::{collections::BTreeMap, time::Duration};

use crate::support::{
    self, Project, TargetDb, TargetOptions, TestHub, mariadb, processes::WorkerProcess,
};
use common::{
    domain::{Direction, Engine, RunState, TargetState, TlsMode},
    store::{self, inventory::NewTarget},
    testing::{TestPgInstance, wait_for},
};
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// Generous: many targets, several processes, a machine shared with other
/// builds. A run that is merely slow still passes; one that hangs fails.
const RUNS_DEADLINE: Duration = Duration::from_secs(240);

/// `(version, run_id)` of a PostgreSQL target's own history, in apply order.
async fn pg_history(target: &TargetDb) -> Vec<(String, Uuid)> {
    target
        .history()
        .await
        .into_iter()
        .map(|(version, _, run)| (version, run))
        .collect()
}

/// On each of the `targets` targets of three concurrent `runs`, one run
/// applied everything and the other two found nothing pending.
async fn assert_one_applied_each_target(hub: &TestHub, runs: &[Uuid], targets: usize) {
    let mut by_target: BTreeMap<Uuid, Vec<String>> = BTreeMap::new();
    for run in runs {
        for execution in hub.executions(*run).await {
            by_target
                .entry(execution.target_id)
                .or_default()
                .push(execution.state.to_string());
        }
    }
    assert_eq!(by_target.len(), targets);
    for (target_id, mut states) in by_target {
        states.sort();
        assert_eq!(
            states,
            ["skipped", "skipped", "succeeded"],
            "target {target_id}"
        );
    }
}

/// Asserts that every execution of `runs` is final: no target is left
/// pending, queued or running.
async fn assert_all_final(hub: &TestHub, runs: &[Uuid]) {
    let open: Vec<_> = hub
        .all_executions(runs)
        .await
        .into_iter()
        .filter(|e| matches!(e.state.as_str(), "pending" | "queued" | "running"))
        .collect();
    assert!(open.is_empty(), "executions left open: {open:#?}");
}

// --- many workers, many targets, several runs at once ---------------------

/// Migrations 1 to 3 (`end` closes each statement): a table, a row in it
/// (applied twice, it would leave two rows), another table. Then three
/// runs of the same DB set to 3, each pinning every version at run
/// `concurrency`, all approved before any executes.
async fn three_runs_of_three_migrations(
    hub: &TestHub,
    project: &Project,
    end: &str,
    concurrency: i32,
) -> Vec<Uuid> {
    hub.migration(
        project,
        "1",
        &format!("CREATE TABLE fault_a (id int){end}"),
        "",
    )
    .await;
    hub.migration(
        project,
        "2",
        &format!("INSERT INTO fault_a VALUES (1){end}"),
        "",
    )
    .await;
    hub.migration(
        project,
        "3",
        &format!("CREATE TABLE fault_b (id int){end}"),
        "",
    )
    .await;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(
            hub.requested_and_approved(project, Direction::Up, "3", concurrency)
                .await,
        );
    }
    runs
}

/// Executes `runs` and waits until every one has succeeded, leaving no
/// execution open.
async fn all_succeed(hub: &TestHub, runs: &[Uuid]) {
    for run in runs {
        hub.execute(*run).await;
    }
    let states = hub.wait_for_runs(runs, RUNS_DEADLINE).await;
    assert_eq!(states, vec![RunState::Succeeded; runs.len()]);
    assert_all_final(hub, runs).await;
}

/// What one PostgreSQL target holds after the runs: its history
/// `(version, checksum, run_id)` in version order and the rows of `fault_a`.
async fn pg_target_state(url: &str) -> (Vec<(String, String, Uuid)>, i64) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let history = sqlx::query_as(
        "SELECT version, checksum, run_id FROM migrate_hub_history
         ORDER BY string_to_array(version, '.')::numeric[]",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let rows = sqlx::query_scalar("SELECT count(*) FROM fault_a")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    (history, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_and_three_concurrent_runs_apply_each_migration_once_on_fifty_targets() {
    // The tool database and the fifty targets on a server of the test's
    // own: four workers' pools and fifty databases stay off the shared
    // server, and go away with one stop instead of fifty drops.
    let server = TestPgInstance::start();
    let hub = TestHub::with_tool_server(&server.admin_url()).await;
    let project = hub.project_on_server(&server, 50).await;
    let runs = three_runs_of_three_migrations(&hub, &project, ";", 10).await;
    let _workers = hub.spawn_workers(4, 2, 60_000).await;
    all_succeed(&hub, &runs).await;
    // On each target the first run to take its lock applied every version;
    // the other two found nothing pending.
    let mut winner: BTreeMap<Uuid, Uuid> = BTreeMap::new();
    for run in &runs {
        for execution in hub.executions(*run).await {
            if execution.state == TargetState::Succeeded {
                assert!(winner.insert(execution.target_id, *run).is_none());
            }
        }
    }
    assert_one_applied_each_target(&hub, &runs, 50).await;
    let checks = project.targets.iter().map(|target| {
        let (hub, server, winner) = (&hub, &server, &winner);
        async move {
            let (history, rows) = pg_target_state(&server.url(&target.database)).await;
            let versions: Vec<&str> = history.iter().map(|(v, _, _)| v.as_str()).collect();
            assert_eq!(versions, ["1", "2", "3"], "{}", target.database);
            // One run applied all three: the one whose execution succeeded.
            assert!(
                history
                    .iter()
                    .all(|(_, _, run)| *run == winner[&target.id()]),
                "{history:?}"
            );
            assert_eq!(rows, 1, "{}", target.database);
            // The hub's applied state matches the target's own history.
            let target_side: Vec<(String, String)> =
                history.into_iter().map(|(v, c, _)| (v, c)).collect();
            assert_eq!(hub.applied(target).await, target_side);
        }
    });
    futures::stream::iter(checks)
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    let applications: i64 =
        sqlx::query_scalar("SELECT count(*) FROM migration_executions WHERE direction = 'up'")
            .fetch_one(&hub.db)
            .await
            .unwrap();
    assert_eq!(applications, 50 * 3);
    // The work was shared: more than one process claimed executions.
    let claimers: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT worker_id) FROM target_executions WHERE run_id = ANY($1)",
    )
    .bind(&runs)
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert!(claimers > 1, "only {claimers} worker claimed executions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_three_concurrent_runs_apply_each_migration_once_on_mariadb_targets() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(10).await;
    let runs = three_runs_of_three_migrations(&hub, &project, "", 5).await;
    let _workers = hub.spawn_workers(2, 2, 60_000).await;
    all_succeed(&hub, &runs).await;
    assert_one_applied_each_target(&hub, &runs, 10).await;
    for target in &project.targets {
        let history = target.my_history().await;
        let versions: Vec<&str> = history.iter().map(|h| h.version.as_str()).collect();
        assert_eq!(versions, ["1", "2", "3"], "{}", target.database);
        assert_eq!(
            target.my_scalar_i64("SELECT COUNT(*) FROM fault_a").await,
            1
        );
        let target_side: Vec<(String, String)> = history
            .into_iter()
            .map(|h| (h.version, h.checksum))
            .collect();
        assert_eq!(hub.applied(target).await, target_side);
    }
}

// --- the tool database restarts while workers are busy ---------------------

/// Target sessions of `targets` running a statement that contains `text`.
async fn sessions_running(targets: &[TargetDb], text: &str) -> i64 {
    let names: Vec<String> = targets.iter().map(|t| t.database.clone()).collect();
    let mut admin = PgConnection::connect(&support::server_url()).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = ANY($1) AND state = 'active' AND query LIKE '%' || $2 || '%'",
    )
    .bind(&names)
    .bind(text)
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_database_restart_mid_run_loses_no_status_and_applies_nothing_twice() {
    let tool_server = TestPgInstance::start();
    let hub = TestHub::with_tool_server(&tool_server.admin_url()).await;
    // Targets stay on the shared server: only the tool database restarts.
    let project = hub.project_with_targets(6).await;
    hub.migration(
        &project,
        "1",
        "SELECT pg_sleep(3); CREATE TABLE slow (id int);",
        "",
    )
    .await;
    hub.migration(&project, "2", "INSERT INTO slow VALUES (1);", "")
        .await;
    let run = hub
        .requested_and_approved(&project, Direction::Up, "2", 6)
        .await;
    // Four slots for six targets: two jobs wait in the queue through the
    // restart and must be claimed by the rebuilt consumers.
    let mut workers = hub.spawn_workers(2, 2, 60_000).await;
    hub.execute(run).await;
    wait_for(
        Duration::from_secs(60),
        "four migrations running on their targets",
        || async { (sessions_running(&project.targets, "pg_sleep").await == 4).then_some(()) },
    )
    .await;

    let restarted = tokio::task::spawn_blocking(move || {
        tool_server.restart();
        tool_server
    })
    .await
    .unwrap();
    let back_at: time::OffsetDateTime = sqlx::query_scalar("SELECT pg_postmaster_start_time()")
        .fetch_one(&hub.db)
        .await
        .unwrap();

    let states = hub.wait_for_runs(&[run], RUNS_DEADLINE).await;
    assert_eq!(
        states,
        [RunState::Succeeded],
        "{:#?}",
        hub.executions(run).await
    );
    for execution in hub.executions(run).await {
        assert_eq!(execution.state, TargetState::Succeeded, "{execution:#?}");
        assert!(execution.error.is_none(), "{execution:#?}");
    }
    for target in &project.targets {
        let versions: Vec<String> = pg_history(target)
            .await
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        assert_eq!(versions, ["1", "2"], "{}", target.database);
        assert_eq!(target.scalar_i64("SELECT count(*) FROM slow").await, 1);
        assert_eq!(hub.applied_versions(target).await, ["1", "2"]);
    }
    // The restart did fall mid-run: migrations that were running when the
    // server went down had their outcome written to the restarted one.
    let across: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM target_executions
         WHERE run_id = $1 AND started_at < $2 AND finished_at > $2",
    )
    .bind(run)
    .bind(back_at)
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert_eq!(across, 4);
    // Each target was started and finished exactly once: no status lost,
    // no execution claimed twice.
    assert_eq!(hub.audit_count("target.started").await, 6);
    assert_eq!(hub.audit_count("target.succeeded").await, 6);
    for worker in &mut workers {
        assert!(worker.is_running(), "a worker exited: {}", worker.logs());
    }
    // The rebuilt consumers keep taking new work.
    hub.migration(&project, "3", "CREATE TABLE later (id int);", "")
        .await;
    let next = hub
        .requested_and_approved(&project, Direction::Up, "3", 6)
        .await;
    hub.execute(next).await;
    assert_eq!(
        hub.wait_for_runs(&[next], RUNS_DEADLINE).await,
        [RunState::Succeeded]
    );
    drop(workers);
    drop(restarted);
}

// --- a worker process killed mid-migration --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_killed_mid_migration_leaves_the_postgres_target_untouched_and_unlocked() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(
        &project,
        "1",
        "CREATE TABLE half_done (id int); SELECT pg_sleep(60);",
        "",
    )
    .await;
    let run = hub
        .requested_and_approved(&project, Direction::Up, "1", 1)
        .await;
    let mut victim = hub.spawn_workers(1, 1, 10_000).await.remove(0);
    hub.execute(run).await;
    wait_for(
        Duration::from_secs(60),
        "the migration to run on the target",
        || async {
            (sessions_running(std::slice::from_ref(target), "pg_sleep").await == 1).then_some(())
        },
    )
    .await;

    victim.kill();

    // The target notices its client is gone, rolls back and lets go of the
    // lock.
    wait_for(
        Duration::from_secs(30),
        "the dead worker's target session to end",
        || async {
            (sessions_running(std::slice::from_ref(target), "pg_sleep").await == 0).then_some(())
        },
    )
    .await;
    assert!(!target.has_table("half_done").await);
    assert!(
        target.lock_is_free().await,
        "the dead worker's target lock was released"
    );

    // Another process of the pool gets the orphaned job once the queue
    // presumes the victim dead, and settles the execution without running
    // anything again.
    let _rescuer = hub.spawn_workers(1, 1, 10_000).await;
    assert_eq!(
        hub.wait_for_runs(&[run], Duration::from_secs(120)).await,
        [RunState::Failed]
    );
    hub.assert_interrupted(run, target).await;
    assert!(!target.has_table("half_done").await);
    assert!(target.history().await.is_empty());
    assert!(hub.applied(target).await.is_empty());
    assert_eq!(hub.audit_count("target.started").await, 1);
    assert_eq!(hub.audit_count("target.interrupted").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_killed_mid_script_leaves_the_mariadb_target_dirty_and_resumable() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(
        &project,
        "1",
        "CREATE TABLE half (id int);\nINSERT INTO half VALUES (1);\nSELECT SLEEP(6);\n\
         CREATE TABLE rest (id int);",
        "DROP TABLE rest; DROP TABLE half;",
    )
    .await;
    let run = hub
        .requested_and_approved(&project, Direction::Up, "1", 1)
        .await;
    let mut victim = hub.spawn_workers(1, 1, 30_000).await.remove(0);
    hub.execute(run).await;
    wait_for(
        Duration::from_secs(60),
        "the worker to report statement 3 running",
        || async { (hub.execution(run, target).await.statement == Some(3)).then_some(()) },
    )
    .await;

    victim.kill();

    // The next process of the pool settles the orphaned execution: MySQL
    // committed statements 1 and 2, so the target is dirty at statement 3.
    let rescuer = hub.spawn_workers(1, 1, 30_000).await;
    assert_eq!(
        hub.wait_for_runs(&[run], Duration::from_secs(120)).await,
        [RunState::Failed]
    );
    let execution = hub.execution(run, target).await;
    assert_eq!(execution.state, TargetState::Interrupted);
    let error = execution.error.unwrap();
    assert!(
        error.contains("stopped while statement 3 of version 1 ran"),
        "{error}"
    );
    let dirty = support::dirty_row(&hub, target)
        .await
        .expect("target is dirty");
    assert_eq!((dirty.version.as_str(), dirty.statement_index), ("1", 3));
    assert_eq!(
        dirty.statements_hash,
        common::domain::split::StatementsHash::of([
            "CREATE TABLE half (id int)",
            "INSERT INTO half VALUES (1)"
        ])
        .hex()
    );
    assert!(target.my_versions().await.is_empty());
    assert!(hub.applied(target).await.is_empty());

    // Resuming after the sleep applies the rest once, and cleans the target.
    hub.resume(run, target, 4).await;
    assert_eq!(
        hub.wait_for_runs(&[run], Duration::from_secs(120)).await,
        [RunState::Succeeded]
    );
    assert!(target.my_has_table("rest").await);
    assert_eq!(target.my_scalar_i64("SELECT COUNT(*) FROM half").await, 1);
    assert_eq!(target.my_versions().await, ["1"]);
    assert_eq!(hub.applied(target).await.len(), 1);
    assert!(support::dirty_row(&hub, target).await.is_none());
    drop(rescuer);
}

// --- bad targets next to healthy ones --------------------------------------

/// A run of the project to version 1 with two worker processes (kept
/// running until the caller drops them): it ends partially failed, with no
/// execution left open.
async fn partially_failed_run(hub: &TestHub, project: &Project) -> (Uuid, Vec<WorkerProcess>) {
    let run = hub
        .requested_and_approved(project, Direction::Up, "1", 10)
        .await;
    let workers = hub.spawn_workers(2, 2, 10_000).await;

    hub.execute(run).await;

    assert_eq!(
        hub.wait_for_runs(&[run], RUNS_DEADLINE).await,
        [RunState::PartiallyFailed]
    );
    assert_all_final(hub, &[run]).await;
    (run, workers)
}

/// Whether the PostgreSQL database at `url` has the table `widgets`.
async fn has_widgets(url: &str) -> bool {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let found = sqlx::query_scalar("SELECT to_regclass('widgets') IS NOT NULL")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_wrong_password_and_failing_sql_fail_only_their_postgres_targets() {
    let hub = TestHub::new().await;
    let mut project = hub
        .project(&[
            TargetOptions::default(),
            TargetOptions::default(),
            // Nothing listens on port 1.
            TargetOptions {
                port: Some(1),
                ..Default::default()
            },
            TargetOptions::default(),
        ])
        .await;
    let (healthy, unreachable, broken) = (
        project.targets[..2].to_vec(),
        project.targets[2].clone(),
        project.targets[3].clone(),
    );
    broken.execute("CREATE TABLE widgets (id int)").await;
    // The shared server trusts every local connection; a server of the
    // test's own checks passwords: one role, one target with its password
    // and one with a wrong one.
    let auth_server = TestPgInstance::start_with_password("superuser-pw");
    let mut admin = PgConnection::connect(&auth_server.admin_url())
        .await
        .unwrap();
    for sql in [
        "CREATE ROLE mh_app LOGIN PASSWORD 'app-pw-right'",
        "CREATE DATABASE app_right OWNER mh_app",
        "CREATE DATABASE app_wrong OWNER mh_app",
    ] {
        sqlx::raw_sql(sql).execute(&mut admin).await.unwrap();
    }
    drop(admin);
    let own = |database: &'static str, password: &'static str| NewTarget {
        name: database,
        engine: Engine::Postgres,
        host: "127.0.0.1",
        port: i32::from(auth_server.port),
        database,
        username: "mh_app",
        password: Some(password),
        tls_mode: TlsMode::Disable,
        session_settings: "",
        worker_pool: "",
    };
    let pool = hub.pool_name.clone();
    let right = hub
        .add_target(
            &mut project,
            &NewTarget {
                worker_pool: &pool,
                ..own("app_right", "app-pw-right")
            },
        )
        .await;
    let wrong = hub
        .add_target(
            &mut project,
            &NewTarget {
                worker_pool: &pool,
                ..own("app_wrong", "app-pw-WRONG")
            },
        )
        .await;
    hub.migration(&project, "1", "CREATE TABLE widgets (id int);", "")
        .await;
    let (run, _workers) = partially_failed_run(&hub, &project).await;
    for target in healthy.iter().chain([&right]) {
        assert_eq!(
            hub.execution(run, target).await.state,
            TargetState::Succeeded
        );
    }
    assert!(
        has_widgets(&auth_server.url("app_right")).await,
        "the target with the right password was migrated"
    );

    let error = hub.failure(run, &unreachable).await;
    assert!(error.starts_with("could not connect to "), "{error}");
    assert!(error.contains("Connection refused"), "{error}");

    let error = hub.failure(run, &wrong).await;
    assert!(
        error.contains("password authentication failed for user \"mh_app\""),
        "{error}"
    );
    assert!(
        !error.contains("app-pw-WRONG"),
        "the password leaked: {error}"
    );
    assert!(!has_widgets(&auth_server.url("app_wrong")).await);

    let error = hub.failure(run, &broken).await;
    assert!(
        error.starts_with("ERROR: relation \"widgets\" already exists (SQLSTATE 42P07)"),
        "{error}"
    );
    assert!(broken.history().await.is_empty());
    assert!(hub.applied(&broken).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_wrong_password_and_failing_sql_fail_only_their_mariadb_targets() {
    let hub = TestHub::new().await;
    let project = hub
        .mysql_project(&[
            TargetOptions::default(),
            TargetOptions {
                password: Some("app-pw-right"),
                ..Default::default()
            },
            TargetOptions {
                password: Some("app-pw-before"),
                ..Default::default()
            },
            TargetOptions {
                port: Some(1),
                ..Default::default()
            },
            TargetOptions::default(),
        ])
        .await;
    let [healthy, right, wrong, unreachable, broken] = &project.targets[..] else {
        unreachable!()
    };
    // The password changed on the server since the target was registered.
    let mut admin = mariadb::admin().await;
    admin
        .query_drop(format!(
            "ALTER USER '{}'@'%' IDENTIFIED BY 'app-pw-after'",
            wrong.row.username
        ))
        .await
        .unwrap();
    let _ = admin.disconnect().await;
    broken.my_execute("CREATE TABLE widgets (id int)").await;
    hub.migration(&project, "1", "CREATE TABLE widgets (id int)", "")
        .await;
    let (run, _workers) = partially_failed_run(&hub, &project).await;
    for target in [healthy, right] {
        assert_eq!(
            hub.execution(run, target).await.state,
            TargetState::Succeeded
        );
        assert!(target.my_has_table("widgets").await);
    }

    let error = hub.failure(run, wrong).await;
    assert!(
        error.contains(&format!("Access denied for user '{}'@", wrong.row.username)),
        "{error}"
    );
    assert!(
        !error.contains("app-pw-before"),
        "the password leaked: {error}"
    );
    assert!(!wrong.my_has_table("widgets").await);

    let error = hub.failure(run, unreachable).await;
    assert!(error.contains("Connection refused"), "{error}");

    let error = hub.failure(run, broken).await;
    assert!(error.contains("Table 'widgets' already exists"), "{error}");
    assert!(broken.my_history().await.is_empty());
    assert!(hub.applied(broken).await.is_empty());
}

// --- locks held elsewhere ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_lock_held_elsewhere_fails_the_postgres_migration_after_the_lock_timeout() {
    let hub = TestHub::new().await;
    hub.set_lock_timeout(500).await;
    let project = hub.project_with_targets(2).await;
    let (locked, free) = (&project.targets[0], &project.targets[1]);
    for target in [locked, free] {
        target.execute("CREATE TABLE accounts (id int)").await;
    }
    hub.migration(
        &project,
        "1",
        "ALTER TABLE accounts ADD COLUMN note text;",
        "",
    )
    .await;
    let run = hub
        .requested_and_approved(&project, Direction::Up, "1", 10)
        .await;
    // A long transaction elsewhere holds the table.
    let mut holder = locked.connect().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE;")
        .execute(&mut holder)
        .await
        .unwrap();
    let _workers = hub.spawn_workers(1, 2, 10_000).await;

    hub.execute(run).await;

    // Settled while the lock is still held: the migration gave up, it did
    // not hang behind the holder.
    assert_eq!(
        hub.wait_for_runs(&[run], RUNS_DEADLINE).await,
        [RunState::PartiallyFailed]
    );
    let error = hub.failure(run, locked).await;
    assert!(
        error.contains("canceling statement due to lock timeout (SQLSTATE 55P03)"),
        "{error}"
    );
    // The failure names who held the table (seen by the pre-flight).
    assert!(
        error.contains("blocked by pid") && error.contains("LOCK TABLE accounts"),
        "{error}"
    );
    assert_eq!(hub.execution(run, free).await.state, TargetState::Succeeded);
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    drop(holder);
    let has_note = "SELECT count(*) FROM information_schema.columns
                    WHERE table_name = 'accounts' AND column_name = 'note'";
    assert_eq!(locked.scalar_i64(has_note).await, 0);
    assert!(locked.history().await.is_empty());
    assert!(hub.applied(locked).await.is_empty());
    let mut conn = hub.db.acquire().await.unwrap();
    assert!(
        store::target_state::dirty(&mut conn, locked.id())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(free.scalar_i64(has_note).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lock_held_elsewhere_fails_the_mariadb_migration_after_lock_wait_timeout() {
    let hub = TestHub::new().await;
    // MariaDB counts lock_wait_timeout in whole seconds: 500 ms becomes 1 s.
    hub.set_lock_timeout(500).await;
    let project = hub.mysql_project_with_targets(2).await;
    let (locked, free) = (&project.targets[0], &project.targets[1]);
    for target in [locked, free] {
        target
            .my_execute("CREATE TABLE accounts (id int) ENGINE=InnoDB")
            .await;
    }
    hub.migration(
        &project,
        "1",
        "ALTER TABLE accounts ADD COLUMN note varchar(20)",
        "",
    )
    .await;
    let run = hub
        .requested_and_approved(&project, Direction::Up, "1", 10)
        .await;
    // An open transaction that read the table holds its metadata lock.
    let mut holder = locked.my_connect().await;
    holder.query_drop("START TRANSACTION").await.unwrap();
    let _: Vec<i64> = holder.query("SELECT id FROM accounts").await.unwrap();
    let _workers = hub.spawn_workers(1, 2, 10_000).await;

    hub.execute(run).await;

    assert_eq!(
        hub.wait_for_runs(&[run], RUNS_DEADLINE).await,
        [RunState::PartiallyFailed]
    );
    let error = hub.failure(run, locked).await;
    assert!(error.contains("Lock wait timeout exceeded"), "{error}");
    assert_eq!(hub.execution(run, free).await.state, TargetState::Succeeded);
    holder.query_drop("ROLLBACK").await.unwrap();
    let _ = holder.disconnect().await;
    let has_note = "SELECT COUNT(*) FROM information_schema.columns
                    WHERE table_schema = DATABASE() AND table_name = 'accounts'
                      AND column_name = 'note'";
    assert_eq!(locked.my_scalar_i64(has_note).await, 0);
    assert!(locked.my_history().await.is_empty());
    assert!(hub.applied(locked).await.is_empty());
    // The failing statement was the script's first: nothing ran, so the
    // target is not left dirty.
    let mut conn = hub.db.acquire().await.unwrap();
    assert!(
        store::target_state::dirty(&mut conn, locked.id())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(free.my_scalar_i64(has_note).await, 1);
}
