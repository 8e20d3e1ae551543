//! One run through the real architecture: the API requests, approves and
//! executes; a worker (in-process, same code as the binary) claims the jobs
//! from the queue and migrates real PostgreSQL databases.

use std::time::Duration;

use crate::support::{self, Fleet, PgTarget, TestApp, code, versions};
use common::testing::{TestDatabase, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A project with a DB set of `n` fresh PostgreSQL databases.
async fn project_with_targets(app: &TestApp, n: usize) -> (String, String, Vec<TestDatabase>) {
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let mut dbs = Vec::new();
    for i in 0..n {
        let db = TestDatabase::create("mh_test_target").await;
        app.pg_target(&slug, &set, &format!("shard-{i}"), &db).await;
        dbs.push(db);
    }
    (slug, set, dbs)
}

#[tokio::test]
async fn approved_run_migrates_every_target_once() {
    let app = TestApp::spawn().await;
    let (slug, set, dbs) = project_with_targets(&app, 3).await;
    app.migration(
        &slug,
        "1",
        "CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL);",
        "DROP TABLE customers;",
    )
    .await;
    app.migration(&slug, "2", "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers (id));", "DROP TABLE orders;").await;
    app.migration(
        &slug,
        "10",
        "CREATE INDEX orders_customer_idx ON orders (customer_id);",
        "DROP INDEX orders_customer_idx;",
    )
    .await;

    let run = app.request_run(&slug, &set, "10").await;
    let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
    assert_eq!(
        versions(&body["migrations"]),
        ["1", "2", "10"],
        "pinned in version order"
    );
    assert_eq!(body["digest"].as_str().unwrap().len(), 64);

    // Not yet approved: execute is refused and nothing is queued.
    let (status, err) = app.execute_as(&run, &app.user).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&err), "invalid_state");
    // A user cannot approve.
    let (status, _) = app.approve_as(&run, &app.user).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, approved) = app
        .post(
            &format!("/api/v1/runs/{run}/approve"),
            &app.manager,
            json!({"comment": "looks good"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{approved}");
    assert_eq!(approved["state"], "approved");

    let fleet = Fleet::start(&app);
    let (status, queued) = app.execute_as(&run, &app.user).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    // A second execute is a no-op 409.
    let (status, err) = app.execute_as(&run, &app.user).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&err), "already_executed");

    let done = app.wait_until_final(&run).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    for target in done["targets"].as_array().unwrap() {
        assert_eq!(target["state"], "succeeded", "{target}");
        assert!(target["duration_ms"].as_i64().is_some());
        assert!(target["worker"].is_string());
    }
    for db in &dbs {
        let mut conn = db.connect().await;
        let history: Vec<String> = sqlx::query_scalar(
            "SELECT version FROM migrate_hub_history ORDER BY applied_at, version",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(history.len(), 3, "one history row per version");
        let index: Option<String> = sqlx::query_scalar(
            "SELECT indexname::text FROM pg_indexes WHERE indexname = 'orders_customer_idx'",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        assert!(index.is_some(), "the last migration ran in {}", db.name);
    }
    let applied = app.count("SELECT count(*) FROM applied_migrations").await;
    assert_eq!(applied, 9);

    // Every step is in the audit log, and the chain is intact.
    for action in [
        "run.requested",
        "run.approved",
        "run.executed",
        "target.succeeded",
        "run.finished",
    ] {
        assert!(!app.audit_rows(action).await.is_empty(), "{action} audited");
    }
    let (_, verify) = app.get("/api/v1/audit/verify", &app.admin).await;
    assert_eq!(verify["ok"], true, "{verify}");

    // Everything is applied now: a new run has nothing to do.
    let (status, err) = app.request_run_as(&app.user, &slug, &set, "up", "10").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&err), "nothing_to_do");
    fleet.stop().await;
}

#[tokio::test]
async fn sql_error_fails_only_its_target_with_the_database_message() {
    let app = TestApp::spawn().await;
    let (slug, set, dbs) = project_with_targets(&app, 3).await;
    app.migration(
        &slug,
        "1",
        "CREATE TABLE invoices (id bigserial PRIMARY KEY);",
        "DROP TABLE invoices;",
    )
    .await;
    // The second target already has the table, so the migration fails there.
    dbs[1].run("CREATE TABLE invoices (legacy int)").await;

    let done = app.run_up(&slug, &set, "1").await;
    assert_eq!(done["state"], "partially_failed", "{done}");
    let targets = done["targets"].as_array().unwrap();
    assert_eq!(targets[0]["state"], "succeeded");
    assert_eq!(targets[2]["state"], "succeeded");
    assert_eq!(targets[1]["state"], "failed");
    let error = targets[1]["error"].as_str().unwrap();
    assert!(
        error.contains("relation \"invoices\" already exists"),
        "{error}"
    );
    // The failed target is untouched: no history row, its own table kept.
    assert_eq!(
        dbs[1]
            .number("SELECT count(*) FROM migrate_hub_history")
            .await,
        0
    );
}

#[tokio::test]
async fn changes_after_the_request_invalidate_the_run() {
    let app = TestApp::spawn().await;
    let (slug, set, _dbs) = project_with_targets(&app, 1).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let run = app.request_run(&slug, &set, "1").await;

    // A target joins the DB set after the run was requested.
    let extra = TestDatabase::create("mh_test_target").await;
    let (status, _) = app
        .post(
            &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
            &app.manager,
            json!({"name": "late", "engine": "postgres", "host": "127.0.0.1", "port": 5432, "database": extra.name, "username": "postgres"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = app.approve_as(&run, &app.manager).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&err), "run_invalidated");
    let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
    assert_eq!(body["state"], "invalidated");
    // It stays that way.
    let (status, _) = app.approve_as(&run, &app.manager2).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/runs/{run}/execute"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(app.audit_rows("run.invalidated").await.len(), 1);
}

#[tokio::test]
async fn prd_needs_two_distinct_managers_and_never_the_requester() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    // The promotion gate is off here, so prd can be asked for directly.
    sqlx::query("UPDATE environments SET require_previous_success = false WHERE name = 'prd'")
        .execute(&app.pool)
        .await
        .unwrap();
    let set = app.db_set(&slug, "orders-prd", "prd").await;
    let db = TestDatabase::create("mh_test_target").await;
    app.post(
        &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
        &app.manager,
        json!({"name": "p1", "engine": "postgres", "host": "127.0.0.1", "port": 5432, "database": db.name, "username": "postgres"}),
    )
    .await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    // The manager requests; the manager may not approve their own run.
    let (status, run) = app
        .request_run_as(&app.manager, &slug, &set, "up", "1")
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let run = run["id"].as_str().unwrap();
    let (status, err) = app.approve_as(run, &app.manager).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&err), "separation_of_duties");
    let (_, after_one) = app.approve_as(run, &app.manager2).await;
    assert_eq!(
        after_one["state"], "pending_approval",
        "one approval is not enough on prd"
    );
    let (status, _) = app.approve_as(run, &app.manager2).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the same manager cannot count twice"
    );
    let (_, after_two) = app.approve_as(run, &app.admin).await;
    assert_eq!(after_two["state"], "approved");
}

#[tokio::test]
async fn edited_migration_invalidates_approved_run_and_applied_ones_are_immutable() {
    let app = TestApp::spawn().await;
    let (slug, set, _dbs) = project_with_targets(&app, 1).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    let run = app.request_run(&slug, &set, "1").await;
    app.approve(&run).await;

    let path = format!("/api/v1/projects/{slug}/migrations/1");
    let (status, edited) = app
        .patch(
            &path,
            &app.user,
            json!({"up_sql": "CREATE TABLE a (id bigint);"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["revision"], 2);
    assert_eq!(
        edited["checksum"],
        common::domain::Checksum::of("CREATE TABLE a (id bigint);", Some("DROP TABLE a;")).as_str()
    );
    let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
    assert_eq!(
        body["state"], "invalidated",
        "the approval covered the old checksum"
    );
    let (status, err) = app.execute_as(&run, &app.user).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "run_invalidated")
    );
    let (_, revisions) = app.get(&format!("{path}/revisions"), &app.user).await;
    let revs = revisions["items"].as_array().unwrap();
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0]["up_sql"], "CREATE TABLE a (id int);");

    // Apply it; from then on it cannot change.
    assert_eq!(app.run_up(&slug, &set, "1").await["state"], "succeeded");
    let (status, err) = app
        .patch(
            &path,
            &app.user,
            json!({"up_sql": "CREATE TABLE a (id text);"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "migration_immutable")
    );
    let (_, one) = app.get(&path, &app.user).await;
    assert_eq!(one["revision"], 2);
    assert_eq!(one["applied_anywhere"], true);
}

/// A webhook receiver: records each JSON body it gets.
async fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::{Json, Router, extract::State, routing::post};
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let app = Router::new()
        .route(
            "/hook/secret-token",
            post(
                |State(got): State<std::sync::Arc<std::sync::Mutex<Vec<Value>>>>,
                 Json(body): Json<Value>| async move {
                    got.lock().unwrap().push(body);
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook/secret-token",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test]
async fn webhook_receives_each_run_event_once_in_order() {
    let app = TestApp::spawn().await;
    let (slug, set, _dbs) = project_with_targets(&app, 1).await;
    let (url, got) = receiver().await;
    let (status, hook) = app
        .post(
            &format!("/api/v1/projects/{slug}/webhooks"),
            &app.manager,
            json!({"url": url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    assert!(
        !hook.to_string().contains("secret-token"),
        "the URL is never shown again: {hook}"
    );
    let (_, list) = app
        .get(&format!("/api/v1/projects/{slug}/webhooks"), &app.manager)
        .await;
    assert!(!list.to_string().contains("secret-token"));
    let (status, _) = app
        .post(
            &format!("/api/v1/projects/{slug}/webhooks"),
            &app.user,
            json!({"url": "http://x.test/"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let fleet = Fleet::start(&app);
    let run = app.request_run(&slug, &set, "1").await;
    assert_eq!(app.approve_and_run(&run).await["state"], "succeeded");
    fleet.stop().await;

    let events = wait_for(Duration::from_secs(30), "four webhook deliveries", || {
        let got = got.clone();
        async move {
            let events: Vec<String> = got
                .lock()
                .unwrap()
                .iter()
                .map(|b| b["event"].as_str().unwrap().to_owned())
                .collect();
            (events.len() >= 4).then_some(events)
        }
    })
    .await;
    assert_eq!(events, ["requested", "approved", "executed", "succeeded"]);
    let bodies = got.lock().unwrap().clone();
    assert!(
        bodies
            .iter()
            .all(|b| b["text"].as_str().unwrap().contains("[shop]")),
        "Slack-compatible text"
    );
    assert!(bodies.iter().all(|b| b["run"]["id"] == run.as_str()));
    // The receiver answers before the sender records the delivery.
    let delivered: i64 = wait_for(
        Duration::from_secs(30),
        "four deliveries recorded",
        || async {
            let n = app
                .count("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")
                .await;
            (n >= 4).then_some(n)
        },
    )
    .await;
    assert_eq!(delivered, 4, "recorded, and each sent once");
}

#[tokio::test]
async fn twenty_parallel_approvals_count_once_each_and_change_state_once() {
    let app = TestApp::spawn().await;
    let (slug, set, _dbs) = project_with_targets(&app, 1).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let run = app.request_run(&slug, &set, "1").await;
    let path = format!("/api/v1/runs/{run}/approve");
    let tokens = [&app.manager, &app.manager2, &app.admin];
    let results = futures_join(
        &app,
        &path,
        (0..20).map(|i| tokens[i % 3].clone()).collect(),
    )
    .await;
    let ok = results.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(
        ok, 1,
        "daily needs one approval; the rest find the run approved: {results:?}"
    );
    assert!(
        results
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{results:?}"
    );
    let approvals = app.count("SELECT count(*) FROM approvals").await;
    assert_eq!(approvals, 1);
    let changes = app
        .count("SELECT count(*) FROM run_transitions WHERE to_state = 'approved'")
        .await;
    assert_eq!(changes, 1);
}

async fn futures_join(app: &TestApp, path: &str, tokens: Vec<String>) -> Vec<StatusCode> {
    let mut tasks = Vec::new();
    for token in tokens {
        let client = app.client.clone();
        let url = app.url(path);
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn down_run_rolls_back_newest_first() {
    let app = TestApp::spawn().await;
    let (slug, set, dbs) = project_with_targets(&app, 2).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    app.migration(
        &slug,
        "2",
        "ALTER TABLE a ADD COLUMN b int;",
        "ALTER TABLE a DROP COLUMN b;",
    )
    .await;
    let fleet = Fleet::start(&app);
    let up = app.request_run(&slug, &set, "2").await;
    assert_eq!(app.approve_and_run(&up).await["state"], "succeeded");

    let (status, down) = app
        .request_run_as(&app.user, &slug, &set, "down", "0")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{down}");
    assert_eq!(versions(&down["migrations"]), ["2", "1"], "newest first");
    let id = down["id"].as_str().unwrap();
    assert_eq!(app.approve_and_run(id).await["state"], "succeeded");
    fleet.stop().await;
    for db in &dbs {
        assert!(!db.has_table("a").await);
        let history = db.number("SELECT count(*) FROM migrate_hub_history").await;
        assert_eq!(history, 0);
    }
    let applied = app.count("SELECT count(*) FROM applied_migrations").await;
    assert_eq!(applied, 0);
}

#[tokio::test]
async fn concurrency_one_runs_targets_one_after_another() {
    let app = TestApp::spawn().await;
    let (slug, set, _dbs) = project_with_targets(&app, 3).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let done = app
        .run_up_with(&slug, &set, "1", json!({"concurrency": 1}))
        .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let spans: Vec<(String, String)> = done["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["started_at"].as_str().unwrap().to_owned(),
                t["finished_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "a target started before the previous one finished: {spans:?}"
        );
    }
}

/// The state of each target of a run, in order.
fn target_states(run: &Value) -> Vec<&str> {
    run["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_failed_canary_stops_the_rest() {
    let app = TestApp::spawn().await;
    let (slug, set, dbs) = project_with_targets(&app, 3).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    // The first target (the canary) already has the table.
    dbs[0].run("CREATE TABLE a (x int)").await;
    let done = app
        .run_up_with(&slug, &set, "1", json!({"canary": 1}))
        .await;
    assert_eq!(
        target_states(&done),
        ["failed", "cancelled", "cancelled"],
        "{done}"
    );
    assert_eq!(done["state"], "failed");
    // The others were never touched.
    assert!(!dbs[1].has_table("a").await);
}

#[tokio::test]
async fn stop_on_failure_cancels_targets_not_started() {
    let app = TestApp::spawn().await;
    let (slug, set, dbs) = project_with_targets(&app, 3).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    dbs[1].run("CREATE TABLE a (x int)").await;
    let done = app
        .run_up_with(
            &slug,
            &set,
            "1",
            json!({"concurrency": 1, "stop_on_failure": true}),
        )
        .await;
    assert_eq!(
        target_states(&done),
        ["succeeded", "failed", "cancelled"],
        "{done}"
    );
    assert_eq!(done["state"], "partially_failed");
}

/// Watching a run shares reads of it (`shared_reads.rs`); what is shown is
/// never older than the last write answered here, nor than
/// `MH_READ_MAX_AGE_MS` for changes made elsewhere (a worker, another
/// replica).
#[tokio::test]
async fn watched_runs_show_writes_made_here_at_once_and_others_within_the_max_age() {
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_READ_MAX_AGE_MS", "2000".into());
    })
    .await;
    let (slug, set, _dbs) = project_with_targets(&app, 1).await;
    app.migration(&slug, "1", "CREATE TABLE t (id int);", "DROP TABLE t;")
        .await;
    let run = app.request_run(&slug, &set, "1").await;
    let path = format!("/api/v1/runs/{run}");
    let page = format!("/runs/{run}");
    let html = |body: Value| body.as_str().expect("an HTML page").to_owned();
    let (_, body) = app.get(&path, &app.user).await;
    assert_eq!(body["state"], "pending_approval");
    let (_, before) = app.get(&page, &app.manager).await;
    assert!(html(before).contains(&format!("action=\"/runs/{run}/approve\"")));

    // A write answered by this control plane: the very next reads see it,
    // on the page (read before the write) and on the API.
    let (status, _) = app
        .post(&format!("{path}/approve"), &app.manager, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, after) = app.get(&page, &app.manager).await;
    assert_eq!(status, StatusCode::OK);
    let after = html(after);
    assert!(
        after.contains("state-approved"),
        "the page shows the new state"
    );
    assert!(after.contains(support::MANAGER), "and the decision");
    assert!(!after.contains(&format!("action=\"/runs/{run}/approve\"")));
    let (_, mine) = app.get(&page, &app.user).await;
    assert!(html(mine).contains(&format!("action=\"/runs/{run}/execute\"")));
    let (_, body) = app.get(&path, &app.user).await;
    assert_eq!(body["state"], "approved");
    assert_eq!(body["approvals"][0]["email"], support::MANAGER);

    // Scheduled at a whole second (no fraction in the database's answer).
    let at = (time::OffsetDateTime::now_utc() + time::Duration::days(1))
        .replace_nanosecond(0)
        .unwrap();
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, body) = app
        .post(
            &format!("{path}/execute"),
            &app.user,
            json!({"not_before": at}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (_, body) = app.get(&path, &app.user).await;
    assert_eq!(body["state"], "queued");
    assert_eq!(body["not_before"], at.as_str());

    // A change made elsewhere, straight in the tool database as a worker
    // makes it, shows within the max age (plus the read that brings it).
    let (_, before) = app.get(&path, &app.user).await;
    assert_eq!(before["targets"][0]["statement"], Value::Null);
    let changed = std::time::Instant::now();
    sqlx::query("UPDATE target_executions SET statement_index = 7 WHERE run_id = $1::uuid")
        .bind(&run)
        .execute(&app.pool)
        .await
        .unwrap();
    wait_for(Duration::from_secs(10), "the change to show", || async {
        let (_, body) = app.get(&path, &app.user).await;
        (body["targets"][0]["statement"] == 7).then_some(())
    })
    .await;
    assert!(
        changed.elapsed() < Duration::from_millis(2000 + 1000),
        "shown within the max age (plus one read): {:?}",
        changed.elapsed()
    );
}

/// A finished job is only the delivery of an execution the hub records in
/// `target_executions`: the control plane removes it within seconds, so
/// apalis's acknowledgements (which read every job the worker has locked)
/// do not read more the larger the runs.
#[tokio::test]
async fn finished_queue_jobs_are_removed_within_seconds() {
    let app = TestApp::spawn().await;
    let (slug, set, _dbs) = project_with_targets(&app, 2).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let fleet = Fleet::start(&app);
    let run = app.request_run(&slug, &set, "1").await;
    assert_eq!(app.approve_and_run(&run).await["state"], "succeeded");
    fleet.stop().await;
    wait_for(
        Duration::from_secs(30),
        "the run's finished jobs to leave the queue",
        || async { (app.queue_jobs_of(&run).await == 0).then_some(()) },
    )
    .await;
}
