//! The server-rendered pages for projects, migrations and runs: forms keep
//! input on errors, everything is escaped, actions follow the roles.

use crate::support::{Posted, TestApp, TokenBrowser, XSS, assert_escaped};
use reqwest::StatusCode;

#[tokio::test]
async fn migration_form_keeps_input_and_escapes_everything() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let user = TokenBrowser::new(&app, &app.user);

    let page = user.get(&format!("/projects/{slug}")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("New migration"));

    // A bad version re-renders the form with the input and the field's error.
    let Posted { status, body, .. } = user
        .post(
            &format!("/projects/{slug}/migrations"),
            &[
                ("version", "1.x"),
                ("name", "orders"),
                ("up_sql", "CREATE TABLE o (id int);"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.contains("value=\"1.x\"") && body.contains("CREATE TABLE o (id int);"),
        "input kept"
    );
    assert!(body.contains("field-error"), "the field's error is shown");

    let up = format!("CREATE TABLE t (note text DEFAULT '{XSS}');");
    let Posted {
        status, location, ..
    } = user
        .post(
            &format!("/projects/{slug}/migrations"),
            &[
                ("version", "1"),
                ("name", XSS),
                ("up_sql", &up),
                ("down_sql", ""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, format!("/projects/{slug}/migrations/1"));
    for path in [location.clone(), format!("/projects/{slug}")] {
        let page = user.get(&path).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_escaped(&page.body, XSS, &path);
    }
}

#[tokio::test]
async fn run_page_shows_actions_by_role_and_forms_drive_the_run() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = common::testing::TestDatabase::create("mh_test_target").await;
    app.pg_target(&slug, &set, "t1", &db).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;

    let user = TokenBrowser::new(&app, &app.user);
    let manager = TokenBrowser::new(&app, &app.manager);
    let Posted {
        status, location, ..
    } = user
        .post(
            &format!("/projects/{slug}/runs"),
            &[
                ("db_set_id", &set),
                ("direction", "up"),
                ("target_version", "1"),
                ("note", XSS),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(location.starts_with("/runs/"));

    let as_user = user.get(&location).await;
    assert!(
        !as_user.body.contains(">Approve</button>"),
        "users get no approve button"
    );
    assert_escaped(&as_user.body, XSS, "the run page");
    let as_manager = manager.get(&location).await;
    assert!(as_manager.body.contains(">Approve</button>"));

    // A user posting the approve form is refused with a page.
    let Posted { status, body, .. } = user
        .post(&format!("{location}/approve"), &[("comment", "")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("<html"));

    let Posted {
        status,
        location: back,
        ..
    } = manager
        .post(&format!("{location}/approve"), &[("comment", "ok")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(back, location);
    let page = user.get(&location).await;
    assert!(page.body.contains("state-approved") && page.body.contains(">Execute</button>"));

    let live = user.get(&format!("{location}/live")).await;
    assert_eq!(live.status, StatusCode::OK);
    assert!(live.body.contains("t1") && live.body.contains("pending"));
    assert!(!live.body.contains("<html"), "a fragment, not a page");
}

#[tokio::test]
async fn run_request_form_shows_errors_in_place() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    app.migration(&slug, "1", "SELECT 1;", "").await;
    let user = TokenBrowser::new(&app, &app.user);
    let Posted { status, body, .. } = user
        .post(
            &format!("/projects/{slug}/runs"),
            &[
                ("db_set_id", &set),
                ("direction", "up"),
                ("target_version", "7"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.contains("no migration 7") || body.contains("no targets"),
        "{body}"
    );
    let count = app.count("SELECT count(*) FROM runs").await;
    assert_eq!(count, 0);
}

#[tokio::test]
async fn editing_a_migration_makes_a_revision_with_a_side_by_side_diff() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    app.migration(
        &slug,
        "1",
        "CREATE TABLE a (id int);\nCREATE INDEX a_id ON a (id);",
        "DROP TABLE a;",
    )
    .await;
    let user = TokenBrowser::new(&app, &app.user);
    let edit = user
        .get(&format!("/projects/{slug}/migrations/1/edit"))
        .await;
    assert_eq!(edit.status, StatusCode::OK);
    assert!(
        edit.body.contains("CREATE INDEX a_id ON a (id);"),
        "the form holds the current SQL"
    );

    let new_up = format!(
        "CREATE TABLE a (id bigint, note text DEFAULT '{XSS}');\nCREATE INDEX a_id ON a (id);"
    );
    let Posted {
        status, location, ..
    } = user
        .post(
            &format!("/projects/{slug}/migrations/1/edit"),
            &[
                ("name", "m1"),
                ("up_sql", &new_up),
                ("down_sql", "DROP TABLE a;"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = user.get(&location).await;
    assert!(page.body.contains("diff with 1"));

    let diff = user
        .get(&format!("/projects/{slug}/migrations/1/diff?from=1&to=2"))
        .await;
    assert_eq!(diff.status, StatusCode::OK);
    assert!(
        diff.body.contains("diff-replace"),
        "the changed line is paired"
    );
    assert!(diff.body.contains("CREATE TABLE a (id int);") && diff.body.contains("id bigint"));
    assert_escaped(&diff.body, XSS, "the diff");

    // A script with a NUL character is refused by the form's extractor,
    // with an error page naming the field.
    let Posted { status, body, .. } = user
        .post(
            &format!("/projects/{slug}/migrations/1/edit"),
            &[
                ("name", "renamed"),
                ("up_sql", "SELECT 1;\0"),
                ("down_sql", ""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body.contains("up_sql: must not contain NUL characters"),
        "{body}"
    );
    let (_, one) = app
        .get(&format!("/api/v1/projects/{slug}/migrations/1"), &app.user)
        .await;
    assert_eq!(one["revision"], 2);
}

#[tokio::test]
async fn deny_and_cancel_forms_and_the_dashboard() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = common::testing::TestDatabase::create("mh_test_target").await;
    app.pg_target(&slug, &set, "t1", &db).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let user = TokenBrowser::new(&app, &app.user);
    let manager = TokenBrowser::new(&app, &app.manager);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let Posted { location, .. } = user
            .post(
                &format!("/projects/{slug}/runs"),
                &[
                    ("db_set_id", &set),
                    ("direction", "up"),
                    ("target_version", "1"),
                ],
            )
            .await;
        runs.push(location);
    }
    // The manager sees both waiting for approval; the user sees them as theirs.
    let dash = manager.get("/").await;
    assert_eq!(dash.body.matches("/runs/").count(), 2, "{}", dash.body);
    let dash = user.get("/").await;
    assert!(dash.body.contains("My runs") && dash.body.contains(&runs[0]));

    // A deny without a reason is refused; with one it is recorded.
    let Posted { status, .. } = manager
        .post(&format!("{}/deny", runs[0]), &[("reason", "")])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let Posted { status, .. } = manager
        .post(&format!("{}/deny", runs[0]), &[("reason", "freeze week")])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let page = user.get(&runs[0]).await;
    assert!(page.body.contains("state-denied") && page.body.contains("freeze week"));

    // The requester cancels their own run from its page.
    assert!(user.get(&runs[1]).await.body.contains(">Cancel</button>"));
    let Posted { status, .. } = user.post(&format!("{}/cancel", runs[1]), &[]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(user.get(&runs[1]).await.body.contains("state-cancelled"));
}

#[tokio::test]
async fn migration_page_shows_the_review_for_the_engines_of_the_projects_targets() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    app.migration(
        &slug,
        "1",
        "CREATE INDEX orders_customer ON orders (customer_id);",
        "DROP INDEX orders_customer;",
    )
    .await;
    let user = TokenBrowser::new(&app, &app.user);
    let path = format!("/projects/{slug}/migrations/1");

    // No target yet: the review depends on the engine, so none is shown.
    let page = user.get(&path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("The review appears once the project has targets")
    );
    assert!(!page.body.contains("index-not-concurrent"));

    let set = app.db_set(&slug, "orders", "daily").await;
    let db = common::testing::TestDatabase::create("mh_test_target").await;
    app.pg_target(&slug, &set, "t1", &db).await;
    let page = user.get(&path).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h3>PostgreSQL</h3>"), "{}", page.body);
    // The up script builds an index on an existing table under a write
    // lock; the down script drops one the same way.
    assert!(page.body.contains("<code>index-not-concurrent</code>"));
    assert!(page.body.contains("<code>drop-index-not-concurrent</code>"));
    assert!(page.body.contains("CONCURRENTLY"), "the fix is shown");
    assert!(
        !page.body.contains("MySQL / MariaDB"),
        "no MySQL target, no MySQL review"
    );
}

#[tokio::test]
async fn the_dashboard_names_failing_targets_and_shows_risk_and_age() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders-eu", "daily").await;
    let good = common::testing::TestDatabase::create("mh_test_dash").await;
    let bad = common::testing::TestDatabase::create("mh_test_dash").await;
    app.pg_target(&slug, &set, "shard-1", &good).await;
    let bad_id = app.pg_target(&slug, &set, "shard-2", &bad).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&bad.url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE accounts (id int)")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    app.migration(&slug, "1", "CREATE TABLE accounts (id int);", "")
        .await;
    let run = app.run_up(&slug, &set, "1").await;
    assert_eq!(run["state"], "partially_failed", "{run}");

    let manager = TokenBrowser::new(&app, &app.manager);
    let dash = manager.get("/").await;
    assert_eq!(dash.status, StatusCode::OK);
    let failures = &dash.body[dash.body.find("Recent failures").unwrap()..];
    for needle in [
        "<td>orders-eu</td>",
        &format!("<a href=\"/targets/{bad_id}\">shard-2</a>"),
        "relation &quot;accounts&quot; already exists",
        "<time datetime=",
    ] {
        assert!(failures.contains(needle), "missing {needle}: {failures}");
    }
    assert!(
        !failures.contains(">shard-1</a>"),
        "only failing targets are named"
    );

    // A run waiting for the manager: its risk and how long it has waited.
    app.migration(&slug, "2", "DROP TABLE accounts;", "").await;
    app.request_run(&slug, &set, "2").await;
    let dash = manager.get("/").await;
    let waiting = &dash.body[..dash.body.find("My runs").unwrap()];
    // A dropped table outside `prd` is rated medium by the default policy.
    assert!(
        waiting.contains("<span class=\"risk risk-medium\">medium</span>"),
        "{waiting}"
    );
    assert!(waiting.contains("<time datetime="), "{waiting}");
    assert!(waiting.contains("<td>orders-eu</td>"));
}

/// Machine times shown as text (`>2026-12-06T18:21:38.242082Z`), not in a
/// `<time>` element's attributes.
fn raw_times(body: &str) -> Vec<&str> {
    let bytes = body.as_bytes();
    (1..body.len().saturating_sub(19))
        .filter(|&i| {
            bytes[i - 1] == b'>'
                && bytes[i..i + 4].iter().all(u8::is_ascii_digit)
                && bytes[i + 4] == b'-'
                && bytes[i + 10] == b'T'
        })
        .map(|i| &body[i..i + 19])
        .collect()
}

#[tokio::test]
async fn pages_show_human_times_and_durations() {
    assert_eq!(
        raw_times("<td>2026-12-06T18:21:38.242082Z</td><time datetime=\"2026-12-06T18:21:38Z\">"),
        ["2026-12-06T18:21:38"]
    );
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = common::testing::TestDatabase::create("mh_test_times").await;
    let target = app.pg_target(&slug, &set, "t1", &db).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    assert_eq!(app.run_up(&slug, &set, "1").await["state"], "succeeded");
    let admin = TokenBrowser::new(&app, &app.admin);
    for path in [
        "/".to_owned(),
        format!("/targets/{target}"),
        format!("/projects/{slug}"),
        format!("/projects/{slug}/migrations/1"),
        format!("/projects/{slug}/db-sets/{set}"),
        "/audit".to_owned(),
        "/tokens".to_owned(),
        "/admin/users".to_owned(),
        "/admin/workers".to_owned(),
    ] {
        let page = admin.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(
            raw_times(&page.body).is_empty(),
            "{path}: {:?}",
            raw_times(&page.body)
        );
    }
    let page = admin.get(&format!("/targets/{target}")).await;
    assert!(page.body.contains("<time datetime="), "{}", page.body);
    let audit = admin.get("/audit").await;
    assert!(audit.body.contains("<time datetime="));
}

#[tokio::test]
async fn the_audit_log_names_actors_and_objects_and_lists_details() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = common::testing::TestDatabase::create("mh_test_auditview").await;
    let target = app.pg_target(&slug, &set, "t1", &db).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "")
        .await;
    let run = app.run_up(&slug, &set, "1").await;
    let run_id = run["id"].as_str().unwrap();
    app.migration(&slug, "2", "CREATE TABLE b (id int);", "")
        .await;
    let denied = app.request_run(&slug, &set, "2").await;
    let (status, _) = app
        .post(
            &format!("/api/v1/runs/{denied}/deny"),
            &app.manager,
            serde_json::json!({ "reason": crate::support::XSS }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let admin = TokenBrowser::new(&app, &app.admin);
    let page = admin.get("/audit").await;
    assert_eq!(page.status, StatusCode::OK);
    for needle in [
        // The chain's state at the top, for admins.
        "Hash chain verified through #",
        // A worker by host and pool, linked to the fleet (links are
        // escaped like any value: `/` is `&#x2f;`).
        "<a href=\"&#x2f;admin&#x2f;workers\">worker ",
        "(pool default)</a>",
        // A run and a target by name, linked to their pages.
        &format!(
            "<a href=\"&#x2f;runs&#x2f;{run_id}\">run {} (shop: up to 1 on daily)</a>",
            &run_id[..8]
        ),
        &format!("<a href=\"&#x2f;targets&#x2f;{target}\">target t1 (shop &#x2f; orders)</a>"),
        // Details as fields, the JSON on demand; the known actions as a list.
        "<dt>reason</dt>",
        "<summary>All details (JSON)</summary>",
        "<option>run.requested</option>",
    ] {
        assert!(
            page.body.contains(needle),
            "missing {needle}: {}",
            page.body
        );
    }
    crate::support::assert_escaped(&page.body, crate::support::XSS, "the audit page");
    let filtered = admin.get("/audit?action=run.denied").await;
    assert!(
        filtered
            .body
            .contains("<option selected>run.denied</option>")
    );
    assert_eq!(filtered.body.matches("<code>run.denied</code>").count(), 1);
    assert!(!filtered.body.contains("<code>run.requested</code>"));
    // Managers read every row but do not see the chain's state.
    let manager = TokenBrowser::new(&app, &app.manager).get("/audit").await;
    assert!(!manager.body.contains("Hash chain"));
}
