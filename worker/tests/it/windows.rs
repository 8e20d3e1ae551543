//! Maintenance windows on real targets: Execute outside the window
//! schedules the run for the next opening, a target is never started
//! outside a window, and a target whose window ends finishes the migration
//! it runs and leaves the rest waiting (`waiting_for_window`) until the
//! next one — on PostgreSQL and MariaDB.

use time::{Duration as Span, OffsetDateTime};

use crate::support::{TargetDb, TargetOptions, TestHub, eventually_within};
use common::{
    domain::{Direction, RunState, TargetState},
    queue::queue_name,
    store::runs::RunScope,
};

/// Sets the `daily` environment's window (`None`: no window).
async fn set_window(hub: &TestHub, window: Option<&str>) {
    sqlx::query("UPDATE environments SET maintenance_window = $1 WHERE name = 'daily'")
        .bind(window)
        .execute(&hub.db)
        .await
        .unwrap();
}

/// `at` rounded down to the minute.
fn minute(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_second(0).unwrap().replace_nanosecond(0).unwrap()
}

fn hh_mm(at: OffsetDateTime) -> String {
    format!("{:02}:{:02}", at.hour(), at.minute())
}

/// A daily window from `start` to `end` (UTC).
fn daily(start: OffsetDateTime, end: OffsetDateTime) -> String {
    format!("daily {}-{} UTC", hh_mm(start), hh_mm(end))
}

/// The due times (Unix seconds) of the test queue's waiting jobs.
async fn due_times(hub: &TestHub) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT extract(epoch FROM run_at)::bigint FROM apalis.jobs
         WHERE job_type = $1 AND status = 'Pending' ORDER BY run_at",
    )
    .bind(queue_name(&hub.pool_name))
    .fetch_all(&hub.db)
    .await
    .unwrap()
}

/// The time of the waiting jobs comes: they are due now.
async fn jobs_come_due(hub: &TestHub) {
    sqlx::query(
        "UPDATE apalis.jobs SET run_at = now() - interval '1 minute'
         WHERE job_type = $1 AND status = 'Pending'",
    )
    .bind(queue_name(&hub.pool_name))
    .execute(&hub.db)
    .await
    .unwrap();
}

/// The audit rows of targets that began to wait for their window:
/// whether each had stopped running.
async fn waits_audited(hub: &TestHub) -> Vec<bool> {
    sqlx::query_scalar(
        "SELECT (details->>'stopped_running')::boolean FROM audit_log
         WHERE action = 'target.waiting_for_window' ORDER BY seq",
    )
    .fetch_all(&hub.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn outside_the_window_the_run_is_scheduled_for_its_opening_and_no_target_starts() {
    let hub = TestHub::new().await;
    let now = OffsetDateTime::now_utc();
    let opens = minute(now + Span::hours(2));
    set_window(&hub, Some(&daily(opens, opens + Span::hours(1)))).await;
    let project = hub.project(&[TargetOptions::default()]).await;
    let target = &project.targets[0];
    hub.migration(&project, "1", "CREATE TABLE t1 (id int);", "")
        .await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    // Execute outside the window: due at the opening, shown on the run.
    let scheduled: Option<OffsetDateTime> =
        sqlx::query_scalar("SELECT scheduled_for FROM runs WHERE id = $1")
            .bind(run)
            .fetch_one(&hub.db)
            .await
            .unwrap();
    assert_eq!(scheduled, Some(opens));
    assert_eq!(due_times(&hub).await, vec![opens.unix_timestamp()]);
    assert_eq!(hub.execution(run, target).await.state, TargetState::Queued);

    // A job that comes early (a redelivery, another clock) starts nothing:
    // the target waits for the window, its job due at the opening.
    hub.push_again(run).await;
    hub.wait_for_execution(run, target, TargetState::WaitingForWindow)
        .await;
    let waiting = hub.execution(run, target).await.waiting.unwrap_or_default();
    assert!(
        waiting.contains(&format!(
            "waiting for the maintenance window ({}), which opens",
            daily(opens, opens + Span::hours(1))
        )),
        "{waiting}"
    );
    assert!(target.versions().await.is_empty(), "nothing ran");
    assert_eq!(waits_audited(&hub).await, vec![false]);
    assert!(due_times(&hub).await.contains(&opens.unix_timestamp()));

    // An admin opens a window now (as the environment's edit does, its
    // waiting targets are rescheduled): the target runs at once.
    set_window(
        &hub,
        Some(&daily(
            minute(now) - Span::hours(1),
            minute(now) + Span::hours(1),
        )),
    )
    .await;
    let mut tx = hub.db.begin().await.unwrap();
    let rescheduled =
        common::lifecycle::window::reschedule(&mut tx, RunScope::Environment("daily"))
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(rescheduled, 1);
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    assert_eq!(target.versions().await, vec!["1"]);
    worker.stop().await;
}

/// A window that closes at a minute's turn at least 3 s away, and how long
/// the first migration must sleep to outlast it.
fn closing_soon(now: OffsetDateTime) -> (String, u64) {
    let mut closes = minute(now) + Span::minutes(1);
    if closes - now < Span::seconds(3) {
        closes += Span::minutes(1);
    }
    let sleep = (closes - now).whole_seconds() as u64 + 1;
    (daily(closes - Span::minutes(30), closes), sleep)
}

/// Runs two migrations, the first of which outlasts the window: the target
/// stops after it and waits; reopened, the run finishes.
async fn stops_at_the_window_end(hub: &TestHub, target: &TargetDb, run: uuid::Uuid) {
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;
    // The first migration outlasts the window: up to a minute.
    let stopped = eventually_within(std::time::Duration::from_secs(90), || async {
        let e = hub.execution(run, target).await;
        (e.state == TargetState::WaitingForWindow).then_some(e)
    })
    .await;
    let Some(stopped) = stopped else {
        panic!(
            "never waited for the window: {:?}",
            hub.executions(run).await
        );
    };
    assert_eq!(stopped.current_version.as_deref(), Some("1"), "{stopped:?}");
    assert_eq!(hub.applied_versions(target).await, vec!["1"]);
    assert!(
        stopped
            .waiting
            .as_deref()
            .is_some_and(|w| w.contains("waiting for the maintenance window")),
        "{stopped:?}"
    );
    assert_eq!(waits_audited(hub).await, vec![true]);
    assert_eq!(hub.run_state(run).await, RunState::Running);
    // Its job is due at the next opening, a day less 30 min away.
    let due = due_times(hub).await;
    let in_a_day = (OffsetDateTime::now_utc() + Span::hours(23)).unix_timestamp();
    assert!(due.len() == 1 && due[0] > in_a_day, "{due:?}");

    set_window(hub, None).await;
    jobs_come_due(hub).await;
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    assert_eq!(hub.applied_versions(target).await, vec!["1", "2"]);
    let done = hub.execution(run, target).await;
    assert_eq!(done.waiting, None);
    assert!(
        done.started_at
            .is_some_and(|t| t < OffsetDateTime::now_utc() - Span::seconds(2)),
        "the execution keeps its first start: {done:?}"
    );
    worker.stop().await;
}

/// Two migrations on the project's target, the first sleeping with `sleep`
/// (the engine's statement, given the seconds) past a window that closes
/// soon: the target stops after it, and finishes once the window reopens.
async fn two_migrations_across_the_window_end(
    hub: &TestHub,
    project: &crate::support::Project,
    sleep: impl Fn(u64) -> String,
) {
    let (window, seconds) = closing_soon(OffsetDateTime::now_utc());
    set_window(hub, Some(&window)).await;
    let first = format!("{}\nCREATE TABLE first_part (id int);", sleep(seconds));
    hub.migration(project, "1", &first, "").await;
    hub.migration(project, "2", "CREATE TABLE second_part (id int);", "")
        .await;
    let run = hub.approved_run(project, Direction::Up, "2").await;
    stops_at_the_window_end(hub, &project.targets[0], run).await;
}

#[tokio::test]
async fn postgres_a_target_whose_window_ends_finishes_its_migration_and_waits_for_the_next() {
    let hub = TestHub::new().await;
    let project = hub.project(&[TargetOptions::default()]).await;
    two_migrations_across_the_window_end(&hub, &project, |s| format!("SELECT pg_sleep({s});"))
        .await;
    assert_eq!(project.targets[0].versions().await, vec!["1", "2"]);
}

#[tokio::test]
async fn mariadb_a_target_whose_window_ends_finishes_its_migration_and_waits_for_the_next() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project(&[TargetOptions::default()]).await;
    two_migrations_across_the_window_end(&hub, &project, |s| format!("DO SLEEP({s});")).await;
    assert_eq!(project.targets[0].my_versions().await, vec!["1", "2"]);
}

#[tokio::test]
async fn postgres_a_migration_still_waiting_for_its_lock_when_the_window_ends_waits_for_the_next() {
    let hub = TestHub::new().await;
    let (window, _) = closing_soon(OffsetDateTime::now_utc());
    set_window(&hub, Some(&window)).await;
    // A short budget retried many times: the retries outlast the window.
    sqlx::query(
        "UPDATE environments SET lock_timeout_ms = 400, lock_retries = 20, preflight_wait_ms = 0
         WHERE name = 'daily'",
    )
    .execute(&hub.db)
    .await
    .unwrap();
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
    sqlx::Executor::execute(&mut blocker, "BEGIN; SELECT * FROM ledger")
        .await
        .unwrap();
    let worker = hub.start_worker(1_000).await;
    hub.execute(run).await;

    let waits = eventually_within(std::time::Duration::from_secs(150), || async {
        let e = hub.execution(run, target).await;
        (e.state == TargetState::WaitingForWindow).then_some(e)
    })
    .await;
    let Some(waits) = waits else {
        panic!(
            "never waited for the window: {:?}",
            hub.executions(run).await
        );
    };
    assert!(waits.lock_retries >= 1, "{waits:?}");
    assert!(target.versions().await.is_empty(), "nothing was applied");
    assert_eq!(waits_audited(&hub).await, vec![true]);

    sqlx::Executor::execute(&mut blocker, "COMMIT")
        .await
        .unwrap();
    set_window(&hub, None).await;
    jobs_come_due(&hub).await;
    assert_eq!(hub.wait_for_run(run).await, RunState::Succeeded);
    assert_eq!(target.versions().await, vec!["1"]);
    worker.stop().await;
}
