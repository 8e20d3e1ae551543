//! Importing migration folders: every workload of the repository's shared
//! workloads imports unchanged, re-importing is a no-op, conflicts write nothing.

use std::path::{Path, PathBuf};

use crate::support::{TestApp, code};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn workloads() -> PathBuf {
    std::env::var("MH_WORKLOADS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/workloads"))
}

fn folder(dir: &Path) -> Vec<Value> {
    let mut files: Vec<Value> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| {
            panic!(
                "workload folder {} ({e}); set MH_WORKLOADS_DIR",
                dir.display()
            )
        })
        .map(|e| e.unwrap().path())
        .map(|p| {
            json!({
                "path": p.file_name().unwrap().to_string_lossy(),
                "content": std::fs::read_to_string(&p).unwrap(),
            })
        })
        .collect();
    files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    files
}

async fn import(app: &TestApp, slug: &str, files: Vec<Value>) -> (StatusCode, Value) {
    app.post(
        &format!("/api/v1/projects/{slug}/migrations/import"),
        &app.user,
        json!({ "files": files }),
    )
    .await
}

#[tokio::test]
async fn every_workload_imports_unchanged_and_reimport_is_a_no_op() {
    let app = TestApp::spawn().await;
    for (slug, dir, expected) in [
        ("kratos-pg", "kratos/postgres", 327),
        ("kratos-my", "kratos/mysql", 319),
        ("fanout-pg", "synthetic-fanout/postgres", 20),
        ("fanout-my", "synthetic-fanout/mysql", 20),
    ] {
        app.project(slug).await;
        let files = folder(&workloads().join(dir));
        let (status, report) = import(&app, slug, files.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{slug}: {report}");
        assert_eq!(report["layout"], "golang-migrate");
        assert_eq!(
            report["created"].as_array().unwrap().len(),
            expected,
            "{slug}"
        );

        // The scripts are stored byte for byte.
        let first = &files[files
            .iter()
            .position(|f| f["path"].as_str().unwrap().ends_with(".up.sql"))
            .unwrap()];
        let version = first["path"]
            .as_str()
            .unwrap()
            .split('_')
            .next()
            .unwrap()
            .trim_start_matches('0');
        let (_, stored) = app
            .get(
                &format!("/api/v1/projects/{slug}/migrations/{version}"),
                &app.user,
            )
            .await;
        assert_eq!(stored["up_sql"], first["content"], "{slug} {version}");

        let (status, again) = import(&app, slug, files).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again["created"].as_array().unwrap().len(), 0);
        assert_eq!(again["unchanged"].as_array().unwrap().len(), expected);
    }
    // CREATE INDEX CONCURRENTLY is recognised as non-transactional.
    let (_, m) = app
        .get(
            "/api/v1/projects/kratos-pg/migrations/20260616000000000000",
            &app.user,
        )
        .await;
    assert_eq!(m["transactional"], false);
}

#[tokio::test]
async fn conflicts_are_reported_per_version_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let slug = app.project("shop").await;
    app.migration(&slug, "2", "CREATE TABLE b (id int);", "")
        .await;
    let files = vec![
        json!({"path": "1_a.up.sql", "content": "CREATE TABLE a (id int);"}),
        json!({"path": "2_b.up.sql", "content": "CREATE TABLE b (id bigint);"}),
    ];
    let (status, body) = import(&app, &slug, files).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "import_conflicts");
    assert_eq!(body["conflicts"][0]["version"], "2");
    let count = app.count("SELECT count(*) FROM migrations").await;
    assert_eq!(count, 1, "all or nothing");

    for (files, needle) in [
        (
            vec![
                json!({"path": "V1__a.sql", "content": "x"}),
                json!({"path": "2_b.up.sql", "content": "y"}),
            ],
            "layout",
        ),
        (
            vec![json!({"path": "3_c.down.sql", "content": "DROP TABLE c;"})],
            "no up script",
        ),
        (
            vec![json!({"path": "4_d.up.sql", "content": "SELECT 1;\u{0000}"})],
            "files[0].content",
        ),
        (vec![], "no migration files"),
    ] {
        let (status, body) = import(&app, &slug, files).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
    let count = app.count("SELECT count(*) FROM migrations").await;
    assert_eq!(count, 1);
}

#[tokio::test]
async fn the_import_command_reads_a_folder() {
    let app = TestApp::spawn().await;
    app.project("fanout").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["import", "--project", "fanout"])
        .arg(workloads().join("synthetic-fanout/postgres"))
        .env("MH_DATABASE_URL", &app.db.url)
        .env(
            "MH_ENCRYPTION_KEYS",
            common::crypto::Keyring::generate_entry("k1"),
        )
        .env("MH_LOG_FORMAT", "text")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 20 migration(s)"));
    let (_, list) = app
        .get("/api/v1/projects/fanout/migrations?limit=100", &app.user)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 20);
    assert_eq!(
        list["items"][0]["author"],
        control_plane::cli::IMPORT_ACCOUNT
    );
    assert_eq!(app.audit_rows("migrations.imported").await.len(), 1);
}
