//! The governance rules through the API: separation of duties per
//! environment, the promotion gate, deny, cancel, and down runs.

mod support;

use common::testing::TestDatabase;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{TestApp, code};

/// A project with one PostgreSQL target per named environment.
async fn project_in(app: &TestApp, envs: &[&str]) -> (String, Vec<String>, Vec<TestDatabase>) {
    let slug = app.project("shop").await;
    let mut sets = Vec::new();
    let mut dbs = Vec::new();
    for env in envs {
        let set = app.db_set(&slug, &format!("orders-{env}"), env).await;
        let db = TestDatabase::create("mh_test_target").await;
        let (status, body) = app
            .post(
                &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
                &app.manager,
                json!({"name": "t1", "engine": "postgres", "host": "127.0.0.1", "port": 5432, "database": db.name, "username": "postgres"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        sets.push(set);
        dbs.push(db);
    }
    (slug, sets, dbs)
}

async fn request(
    app: &TestApp,
    token: &str,
    slug: &str,
    set: &str,
    direction: &str,
    version: &str,
) -> (StatusCode, Value) {
    app.post(
        &format!("/api/v1/projects/{slug}/runs"),
        token,
        json!({"db_set_id": set, "direction": direction, "target_version": version}),
    )
    .await
}

#[tokio::test]
async fn separation_of_duties_follows_each_environments_policy() {
    let app = TestApp::spawn().await;
    sqlx::query("UPDATE environments SET require_previous_success = false, allow_self_approval = false WHERE name = 'stg'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (slug, sets, _dbs) = project_in(&app, &["daily", "stg"]).await;
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
    let (_, run) = request(&app, &app.manager, &slug, &sets[0], "up", "1").await;
    let (status, body) = app
        .post(
            &format!("/api/v1/runs/{}/approve", run["id"].as_str().unwrap()),
            &app.manager,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // stg does not: neither the requester nor the author may.
    let (_, run) = request(&app, &app.manager, &slug, &sets[1], "up", "1").await;
    let id = run["id"].as_str().unwrap();
    for token in [&app.manager, &app.manager2] {
        let (status, err) = app
            .post(&format!("/api/v1/runs/{id}/approve"), token, json!({}))
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::FORBIDDEN, "separation_of_duties")
        );
    }
    let (status, body) = app
        .post(&format!("/api/v1/runs/{id}/approve"), &app.admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "approved");
    // Each refusal is audited.
    let denied = app.audit_rows("access.denied").await;
    assert_eq!(denied.len(), 2);
}

#[tokio::test]
async fn stg_needs_success_on_daily_first() {
    let app = TestApp::spawn().await;
    let (slug, sets, _dbs) = project_in(&app, &["daily", "stg"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    let (status, err) = request(&app, &app.user, &slug, &sets[1], "up", "1").await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "promotion_gate"),
        "{err}"
    );
    assert!(err["error"]["message"].as_str().unwrap().contains("daily"));
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(runs, 0, "nothing written");

    // Once daily has it, stg may be asked for.
    let target: uuid::Uuid = sqlx::query_scalar("SELECT id FROM targets WHERE db_set_id = $1")
        .bind(uuid::Uuid::parse_str(&sets[0]).unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO applied_migrations (target_id, version, version_key, migration_id, checksum)
         SELECT $1, version, version_key, id, checksum FROM migrations",
    )
    .bind(target)
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, body) = request(&app, &app.user, &slug, &sets[1], "up", "1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn deny_needs_a_reason_and_is_final() {
    let app = TestApp::spawn().await;
    let (slug, sets, _dbs) = project_in(&app, &["daily"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let (_, run) = request(&app, &app.user, &slug, &sets[0], "up", "1").await;
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
    let (status, _) = app
        .post(
            &format!("/api/v1/runs/{id}/approve"),
            &app.manager2,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .post(&format!("/api/v1/runs/{id}/execute"), &app.admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn requesters_cancel_their_own_runs_and_managers_any() {
    let app = TestApp::spawn().await;
    let (slug, sets, _dbs) = project_in(&app, &["daily"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let (_, mine) = request(&app, &app.user, &slug, &sets[0], "up", "1").await;
    let (_, theirs) = request(&app, &app.manager, &slug, &sets[0], "up", "1").await;

    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/runs/{}/cancel", theirs["id"].as_str().unwrap()),
            Some(&app.user),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a user cannot cancel someone else's run"
    );
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/runs/{}/cancel", mine["id"].as_str().unwrap()),
            Some(&app.user),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["state"], "cancelled");
    assert!(
        body["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "cancelled")
    );
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/runs/{}/cancel", theirs["id"].as_str().unwrap()),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/runs/{}/cancel", theirs["id"].as_str().unwrap()),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "cancelling twice");
}

#[tokio::test]
async fn down_runs_need_a_down_script_for_every_covered_migration() {
    let app = TestApp::spawn().await;
    let (slug, sets, _dbs) = project_in(&app, &["daily"]).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    app.migration(&slug, "2", "CREATE TABLE b (id int);", "")
        .await;
    let target: uuid::Uuid = sqlx::query_scalar("SELECT id FROM targets")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO applied_migrations (target_id, version, version_key, migration_id, checksum)
         SELECT $1, version, version_key, id, checksum FROM migrations",
    )
    .bind(target)
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, err) = request(&app, &app.user, &slug, &sets[0], "down", "0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 2 has no down script")
    );
    // Rolling back only what has a down script works, newest first.
    let (status, run) = request(&app, &app.user, &slug, &sets[0], "down", "1").await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "version 2 is still covered: {run}"
    );
    sqlx::query("DELETE FROM applied_migrations WHERE version = '2'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, run) = request(&app, &app.user, &slug, &sets[0], "down", "0").await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    let versions: Vec<&str> = run["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1"]);
    assert_eq!(run["direction"], "down");
}
