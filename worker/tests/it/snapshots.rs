//! Schema snapshots taken by the workers: before a target's first
//! migration (when it has none) and after every execution, stored once per
//! distinct schema, and what a run changed on a target as their diff.

use crate::support::{TestHub, eventually_within};
use common::{
    domain::{Direction, RunState, schema},
    store::snapshots,
};
use uuid::Uuid;

/// Waits until the target has `n` snapshots (the `after` ones are taken
/// when the worker is idle).
async fn wait_for_snapshots(hub: &TestHub, target: Uuid, n: usize) {
    let reached = eventually_within(std::time::Duration::from_secs(30), || async {
        (hub.snapshots_of(target).await.len() >= n).then_some(())
    })
    .await;
    assert!(reached.is_some(), "{:?}", hub.snapshots_of(target).await);
}

/// When each of the target's snapshots was taken (`before`, `after`),
/// oldest first.
async fn taken_of(hub: &TestHub, target: Uuid) -> Vec<String> {
    hub.snapshots_of(target)
        .await
        .into_iter()
        .map(|(taken, _)| taken)
        .collect()
}

async fn texts(hub: &TestHub) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM schema_texts")
        .fetch_one(&hub.db)
        .await
        .unwrap()
}

/// What the run changed on the target, as the API shows it.
async fn change(hub: &TestHub, run: Uuid, target: Uuid) -> schema::SchemaDiff {
    let mut conn = hub.db.acquire().await.unwrap();
    let (execution, _) = snapshots::execution_of(&mut conn, run, target)
        .await
        .unwrap()
        .unwrap();
    let (before, after) = snapshots::around_execution(&mut conn, target, execution)
        .await
        .unwrap();
    let (before, after) = (before.unwrap(), after.unwrap());
    drop(conn);
    hub.schema_diff(&before.hash, &after.hash).await
}

#[tokio::test]
async fn postgres_identical_targets_share_one_stored_schema_and_each_run_shows_its_change() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(3).await;
    hub.migration(
        &project,
        "1",
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL);",
        "",
    )
    .await;
    hub.migration(
        &project,
        "2",
        "ALTER TABLE accounts ADD COLUMN note text;",
        "",
    )
    .await;
    let worker = hub.start_worker(1_000).await;
    let first = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(first).await, RunState::Succeeded);

    // Before the first migration (no snapshot yet) and after: two schemas,
    // each stored once for the three targets.
    for target in &project.targets {
        wait_for_snapshots(&hub, target.id(), 2).await;
        let taken = taken_of(&hub, target.id()).await;
        assert_eq!(taken, ["before", "after"], "{}", target.database);
    }
    assert_eq!(texts(&hub).await, 2);
    let hashes: std::collections::HashSet<String> = {
        let mut all = Vec::new();
        for target in &project.targets {
            all.push(hub.snapshots_of(target.id()).await[1].1.clone());
        }
        all.into_iter().collect()
    };
    assert_eq!(hashes.len(), 1, "identically migrated targets hash equal");
    let diff = change(&hub, first, project.targets[0].id()).await;
    assert_eq!(diff.added, ["table public.accounts"], "{diff:?}");
    assert!(
        diff.unified.contains("+  column email text not null"),
        "{}",
        diff.unified
    );

    // The next run takes no `before`: the last `after` is the schema before it.
    let second = hub.approved_run(&project, Direction::Up, "2").await;
    assert_eq!(hub.execute_and_wait(second).await, RunState::Succeeded);
    let target = &project.targets[1];
    wait_for_snapshots(&hub, target.id(), 3).await;
    let taken = taken_of(&hub, target.id()).await;
    assert_eq!(taken, ["before", "after", "after"]);
    let diff = change(&hub, second, target.id()).await;
    assert_eq!(diff.changed, ["table public.accounts"], "{diff:?}");
    assert!(diff.added.is_empty() && diff.removed.is_empty());
    assert!(
        diff.unified.contains("+  column note text"),
        "{}",
        diff.unified
    );
    for target in &project.targets {
        wait_for_snapshots(&hub, target.id(), 3).await;
    }
    assert_eq!(texts(&hub).await, 3);
    // The hub's own history table is never part of it.
    let text: String =
        sqlx::query_scalar("SELECT schema FROM schema_texts ORDER BY created_at DESC LIMIT 1")
            .fetch_one(&hub.db)
            .await
            .unwrap();
    assert!(!text.contains("migrate_hub_history"), "{text}");
    worker.stop().await;
}

#[tokio::test]
async fn mariadb_a_failed_execution_leaves_a_snapshot_too() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(
        &project,
        "1",
        "CREATE TABLE accounts (id bigint PRIMARY KEY);\nCREATE TABLE broken (id nosuchtype);",
        "",
    )
    .await;
    let worker = hub.start_worker(1_000).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::Failed);
    wait_for_snapshots(&hub, target.id(), 2).await;
    let taken = taken_of(&hub, target.id()).await;
    assert_eq!(taken, ["before", "after"]);
    // MySQL committed the first statement: the snapshot says so.
    let diff = change(&hub, run, target.id()).await;
    assert_eq!(diff.added, ["table `accounts`"], "{diff:?}");
    worker.stop().await;
}

#[tokio::test]
async fn retention_keeps_each_targets_newest_snapshot_and_drops_texts_nobody_uses() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    let target = project.targets[0].id();
    hub.migration(&project, "1", "CREATE TABLE a (id int);", "")
        .await;
    hub.migration(&project, "2", "CREATE TABLE b (id int);", "")
        .await;
    let worker = hub.start_worker(1_000).await;
    for version in ["1", "2"] {
        let run = hub.approved_run(&project, Direction::Up, version).await;
        assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    }
    wait_for_snapshots(&hub, target, 3).await;
    worker.stop().await;
    let newest = hub.snapshots_of(target).await.pop().unwrap().1;
    sqlx::query("UPDATE schema_snapshots SET taken_at = taken_at - interval '100 days'")
        .execute(&hub.db)
        .await
        .unwrap();
    sqlx::query("UPDATE schema_texts SET last_used_at = last_used_at - interval '100 days'")
        .execute(&hub.db)
        .await
        .unwrap();
    let mut conn = hub.db.acquire().await.unwrap();
    let pruned = snapshots::prune(&mut conn, 90).await.unwrap();
    assert_eq!(
        pruned,
        snapshots::Pruned {
            snapshots: 2,
            texts: 2
        }
    );
    let left = hub.snapshots_of(target).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1, newest, "the newest is kept");
    assert_eq!(texts(&hub).await, 1);
    // Nothing younger than the horizon goes.
    assert_eq!(
        snapshots::prune(&mut conn, 365).await.unwrap(),
        snapshots::Pruned::default()
    );
}

/// A fleet of identical targets shares one text row: recording a known text
/// touches it only when its mark is over an hour old, so concurrent
/// snapshots do not queue on that row, and retention still never removes a
/// text in use.
#[tokio::test]
async fn a_known_text_is_touched_only_when_its_mark_is_old() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(2).await;
    let rendered = schema::render(vec![schema::Object::new("table", "public.a", "id int")]);
    let record = |target: Uuid| {
        let db = hub.db.clone();
        let rendered = rendered.clone();
        async move {
            let mut conn = db.acquire().await.unwrap();
            snapshots::record(
                &mut conn,
                &snapshots::NewSnapshot {
                    target_id: target,
                    execution_id: None,
                    engine: common::domain::Engine::Postgres,
                    schema: &rendered,
                    sizes: &[],
                    taken: snapshots::Taken::Scan,
                },
            )
            .await
            .unwrap()
        }
    };
    let mark = || async {
        sqlx::query_scalar::<_, time::OffsetDateTime>(
            "SELECT last_used_at FROM schema_texts WHERE hash = $1",
        )
        .bind(&rendered.hash)
        .fetch_one(&hub.db)
        .await
        .unwrap()
    };
    assert!(record(project.targets[0].id()).await.stored);
    let fresh = mark().await;
    assert!(!record(project.targets[1].id()).await.stored, "stored once");
    assert_eq!(mark().await, fresh, "a fresh mark is left alone");

    sqlx::query("UPDATE schema_texts SET last_used_at = now() - interval '2 hours'")
        .execute(&hub.db)
        .await
        .unwrap();
    let old = mark().await;
    assert!(!record(project.targets[0].id()).await.stored);
    assert!(mark().await > old, "an old mark is renewed");
    assert_eq!(texts(&hub).await, 1);
}

/// An execution whose `after` snapshot is already recorded (by its worker,
/// or by a drift scan that took it over while a long run kept the worker
/// busy) does not want another: a paced backlog never records it twice.
#[tokio::test]
async fn an_after_snapshot_already_recorded_supersedes_the_one_waiting() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    let target = project.targets[0].id();
    hub.migration(&project, "1", "CREATE TABLE a (id int);", "")
        .await;
    let worker = hub.start_worker(1_000).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    wait_for_snapshots(&hub, target, 2).await;
    worker.stop().await;
    let mut conn = hub.db.acquire().await.unwrap();
    let (execution, _) = snapshots::execution_of(&mut conn, run, target)
        .await
        .unwrap()
        .unwrap();
    assert!(
        snapshots::superseded(&mut conn, target, execution)
            .await
            .unwrap(),
        "its after snapshot is recorded"
    );
    sqlx::query("DELETE FROM schema_snapshots WHERE execution_id = $1 AND taken = 'after'")
        .bind(execution)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(
        !snapshots::superseded(&mut conn, target, execution)
            .await
            .unwrap(),
        "without it, and with no later execution, the snapshot is still wanted"
    );
}
