//! Adopting existing databases: a target migrated by Flyway, golang-migrate,
//! dbmate or goose (or by hand, up to a known version) is baselined through the
//! API, and a real `up` run afterwards applies only the later migrations.
//!
//! Every migration at or below the baseline recreates a table the target
//! already has, so running it again would fail the run: a succeeded run
//! proves it was not run.

use crate::support::{self, PgTarget, TestApp, code, versions};
use common::testing::{TestDatabase, TestMysqlDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

/// A fresh PostgreSQL database, added as target `name`.
async fn pg_target(app: &TestApp, slug: &str, set: &str, name: &str) -> (String, TestDatabase) {
    let db = TestDatabase::create("mh_test_baseline").await;
    (app.pg_target(slug, set, name, &db).await, db)
}

/// Project `shop` with DB set `orders` (in `daily`) of one target `pg1`, a
/// fresh PostgreSQL database: (slug, DB set id, target id, database).
async fn pg_shop(app: &TestApp) -> (String, String, String, TestDatabase) {
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let (target, db) = pg_target(app, &slug, &set, "pg1").await;
    (slug, set, target, db)
}

/// Project `shop` with DB set `orders-my` (in `daily`) of one target `my1`,
/// a fresh MariaDB database: (slug, DB set id, target id, database).
async fn mysql_shop(app: &TestApp) -> (String, String, String, TestMysqlDatabase) {
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders-my", "daily").await;
    let db = TestMysqlDatabase::create("mh_test_baseline").await;
    let target = app.mysql_target(&slug, &set, "my1", &db).await;
    (slug, set, target, db)
}

/// The target's `migrate_hub_history` as (version, checksum), in version order.
async fn pg_history(db: &TestDatabase) -> Vec<(String, String)> {
    let mut conn = db.connect().await;
    sqlx::query_as(
        "SELECT version, checksum FROM migrate_hub_history ORDER BY string_to_array(version, '.')::numeric[]",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// The hub's applied rows of a target: (version, checksum, run_id, baseline).
async fn hub_applied(
    app: &TestApp,
    target: &str,
) -> Vec<(String, String, Option<uuid::Uuid>, bool)> {
    sqlx::query_as(
        "SELECT version, checksum, run_id, baseline FROM applied_migrations
         WHERE target_id = $1::uuid ORDER BY version_key",
    )
    .bind(target)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The versions a run executed on the target, in order.
async fn executed(app: &TestApp, target: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT version FROM migration_executions WHERE target_id = $1::uuid ORDER BY id",
    )
    .bind(target)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// The project's checksum of each version.
async fn checksums(app: &TestApp, slug: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT m.version, m.checksum FROM migrations m JOIN projects p ON p.id = m.project_id
         WHERE p.slug = $1 ORDER BY m.version_key",
    )
    .bind(slug)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// An `up` run to `version` succeeds, having executed `executed` (and
/// nothing else) on the target.
async fn run_up_executing(
    app: &TestApp,
    slug: &str,
    set: &str,
    target: &str,
    version: &str,
    executed_there: &[&str],
) {
    let run = app.run_up(slug, set, version).await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(executed(app, target).await, executed_there);
}

/// The hub reads `applied` as the target's applied versions, and the
/// target's own history agrees.
async fn assert_applied(app: &TestApp, target: &str, applied: &[&str]) {
    let state = live_state(app, target).await;
    assert_eq!(versions(&state["applied"]), applied, "{state}");
    assert_eq!(state["drift"]["in_sync"], true, "{state}");
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// The target's state as the API reads it live: applied versions and
/// whether the target's own history agrees.
async fn live_state(app: &TestApp, target: &str) -> Value {
    let state = app.target_state(target).await;
    assert_eq!(state["drift"]["checked"], true, "{state}");
    state
}

#[tokio::test]
async fn flyway_history_on_postgres_is_adopted_and_only_later_migrations_run() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = pg_shop(&app).await;
    // What Flyway left: V1 and V1.1 applied, a repeatable view, its own table.
    db.run(r#"CREATE TABLE gadgets (id int);
        CREATE TABLE widgets (id int);
        CREATE VIEW gadget_count AS SELECT count(*) AS n FROM gadgets;
        CREATE TABLE "public"."flyway_schema_history" (
            "installed_rank" INT NOT NULL,
            "version" VARCHAR(50),
            "description" VARCHAR(200) NOT NULL,
            "type" VARCHAR(20) NOT NULL,
            "script" VARCHAR(1000) NOT NULL,
            "checksum" INTEGER,
            "installed_by" VARCHAR(100) NOT NULL,
            "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
            "execution_time" INTEGER NOT NULL,
            "success" BOOLEAN NOT NULL
        );
        ALTER TABLE "public"."flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
        CREATE INDEX "flyway_schema_history_s_idx" ON "public"."flyway_schema_history" ("success");
        INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, installed_by, execution_time, success) VALUES
            (1, '1', 'create gadgets', 'SQL', 'V1__create_gadgets.sql', 1214124414, 'postgres', 12, true),
            (2, '1.1', 'create widgets', 'SQL', 'V1_1__create_widgets.sql', -993117021, 'postgres', 8, true),
            (3, NULL, 'gadget count', 'SQL', 'R__gadget_count.sql', 51423301, 'postgres', 5, true);"#,
    )
    .await;
    app.migration(
        &slug,
        "1",
        "CREATE TABLE gadgets (id int);",
        "DROP TABLE gadgets;",
    )
    .await;
    app.migration(
        &slug,
        "1.1",
        "CREATE TABLE widgets (id int);",
        "DROP TABLE widgets;",
    )
    .await;
    app.migration(
        &slug,
        "2",
        "CREATE TABLE orders (id int);",
        "DROP TABLE orders;",
    )
    .await;
    let path = format!("/api/v1/targets/{target}/baseline");

    // Only admins baseline (or preview one).
    for token in [&app.user, &app.manager] {
        let (status, body) = app.post(&path, token, json!({"from": "flyway"})).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _) = app.get(&format!("{path}?from=flyway"), token).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    // The preview says what would be recorded, and writes nothing.
    let (status, preview) = app.get(&format!("{path}?from=flyway"), &app.admin).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(strings(&preview["versions"]), ["1", "1.1"]);
    assert_eq!(preview["dry_run"], true);
    assert!(!db.has_table("migrate_hub_history").await);
    assert!(hub_applied(&app, &target).await.is_empty());

    let (status, body) = app.post(&path, &app.admin, json!({"from": "flyway"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(strings(&body["versions"]), ["1", "1.1"]);
    assert_eq!(body["baseline_version"], "1.1");
    assert_eq!(body["source"], "flyway");
    assert_eq!(body["table"], "flyway_schema_history");

    // The hub records both as applied by no run, with the project's checksums,
    // and the target's own history says the same.
    let project = checksums(&app, &slug).await;
    let applied = hub_applied(&app, &target).await;
    assert_eq!(
        applied,
        vec![
            (project[0].0.clone(), project[0].1.clone(), None, true),
            (project[1].0.clone(), project[1].1.clone(), None, true),
        ]
    );
    assert_eq!(pg_history(&db).await, project[..2].to_vec());
    let audit = app.audit_rows("target.baselined").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].0, support::ADMIN);
    assert_eq!(
        audit[0].1,
        json!({
            "source": "flyway",
            "table": "flyway_schema_history",
            "baseline_version": "1.1",
            "versions": 2,
            "unknown_ignored": 0,
            "missing_left_pending": 0,
            "allow_mismatch": false,
        })
    );
    assert!(!audit[0].1.to_string().contains("unused-with-trust"));

    // Once is enough: the target now has history.
    let (status, err) = app.post(&path, &app.admin, json!({"from": "flyway"})).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "target_not_empty"),
        "{err}"
    );

    // A run to 2 applies 2 only (1 and 1.1 would fail: their tables exist).
    run_up_executing(&app, &slug, &set, &target, "2", &["2"]).await;
    assert!(db.has_table("orders").await);
    assert_eq!(pg_history(&db).await, project);
    assert_applied(&app, &target, &["1", "1.1", "2"]).await;
}

#[tokio::test]
async fn flyway_baseline_row_on_mariadb_with_a_gap_is_refused_unless_accepted() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = mysql_shop(&app).await;
    // Flyway baselined the database at 1, then applied 2.
    for sql in [
        "CREATE TABLE a (id int)",
        "CREATE TABLE b (id int)",
        "CREATE TABLE `flyway_schema_history` (
            `installed_rank` INT NOT NULL,
            `version` VARCHAR(50),
            `description` VARCHAR(200) NOT NULL,
            `type` VARCHAR(20) NOT NULL,
            `script` VARCHAR(1000) NOT NULL,
            `checksum` INT,
            `installed_by` VARCHAR(100) NOT NULL,
            `installed_on` TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
            `execution_time` INT NOT NULL,
            `success` BOOL NOT NULL,
            CONSTRAINT `flyway_schema_history_pk` PRIMARY KEY (`installed_rank`)
        ) ENGINE=InnoDB",
        "CREATE INDEX `flyway_schema_history_s_idx` ON `flyway_schema_history` (`success`)",
        "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum, installed_by, execution_time, success) VALUES
            (1, '1', '<< Flyway Baseline >>', 'BASELINE', '<< Flyway Baseline >>', NULL, 'root', 0, 1),
            (2, '2', 'create b', 'SQL', 'V2__create_b.sql', 1881265372, 'root', 20, 1)",
    ] {
        db.run(sql).await;
    }
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    // Added to the project but never applied by Flyway: a gap below 2.
    app.migration(&slug, "1.5", "CREATE TABLE c (id int);", "DROP TABLE c;")
        .await;
    app.migration(&slug, "2", "CREATE TABLE b (id int);", "DROP TABLE b;")
        .await;
    app.migration(&slug, "3", "CREATE TABLE d (id int);", "DROP TABLE d;")
        .await;
    let path = format!("/api/v1/targets/{target}/baseline");

    let (status, err) = app.post(&path, &app.admin, json!({"from": "flyway"})).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "baseline_mismatch"),
        "{err}"
    );
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("does not record: 1.5"), "{message}");
    assert!(hub_applied(&app, &target).await.is_empty());
    let state = live_state(&app, &target).await;
    assert!(
        versions(&state["applied"]).is_empty(),
        "nothing recorded: {state}"
    );

    // Accepted: 1 and 2 are recorded, 1.5 stays pending.
    let (status, body) = app
        .post(
            &path,
            &app.admin,
            json!({"from": "flyway", "allow_mismatch": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(strings(&body["versions"]), ["1", "2"]);
    assert_eq!(strings(&body["missing_left_pending"]), ["1.5"]);
    assert_applied(&app, &target, &["1", "2"]).await;

    run_up_executing(&app, &slug, &set, &target, "3", &["1.5", "3"]).await;
    db.run("SELECT * FROM c, d").await;
    assert_applied(&app, &target, &["1", "1.5", "2", "3"]).await;
}

#[tokio::test]
async fn golang_migrate_dirty_is_refused_then_its_version_is_adopted() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = pg_shop(&app).await;
    // golang-migrate's table, as its postgres driver creates it, left dirty at 2.
    db.run(r#"CREATE TABLE users (id int);
        CREATE TABLE sessions (id int);
        CREATE TABLE IF NOT EXISTS "schema_migrations" (version bigint not null primary key, dirty boolean not null);
        INSERT INTO "schema_migrations" (version, dirty) VALUES (20240102000000, true);"#,
    )
    .await;
    users_sessions_tokens(
        &app,
        &slug,
        ["20240101000000", "20240102000000", "20240103000000"],
    )
    .await;
    let path = format!("/api/v1/targets/{target}/baseline");

    let (status, err) = app
        .post(&path, &app.admin, json!({"from": "golang-migrate"}))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "external_dirty"),
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("migrate force 20240102000000"),
        "{err}"
    );
    assert!(hub_applied(&app, &target).await.is_empty());

    // Someone fixed the database and cleared the mark.
    db.run("UPDATE schema_migrations SET dirty = false").await;
    let (status, body) = app
        .post(
            &path,
            &app.admin,
            json!({"from": "golang-migrate", "table": "public.schema_migrations"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        strings(&body["versions"]),
        ["20240101000000", "20240102000000"]
    );
    assert_eq!(body["table"], "public.schema_migrations");
    let project = checksums(&app, &slug).await;
    assert_eq!(pg_history(&db).await, project[..2].to_vec());

    run_up_executing(
        &app,
        &slug,
        &set,
        &target,
        "20240103000000",
        &["20240103000000"],
    )
    .await;
    assert!(db.has_table("tokens").await);
    assert_eq!(pg_history(&db).await, project);
}

#[tokio::test]
async fn dbmate_on_mariadb_reports_versions_the_project_lacks() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = mysql_shop(&app).await;
    // dbmate's table (its mysql driver's DDL), including a version from
    // before the migrations were squashed into the project's first one.
    for sql in [
        "CREATE TABLE users (id int)",
        "CREATE TABLE sessions (id int)",
        "create table if not exists schema_migrations (version varchar(128) primary key)",
        "insert into schema_migrations (version) values ('20230101000000'), ('20240101000000'), ('20240102000000')",
    ] {
        db.run(sql).await;
    }
    users_sessions_tokens(
        &app,
        &slug,
        ["20240101000000", "20240102000000", "20240103000000"],
    )
    .await;
    let path = format!("/api/v1/targets/{target}/baseline");

    let (status, err) = app.post(&path, &app.admin, json!({"from": "dbmate"})).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "baseline_mismatch"),
        "{err}"
    );
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "schema_migrations records version(s) the project does not have: 20230101000000"
        ),
        "{message}"
    );
    assert!(hub_applied(&app, &target).await.is_empty());

    // The squashed version's row is cleaned up; now the two sides agree.
    db.run("delete from schema_migrations where version = '20230101000000'")
        .await;
    let (status, body) = app.post(&path, &app.admin, json!({"from": "dbmate"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        strings(&body["versions"]),
        ["20240101000000", "20240102000000"]
    );
    assert_applied(&app, &target, &["20240101000000", "20240102000000"]).await;

    run_up_executing(
        &app,
        &slug,
        &set,
        &target,
        "20240103000000",
        &["20240103000000"],
    )
    .await;
    db.run("SELECT * FROM tokens").await;
    assert_applied(
        &app,
        &target,
        &["20240101000000", "20240102000000", "20240103000000"],
    )
    .await;
}

/// Three migrations creating `users`, `sessions` and `tokens`, at the
/// versions given (the tests' targets have the first two tables already).
async fn users_sessions_tokens(app: &TestApp, slug: &str, at: [&str; 3]) {
    for (version, table) in at.into_iter().zip(["users", "sessions", "tokens"]) {
        app.migration(
            slug,
            version,
            &format!("CREATE TABLE {table} (id int);"),
            &format!("DROP TABLE {table};"),
        )
        .await;
    }
}

#[tokio::test]
async fn goose_history_on_postgres_counts_the_latest_row_of_each_version() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = pg_shop(&app).await;
    // goose's table as its postgres dialect creates it, with its own row
    // for version 0. 2 was rolled back and applied again; 3 was applied and
    // rolled back last (its table is gone).
    db.run(
        "CREATE TABLE users (id int);
         CREATE TABLE sessions (id int);
         CREATE TABLE goose_db_version (
            id integer PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY,
            version_id bigint NOT NULL,
            is_applied boolean NOT NULL,
            tstamp timestamp NOT NULL DEFAULT now()
         );
         INSERT INTO goose_db_version (version_id, is_applied) VALUES
            (0, true), (1, true), (2, true), (2, false), (2, true), (3, true), (3, false);",
    )
    .await;
    users_sessions_tokens(&app, &slug, ["1", "2", "3"]).await;
    let path = format!("/api/v1/targets/{target}/baseline");

    let (status, body) = app.post(&path, &app.admin, json!({"from": "goose"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "goose");
    assert_eq!(body["table"], "goose_db_version");
    assert_eq!(strings(&body["versions"]), ["1", "2"]);
    let project = checksums(&app, &slug).await;
    assert_eq!(pg_history(&db).await, project[..2].to_vec());

    run_up_executing(&app, &slug, &set, &target, "3", &["3"]).await;
    assert!(db.has_table("tokens").await);
    assert_applied(&app, &target, &["1", "2", "3"]).await;
}

#[tokio::test]
async fn goose_history_on_mariadb_under_another_table_name_is_adopted() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = mysql_shop(&app).await;
    // goose's mysql dialect DDL, under the name given to goose's -table flag.
    // Version 3 was applied and rolled back last.
    for sql in [
        "CREATE TABLE users (id int)",
        "CREATE TABLE sessions (id int)",
        "CREATE TABLE app_goose_versions (
            id serial NOT NULL,
            version_id bigint NOT NULL,
            is_applied boolean NOT NULL,
            tstamp timestamp NULL default now(),
            PRIMARY KEY(id)
        )",
        "INSERT INTO app_goose_versions (version_id, is_applied) VALUES
            (0, true), (1, true), (2, true), (3, true), (3, false)",
    ] {
        db.run(sql).await;
    }
    users_sessions_tokens(&app, &slug, ["1", "2", "3"]).await;
    let path = format!("/api/v1/targets/{target}/baseline");

    // The default table is not there.
    let (status, err) = app.post(&path, &app.admin, json!({"from": "goose"})).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "external_table_not_found"),
        "{err}"
    );
    let (status, preview) = app
        .get(
            &format!("{path}?from=goose&table=app_goose_versions"),
            &app.admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["dry_run"], true);
    assert_eq!(strings(&preview["versions"]), ["1", "2"]);
    assert!(
        hub_applied(&app, &target).await.is_empty(),
        "a preview writes nothing"
    );

    let (status, body) = app
        .post(
            &path,
            &app.admin,
            json!({"from": "goose", "table": "app_goose_versions"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(strings(&body["versions"]), ["1", "2"]);
    assert_applied(&app, &target, &["1", "2"]).await;

    run_up_executing(&app, &slug, &set, &target, "3", &["3"]).await;
    db.run("SELECT * FROM tokens").await;
}

#[tokio::test]
async fn explicit_version_baseline_from_the_target_page() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = pg_shop(&app).await;
    db.run("CREATE TABLE a (id int); CREATE TABLE b (id int);")
        .await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    app.migration(&slug, "2", "CREATE TABLE b (id int);", "DROP TABLE b;")
        .await;
    app.migration(&slug, "3", "CREATE TABLE c (id int);", "DROP TABLE c;")
        .await;

    // The form is on the page for admins only.
    let page = format!("/targets/{target}");
    let form = "id=\"baseline-form\"";
    assert!(app.page(&page, &app.admin).await.1.contains(form));
    assert!(!app.page(&page, &app.manager).await.1.contains(form));

    let form = |fields: Vec<(&'static str, &'static str)>| {
        let url = app.url(&format!("/targets/{target}/baseline"));
        let token = app.admin.clone();
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .form(&fields)
                .send()
                .await
                .unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };
    // A refusal is a page that says why.
    let (status, html) = form(vec![("from", ""), ("version", "0")]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        html.contains("no migration of the project is at or below version 0"),
        "{html}"
    );
    // The version field counts when no tool is chosen.
    let (status, html) = form(vec![("from", ""), ("version", "2"), ("table", "")]).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("id=\"baseline-result\""), "{html}");
    assert!(html.contains("2 version(s) recorded as applied"), "{html}");
    assert!(!html.contains("id=\"baseline-form\""), "no second baseline");

    let applied = hub_applied(&app, &target).await;
    let versions: Vec<&str> = applied.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(versions, ["1", "2"]);
    assert!(applied.iter().all(|a| a.2.is_none() && a.3));
    let audit = app.audit_rows("target.baselined").await;
    assert_eq!(audit[0].1["source"], "version");
    assert_eq!(audit[0].1["baseline_version"], "2");

    run_up_executing(&app, &slug, &set, &target, "3", &["3"]).await;
    assert!(db.has_table("c").await);
    // A target the hub has migrated is never baselined again.
    let (status, err) = app
        .post(
            &format!("/api/v1/targets/{target}/baseline"),
            &app.admin,
            json!({"version": "3"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "target_not_empty"),
        "{err}"
    );
}

#[tokio::test]
async fn baselines_are_refused_with_a_reason() {
    let app = TestApp::spawn().await;
    let (slug, set, target, db) = pg_shop(&app).await;
    app.migration(&slug, "1", "CREATE TABLE a (id int);", "DROP TABLE a;")
        .await;
    let path = format!("/api/v1/targets/{target}/baseline");
    let field = |body: &Value| body["error"]["field"].as_str().unwrap_or("").to_owned();

    // Malformed requests name the field.
    for (body, expected) in [
        (json!({}), "version"),
        (json!({"version": "1", "from": "flyway"}), "from"),
        (json!({"from": "liquibase"}), "from"),
        (json!({"version": "v1"}), "version"),
        (json!({"version": "1", "table": "t"}), "table"),
        (
            json!({"from": "dbmate", "table": "x; DROP TABLE a"}),
            "table",
        ),
        (json!({"version": "0"}), "version"),
    ] {
        let (status, err) = app.post(&path, &app.admin, body.clone()).await;
        assert_eq!(
            (status, field(&err)),
            (StatusCode::UNPROCESSABLE_ENTITY, expected.to_owned()),
            "{body}: {err}"
        );
    }
    let (status, _) = app.get(&path, &app.admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = app
        .post(
            "/api/v1/targets/00000000-0000-0000-0000-000000000000/baseline",
            &app.admin,
            json!({"version": "1"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // No such table on the target.
    let (status, err) = app.post(&path, &app.admin, json!({"from": "flyway"})).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "external_table_not_found"),
        "{err}"
    );

    // A running migration holds the target lock: the baseline does not race it.
    let mut holder = db.connect().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(common::targets::lock::PG_ADVISORY_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let (status, err) = app.post(&path, &app.admin, json!({"version": "1"})).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "target_busy"),
        "{err}"
    );
    holder.close().await.unwrap();
    assert!(hub_applied(&app, &target).await.is_empty());

    // A target with another installation's migrate_hub_history rows.
    let (other, other_db) = pg_target(&app, &slug, &set, "pg2").await;
    other_db
        .run(
            "CREATE TABLE migrate_hub_history (version text PRIMARY KEY, checksum text NOT NULL,
            name text NOT NULL DEFAULT '', applied_at timestamptz NOT NULL DEFAULT now(),
            run_id uuid, execution_ms bigint);
         INSERT INTO migrate_hub_history (version, checksum) VALUES ('1', 'abc');",
        )
        .await;
    let (status, err) = app
        .post(
            &format!("/api/v1/targets/{other}/baseline"),
            &app.admin,
            json!({"version": "1"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "target_not_empty"),
        "{err}"
    );

    // A dirty target.
    let (dirty, _dirty_db) = pg_target(&app, &slug, &set, "pg3").await;
    sqlx::query(
        "INSERT INTO target_dirty_states (target_id, run_id, version, direction, statement_index, statements_hash, error)
         VALUES ($1::uuid, $2, '1', 'up', 1, 'h', 'boom')",
    )
    .bind(&dirty)
    .bind(uuid::Uuid::now_v7())
    .execute(&app.pool)
    .await
    .unwrap();
    let (status, err) = app
        .post(
            &format!("/api/v1/targets/{dirty}/baseline"),
            &app.admin,
            json!({"version": "1"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "target_dirty"),
        "{err}"
    );

    // A target nobody can reach.
    let (status, body) = app
        .post(
            &format!("/api/v1/projects/{slug}/db-sets/{set}/targets"),
            &app.manager,
            json!({"name": "gone", "engine": "postgres", "host": "127.0.0.1", "port": 1,
                   "database": "x", "username": "postgres", "password": "s3cret-pw", "tls_mode": "disable"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, err) = app
        .post(
            &format!("/api/v1/targets/{}/baseline", body["id"].as_str().unwrap()),
            &app.admin,
            json!({"version": "1"}),
        )
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::CONFLICT, "target_unreachable"),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cret-pw"));
    assert!(app.audit_rows("target.baselined").await.is_empty());
}
