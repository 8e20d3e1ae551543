//! `docs/DB_Schema.sql` must match what the migrations produce.

use std::process::Command;

use common::testing::TestDatabase;

/// Only the statements count: comments, session settings, pg_dump's random
/// `\restrict` keys and blank lines differ between runs and machines.
fn statements(dump: &str) -> Vec<&str> {
    dump.lines()
        .filter(|l| {
            let l = l.trim_end();
            !(l.is_empty()
                || l.starts_with("--")
                || l.starts_with("SET ")
                || l.starts_with("SELECT pg_catalog.set_config")
                || l.starts_with("\\restrict")
                || l.starts_with("\\unrestrict"))
        })
        .collect()
}

#[tokio::test]
async fn schema_dump_matches_the_migrations() {
    let db = TestDatabase::create("mh_test_schema").await;
    let pool = common::db::connect(&db.url, 2).await.unwrap();
    common::db::migrate(&pool).await.unwrap();
    pool.close().await;

    let output = Command::new("pg_dump")
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--schema=public",
            &db.url,
        ])
        .output()
        .expect("pg_dump runs (install postgresql-client)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let live = String::from_utf8(output.stdout).unwrap();
    let documented = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/DB_Schema.sql"
    ))
    .unwrap();
    let (live, documented) = (statements(&live), statements(&documented));
    if live != documented {
        let first = live
            .iter()
            .zip(&documented)
            .position(|(a, b)| a != b)
            .unwrap_or(live.len().min(documented.len()));
        panic!(
            "docs/DB_Schema.sql is out of date (first difference at statement line {first}: live {:?} vs documented {:?}); run scripts/dump-schema.sh",
            live.get(first),
            documented.get(first)
        );
    }
}
