//! The governance rules through the API: separation of duties per
//! environment, the promotion gate, deny, cancel, and down runs.

use crate::support::{self, TestApp, TokenBrowser, code, versions};
use common::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A project with one PostgreSQL target per named environment: (slug, DB
/// set ids, target ids, databases).
async fn project_in(
    app: &TestApp,
    envs: &[&str],
) -> (String, Vec<String>, Vec<String>, Vec<TestDatabase>) {
    let slug = app.project("shop").await;
    let (mut sets, mut targets, mut dbs) = (Vec::new(), Vec::new(), Vec::new());
    for env in envs {
        let set = app.db_set(&slug, &format!("orders-{env}"), env).await;
        let db = TestDatabase::create("mh_test_target").await;
        targets.push(app.pg_target(&slug, &set, "t1", &db).await);
        sets.push(set);
        dbs.push(db);
    }
    (slug, sets, targets, dbs)
}

#[tokio::test]
async fn separation_of_duties_follows_each_environments_policy() {
    let app = TestApp::spawn().await;
    sqlx::query("UPDATE environments SET require_previous_success = false, allow_self_approval = false WHERE name = 'stg'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (slug, sets, _, _dbs) = project_in(&app, &["daily", "stg"]).await;
    // manager2 authors the migration; manager requests.
    let (status, _) = app
        .post(
            &format!("/api/v1/projects/{slug}/migrations"),
            &app.manager2,
            json!({"version": "1", "name": "a", "up_sql": "CREATE TABLE a (id int);"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // daily allows self-approval: the requester may approve.
    let (_, run) = app
        .request_run_as(&app.manager, &slug, &sets[0], "up", "1")
        .await;
    app.approve(run["id"].as_str().unwrap()).await;

    // stg does not: neither the requester nor the author may.
    let (_, run) = app
        .request_run_as(&app.manager, &slug, &sets[1], "up", "1")
        .await;
    let id = run["id"].as_str().unwrap();
    for token in [&app.manager, &app.manager2] {
        let (status, err) = app.approve_as(id, token).await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::FORBIDDEN, "separation_of_duties")
        );
    }
    let (status, body) = app.approve_as(id, &app.admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "approved");
    // Each refusal is audited.
    let denied = app.audit_rows("access.denied").await;
    assert_eq!(denied.len(), 2);
}

#[tokio::test]
async fn stg_needs_success_on_daily_first() {
    let app = TestApp::spawn().await;
    let (slug, sets, targets, _dbs) = project_in(&app, &["daily", "stg"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    let (status, err) = app
        .request_run_as(&app.user, &slug, &sets[1], "up", "1")
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "promotion_gate"),
        "{err}"
    );
    assert!(err["error"]["message"].as_str().unwrap().contains("daily"));
    let runs = app.count("SELECT count(*) FROM runs").await;
    assert_eq!(runs, 0, "nothing written");

    // Once daily has it, stg may be asked for.
    app.mark_applied(&targets[0]).await;
    let (status, body) = app
        .request_run_as(&app.user, &slug, &sets[1], "up", "1")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn deny_needs_a_reason_and_is_final() {
    let app = TestApp::spawn().await;
    let (slug, sets, _, _dbs) = project_in(&app, &["daily"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let (_, run) = app
        .request_run_as(&app.user, &slug, &sets[0], "up", "1")
        .await;
    let id = run["id"].as_str().unwrap();
    let (status, err) = app
        .post(
            &format!("/api/v1/runs/{id}/deny"),
            &app.manager,
            json!({"reason": " "}),
        )
        .await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reason"))
    );
    let (status, _) = app
        .post(
            &format!("/api/v1/runs/{id}/deny"),
            &app.user,
            json!({"reason": "no"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .post(
            &format!("/api/v1/runs/{id}/deny"),
            &app.manager,
            json!({"reason": "not during the sale"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body["state"].as_str(), body["state_reason"].as_str()),
        (Some("denied"), Some("not during the sale"))
    );
    let (status, _) = app.approve_as(id, &app.manager2).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app.execute_as(id, &app.admin).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

/// Asks with `token` to cancel `run` (a run as the API returned it).
async fn cancel(app: &TestApp, run: &Value, token: &str) -> (StatusCode, Value) {
    let id = run["id"].as_str().unwrap();
    app.call(
        Method::POST,
        &format!("/api/v1/runs/{id}/cancel"),
        Some(token),
        None,
    )
    .await
}

#[tokio::test]
async fn requesters_cancel_their_own_runs_and_managers_any() {
    let app = TestApp::spawn().await;
    let (slug, sets, _, _dbs) = project_in(&app, &["daily"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let (_, mine) = app
        .request_run_as(&app.user, &slug, &sets[0], "up", "1")
        .await;
    let (_, theirs) = app
        .request_run_as(&app.manager, &slug, &sets[0], "up", "1")
        .await;

    let (status, _) = cancel(&app, &theirs, &app.user).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a user cannot cancel someone else's run"
    );
    let (status, body) = cancel(&app, &mine, &app.user).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "cancelled");
    assert!(
        body["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "cancelled")
    );
    let (status, body) = cancel(&app, &theirs, &app.admin).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (status, _) = cancel(&app, &theirs, &app.admin).await;
    assert_eq!(status, StatusCode::CONFLICT, "cancelling twice");
}

#[tokio::test]
async fn down_runs_need_a_down_script_for_every_covered_migration() {
    let app = TestApp::spawn().await;
    let (slug, sets, targets, _dbs) = project_in(&app, &["daily"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    app.migration(&slug, "2", "CREATE TABLE b (id int);", "")
        .await;
    app.mark_applied(&targets[0]).await;
    let (status, err) = app
        .request_run_as(&app.user, &slug, &sets[0], "down", "0")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 2 has no down script")
    );
    // Rolling back only what has a down script works, newest first.
    let (status, run) = app
        .request_run_as(&app.user, &slug, &sets[0], "down", "1")
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "version 2 is still covered: {run}"
    );
    sqlx::query("DELETE FROM applied_migrations WHERE version = '2'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, run) = app
        .request_run_as(&app.user, &slug, &sets[0], "down", "0")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(versions(&run["migrations"]), ["1"]);
    assert_eq!(run["direction"], "down");
}

/// A version below one already applied on a target of the project needs
/// `allow_out_of_order` (created or imported), and a run that applies it
/// says so per target, for its approver.
#[tokio::test]
async fn out_of_order_versions_need_the_flag_and_runs_show_them() {
    let app = TestApp::spawn().await;
    let (slug, sets, targets, _dbs) = project_in(&app, &["daily"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    app.migration(&slug, "10", "CREATE TABLE b (id int);", "DROP TABLE b;")
        .await;
    // The target already has 1 and 10 (adopted from an explicit version).
    app.baseline_at(&targets[0], "10").await;

    // Numeric order: 9 is below 10. Refused without the flag, naming both.
    let path = format!("/api/v1/projects/{slug}/migrations");
    let nine = json!({"version": "9", "name": "late", "up_sql": "CREATE TABLE c (id int);", "down_sql": "DROP TABLE c;"});
    let (status, err) = app.post(&path, &app.user, nine.clone()).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "out_of_order"),
        "{err}"
    );
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("version 9") && message.contains("version 10"),
        "{message}"
    );
    let import = json!({"files": [{"path": "5_other.up.sql", "content": "SELECT 1;"}]});
    let (status, err) = app
        .post(&format!("{path}/import"), &app.user, import.clone())
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "out_of_order"),
        "{err}"
    );
    let (_, list) = app.get(&path, &app.user).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        2,
        "nothing written"
    );

    // With the flag both are added, and audited as out of order.
    let mut allowed = nine;
    allowed["allow_out_of_order"] = json!(true);
    let (status, body) = app.post(&path, &app.user, allowed).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut import = import;
    import["allow_out_of_order"] = json!(true);
    let (status, body) = app.post(&format!("{path}/import"), &app.user, import).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let audit = app.audit_rows("migration.created").await;
    assert!(
        audit
            .iter()
            .any(|(_, d)| d["version"] == "9" && d["out_of_order"] == true)
    );

    // A run to 10 applies 5 and 9 below the target's 10: shown per target.
    let (status, run) = app
        .request_run_as(&app.user, &slug, &sets[0], "up", "10")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(run["targets"][0]["out_of_order"], true, "{run}");
    let id = run["id"].as_str().unwrap();
    let (_, fetched) = app.get(&format!("/api/v1/runs/{id}"), &app.user).await;
    assert_eq!(fetched["targets"][0]["out_of_order"], true);
    // Versions above every applied one are in order.
    app.migration(&slug, "11", "CREATE TABLE d (id int);", "")
        .await;
    let (status, run) = app
        .request_run_as(&app.user, &slug, &sets[0], "up", "11")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    assert_eq!(
        run["targets"][0]["out_of_order"], true,
        "5 and 9 still pending"
    );
}

/// `(actor, object_id, details)` of the `access.denied` rows, oldest first.
async fn denials(app: &TestApp) -> Vec<(String, String, Value)> {
    sqlx::query_as(
        "SELECT actor, object_id, details FROM audit_log WHERE action = 'access.denied' ORDER BY seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_editor_of_a_migration_is_one_of_its_authors() {
    let app = TestApp::spawn().await;
    sqlx::query("UPDATE environments SET require_previous_success = false WHERE name = 'prd'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (slug, sets, _, _dbs) = project_in(&app, &["prd"]).await;
    // The user writes 40; the manager edits its up script (revision 2).
    app.migration(&slug, "40", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    let path = format!("/api/v1/projects/{slug}/migrations/40");
    let (status, edited) = app
        .patch(
            &path,
            &app.manager,
            json!({"up_sql": "CREATE TABLE a (id bigint);"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["revision"], 2);
    assert_eq!(edited["author"], support::USER);
    assert_eq!(edited["authors"], json!([support::USER, support::MANAGER]));
    let page = app
        .client
        .get(app.url(&format!("/projects/{slug}/migrations/40")))
        .bearer_auth(&app.user)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Authors: user@example.com, manager@example.com"),
        "{page}"
    );

    // The user asks for prd; the editor may neither approve nor deny.
    let (status, run) = app
        .request_run_as(&app.user, &slug, &sets[0], "up", "40")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let id = run["id"].as_str().unwrap();
    let (status, err) = app.approve_as(id, &app.manager).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::FORBIDDEN, "separation_of_duties"),
        "{err}"
    );
    let (status, err) = app
        .post(
            &format!("/api/v1/runs/{id}/deny"),
            &app.manager,
            json!({"reason": "no"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::FORBIDDEN, "separation_of_duties"),
        "{err}"
    );
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("deny") && !message.contains("approve"),
        "{message}"
    );
    // The web form shares the rule.
    let refused = TokenBrowser::new(&app, &app.manager)
        .post(&format!("/runs/{id}/approve"), &[("comment", "lgtm")])
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let denied = denials(&app).await;
    let routes: Vec<&str> = denied.iter().map(|(_, route, _)| route.as_str()).collect();
    assert_eq!(
        routes,
        [
            format!("POST /api/v1/runs/{id}/approve"),
            format!("POST /api/v1/runs/{id}/deny"),
            format!("POST /runs/{id}/approve"),
        ]
    );
    for (actor, _, details) in &denied {
        assert_eq!(actor, support::MANAGER);
        assert_eq!(details["code"], "separation_of_duties");
        assert_eq!(details["run"], id);
    }
    let (_, run) = app.get(&format!("/api/v1/runs/{id}"), &app.admin).await;
    assert_eq!(run["state"], "pending_approval");

    // Someone who wrote no revision may.
    let (status, body) = app.approve_as(id, &app.manager2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_run_whose_facts_changed_is_invalidated_by_a_denial_too() {
    let app = TestApp::spawn().await;
    let (slug, sets, _, _dbs) = project_in(&app, &["daily"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let (_, run) = app
        .request_run_as(&app.user, &slug, &sets[0], "up", "1")
        .await;
    let id = run["id"].as_str().unwrap();
    // A target joins the DB set: the run no longer covers what it pinned.
    let extra = TestDatabase::create("mh_test_target").await;
    let (status, _) = app
        .post(
            &format!("/api/v1/projects/{slug}/db-sets/{}/targets", sets[0]),
            &app.manager,
            json!({"name": "late", "engine": "postgres", "host": "127.0.0.1", "port": 5432, "database": extra.name, "username": "postgres"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, err) = app
        .post(
            &format!("/api/v1/runs/{id}/deny"),
            &app.manager,
            json!({"reason": "not now"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "run_invalidated")
    );
    let (_, body) = app.get(&format!("/api/v1/runs/{id}"), &app.user).await;
    assert_eq!(body["state"], "invalidated");
    assert!(body["approvals"].as_array().unwrap().is_empty(), "{body}");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'run.invalidated' AND object_id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn an_approval_covers_the_targets_tls_mode_and_session_settings() {
    let app = TestApp::spawn().await;
    let (slug, sets, _, _dbs) = project_in(&app, &["daily"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    for change in [
        "UPDATE targets SET tls_mode = CASE tls_mode WHEN 'require' THEN 'disable' ELSE 'require' END WHERE db_set_id = $1::uuid",
        "UPDATE targets SET session_settings = 'SET search_path = other' WHERE db_set_id = $1::uuid",
    ] {
        let (status, run) = app
            .request_run_as(&app.user, &slug, &sets[0], "up", "1")
            .await;
        assert_eq!(status, StatusCode::CREATED, "{run}");
        let id = run["id"].as_str().unwrap();
        // Changed behind the API's back: only the digest can notice.
        sqlx::query(change)
            .bind(&sets[0])
            .execute(&app.pool)
            .await
            .unwrap();
        let (status, err) = app
            .post(
                &format!("/api/v1/runs/{id}/approve"),
                &app.manager,
                json!({}),
            )
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::CONFLICT, "run_invalidated"),
            "{change}"
        );
    }
}
