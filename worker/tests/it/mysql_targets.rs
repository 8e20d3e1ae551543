//! The worker against real MariaDB targets: a hub seeded as the control
//! plane would, jobs pushed through apalis, an in-process worker.

use std::time::Duration;

use crate::support::{self, TargetDb, TargetOptions, TestHub, dirty_row, eventually, mariadb};
use common::domain::{Checksum, Direction, RunState, TargetState, split::StatementsHash};
use mysql_async::prelude::Queryable;
use tokio::time::Instant;
use worker::lock::mysql_lock_name;

const WIDGETS_UP: &str = "CREATE TABLE widgets (id int PRIMARY KEY, name varchar(50));\n\
INSERT INTO widgets VALUES (1, 'semi;colon'), (2, 'it''s -- not a comment');";
const WIDGETS_DOWN: &str = "DROP TABLE widgets;";
const GADGETS_UP: &str = "-- gadgets; the first line is a comment\nCREATE TABLE gadgets (id int);\n\
/* two rows; */\nINSERT INTO gadgets VALUES (1), (2);\n# done;\n";
const GADGETS_DOWN: &str = "DROP TABLE gadgets;";
const NOTE_UP: &str = "ALTER TABLE widgets ADD COLUMN note text";
const NOTE_DOWN: &str = "ALTER TABLE widgets DROP COLUMN note";

#[tokio::test]
async fn applies_pending_migrations_to_every_mariadb_target() {
    let hub = TestHub::new().await;
    let project = hub
        .mysql_project(&[
            TargetOptions::default(),
            TargetOptions {
                password: Some("s3cret;pw#1"),
                ..Default::default()
            },
            TargetOptions {
                session_settings: "SET sql_mode = 'NO_ENGINE_SUBSTITUTION'; SET NAMES utf8mb4",
                ..Default::default()
            },
        ])
        .await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration(&project, "2", GADGETS_UP, GADGETS_DOWN).await;
    hub.migration(&project, "3", NOTE_UP, NOTE_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "3").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    let sums = [
        Checksum::of(WIDGETS_UP, Some(WIDGETS_DOWN)).to_string(),
        Checksum::of(GADGETS_UP, Some(GADGETS_DOWN)).to_string(),
        Checksum::of(NOTE_UP, Some(NOTE_DOWN)).to_string(),
    ];
    for target in &project.targets {
        assert!(target.my_has_table("widgets").await);
        assert_eq!(
            target.my_scalar_i64("SELECT COUNT(*) FROM gadgets").await,
            2
        );
        assert_eq!(
            target
                .my_scalar_i64("SELECT COUNT(*) FROM widgets WHERE name = 'semi;colon'")
                .await,
            1
        );
        let history = target.my_history().await;
        let rows: Vec<(&str, &str, i64)> = history
            .iter()
            .map(|h| (h.version.as_str(), h.checksum.as_str(), h.statements))
            .collect();
        assert_eq!(
            rows,
            [
                ("1", sums[0].as_str(), 2),
                ("2", sums[1].as_str(), 2),
                ("3", sums[2].as_str(), 1)
            ]
        );
        assert!(history.iter().all(|h| h.run_id == run.to_string()));
        assert!(
            history
                .iter()
                .all(|h| h.name == format!("migration {}", h.version)),
            "{history:?}"
        );
        let applied: Vec<(String, String)> = hub.applied(target).await;
        assert_eq!(
            applied,
            [
                ("1".to_owned(), sums[0].clone()),
                ("2".to_owned(), sums[1].clone()),
                ("3".to_owned(), sums[2].clone())
            ]
        );
        let execution = hub.execution(run, target).await;
        assert_eq!(execution.state, TargetState::Succeeded);
        assert_eq!(execution.worker, Some(worker.id));
        assert_eq!(execution.current_version.as_deref(), Some("3"));
        assert_eq!(execution.statement, None);
        assert!(dirty_row(&hub, target).await.is_none());
    }
    let steps: Vec<(String, i32)> = sqlx::query_as(
        "SELECT version, statements FROM migration_executions
         WHERE outcome = 'succeeded' AND direction = 'up' ORDER BY version, target_id",
    )
    .fetch_all(&hub.db)
    .await
    .unwrap();
    let expected: Vec<(String, i32)> = [("1", 2), ("2", 2), ("3", 1)]
        .iter()
        .flat_map(|&(v, n)| std::iter::repeat_n((v.to_owned(), n), 3))
        .collect();
    assert_eq!(steps, expected);
    assert_eq!(hub.audit_count("target.succeeded").await, 3);

    // A second run finds nothing pending; the lock was released.
    let again = hub.approved_run(&project, Direction::Up, "3").await;
    assert_eq!(hub.execute_and_wait(again).await, RunState::Succeeded);
    for target in &project.targets {
        assert_eq!(
            hub.execution(again, target).await.state,
            TargetState::Skipped
        );
    }
    worker.stop().await;
}

#[tokio::test]
async fn failing_statement_mid_script_marks_only_its_target_dirty() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(3).await;
    let broken = &project.targets[1];
    broken.my_execute("CREATE TABLE gadgets (id int)").await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    let script = "CREATE TABLE parts (id int);\nINSERT INTO parts VALUES (1);\n\nCREATE TABLE gadgets (id int);\nINSERT INTO gadgets VALUES (1);";
    hub.migration(
        &project,
        "2",
        script,
        "DROP TABLE gadgets; DROP TABLE parts;",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::PartiallyFailed);
    let failed = hub.execution(run, broken).await;
    assert_eq!(failed.state, TargetState::Failed);
    assert_eq!(failed.current_version.as_deref(), Some("2"));
    assert_eq!(failed.statement, Some(3));
    let error = failed.error.unwrap();
    assert!(
        error.starts_with(
            "ERROR 1050 (42S01): Table 'gadgets' already exists\n\
             STATEMENT: 3 of 4 in the up script, at line 4\n\
             the target is dirty: statements 1 to 2 of version 2 were applied"
        ),
        "{error}"
    );
    // The hub records where the script stopped and what ran before.
    let dirty = dirty_row(&hub, broken).await.expect("target is dirty");
    assert_eq!(dirty.run_id, run);
    assert_eq!(dirty.version, "2");
    assert_eq!(dirty.direction, "up");
    assert_eq!(dirty.statement_index, 3);
    assert_eq!(
        dirty.statements_hash,
        StatementsHash::of([
            "CREATE TABLE parts (id int)",
            "INSERT INTO parts VALUES (1)"
        ])
        .hex()
    );
    assert_eq!(dirty.error, error);
    // Statements 1 and 2 stay applied; version 2 is not recorded anywhere.
    assert_eq!(broken.my_scalar_i64("SELECT COUNT(*) FROM parts").await, 1);
    assert_eq!(broken.my_versions().await, ["1"]);
    assert_eq!(hub.applied_versions(broken).await, ["1"]);
    for target in [&project.targets[0], &project.targets[2]] {
        assert_eq!(
            hub.execution(run, target).await.state,
            TargetState::Succeeded
        );
        assert_eq!(target.my_versions().await, ["1", "2"]);
        assert!(dirty_row(&hub, target).await.is_none());
    }

    // The next job on the dirty target applies nothing and says why.
    broken.my_execute("DROP TABLE gadgets").await;
    let retry = hub.approved_run(&project, Direction::Up, "2").await;
    hub.execute(retry).await;
    hub.wait_for_run(retry).await;
    let error = hub.failure(retry, broken).await;
    assert!(error.starts_with("target is dirty since "), "{error}");
    assert!(
        error.contains("(version 2, statement 3); an admin must resolve it"),
        "{error}"
    );
    assert!(!broken.my_has_table("gadgets").await);
    assert_eq!(broken.my_versions().await, ["1"]);
    for target in [&project.targets[0], &project.targets[2]] {
        assert_eq!(
            hub.execution(retry, target).await.state,
            TargetState::Skipped
        );
    }
    worker.stop().await;
}

/// Sets the hash of the statements a dirty target's script applied, as
/// recorded in the hub.
async fn record_prefix(hub: &TestHub, target: &TargetDb, statements_hash: String) {
    sqlx::query("UPDATE target_dirty_states SET statements_hash = $2 WHERE target_id = $1")
        .bind(target.id())
        .bind(statements_hash)
        .execute(&hub.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn resumed_script_proves_its_prefix_and_continues_where_it_stopped() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(2).await;
    let target = &project.targets[0];
    target.my_execute("CREATE TABLE gadgets (id int)").await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration(
        &project,
        "2",
        "CREATE TABLE parts (id int);\nINSERT INTO parts VALUES (1);\n\
         CREATE TABLE gadgets (id int);\nINSERT INTO gadgets VALUES (1);",
        "DROP TABLE gadgets; DROP TABLE parts;",
    )
    .await;
    hub.migration(&project, "3", NOTE_UP, NOTE_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "3").await;
    let worker = hub.start_worker(1_000).await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::PartiallyFailed);
    let dirty = dirty_row(&hub, target).await.expect("target is dirty");
    assert_eq!((dirty.version.as_str(), dirty.statement_index), ("2", 3));

    // A prefix that does not hash as recorded (a splitter that now cuts the
    // script differently) is refused before anything runs.
    record_prefix(
        &hub,
        target,
        StatementsHash::of(["CREATE TABLE parts (id int)"]).hex(),
    )
    .await;
    target.my_execute("DROP TABLE gadgets").await;
    hub.resume(run, target, 3).await;
    assert_eq!(hub.wait_for_run(run).await, RunState::PartiallyFailed);
    let refused = hub.execution(run, target).await;
    assert!(
        refused
            .error
            .as_deref()
            .unwrap()
            .contains("no longer matches the script as it splits now"),
        "{refused:?}"
    );
    assert!(!target.my_has_table("gadgets").await);
    let still = dirty_row(&hub, target).await.expect("still dirty");
    assert_eq!(still.statement_index, 3);

    // With the recorded prefix, the script continues at statement 3: the
    // rows of statement 2 are not inserted twice, and the run goes on.
    record_prefix(&hub, target, dirty.statements_hash).await;
    hub.resume(run, target, 3).await;
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    assert_eq!(target.my_scalar_i64("SELECT COUNT(*) FROM parts").await, 1);
    assert_eq!(
        target.my_scalar_i64("SELECT COUNT(*) FROM gadgets").await,
        1
    );
    assert_eq!(target.my_versions().await, ["1", "2", "3"]);
    assert_eq!(hub.applied_versions(target).await, ["1", "2", "3"]);
    assert!(dirty_row(&hub, target).await.is_none(), "clean again");
    assert_eq!(
        hub.execution(run, target).await.state,
        TargetState::Succeeded
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_script_ending_in_a_row_change_commits_it_with_its_history_row() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    let worker = hub.start_worker(1_000).await;
    let first = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(first).await, RunState::Succeeded);
    // The script ended with an INSERT: its row and its history row are there.
    assert_eq!(
        target.my_scalar_i64("SELECT COUNT(*) FROM widgets").await,
        2
    );
    assert_eq!(target.my_versions().await, ["1"]);

    // The target refuses version 2's history row: its last statement,
    // which was to commit with that row, is rolled back with it.
    target
        .my_execute(
            "CREATE TRIGGER refuse_v2 BEFORE INSERT ON migrate_hub_history FOR EACH ROW \
             IF NEW.version = '2' THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no history for version 2'; END IF",
        )
        .await;
    hub.migration(
        &project,
        "2",
        "CREATE TABLE parts (id int);\nINSERT INTO parts VALUES (1), (2);",
        "DROP TABLE parts;",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::Failed);
    let execution = hub.execution(run, target).await;
    assert_eq!(execution.statement, Some(2));
    let error = execution.error.unwrap();
    assert!(
        error.starts_with(
            "could not record version 2 in migrate_hub_history together with its last \
             statement: ERROR 1644 (45000): no history for version 2\n\
             STATEMENT: 2 of 2 in the up script, at line 2\n\
             the target is dirty: statement 2 of version 2 was to commit with its history row, \
             and the commit did not succeed, so whether it was applied is unknown"
        ),
        "{error}"
    );
    assert_eq!(target.my_scalar_i64("SELECT COUNT(*) FROM parts").await, 0);
    assert_eq!(target.my_versions().await, ["1"]);
    let dirty = dirty_row(&hub, target).await.expect("target is dirty");
    assert_eq!((dirty.version.as_str(), dirty.statement_index), ("2", 2));
    assert_eq!(
        dirty.statements_hash,
        StatementsHash::of(["CREATE TABLE parts (id int)"]).hex()
    );
    worker.stop().await;
}

#[tokio::test]
async fn a_refused_last_row_change_stops_the_script_at_it() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(
        &project,
        "1",
        "CREATE TABLE bolts (id int PRIMARY KEY);\nINSERT INTO bolts VALUES (1), (1);",
        "DROP TABLE bolts;",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;

    // The refusal comes back although the statement shared its round trip
    // with the transaction's start, and nothing is recorded.
    assert_eq!(hub.execute_and_wait(run).await, RunState::Failed);
    let error = hub.failure(run, target).await;
    assert!(error.starts_with("ERROR 1062 (23000): "), "{error}");
    assert!(
        error.contains(
            "STATEMENT: 2 of 2 in the up script, at line 2\n\
             the target is dirty: statements 1 to 1 of version 1 were applied"
        ),
        "{error}"
    );
    assert_eq!(target.my_scalar_i64("SELECT COUNT(*) FROM bolts").await, 0);
    assert!(target.my_versions().await.is_empty());
    let dirty = dirty_row(&hub, target).await.expect("target is dirty");
    assert_eq!((dirty.version.as_str(), dirty.statement_index), ("1", 2));
    worker.stop().await;
}

#[tokio::test]
async fn refused_first_statement_leaves_the_target_clean() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration(
        &project,
        "2",
        "CREATE TABEL x (id int);\nCREATE TABLE y (id int);",
        "",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Failed);
    let execution = hub.execution(run, target).await;
    assert_eq!(execution.statement, Some(1));
    let error = execution.error.unwrap();
    assert!(error.starts_with("ERROR 1064 (42000): "), "{error}");
    assert!(
        error.ends_with(
            "STATEMENT: 1 of 2 in the up script, at line 1\nnothing of version 2 was applied"
        ),
        "{error}"
    );
    assert!(dirty_row(&hub, target).await.is_none());
    assert_eq!(target.my_versions().await, ["1"]);
    assert!(!target.my_has_table("y").await);
    worker.stop().await;
}

#[tokio::test]
async fn script_that_cannot_be_split_applies_nothing() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    hub.migration(
        &project,
        "2",
        "CREATE TABLE y (id int);\nINSERT INTO y VALUES ('oops);",
        "",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    let worker = hub.start_worker(1_000).await;

    assert_eq!(hub.execute_and_wait(run).await, RunState::Failed);
    let execution = hub.execution(run, target).await;
    assert_eq!(
        execution.error.as_deref(),
        Some(
            "the up script of version 2 cannot be split into statements: line 2: the string \
             ('…') opened here is never closed; nothing was applied"
        )
    );
    assert!(!target.my_has_table("widgets").await);
    assert!(target.my_history().await.is_empty());
    worker.stop().await;
}

#[tokio::test]
async fn delimiter_and_stored_programs_run_and_roll_back() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    let up = "CREATE TABLE counters (n int);\n\
DELIMITER $$\n\
CREATE PROCEDURE bump(IN times INT)\n\
BEGIN\n\
  DECLARE i INT DEFAULT 0;\n\
  WHILE i < times DO\n\
    INSERT INTO counters VALUES (i); -- one row; per turn\n\
    SET i = i + 1;\n\
  END WHILE;\n\
END$$\n\
DELIMITER ;\n\
CALL bump(3);\n\
CREATE TRIGGER counters_bi BEFORE INSERT ON counters FOR EACH ROW\n\
BEGIN\n\
  IF NEW.n < 0 THEN SET NEW.n = 100; END IF;\n\
END;\n\
CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;\n\
INSERT INTO counters VALUES (-5), (twice(21));\n";
    let down = "DROP FUNCTION twice;\nDROP TRIGGER counters_bi;\nDROP PROCEDURE bump;\nDROP TABLE counters;";
    hub.migration(&project, "1", up, down).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;

    hub.execute(run).await;

    assert_eq!(
        hub.wait_for_run(run).await,
        RunState::Succeeded,
        "{:?}",
        hub.execution(run, target).await.error
    );
    assert_eq!(
        target.my_scalar_i64("SELECT COUNT(*) FROM counters").await,
        5
    );
    assert_eq!(
        target.my_scalar_i64("SELECT SUM(n) FROM counters").await,
        145
    );
    assert_eq!(target.my_history().await[0].statements, 6);

    let down_run = hub.approved_run(&project, Direction::Down, "0").await;
    assert_eq!(hub.execute_and_wait(down_run).await, RunState::Succeeded);
    assert!(!target.my_has_table("counters").await);
    assert!(target.my_history().await.is_empty());
    assert!(hub.applied(target).await.is_empty());
    let routines = target
        .my_scalar_i64(
            "SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = DATABASE()",
        )
        .await;
    assert_eq!(routines, 0);
    worker.stop().await;
}

#[tokio::test]
async fn lock_held_elsewhere_fails_the_target_after_the_bounded_wait() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(2).await;
    let locked = &project.targets[0];
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    // Another migration (another hub, another worker) holds the target.
    let mut holder = mariadb::admin().await;
    let got: Option<i64> = holder
        .exec_first(
            "SELECT GET_LOCK(?, 0)",
            (mysql_lock_name(&locked.database),),
        )
        .await
        .unwrap();
    assert_eq!(got, Some(1));
    let worker = hub.start_worker(500).await;

    let started = Instant::now();
    assert_eq!(hub.execute_and_wait(run).await, RunState::PartiallyFailed);
    assert!(started.elapsed() >= Duration::from_millis(500));
    let execution = hub.execution(run, locked).await;
    assert_eq!(execution.state, TargetState::Failed);
    assert_eq!(
        execution.error.as_deref(),
        Some("target is locked by another migration (waited 500 ms)")
    );
    assert!(!locked.my_has_table("widgets").await);
    // A target of another database on the same server is not blocked.
    assert_eq!(
        hub.execution(run, &project.targets[1]).await.state,
        TargetState::Succeeded
    );

    // Once the holder lets go, the target runs.
    holder.disconnect().await.unwrap();
    let again = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(again).await, RunState::Succeeded);
    assert_eq!(locked.my_versions().await, ["1"]);
    worker.stop().await;
}

#[tokio::test]
async fn progress_shows_the_statement_running() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(
        &project,
        "1",
        "CREATE TABLE slow (id int);\nDO SLEEP(2);\nINSERT INTO slow VALUES (1);",
        "DROP TABLE slow;",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;

    hub.execute(run).await;

    let seen = eventually(|| async {
        let e = hub.execution(run, target).await;
        (e.state == TargetState::Running
            && e.current_version.as_deref() == Some("1")
            && e.statement == Some(2))
        .then_some(())
    })
    .await;
    assert!(seen.is_some(), "{:#?}", hub.execution(run, target).await);
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    let done = hub.execution(run, target).await;
    assert_eq!(done.statement, None, "progress never outlives the step");
    worker.stop().await;
}

#[tokio::test]
async fn kratos_history_applies_up_and_rolls_back_every_down_it_has() {
    // Its down script fails upstream (see the workloads' README).
    const LAST_KEPT: &str = "20200831110752000003";
    let migrations = support::workload("kratos/mysql");
    assert_eq!(migrations.len(), 319);
    // Every version has a down file; 109 of them are empty, which rolls
    // back as a no-op (golang-migrate's meaning), so the down run goes all
    // the way to the version whose down script fails upstream.
    assert!(migrations.iter().all(|m| m.down_sql.is_some()));
    let empty_downs = migrations
        .iter()
        .filter(|m| m.down_sql.as_deref().is_some_and(|d| d.trim().is_empty()))
        .count();
    assert_eq!(empty_downs, 109);
    let hub = TestHub::new().await;
    let project = hub
        .mysql_project(&[TargetOptions {
            session_settings: "SET sql_mode = 'NO_ENGINE_SUBSTITUTION'",
            ..Default::default()
        }])
        .await;
    let target = &project.targets[0];
    hub.import(&project, &migrations).await;
    let newest = migrations.last().unwrap().version.to_string();
    let newest = &newest;
    let worker = hub.start_worker(1_000).await;

    let up = hub.approved_run(&project, Direction::Up, newest).await;
    let clock = Instant::now();
    hub.execute_to_success(up, target, Duration::from_secs(240))
        .await;
    let up_time = clock.elapsed();
    assert_eq!(target.my_history().await.len(), 319);
    assert_eq!(hub.applied(target).await.len(), 319);
    let statements: i64 = sqlx::query_scalar(
        "SELECT sum(statements) FROM migration_executions WHERE direction = 'up'",
    )
    .fetch_one(&hub.db)
    .await
    .unwrap();

    let down = hub.approved_run(&project, Direction::Down, LAST_KEPT).await;
    let clock = Instant::now();
    hub.execute_to_success(down, target, Duration::from_secs(240))
        .await;
    let down_time = clock.elapsed();
    let last_kept = common::domain::Version::parse(LAST_KEPT).unwrap();
    let kept = migrations.iter().filter(|m| m.version <= last_kept).count();
    assert_eq!(kept, 319 - 222);
    let history = target.my_versions().await;
    assert_eq!(history.len(), kept);
    assert_eq!(history.last().map(String::as_str), Some(LAST_KEPT));
    assert_eq!(hub.applied(target).await.len(), kept);
    eprintln!(
        "kratos on MariaDB through the hub: up {} migrations ({statements} statements) in {up_time:?}, \
         down 222 migrations in {down_time:?}",
        migrations.len()
    );
    worker.stop().await;
}

#[tokio::test]
async fn synthetic_fanout_migrations_apply_roll_back_and_apply_again() {
    let migrations = support::workload("synthetic-fanout/mysql");
    assert_eq!(migrations.len(), 20);
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    hub.import(&project, &migrations).await;
    let newest = &migrations.last().unwrap().version.to_string();
    let worker = hub.start_worker(1_000).await;

    for (direction, version, applied) in [
        (Direction::Up, newest.as_str(), 20),
        (Direction::Down, "0", 0),
        (Direction::Up, newest.as_str(), 20),
    ] {
        let run = hub.approved_run(&project, direction, version).await;
        hub.execute(run).await;
        assert_eq!(
            hub.wait_for_run(run).await,
            RunState::Succeeded,
            "{direction}: {:?}",
            hub.execution(run, target).await.error
        );
        assert_eq!(target.my_history().await.len(), applied);
        assert_eq!(hub.applied(target).await.len(), applied);
    }
    worker.stop().await;
}

#[tokio::test]
async fn no_op_versions_send_nothing_and_empty_downs_roll_back_as_no_ops() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    hub.migration(&project, "1", WIDGETS_UP, WIDGETS_DOWN).await;
    // Only PostgreSQL needed version 2. `--` without a space is not a
    // comment to MySQL: had the file been sent, the server would refuse it.
    hub.migration_with(&project, "2", "--PostgreSQL only\n", Some(""), true)
        .await;
    hub.migration_with(&project, "10", NOTE_UP, Some(""), true)
        .await;
    let worker = hub.start_worker(1_000).await;
    let target = &project.targets[0];

    let up = hub.approved_run(&project, Direction::Up, "10").await;
    hub.execute(up).await;
    assert_eq!(
        hub.wait_for_run(up).await,
        RunState::Succeeded,
        "{:?}",
        hub.execution(up, target).await.error
    );
    let history = target.my_history().await;
    let versions: Vec<&str> = history.iter().map(|h| h.version.as_str()).collect();
    assert_eq!(versions, ["1", "2", "10"]);
    assert_eq!(
        (history[1].statements, history[1].checksum.as_str()),
        (0, Checksum::of("--PostgreSQL only\n", Some("")).as_str())
    );

    let down = hub.approved_run(&project, Direction::Down, "1").await;
    hub.execute(down).await;
    assert_eq!(
        hub.wait_for_run(down).await,
        RunState::Succeeded,
        "{:?}",
        hub.execution(down, target).await.error
    );
    assert_eq!(target.my_versions().await, ["1"]);
    assert_eq!(
        target
            .my_scalar_i64(
                "SELECT COUNT(*) FROM information_schema.columns
                 WHERE table_schema = DATABASE() AND table_name = 'widgets' AND column_name = 'note'"
            )
            .await,
        1,
        "the empty down script ran nothing"
    );
    worker.stop().await;
}
