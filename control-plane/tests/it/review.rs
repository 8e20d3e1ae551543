//! The SQL review of runs through the API and the pages: findings stored
//! with the run, `review_failed` until each error is waived, admin waivers
//! in the digest, risk-based approvals, policy changes that re-review
//! waiting runs, and `POST /api/v1/lint`.

use crate::support::{TestApp, TokenBrowser, code};
use common::testing::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A project with one PostgreSQL target in `env`: (slug, DB set id, the
/// target's database).
async fn project_in(app: &TestApp, env: &str) -> (String, String, TestDatabase) {
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, &format!("orders-{env}"), env).await;
    let db = TestDatabase::create("mh_test_review").await;
    app.pg_target(&slug, &set, "t1", &db).await;
    (slug, set, db)
}

async fn request(app: &TestApp, slug: &str, set: &str, version: &str) -> Value {
    let (status, run) = app
        .request_run_as(&app.user, slug, set, "up", version)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{run}");
    run
}

/// Every finding of the run's review as (code, severity, waived).
fn findings(run: &Value) -> Vec<(String, String, bool)> {
    run["review"]["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["findings"].as_array().unwrap().iter())
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_owned(),
                f["severity"].as_str().unwrap().to_owned(),
                !f["waived"].is_null(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_error_finding_blocks_approval_until_an_admin_waives_it() {
    let app = TestApp::spawn().await;
    sqlx::query("UPDATE environments SET require_previous_success = false WHERE name = 'prd'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (slug, set, _db) = project_in(&app, "prd").await;
    app.migration(
        &slug,
        "1",
        "SELECT 1;\nCREATE INDEX legacy_a ON legacy (a);",
        "",
    )
    .await;
    let run = request(&app, &slug, &set, "1").await;
    let id = run["id"].as_str().unwrap();
    // On prd a locking rule is an error.
    assert_eq!(
        findings(&run),
        [("index-not-concurrent".into(), "error".into(), false)]
    );
    assert_eq!(run["risk"], "high");
    assert_eq!(run["blocking_findings"], 1);
    assert_eq!(run["review"]["scripts"][0]["findings"][0]["line"], 2);

    let (status, err) = app.approve_as(id, &app.manager).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "review_failed")
    );
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("index-not-concurrent") && message.contains("line 2"),
        "{message}"
    );

    // Only admins waive, and only findings the review has.
    let waiver = json!({"version": "1", "code": "index-not-concurrent", "line": 2,
                        "reason": "legacy holds 40 rows; the lock is brief"});
    let path = format!("/api/v1/runs/{id}/waivers");
    let (status, _) = app.post(&path, &app.manager, waiver.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, err) = app
        .post(
            &path,
            &app.admin,
            json!({"version": "1", "code": "drop-table", "line": 2, "reason": "x"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
    );
    let (status, err) = app
        .post(
            &path,
            &app.admin,
            json!({"version": "1", "code": "index-not-concurrent", "line": 2, "reason": "  "}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");

    let (status, waived) = app.post(&path, &app.admin, waiver.clone()).await;
    assert_eq!(status, StatusCode::OK, "{waived}");
    assert_eq!(waived["blocking_findings"], 0);
    assert_eq!(waived["risk"], "high", "a waiver does not make a run safe");
    assert_ne!(waived["digest"], run["digest"], "the waiver is pinned");
    let item = &waived["review"]["scripts"][0]["findings"][0];
    assert_eq!(item["waived"]["by"], "admin");
    assert_eq!(
        item["waived"]["reason"],
        "legacy holds 40 rows; the lock is brief"
    );
    let (status, err) = app.post(&path, &app.admin, waiver).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "already_waived")
    );
    let audit = app.audit_rows("run.finding_waived").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(
        audit[0].1["reason"],
        "legacy holds 40 rows; the lock is brief"
    );
    assert_eq!(audit[0].1["previous_digest"], run["digest"]);
    assert_eq!(audit[0].1["digest"], waived["digest"]);

    // prd needs two approvals, and now gets them.
    let (status, body) = app.approve_as(id, &app.manager).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("pending_approval"))
    );
    let (status, body) = app.approve_as(id, &app.manager2).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{body}"
    );
}

#[tokio::test]
async fn a_waiver_discards_the_approvals_given_before_it() {
    let app = TestApp::spawn().await;
    sqlx::query("UPDATE environments SET require_previous_success = false WHERE name = 'prd'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (slug, set, _db) = project_in(&app, "prd").await;
    // Two findings: the first waived in the script, the second not yet.
    let up =
        "-- migrate-hub:allow drop-table archived in 2025\nDROP TABLE old_a;\nDROP TABLE old_b;";
    app.migration(&slug, "1", up, "").await;
    let run = request(&app, &slug, &set, "1").await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(
        findings(&run),
        [
            ("drop-table".into(), "error".into(), true),
            ("drop-table".into(), "error".into(), false)
        ]
    );
    let (status, waived) = app
        .post(
            &format!("/api/v1/runs/{id}/waivers"),
            &app.admin,
            json!({"version": "1", "code": "drop-table", "line": 3, "reason": "archived too"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{waived}");
    app.approve_as(id, &app.manager).await;
    let (_, body) = app.approve_as(id, &app.manager2).await;
    assert_eq!(body["state"], "approved", "{body}");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM approvals WHERE run_id = '{id}' AND role = 'manager'"
        ))
        .await,
        2
    );
}

#[tokio::test]
async fn a_high_risk_run_needs_the_approvals_and_the_admin_its_environment_asks_for() {
    let app = TestApp::spawn().await;
    let (status, env) = app
        .patch(
            "/api/v1/environments/daily",
            &app.admin,
            json!({"high_risk_approvals": 3, "high_risk_requires_admin": true,
                   "review_policy": {"settings": {"drop-table": "error"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{env}");
    assert_eq!(env["review_policy"]["settings"]["drop-table"], "error");
    let (slug, set, _db) = project_in(&app, "daily").await;
    app.migration(&slug, "1", "CREATE TABLE fine (id int PRIMARY KEY);", "")
        .await;
    let up = "-- migrate-hub:allow drop-table replaced by the orders table\nDROP TABLE legacy;";
    app.migration(&slug, "2", up, "").await;

    // A low-risk run needs what the environment always asks for.
    let low = request(&app, &slug, &set, "1").await;
    assert_eq!(
        (
            &low["risk"],
            &low["required_approvals"],
            &low["approver_roles"]
        ),
        (&json!("low"), &json!(1), &json!(["manager", "admin"]))
    );
    app.approve(low["id"].as_str().unwrap()).await;

    let run = request(&app, &slug, &set, "2").await;
    let id = run["id"].as_str().unwrap();
    assert_eq!(
        (
            &run["risk"],
            &run["required_approvals"],
            &run["approver_roles"]
        ),
        (&json!("high"), &json!(3), &json!(["admin"]))
    );
    assert_eq!(run["blocking_findings"], 0, "the directive waived it");
    for token in [&app.manager, &app.manager2] {
        let (status, body) = app.approve_as(id, token).await;
        assert_eq!(
            (status, body["state"].as_str()),
            (StatusCode::OK, Some("pending_approval"))
        );
    }
    // The third approval must be an admin's; it is.
    let (status, body) = app.approve_as(id, &app.admin).await;
    assert_eq!(
        (status, body["state"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{body}"
    );
    let approved = app.audit_rows("run.approved").await;
    let last = &approved.last().unwrap().1;
    assert_eq!(
        (&last["required"], &last["risk"]),
        (&json!(3), &json!("high"))
    );
}

#[tokio::test]
async fn a_new_review_policy_invalidates_only_the_waiting_runs_whose_review_changed() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set_a = app.db_set(&slug, "a", "daily").await;
    let set_b = app.db_set(&slug, "b", "daily").await;
    let (db_a, db_b) = (
        TestDatabase::create("mh_test_review").await,
        TestDatabase::create("mh_test_review").await,
    );
    app.pg_target(&slug, &set_a, "a1", &db_a).await;
    app.pg_target(&slug, &set_b, "b1", &db_b).await;
    app.migration(&slug, "1", "CREATE TABLE b (id int PRIMARY KEY);", "")
        .await;
    app.migration(&slug, "2", "CREATE INDEX legacy_a ON legacy (a);", "")
        .await;
    let clean = request(&app, &slug, &set_b, "1").await;
    let indexed = request(&app, &slug, &set_a, "2").await;
    assert_eq!(
        findings(&indexed),
        [("index-not-concurrent".into(), "warning".into(), false)]
    );
    assert_eq!(indexed["risk"], "medium");

    // An analyzer the hub does not have is refused, naming the field.
    let (status, err) = app
        .patch(
            "/api/v1/environments/daily",
            &app.admin,
            json!({"review_policy": {"settings": {"index-not-concurent": "error"}}}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("review_policy"),
        "{err}"
    );

    let (status, _) = app
        .patch(
            "/api/v1/environments/daily",
            &app.admin,
            json!({"review_policy": {"settings": {"index-not-concurrent": "error"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let get = |id: &Value| format!("/api/v1/runs/{}", id.as_str().unwrap());
    let (_, indexed) = app.get(&get(&indexed["id"]), &app.user).await;
    assert_eq!(indexed["state"], "invalidated");
    assert!(
        indexed["state_reason"]
            .as_str()
            .unwrap()
            .contains("review policy"),
        "{indexed}"
    );
    let (_, clean) = app.get(&get(&clean["id"]), &app.user).await;
    assert_eq!(
        clean["state"], "pending_approval",
        "its review did not change"
    );
    let audit = app.audit_rows("run.invalidated").await;
    assert_eq!(audit.len(), 1);

    // A new run is reviewed under the new policy.
    let again = request(&app, &slug, &set_a, "2").await;
    assert_eq!(
        findings(&again),
        [("index-not-concurrent".into(), "error".into(), false)]
    );
}

#[tokio::test]
async fn down_absent_is_reported_where_the_environment_wants_rollbacks() {
    let app = TestApp::spawn().await;
    let (status, _) = app
        .patch(
            "/api/v1/environments/daily",
            &app.admin,
            json!({"review_policy": {"settings": {}, "require_down": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (slug, set, _db) = project_in(&app, "daily").await;
    app.migration(&slug, "1", "CREATE TABLE a (id int PRIMARY KEY);", "")
        .await;
    app.migration(
        &slug,
        "2",
        "CREATE TABLE b (id int PRIMARY KEY);",
        "DROP TABLE b;",
    )
    .await;
    let run = request(&app, &slug, &set, "2").await;
    assert_eq!(
        findings(&run),
        [("down-absent".into(), "error".into(), false)]
    );
    assert_eq!(run["review"]["scripts"][0]["version"], "1");
    let (status, err) = app
        .approve_as(run["id"].as_str().unwrap(), &app.manager)
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "review_failed")
    );
}

#[tokio::test]
async fn lint_over_http_rates_by_the_named_environment() {
    let app = TestApp::spawn().await;
    let sql = "CREATE INDEX i ON t (a);\n-- migrate-hub:allow drop-table moved to the archive\nDROP TABLE old;";
    let (status, body) = app
        .post(
            "/api/v1/lint",
            &app.user,
            json!({"engine": "postgres", "sql": sql}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codes: Vec<(&str, &str, bool)> = body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["code"].as_str().unwrap(),
                f["severity"].as_str().unwrap(),
                !f["waived"].is_null(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("index-not-concurrent", "warning", false),
            ("drop-table", "error", true)
        ]
    );
    assert_eq!(
        (body["blocking"].as_u64(), body["risk"].as_str()),
        (Some(0), Some("high"))
    );

    let (status, body) = app
        .post(
            "/api/v1/lint",
            &app.user,
            json!({"engine": "postgres", "sql": sql, "environment": "prd"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["findings"][0]["severity"], "error", "{body}");
    assert_eq!(body["blocking"], 1);

    let (status, body) = app
        .post(
            "/api/v1/lint",
            &app.user,
            json!({"engine": "mysql", "sql": "ALTER TABLE t MODIFY a bigint;"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mysql: Vec<&str> = body["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    assert!(mysql.contains(&"mysql-copy-alter"), "{body}");

    let (status, err) = app
        .post(
            "/api/v1/lint",
            &app.user,
            json!({"engine": "postgres", "sql": "SELECT 1;", "environment": "nowhere"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field")
    );
    let (status, _) = app
        .post(
            "/api/v1/lint",
            &app.user,
            json!({"engine": "oracle", "sql": "SELECT 1;"}),
        )
        .await;
    assert!(status.is_client_error());
}

#[tokio::test]
async fn the_run_page_shows_the_findings_at_their_lines_and_offers_waivers_to_admins_only() {
    let app = TestApp::spawn().await;
    sqlx::query("UPDATE environments SET require_previous_success = false WHERE name = 'prd'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (slug, set, _db) = project_in(&app, "prd").await;
    app.migration(&slug, "1", "SELECT 1;\nTRUNCATE audit_trail;", "")
        .await;
    let run = request(&app, &slug, &set, "1").await;
    let id = run["id"].as_str().unwrap();
    let (status, page) = app.page(&format!("/runs/{id}"), &app.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("SQL review"), "{page}");
    assert!(page.contains("class=\"has-finding\""));
    assert!(page.contains("TRUNCATE audit_trail;"));
    assert!(page.contains("<code>truncate</code>"));
    assert!(page.contains("risk-high"));
    assert!(page.contains(&format!("action=\"/runs/{id}/waivers\"")));
    assert!(
        !page.contains(&format!("action=\"/runs/{id}/approve\"")),
        "approval is not offered"
    );
    assert!(
        page.contains(&format!("action=\"/runs/{id}/deny\"")),
        "denial still is"
    );
    // The plan: what the run does on the target.
    assert!(page.contains("Will apply"));

    let (_, page) = app.page(&format!("/runs/{id}"), &app.manager).await;
    assert!(!page.contains(&format!("action=\"/runs/{id}/waivers\"")));
    assert!(page.contains("Approval is not offered"));

    // A manager's post of the waiver form is refused; an admin's is taken.
    let form = [
        ("version", "1"),
        ("code", "truncate"),
        ("line", "2"),
        ("reason", "the trail moved to the audit service"),
    ];
    let manager = TokenBrowser::new(&app, &app.manager);
    let refused = manager.post(&format!("/runs/{id}/waivers"), &form).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let admin = TokenBrowser::new(&app, &app.admin);
    let posted = admin.post(&format!("/runs/{id}/waivers"), &form).await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER, "{}", posted.body);
    assert_eq!(posted.location, format!("/runs/{id}"));
    let page = manager.get(&format!("/runs/{id}")).await.body;
    assert!(
        page.contains(&format!("action=\"/runs/{id}/approve\"")),
        "approval is offered now"
    );
    assert!(page.contains("the trail moved to the audit service"));
}

#[tokio::test]
async fn admins_set_an_environments_review_policy_on_its_page() {
    let app = TestApp::spawn().await;
    let admin = TokenBrowser::new(&app, &app.admin);
    let page = admin.get("/admin/environments").await.body;
    assert!(page.contains("action=\"/admin/environments/prd/review\""));
    assert!(page.contains("name=\"setting.index-not-concurrent\""));
    // prd's default for a locking rule is shown as an error.
    assert!(page.contains("default (error)"));

    let posted = admin
        .post(
            "/admin/environments/stg/review",
            &[
                ("setting.index-not-concurrent", "error"),
                ("setting.dml-without-where", "off"),
                ("setting.drop-table", "default"),
                ("require_down", "on"),
                ("high_risk_approvals", "2"),
                ("high_risk_requires_admin", "on"),
            ],
        )
        .await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER, "{}", posted.body);
    let (_, list) = app.get("/api/v1/environments", &app.user).await;
    let stg = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "stg")
        .unwrap()
        .clone();
    assert_eq!(
        stg["review_policy"],
        json!({"settings": {"index-not-concurrent": "error", "dml-without-where": "off"}, "require_down": true})
    );
    assert_eq!(
        (
            &stg["high_risk_approvals"],
            &stg["high_risk_requires_admin"]
        ),
        (&json!(2), &json!(true))
    );
    assert_eq!(app.audit_rows("environment.updated").await.len(), 1);

    // A value that is no setting is refused on the page, and nothing changes.
    let refused = admin
        .post(
            "/admin/environments/stg/review",
            &[("setting.truncate", "fatal")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused
            .body
            .contains("choose default, off, warning or error"),
        "{}",
        refused.body
    );
    let (_, list) = app.get("/api/v1/environments", &app.user).await;
    assert!(list.to_string().contains("dml-without-where"));

    // Managers see the policy but get no form.
    let manager = TokenBrowser::new(&app, &app.manager);
    let page = manager.get("/admin/environments").await.body;
    assert!(!page.contains("action=\"/admin/environments/stg/review\""));
    let refused = manager
        .post(
            "/admin/environments/stg/review",
            &[("setting.truncate", "off")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}
