//! A DB set as a fleet: per target its version, how far behind, dirty,
//! drifted, unreachable at the last check and its last run; the summary
//! line and the filters — on the page and in `GET …/db-sets/{id}`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestApp, TokenBrowser};
use common::{store::audit::Actor, testing::TestDatabase};
use worker::scan::Scanner;

fn names(body: &Value) -> Vec<&str> {
    body["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn the_db_set_says_where_each_target_stands() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let dbs = [
        TestDatabase::create("mh_test_fleetview").await,
        TestDatabase::create("mh_test_fleetview").await,
        TestDatabase::create("mh_test_fleetview").await,
    ];
    let mut ids = Vec::new();
    for (i, db) in dbs.iter().enumerate() {
        ids.push(
            app.pg_target(&slug, &set, &format!("shard-{}", i + 1), db)
                .await,
        );
    }
    app.migration(&slug, "1", "CREATE TABLE accounts (id int);", "")
        .await;
    let run = app.run_up(&slug, &set, "1").await;
    assert_eq!(run["state"], "succeeded");
    let run_id = run["id"].as_str().unwrap();

    let path = format!("/api/v1/projects/{slug}/db-sets/{set}");
    let (status, body) = app.get(&path, &app.user).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["summary"], "3 at 1", "{body}");
    let first = &body["targets"][0];
    assert_eq!(first["current_version"], "1", "{first}");
    assert_eq!(first["pending"], 0);
    assert_eq!(first["last_run_id"], run_id);
    assert_eq!(first["last_run_state"], "succeeded");
    assert!(first["last_run_at"].is_string());
    assert_eq!(
        (first["dirty"].clone(), first["drifted"].clone()),
        (json!(false), json!(false))
    );
    assert!(first.get("password").is_none() && first.get("target_id").is_none());

    // Version 2 comes; shard-2 drifts by hand; shard-3 becomes unreachable;
    // shard-9 joins, never migrated.
    app.migration(&slug, "2", "CREATE INDEX accounts_id ON accounts (id);", "")
        .await;
    let late = TestDatabase::create("mh_test_fleetview").await;
    app.pg_target(&slug, &set, "shard-9", &late).await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&dbs[1].url)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE accounts ADD COLUMN note text")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let scanner = Scanner {
        db: app.pool.clone(),
        keys: app.keys.clone(),
        pool: "default".into(),
        actor: Actor::system("worker:test"),
        lock_wait: Duration::from_secs(2),
        every: Duration::from_secs(3600),
    };
    let shard2: Uuid = ids[1].parse().unwrap();
    scanner.scan(shard2).await.unwrap();
    let (status, _) = app
        .patch(
            &format!("/api/v1/targets/{}", ids[2]),
            &app.manager,
            json!({ "database": "mh_test_fleetview_gone" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let err = scanner.scan(ids[2].parse().unwrap()).await.unwrap_err();
    assert!(err.contains("mh_test_fleetview_gone"), "{err}");

    let (_, body) = app.get(&path, &app.user).await;
    assert_eq!(
        body["summary"], "4 behind, 1 drifted, 1 unreachable at the last check",
        "{body}"
    );
    assert_eq!(body["counts"]["latest_version"], "2");
    assert_eq!(body["targets"][1]["drifted"], true);
    assert_eq!(body["targets"][1]["pending"], 1);
    assert!(
        body["targets"][2]["unreachable"]
            .as_str()
            .unwrap()
            .contains("mh_test_fleetview_gone")
    );
    let (_, drifted) = app.get(&format!("{path}?state=drifted"), &app.user).await;
    assert_eq!(names(&drifted), ["shard-2"]);
    assert_eq!(
        drifted["counts"]["total"], 4,
        "the counts cover every target"
    );
    // Orders: by name, the most behind first, the most recently run first.
    let (_, by_name) = app.get(&path, &app.user).await;
    assert_eq!(
        names(&by_name),
        ["shard-1", "shard-2", "shard-3", "shard-9"]
    );
    let (_, behind) = app.get(&format!("{path}?sort=behind"), &app.user).await;
    assert_eq!(names(&behind)[0], "shard-9", "{behind}");
    assert_eq!(behind["targets"][0]["pending"], 2);
    let (_, recent) = app.get(&format!("{path}?sort=last_run"), &app.user).await;
    assert_eq!(names(&recent)[3], "shard-9", "never run: last");
    let (status, _) = app.get(&format!("{path}?sort=size"), &app.user).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, none) = app
        .get(&format!("{path}?state=up_to_date"), &app.user)
        .await;
    assert!(names(&none).is_empty());
    let (status, err) = app.get(&format!("{path}?state=broken"), &app.user).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["field"], "state");

    // The page: the summary, the columns, the badges, the filters.
    let user = TokenBrowser::new(&app, &app.user);
    let page = user.get(&format!("/projects/{slug}/db-sets/{set}")).await;
    assert_eq!(page.status, StatusCode::OK);
    for needle in [
        "<strong>4 behind, 1 drifted, 1 unreachable at the last check</strong>",
        "title=\"the most migrations behind first\">Version</a></th><th>State</th>",
        "<code>1</code> <span class=\"muted\">(1 behind)</span>",
        ">drifted</a>",
        ">unreachable at the last check</span>",
        &format!("<a href=\"/runs/{run_id}\">succeeded</a>"),
        "?state=drifted#targets\">drifted (1)</a>",
    ] {
        assert!(
            page.body.contains(needle),
            "missing {needle}: {}",
            page.body
        );
    }
    let page = user
        .get(&format!("/projects/{slug}/db-sets/{set}?state=unreachable"))
        .await;
    assert!(page.body.contains(">shard-3</a>") && !page.body.contains(">shard-1</a>"));
    let page = user
        .get(&format!(
            "/projects/{slug}/db-sets/{set}?sort=behind&limit=1"
        ))
        .await;
    assert!(page.body.contains(">shard-9</a>") && !page.body.contains(">shard-1</a>"));
    assert!(
        page.body
            .contains("sort=behind&amp;offset=1#targets\">More →</a>"),
        "{}",
        page.body
    );
    let page = user
        .get(&format!(
            "/projects/{slug}/db-sets/{set}?sort=behind&limit=1&offset=1"
        ))
        .await;
    assert!(page.body.contains(">shard-1</a>") && !page.body.contains(">shard-9</a>"));
    let page = user
        .get(&format!("/projects/{slug}/db-sets/{set}?state=dirty"))
        .await;
    assert!(page.body.contains("No target is dirty."), "{}", page.body);
}
