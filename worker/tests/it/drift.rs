//! Schema drift found by the workers' periodic scans: a hand-made change on
//! a target is flagged with its diff (audit, webhook), reported once, and
//! cleared when reverted, absorbed by the next execution's snapshot, or
//! accepted by an admin; `on_drift: block` refuses the target's runs until
//! then.

use std::time::Duration;

use crate::support::{Project, RunningWorker, TestHub, eventually_within};
use common::{
    domain::{Direction, Role, RunState, TargetState, schema},
    lifecycle::{self, Caller},
    store::{schema_drift, webhooks},
};
use uuid::Uuid;
use worker::Worker;

const WITHIN: Duration = Duration::from_secs(30);

/// A worker of the test's pool that scans every target each second.
async fn scanning_worker(hub: &TestHub) -> RunningWorker {
    hub.start(
        Worker::new(
            hub.db.clone(),
            hub.keys.clone(),
            hub.pool_name.clone(),
            4,
            5_000,
        )
        .drift_scan(Some(Duration::from_secs(1))),
    )
    .await
}

/// Waits until the target has a snapshot taken `taken`.
async fn wait_for_snapshot(hub: &TestHub, target: Uuid, taken: &str) {
    let found = eventually_within(WITHIN, || async {
        hub.snapshots_of(target)
            .await
            .iter()
            .any(|(t, _)| t == taken)
            .then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "no {taken} snapshot: {:?}",
        hub.snapshots_of(target).await
    );
}

async fn flagged(hub: &TestHub, target: Uuid) -> Option<schema_drift::Flagged> {
    let mut conn = hub.db.acquire().await.unwrap();
    schema_drift::flagged(&mut conn, target).await.unwrap()
}

/// Waits until the target is flagged drifted (`true`) or not (`false`).
async fn wait_for_drift(
    hub: &TestHub,
    target: Uuid,
    drifted: bool,
) -> Option<schema_drift::Flagged> {
    let reached = eventually_within(WITHIN, || async {
        let flag = flagged(hub, target).await;
        (flag.is_some() == drifted).then_some(flag)
    })
    .await;
    reached.unwrap_or_else(|| panic!("the target never became drifted={drifted}"))
}

/// The difference between the drift's baseline and its reading.
async fn drift_diff(hub: &TestHub, flag: &schema_drift::Flagged) -> schema::SchemaDiff {
    hub.schema_diff(&flag.baseline_hash, &flag.snapshot_hash)
        .await
}

async fn subscribe_to_drift(hub: &TestHub, project: &Project) {
    let mut conn = hub.db.acquire().await.unwrap();
    webhooks::insert(
        &mut conn,
        &hub.keys,
        project.id,
        "https://hooks.example.com/secret-path",
        "https://hooks.example.com",
        &["target.drifted".to_owned()],
    )
    .await
    .unwrap();
}

async fn drift_deliveries(hub: &TestHub) -> Vec<serde_json::Value> {
    sqlx::query_scalar(
        "SELECT payload FROM webhook_deliveries WHERE event = 'target.drifted' ORDER BY id",
    )
    .fetch_all(&hub.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn postgres_hand_alter_is_drift_with_its_diff_reported_once_and_cleared_when_reverted() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(2).await;
    subscribe_to_drift(&hub, &project).await;
    hub.migration(
        &project,
        "1",
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL);",
        "",
    )
    .await;
    let worker = scanning_worker(&hub).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    for target in &project.targets {
        wait_for_snapshot(&hub, target.id(), "after").await;
    }

    // Migrated by the hub and scanned since: no drift anywhere.
    let (hand, other) = (&project.targets[0], &project.targets[1]);
    let scanned_after = |id: Uuid| {
        let db = hub.db.clone();
        async move {
            eventually_within(WITHIN, || async {
                let scanned: Option<time::OffsetDateTime> =
                    sqlx::query_scalar("SELECT schema_scanned_at FROM targets WHERE id = $1")
                        .bind(id)
                        .fetch_one(&db)
                        .await
                        .unwrap();
                let after: time::OffsetDateTime = sqlx::query_scalar(
                    "SELECT max(taken_at) FROM schema_snapshots WHERE target_id = $1",
                )
                .bind(id)
                .fetch_one(&db)
                .await
                .unwrap();
                scanned
                    .filter(|s| *s > after + time::Duration::seconds(1))
                    .map(drop)
            })
            .await
            .expect("the target is scanned again")
        }
    };
    scanned_after(other.id()).await;
    assert!(flagged(&hub, other.id()).await.is_none());

    // Someone adds a column by hand.
    hand.execute("ALTER TABLE accounts ADD COLUMN added_by_hand text")
        .await;
    let flag = wait_for_drift(&hub, hand.id(), true).await.unwrap();
    let diff = drift_diff(&hub, &flag).await;
    assert_eq!(diff.changed, ["table public.accounts"], "{diff:?}");
    assert!(diff.added.is_empty() && diff.removed.is_empty(), "{diff:?}");
    assert!(
        diff.unified.contains("+  column added_by_hand text"),
        "{}",
        diff.unified
    );
    assert_eq!(
        hub.snapshots_of(hand.id()).await.last().unwrap().0,
        "scan",
        "the drifted reading is kept"
    );
    assert_eq!(hub.audit_count("target.drifted").await, 1);
    let deliveries = drift_deliveries(&hub).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert_eq!(deliveries[0]["target"]["id"], hand.id().to_string());
    assert_eq!(
        deliveries[0]["drift"]["changed"][0],
        "table public.accounts"
    );
    assert!(
        !deliveries[0].to_string().contains("secret-path"),
        "a webhook payload never carries the URL"
    );

    // Scanned again and again: the same drift is reported once.
    let confirmed = eventually_within(WITHIN, || async {
        let now = flagged(&hub, hand.id()).await.unwrap();
        (now.checked_at > flag.checked_at + time::Duration::seconds(1)).then_some(())
    })
    .await;
    assert!(confirmed.is_some(), "scans go on");
    assert_eq!(hub.audit_count("target.drifted").await, 1);
    assert_eq!(drift_deliveries(&hub).await.len(), 1);
    assert!(
        flagged(&hub, other.id()).await.is_none(),
        "the other target did not drift"
    );

    // Reverted by hand: the next scan clears the flag.
    hand.execute("ALTER TABLE accounts DROP COLUMN added_by_hand")
        .await;
    wait_for_drift(&hub, hand.id(), false).await;
    assert_eq!(hub.audit_count("target.drift_reverted").await, 1);
    worker.stop().await;
}

#[tokio::test]
async fn mysql_first_scan_is_the_baseline_and_an_execution_absorbs_drift_under_warn() {
    let hub = TestHub::new().await;
    let project = hub.mysql_project_with_targets(1).await;
    let target = &project.targets[0];
    hub.migration(
        &project,
        "1",
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email varchar(200) NOT NULL);",
        "",
    )
    .await;
    hub.migration(
        &project,
        "2",
        "CREATE INDEX accounts_email ON accounts (email);",
        "",
    )
    .await;
    let worker = scanning_worker(&hub).await;

    // Never read before: the first scan is its baseline, not drift.
    wait_for_snapshot(&hub, target.id(), "initial").await;
    assert!(flagged(&hub, target.id()).await.is_none());

    let run = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    wait_for_snapshot(&hub, target.id(), "after").await;

    target
        .my_execute("ALTER TABLE accounts ADD COLUMN nickname varchar(50) NULL")
        .await;
    let flag = wait_for_drift(&hub, target.id(), true).await.unwrap();
    let diff = drift_diff(&hub, &flag).await;
    assert_eq!(diff.changed, ["table `accounts`"], "{diff:?}");
    assert!(diff.unified.contains("nickname"), "{}", diff.unified);

    // `warn`: the next run goes on, and its snapshot is the new baseline.
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    wait_for_drift(&hub, target.id(), false).await;
    assert_eq!(hub.audit_count("target.drift_absorbed").await, 1);
    assert_eq!(hub.audit_count("target.drifted").await, 1);
    worker.stop().await;
}

#[tokio::test]
async fn block_refuses_a_drifted_target_until_an_admin_accepts_the_drift() {
    let hub = TestHub::new().await;
    let project = hub.project_with_targets(1).await;
    let target = &project.targets[0];
    sqlx::query("UPDATE environments SET on_drift = 'block' WHERE name = 'daily'")
        .execute(&hub.db)
        .await
        .unwrap();
    hub.migration(
        &project,
        "1",
        "CREATE TABLE orders (id bigint PRIMARY KEY);",
        "",
    )
    .await;
    hub.migration(
        &project,
        "2",
        "ALTER TABLE orders ADD COLUMN total numeric;",
        "",
    )
    .await;
    let worker = scanning_worker(&hub).await;
    let run = hub.approved_run(&project, Direction::Up, "1").await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    wait_for_snapshot(&hub, target.id(), "after").await;

    target
        .execute("CREATE INDEX orders_by_hand ON orders (id DESC)")
        .await;
    let flag = wait_for_drift(&hub, target.id(), true).await.unwrap();
    let diff = drift_diff(&hub, &flag).await;
    assert_eq!(diff.changed, ["table public.orders"], "{diff:?}");
    assert!(diff.unified.contains("orders_by_hand"), "{}", diff.unified);

    // Refused: nothing applied, the run says why.
    let refused = hub.approved_run(&project, Direction::Up, "2").await;
    assert_eq!(hub.execute_and_wait(refused).await, RunState::Failed);
    let execution = hub.execution(refused, target).await;
    assert_eq!(execution.state, TargetState::Failed);
    let error = hub.failure(refused, target).await;
    assert!(
        error.contains("drifted")
            && error.contains("on_drift: block")
            && error.contains("nothing was applied"),
        "{error}"
    );
    assert_eq!(target.versions().await, ["1"]);

    // An admin accepts the drift as the new baseline, with a reason.
    let admin = Caller {
        id: hub.user_id,
        email: "requester@example.com".into(),
        role: Role::Admin,
        ip: None,
        route: "POST /api/v1/targets/{id}/drift/accept".into(),
    };
    let mut tx = hub.db.begin().await.unwrap();
    let (accepted, baseline) = lifecycle::schema_drift::accept(
        &mut tx,
        &admin,
        target.id(),
        "index added for an incident",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(accepted.snapshot_id, flag.snapshot_id);
    assert!(flagged(&hub, target.id()).await.is_none());
    let (taken, hash) = hub.snapshots_of(target.id()).await.pop().unwrap();
    assert_eq!(
        (taken.as_str(), hash),
        ("accepted", flag.snapshot_hash.clone())
    );
    let mut conn = hub.db.acquire().await.unwrap();
    assert_eq!(
        schema_drift::baseline(&mut conn, target.id())
            .await
            .unwrap()
            .unwrap()
            .id,
        baseline
    );
    let reason: String = sqlx::query_scalar(
        "SELECT details->>'reason' FROM audit_log WHERE action = 'target.drift_accepted'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(reason, "index added for an incident");
    drop(conn);

    // Nothing left to accept; the next run goes through.
    let mut tx = hub.db.begin().await.unwrap();
    let again = lifecycle::schema_drift::accept(&mut tx, &admin, target.id(), "again").await;
    assert!(
        matches!(
            again,
            Err(lifecycle::LifecycleError::Conflict {
                code: "not_drifted",
                ..
            })
        ),
        "{again:?}"
    );
    drop(tx);
    let run = hub.approved_run(&project, Direction::Up, "2").await;
    assert_eq!(hub.execute_and_wait(run).await, RunState::Succeeded);
    assert_eq!(target.versions().await, ["1", "2"]);
    worker.stop().await;
}
