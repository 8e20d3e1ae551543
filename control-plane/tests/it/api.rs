//! The JSON API against a real tool database: authentication, roles, bad
//! input, inventory and migrations.

use crate::support::{self, Replica, TestApp, TokenBrowser, code, versions};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::spawn().await;
    let (status, _) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["database"], "ok");
}

#[tokio::test]
async fn me_requires_a_valid_token() {
    let app = TestApp::spawn().await;
    let (status, body) = app.call(Method::GET, "/api/v1/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "unauthenticated");

    let (status, _) = app.get("/api/v1/me", "mh_not-a-real-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = app.get("/api/v1/me", &app.manager).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["email"], support::MANAGER);
    assert_eq!(body["role"], "manager");
}

#[tokio::test]
async fn revoked_tokens_and_disabled_users_stop_working_at_once() {
    let app = TestApp::spawn().await;
    let (status, created) = app
        .post("/api/v1/tokens", &app.user, json!({"name": "ci"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    assert_eq!(app.get("/api/v1/me", &token).await.0, StatusCode::OK);

    // The listing never shows the secret again.
    let (_, list) = app.get("/api/v1/tokens", &app.user).await;
    assert!(!list.to_string().contains(&token));

    let id = created["id"].as_str().unwrap();
    let (status, _) = app.delete(&format!("/api/v1/tokens/{id}"), &app.user).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/me", &token).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Disable the user: their other token stops working too.
    let (_, me) = app.get("/api/v1/me", &app.user).await;
    let user_id = me["id"].as_str().unwrap();
    let (status, body) = app
        .patch(
            &format!("/api/v1/users/{user_id}"),
            &app.admin,
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.get("/api/v1/me", &app.user).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_tokens_use_is_recorded_and_audited_once_per_five_minutes() {
    // Every request reads the token afresh, so only the rule is tested.
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_READ_MAX_AGE_MS", "0".into());
    })
    .await;
    let (_, created) = app
        .post("/api/v1/tokens", &app.user, json!({"name": "ci"}))
        .await;
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let entity_uses = || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE action = 'token.used' AND object_id = $1",
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        n
    };
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/me", &token).await.0, StatusCode::OK);
    }
    assert_eq!(entity_uses().await, 1, "three uses, one record");
    let last_used: Option<time::OffsetDateTime> =
        sqlx::query_scalar("SELECT last_used_at FROM api_tokens WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(last_used.is_some());

    // Five minutes later the next use is recorded again.
    sqlx::query(
        "UPDATE api_tokens SET last_used_at = now() - interval '6 minutes' WHERE id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(app.get("/api/v1/me", &token).await.0, StatusCode::OK);
    assert_eq!(app.get("/api/v1/me", &token).await.0, StatusCode::OK);
    assert_eq!(entity_uses().await, 2);
}

#[tokio::test]
async fn tokens_carry_at_most_their_owners_role() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post(
            "/api/v1/tokens",
            &app.user,
            json!({"name": "x", "role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "role_too_high");
    // Asking for more than one's role is a refusal like any other: audited
    // with the route as requested.
    let denied: Vec<(String, String, Value)> = sqlx::query_as(
        "SELECT actor, object_id, details FROM audit_log WHERE action = 'access.denied'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0].0, support::USER);
    assert_eq!(denied[0].1, "POST /api/v1/tokens");
    assert_eq!(denied[0].2["code"], "role_too_high");
    let tokens = app
        .count("SELECT count(*) FROM api_tokens WHERE name = 'x'")
        .await;
    assert_eq!(tokens, 0);

    // A manager's user-scoped token acts as a user.
    let (_, created) = app
        .post(
            "/api/v1/tokens",
            &app.manager,
            json!({"name": "ro", "role": "user"}),
        )
        .await;
    let scoped = created["token"].as_str().unwrap();
    let (_, me) = app.get("/api/v1/me", scoped).await;
    assert_eq!(me["role"], "user");
    let (status, _) = app
        .post(
            "/api/v1/projects/x/db-sets",
            scoped,
            json!({"name": "a", "environment": "daily"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn denied_access_is_403_and_audited() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .post(
            "/api/v1/projects",
            &app.user,
            json!({"slug": "shop", "name": "Shop"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(code(&body), "forbidden");
    let denied = app.audit_rows("access.denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0].0, support::USER);
    // Nothing was written.
    let (_, list) = app.get("/api/v1/projects", &app.admin).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn project_bad_input_gets_clear_errors_and_writes_nothing() {
    let app = TestApp::spawn().await;
    for (body, status, field) in [
        (
            json!({"slug": "Bad Slug", "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "slug",
        ),
        (
            json!({"slug": "a", "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "slug",
        ),
        (
            json!({"slug": "okay", "name": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"slug": "okay"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
        ),
        (
            json!({"slug": 12, "name": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "slug",
        ),
    ] {
        let (got, err) = app.post("/api/v1/projects", &app.admin, body.clone()).await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(err["error"]["field"], field, "{body} -> {err}");
        assert_eq!(code(&err), "invalid_field");
    }
    let resp = app
        .client
        .post(app.url("/api/v1/projects"))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body("{\"slug\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(code(&body), "bad_request");

    let count = app.count("SELECT count(*) FROM projects").await;
    assert_eq!(count, 0);

    app.project("shop").await;
    let (status, body) = app
        .post(
            "/api/v1/projects",
            &app.admin,
            json!({"slug": "shop", "name": "Again"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&body), "duplicate_slug");
    assert_eq!(
        app.get("/api/v1/projects/nope", &app.user).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn target_passwords_are_sealed_and_never_returned() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let secret = "hunter2-very-secret";
    let (status, target) = app
        .post(
            &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
            &app.manager,
            json!({"name": "shard-1", "engine": "postgres", "host": "127.0.0.1", "port": 5432,
                   "database": "orders_1", "username": "app", "password": secret, "tls_mode": "disable"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{target}");
    assert!(!target.to_string().contains(secret));
    assert_eq!(target["has_password"], true);
    let id = target["id"].as_str().unwrap();

    for path in [
        format!("/api/v1/targets/{id}"),
        format!("/api/v1/projects/{slug}/db-sets/{set}"),
        format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
        "/api/v1/audit?limit=500".to_string(),
    ] {
        let (status, body) = app.get(&path, &app.admin).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            !body.to_string().contains(secret),
            "{path} leaks the password"
        );
    }
    let audit: Vec<String> = sqlx::query_scalar("SELECT details::text FROM audit_log")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(audit.iter().all(|d| !d.contains(secret)));

    // Stored sealed: it opens for its own target only.
    let target_id: uuid::Uuid = id.parse().unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let sealed = common::store::inventory::target_secret(&mut conn, target_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&sealed.ciphertext).contains(secret));
    assert_eq!(
        app.keys.open(target_id.as_bytes(), &sealed).unwrap(),
        secret.as_bytes()
    );
    assert!(
        app.keys
            .open(uuid::Uuid::new_v4().as_bytes(), &sealed)
            .is_err()
    );
}

#[tokio::test]
async fn target_bad_input() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let base = json!({"name": "t", "engine": "postgres", "host": "db", "port": 5432, "database": "d", "username": "u"});
    for (patch, field) in [
        (json!({"engine": "oracle"}), "engine"),
        (json!({"port": 70000}), "port"),
        (json!({"port": 0}), "port"),
        (json!({"tls_mode": "sometimes"}), "tls_mode"),
        (json!({"host": ""}), "host"),
        (json!({"worker_pool": "Bad Pool"}), "worker_pool"),
    ] {
        let mut body = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, err) = app
            .post(
                &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
                &app.manager,
                body,
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{patch} -> {err}");
        assert_eq!(err["error"]["field"], field);
    }
    let (status, err) = app
        .post(
            &format!("/api/v1/projects/{slug}/db-sets"),
            &app.manager,
            json!({"name": "x", "environment": "qa"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["error"]["field"], "environment");
    let count = app.count("SELECT count(*) FROM targets").await;
    assert_eq!(count, 0);
    // Users may not manage targets.
    let (status, _) = app
        .post(
            &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
            &app.user,
            base,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn migrations_are_ordered_numerically_with_normalised_checksums() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let m10 = app.migration(&slug, "10", "SELECT 10;\r\n", "").await;
    app.migration(&slug, "2", "SELECT 2;", "").await;
    app.migration(&slug, "1.1", "SELECT 11;", "").await;
    assert_eq!(
        m10["checksum"],
        common::domain::Checksum::of("SELECT 10;\n", None).as_str()
    );
    assert_eq!(m10["author"], support::USER);
    assert_eq!(m10["revision"], 1);
    assert_eq!(m10["applied_anywhere"], false);

    let (_, list) = app
        .get(&format!("/api/v1/projects/{slug}/migrations"), &app.user)
        .await;
    assert_eq!(versions(&list["items"]), ["1.1", "2", "10"]);

    // Paging follows version order.
    let (_, page) = app
        .get(
            &format!("/api/v1/projects/{slug}/migrations?limit=2"),
            &app.user,
        )
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .get(
            &format!("/api/v1/projects/{slug}/migrations?limit=2&cursor={cursor}"),
            &app.user,
        )
        .await;
    assert_eq!(page2["items"][0]["version"], "10");
    assert!(page2["next_cursor"].is_null());

    let (status, one) = app
        .get(
            &format!("/api/v1/projects/{slug}/migrations/1.1"),
            &app.user,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["up_sql"], "SELECT 11;");
}

#[tokio::test]
async fn migration_bad_input() {
    let app = TestApp::spawn_with(|env, _| {
        env.insert("MH_MAX_SQL_BYTES", "1000".into());
    })
    .await;
    let slug = app.project("shop").await;
    app.migration(&slug, "1", "SELECT 1;", "").await;
    let path = format!("/api/v1/projects/{slug}/migrations");
    for (body, status, code_or_field) in [
        (
            json!({"version": "1", "name": "dup", "up_sql": "SELECT 2;"}),
            StatusCode::CONFLICT,
            "duplicate_version",
        ),
        (
            json!({"version": "01", "name": "dup", "up_sql": "SELECT 2;"}),
            StatusCode::CONFLICT,
            "duplicate_version",
        ),
        (
            json!({"version": "1.a", "name": "x", "up_sql": "SELECT 2;"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "version",
        ),
        (
            json!({"version": "", "name": "x", "up_sql": "SELECT 2;"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "version",
        ),
        (
            json!({"version": "3", "name": "x", "up_sql": "", "down_sql": "a\u{0000}"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "down_sql",
        ),
        (
            json!({"version": "3", "name": "x", "up_sql": "x".repeat(1001)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ] {
        let (got, err) = app.post(&path, &app.user, body.clone()).await;
        assert_eq!(got, status, "{err}");
        let found = if status == StatusCode::UNPROCESSABLE_ENTITY {
            &err["error"]["field"]
        } else {
            &err["error"]["code"]
        };
        assert_eq!(found, code_or_field, "{err}");
    }
    let count = app.count("SELECT count(*) FROM migrations").await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn audit_chain_verifies_and_detects_tampering() {
    let app = TestApp::spawn().await;
    app.project("shop").await;
    app.project("blog").await;
    let (status, result) = app.get("/api/v1/audit/verify", &app.manager).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(result["ok"], true, "{result}");
    assert!(result["rows_checked"].as_i64().unwrap() >= 10);
    // Users read only their own rows.
    let (_, mine) = app.get("/api/v1/audit", &app.user).await;
    assert!(
        mine["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["actor"] == support::USER)
    );
    assert_eq!(
        app.get("/api/v1/audit/verify", &app.user).await.0,
        StatusCode::FORBIDDEN
    );

    // Rewrite one row behind the application's back.
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET details = '{\"slug\": \"forged\"}' WHERE action = 'project.created' AND details->>'slug' = 'shop'")
        .execute(&app.pool)
        .await
        .unwrap();
    let seq: i64 =
        sqlx::query_scalar("SELECT seq FROM audit_log WHERE details->>'slug' = 'forged'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let (_, result) = app.get("/api/v1/audit/verify", &app.manager).await;
    assert_eq!(result["ok"], false);
    assert_eq!(result["first_broken_seq"], seq);
}

#[tokio::test]
async fn audit_rows_cannot_be_updated_or_deleted() {
    let app = TestApp::spawn().await;
    app.project("shop").await;
    assert!(
        sqlx::query("DELETE FROM audit_log")
            .execute(&app.pool)
            .await
            .is_err()
    );
    assert!(
        sqlx::query("UPDATE audit_log SET actor = 'x'")
            .execute(&app.pool)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn admins_export_the_audit_log_as_csv() {
    let app = TestApp::spawn().await;
    app.project("shop").await;
    let resp = app
        .client
        .get(app.url("/api/v1/audit/export.csv?action=project.created"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "seq,at,actor,action,object,project_id,details,ip,hash"
    );
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[1].contains("project.created") && lines[1].contains(support::ADMIN));
    assert_eq!(
        app.get("/api/v1/audit/export.csv", &app.manager).await.0,
        StatusCode::FORBIDDEN
    );
}

/// Rights taken away through one replica are refused by another on its next
/// request, although it shares token reads for ten seconds: the tool database
/// announces the change and every replica retires its shared reads.
#[tokio::test]
async fn a_token_revoked_or_a_user_disabled_on_one_replica_is_refused_by_another_at_once() {
    let app = TestApp::spawn().await;
    let (status, created) = app
        .post("/api/v1/tokens", &app.user, json!({"name": "ci"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let mut replica = Replica::start(&app).await;
    for _ in 0..2 {
        assert_eq!(replica.status("/api/v1/me", &token).await, StatusCode::OK);
        assert_eq!(
            replica.status("/api/v1/me", &app.user).await,
            StatusCode::OK
        );
    }
    let shared = replica
        .metric("migrate_hub_shared_read_requests_total")
        .await
        .unwrap();
    assert!(shared > 0.0, "the replica shares token reads");
    let heard = replica
        .metric("migrate_hub_changes_heard_total")
        .await
        .unwrap();

    let id = created["id"].as_str().unwrap();
    let (status, _) = app.delete(&format!("/api/v1/tokens/{id}"), &app.user).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let heard = replica.hears(heard).await;
    assert_eq!(
        replica.status("/api/v1/me", &token).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        replica.status("/api/v1/me", &app.user).await,
        StatusCode::OK
    );

    let (_, me) = app.get("/api/v1/me", &app.user).await;
    let (status, body) = app
        .patch(
            &format!("/api/v1/users/{}", me["id"].as_str().unwrap()),
            &app.admin,
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    replica.hears(heard).await;
    assert_eq!(
        replica.status("/api/v1/me", &app.user).await,
        StatusCode::UNAUTHORIZED
    );
    replica.child.kill().await.unwrap();
}

#[tokio::test]
async fn an_edit_audits_what_changed_even_when_the_checksum_did_not() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let path = format!("/api/v1/projects/{slug}/migrations/1");
    let (status, body) = app
        .patch(&path, &app.user, json!({"transactional": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .patch(&path, &app.user, json!({"name": "create a", "up_sql": "CREATE TABLE a (id bigint);", "transactional": false}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let updates = app.audit_rows("migration.updated").await;
    assert_eq!(updates.len(), 2);
    let first = &updates[0].1;
    assert_eq!(
        first["changed"],
        json!({"transactional": {"from": true, "to": false}}),
        "{first}"
    );
    assert_eq!(first["checksum"]["from"], first["checksum"]["to"]);
    let second = &updates[1].1["changed"];
    assert_eq!(second["name"], json!({"from": "m1", "to": "create a"}));
    assert_ne!(second["scripts"]["from"], second["scripts"]["to"]);
    assert!(second.get("transactional").is_none(), "{second}");

    // An edit that does not mention it keeps the chosen "no transaction".
    let (status, body) = app
        .patch(
            &path,
            &app.user,
            json!({"up_sql": "CREATE TABLE a (id bigint, b int);"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["transactional"], false);
}

#[tokio::test]
async fn admins_list_and_revoke_anyones_tokens() {
    let app = TestApp::spawn().await;
    let (_, ci) = app
        .post("/api/v1/tokens", &app.user, json!({"name": "ci"}))
        .await;
    let ci_token = ci["token"].as_str().unwrap().to_owned();
    let ci_id = ci["id"].as_str().unwrap().to_owned();
    let user_id = app.user_id(support::USER).await;
    let tokens_path = format!("/api/v1/users/{user_id}/tokens");

    // Only admins.
    for token in [&app.user, &app.manager] {
        let (status, _) = app.get(&tokens_path, token).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.delete(&format!("{tokens_path}/{ci_id}"), token).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    let (status, list) = app.get(&tokens_path, &app.admin).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the harness's token and ci: {list}");
    let text = list.to_string();
    assert!(
        !text.contains(&ci_token) && !text.contains("hash"),
        "{text}"
    );

    // Another user's id with this token's id names nothing.
    let admin_id = app.user_id(support::ADMIN).await;
    let (status, _) = app
        .delete(
            &format!("/api/v1/users/{admin_id}/tokens/{ci_id}"),
            &app.admin,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(app.get("/api/v1/me", &ci_token).await.0, StatusCode::OK);
    let (status, _) = app
        .delete(&format!("{tokens_path}/{ci_id}"), &app.admin)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/api/v1/me", &ci_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = app
        .delete(&format!("{tokens_path}/{ci_id}"), &app.admin)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "revoked already");
    let revoked = app.audit_rows("token.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].0, support::ADMIN);
    assert_eq!(revoked[0].1["owner_email"], support::USER);
    assert_eq!(revoked[0].1["by_admin"], true);

    // The admin users page lists every token and revokes through a form.
    let (_, page) = app.page("/admin/users", &app.admin).await;
    assert!(
        page.contains("API tokens") && page.contains(">ci<"),
        "{page}"
    );
    assert!(!page.contains(&ci_token));
    let (_, other) = app
        .post("/api/v1/tokens", &app.manager, json!({"name": "laptop"}))
        .await;
    let (other_token, other_id) = (
        other["token"].as_str().unwrap(),
        other["id"].as_str().unwrap(),
    );
    let manager_id = app.user_id(support::MANAGER).await;
    let action = format!("/admin/users/{manager_id}/tokens/{other_id}/revoke");
    assert!(
        page.contains("/admin/users/") && !page.contains(&action),
        "not on the old page"
    );
    let revoked = TokenBrowser::new(&app, &app.admin)
        .post(&action, &[("x", "")])
        .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/api/v1/me", other_token).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.audit_rows("token.revoked").await.len(), 2);
}
