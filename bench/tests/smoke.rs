//! The bench command itself, small: a quick fan-out against the real local
//! servers produces the JSON result it promises and leaves no database
//! behind; bad configuration is one line and exit status 2.

use std::process::Command;

use mysql_async::prelude::Queryable;
use serde_json::Value;
use sqlx::{Connection, PgConnection};

fn bench() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bench"));
    if std::env::var_os("MH_WORKLOADS_DIR").is_none() {
        cmd.env(
            "MH_WORKLOADS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/workloads"),
        );
    }
    cmd
}

fn pg_url() -> String {
    std::env::var("MH_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn mysql_url() -> String {
    std::env::var("MH_BENCH_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

#[tokio::test]
async fn quick_fanout_writes_its_json_result_and_drops_its_databases() {
    let out = std::env::temp_dir().join(format!("mh-bench-smoke-{}.json", uuid::Uuid::new_v4()));
    let run = bench()
        .args([
            "fanout",
            "--quick",
            "--targets",
            "2",
            "--mysql-targets",
            "1",
            "--json",
        ])
        .arg(&out)
        .output()
        .expect("the bench binary runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("fan-out"), "the table is printed: {stdout}");

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    assert!(doc["date"].is_string());
    assert!(doc["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(
        doc["machine"]["postgresql"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    let fanout = &doc["results"]["fanout"];
    for engine in ["postgres", "mysql"] {
        let d = &fanout["details"][engine];
        assert_eq!(d["migrations"], 20, "{d}");
        let hub = d["hub_seconds"].as_f64().unwrap();
        let floor = d["floor_seconds"].as_f64().unwrap();
        assert!(hub > 0.0 && floor > 0.0, "{d}");
        assert!(d["ratio"].as_f64().unwrap() > 0.0);
        assert_eq!(d["profile"][0]["avg_migrations_recorded"], 20.0, "{d}");
        // One drift scan of the fan-out targets, each found in sync.
        assert!(d["drift_scan_seconds"].as_f64().unwrap() > 0.0, "{d}");
        // The tool database's work per target execution.
        assert!(d["tool_commits_per_target"].as_f64().unwrap() > 0.0, "{d}");
        assert!(
            d["tool_rows_read_per_target"].as_f64().unwrap() > 0.0,
            "{d}"
        );
    }
    assert_eq!(fanout["details"]["postgres"]["targets"], 2);
    // Per engine: the fan-out, the tool database's work and the drift scan.
    assert_eq!(fanout["rows"].as_array().unwrap().len(), 6);
    assert!(fanout["bars_met"].is_boolean());

    // Every scratch database (tool and targets) is gone.
    let prefix = doc["scratch_prefix"].as_str().unwrap();
    assert!(prefix.starts_with("mh_bench_"));
    let mut pg = PgConnection::connect(&pg_url()).await.unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE $1 || '%'")
            .bind(prefix)
            .fetch_one(&mut pg)
            .await
            .unwrap();
    assert_eq!(left, 0, "PostgreSQL databases left behind");
    let mut my = mysql_async::Conn::from_url(mysql_url()).await.unwrap();
    let left: Option<i64> = my
        .exec_first(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE CONCAT(?, '%')",
            (prefix,),
        )
        .await
        .unwrap();
    assert_eq!(left, Some(0), "MariaDB databases left behind");
    let _ = my.disconnect().await;
}

#[test]
fn bad_configuration_is_one_line_and_exit_status_2() {
    for args in [
        vec!["nonsense"],
        vec!["fanout", "--targets", "0"],
        vec!["fanout", "--concurrency", "1000"],
        vec!["fanout", "--workloads", "/nonexistent"],
    ] {
        let run = bench().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("bench: "), "{stderr}");
    }
    let help = bench().arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("fanout"));
}

#[test]
fn lint_reviews_the_kratos_history_of_both_engines() {
    let out = std::env::temp_dir().join(format!("mh-bench-lint-{}.json", uuid::Uuid::new_v4()));
    let run = bench()
        .args(["lint", "--quick", "--json"])
        .arg(&out)
        .output()
        .expect("the bench binary runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed: {stderr}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    let lint = &doc["results"]["lint"];
    for engine in ["postgres", "mysql"] {
        let d = &lint["details"][engine];
        assert!(d["median_ms"].as_f64().unwrap() > 0.0, "{d}");
        // A real history: the analyzers find things, and tables are created.
        assert!(d["findings"].as_u64().unwrap() > 10, "{d}");
    }
    assert!(
        lint["details"]["postgres"]["per_analyzer"]["index-not-concurrent"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(lint["rows"].as_array().unwrap().len(), 2);
}
