//! A MariaDB target left dirty by a failed script refuses runs until an
//! admin resolves it; resolving brings the target's history and the hub's
//! applied state to the admin's answer, and is audited.

use std::time::Duration;

use crate::support::{Fleet, TestApp, code};
use common::testing::{TestMysqlDatabase, wait_for};
use reqwest::StatusCode;
use serde_json::json;

/// A project `shop` with a MariaDB target (`db`) in a `daily` DB set and
/// migration 1 = `script`, whose run was requested, approved and executed.
/// Returns (project slug, DB set id, target id, run id).
async fn executed_mysql_run(
    app: &TestApp,
    db: &TestMysqlDatabase,
    script: &str,
    down: &str,
) -> (String, String, String, String) {
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders-my", "daily").await;
    let target_id = app.mysql_target(&slug, &set, "my1", db).await;
    app.migration(&slug, "1", script, down).await;
    let run_id = app.request_run(&slug, &set, "1").await;
    app.approve(&run_id).await;
    app.execute(&run_id).await;
    (slug, set, target_id, run_id)
}

/// Waits until the run is in `want`, and returns its view.
async fn run_in_state(app: &TestApp, run_id: &str, want: &'static str) -> serde_json::Value {
    wait_for(Duration::from_secs(30), want, || async {
        let (_, body) = app.get(&format!("/api/v1/runs/{run_id}"), &app.user).await;
        (body["state"] == want).then_some(body)
    })
    .await
}

#[tokio::test]
async fn dirty_target_refuses_runs_until_an_admin_resolves_it() {
    let app = TestApp::spawn().await;
    let db = TestMysqlDatabase::create("mh_test_resolve").await;
    let worker = Fleet::start_with(&app, 2);
    // The second statement fails after the first committed: the target is dirty.
    let (slug, set, target_id, run_id) = executed_mysql_run(
        &app,
        &db,
        "CREATE TABLE a (id int);\nCREATE TABLE a (id int);",
        "DROP TABLE a;",
    )
    .await;
    let done = run_in_state(&app, &run_id, "failed").await;
    worker.stop().await;
    assert!(
        done["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{done}"
    );
    let state = app.target_state(&target_id).await;
    assert_eq!(state["dirty"]["version"], "1", "{state}");

    // Dirty: no new run.
    let (status, err) = app.request_run_as(&app.user, &slug, &set, "up", "1").await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "target_dirty"));

    // The target page offers admins (only) the resolve form.
    let page = format!("/targets/{target_id}");
    let form = ">Resolve</button>";
    assert!(app.page(&page, &app.admin).await.1.contains(form));
    assert!(!app.page(&page, &app.manager).await.1.contains(form));

    // Only admins resolve, with a reason, at the dirty version.
    let path = format!("/api/v1/targets/{target_id}/resolve");
    let (status, _) = app
        .post(
            &path,
            &app.manager,
            json!({"version": "1", "as": "applied", "reason": "checked"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, err) = app
        .post(
            &path,
            &app.admin,
            json!({"version": "1", "as": "done", "reason": "x"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("as"))
    );
    let (status, err) = app
        .post(
            &path,
            &app.admin,
            json!({"version": "2", "as": "applied", "reason": "x"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("version"))
    );
    let (status, err) = app
        .post(&path, &app.admin, json!({"version": "1", "as": "applied"}))
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reason"))
    );

    // The first statement created the table, which is what the migration
    // wanted: the admin declares it applied.
    let (status, body) = app
        .post(
            &path,
            &app.admin,
            json!({"version": "1", "as": "applied", "reason": "table a exists as intended"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let state = app.target_state(&target_id).await;
    assert!(state["dirty"].is_null(), "{state}");
    assert_eq!(state["applied"][0]["version"], "1");
    assert_eq!(
        state["drift"]["in_sync"], true,
        "hub and target agree: {state}"
    );
    assert_eq!(app.audit_rows("target.resolved").await.len(), 1);
    let (status, _) = app
        .post(
            &path,
            &app.admin,
            json!({"version": "1", "as": "applied", "reason": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "nothing left to resolve");

    // Up to date now.
    let (status, err) = app.request_run_as(&app.user, &slug, &set, "up", "1").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "nothing_to_do")
    );
}

#[tokio::test]
async fn admin_resumes_a_dirty_script_after_the_stopped_statement() {
    let app = TestApp::spawn().await;
    let db = TestMysqlDatabase::create("mh_test_resume").await;
    // Statement 2 fails: someone created `b` by hand, as the script wanted.
    db.run("CREATE TABLE b (id int)").await;
    let worker = Fleet::start_with(&app, 2);
    let (_, _, target_id, run_id) = executed_mysql_run(
        &app,
        &db,
        "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\nCREATE TABLE c (id int);",
        "DROP TABLE c; DROP TABLE b; DROP TABLE a;",
    )
    .await;
    run_in_state(&app, &run_id, "failed").await;
    let path = format!("/api/v1/targets/{target_id}/resolve");

    // Only the stopped statement or the next one.
    let (status, err) = app
        .post(
            &path,
            &app.admin,
            json!({"version": "1", "as": "resume", "from_statement": 4, "reason": "b exists"}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("from_statement")),
        "{err}"
    );
    let (status, _) = app
        .post(
            &path,
            &app.manager,
            json!({"version": "1", "as": "resume", "reason": "b exists"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Statement 2 was done by hand: continue from 3.
    let (status, body) = app
        .post(
            &path,
            &app.admin,
            json!({"version": "1", "as": "resume", "from_statement": 3, "reason": "b exists as intended"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["from_statement"], 3);
    let done = run_in_state(&app, &run_id, "succeeded").await;
    assert_eq!(done["targets"][0]["state"], "succeeded", "{done}");
    worker.stop().await;

    // Statement 3 ran: `c` exists (this insert panics otherwise).
    db.run("INSERT INTO c VALUES (1)").await;
    let state = app.target_state(&target_id).await;
    assert!(state["dirty"].is_null(), "{state}");
    assert_eq!(state["applied"][0]["version"], "1");
    assert_eq!(state["drift"]["in_sync"], true, "{state}");
    let audit = app.audit_rows("target.resume_requested").await;
    assert_eq!(audit.len(), 1);
    // Nothing left to resume.
    let (status, err) = app
        .post(
            &path,
            &app.admin,
            json!({"version": "1", "as": "resume", "reason": "again"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "target_not_dirty")
    );
}
