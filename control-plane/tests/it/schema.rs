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

/// Migrations stored before absent and empty down scripts were told apart
/// kept a blank down script to mean "cannot be rolled back". The migration
/// that adds `reversible` keeps that meaning, keeps the text, and so keeps
/// every checksum valid — the same ones targets recorded in their histories.
#[tokio::test]
async fn existing_migrations_keep_their_meaning_and_checksums_across_the_down_script_change() {
    use common::{
        domain::{Checksum, Version},
        store::migrations,
    };
    use sha2::{Digest, Sha256};

    /// The checksum as it was computed when these rows were written.
    fn legacy(up: &str, down: &str) -> String {
        let mut h = Sha256::new();
        for part in [up, down] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    let db = TestDatabase::create("mh_test_schema").await;
    let pool = common::db::connect(&db.url, 2).await.unwrap();
    common::db::MIGRATOR
        .run_to(20261125000001, &pool)
        .await
        .unwrap();
    let user = uuid::Uuid::now_v7();
    let project = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, email, role) VALUES ($1, 'old@example.com', 'user')")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO projects (id, slug, name) VALUES ($1, 'old', 'Old')")
        .bind(project)
        .execute(&pool)
        .await
        .unwrap();
    let rows = [
        ("1", "CREATE TABLE a (id int);", "DROP TABLE a;"),
        ("2", "CREATE TABLE b (id int);", ""),
        ("3", "CREATE TABLE c (id int);", "\n"),
    ];
    for (version, up, down) in rows {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO migrations (id, project_id, version, version_key, name, up_sql, down_sql, checksum, author_id)
             VALUES ($1, $2, $3, ARRAY[$3::numeric], 'm', $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(project)
        .bind(version)
        .bind(up)
        .bind(down)
        .bind(legacy(up, down))
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO migration_revisions (migration_id, revision, name, up_sql, down_sql, checksum, author_id)
             VALUES ($1, 1, 'm', $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(up)
        .bind(down)
        .bind(legacy(up, down))
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    }

    common::db::migrate(&pool).await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    for (version, up, down) in rows {
        let row = migrations::by_version(&mut conn, project, &Version::parse(version).unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.checksum,
            legacy(up, down),
            "version {version}: unchanged"
        );
        let (text, reversible): (String, bool) =
            sqlx::query_as("SELECT down_sql, reversible FROM migrations WHERE version = $1")
                .bind(version)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
        assert_eq!(text, down, "the stored text is kept");
        // What the worker recomputes before it runs anything.
        assert_eq!(
            Checksum::of_stored(&row.up_sql, &text, reversible).as_str(),
            row.checksum,
            "version {version}"
        );
        let expected = (!down.trim().is_empty()).then_some(down);
        assert_eq!(row.down_sql.as_deref(), expected, "version {version}");
        let revisions = migrations::revisions(&mut conn, row.id).await.unwrap();
        assert_eq!(revisions[0].down_sql.as_deref(), expected);
    }
}

/// A task cancelled while its `BEGIN` was on the wire gives its connection
/// back inside a transaction sqlx does not know of; the pool must not hand
/// it out again, or later writes would join that transaction and be lost.
#[tokio::test]
async fn a_connection_returned_inside_a_transaction_is_not_handed_out_again() {
    let db = TestDatabase::create("mh_test_pool").await;
    let pool = common::db::connect(&db.url, 1).await.unwrap();
    let backend = async || -> i32 {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await
            .unwrap()
    };
    // Connections outside a transaction are kept and handed out again.
    let first = backend().await;
    assert_eq!(backend().await, first);
    {
        let mut conn = pool.acquire().await.unwrap();
        // What a cancelled `begin()` leaves: BEGIN done, no Transaction.
        sqlx::raw_sql("BEGIN").execute(&mut *conn).await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    // A transaction id is assigned by the first write; BEGIN above wrote
    // nothing, so ask the server for the transaction's state another way:
    // a second BEGIN inside a transaction only warns, SAVEPOINT outside one fails.
    let savepoint = sqlx::raw_sql("SAVEPOINT probe").execute(&mut *conn).await;
    assert!(
        savepoint.is_err(),
        "the pool handed out a connection inside a transaction"
    );
    let now: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_ne!(
        now, first,
        "the connection left inside a transaction was closed"
    );
    drop(conn);
    pool.close().await;
}
