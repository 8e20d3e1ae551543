//! `control-plane ci …`, the client for pipelines: the real binary, run as a
//! subprocess with nothing but MH_URL and MH_TOKEN (no tool database, no
//! settings), against a real control plane; runs are executed by an
//! in-process worker on real PostgreSQL target databases.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use crate::support::{Fleet, PgTarget, TestApp};
use clap::Parser;
use common::testing::TestDatabase;
use control_plane::ci::CiCommand;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Child;

/// The binary with a clean environment: the `ci` commands must not need the
/// control plane's settings (MH_DATABASE_URL, MH_ENCRYPTION_KEYS).
fn control_plane(app: &TestApp, token: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_control-plane"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MH_URL", app.url("/"))
        .env("MH_TOKEN", token)
        .kill_on_drop(true);
    cmd
}

/// Runs `control-plane ci <args>` to its end. Async, so the app and the
/// worker of the test keep serving while it runs.
async fn ci(app: &TestApp, token: &str, args: &[&str]) -> Output {
    let out = control_plane(app, token)
        .arg("ci")
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        !text(&out.stdout).contains(token) && !text(&out.stderr).contains(token),
        "the token is never printed"
    );
    out
}

fn spawn_ci(app: &TestApp, token: &str, args: &[&str]) -> Child {
    control_plane(app, token)
        .arg("ci")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The command exited with `code`.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", show(out));
}

/// Every line of standard output as JSON.
fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", show(out))))
        .collect()
}

/// A folder of migration files of the test's own, removed when dropped.
struct Folder(PathBuf);

impl Folder {
    fn new(files: &[(&str, &str)]) -> Folder {
        let dir = std::env::temp_dir().join(format!("mh-ci-{}", uuid::Uuid::new_v4()));
        let folder = Folder(dir);
        for (path, content) in files {
            folder.write(path, content);
        }
        folder
    }

    fn write(&self, path: &str, content: &str) {
        let path = self.0.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `ci sync --project shop <flags> <folder>` as the user.
async fn sync(app: &TestApp, folder: &Folder, flags: &[&str]) -> Output {
    let args: Vec<&str> = ["sync", "--project", "shop"]
        .into_iter()
        .chain(flags.iter().copied())
        .chain([folder.path()])
        .collect();
    ci(app, &app.user, &args).await
}

/// Project `shop` with DB set `orders` (environment `daily`) of one fresh
/// PostgreSQL database: (target id, database).
async fn shop_with_target(app: &TestApp) -> (String, TestDatabase) {
    let slug = app.project("shop").await;
    let set = app.db_set(&slug, "orders", "daily").await;
    let db = TestDatabase::create("mh_test_ci_target").await;
    (app.pg_target(&slug, &set, "orders-1", &db).await, db)
}

const CUSTOMERS_UP: &str =
    "CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL);";

fn shop_migrations() -> Folder {
    Folder::new(&[
        ("000001_customers.up.sql", CUSTOMERS_UP),
        ("000001_customers.down.sql", "DROP TABLE customers;"),
        (
            "000002_orders.up.sql",
            "CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers (id));",
        ),
        ("README.md", "not a migration"),
    ])
}

/// `ci request` as the user; returns the run id it printed.
/// `ci request --project shop --db-set <set> --to <to> <flags>` as the user.
async fn ci_request(app: &TestApp, set: &str, to: &str, flags: &[&str]) -> Output {
    let args: Vec<&str> = ["request", "--project", "shop", "--db-set", set, "--to", to]
        .into_iter()
        .chain(flags.iter().copied())
        .collect();
    ci(app, &app.user, &args).await
}

/// `ci request` of DB set `orders`; returns the run id it printed.
async fn request(app: &TestApp, to: &str) -> String {
    let out = ci_request(app, "orders", to, &[]).await;
    assert_exit(&out, 0);
    let id = text(&out.stdout).trim().to_owned();
    uuid::Uuid::parse_str(&id).unwrap_or_else(|_| panic!("a run id alone: {}", show(&out)));
    id
}

async fn migration_count(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM migrations").await
}

#[tokio::test]
async fn sync_creates_then_is_idempotent_and_a_changed_file_is_named() {
    let app = TestApp::spawn().await;
    app.project("shop").await;
    let folder = shop_migrations();

    let out = sync(&app, &folder, &[]).await;
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout).trim(), "2", "the newest version, alone");
    assert!(
        text(&out.stderr).contains("created 2 migration(s)"),
        "{}",
        show(&out)
    );
    assert_eq!(migration_count(&app).await, 2);

    // The same folder again: nothing new, exit 0.
    let out = sync(&app, &folder, &[]).await;
    assert_exit(&out, 0);
    assert!(text(&out.stderr).contains("nothing new"), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("2 migration(s) unchanged"),
        "{}",
        show(&out)
    );
    let out = sync(&app, &folder, &["--json"]).await;
    assert_exit(&out, 0);
    let report = &json_lines(&out)[0];
    assert_eq!(report["status"], "unchanged", "{report}");
    assert_eq!(report["created"], json!([]));
    assert_eq!(report["unchanged"], json!(["1", "2"]));
    assert_eq!(report["layout"], "golang-migrate");
    assert_eq!(report["newest_version"], "2");

    // An imported file edited in the repository: exit 1, the file named,
    // nothing written (a new file next to it is not imported either).
    folder.write(
        "000001_customers.up.sql",
        "CREATE TABLE customers (id bigint PRIMARY KEY);",
    );
    folder.write("000003_items.up.sql", "CREATE TABLE items (id bigint);");
    let out = sync(&app, &folder, &[]).await;
    assert_exit(&out, 1);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("conflict: 000001_customers.up.sql: version 1"),
        "{}",
        show(&out)
    );
    assert!(
        stderr.contains("error: import_conflicts:"),
        "{}",
        show(&out)
    );
    assert!(text(&out.stdout).is_empty(), "no version to carry on with");
    assert_eq!(migration_count(&app).await, 2, "all or nothing");

    let out = sync(&app, &folder, &["--json"]).await;
    assert_exit(&out, 1);
    let report = &json_lines(&out)[0];
    assert_eq!(report["status"], "conflicts", "{report}");
    assert_eq!(report["error"]["code"], "import_conflicts");
    assert_eq!(report["conflicts"][0]["version"], "1");
    assert_eq!(
        report["conflicts"][0]["paths"],
        json!(["000001_customers.down.sql", "000001_customers.up.sql"]),
        "every file of the version"
    );
}

#[tokio::test]
async fn sync_of_an_out_of_order_version_needs_the_flag() {
    let app = TestApp::spawn().await;
    let (target, _db) = shop_with_target(&app).await;
    let folder = Folder::new(&[
        ("000001_customers.up.sql", CUSTOMERS_UP),
        ("000010_later.up.sql", "CREATE TABLE later (id int);"),
    ]);
    let out = sync(&app, &folder, &[]).await;
    assert_exit(&out, 0);
    // The target has both versions (adopted at 10).
    app.baseline_at(&target, "10").await;

    // Version 5 lands below 10: refused with the API's code, nothing written.
    folder.write(
        "000005_between.up.sql",
        "CREATE TABLE between_them (id int);",
    );
    let out = sync(&app, &folder, &[]).await;
    assert_exit(&out, 2);
    assert!(text(&out.stderr).contains("out_of_order"), "{}", show(&out));
    assert_eq!(migration_count(&app).await, 2);
    let out = sync(&app, &folder, &["--allow-out-of-order"]).await;
    assert_exit(&out, 0);
    assert_eq!(migration_count(&app).await, 3);
}

#[tokio::test]
async fn request_prints_the_run_id_and_its_page() {
    let app = TestApp::spawn().await;
    let (_, _db) = shop_with_target(&app).await;
    let folder = shop_migrations();
    let out = sync(&app, &folder, &[]).await;
    assert_exit(&out, 0);

    let out = ci_request(&app, "orders", "2", &["--note", "from the pipeline"]).await;
    assert_exit(&out, 0);
    let id = text(&out.stdout).trim().to_owned();
    assert!(
        text(&out.stderr).contains(&app.url(&format!("/runs/{id}"))),
        "{}",
        show(&out)
    );
    let (status, run) = app.get(&format!("/api/v1/runs/{id}"), &app.user).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["note"], "from the pipeline");
    assert_eq!(run["target_version"], "2");

    let out = ci_request(&app, "orders", "1", &["--json"]).await;
    assert_exit(&out, 0);
    let run = &json_lines(&out)[0];
    let id = run["id"].as_str().unwrap();
    assert_eq!(run["url"], app.url(&format!("/runs/{id}")));
    assert_eq!(run["state"], "pending_approval");
    assert_eq!(run["environment"], "daily");
    assert_eq!(run["migrations"], json!(["1"]));

    // A DB set name that does not exist: exit 2, the known names listed.
    let out = ci_request(&app, "ordrs", "2", &[]).await;
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).contains("error: unknown_db_set:")
            && text(&out.stderr).contains("known: orders"),
        "{}",
        show(&out)
    );
    // The API's refusal, with its code: nothing is applied, so nothing to roll back.
    let out = ci_request(&app, "orders", "1", &["--down", "--json"]).await;
    assert_exit(&out, 2);
    assert_eq!(json_lines(&out)[0]["error"]["code"], "nothing_to_do");
    assert!(
        text(&out.stderr).starts_with("error: nothing_to_do: "),
        "{}",
        show(&out)
    );
}

#[tokio::test]
async fn wait_executes_the_approved_run_and_exits_0_when_it_succeeds() {
    let app = TestApp::spawn().await;
    let (_, db) = shop_with_target(&app).await;
    let folder = shop_migrations();
    let out = sync(&app, &folder, &[]).await;
    let to = text(&out.stdout).trim().to_owned();
    let run = request(&app, &to).await;

    // The pipeline waits while a manager approves; then it executes the run
    // itself (the requester may) and a worker migrates the target.
    let waiting = spawn_ci(
        &app,
        &app.user,
        &["wait", &run, "--execute", "--interval", "100ms", "--json"],
    );
    let fleet = Fleet::start(&app);
    app.approve(&run).await;
    let out = tokio::time::timeout(Duration::from_secs(120), waiting.wait_with_output())
        .await
        .expect("the run finishes")
        .unwrap();
    fleet.stop().await;
    assert_exit(&out, 0);
    let events = json_lines(&out);
    assert!(
        events.iter().any(|e| e["event"] == "executed"),
        "{}",
        show(&out)
    );
    let targets: Vec<&Value> = events.iter().filter(|e| e["event"] == "target").collect();
    assert_eq!(targets.len(), 1, "each target once: {}", show(&out));
    assert_eq!(targets[0]["target"], "orders-1");
    assert_eq!(targets[0]["state"], "succeeded");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "finished");
    assert_eq!(last["state"], "succeeded");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["url"], app.url(&format!("/runs/{run}")));

    let tables = db
        .number("SELECT count(*) FROM pg_tables WHERE tablename IN ('customers', 'orders')")
        .await;
    assert_eq!(tables, 2, "both migrations ran on the target");

    // Following a finished run ends at once, in words too.
    let out = ci(&app, &app.user, &["wait", &run]).await;
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("target orders-1: succeeded"), "{stdout}");
    assert!(stdout.contains(&format!("run {run} succeeded")), "{stdout}");
}

#[tokio::test]
async fn wait_exits_1_when_the_run_is_denied() {
    let app = TestApp::spawn().await;
    let (_, _db) = shop_with_target(&app).await;
    let folder = shop_migrations();
    sync(&app, &folder, &[]).await;
    let run = request(&app, "2").await;
    let (status, body) = app
        .post(
            &format!("/api/v1/runs/{run}/deny"),
            &app.manager,
            json!({"reason": "not on a Friday"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let out = ci(&app, &app.user, &["wait", &run, "--execute"]).await;
    assert_exit(&out, 1);
    assert!(
        text(&out.stdout).contains(&format!("run {run} denied (not on a Friday)")),
        "{}",
        show(&out)
    );
    let out = ci(&app, &app.user, &["wait", &run, "--json"]).await;
    assert_exit(&out, 1);
    let last = json_lines(&out).pop().unwrap();
    assert_eq!(last["state"], "denied");
    assert_eq!(last["exit_code"], 1);
}

#[tokio::test]
async fn wait_exits_1_and_shows_the_error_when_a_migration_fails() {
    let app = TestApp::spawn().await;
    let (_, _db) = shop_with_target(&app).await;
    let folder = Folder::new(&[
        ("000001_customers.up.sql", CUSTOMERS_UP),
        ("000002_broken.up.sql", "CREATE TABLE broken (id bigint,);"),
    ]);
    let out = sync(&app, &folder, &[]).await;
    assert_exit(&out, 0);
    let run = request(&app, "2").await;
    app.approve(&run).await;

    let fleet = Fleet::start(&app);
    let out = ci(
        &app,
        &app.user,
        &["wait", &run, "--execute", "--interval", "100ms", "--json"],
    )
    .await;
    fleet.stop().await;
    assert_exit(&out, 1);
    let events = json_lines(&out);
    let target = events
        .iter()
        .find(|e| e["event"] == "target")
        .unwrap_or_else(|| panic!("{}", show(&out)));
    assert_eq!(target["state"], "failed");
    assert!(
        target["error"].as_str().unwrap().contains("syntax error"),
        "the target's own error: {target}"
    );
    assert_eq!(events.last().unwrap()["state"], "failed");
}

#[tokio::test]
async fn wait_times_out_with_exit_2_when_nobody_approves() {
    let app = TestApp::spawn().await;
    let (_, _db) = shop_with_target(&app).await;
    let folder = shop_migrations();
    sync(&app, &folder, &[]).await;
    let run = request(&app, "2").await;

    let out = ci(
        &app,
        &app.user,
        &[
            "wait",
            &run,
            "--execute",
            "--timeout",
            "1s",
            "--interval",
            "200ms",
        ],
    )
    .await;
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).contains("error: timeout: ")
            && text(&out.stderr).contains("still pending approval"),
        "{}",
        show(&out)
    );
    let out = ci(
        &app,
        &app.user,
        &["wait", &run, "--timeout", "1s", "--json"],
    )
    .await;
    assert_exit(&out, 2);
    assert_eq!(json_lines(&out).pop().unwrap()["error"]["code"], "timeout");
}

#[tokio::test]
async fn errors_exit_2_with_the_api_error_code() {
    let app = TestApp::spawn().await;
    app.project("shop").await;
    let folder = shop_migrations();

    let bad_token = "mh_not-a-real-token";
    let out = ci(
        &app,
        bad_token,
        &["sync", "--project", "shop", folder.path()],
    )
    .await;
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).starts_with("error: unauthenticated: "),
        "{}",
        show(&out)
    );

    let out = ci(
        &app,
        &app.user,
        &["sync", "--project", "nope", "--json", folder.path()],
    )
    .await;
    assert_exit(&out, 2);
    assert_eq!(json_lines(&out)[0]["error"]["code"], "not_found");
    assert!(
        text(&out.stderr).starts_with("error: not_found: "),
        "{}",
        show(&out)
    );

    let out = ci(
        &app,
        &app.user,
        &["wait", &uuid::Uuid::new_v4().to_string(), "--json"],
    )
    .await;
    assert_exit(&out, 2);
    assert_eq!(json_lines(&out)[0]["error"]["code"], "not_found");

    // Without MH_TOKEN: a configuration error naming the variable.
    let out = control_plane(&app, "")
        .env_remove("MH_TOKEN")
        .args([
            "ci",
            "request",
            "--project",
            "shop",
            "--db-set",
            "x",
            "--to",
            "1",
        ])
        .output()
        .await
        .unwrap();
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).starts_with("error: configuration: MH_TOKEN is not set"),
        "{}",
        show(&out)
    );
}

#[test]
fn every_ci_command_has_help() {
    for args in [
        vec!["ci", "--help"],
        vec!["ci", "sync", "--help"],
        vec!["ci", "request", "--help"],
        vec!["ci", "wait", "--help"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
            .env_clear()
            .env("MH_TOKEN", "mh_secret-in-the-environment")
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let help = text(&out.stdout);
        assert!(help.contains("Usage"), "{args:?}");
        assert!(
            !help.contains("mh_secret-in-the-environment"),
            "help never shows the token: {help}"
        );
    }
}

/// The command line of the binary, as the pipelines call it.
#[derive(Debug, Parser)]
#[command(name = "control-plane")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, clap::Subcommand)]
enum Top {
    Ci {
        #[command(subcommand)]
        command: CiCommand,
    },
}

/// Splits a shell command line into words (quotes removed), ending at the
/// first unquoted `)`, `|`, `;`, `&`, `>` or `#` (the end of a command
/// substitution, a pipe, a comment …). A word that is one variable
/// (`$NAME`, `${NAME}`) becomes an example value: a UUID for run ids.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut in_word) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, ')' | '|' | ';' | '&' | '>' | '#') if !in_word || c != '#' => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
        .into_iter()
        .map(|w| {
            let name = w
                .strip_prefix("${")
                .and_then(|w| w.strip_suffix('}'))
                .or_else(|| w.strip_prefix('$'));
            match name {
                Some(n) if n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    if n.ends_with("RUN_ID") {
                        uuid::Uuid::nil().to_string()
                    } else {
                        format!("example-{}", n.to_lowercase())
                    }
                }
                _ => w,
            }
        })
        .collect()
}

/// Every `control-plane ci …` command of a script, continuation lines joined.
fn ci_commands(script: &str) -> Vec<Vec<String>> {
    script
        .replace("\\\n", " ")
        .lines()
        .flat_map(|line| {
            line.match_indices("control-plane ci ")
                .map(|(at, _)| shell_words(&line[at..]))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn scripts_of(file: &Path) -> Vec<String> {
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let mut scripts = Vec::new();
    let jobs = yaml.get("jobs").cloned().unwrap_or_else(|| yaml.clone());
    for (_, job) in jobs.as_mapping().unwrap() {
        // GitHub Actions: steps[].run; GitLab CI: (before_)script lines.
        for step in job
            .get("steps")
            .and_then(|s| s.as_sequence())
            .into_iter()
            .flatten()
        {
            if let Some(run) = step.get("run").and_then(|r| r.as_str()) {
                scripts.push(run.to_owned());
            }
        }
        for key in ["before_script", "script", "after_script"] {
            for line in job
                .get(key)
                .and_then(|s| s.as_sequence())
                .into_iter()
                .flatten()
            {
                let line = line.as_str().unwrap_or_else(|| {
                    panic!("{}: a {key} line is not a string: {line:?}", file.display())
                });
                scripts.push(line.to_owned());
            }
        }
    }
    scripts
}

#[test]
fn pipeline_examples_run_real_ci_commands() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ci");
    for file in ["github-actions.yml", "gitlab-ci.yml"] {
        let path = dir.join(file);
        let commands: Vec<Vec<String>> = scripts_of(&path)
            .iter()
            .flat_map(|s| ci_commands(s))
            .collect();
        let mut used = Vec::new();
        for words in &commands {
            assert!(
                !words.iter().any(|w| w.starts_with("--token")),
                "{file}: the token comes from MH_TOKEN, never a flag: {words:?}"
            );
            let parsed = Cli::try_parse_from(words)
                .unwrap_or_else(|e| panic!("{file}: {words:?} is not a valid command:\n{e}"));
            let Top::Ci { command } = parsed.command;
            used.push(match command {
                CiCommand::Sync(a) => {
                    assert_eq!(a.dir, Path::new("migrations/"), "{file}");
                    "sync"
                }
                CiCommand::Request(a) => {
                    assert!(!a.down && a.note.is_some(), "{file}: {a:?}");
                    "request"
                }
                CiCommand::Wait(a) => {
                    assert!(a.execute, "{file}: the pipeline executes once approved");
                    "wait"
                }
            });
        }
        assert_eq!(used, ["sync", "request", "wait"], "{file}: in this order");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("MH_TOKEN"),
            "{file} says where the token comes from"
        );
        assert!(
            text.contains("daily"),
            "{file} migrates the daily environment"
        );
    }
}

#[test]
fn shell_words_read_the_examples_lines() {
    assert_eq!(
        shell_words(r#"control-plane ci wait "$MH_RUN_ID" --execute # comment"#),
        [
            "control-plane",
            "ci",
            "wait",
            &uuid::Uuid::nil().to_string(),
            "--execute"
        ]
    );
    assert_eq!(
        shell_words(r#"control-plane ci sync --project "${P}" dir/) | tee x"#),
        [
            "control-plane",
            "ci",
            "sync",
            "--project",
            "example-p",
            "dir/"
        ]
    );
    assert_eq!(
        shell_words(r#"control-plane ci request --note 'a (b) | c' --to 2"#),
        [
            "control-plane",
            "ci",
            "request",
            "--note",
            "a (b) | c",
            "--to",
            "2"
        ]
    );
}
