//! The inventory pages: projects, environments, DB sets, targets and
//! webhooks through the HTML forms. Each form works for the role the matrix
//! gives it and is refused with a page for the others; a refused input keeps
//! what was typed and names the field; names, descriptions and hosts come
//! back escaped; a target's password never reaches a page.

use crate::support::{Posted, TestApp, TokenBrowser, XSS, assert_escaped};
use reqwest::StatusCode;
use serde_json::json;

/// Without spaces, so it passes as a host name and must be escaped.
const XSS_HOST: &str = "<script>alert(1)</script>";
const PASSWORD: &str = "Pw-never-shown-7f3a9c";

fn assert_refused(posted: &Posted, what: &str) {
    assert_eq!(posted.status, StatusCode::FORBIDDEN, "{what}");
    assert!(posted.body.contains("<html"), "{what}: a page says why");
}

#[tokio::test]
async fn admins_create_edit_and_archive_projects_from_the_pages() {
    let app = TestApp::spawn().await;
    let (admin, manager, user) = (
        TokenBrowser::new(&app, &app.admin),
        TokenBrowser::new(&app, &app.manager),
        TokenBrowser::new(&app, &app.user),
    );
    assert!(admin.get("/projects").await.body.contains("Create project"));
    assert!(
        !manager
            .get("/projects")
            .await
            .body
            .contains("Create project")
    );

    let form = [("slug", "shop"), ("name", XSS), ("description", XSS)];
    assert_refused(&manager.post("/projects", &form).await, "manager creates");

    // A bad slug: the form comes back with the input and the slug's error.
    let bad = admin
        .post(
            "/projects",
            &[("slug", "Bad Slug"), ("name", XSS), ("description", "kept")],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("value=\"Bad Slug\"") && bad.body.contains(">kept</textarea>"));
    assert!(bad.body.contains("field-error"));
    assert_escaped(&bad.body, XSS, "the refused form");

    let created = admin.post("/projects", &form).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(created.location, "/projects/shop");
    let duplicate = admin.post("/projects", &form).await;
    assert_eq!(duplicate.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(duplicate.body.contains("already exists"));

    for path in ["/projects", "/projects/shop"] {
        let page = user.get(path).await;
        assert_eq!(page.status, StatusCode::OK);
        assert_escaped(&page.body, XSS, path);
    }
    assert!(
        !user
            .get("/projects/shop")
            .await
            .body
            .contains("Archive project")
    );
    assert!(
        admin
            .get("/projects/shop")
            .await
            .body
            .contains("Archive project")
    );

    let edit = [("name", "Shop"), ("description", "orders and carts")];
    assert_refused(
        &manager.post("/projects/shop/edit", &edit).await,
        "manager edits",
    );
    let empty = admin
        .post(
            "/projects/shop/edit",
            &[("name", " "), ("description", "typed")],
        )
        .await;
    assert_eq!(empty.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(empty.body.contains(">typed</textarea>") && empty.body.contains("must not be empty"));
    let saved = admin.post("/projects/shop/edit", &edit).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let page = user.get("/projects/shop").await;
    assert!(page.body.contains("<h1>Shop") && page.body.contains("orders and carts"));
    assert_eq!(app.audit_rows("project.updated").await.len(), 1);

    assert_refused(
        &manager.post("/projects/shop/archive", &[]).await,
        "manager archives",
    );
    let archived = admin
        .post("/projects/shop/archive", &[("confirm", "on")])
        .await;
    assert_eq!(archived.status, StatusCode::SEE_OTHER);
    assert_eq!(archived.location, "/projects");
    assert_eq!(
        user.get("/projects/shop").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn everyone_sees_the_environments_and_admins_change_their_policies() {
    let app = TestApp::spawn().await;
    let (admin, manager, user) = (
        TokenBrowser::new(&app, &app.admin),
        TokenBrowser::new(&app, &app.manager),
        TokenBrowser::new(&app, &app.user),
    );
    let page = user.get("/admin/environments").await;
    assert_eq!(page.status, StatusCode::OK);
    let (daily, stg, prd) = (
        page.body.find("<strong>daily</strong>").unwrap(),
        page.body.find("<strong>stg</strong>").unwrap(),
        page.body.find("<strong>prd</strong>").unwrap(),
    );
    assert!(daily < stg && stg < prd, "in promotion order");
    assert!(!page.body.contains("Edit policy") && !page.body.contains("Add environment"));
    assert!(
        user.get("/")
            .await
            .body
            .contains("href=\"/admin/environments\"")
    );
    let page = admin.get("/admin/environments").await;
    assert!(page.body.contains("Edit policy") && page.body.contains("invalidates"));

    let qa = [
        ("name", "qa"),
        ("required_approvals", "0"),
        ("allow_self_approval", "on"),
        ("lock_timeout_ms", "2000"),
        ("statement_timeout_ms", "60000"),
    ];
    assert_refused(
        &manager.post("/admin/environments", &qa).await,
        "manager adds",
    );
    let bad = admin.post("/admin/environments", &qa).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("value=\"qa\"") && bad.body.contains("value=\"2000\""));
    assert!(bad.body.contains("must be between 1 and 10"));
    let mut good = qa;
    good[1] = ("required_approvals", "1");
    let added = admin.post("/admin/environments", &good).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let qa_env = app.environment("qa").await;
    assert_eq!(qa_env["lock_timeout_ms"], 2000);
    assert_eq!(qa_env["allow_self_approval"], true);

    // prd never allows self-approval: the checkbox is refused, by name.
    let prd_form = [
        ("position", "30"),
        ("required_approvals", "2"),
        ("allow_self_approval", "on"),
        ("require_previous_success", "on"),
        ("lock_timeout_ms", "5000"),
        ("statement_timeout_ms", "600000"),
    ];
    assert_refused(
        &manager.post("/admin/environments/prd", &prd_form).await,
        "manager edits",
    );
    let refused = admin.post("/admin/environments/prd", &prd_form).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("prd never lets"));
    // Unchecked boxes are off; the rest is kept or changed.
    let form = [
        ("position", "30"),
        ("required_approvals", "2"),
        ("require_previous_success", "on"),
        ("lock_timeout_ms", "1500"),
        ("statement_timeout_ms", "600000"),
    ];
    let saved = admin.post("/admin/environments/prd", &form).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
    let prd_env = app.environment("prd").await;
    assert_eq!(prd_env["lock_timeout_ms"], 1500);
    assert_eq!(prd_env["required_approvals"], 2);
    assert_eq!(prd_env["allow_self_approval"], false);
}

#[tokio::test]
async fn managers_create_rename_and_delete_db_sets_on_the_project_page() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let (manager, user) = (
        TokenBrowser::new(&app, &app.manager),
        TokenBrowser::new(&app, &app.user),
    );
    assert!(!user.get("/projects/shop").await.body.contains("Add DB set"));
    assert!(
        manager
            .get("/projects/shop")
            .await
            .body
            .contains("Add DB set")
    );

    let path = format!("/projects/{slug}/db-sets");
    let form = [("name", "orders"), ("environment", "stg")];
    assert_refused(&user.post(&path, &form).await, "user creates a DB set");
    let bad = manager
        .post(&path, &[("name", "bad name!"), ("environment", "stg")])
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("value=\"bad name!\"") && bad.body.contains("field-error"));
    assert!(
        bad.body.contains("<option value=\"stg\" selected>"),
        "environment kept"
    );
    let unknown = manager
        .post(&path, &[("name", "orders"), ("environment", "nowhere")])
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown.body.contains("unknown environment"));

    let created = manager.post(&path, &form).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert!(created.location.starts_with(&format!("{path}/")));
    let id = created.location.rsplit('/').next().unwrap().to_owned();
    let duplicate = manager.post(&path, &form).await;
    assert_eq!(duplicate.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(duplicate.body.contains("already exists"));
    let page = user.get("/projects/shop").await;
    assert!(
        page.body
            .contains(&format!("href=\"{path}/{id}\">orders</a>"))
    );

    let rename = format!("{path}/{id}/rename");
    assert_refused(&user.post(&rename, &[("name", "o2")]).await, "user renames");
    let bad = manager.post(&rename, &[("name", "no/slash")]).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("value=\"no&#x2f;slash\"") && bad.body.contains("field-error"));
    let renamed = manager.post(&rename, &[("name", "orders-v2")]).await;
    assert_eq!(renamed.status, StatusCode::SEE_OTHER);
    assert!(
        user.get("/projects/shop")
            .await
            .body
            .contains(">orders-v2</a>")
    );

    let delete = format!("{path}/{id}/delete");
    assert_refused(&user.post(&delete, &[]).await, "user deletes");
    assert_eq!(
        manager.post(&delete, &[]).await.status,
        StatusCode::SEE_OTHER
    );
    assert!(!user.get("/projects/shop").await.body.contains("orders-v2"));
    assert_eq!(
        user.get(&format!("{path}/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn targets_are_added_edited_tested_and_deleted_without_showing_the_password() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = common::testing::TestDatabase::create("mh_test_target").await;
    let (manager, user) = (
        TokenBrowser::new(&app, &app.manager),
        TokenBrowser::new(&app, &app.user),
    );
    let set_page = format!("/projects/{slug}/db-sets/{set}");
    let add = format!("{set_page}/targets");
    let mut pages = Vec::new();

    let pg1 = [
        ("name", "pg1"),
        ("engine", "postgres"),
        ("host", "127.0.0.1"),
        ("port", "5432"),
        ("database", db.name.as_str()),
        ("username", "postgres"),
        ("password", PASSWORD),
        ("tls_mode", "disable"),
        ("worker_pool", ""),
        ("session_settings", "SET search_path = public"),
    ];
    assert_refused(&user.post(&add, &pg1).await, "user adds a target");
    // A bad port comes back with the rest of the input, but not the password.
    let mut bad = pg1;
    bad[3] = ("port", "70000");
    let refused = manager.post(&add, &bad).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("value=\"70000\"") && refused.body.contains(&db.name));
    assert!(refused.body.contains("must be between 1 and 65535"));
    pages.push(refused.body);
    let created = manager.post(&add, &pg1).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert_eq!(created.location, set_page);
    let duplicate = manager.post(&add, &pg1).await;
    assert_eq!(duplicate.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(duplicate.body.contains("already exists"));
    pages.push(duplicate.body);

    let my1 = [
        ("name", "my1"),
        ("engine", "mysql"),
        ("host", XSS_HOST),
        ("port", "3306"),
        ("database", XSS_HOST),
        ("username", "migrator"),
        ("password", PASSWORD),
        ("tls_mode", "prefer"),
        ("worker_pool", "mysql-pool"),
        ("session_settings", ""),
    ];
    assert_eq!(manager.post(&add, &my1).await.status, StatusCode::SEE_OTHER);

    let (_, listed) = app
        .get(
            &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
            &app.user,
        )
        .await;
    let id_of = |name: &str| {
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (pg1_id, my1_id) = (id_of("pg1"), id_of("my1"));

    let page = user.get(&set_page).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains(&format!("href=\"/targets/{pg1_id}\">pg1</a>"))
    );
    assert!(page.body.contains(&format!("127.0.0.1:5432/{}", db.name)));
    assert!(page.body.contains("MySQL/MariaDB") && page.body.contains("mysql-pool"));
    assert!(!page.body.contains("Test connection"), "users cannot test");
    assert_escaped(&page.body, XSS_HOST, "the DB set page");
    pages.push(page.body);
    let page = manager.get(&set_page).await;
    assert!(page.body.contains("Test connection") && page.body.contains("Add many targets"));
    pages.push(page.body);
    let project = user.get(&format!("/projects/{slug}")).await;
    assert!(
        project
            .body
            .contains(&format!("href=\"{set_page}\">orders</a>"))
    );
    pages.push(project.body);

    // Test connection: the result is shown on the page and audited.
    let test = format!("/targets/{pg1_id}/test");
    assert_refused(&user.post(&test, &[]).await, "user tests a connection");
    let tested = manager.post(&test, &[]).await;
    assert_eq!(tested.status, StatusCode::OK);
    assert!(tested.body.contains("probe-ok"), "{}", tested.body);
    assert!(tested.body.contains("Connected: <strong>PostgreSQL "));
    pages.push(tested.body);
    let failed = manager.post(&format!("/targets/{my1_id}/test"), &[]).await;
    assert_eq!(failed.status, StatusCode::OK);
    assert!(failed.body.contains("probe-failed") && failed.body.contains("error-text"));
    assert_escaped(&failed.body, XSS_HOST, "a failed test");
    pages.push(failed.body);
    let audited = app.audit_rows("target.tested").await;
    assert_eq!(audited.len(), 2);
    assert_eq!(audited[0].1["ok"], true);

    // The target state page: applied versions, dirty flag, drift, live.
    for id in [&pg1_id, &my1_id] {
        let state = user.get(&format!("/targets/{id}")).await;
        assert_eq!(state.status, StatusCode::OK);
        assert!(state.body.contains("Applied versions") && state.body.contains("Drift"));
        assert!(
            state
                .body
                .contains(&format!("href=\"{set_page}\">orders</a>"))
        );
        pages.push(state.body);
    }
    let state = user.get(&format!("/targets/{my1_id}")).await;
    assert!(state.body.contains("Could not read"));
    assert_escaped(&state.body, XSS_HOST, "the target page");

    // Editing: an empty password keeps it; the checkbox clears it.
    let edit = format!("/targets/{pg1_id}/edit");
    let mut form = pg1;
    form[0] = ("name", "pg-one");
    form[6] = ("password", "");
    assert_refused(&user.post(&edit, &form).await, "user edits a target");
    let mut bad = form;
    bad[3] = ("port", "x");
    bad[6] = ("password", PASSWORD);
    let refused = manager.post(&edit, &bad).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("value=\"pg-one\"") && refused.body.contains("must be a number"));
    pages.push(refused.body);
    assert_eq!(
        manager.post(&edit, &form).await.status,
        StatusCode::SEE_OTHER
    );
    let (_, target) = app
        .get(&format!("/api/v1/targets/{pg1_id}"), &app.user)
        .await;
    assert_eq!(
        (target["name"].as_str(), target["has_password"].as_bool()),
        (Some("pg-one"), Some(true))
    );
    let mut clear = form.to_vec();
    clear.push(("clear_password", "on"));
    assert_eq!(
        manager.post(&edit, &clear).await.status,
        StatusCode::SEE_OTHER
    );
    let (_, target) = app
        .get(&format!("/api/v1/targets/{pg1_id}"), &app.user)
        .await;
    assert_eq!(target["has_password"], false);

    // Deleting.
    let delete = format!("/targets/{my1_id}/delete");
    assert_refused(&user.post(&delete, &[]).await, "user deletes a target");
    let deleted = manager.post(&delete, &[]).await;
    assert_eq!(
        (deleted.status, deleted.location.as_str()),
        (StatusCode::SEE_OTHER, set_page.as_str())
    );
    assert_eq!(
        user.get(&format!("/targets/{my1_id}")).await.status,
        StatusCode::NOT_FOUND
    );

    for body in &pages {
        assert!(!body.contains(PASSWORD), "a page shows the password");
    }
}

#[tokio::test]
async fn bulk_form_adds_all_lines_or_none_and_the_list_paginates() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "shards", "prd").await;
    let (manager, user) = (
        TokenBrowser::new(&app, &app.manager),
        TokenBrowser::new(&app, &app.user),
    );
    let set_page = format!("/projects/{slug}/db-sets/{set}");
    let bulk = format!("{set_page}/targets/bulk");
    let form = |lines: &'static str| {
        [
            ("lines", lines),
            ("engine", "mysql"),
            ("username", "migrator"),
            ("password", PASSWORD),
            ("tls_mode", "require"),
            ("worker_pool", ""),
            ("name_prefix", "shard-"),
            ("session_settings", ""),
        ]
    };
    assert_refused(&user.post(&bulk, &form("db1/app")).await, "user bulk-adds");
    let refused = manager
        .post(&bulk, &form("db1:3307/app\ndb2:70000/app"))
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(refused.body.contains("line 2:") && refused.body.contains("db2:70000&#x2f;app"));
    assert!(!refused.body.contains(PASSWORD));
    let count = || async {
        let (_, list) = app
            .get(
                &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
                &app.user,
            )
            .await;
        list["items"].as_array().unwrap().len()
    };
    assert_eq!(count().await, 0, "nothing half-written");

    let lines: String = (1..=55).map(|i| format!("db{i}.internal/app\n")).collect();
    let lines: &'static str = Box::leak(lines.into_boxed_str());
    let added = manager.post(&bulk, &form(lines)).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    assert_eq!(count().await, 55);
    assert_eq!(app.audit_rows("target.bulk_created").await.len(), 1);

    // 50 a page, in name order; the next page starts after the last name.
    let first = user.get(&set_page).await;
    assert_eq!(first.body.matches("href=\"/targets/").count(), 50);
    let next = first
        .body
        .split("?cursor=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a link to the next page")
        .to_owned();
    let second = user.get(&format!("{set_page}?cursor={next}")).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.body.matches("href=\"/targets/").count(), 5);
    assert!(!second.body.contains("?cursor="));
    for body in [&first.body, &second.body] {
        assert!(body.contains("3306/app") && !body.contains(PASSWORD));
    }
}

#[tokio::test]
async fn managers_add_and_remove_project_webhooks() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let (manager, user) = (
        TokenBrowser::new(&app, &app.manager),
        TokenBrowser::new(&app, &app.user),
    );
    let project = format!("/projects/{slug}");
    assert!(!user.get(&project).await.body.contains("id=\"webhooks\""));
    assert!(manager.get(&project).await.body.contains("id=\"webhooks\""));

    let path = format!("{project}/webhooks");
    let url = "https://hooks.example.com/services/T0/B0/secret-path-123";
    let form = [
        ("url", url),
        ("event_approved", "on"),
        ("event_failed", "on"),
    ];
    assert_refused(&user.post(&path, &form).await, "user adds a webhook");
    let bad = manager
        .post(&path, &[("url", "not a url"), ("event_failed", "on")])
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.body.contains("value=\"not a url\"") && bad.body.contains("absolute http(s) URL"));
    assert!(
        bad.body.contains("name=\"event_failed\" checked"),
        "events kept"
    );
    assert!(!bad.body.contains("name=\"event_approved\" checked"));
    let none = manager.post(&path, &[("url", url)]).await;
    assert_eq!(none.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(none.body.contains("name at least one event"));

    let added = manager.post(&path, &form).await;
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.body);
    let page = manager.get(&project).await;
    assert!(
        page.body
            .contains("https:&#x2f;&#x2f;hooks.example.com&#x2f;…")
            && page.body.contains("approved, failed")
    );
    assert!(
        !page.body.contains("secret-path-123"),
        "the URL is shown by its host only"
    );

    let (_, hooks) = app.get(&format!("/api/v1{path}"), &app.manager).await;
    let id = hooks["items"][0]["id"].as_str().unwrap().to_owned();
    let remove = format!("{path}/{id}/delete");
    assert_refused(&user.post(&remove, &[]).await, "user removes a webhook");
    assert_eq!(
        manager.post(&remove, &[]).await.status,
        StatusCode::SEE_OTHER
    );
    assert!(
        !manager
            .get(&project)
            .await
            .body
            .contains("approved, failed")
    );
    let (_, hooks) = app.get(&format!("/api/v1{path}"), &app.manager).await;
    assert_eq!(hooks["items"], json!([]));
}
