//! The worker against real PostgreSQL targets: a hub seeded as the control
//! plane would, jobs pushed through apalis, an in-process worker.

use std::time::Duration;

use crate::support::{self, TargetOptions, TestHub, dirty_row};
use common::domain::{Checksum, Direction, RunState, TargetState, TlsMode, split::StatementsHash};
use worker::{Worker, lock::PG_ADVISORY_KEY};

const WIDGETS_UP: &str = "CREATE TABLE widgets (id int PRIMARY KEY, name text);";
const WIDGETS_DOWN: &str = "DROP TABLE widgets;";
const GADGETS_UP: &str = "CREATE TABLE gadgets (id int);\nINSERT INTO gadgets VALUES (1), (2);";
const GADGETS_DOWN: &str = "DROP TABLE gadgets;";
const NOTE_UP: &str = "ALTER TABLE widgets ADD COLUMN note text;";
const NOTE_DOWN: &str = "ALTER TABLE widgets DROP COLUMN note;";

#[tokio::test]
async fn applies_pending_migrations_to_every_target() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(3).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration(&project, "2", GADGETS_UP, GADGETS_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    let sum1 = Checksum::of(WIDGETS_UP, Some(WIDGETS_DOWN)).to_string();
    let sum2 = Checksum::of(GADGETS_UP, Some(GADGETS_DOWN)).to_string();
    for target in &project.targets {
        assert!(target.has_table("widgets").await);
        assert_eq!(target.scalar_i64("SELECT count(*) FROM gadgets").await, 2);
        assert_eq!(
            target.history().await,
            [
                ("1".to_owned(), sum1.clone(), run),
                ("2".to_owned(), sum2.clone(), run)
            ]
        );
        assert_eq!(
            hub.applied(target).await,
            [
                ("1".to_owned(), sum1.clone()),
                ("2".to_owned(), sum2.clone())
            ]
        );
        let execution = hub.execution(run, target).await;
        assert_eq!(execution.state, TargetState::Succeeded);
        assert_eq!(execution.worker, Some(worker.id));
        assert_eq!(execution.current_version.as_deref(), Some("2"));
    }
    // Per migration, per target: what ran and how many statements.
    let steps: Vec<(String, i32)> = sqlx::query_as(
        "SELECT version, statements FROM migration_executions
         WHERE outcome = 'succeeded' AND direction = 'up' ORDER BY version, target_id",
    )
    .fetch_all(&hub.db)
    .await
    .unwrap();
    assert_eq!(steps.len(), 6);
    assert!(steps[..3].iter().all(|s| s == &("1".to_owned(), 1)));
    assert!(steps[3..].iter().all(|s| s == &("2".to_owned(), 2)));
    assert_eq!(hub.audit_count("target.started").await, 3);
    assert_eq!(hub.audit_count("target.succeeded").await, 3);
    assert_eq!(hub.audit_count("run.finished").await, 1);

    worker.stop().await;
    let stopped: bool =
        sqlx::query_scalar("SELECT stopped_at IS NOT NULL FROM workers WHERE pool = $1")
            .bind(&hub.pool_name)
            .fetch_one(&hub.db)
            .await
            .unwrap();
    assert!(stopped, "a stopped worker is marked stopped in the fleet");
}

#[tokio::test]
async fn failing_migration_fails_only_its_target_with_the_database_error() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(3).await;
    let broken = &project.targets[1];
    broken.execute("CREATE TABLE gadgets (id int)").await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration(&project, "2", GADGETS_UP, GADGETS_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::PartiallyFailed);
    let failed = hub.execution(run, broken).await;
    assert_eq!(failed.state, TargetState::Failed);
    assert_eq!(failed.current_version.as_deref(), Some("2"));
    let error = failed.error.unwrap();
    assert!(
        error.starts_with("ERROR: relation \"gadgets\" already exists (SQLSTATE 42P07)"),
        "{error}"
    );
    // Version 1 stays applied; the failed version 2 left nothing behind.
    assert_eq!(broken.versions().await, ["1"]);
    assert_eq!(hub.applied_versions(broken).await, ["1"]);
    assert_eq!(broken.scalar_i64("SELECT count(*) FROM gadgets").await, 0);
    for target in [&project.targets[0], &project.targets[2]] {
        assert_eq!(
            hub.execution(run, target).await.state,
            TargetState::Succeeded
        );
        assert_eq!(target.history().await.len(), 2);
    }
    assert_eq!(hub.audit_count("target.failed").await, 1);
    worker.stop().await;
}

#[tokio::test]
async fn syntax_error_names_the_script_line_and_runs_nothing() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(
        &project,
        "1",
        "CREATE TABLE first (id int);\nCREATE TABEL second (id int);",
        "",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Failed);
    let target = &project.targets[0];
    let error = hub.execution(run, target).await.error.unwrap();
    assert_eq!(
        error,
        "ERROR: syntax error at or near \"TABEL\" (SQLSTATE 42601)\nLINE: 2 of the up script"
    );
    // The statement before the error did not run either.
    assert!(!target.has_table("first").await);
    assert!(target.history().await.is_empty());
    worker.stop().await;
}

#[tokio::test]
async fn redelivered_jobs_and_repeated_runs_apply_nothing_twice() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(2).await;
    // Not idempotent on purpose: a second application adds a second row.
    hub.migration(
        &project,
        "1",
        "CREATE TABLE IF NOT EXISTS hits (n int); INSERT INTO hits VALUES (1);",
        "DROP TABLE hits;",
    )
    .await;
    let first = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;
    assert_eq!(hub.execute_and_wait(first).await, RunState::Succeeded);

    // The same jobs again, as after a redelivery: the executions are no
    // longer queued, so the worker leaves them alone.
    hub.push_again(first).await;
    hub.wait_for_idle_queue().await;
    assert_eq!(hub.audit_count("target.started").await, 2);

    // A second run of the same version finds nothing pending.
    let second = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(second).await, RunState::Succeeded);
    for target in &project.targets {
        assert_eq!(
            hub.execution(first, target).await.state,
            TargetState::Succeeded
        );
        assert_eq!(
            hub.execution(second, target).await.state,
            TargetState::Skipped
        );
        assert_eq!(target.scalar_i64("SELECT count(*) FROM hits").await, 1);
        assert_eq!(target.history().await.len(), 1);
    }
    worker.stop().await;
}

#[tokio::test]
async fn concurrent_runs_on_one_db_set_apply_every_migration_once() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(8).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration(&project, "2", GADGETS_UP, GADGETS_DOWN).await;
    hub.migration(
        &project,
        "3",
        "CREATE TABLE hits (n int); INSERT INTO hits VALUES (1);",
        "",
    )
    .await;
    let runs = [
        hub.approved_run(&project, Direction::Up, "3").await,
        hub.approved_run(&project, Direction::Up, "3").await,
    ];
    let workers = [
        hub.start_worker(10_000).await,
        hub.start_worker(10_000).await,
    ];

    for run in runs {
        hub.execute(run).await;
    }

    for run in runs {
        assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    }
    for target in &project.targets {
        assert_eq!(target.versions().await, ["1", "2", "3"]);
        assert_eq!(target.scalar_i64("SELECT count(*) FROM hits").await, 1);
        let states = [
            hub.execution(runs[0], target).await.state,
            hub.execution(runs[1], target).await.state,
        ];
        assert!(states.contains(&TargetState::Succeeded), "{states:?}");
    }
    let applications: i64 =
        sqlx::query_scalar("SELECT count(*) FROM migration_executions WHERE direction = 'up'")
            .fetch_one(&hub.db)
            .await
            .unwrap();
    assert_eq!(applications, 8 * 3);
    for worker in workers {
        worker.stop().await;
    }
}

#[tokio::test]
async fn edited_migration_fails_every_target_and_applies_nothing() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(2).await;
    let id = hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    // Executed while the migration was still what was approved, then edited
    // behind the control plane's back before a worker took the jobs.
    hub.execute(run).await;
    let edited = "DROP SCHEMA public CASCADE;";
    sqlx::query("UPDATE migrations SET up_sql = $2, checksum = $3 WHERE id = $1")
        .bind(id)
        .bind(edited)
        .bind(Checksum::of(edited, Some(WIDGETS_DOWN)).as_str())
        .execute(&hub.db)
        .await
        .unwrap();
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.wait_for_run(run).await, RunState::Failed);
    for target in &project.targets {
        let execution = hub.execution(run, target).await;
        assert_eq!(execution.state, TargetState::Failed);
        assert_eq!(
            execution.error.as_deref(),
            Some("checksum of version 1 changed since the run was approved; nothing was applied")
        );
        assert!(!target.has_table("migrate_hub_history").await);
    }
    worker.stop().await;
}

#[tokio::test]
async fn busy_target_fails_after_the_bounded_lock_wait() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(2).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let busy = &project.targets[0];
    let mut holder = busy.connect().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PG_ADVISORY_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let worker = hub.start_worker(300).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::PartiallyFailed);
    let execution = hub.execution(run, busy).await;
    assert_eq!(
        execution.error.as_deref(),
        Some("target is locked by another migration (waited 300 ms)")
    );
    assert!(!busy.has_table("widgets").await);
    assert_eq!(
        hub.execution(run, &project.targets[1]).await.state,
        TargetState::Succeeded
    );
    drop(holder);
    worker.stop().await;
}

#[tokio::test]
async fn unreachable_target_fails_with_the_driver_message() {
    let hub = TestHub::new().await;
    let project = hub
        .project(&[
            TargetOptions::default(),
            TargetOptions {
                port: Some(1),
                ..Default::default()
            },
        ])
        .await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::PartiallyFailed);
    let error = hub.execution(run, &project.targets[1]).await.error.unwrap();
    assert!(error.starts_with("could not connect to "), "{error}");
    assert!(error.contains(":1/mh_tgt_"), "{error}");
    assert!(error.contains("Connection refused"), "{error}");
    assert_eq!(
        hub.execution(run, &project.targets[0]).await.state,
        TargetState::Succeeded
    );
    worker.stop().await;
}

#[tokio::test]
async fn down_run_rolls_back_in_reverse_order() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration(&project, "2", GADGETS_UP, GADGETS_DOWN).await;
    // Rolling back 2 before 3 would fail: 3 changes 2's table.
    hub.migration(
        &project,
        "3",
        "ALTER TABLE gadgets ADD COLUMN color text;",
        "ALTER TABLE gadgets DROP COLUMN color;",
    )
    .await;
    let worker = hub.start_worker(1_000).await;
    let up = hub.approved_run(&project, Direction::Up, "3").await;
    assert_eq!(hub.execute_and_wait(up).await, RunState::Succeeded);

    let down = hub.approved_run(&project, Direction::Down, "1").await;
    assert_eq!(hub.execute_and_wait(down).await, RunState::Succeeded);
    let target = &project.targets[0];
    assert!(target.has_table("widgets").await);
    assert!(!target.has_table("gadgets").await);
    assert_eq!(target.versions().await, ["1"]);
    assert_eq!(hub.applied_versions(target).await, ["1"]);
    let order: Vec<String> = sqlx::query_scalar(
        "SELECT version FROM migration_executions WHERE direction = 'down' ORDER BY id",
    )
    .fetch_all(&hub.db)
    .await
    .unwrap();
    assert_eq!(order, ["3", "2"]);
    worker.stop().await;
}

#[tokio::test]
async fn versions_the_hub_lost_are_caught_up_only_when_its_own_runs_applied_them() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration(&project, "2", GADGETS_UP, GADGETS_DOWN).await;
    let worker = hub.start_worker(1_000).await;
    let first = hub.approved_run(&project, Direction::Up, "2").await;
    assert_eq!(hub.execute_and_wait(first).await, RunState::Succeeded);
    let target = &project.targets[0];
    // A worker died after the target committed version 2, before its hub
    // record: the hub lacks it, the target's history has it, from run `first`.
    sqlx::query("DELETE FROM applied_migrations WHERE version = '2'")
        .execute(&hub.db)
        .await
        .unwrap();
    hub.migration(&project, "3", NOTE_UP, NOTE_DOWN).await;

    let second = hub.approved_run(&project, Direction::Up, "3").await;
    assert_eq!(hub.execute_and_wait(second).await, RunState::Succeeded);
    assert_eq!(hub.applied_versions(target).await, ["1", "2", "3"]);
    assert_eq!(
        target.versions().await,
        ["1", "2", "3"],
        "nothing applied twice"
    );
    assert_eq!(target.scalar_i64("SELECT count(*) FROM gadgets").await, 2);

    // A row no run of this hub wrote is drift, not something to adopt.
    target
        .execute(
            "INSERT INTO migrate_hub_history (version, checksum, name, run_id) \
             VALUES ('4', 'feed', 'elsewhere', gen_random_uuid())",
        )
        .await;
    hub.migration(&project, "5", "SELECT 1;", "").await;
    let third = hub.approved_run(&project, Direction::Up, "5").await;
    assert_eq!(hub.execute_and_wait(third).await, RunState::Failed);
    let error = hub.execution(third, target).await.error.unwrap();
    assert!(
        error.contains("version 4 is in the target's history but not recorded in the hub"),
        "{error}"
    );
    worker.stop().await;
}

#[tokio::test]
async fn drift_between_hub_and_target_blocks_the_target() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    let worker = hub.start_worker(1_000).await;
    let first = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(first).await, RunState::Succeeded);
    let target = &project.targets[0];
    // Someone edits the target's history behind the hub's back.
    target.execute("DELETE FROM migrate_hub_history").await;
    hub.migration(&project, "2", GADGETS_UP, GADGETS_DOWN).await;

    let second = hub.approved_run(&project, Direction::Up, "2").await;
    assert_eq!(hub.execute_and_wait(second).await, RunState::Failed);
    let error = hub.execution(second, target).await.error.unwrap();
    assert!(error.starts_with("drift: "), "{error}");
    assert!(
        error
            .contains("version 1 is recorded as applied in the hub but is missing from the target"),
        "{error}"
    );
    assert!(!target.has_table("gadgets").await);
    worker.stop().await;
}

#[tokio::test]
async fn session_settings_and_the_sealed_password_are_used() {
    let hub = TestHub::new().await;
    let project = hub
        .project(&[TargetOptions {
            password: Some("s3cret-pw"),
            session_settings: "SET search_path = app",
            ..Default::default()
        }])
        .await;
    let target = &project.targets[0];
    target.execute("CREATE SCHEMA app").await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    assert!(target.has_table("app.widgets").await);
    assert!(target.has_table("app.migrate_hub_history").await);
    assert!(!target.has_table("public.widgets").await);
    // The password never reaches the audit log.
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE details::text LIKE '%s3cret%'")
            .fetch_one(&hub.db)
            .await
            .unwrap();
    assert_eq!(leaked, 0);
    worker.stop().await;
}

#[tokio::test]
async fn non_transactional_migration_runs_outside_a_transaction() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration_with(
        &project,
        "2",
        "CREATE INDEX CONCURRENTLY widgets_name_idx ON widgets (name);",
        Some("DROP INDEX CONCURRENTLY widgets_name_idx;"),
        false,
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    let target = &project.targets[0];
    assert!(target.has_table("widgets_name_idx").await);
    assert_eq!(target.history().await.len(), 2);
    worker.stop().await;
}

#[tokio::test]
async fn non_transactional_script_runs_statement_by_statement() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    // Sent as one message, PostgreSQL would run these in an implicit
    // transaction and refuse CONCURRENTLY.
    hub.migration_with(
        &project,
        "2",
        "DROP INDEX CONCURRENTLY IF EXISTS widgets_name_idx;\n\
         CREATE INDEX CONCURRENTLY widgets_name_idx ON widgets (name);\n\
         CREATE INDEX CONCURRENTLY widgets_semi_idx ON widgets ((name || ';'));",
        Some(
            "DROP INDEX CONCURRENTLY widgets_semi_idx;\nDROP INDEX CONCURRENTLY widgets_name_idx;",
        ),
        false,
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    let target = &project.targets[0];
    assert!(target.has_table("widgets_name_idx").await);
    assert!(target.has_table("widgets_semi_idx").await);
    assert_eq!(target.history().await.len(), 2);

    let down = hub.approved_run(&project, Direction::Down, "1").await;
    assert_eq!(hub.execute_and_wait(down).await, RunState::Succeeded);
    assert!(!target.has_table("widgets_semi_idx").await);
    assert!(!target.has_table("widgets_name_idx").await);
    assert_eq!(target.history().await.len(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn non_transactional_script_failing_part_way_leaves_the_target_dirty() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration_with(
        &project,
        "2",
        "CREATE INDEX CONCURRENTLY widgets_name_idx ON widgets (name);\n\
         CREATE INDEX CONCURRENTLY gadgets_idx ON gadgets (id);",
        None,
        false,
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Failed);
    let target = &project.targets[0];
    let failed = hub.execution(run, target).await;
    assert_eq!(failed.statement, Some(2));
    let error = failed.error.unwrap();
    assert!(
        error.starts_with(
            "ERROR: relation \"gadgets\" does not exist (SQLSTATE 42P01)\n\
             STATEMENT: 2 of 2 in the up script, at line 2\n\
             the target is dirty: statements 1 to 1 of version 2 were applied"
        ),
        "{error}"
    );
    let dirty = dirty_row(&hub, target).await.expect("target is dirty");
    assert_eq!((dirty.version.as_str(), dirty.statement_index), ("2", 2));
    assert_eq!(
        dirty.statements_hash,
        StatementsHash::of(["CREATE INDEX CONCURRENTLY widgets_name_idx ON widgets (name)"]).hex()
    );
    // The first index stays; version 2 is recorded nowhere.
    assert!(target.has_table("widgets_name_idx").await);
    assert_eq!(target.history().await.len(), 1);
    assert_eq!(hub.applied(target).await.len(), 1);

    // Once the cause is fixed, an admin resumes at statement 2.
    target.execute("CREATE TABLE gadgets (id int)").await;
    let mut tx = hub.db.begin().await.unwrap();
    let queued = common::lifecycle::requeue_for_resume(&mut tx, target.id(), run, 2)
        .await
        .unwrap();
    assert!(queued.is_some());
    tx.commit().await.unwrap();
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    assert!(target.has_table("gadgets_idx").await);
    assert_eq!(target.history().await.len(), 2);
    assert_eq!(hub.applied(target).await.len(), 2);
    assert!(dirty_row(&hub, target).await.is_none());
    worker.stop().await;
}

#[tokio::test]
async fn jobs_are_claimed_on_notification_without_waiting_for_a_poll() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(3).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    // No fallback poll within the test's lifetime: only LISTEN/NOTIFY (or
    // apalis's 5 s heartbeat) can deliver the jobs.
    let worker = hub
        .start(
            Worker::new(
                hub.db.clone(),
                hub.keys.clone(),
                hub.pool_name.clone(),
                4,
                1_000,
            )
            .poll_interval(Duration::from_secs(600)),
        )
        .await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    let slowest_claim_ms: f64 = sqlx::query_scalar(
        "SELECT max(extract(epoch FROM started_at - queued_at) * 1000)::float8
         FROM target_executions WHERE run_id = $1",
    )
    .bind(run)
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert!(
        slowest_claim_ms < 2_000.0,
        "jobs waited {slowest_claim_ms} ms: the notification was not used"
    );
    worker.stop().await;
}

#[tokio::test]
async fn tls_modes_encrypt_and_verify_full_checks_the_certificate() {
    let hub = TestHub::new().await;
    assert!(
        hub.server_has_tls().await,
        "the test PostgreSQL server has ssl = off; scripts/ensure-services.sh turns it on"
    );
    let project = hub
        .project(&[
            TargetOptions {
                tls_mode: Some(TlsMode::Require),
                ..Default::default()
            },
            TargetOptions {
                tls_mode: Some(TlsMode::VerifyFull),
                ..Default::default()
            },
        ])
        .await;
    hub.migration(
        &project,
        "1",
        "CREATE TABLE tls_seen AS SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid();",
        "DROP TABLE tls_seen;",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;

    hub.execute(run).await;

    // The local server's certificate is self-signed: `require` encrypts
    // anyway, `verify-full` refuses it.
    assert_eq!(hub.wait_for_run(run).await, RunState::PartiallyFailed);
    let encrypted = &project.targets[0];
    assert_eq!(
        hub.execution(run, encrypted).await.state,
        TargetState::Succeeded
    );
    assert_eq!(
        encrypted
            .scalar_i64("SELECT count(*) FROM tls_seen WHERE ssl")
            .await,
        1
    );
    let verified = &project.targets[1];
    let error = hub.execution(run, verified).await.error.unwrap();
    assert!(error.starts_with("could not connect to "), "{error}");
    assert!(error.contains("invalid peer certificate"), "{error}");
    worker.stop().await;
}

#[tokio::test]
async fn no_op_versions_and_empty_down_scripts_are_recorded_without_running_anything() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    // A fix only the other engine needed: the file holds only a comment.
    hub.migration_with(
        &project,
        "2",
        "-- only MySQL needed this fix\n",
        Some(""),
        true,
    )
    .await;
    // Rolling back needs no SQL: the column may stay.
    hub.migration_with(&project, "10", NOTE_UP, Some(""), true)
        .await;
    let worker = hub.start_worker(1_000).await;
    let target = &project.targets[0];

    let up = hub.approved_run(&project, Direction::Up, "10").await;
    assert_eq!(hub.execute_and_wait(up).await, RunState::Succeeded);
    let history: Vec<(String, String)> = target
        .history()
        .await
        .into_iter()
        .map(|(v, c, _)| (v, c))
        .collect();
    assert_eq!(history, hub.applied(target).await, "both sides agree");
    assert_eq!(history[1].0, "2", "the no-op version is recorded");
    assert_eq!(
        history[1].1,
        Checksum::of("-- only MySQL needed this fix\n", Some("")).as_str()
    );
    let statements: i64 = sqlx::query_scalar(
        "SELECT statements::bigint FROM migration_executions WHERE version = '2' AND direction = 'up'",
    )
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert_eq!(statements, 0);

    let down = hub.approved_run(&project, Direction::Down, "1").await;
    hub.execute(down).await;
    assert_eq!(
        hub.wait_for_run(down).await,
        RunState::Succeeded,
        "{:?}",
        hub.execution(down, target).await.error
    );
    assert_eq!(target.versions().await, ["1"]);
    assert_eq!(
        target
            .scalar_i64(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'widgets' AND column_name = 'note'"
            )
            .await,
        1,
        "the empty down script ran nothing"
    );
    worker.stop().await;
}

/// The kratos history: every up, then every down it has, newest first, down
/// to the version whose down script fails upstream (see the workloads'
/// README). Over a hundred of its down files are empty: they roll back as
/// no-ops, as golang-migrate runs them.
#[tokio::test]
async fn kratos_history_applies_up_and_rolls_back_every_down_it_has() {
    const LAST_KEPT: &str = "20200831110752000003";
    let migrations = support::workload("kratos/postgres");
    assert_eq!(migrations.len(), 327);
    assert!(migrations.iter().all(|m| m.down_sql.is_some()));
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    let target = &project.targets[0];
    hub.import(&project, &migrations).await;
    let worker = hub.start_worker(1_000).await;

    let newest = migrations.last().unwrap().version.to_string();
    let up = hub.approved_run(&project, Direction::Up, &newest).await;
    hub.execute_to_success(up, target, Duration::from_secs(240))
        .await;
    assert_eq!(target.history().await.len(), 327);

    let down = hub.approved_run(&project, Direction::Down, LAST_KEPT).await;
    hub.execute_to_success(down, target, Duration::from_secs(240))
        .await;
    let last_kept = common::domain::Version::parse(LAST_KEPT).unwrap();
    let kept = migrations.iter().filter(|m| m.version <= last_kept).count();
    assert_eq!(327 - kept, 234, "every down above the failing one ran");
    let history = target.history().await;
    assert_eq!(history.len(), kept);
    assert_eq!(history.last().map(|h| h.0.as_str()), Some(LAST_KEPT));
    assert_eq!(hub.applied(target).await.len(), kept);
    worker.stop().await;
}
