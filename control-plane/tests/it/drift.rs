//! Schema drift as people see it: the API and pages of a drifted target,
//! its DB set and a run waiting for approval; the metric; the admin's
//! acceptance (roles, reason, audit); the environment's `on_drift` policy.
//! Drift is found by a real scan (the workers' own code) of a real target
//! changed by hand.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::support::{TestApp, TokenBrowser, code};
use common::{lifecycle::schema_drift::Scanned, store::audit::Actor, testing::TestDatabase};
use worker::scan::Scanner;

fn scanner(app: &TestApp) -> Scanner {
    Scanner {
        db: app.pool.clone(),
        keys: app.keys.clone(),
        pool: "default".into(),
        actor: Actor::system("worker:test"),
        lock_wait: Duration::from_secs(2),
        every: Duration::from_secs(3600),
    }
}

#[tokio::test]
async fn a_drifted_target_is_shown_to_everyone_and_only_an_admin_accepts_it() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = TestDatabase::create("mh_test_drift").await;
    let target = app.pg_target(&slug, &set, "shard-1", &db).await;
    let target_id: Uuid = target.parse().unwrap();
    app.migration(&slug, "1", "CREATE TABLE accounts (id int);", "")
        .await;
    app.migration(&slug, "2", "CREATE INDEX accounts_id ON accounts (id);", "")
        .await;
    assert_eq!(app.run_up(&slug, &set, "1").await["state"], "succeeded");

    let path = format!("/api/v1/targets/{target}/drift");
    let (status, body) = app.get(&path, &app.user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["drifted"].clone(), body["on_drift"].clone()),
        (json!(false), json!("warn"))
    );
    assert!(body["scanned_at"].is_null());
    assert_eq!(
        scanner(&app).scan(target_id).await.unwrap(),
        Scanned::Judged(common::domain::schema_drift::Verdict::InSync)
    );
    let (_, body) = app.get(&path, &app.user).await;
    assert_eq!(body["drifted"], false);
    assert!(body["scanned_at"].is_string(), "{body}");

    // Someone adds a column by hand; the next scan finds it.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE accounts ADD COLUMN \"<script>x</script>\" text")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(matches!(
        scanner(&app).scan(target_id).await.unwrap(),
        Scanned::Judged(common::domain::schema_drift::Verdict::Drifted { first: true })
    ));
    let (_, body) = app.get(&path, &app.user).await;
    assert_eq!(body["drifted"], true, "{body}");
    assert_eq!(body["diff"]["changed"][0], "table public.accounts");
    assert!(
        body["diff"]["unified"]
            .as_str()
            .unwrap()
            .contains("+  column \"<script>x</script>\" text"),
        "{body}"
    );
    assert!(body["drift"]["detected_at"].is_string());

    // The metric counts it under its environment.
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("migrate_hub_targets_drifted{environment=\"daily\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("migrate_hub_targets_drifted{environment=\"prd\"} 0"));

    // Pages: the target's schema page (escaped; the form for admins only),
    // the target page, the DB set page.
    let user = TokenBrowser::new(&app, &app.user);
    let page = user.get(&format!("/targets/{target}/schema")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("<strong>Drifted</strong>"),
        "{}",
        page.body
    );
    crate::support::assert_escaped(&page.body, "<script>x</script>", "the drift diff");
    assert!(!page.body.contains("/drift/accept"), "users cannot accept");
    let admin = TokenBrowser::new(&app, &app.admin);
    let page = admin.get(&format!("/targets/{target}/schema")).await;
    assert!(
        page.body
            .contains(&format!("action=\"/targets/{target}/drift/accept\""))
    );
    let page = user.get(&format!("/targets/{target}")).await;
    assert!(page.body.contains(">drifted</span>"), "{}", page.body);
    let page = user.get(&format!("/projects/{slug}/db-sets/{set}")).await;
    assert!(
        page.body
            .contains("<strong>Schema drift</strong> on 1 target"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(&format!("/targets/{target}/schema#drift"))
    );
    let (_, fleet) = app
        .get(
            &format!("/api/v1/projects/{slug}/db-sets/{set}/schema"),
            &app.user,
        )
        .await;
    assert_eq!(fleet["drifted"][0]["name"], "shard-1", "{fleet}");

    // A run requested now shows the drift to its approvers.
    let run = app.request_run(&slug, &set, "2").await;
    let (_, body) = app.get(&format!("/api/v1/runs/{run}"), &app.manager).await;
    assert_eq!(body["drifted_targets"][0]["name"], "shard-1", "{body}");
    assert_eq!(body["drifted_targets"][0]["on_drift"], "warn");
    let page = TokenBrowser::new(&app, &app.manager)
        .get(&format!("/runs/{run}"))
        .await;
    assert!(
        page.body
            .contains("<strong>Schema drift</strong> on 1 target"),
        "{}",
        page.body
    );

    // Only admins accept, with a reason.
    let accept = format!("/api/v1/targets/{target}/drift/accept");
    let (status, _) = app
        .post(&accept, &app.manager, json!({ "reason": "fine" }))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .post(&accept, &app.admin, json!({ "reason": "  " }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "reason", "{body}");
    assert_eq!(
        app.get(&path, &app.user).await.1["drifted"],
        true,
        "nothing changed"
    );
    let (status, body) = app
        .post(
            &accept,
            &app.admin,
            json!({ "reason": "hotfix column, kept" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["baseline_snapshot_id"].is_string());
    let (_, now) = app.get(&path, &app.user).await;
    assert_eq!(now["drifted"], false, "{now}");
    let rows = app.audit_rows("target.drift_accepted").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1["reason"], "hotfix column, kept");
    let (status, body) = app
        .post(&accept, &app.admin, json!({ "reason": "again" }))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&body), "not_drifted");
    // The accepted schema is the baseline: the next scan finds no drift.
    assert_eq!(
        scanner(&app).scan(target_id).await.unwrap(),
        Scanned::Judged(common::domain::schema_drift::Verdict::InSync)
    );
    let (status, _) = app
        .post(
            &format!("/api/v1/targets/{}/drift/accept", Uuid::new_v4()),
            &app.admin,
            json!({ "reason": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_environment_policy_and_the_webhook_event_are_configurable() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .patch(
            "/api/v1/environments/daily",
            &app.admin,
            json!({ "on_drift": "sometimes" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "on_drift");
    let (status, body) = app
        .patch(
            "/api/v1/environments/daily",
            &app.admin,
            json!({ "on_drift": "block" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["on_drift"], "block");
    assert_eq!(app.environment("daily").await["on_drift"], "block");
    let page = TokenBrowser::new(&app, &app.admin)
        .get("/admin/environments")
        .await;
    assert!(
        page.body.contains("blocks the drifted target's runs"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<option value=\"block\" selected>"));

    let slug = app.project("shop").await;
    let (status, body) = app
        .post(
            &format!("/api/v1/projects/{slug}/webhooks"),
            &app.manager,
            json!({ "url": "https://hooks.example.com/x", "events": ["target.drifted"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["events"], json!(["target.drifted"]));
    let (status, _) = app
        .call(Method::GET, "/api/v1/environments", Some(&app.user), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}
