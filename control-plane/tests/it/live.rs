//! Replicas agree on runs at once, and runs are pushed live: a change made
//! on one control plane, or by a worker, is announced by the tool database;
//! every replica retires its reads of that run and pushes the change to the
//! run's event streams.

use std::time::Duration;

use common::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{self, Fleet, Replica, TestApp, code};

/// A project with a DB set of `n` fresh PostgreSQL databases and one
/// migration.
async fn project(app: &TestApp, n: usize) -> (String, String, Vec<TestDatabase>) {
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let mut dbs = Vec::new();
    for i in 0..n {
        let db = TestDatabase::create("mh_test_live").await;
        app.pg_target(&slug, &set, &format!("shard-{i}"), &db).await;
        dbs.push(db);
    }
    app.migration(&slug, "1", "CREATE TABLE t (id int);", "DROP TABLE t;")
        .await;
    (slug, set, dbs)
}

/// Replica B shares reads of a run for ten seconds, yet shows what
/// replica A (or a worker) committed on its next request once it has heard
/// the announcement — which comes at once, not after the ten seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_approved_on_one_replica_shows_on_another_at_once() {
    let app = TestApp::spawn().await;
    let (slug, set, _dbs) = project(&app, 1).await;
    let run = app.request_run(&slug, &set, "1").await;
    let replica = Replica::start(&app).await;
    let path = format!("/api/v1/runs/{run}");
    let page = format!("/runs/{run}");
    for _ in 0..2 {
        let (status, body) = replica.get(&path, &app.user).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["state"], "pending_approval");
        let (_, html) = replica.page(&page, &app.user).await;
        assert!(html.contains("state-pending_approval"), "{html}");
    }
    let shared = replica
        .metric("migrate_hub_shared_read_requests_total")
        .await
        .unwrap();
    assert!(shared > 0.0, "the replica shares run reads");
    let heard = replica
        .metric("migrate_hub_changes_heard_total")
        .await
        .unwrap();

    let started = std::time::Instant::now();
    app.approve(&run).await;
    let heard = replica.hears(heard).await;
    let (_, body) = replica.get(&path, &app.user).await;
    assert_eq!(body["state"], "approved", "{body}");
    assert_eq!(body["approvals"][0]["email"], support::MANAGER);
    let (_, html) = replica.page(&page, &app.user).await;
    assert!(html.contains("state-approved"), "the page too");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "seen before the shared read aged out"
    );

    // A target execution's state changed as a worker changes it, straight
    // in the tool database: requests are not made to wait for it, but the
    // replica starts the next read as soon as it hears it — shown within a
    // read, long before the ten seconds.
    let (_, before) = replica.get(&path, &app.user).await;
    assert_eq!(before["targets"][0]["state"], "pending");
    let changed = std::time::Instant::now();
    sqlx::query(
        "UPDATE target_executions SET state = 'queued', queued_at = now() WHERE run_id = $1::uuid",
    )
    .bind(&run)
    .execute(&app.pool)
    .await
    .unwrap();
    replica.hears(heard).await;
    common::testing::wait_for(
        Duration::from_secs(5),
        "the target's state to show",
        || async {
            let (_, after) = replica.get(&path, &app.user).await;
            (after["targets"][0]["state"] == "queued").then_some(())
        },
    )
    .await;
    assert!(changed.elapsed() < Duration::from_secs(5));
}

/// A server-sent event stream read as it arrives.
struct Events {
    response: reqwest::Response,
    buffer: String,
    /// How long the next event may take.
    within: Duration,
}

impl Events {
    async fn open(url: &str, token: &str) -> Events {
        let response = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events {
            response,
            buffer: String::new(),
            within: Duration::from_secs(60),
        }
    }

    /// The next event (name and JSON data), or `None` when the stream ends.
    async fn next(&mut self) -> Option<(String, Value)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(n) = line.strip_prefix("event:") {
                        name = Some(n.trim().to_owned());
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                // A comment (keep-alive) has neither.
                if let Some(name) = name {
                    return Some((name, serde_json::from_str(&data).unwrap()));
                }
                continue;
            }
            let chunk = tokio::time::timeout(self.within, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {:?}", self.within))
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// The stream, read from another replica than the one the run is driven
/// through, starts with the run as it is, then pushes every target's
/// changes as the worker commits them, and ends once the run is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_pushes_each_change_as_it_is_committed_and_ends_with_the_run() {
    let app = TestApp::spawn().await;
    let (slug, set, dbs) = project(&app, 3).await;
    let run = app.request_run(&slug, &set, "1").await;
    app.approve(&run).await;
    let replica = Replica::start(&app).await;
    let mut events = Events::open(
        &format!("{}/api/v1/runs/{run}/events", replica.url),
        &app.user,
    )
    .await;

    let (name, opening) = events.next().await.unwrap();
    assert_eq!(name, "run");
    assert_eq!(opening["state"], "approved", "{opening}");
    assert_eq!(opening["total"], 3);
    assert_eq!(opening["counts"], json!({"pending": 3}));
    let mut names = Vec::new();
    for _ in 0..3 {
        let (name, target) = events.next().await.unwrap();
        assert_eq!(name, "target");
        assert_eq!(target["state"], "pending", "{target}");
        names.push(target["target_name"].as_str().unwrap().to_owned());
    }
    names.sort();
    assert_eq!(names, ["shard-0", "shard-1", "shard-2"]);

    // Pushed, not polled: a watcher that heard nothing would look again
    // only after 30 s, so each change must arrive well before that.
    events.within = Duration::from_secs(10);
    let fleet = Fleet::start(&app);
    app.execute(&run).await;
    let mut states: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut runs = Vec::new();
    let end = loop {
        let (name, data) = events.next().await.expect("the stream ends with `end`");
        match name.as_str() {
            "target" => states
                .entry(data["target_name"].as_str().unwrap().to_owned())
                .or_default()
                .push(data["state"].as_str().unwrap().to_owned()),
            "run" => runs.push(data["state"].as_str().unwrap().to_owned()),
            "end" => break data,
            other => panic!("unexpected event {other}"),
        }
    };
    assert!(
        events.next().await.is_none(),
        "the stream closes after `end`"
    );
    assert_eq!(end["state"], "succeeded", "{end}");
    assert_eq!(end["counts"], json!({"succeeded": 3}));
    assert_eq!(
        runs.last().map(String::as_str),
        Some("succeeded"),
        "{runs:?}"
    );
    assert_eq!(
        states.len(),
        3,
        "every target's change was pushed: {states:?}"
    );
    for (target, seen) in &states {
        assert_eq!(
            seen.last().map(String::as_str),
            Some("succeeded"),
            "{target}: {seen:?}"
        );
        // Only changes are sent after the opening: a target never goes
        // back to `pending`, so no such event comes.
        assert!(!seen.contains(&"pending".to_owned()), "{target}: {seen:?}");
    }
    for db in &dbs {
        use crate::support::PgTarget;
        assert!(db.has_table("t").await);
    }

    // A finished run's stream says so at once and closes.
    let mut again = Events::open(&app.url(&format!("/api/v1/runs/{run}/events")), &app.user).await;
    let mut seen = Vec::new();
    while let Some((name, _)) = again.next().await {
        seen.push(name);
    }
    assert_eq!(seen.first().map(String::as_str), Some("run"));
    assert_eq!(seen.last().map(String::as_str), Some("end"));
    assert_eq!(seen.len(), 1 + 3 + 1, "{seen:?}");
    fleet.stop().await;
}

#[tokio::test]
async fn the_event_stream_needs_a_reader_and_a_run() {
    let app = TestApp::spawn().await;
    let missing = uuid::Uuid::new_v4();
    let (status, body) = app
        .get(&format!("/api/v1/runs/{missing}/events"), &app.user)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_found");
    let response = reqwest::get(app.url(&format!("/api/v1/runs/{missing}/events")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The page points its script at the stream, and keeps the polled part.
    let (slug, set, _dbs) = project(&app, 1).await;
    let run = app.request_run(&slug, &set, "1").await;
    let (status, html) = app.page(&format!("/runs/{run}"), &app.user).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(&format!(
            "data-live=\"/runs/{run}/live\" data-events=\"/runs/{run}/events\""
        )),
        "{html}"
    );
}

/// A run of 60 targets — 3 real databases and 57 that do not exist — as
/// the run page and the API show it at fleet scale: counts, progress, the
/// timeline, failures first, pages of 50, filters by state and name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_run_shows_counts_progress_a_timeline_and_pages_of_targets_failures_first() {
    let app = TestApp::spawn().await;
    let (slug, set, _dbs) = project(&app, 3).await;
    for i in 0..57 {
        app.add_target(
            &slug,
            &set,
            json!({"name": format!("gone-{i:02}"), "engine": "postgres", "host": "127.0.0.1",
                   "port": 5432, "database": format!("mh_missing_{}", uuid::Uuid::new_v4().simple()),
                   "username": "postgres", "password": "unused", "tls_mode": "disable"}),
        )
        .await;
    }
    let fleet = Fleet::start_with(&app, 8);
    let run = app
        .request_run_with(&slug, &set, "1", json!({"concurrency": 8}))
        .await;
    let done = app.approve_and_run(&run).await;
    fleet.stop().await;
    assert_eq!(done["state"], "partially_failed", "{done}");
    assert_eq!(done["counts"], json!({"failed": 57, "succeeded": 3}));
    assert_eq!(done["done"], 60);
    assert_eq!(
        done["eta_seconds"],
        Value::Null,
        "a finished run has no ETA"
    );

    // The API: filtered pages with the run's counts.
    let path = format!("/api/v1/runs/{run}/targets");
    let (status, page) = app
        .get(&format!("{path}?state=failed&limit=10"), &app.user)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["matching"], 57);
    assert_eq!(page["total"], 60);
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    assert_eq!(page["next_cursor"], "10");
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "failed")
    );
    let (_, last) = app
        .get(
            &format!("{path}?state=failed&limit=10&cursor=50"),
            &app.user,
        )
        .await;
    assert_eq!(last["items"].as_array().unwrap().len(), 7);
    assert_eq!(last["next_cursor"], Value::Null);
    let (_, all) = app.get(&format!("{path}?limit=500"), &app.user).await;
    let states: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.len(), 60);
    assert!(
        states[..57].iter().all(|s| *s == "failed")
            && states[57..].iter().all(|s| *s == "succeeded"),
        "failures first: {states:?}"
    );
    let (_, named) = app.get(&format!("{path}?q=SHARD"), &app.user).await;
    assert_eq!(named["matching"], 3, "{named}");
    for bad in ["state=bogus", "cursor=x", "limit=0"] {
        let (status, body) = app.get(&format!("{path}?{bad}"), &app.user).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(code(&body), "invalid_field");
    }

    // The page: progress, counts with links, the timeline, page 1 of 2
    // with the failures first, and the filters.
    let (status, html) = app.page(&format!("/runs/{run}"), &app.user).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains(r#"<progress value="60" max="60""#), "{html}");
    assert!(html.contains("<strong>60 of 60</strong> targets done"));
    assert!(
        html.contains(&format!(
            "href=\"&#x2f;runs&#x2f;{run}?state=failed#targets\""
        )) || html.contains(&format!("href=\"/runs/{run}?state=failed#targets\""))
    );
    assert!(html.contains("needs attention</span> 57"), "{html}");
    assert!(html.contains(r#"<svg class="timeline""#));
    assert_eq!(html.matches("<g><title>").count(), 60, "one bar per target");
    assert!(html.contains("page 1 of 2"));
    assert_eq!(html.matches("class=\"target-row").count(), 50);
    let first_row = html.split("class=\"target-row").nth(1).unwrap();
    assert!(first_row.contains("state-failed"), "failures first");
    assert!(html.contains("rel=\"next\""));
    let (_, second) = app
        .page(&format!("/runs/{run}/live?page=2"), &app.user)
        .await;
    assert_eq!(second.matches("class=\"target-row").count(), 10);
    assert!(second.contains("page 2 of 2") && second.contains("rel=\"prev\""));
    let (_, ok) = app
        .page(&format!("/runs/{run}?state=succeeded"), &app.user)
        .await;
    assert_eq!(ok.matches("class=\"target-row").count(), 3);
    assert!(ok.contains("3 of 60 targets match"));
    assert!(
        ok.contains(&format!("data-live=\"/runs/{run}/live?state=succeeded\"")),
        "the live part keeps the filter"
    );
    let (_, named) = app.page(&format!("/runs/{run}?q=gone-0"), &app.user).await;
    assert_eq!(named.matches("class=\"target-row").count(), 10);
    let (status, _) = app
        .page(&format!("/runs/{run}?state=nope"), &app.user)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
