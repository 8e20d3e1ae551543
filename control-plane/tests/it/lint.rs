//! `control-plane lint`: the SQL review offline, on migration folders and
//! files, through the real binary (no tool database, no settings).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;

/// A folder of files under the system's temporary directory, removed when
/// dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("mh-lint-{}", uuid::Uuid::new_v4()));
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        Folder(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn lint(args: &[&str], path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .env_clear()
        .arg("lint")
        .args(args)
        .arg(path)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn lint_reports_file_and_line_and_fails_on_errors() {
    let folder = Folder::new(&[
        (
            "001_users.up.sql",
            "CREATE TABLE users (id bigint PRIMARY KEY, email text);\nCREATE INDEX users_email ON users (email);\n",
        ),
        ("001_users.down.sql", "DROP TABLE users;\n"),
        (
            "002_cleanup.up.sql",
            "-- the old column goes\n\nALTER TABLE users DROP COLUMN email;\n",
        ),
    ]);
    let out = lint(&["--engine", "postgres"], folder.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    let file = folder.path().join("002_cleanup.up.sql");
    assert!(
        text.lines().any(|l| l
            == format!(
                "{}:3: drop-column error drops column users.email",
                file.display()
            )),
        "{text}"
    );
    // The index is on a table the same migration created; the down script
    // is not reviewed.
    assert!(!text.contains("index-not-concurrent"), "{text}");
    assert!(!text.contains("drop-table"), "{text}");
}

#[test]
fn lint_passes_a_folder_with_warnings_only() {
    let folder = Folder::new(&[(
        "V1__index.sql",
        "CREATE INDEX users_email ON users (email);\n",
    )]);
    let out = lint(&[], folder.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout(&out).contains(":1: index-not-concurrent warning"),
        "{out:?}"
    );
}

#[test]
fn lint_points_into_the_up_section_of_a_dbmate_file() {
    let folder = Folder::new(&[(
        "20240101000000_rename.sql",
        "-- migrate:up\n\nALTER TABLE users RENAME TO people;\n\n-- migrate:down\nALTER TABLE people RENAME TO users;\n",
    )]);
    let out = lint(&["--format", "json"], folder.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let findings: Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = findings.as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["code"], "rename-table");
    assert_eq!(findings[0]["severity"], "error");
    assert_eq!(findings[0]["line"], 3);
    assert!(findings[0]["hint"].as_str().unwrap().contains("view"));
}

#[test]
fn lint_mysql_github_and_sarif_formats() {
    let folder = Folder::new(&[(
        "one.sql",
        "ALTER TABLE users MODIFY age bigint;\nALTER TABLE users ADD COLUMN b int;\n",
    )]);
    let file = folder.path().join("one.sql");
    let out = lint(&["--engine", "mysql", "--format", "github"], &file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("::warning file=")
                && l.contains(",line=1,title=mysql-copy-alter::")),
        "{text}"
    );
    assert!(text.contains("title=mysql-multiple-alters"), "{text}");

    let out = lint(&["--engine", "mysql", "--format", "sarif"], &file);
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert!(results.iter().any(|r| r["ruleId"] == "mysql-copy-alter"
        && r["locations"][0]["physicalLocation"]["region"]["startLine"] == 1));
    assert!(
        sarif["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .unwrap()
            .len()
            > 20
    );
}

#[test]
fn lint_reports_a_statement_that_does_not_parse() {
    let folder = Folder::new(&[("broken.sql", "SELECT 1;\nSELEC 2;\n")]);
    let out = lint(&[], &folder.path().join("broken.sql"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout(&out).contains("broken.sql:2: parse warning"),
        "{out:?}"
    );
}

#[test]
fn lint_an_unreadable_path_exits_2() {
    let out = lint(&[], Path::new("/nonexistent/migrations"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn lint_rates_by_an_environment_or_a_policy_file_and_honours_waivers() {
    let folder = Folder::new(&[
        (
            "001_index.up.sql",
            "CREATE INDEX users_email ON users (email);\n",
        ),
        ("001_index.down.sql", "DROP INDEX users_email;\n"),
        (
            "002_drop.up.sql",
            "-- migrate-hub:allow drop-table archived in 2025\nDROP TABLE old_users;\n",
        ),
        (
            "003_seed.up.sql",
            "CREATE TABLE seed (id int PRIMARY KEY);\n",
        ),
    ]);
    // The catalogue: the index warns, the drop is an error but waived.
    let out = lint(&[], folder.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains(":1: index-not-concurrent warning"), "{text}");
    assert!(
        text.contains(":2: drop-table error") && text.contains("waived: archived in 2025"),
        "{text}"
    );
    // prd's defaults make the locking rule an error.
    let out = lint(&["--environment", "prd"], folder.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains(":1: index-not-concurrent error"));
    // A policy file turns it off and wants down scripts.
    let policy = Folder::new(&[(
        "policy.json",
        r#"{"settings": {"index-not-concurrent": "off"}, "require_down": true}"#,
    )]);
    let file = policy.path().join("policy.json");
    let out = lint(
        &["--environment", "prd", "--policy", file.to_str().unwrap()],
        folder.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    assert!(!text.contains("index-not-concurrent"), "{text}");
    let downless: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("down-absent error"))
        .collect();
    assert_eq!(downless.len(), 2, "{text}");
    assert!(
        downless.iter().any(|l| l.contains("003_seed.up.sql:1:")),
        "{text}"
    );
    // A policy naming an analyzer the hub does not have is refused.
    let bad = Folder::new(&[("p.json", r#"{"settings": {"drop-tabel": "off"}}"#)]);
    let out = lint(
        &["--policy", bad.path().join("p.json").to_str().unwrap()],
        folder.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("drop-tabel"));
}
