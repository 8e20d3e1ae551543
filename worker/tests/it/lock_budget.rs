//! Short lock budgets, retried: while a migration waits behind a session
//! that holds its table, other sessions' queries on the table wait at most
//! one lock budget (plus a margin); the migration succeeds on a later
//! attempt once the blocker ends, or fails after its last attempt. Real
//! blockers on real PostgreSQL and MariaDB targets.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::support::{TargetOptions, TestHub, eventually_within};
use common::domain::{Direction, RunState, TargetState};
use mysql_async::prelude::Queryable;
use sqlx::{Connection, Executor};
use tokio::time::Instant;

/// The lock budget of these tests.
const BUDGET_MS: u64 = 400;
/// What a reader may wait on top of one budget (scheduling on a busy
/// machine); without retries a reader would wait the migration's whole
/// wait behind the blocker.
const MARGIN_MS: u64 = 1_000;

async fn set_policy(hub: &TestHub, lock_timeout_ms: u64, retries: i32) {
    set_policy_with(hub, lock_timeout_ms, retries, 0, 60_000).await;
}

/// The `daily` policy: lock budget, retries, pre-flight wait and the age
/// from which an open transaction blocks.
async fn set_policy_with(
    hub: &TestHub,
    lock_timeout_ms: u64,
    retries: i32,
    wait_ms: i32,
    age_ms: i32,
) {
    sqlx::query(
        "UPDATE environments SET lock_timeout_ms = $1, lock_retries = $2, preflight_wait_ms = $3,
                blocker_age_ms = $4 WHERE name = 'daily'",
    )
    .bind(lock_timeout_ms as i32)
    .bind(retries)
    .bind(wait_ms)
    .bind(age_ms)
    .execute(&hub.db)
    .await
    .unwrap();
}

/// Waits until the target says it waits for something containing `needle`.
async fn says_it_waits_for(hub: &TestHub, run: uuid::Uuid, needle: &str) -> String {
    eventually_within(Duration::from_secs(30), || async {
        let waiting = hub.executions(run).await.remove(0).waiting?;
        waiting.contains(needle).then_some(waiting)
    })
    .await
    .unwrap_or_else(|| panic!("the target never said it waits for {needle:?}"))
}

/// A loop of reads on the table that records its longest wait, until
/// stopped.
struct Reader {
    stop: Arc<AtomicBool>,
    longest_ms: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// What a reader loop shares with the test.
#[derive(Clone)]
struct Probe {
    stop: Arc<AtomicBool>,
    longest_ms: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
}

impl Probe {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    fn read_took(&self, started: Instant) {
        self.longest_ms
            .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
}

impl Reader {
    /// Reads `sql` on PostgreSQL over `conn` until stopped.
    fn postgres(mut conn: sqlx::PgConnection, sql: &'static str) -> Reader {
        Reader::spawn(|probe| async move {
            while probe.running() {
                let started = Instant::now();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
                probe.read_took(started);
            }
        })
    }

    /// Reads `sql` on MariaDB over `conn` until stopped.
    fn mariadb(mut conn: mysql_async::Conn, sql: &'static str) -> Reader {
        Reader::spawn(|probe| async move {
            while probe.running() {
                let started = Instant::now();
                conn.query_drop(sql).await.unwrap();
                probe.read_took(started);
            }
        })
    }

    fn spawn<F, Fut>(body: F) -> Reader
    where
        F: FnOnce(Probe) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let probe = Probe {
            stop: Arc::new(AtomicBool::new(false)),
            longest_ms: Arc::new(AtomicU64::new(0)),
            reads: Arc::new(AtomicU64::new(0)),
        };
        let task = tokio::spawn(body(probe.clone()));
        Reader {
            stop: probe.stop,
            longest_ms: probe.longest_ms,
            reads: probe.reads,
            task,
        }
    }

    /// Stops the loop; returns its longest wait and how many reads it made.
    async fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.longest_ms.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed),
        )
    }
}

/// Waits until the execution has retried at least `retries` times; returns
/// what it says it waits for.
async fn retried(hub: &TestHub, run: uuid::Uuid, retries: i32) -> String {
    eventually_within(Duration::from_secs(30), || async {
        let e = hub.executions(run).await.remove(0);
        (e.lock_retries >= retries).then_some(e.waiting.unwrap_or_default())
    })
    .await
    .unwrap_or_else(|| panic!("the migration did not retry {retries} times"))
}

#[tokio::test]
async fn postgres_readers_wait_at_most_one_budget_and_the_migration_succeeds_after_the_blocker() {
    let hub = TestHub::new().await;
    // The pre-flight waits a little for blockers, then tries anyway.
    set_policy_with(&hub, BUDGET_MS, 20, 200, 60_000).await;
    let project = hub.project(&[TargetOptions::default()]).await;
    let target = &project.targets[0];
    target
        .execute("CREATE TABLE accounts (id int PRIMARY KEY); INSERT INTO accounts SELECT generate_series(1, 100)")
        .await;
    hub.migration(
        &project,
        "1",
        "ALTER TABLE accounts ADD COLUMN note text;",
        "",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;

    // A report left open in a transaction: it holds ACCESS SHARE on the table.
    let mut blocker = target.connect().await;
    blocker
        .execute("BEGIN; SELECT count(*) FROM accounts")
        .await
        .unwrap();
    let reader = Reader::postgres(target.connect().await, "SELECT count(*) FROM accounts");
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    let waiting = retried(&hub, run, 2).await;
    assert!(
        waiting.contains("1: the lock budget of 400 ms ran out")
            && waiting.contains("lock timeout"),
        "{waiting}"
    );
    // DBAs see who it is in their own tools.
    let short = &run.simple().to_string()[..8];
    let seen: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
    )
    .bind(format!("migrate-hub run {short} 1"))
    .fetch_one(&mut blocker)
    .await
    .unwrap();
    assert_eq!(seen, 1, "the hub's session names its run and version");

    blocker.execute("COMMIT").await.unwrap();
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    let (longest, reads) = reader.stop().await;
    assert!(reads > 10, "the reader kept reading ({reads} reads)");
    assert!(
        longest < BUDGET_MS + MARGIN_MS,
        "a reader waited {longest} ms behind the migration"
    );
    let done = hub.executions(run).await.remove(0);
    assert!(done.lock_retries >= 2, "{}", done.lock_retries);
    assert_eq!(done.waiting, None, "the wait is over");
    let audited: i64 = sqlx::query_scalar(
        "SELECT (details->>'lock_retries')::bigint FROM audit_log WHERE action = 'target.succeeded'",
    )
    .fetch_one(&hub.db)
    .await
    .unwrap();
    assert_eq!(audited, i64::from(done.lock_retries));
    let metrics = worker::metrics::handle().render();
    assert!(
        metrics.contains("migrate_hub_lock_retries_total{engine=\"postgres\"}"),
        "{metrics}"
    );
    let columns: i64 = target
        .scalar_i64("SELECT count(*) FROM information_schema.columns WHERE table_name = 'accounts' AND column_name = 'note'")
        .await;
    assert_eq!(columns, 1);
    blocker.close().await.unwrap();
    worker.stop().await;
}

#[tokio::test]
async fn postgres_a_blocker_that_outlives_every_retry_fails_the_target_with_nothing_applied() {
    let hub = TestHub::new().await;
    set_policy(&hub, 200, 1).await;
    let project = hub.project(&[TargetOptions::default()]).await;
    let target = &project.targets[0];
    target.execute("CREATE TABLE ledger (id int)").await;
    hub.migration(
        &project,
        "1",
        "ALTER TABLE ledger ADD COLUMN note text;",
        "",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let mut blocker = target.connect().await;
    blocker
        .execute("BEGIN; SELECT * FROM ledger")
        .await
        .unwrap();
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    assert_eq!(hub.wait_for_run(run).await, RunState::Failed);
    let failed = hub.executions(run).await.remove(0);
    assert_eq!(failed.state, TargetState::Failed);
    assert_eq!(failed.lock_retries, 1);
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("lock timeout") && error.contains("ran out on each of 2 attempt(s)"),
        "{error}"
    );
    // The pre-flight only looks here; the failure names who blocked.
    assert!(
        error.contains("blocked by pid")
            && error.contains("idle in transaction")
            && error.contains("SELECT * FROM ledger`"),
        "{error}"
    );
    blocker.execute("ROLLBACK").await.unwrap();
    assert!(target.versions().await.is_empty(), "nothing was applied");
    blocker.close().await.unwrap();
    worker.stop().await;
}

#[tokio::test]
async fn mariadb_a_metadata_lock_wait_is_retried_and_readers_are_not_stalled() {
    let hub = TestHub::new().await;
    // MariaDB counts lock_wait_timeout in whole seconds.
    set_policy(&hub, 1_000, 20).await;
    let project = hub.mysql_project(&[TargetOptions::default()]).await;
    let target = &project.targets[0];
    target
        .my_execute("CREATE TABLE accounts (id int PRIMARY KEY) ENGINE=InnoDB")
        .await;
    target
        .my_execute("INSERT INTO accounts VALUES (1), (2)")
        .await;
    hub.migration(
        &project,
        "1",
        "ALTER TABLE accounts ADD COLUMN note text;",
        "",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;

    // An open transaction that read the table holds its metadata lock.
    let mut blocker = target.my_connect().await;
    blocker.query_drop("START TRANSACTION").await.unwrap();
    blocker
        .query_drop("SELECT COUNT(*) FROM accounts")
        .await
        .unwrap();
    let reader = Reader::mariadb(target.my_connect().await, "SELECT COUNT(*) FROM accounts");
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    let waiting = retried(&hub, run, 2).await;
    assert!(waiting.contains("Lock wait timeout"), "{waiting}");
    blocker.query_drop("COMMIT").await.unwrap();
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    let (longest, reads) = reader.stop().await;
    assert!(reads > 10, "the reader kept reading ({reads} reads)");
    assert!(
        longest < 1_000 + MARGIN_MS,
        "a reader waited {longest} ms behind the migration"
    );
    assert!(hub.executions(run).await[0].lock_retries >= 2);
    blocker.disconnect().await.unwrap();
    worker.stop().await;
}

#[tokio::test]
async fn postgres_the_pre_flight_waits_for_the_blocker_it_names_then_goes_on() {
    let hub = TestHub::new().await;
    set_policy_with(&hub, 300, 5, 30_000, 60_000).await;
    let (run, mut blocker, pid) = pg_blocked(&hub).await;
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    // Once its transaction is older than the lock budget, the blocker is
    // named, and the target waits for it instead of trying again.
    let waiting = says_it_waits_for(&hub, run, &format!("waiting for pid {pid} (user ")).await;
    assert!(
        waiting.contains("idle in transaction for")
            && waiting.contains("SELECT count(*) FROM accounts`"),
        "{waiting}"
    );
    let retries_while_waiting = hub.executions(run).await[0].lock_retries;
    blocker.execute("COMMIT").await.unwrap();
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    let done = hub.executions(run).await.remove(0);
    assert_eq!(done.waiting, None);
    assert!(
        done.lock_retries <= retries_while_waiting + 1,
        "the pre-flight waited instead of retrying: {retries_while_waiting} then {}",
        done.lock_retries
    );
    blocker.close().await.unwrap();
    worker.stop().await;
}

#[tokio::test]
async fn mariadb_the_pre_flight_waits_for_an_old_open_transaction() {
    let hub = TestHub::new().await;
    // Any transaction open for 100 ms on the database blocks.
    set_policy_with(&hub, 1_000, 5, 30_000, 100).await;
    let (run, mut blocker, id) = mariadb_blocked(&hub).await;
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    let waiting = says_it_waits_for(&hub, run, &format!("waiting for pid {id} (")).await;
    assert!(waiting.contains("idle in transaction for"), "{waiting}");
    blocker.query_drop("COMMIT").await.unwrap();
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    assert_eq!(hub.executions(run).await[0].waiting, None);
    blocker.disconnect().await.unwrap();
    worker.stop().await;
}

/// The `daily` environment terminates blockers idle in transaction for
/// `after_ms` once the pre-flight's wait runs out.
async fn terminate_after(hub: &TestHub, after_ms: i32) {
    sqlx::query(
        "UPDATE environments SET terminate_idle_blockers_after_ms = $1 WHERE name = 'daily'",
    )
    .bind(after_ms)
    .execute(&hub.db)
    .await
    .unwrap();
}

/// The `target.blocker_terminated` audit rows' blocker descriptions.
async fn terminated(hub: &TestHub) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT details->>'blocker' FROM audit_log WHERE action = 'target.blocker_terminated' ORDER BY seq",
    )
    .fetch_all(&hub.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn postgres_an_idle_in_transaction_blocker_is_terminated_where_the_environment_opted_in() {
    let hub = TestHub::new().await;
    set_policy_with(&hub, 300, 5, 500, 60_000).await;
    terminate_after(&hub, 200).await;
    let (run, mut blocker, pid) = pg_blocked(&hub).await;
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    // Nobody ends the blocker but the hub.
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    let audited = terminated(&hub).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(
        audited[0].starts_with(&format!("pid {pid} (user "))
            && audited[0].contains("idle in transaction for"),
        "{}",
        audited[0]
    );
    assert!(
        sqlx::query("SELECT 1").execute(&mut blocker).await.is_err(),
        "the blocker's session is gone"
    );
    worker.stop().await;
}

#[tokio::test]
async fn mariadb_an_idle_in_transaction_blocker_is_killed_where_the_environment_opted_in() {
    let hub = TestHub::new().await;
    set_policy_with(&hub, 1_000, 5, 500, 100).await;
    terminate_after(&hub, 200).await;
    let (run, mut blocker, id) = mariadb_blocked(&hub).await;
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    let audited = terminated(&hub).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert!(
        audited[0].starts_with(&format!("pid {id} (user "))
            && audited[0].contains("idle in transaction for"),
        "{}",
        audited[0]
    );
    assert!(
        blocker.query_drop("SELECT 1").await.is_err(),
        "the blocker's connection is gone"
    );
    worker.stop().await;
}

/// A PostgreSQL project whose one target has a table `accounts`, a
/// migration altering it, an approved run of it, and a session idle in a
/// transaction that read the table: (run, the blocker's session, its pid).
async fn pg_blocked(hub: &TestHub) -> (uuid::Uuid, sqlx::PgConnection, i32) {
    let project = hub.project(&[TargetOptions::default()]).await;
    let target = &project.targets[0];
    target.execute("CREATE TABLE accounts (id int)").await;
    hub.migration(
        &project,
        "1",
        "ALTER TABLE accounts ADD COLUMN note text;",
        "",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let mut blocker = target.connect().await;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut blocker)
        .await
        .unwrap();
    blocker
        .execute("BEGIN; SELECT count(*) FROM accounts")
        .await
        .unwrap();
    (run, blocker, pid)
}

/// [`pg_blocked`] on MariaDB: (run, the blocker's connection, its id).
async fn mariadb_blocked(hub: &TestHub) -> (uuid::Uuid, mysql_async::Conn, i64) {
    let project = hub.mysql_project(&[TargetOptions::default()]).await;
    let target = &project.targets[0];
    target
        .my_execute("CREATE TABLE accounts (id int PRIMARY KEY) ENGINE=InnoDB")
        .await;
    hub.migration(
        &project,
        "1",
        "ALTER TABLE accounts ADD COLUMN note text;",
        "",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let mut blocker = target.my_connect().await;
    let id: Option<i64> = blocker.query_first("SELECT CONNECTION_ID()").await.unwrap();
    blocker.query_drop("START TRANSACTION").await.unwrap();
    blocker
        .query_drop("SELECT COUNT(*) FROM accounts")
        .await
        .unwrap();
    (run, blocker, id.expect("a connection id"))
}

#[tokio::test]
async fn postgres_the_session_is_named_after_the_migration_it_runs() {
    let hub = TestHub::new().await;
    set_policy_with(&hub, 300, 20, 200, 60_000).await;
    let project = hub.project(&[TargetOptions::default()]).await;
    let target = &project.targets[0];
    target.execute("CREATE TABLE accounts (id int)").await;
    hub.migration(&project, "1", "CREATE TABLE other (id int);", "")
        .await;
    hub.migration(
        &project,
        "2",
        "ALTER TABLE accounts ADD COLUMN note text;",
        "",
    )
    .await;
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    let mut blocker = target.connect().await;
    blocker
        .execute("BEGIN; SELECT count(*) FROM accounts")
        .await
        .unwrap();
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    // Version 1 went through; version 2 waits, under its own name.
    retried(&hub, run, 1).await;
    let short = &run.simple().to_string()[..8];
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT application_name FROM pg_stat_activity
         WHERE datname = current_database() AND application_name LIKE 'migrate-hub run %'",
    )
    .fetch_all(&mut blocker)
    .await
    .unwrap();
    assert_eq!(names, [format!("migrate-hub run {short} 2")]);
    blocker.execute("COMMIT").await.unwrap();
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    blocker.close().await.unwrap();
    worker.stop().await;
}
