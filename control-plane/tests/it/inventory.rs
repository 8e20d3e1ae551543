//! The inventory API against real databases: projects, environments, DB
//! sets and targets (edit, delete, bulk), connection tests on the local
//! PostgreSQL and MariaDB, the target state with live drift, and the rule
//! that inventory changes invalidate waiting runs.

use crate::support::{self, CapturedLogs, Fleet, TestApp, code};
use common::testing::{TestDatabase, TestMysqlDatabase};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Sends a raw body, for malformed JSON.
async fn send_raw(app: &TestApp, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
    let resp = app
        .client
        .request(method, app.url(path))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A project `shop` with a DB set `orders` in `daily` of one PostgreSQL
/// target and a migration `1`.
async fn shop(app: &TestApp) -> (String, String, String, TestDatabase) {
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = TestDatabase::create("mh_test_inv").await;
    let target = app.pg_target(&slug, &set, "shard-1", &db).await;
    app.migration(&slug, "1", "CREATE TABLE t1 (id int);", "DROP TABLE t1;")
        .await;
    (slug, set, target, db)
}

/// A run approved and executed without a worker running: it stays `queued`.
async fn queued_run(app: &TestApp, slug: &str, set: &str) -> String {
    let run = app.request_run(slug, set, "1").await;
    app.approve(&run).await;
    app.execute(&run).await;
    run
}

async fn run_state(app: &TestApp, run: &str) -> (String, Option<String>) {
    let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.user).await;
    (
        body["state"].as_str().unwrap().to_owned(),
        body["state_reason"].as_str().map(str::to_owned),
    )
}

/// A loopback port that refuses connections for as long as the returned
/// socket lives: bound (so no other test can take it) but not listening.
fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

// Projects ---------------------------------------------------------------------

#[tokio::test]
async fn admins_edit_and_archive_projects() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;

    let (status, _) = app
        .patch("/api/v1/projects/shop", &app.manager, json!({"name": "X"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, body) = app
        .patch(
            "/api/v1/projects/shop",
            &app.admin,
            json!({"name": "  The Shop ", "description": "orders and payments"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "The Shop");
    assert_eq!(body["description"], "orders and payments");
    assert_eq!(body["slug"], "shop", "the slug never changes");
    let updated = app.audit_rows("project.updated").await;
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0].1["changes"]["name"]["to"], "The Shop");

    // Bad input leaves the project as it was.
    for (body, field) in [
        (json!({"name": "   "}), "name"),
        (json!({"name": 7}), "name"),
        (json!({"description": "x".repeat(5001)}), "description"),
    ] {
        let (status, err) = app.patch("/api/v1/projects/shop", &app.admin, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert_eq!(err["error"]["field"], field);
    }
    let (status, _) = send_raw(&app, Method::PATCH, "/api/v1/projects/shop", "{\"name\": ").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, project) = app.get("/api/v1/projects/shop", &app.user).await;
    assert_eq!(project["name"], "The Shop");
    assert_eq!(app.audit_rows("project.updated").await.len(), 1);

    // Unknown and invalid slugs are 404s.
    for path in ["/api/v1/projects/nope", "/api/v1/projects/Bad%20Slug"] {
        let (status, _) = app.patch(path, &app.admin, json!({"name": "x"})).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let (status, _) = app.delete(path, &app.admin).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }

    // Archive: gone from lists and look-ups, slug still taken.
    let (status, _) = app.delete("/api/v1/projects/shop", &app.manager).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .delete(&format!("/api/v1/projects/{slug}"), &app.admin)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/projects/shop", &app.user).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, list) = app.get("/api/v1/projects", &app.user).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    let (status, _) = app
        .patch("/api/v1/projects/shop", &app.admin, json!({"name": "x"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app
        .post(
            "/api/v1/projects",
            &app.admin,
            json!({"slug": "shop", "name": "again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&body), "duplicate_slug");
    assert_eq!(app.audit_rows("project.archived").await.len(), 1);
}

#[tokio::test]
async fn archiving_is_refused_while_a_run_executes_and_invalidates_waiting_runs() {
    let app = TestApp::spawn().await;
    let (slug, set, target, _db) = shop(&app).await;
    let queued = queued_run(&app, &slug, &set).await;
    let (status, body) = app.delete("/api/v1/projects/shop", &app.admin).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "run_in_progress");
    assert_eq!(
        app.count("SELECT count(*) FROM projects WHERE archived_at IS NOT NULL")
            .await,
        0
    );

    // Once nothing executes, archiving invalidates what still waits.
    sqlx::query("UPDATE runs SET state = 'succeeded' WHERE id = $1::uuid")
        .bind(&queued)
        .execute(&app.pool)
        .await
        .unwrap();
    let waiting = app.request_run(&slug, &set, "1").await;
    let (status, _) = app.delete("/api/v1/projects/shop", &app.admin).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (state, reason) = run_state(&app, &waiting).await;
    assert_eq!(state, "invalidated");
    assert!(reason.unwrap().contains("archived"));
    assert_eq!(app.audit_rows("run.invalidated").await.len(), 1);
    // Its targets vanished with it.
    let (status, _) = app
        .get(&format!("/api/v1/targets/{target}"), &app.user)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// Environments -------------------------------------------------------------------

#[tokio::test]
async fn admins_add_and_edit_environments() {
    let app = TestApp::spawn().await;
    let (status, _) = app
        .post("/api/v1/environments", &app.manager, json!({"name": "qa"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Without a position a new environment goes last, with the defaults.
    let (status, qa) = app
        .post(
            "/api/v1/environments",
            &app.admin,
            json!({"name": "qa", "required_approvals": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{qa}");
    assert_eq!(qa["position"], 40);
    assert_eq!(qa["required_approvals"], 2);
    assert_eq!(qa["allow_self_approval"], true);
    // A short lock budget, retried, unless the admin says otherwise.
    assert_eq!(
        (&qa["lock_timeout_ms"], &qa["lock_retries"]),
        (&json!(2000), &json!(5))
    );
    assert_eq!(
        qa["terminate_idle_blockers_after_ms"],
        json!(null),
        "never, unless asked"
    );
    let (_, list) = app.get("/api/v1/environments", &app.user).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["daily", "stg", "prd", "qa"]);
    let (status, early) = app
        .post(
            "/api/v1/environments",
            &app.admin,
            json!({"name": "dev", "position": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{early}");
    assert_eq!(app.audit_rows("environment.created").await.len(), 2);

    // Bad input: nothing written.
    let before = app.count("SELECT count(*) FROM environments").await;
    for (body, status, field_or_code) in [
        (
            json!({"name": "Bad Name"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"name": "9lives"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"position": 50}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"name": "x1", "required_approvals": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "required_approvals",
        ),
        (
            json!({"name": "x1", "lock_timeout_ms": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lock_timeout_ms",
        ),
        (
            json!({"name": "x1", "lock_retries": 21}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lock_retries",
        ),
        (
            json!({"name": "x1", "preflight_wait_ms": 3_600_001}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "preflight_wait_ms",
        ),
        (
            json!({"name": "x1", "blocker_age_ms": -1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "blocker_age_ms",
        ),
        (
            json!({"name": "x1", "terminate_idle_blockers_after_ms": -5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "terminate_idle_blockers_after_ms",
        ),
        (
            json!({"name": "x1", "statement_timeout_ms": 100_000_000_000i64}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "statement_timeout_ms",
        ),
        (
            json!({"name": "x1", "allow_self_approval": "yes"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "allow_self_approval",
        ),
        (
            json!({"name": "qa"}),
            StatusCode::CONFLICT,
            "duplicate_name",
        ),
        (
            json!({"name": "x1", "position": 20}),
            StatusCode::CONFLICT,
            "duplicate_position",
        ),
    ] {
        let (got, err) = app
            .post("/api/v1/environments", &app.admin, body.clone())
            .await;
        assert_eq!(got, status, "{body} -> {err}");
        if status == StatusCode::CONFLICT {
            assert_eq!(code(&err), field_or_code, "{body}");
        } else {
            assert_eq!(err["error"]["field"], field_or_code, "{body} -> {err}");
        }
    }
    let (status, _) = send_raw(
        &app,
        Method::POST,
        "/api/v1/environments",
        "{\"name\": \"zz\"",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("SELECT count(*) FROM environments").await, before);

    // Edit: prd never allows self-approval; names are fixed; positions unique.
    let (status, err) = app
        .patch(
            "/api/v1/environments/prd",
            &app.admin,
            json!({"allow_self_approval": true}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["field"], "allow_self_approval");
    let (status, err) = app
        .patch(
            "/api/v1/environments/stg",
            &app.admin,
            json!({"name": "staging"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["field"], "name");
    let (status, err) = app
        .patch(
            "/api/v1/environments/stg",
            &app.admin,
            json!({"position": 30}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&err), "duplicate_position");
    let (status, _) = app
        .patch("/api/v1/environments/nope", &app.admin, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .patch(
            "/api/v1/environments/qa",
            &app.manager,
            json!({"required_approvals": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, prd) = app
        .patch(
            "/api/v1/environments/prd",
            &app.admin,
            json!({"required_approvals": 3, "lock_timeout_ms": 2000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{prd}");
    assert_eq!(prd["required_approvals"], 3);
    assert_eq!(prd["allow_self_approval"], false);
    let updated = app.audit_rows("environment.updated").await;
    assert_eq!(updated.len(), 1, "only the successful edit is audited");
    assert_eq!(
        updated[0].1["changes"]["lock_timeout_ms"],
        json!({"from": 5000, "to": 2000})
    );
}

#[tokio::test]
async fn new_timeouts_invalidate_the_environments_waiting_runs() {
    let app = TestApp::spawn().await;
    let (slug, set, _target, _db) = shop(&app).await;
    let pending = app.request_run(&slug, &set, "1").await;
    let approved = app.request_run(&slug, &set, "1").await;
    app.approve(&approved).await;

    // A policy change that no approval pins leaves them alone.
    let (status, _) = app
        .patch(
            "/api/v1/environments/daily",
            &app.admin,
            json!({"require_previous_success": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run_state(&app, &pending).await.0, "pending_approval");

    let (status, body) = app
        .patch(
            "/api/v1/environments/daily",
            &app.admin,
            json!({"statement_timeout_ms": 60_000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for run in [&pending, &approved] {
        let (state, reason) = run_state(&app, run).await;
        assert_eq!(state, "invalidated");
        assert!(reason.unwrap().contains("timeouts of environment daily"));
    }
    let rows = app.audit_rows("run.invalidated").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, support::ADMIN);
    let (status, err) = app.execute_as(&approved, &app.user).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&err), "run_invalidated");

    // The retries are pinned as well.
    let pending = app.request_run(&slug, &set, "1").await;
    let (status, _) = app
        .patch(
            "/api/v1/environments/daily",
            &app.admin,
            json!({"lock_retries": 0, "preflight_wait_ms": 1000}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run_state(&app, &pending).await.0, "invalidated");
}

// DB sets ---------------------------------------------------------------------------

#[tokio::test]
async fn managers_rename_and_delete_db_sets() {
    let app = TestApp::spawn().await;
    let (slug, set, target, _db) = shop(&app).await;
    app.db_set(&slug, "billing", "daily").await;
    let path = format!("/api/v1/projects/{slug}/db-sets/{set}");

    let (status, _) = app.patch(&path, &app.user, json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .patch(&path, &app.manager, json!({"name": "orders-eu"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "orders-eu");
    for (body, status, expect) in [
        (
            json!({"name": "billing"}),
            StatusCode::CONFLICT,
            "duplicate_name",
        ),
        (
            json!({"name": "has space"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"environment": "prd"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "environment",
        ),
    ] {
        let (got, err) = app.patch(&path, &app.manager, body.clone()).await;
        assert_eq!(got, status, "{body} -> {err}");
        let found = if got == StatusCode::CONFLICT {
            code(&err).to_owned()
        } else {
            err["error"]["field"].as_str().unwrap().to_owned()
        };
        assert_eq!(found, expect);
    }
    let (_, body) = app.get(&path, &app.user).await;
    assert_eq!(body["name"], "orders-eu");
    assert_eq!(app.audit_rows("db_set.updated").await.len(), 1);
    let (status, _) = app
        .patch(
            &format!("/api/v1/projects/{slug}/db-sets/{}", Uuid::new_v4()),
            &app.manager,
            json!({"name": "y"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Delete: refused while a run executes.
    let queued = queued_run(&app, &slug, &set).await;
    let (status, body) = app.delete(&path, &app.manager).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "run_in_progress");
    sqlx::query("UPDATE runs SET state = 'failed' WHERE id = $1::uuid")
        .bind(&queued)
        .execute(&app.pool)
        .await
        .unwrap();
    let waiting = app.request_run(&slug, &set, "1").await;
    let (status, _) = app.delete(&path, &app.manager).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path, &app.user).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&format!("/api/v1/targets/{target}"), &app.user)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(run_state(&app, &waiting).await.0, "invalidated");
    let deleted = app.audit_rows("db_set.deleted").await;
    assert_eq!(deleted[0].1["targets_deleted"], 1);
    // The name is free again.
    app.db_set(&slug, "orders-eu", "daily").await;
}

// Targets ------------------------------------------------------------------------------

async fn stored_secret(app: &TestApp, id: &str) -> Option<(Vec<u8>, String)> {
    let row: (Option<Vec<u8>>, Option<String>) = sqlx::query_as(
        "SELECT password_ciphertext, password_key_id FROM targets WHERE id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    row.0.zip(row.1)
}

#[tokio::test]
async fn editing_a_target_keeps_replaces_or_clears_its_password() {
    let app = TestApp::spawn().await;
    let (_slug, _set, target, _db) = shop(&app).await;
    let path = format!("/api/v1/targets/{target}");
    let original = stored_secret(&app, &target).await.unwrap();

    let (status, _) = app.patch(&path, &app.user, json!({"name": "x"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Absent and empty keep the stored ciphertext as it is.
    for body in [
        json!({"name": "primary"}),
        json!({"name": "primary", "password": ""}),
    ] {
        let (status, row) = app.patch(&path, &app.manager, body).await;
        assert_eq!(status, StatusCode::OK, "{row}");
        assert_eq!(row["name"], "primary");
        assert_eq!(row["has_password"], true);
        assert_eq!(stored_secret(&app, &target).await.unwrap(), original);
    }
    // A new one replaces it, sealed for this target.
    let (status, row) = app
        .patch(&path, &app.manager, json!({"password": "n3w-Secret"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!row.to_string().contains("n3w-Secret"));
    let (ciphertext, key_id) = stored_secret(&app, &target).await.unwrap();
    assert_ne!(ciphertext, original.0);
    let sealed = common::crypto::Sealed { key_id, ciphertext };
    let id: Uuid = target.parse().unwrap();
    assert_eq!(
        app.keys.open(id.as_bytes(), &sealed).unwrap(),
        b"n3w-Secret"
    );
    // null clears it.
    let (status, row) = app
        .patch(&path, &app.manager, json!({"password": null}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(row["has_password"], false);
    assert_eq!(stored_secret(&app, &target).await, None);

    let passwords: Vec<String> = app
        .audit_rows("target.updated")
        .await
        .iter()
        .map(|(_, d)| d["password"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        passwords,
        ["kept", "replaced", "cleared"],
        "the unchanged second edit is not audited"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE details::text LIKE '%n3w-Secret%'")
            .await,
        0
    );
}

#[tokio::test]
async fn target_bad_input_on_edit_changes_nothing() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = shop(&app).await;
    app.pg_target(&slug, &set, "shard-2", &db).await;
    let path = format!("/api/v1/targets/{target}");
    let snapshot = || async {
        sqlx::query_as::<_, (String, String, i32, String)>(
            "SELECT name, engine, port, tls_mode FROM targets WHERE id = $1::uuid",
        )
        .bind(&target)
        .fetch_one(&app.pool)
        .await
        .unwrap()
    };
    let before = snapshot().await;
    for (body, status, expect) in [
        (
            json!({"engine": "oracle"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "engine",
        ),
        (
            json!({"port": 70000}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "port",
        ),
        (json!({"port": 0}), StatusCode::UNPROCESSABLE_ENTITY, "port"),
        (
            json!({"port": "5432"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "port",
        ),
        (
            json!({"tls_mode": "always"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "tls_mode",
        ),
        (
            json!({"name": "bad name"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"host": "a b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "host",
        ),
        (
            json!({"worker_pool": "Pool!"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "worker_pool",
        ),
        (
            json!({"name": "shard-2"}),
            StatusCode::CONFLICT,
            "duplicate_name",
        ),
    ] {
        let (got, err) = app.patch(&path, &app.manager, body.clone()).await;
        assert_eq!(got, status, "{body} -> {err}");
        let found = if got == StatusCode::CONFLICT {
            code(&err)
        } else {
            err["error"]["field"].as_str().unwrap()
        };
        assert_eq!(found, expect, "{body}");
    }
    let (status, _) = send_raw(&app, Method::PATCH, &path, "{\"port\": 1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .patch(
            &format!("/api/v1/targets/{}", Uuid::new_v4()),
            &app.manager,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .patch("/api/v1/targets/not-a-uuid", &app.manager, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(snapshot().await, before);
    assert_eq!(app.audit_rows("target.updated").await.len(), 0);
}

#[tokio::test]
async fn adding_editing_or_removing_a_target_invalidates_the_sets_waiting_runs() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = shop(&app).await;
    let path = format!("/api/v1/targets/{target}");

    // Renaming and a new password change nothing an approval covers.
    let run = app.request_run(&slug, &set, "1").await;
    app.approve(&run).await;
    let (status, _) = app
        .patch(
            &path,
            &app.manager,
            json!({"name": "main", "password": "other"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run_state(&app, &run).await.0, "approved");

    // Where the migration runs does.
    let (status, body) = app
        .patch(
            &path,
            &app.manager,
            json!({"session_settings": "SET search_path = app"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (state, reason) = run_state(&app, &run).await;
    assert_eq!(state, "invalidated");
    assert_eq!(
        reason.as_deref(),
        Some("target main of the DB set changed (session_settings)")
    );

    let run = app.request_run(&slug, &set, "1").await;
    let second = app.pg_target(&slug, &set, "shard-2", &db).await;
    assert_eq!(run_state(&app, &run).await.0, "invalidated");
    assert!(
        run_state(&app, &run)
            .await
            .1
            .unwrap()
            .contains("shard-2 was added")
    );

    let run = app.request_run(&slug, &set, "1").await;
    let (status, _) = app
        .delete(&format!("/api/v1/targets/{second}"), &app.user)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .delete(&format!("/api/v1/targets/{second}"), &app.manager)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(run_state(&app, &run).await.0, "invalidated");
    assert_eq!(
        app.get(&format!("/api/v1/targets/{second}"), &app.user)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.audit_rows("target.deleted").await.len(), 1);
    assert_eq!(app.audit_rows("run.invalidated").await.len(), 3);

    // While a run executes, the set's targets stay as they are.
    let queued = queued_run(&app, &slug, &set).await;
    let (status, body) = app.patch(&path, &app.manager, json!({"port": 5433})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "run_in_progress");
    let (status, _) = app.delete(&path, &app.manager).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(run_state(&app, &queued).await.0, "queued");
    let (_, row) = app.get(&path, &app.user).await;
    assert_eq!(row["port"], 5432);
}

// Bulk creation ---------------------------------------------------------------------------

#[tokio::test]
async fn bulk_creation_takes_json_or_lines() {
    let app = TestApp::spawn().await;
    let (slug, set, _target, _db) = shop(&app).await;
    let bulk = format!("/api/v1/projects/{slug}/db-sets/{set}/targets/bulk");
    let run = app.request_run(&slug, &set, "1").await;

    let (status, _) = app.post(&bulk, &app.user, json!({"lines": "a/b"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let targets: Vec<Value> = (0..3)
        .map(|i| json!({"name": format!("eu-{i}"), "engine": "postgres", "host": format!("10.0.0.{i}"),
                        "port": 5432, "database": "orders", "username": "migrator", "password": "bulk-Secret-1"}))
        .collect();
    let (status, body) = app
        .post(&bulk, &app.manager, json!({"targets": targets}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["count"], 3);
    assert!(!body.to_string().contains("bulk-Secret-1"));
    assert_eq!(body["items"][2]["name"], "eu-2");
    assert_eq!(body["items"][0]["has_password"], true);
    assert_eq!(run_state(&app, &run).await.0, "invalidated");

    let lines = "# orders shards\n10.1.0.1:3306/orders\n\n10.1.0.2/orders\n[fd00::3]:3307/orders\n";
    let defaults = json!({"engine": "mysql", "username": "migrator", "password": "bulk-Secret-2",
                          "tls_mode": "require", "worker_pool": "eu", "name_prefix": "my-"});
    let (status, body) = app
        .post(
            &bulk,
            &app.manager,
            json!({"lines": lines, "defaults": defaults}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let got: Vec<(String, String, i64)> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["host"].as_str().unwrap().to_owned(),
                t["port"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("my-1".into(), "10.1.0.1".into(), 3306),
            ("my-2".into(), "10.1.0.2".into(), 3306),
            ("my-3".into(), "fd00::3".into(), 3307)
        ]
    );
    assert_eq!(body["items"][0]["worker_pool"], "eu");
    assert_eq!(body["items"][0]["tls_mode"], "require");
    // Numbering continues; without a prefix the database names the target.
    let (_, body) = app
        .post(
            &bulk,
            &app.manager,
            json!({"lines": "10.1.0.4/x", "defaults": defaults}),
        )
        .await;
    assert_eq!(body["items"][0]["name"], "my-4");
    let (status, body) = app
        .post(&bulk, &app.manager, json!({"lines": "10.2.0.1/inventory\n10.2.0.2/catalog", "defaults": {"engine": "postgres", "username": "u"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["items"][1]["name"], "catalog");
    assert_eq!(body["items"][1]["port"], 5432);
    assert_eq!(body["items"][1]["has_password"], false);

    let rows = app.audit_rows("target.bulk_created").await;
    assert_eq!(rows.len(), 4, "one audit row per request");
    assert_eq!(rows[0].1["count"], 3);
    assert_eq!(rows[0].1["names"], json!(["eu-0", "eu-1", "eu-2"]));
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE details::text LIKE '%bulk-Secret%'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM targets").await,
        1 + 3 + 3 + 1 + 2
    );
}

#[tokio::test]
async fn bulk_creation_is_all_or_nothing() {
    let app = TestApp::spawn().await;
    let (slug, set, _target, _db) = shop(&app).await;
    let bulk = format!("/api/v1/projects/{slug}/db-sets/{set}/targets/bulk");
    let good = |i: usize| json!({"name": format!("t{i}"), "engine": "postgres", "host": "db", "port": 5432, "database": "d", "username": "u"});
    let with = |i: usize, field: &str, value: Value| {
        let mut targets: Vec<Value> = (0..5).map(good).collect();
        targets[i][field] = value;
        json!({"targets": targets})
    };
    let defaults = json!({"engine": "postgres", "username": "u"});
    let too_many: Vec<Value> = (0..1001).map(good).collect();
    let many_lines: String = (0..1001).map(|i| format!("h{i}/db{i}\n")).collect();
    for (body, status, expect) in [
        (
            with(3, "port", json!(70000)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets[3].port",
        ),
        (
            with(1, "engine", json!("oracle")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets[1].engine",
        ),
        (
            with(4, "port", json!("x")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets[4].port",
        ),
        (
            with(2, "name", json!("t0")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets[2].name",
        ),
        (
            with(0, "name", json!("shard-1")),
            StatusCode::CONFLICT,
            "duplicate_name",
        ),
        (
            json!({"targets": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets",
        ),
        (
            json!({"targets": too_many}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "targets",
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, "targets"),
        (
            json!({"targets": [good(0)], "lines": "a/b"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lines",
        ),
        (
            json!({"lines": "a/b\nc:99999/d", "defaults": defaults}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lines[2]",
        ),
        (
            json!({"lines": "a/b\n\nnot a target", "defaults": defaults}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lines[3]",
        ),
        (
            json!({"lines": "a/b\nc/b", "defaults": defaults}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lines[2]",
        ),
        (
            json!({"lines": many_lines, "defaults": defaults}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "lines",
        ),
        (
            json!({"lines": "a/b", "defaults": {"engine": "oracle", "username": "u"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "defaults.engine",
        ),
        (
            json!({"lines": "a/b", "defaults": {"engine": "mysql"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "defaults.username",
        ),
    ] {
        let (got, err) = app.post(&bulk, &app.manager, body.clone()).await;
        let shown: String = body.to_string().chars().take(120).collect();
        assert_eq!(got, status, "{shown} -> {err}");
        let found = if got == StatusCode::CONFLICT {
            code(&err)
        } else {
            err["error"]["field"].as_str().unwrap_or("?")
        };
        assert_eq!(found, expect, "{shown} -> {err}");
    }
    let (status, _) = send_raw(&app, Method::POST, &bulk, "{\"targets\": [").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app
        .post(
            &format!("/api/v1/projects/Bad%20Slug/db-sets/{set}/targets/bulk"),
            &app.manager,
            json!({"targets": [good(0)]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        app.count("SELECT count(*) FROM targets").await,
        1,
        "nothing was written"
    );
    assert_eq!(app.audit_rows("target.bulk_created").await.len(), 0);
}

// Connection tests ----------------------------------------------------------------------------

async fn test_connection(app: &TestApp, target: &str) -> Value {
    let (status, body) = app
        .post(
            &format!("/api/v1/targets/{target}/test"),
            &app.manager,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn connection_test_succeeds_on_postgres_and_mariadb() {
    let app = TestApp::spawn().await;
    let (slug, set, pg, _db) = shop(&app).await;
    let maria = TestMysqlDatabase::create("mh_test_inv").await;
    let my = app.mysql_target(&slug, &set, "maria", &maria).await;

    let (status, _) = app
        .post(&format!("/api/v1/targets/{pg}/test"), &app.user, json!({}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let result = test_connection(&app, &pg).await;
    assert_eq!(result["ok"], true, "{result}");
    assert!(
        result["server_version"]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL 1"),
        "{result}"
    );
    assert!(result["latency_ms"].as_u64().unwrap() < 5000);
    assert_eq!(result["error"], Value::Null);

    let result = test_connection(&app, &my).await;
    assert_eq!(result["ok"], true, "{result}");
    assert!(
        result["server_version"]
            .as_str()
            .unwrap()
            .contains("MariaDB"),
        "{result}"
    );

    let rows = app.audit_rows("target.tested").await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0, support::MANAGER);
    assert_eq!(rows[1].1["ok"], true);
    assert_eq!(rows[1].1["engine"], "mysql");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM audit_log WHERE details::text LIKE '%{}%'",
            maria.password
        ))
        .await,
        0
    );
    let (status, _) = app
        .post(
            &format!("/api/v1/targets/{}/test", Uuid::new_v4()),
            &app.manager,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn connection_test_fails_clearly_with_the_drivers_words() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let maria = TestMysqlDatabase::create("mh_test_inv").await;
    let wrong = "Wr0ng-Passw0rd";
    let mut body = support::mysql_target_json("maria", &maria);
    body["password"] = wrong.into();
    let target = app.add_target(&slug, &set, body).await;
    let result = test_connection(&app, &target).await;
    assert_eq!(result["ok"], false);
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("Access denied for user"), "{error}");
    assert!(!error.contains(wrong));
    assert_eq!(result["server_version"], Value::Null);

    let (_closed, port) = closed_port();
    for engine in ["postgres", "mysql"] {
        let (_, t) = app
            .post(&format!("/api/v1/projects/{slug}/db-sets/{set}/targets"), &app.manager,
                  json!({"name": format!("closed-{engine}"), "engine": engine, "host": "127.0.0.1", "port": port,
                         "database": "x", "username": "u", "password": "pw-closed", "tls_mode": "disable"}))
            .await;
        let result = test_connection(&app, t["id"].as_str().unwrap()).await;
        assert_eq!(result["ok"], false);
        let error = result["error"].as_str().unwrap().to_lowercase();
        assert!(
            error.contains("refused") && error.contains(&format!("127.0.0.1:{port}/x")),
            "{engine}: {error}"
        );
    }

    let (_, t) = app
        .post(&format!("/api/v1/projects/{slug}/db-sets/{set}/targets"), &app.manager,
              json!({"name": "nodb-pg", "engine": "postgres", "host": "127.0.0.1", "port": 5432,
                     "database": "mh_no_such_database", "username": "postgres", "tls_mode": "disable"}))
        .await;
    let result = test_connection(&app, t["id"].as_str().unwrap()).await;
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("database \"mh_no_such_database\" does not exist"),
        "{result}"
    );
    let (_, t) = app
        .post(&format!("/api/v1/projects/{slug}/db-sets/{set}/targets"), &app.manager,
              json!({"name": "nodb-my", "engine": "mysql", "host": maria.host, "port": maria.port,
                     "database": "mh_no_such_database", "username": maria.user, "password": maria.password}))
        .await;
    let result = test_connection(&app, t["id"].as_str().unwrap()).await;
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("mh_no_such_database"),
        "{result}"
    );

    // A server that accepts the connection but never answers: the wait is bounded.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (_, t) = app
        .post(
            &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
            &app.manager,
            json!({"name": "silent", "engine": "postgres", "host": "127.0.0.1", "port": silent_port,
                     "database": "x", "username": "u", "tls_mode": "disable"}),
        )
        .await;
    let result = test_connection(&app, t["id"].as_str().unwrap()).await;
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 5000 ms"),
        "{result}"
    );
    assert!(result["latency_ms"].as_u64().unwrap() >= 5000);
    drop(silent);

    let rows = app.audit_rows("target.tested").await;
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter()
            .all(|(_, d)| d["ok"] == false && d["error"].is_string())
    );
    assert_eq!(app.count("SELECT count(*) FROM audit_log WHERE details::text LIKE '%Wr0ng%' OR details::text LIKE '%pw-closed%'").await, 0);
}

// Target state ---------------------------------------------------------------------------------

#[tokio::test]
async fn target_state_shows_applied_versions_dirty_flag_and_live_drift() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = shop(&app).await;
    let state_path = format!("/api/v1/targets/{target}/state");

    // Before any run: nothing applied, nothing on the target, in sync.
    let (status, state) = app.get(&state_path, &app.user).await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["target_id"], target.as_str());
    assert_eq!(state["applied"], json!([]));
    assert_eq!(state["dirty"], Value::Null);
    assert_eq!(
        state["drift"],
        json!({"checked": true, "in_sync": true, "differences": [], "error": null})
    );

    // A real run through a worker.
    let fleet = Fleet::start_with(&app, 2);
    let run = queued_run(&app, &slug, &set).await;
    assert_eq!(app.wait_until_final(&run).await["state"], "succeeded");
    fleet.stop().await;

    let (_, state) = app.get(&state_path, &app.user).await;
    let applied = &state["applied"][0];
    assert_eq!(applied["version"], "1");
    assert_eq!(applied["run_id"], run.as_str());
    assert_eq!(applied["checksum"].as_str().unwrap().len(), 64);
    assert!(applied["applied_at"].is_string() && applied["duration_ms"].is_number());
    assert_eq!(state["drift"]["in_sync"], true, "{state}");

    // Someone edits the target's history behind the hub's back.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("UPDATE migrate_hub_history SET checksum = 'edited' WHERE version = '1'")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO migrate_hub_history (version, checksum) VALUES ('2', 'foreign')")
        .execute(&mut conn)
        .await
        .unwrap();
    let (_, state) = app.get(&state_path, &app.user).await;
    assert_eq!(state["drift"]["checked"], true);
    assert_eq!(state["drift"]["in_sync"], false);
    assert_eq!(
        state["drift"]["differences"],
        json!([
            {"version": "1", "hub_checksum": applied["checksum"], "target_checksum": "edited"},
            {"version": "2", "hub_checksum": null, "target_checksum": "foreign"},
        ])
    );

    // A script that stopped part-way leaves the target dirty.
    sqlx::query(
        "INSERT INTO target_dirty_states (target_id, run_id, version, direction, statement_index, statements_hash, error)
         VALUES ($1::uuid, $2::uuid, '1', 'up', 3, 'h', 'ERROR 1050: table exists')",
    )
    .bind(&target)
    .bind(&run)
    .execute(&app.pool)
    .await
    .unwrap();
    let (_, state) = app.get(&state_path, &app.user).await;
    assert_eq!(state["dirty"]["version"], "1");
    assert_eq!(state["dirty"]["statement_index"], 3);
    assert_eq!(state["dirty"]["error"], "ERROR 1050: table exists");
    assert_eq!(state["dirty"]["run_id"], run.as_str());
    assert!(state["dirty"]["since"].is_string());

    // An unreachable target: the hub's side still shows, drift is unknown.
    let (_closed, port) = closed_port();
    sqlx::query("UPDATE targets SET port = $2 WHERE id = $1::uuid")
        .bind(&target)
        .bind(i32::from(port))
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, state) = app.get(&state_path, &app.user).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["applied"].as_array().unwrap().len(), 1);
    assert_eq!(state["drift"]["checked"], false);
    assert_eq!(state["drift"]["in_sync"], Value::Null);
    assert!(
        state["drift"]["error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{state}"
    );
    let (status, _) = app
        .get(
            &format!("/api/v1/targets/{}/state", Uuid::new_v4()),
            &app.user,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn mariadb_target_state_reads_its_history_table() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let maria = TestMysqlDatabase::create("mh_test_inv").await;
    let target = app.mysql_target(&slug, &set, "maria", &maria).await;
    let path = format!("/api/v1/targets/{target}/state");

    let (_, state) = app.get(&path, &app.user).await;
    assert_eq!(
        state["drift"],
        json!({"checked": true, "in_sync": true, "differences": [], "error": null})
    );

    maria
        .run("CREATE TABLE migrate_hub_history (version VARCHAR(64) PRIMARY KEY, checksum CHAR(64) NOT NULL)")
        .await;
    maria
        .run("INSERT INTO migrate_hub_history VALUES ('7', 'abc')")
        .await;
    let (_, state) = app.get(&path, &app.user).await;
    assert_eq!(state["drift"]["in_sync"], false, "{state}");
    assert_eq!(
        state["drift"]["differences"],
        json!([{"version": "7", "hub_checksum": null, "target_checksum": "abc"}])
    );
}

// Secrets ------------------------------------------------------------------------------------

#[tokio::test]
async fn passwords_never_reach_responses_logs_or_the_audit_log() {
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .init();
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let maria = TestMysqlDatabase::create("mh_test_inv").await;
    let secrets = [
        maria.password.clone(),
        "Bulk-S3cret".to_owned(),
        "Patch-S3cret".to_owned(),
    ];

    let mut responses = Vec::new();
    let one = app.mysql_target(&slug, &set, "maria", &maria).await;
    let (_, body) = app
        .post(&format!("/api/v1/projects/{slug}/db-sets/{set}/targets/bulk"), &app.manager,
              json!({"lines": "127.0.0.1:1/a\n127.0.0.1:1/b", "defaults": {"engine": "mysql", "username": "u", "password": secrets[1]}}))
        .await;
    responses.push(body.clone());
    let two = body["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, body) = app
        .patch(
            &format!("/api/v1/targets/{two}"),
            &app.manager,
            json!({"password": secrets[2]}),
        )
        .await;
    responses.push(body);
    for path in [
        format!("/api/v1/targets/{one}"),
        format!("/api/v1/targets/{one}/state"),
        format!("/api/v1/projects/{slug}/db-sets/{set}"),
        format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
        "/api/v1/audit".to_owned(),
    ] {
        responses.push(app.get(&path, &app.admin).await.1);
    }
    responses.push(test_connection(&app, &one).await);
    responses.push(test_connection(&app, &two).await);
    assert_eq!(responses[responses.len() - 2]["ok"], true);

    let audit: Vec<String> = sqlx::query_scalar("SELECT details::text FROM audit_log")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let logs = logs.text();
    assert!(logs.contains("connection test"), "logs are captured");
    for secret in &secrets {
        for response in &responses {
            assert!(
                !response.to_string().contains(secret.as_str()),
                "response holds a password: {response}"
            );
        }
        assert!(
            !audit.iter().any(|d| d.contains(secret.as_str())),
            "an audit row holds a password"
        );
        assert!(
            !logs.contains(secret.as_str()),
            "a log line holds a password"
        );
    }

    // A ciphertext opens for its own target only.
    let (one, two): (Uuid, Uuid) = (one.parse().unwrap(), two.parse().unwrap());
    let mut conn = app.pool.acquire().await.unwrap();
    let sealed = common::store::inventory::target_secret(&mut conn, one)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        app.keys.open(one.as_bytes(), &sealed).unwrap(),
        maria.password.as_bytes()
    );
    assert!(app.keys.open(two.as_bytes(), &sealed).is_err());
}
