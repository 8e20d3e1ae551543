//! What a run changed on a target, from the schema snapshots the workers
//! take: the API answer and the page, which escapes every name it shows.

use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::{TestApp, TokenBrowser};
use common::testing::TestDatabase;

#[tokio::test]
async fn what_a_run_changed_on_a_target_is_in_the_api_and_on_an_escaped_page() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = TestDatabase::create("mh_test_snap").await;
    let target = app.pg_target(&slug, &set, "shard-1", &db).await;
    app.migration(
        &slug,
        "1",
        "CREATE TABLE \"<b>evil</b>\" (id int);",
        "DROP TABLE \"<b>evil</b>\";",
    )
    .await;
    let run = app.run_up(&slug, &set, "1").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let id = run["id"].as_str().unwrap();

    let path = format!("/api/v1/runs/{id}/targets/{target}/schema");
    let (status, body) = app.get(&path, &app.user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["target_name"], "shard-1");
    assert_eq!(
        body["diff"]["added"][0], "table public.\"<b>evil</b>\"",
        "{body}"
    );
    assert_eq!(body["before"]["taken"], "before");
    assert_eq!(body["after"]["taken"], "after");
    assert_ne!(body["before"]["hash"], body["after"]["hash"]);
    let (status, _) = app
        .get(
            &format!("/api/v1/runs/{id}/targets/{}/schema", Uuid::new_v4()),
            &app.user,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let user = TokenBrowser::new(&app, &app.user);
    let page = user
        .get(&format!("/runs/{id}/targets/{target}/schema"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("&lt;b&gt;evil&lt;") && !page.body.contains("<b>evil</b>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("class=\"diff-add\""), "{}", page.body);
    let live = user.get(&format!("/runs/{id}/live")).await;
    assert!(
        live.body
            .contains(&format!("/runs/{id}/targets/{target}/schema")),
        "the run page links each finished target's changes"
    );
}

#[tokio::test]
async fn fleet_consistency_names_the_targets_that_differ_with_their_diff() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let dbs = [
        TestDatabase::create("mh_test_fleet").await,
        TestDatabase::create("mh_test_fleet").await,
        TestDatabase::create("mh_test_fleet").await,
    ];
    for (i, db) in dbs.iter().enumerate() {
        app.pg_target(&slug, &set, &format!("shard-{}", i + 1), db)
            .await;
    }
    let path = format!("/api/v1/projects/{slug}/db-sets/{set}/schema");
    let (status, body) = app.get(&path, &app.user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["summary"], "no snapshots yet");
    assert_eq!(body["without_snapshot"].as_array().unwrap().len(), 3);

    app.migration(&slug, "1", "CREATE TABLE accounts (id int);", "")
        .await;
    app.migration(&slug, "2", "CREATE INDEX accounts_id ON accounts (id);", "")
        .await;
    assert_eq!(app.run_up(&slug, &set, "1").await["state"], "succeeded");
    let (_, body) = app.get(&path, &app.user).await;
    assert_eq!(body["summary"], "3 targets identical");
    // A hand-made change on one shard shows after its next execution.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&dbs[2].url)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE accounts ADD COLUMN \"<i>note</i>\" text")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(app.run_up(&slug, &set, "2").await["state"], "succeeded");
    let (_, body) = app.get(&path, &app.user).await;
    assert_eq!(
        body["summary"], "2 targets identical; shard-3 differ",
        "{body}"
    );
    let outlier = &body["groups"][1];
    assert_eq!(outlier["majority"], false);
    assert_eq!(outlier["version"], "2");
    assert_eq!(outlier["diff"]["changed"][0], "table public.accounts");
    assert!(
        outlier["diff"]["unified"]
            .as_str()
            .unwrap()
            .contains("+  column \"<i>note</i>\" text"),
        "{outlier}"
    );

    let page = TokenBrowser::new(&app, &app.user)
        .get(&format!("/projects/{slug}/db-sets/{set}"))
        .await;
    assert!(
        page.body.contains("2 targets identical; shard-3 differ"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("&lt;i&gt;note&lt;") && !page.body.contains("<i>note</i>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("class=\"diff-add\""));
}

#[tokio::test]
async fn a_targets_schema_is_searchable_with_its_history_and_the_diff_between_snapshots() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = TestDatabase::create("mh_test_snap").await;
    let target = app.pg_target(&slug, &set, "shard-1", &db).await;
    let (_, body) = app
        .get(&format!("/api/v1/targets/{target}/schema"), &app.user)
        .await;
    assert_eq!(body["snapshot"], serde_json::Value::Null, "{body}");
    app.migration(&slug, "1", "CREATE TABLE accounts (id int);", "")
        .await;
    app.migration(
        &slug,
        "2",
        "CREATE TABLE \"<u>orders</u>\" (total numeric);",
        "",
    )
    .await;
    app.run_up(&slug, &set, "1").await;
    app.run_up(&slug, &set, "2").await;

    let (status, history) = app
        .get(&format!("/api/v1/targets/{target}/snapshots"), &app.user)
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let taken: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["taken"].as_str().unwrap())
        .collect();
    assert_eq!(taken, ["after", "after", "before"], "newest first");
    let (_, current) = app
        .get(
            &format!("/api/v1/targets/{target}/schema?q=TOTAL"),
            &app.user,
        )
        .await;
    assert_eq!(current["snapshot"]["id"], history[0]["id"]);
    assert_eq!(
        current["schema"],
        "table public.\"<u>orders</u>\"\n  column total numeric"
    );
    let (from, to) = (
        history[1]["id"].as_str().unwrap(),
        history[0]["id"].as_str().unwrap(),
    );
    let (_, diff) = app
        .get(
            &format!("/api/v1/targets/{target}/schema/diff?from={from}&to={to}"),
            &app.user,
        )
        .await;
    assert_eq!(diff["added"][0], "table public.\"<u>orders</u>\"", "{diff}");
    let (status, _) = app
        .get(
            &format!(
                "/api/v1/targets/{target}/schema?snapshot={}",
                Uuid::new_v4()
            ),
            &app.user,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let user = TokenBrowser::new(&app, &app.user);
    let page = user
        .get(&format!(
            "/targets/{target}/schema?from={from}&to={to}&q=orders"
        ))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("&lt;u&gt;orders&lt;") && !page.body.contains("<u>orders</u>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("diff with the one before"));
    assert!(page.body.contains("class=\"diff-add\""));
    assert!(
        user.get(&format!("/targets/{target}"))
            .await
            .body
            .contains(&format!("/targets/{target}/schema"))
    );

    // The schema each version produces, from the snapshots taken at it.
    let (status, at_1) = app
        .get(
            &format!("/api/v1/projects/{slug}/migrations/1/schema"),
            &app.user,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{at_1}");
    assert_eq!(at_1[0]["engine"], "postgres");
    assert_eq!(at_1[0]["snapshot"]["version"], "1");
    let text = at_1[0]["schema"].as_str().unwrap();
    assert!(
        text.contains("table public.accounts") && !text.contains("orders"),
        "{text}"
    );
    let (_, at_2) = app
        .get(
            &format!("/api/v1/projects/{slug}/migrations/2/schema"),
            &app.user,
        )
        .await;
    assert!(
        at_2[0]["schema"]
            .as_str()
            .unwrap()
            .contains("<u>orders</u>")
    );
    let page = user.get(&format!("/projects/{slug}/migrations/2")).await;
    assert!(
        page.body.contains("The schema this version produces")
            && page.body.contains("&lt;u&gt;orders&lt;")
            && !page.body.contains("<u>orders</u>"),
        "{}",
        page.body
    );
}
