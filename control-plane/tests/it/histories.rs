//! Bringing a history: migration folders kept for years with another tool
//! import and run as that tool runs them. Empty up files are no-op versions;
//! a down file that exists (even empty) means the version can be rolled back
//! with it, a missing one means it cannot; versions order numerically.
//!
//! The fixture is one product's history in a PostgreSQL and a MySQL variant
//! (version 2 is a fix only PostgreSQL needed: an empty file for MySQL),
//! written out in every layout, imported through the API and run up and
//! down on real PostgreSQL and MariaDB databases by an in-process worker.

use crate::support::{Fleet, PgTarget, TestApp, versions};
use common::testing::{TestDatabase, TestMysqlDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    Postgres,
    Mysql,
}

/// One version of the fixture: up, and down (`None`: no down file).
struct Version {
    version: &'static str,
    name: &'static str,
    up: &'static str,
    down: Option<&'static str>,
}

fn history(engine: Engine) -> Vec<Version> {
    let (fix_up, fix_down) = match engine {
        Engine::Postgres => (
            "CREATE INDEX users_email_idx ON users (email);\n",
            Some("DROP INDEX users_email_idx;\n"),
        ),
        // Only PostgreSQL needed the fix: an empty file keeps versions aligned.
        Engine::Mysql => ("", Some("")),
    };
    vec![
        Version {
            version: "1",
            name: "users",
            up: "CREATE TABLE users (id int PRIMARY KEY, email varchar(200));\n",
            down: Some("DROP TABLE users;\n"),
        },
        Version {
            version: "2",
            name: "email_index",
            up: fix_up,
            down: fix_down,
        },
        Version {
            version: "3",
            name: "seed",
            up: "INSERT INTO users (id, email) VALUES (1, 'seed@example.com');\n",
            // No down file: cannot be rolled back.
            down: None,
        },
        Version {
            version: "10",
            name: "audit_log",
            up: "CREATE TABLE audit_log (id int PRIMARY KEY);\n",
            down: Some("DROP TABLE audit_log;\n"),
        },
        Version {
            version: "11",
            name: "lowercase_emails",
            up: "UPDATE users SET email = lower(email);\n",
            // Exists and is empty: rolling back needs no SQL.
            down: Some(""),
        },
    ]
}

/// The layouts, as each tool writes its files.
const LAYOUTS: [&str; 5] = ["golang-migrate", "dbmate", "goose", "flyway", "diesel"];

fn files(layout: &str, engine: Engine) -> Vec<Value> {
    let mut out = Vec::new();
    let mut file = |path: String, content: String| {
        out.push(json!({"path": path, "content": content}));
    };
    for v in history(engine) {
        let (n, name) = (v.version, v.name);
        match layout {
            "golang-migrate" => {
                file(format!("{n}_{name}.up.sql"), v.up.into());
                if let Some(down) = v.down {
                    file(format!("{n}_{name}.down.sql"), down.into());
                }
            }
            "dbmate" => {
                let mut text = format!("-- migrate:up\n{}\n", v.up);
                if let Some(down) = v.down {
                    text.push_str(&format!("-- migrate:down\n{down}\n"));
                }
                file(format!("{n}_{name}.sql"), text);
            }
            "goose" => {
                let mut text = format!("-- +goose Up\n{}\n", v.up);
                if let Some(down) = v.down {
                    text.push_str(&format!("-- +goose Down\n{down}\n"));
                }
                file(format!("{n:0>5}_{name}.sql"), text);
            }
            "flyway" => {
                file(format!("V{n}__{name}.sql"), v.up.into());
                if let Some(down) = v.down {
                    file(format!("U{n}__{name}.sql"), down.into());
                }
            }
            "diesel" => {
                let dir = format!("migrations/{n:0>14}_{name}");
                file(format!("{dir}/up.sql"), v.up.into());
                if let Some(down) = v.down {
                    file(format!("{dir}/down.sql"), down.into());
                }
            }
            other => panic!("no layout {other}"),
        }
    }
    out
}

/// A target database of `engine`, kept alive by the returned guard.
enum Guard {
    Pg(TestDatabase),
    My(TestMysqlDatabase),
}

impl Guard {
    /// The number a query on the target answers (`SELECT count(*) …`).
    async fn number(&self, sql: &str) -> i64 {
        match self {
            Guard::Pg(db) => db.number(sql).await,
            Guard::My(db) => db.number(sql).await,
        }
    }
}

async fn target(app: &TestApp, slug: &str, set: &str, engine: Engine) -> (String, Guard) {
    match engine {
        Engine::Postgres => {
            let db = TestDatabase::create("mh_test_hist").await;
            (app.pg_target(slug, set, "pg", &db).await, Guard::Pg(db))
        }
        Engine::Mysql => {
            let db = TestMysqlDatabase::create("mh_test_hist").await;
            (app.mysql_target(slug, set, "my", &db).await, Guard::My(db))
        }
    }
}

/// Requests, approves and executes a run; returns the finished run.
async fn run(app: &TestApp, slug: &str, set: &str, direction: &str, to: &str) -> Value {
    let run = app
        .request_run_with(slug, set, to, json!({"direction": direction}))
        .await;
    app.approve_and_run(&run).await
}

/// The versions applied on a target, read live from its own history by the
/// hub, which also reports whether the hub agrees with it.
async fn applied(app: &TestApp, target: &str) -> Vec<String> {
    let state = app.target_state(target).await;
    assert_eq!(
        state["drift"]["in_sync"], true,
        "hub and target agree: {state}"
    );
    versions(&state["applied"])
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn histories_in_every_layout_import_and_run_up_and_down_on_both_engines() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::start_with(&app, 8);
    let mut projects = Vec::new();
    for layout in LAYOUTS {
        for engine in [Engine::Postgres, Engine::Mysql] {
            let slug = app
                .project(&format!(
                    "{}-{}",
                    layout.replace('-', ""),
                    if engine == Engine::Postgres {
                        "pg"
                    } else {
                        "my"
                    }
                ))
                .await;
            let (status, report) = app
                .post(
                    &format!("/api/v1/projects/{slug}/migrations/import"),
                    &app.user,
                    json!({"files": files(layout, engine)}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{layout}: {report}");
            assert_eq!(report["layout"], layout);
            assert_eq!(report["created"], json!(["1", "2", "3", "10", "11"]));

            // Each tool's meaning is kept: no-op versions, present-but-empty
            // downs, and missing downs.
            let (_, list) = app
                .get(&format!("/api/v1/projects/{slug}/migrations"), &app.user)
                .await;
            let items = list["items"].as_array().unwrap();
            let by = |v: &str| items.iter().find(|m| m["version"] == v).unwrap().clone();
            assert_eq!(by("2")["no_op"], engine == Engine::Mysql, "{layout}");
            assert_eq!(by("1")["no_op"], false);
            assert!(by("3")["down_sql"].is_null(), "{layout}: no down file");
            assert_eq!(by("11")["down_sql"], "", "{layout}: empty down file");
            assert_ne!(by("3")["checksum"], by("11")["checksum"]);

            // Importing the same folder again changes nothing.
            let (status, again) = app
                .post(
                    &format!("/api/v1/projects/{slug}/migrations/import"),
                    &app.user,
                    json!({"files": files(layout, engine)}),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{again}");
            assert_eq!(again["unchanged"].as_array().unwrap().len(), 5);

            let set = app.db_set(&slug, "main", "daily").await;
            let (target_id, guard) = target(&app, &slug, &set, engine).await;
            projects.push((layout, engine, slug, set, target_id, guard));
        }
    }

    for (layout, engine, slug, set, target, _) in &projects {
        let what = format!("{layout} on {engine:?}");
        let up = run(&app, slug, set, "up", "11").await;
        assert_eq!(up["state"], "succeeded", "{what}: {up}");
        assert_eq!(
            applied(&app, target).await,
            ["1", "2", "3", "10", "11"],
            "{what}"
        );

        // Down through the empty down script of 11 and the real one of 10.
        let down = run(&app, slug, set, "down", "3").await;
        assert_eq!(down["state"], "succeeded", "{what}: {down}");
        assert_eq!(applied(&app, target).await, ["1", "2", "3"], "{what}");

        // 3 has no down file: a run across it is refused, naming it.
        let (status, refused) = app.request_run_as(&app.user, slug, set, "down", "1").await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {refused}"
        );
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(message.contains("version 3"), "{message}");
    }

    fleet.stop().await;
}

/// goose files using its annotations: `NO TRANSACTION` for a PostgreSQL
/// migration that builds an index concurrently, and `StatementBegin` /
/// `StatementEnd` around a plpgsql function and MariaDB stored programs
/// whose bodies hold several `;`.
fn goose_files(engine: Engine) -> Vec<Value> {
    let files: [(&str, &str); 2] = match engine {
        Engine::Postgres => [
            (
                "db/migrations/00001_things.sql",
                "-- +goose Up
CREATE TABLE things (id int PRIMARY KEY, name text);
-- +goose StatementBegin
CREATE FUNCTION things_lower() RETURNS trigger AS $$
BEGIN
  NEW.name := lower(NEW.name);
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd
CREATE TRIGGER things_lower BEFORE INSERT ON things
  FOR EACH ROW EXECUTE FUNCTION things_lower();

-- +goose Down
DROP TABLE things;
DROP FUNCTION things_lower();
",
            ),
            (
                "db/migrations/00002_things_name_index.sql",
                "-- +goose NO TRANSACTION
-- +goose Up
CREATE INDEX CONCURRENTLY things_name_idx ON things (name);
-- +goose StatementBegin
CREATE FUNCTION things_count() RETURNS bigint AS $$
DECLARE
  n bigint;
BEGIN
  SELECT count(*) INTO n FROM things;
  RETURN n;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION things_count();
DROP INDEX CONCURRENTLY things_name_idx;
",
            ),
        ],
        Engine::Mysql => [
            (
                "db/migrations/00001_things.sql",
                "-- +goose Up
CREATE TABLE things (id int PRIMARY KEY, name varchar(100));
-- +goose StatementBegin
CREATE TRIGGER things_lower BEFORE INSERT ON things FOR EACH ROW
BEGIN
  SET NEW.name = lower(NEW.name);
  SET NEW.name = trim(NEW.name);
END;
-- +goose StatementEnd

-- +goose Down
DROP TABLE things;
",
            ),
            (
                "db/migrations/00002_thing_procedures.sql",
                "-- +goose Up
-- +goose StatementBegin
CREATE PROCEDURE add_thing(IN p_id INT, IN p_name VARCHAR(100))
BEGIN
  INSERT INTO things VALUES (p_id, p_name);
  UPDATE things SET name = concat(name, '!') WHERE id = p_id;
END;
-- +goose StatementEnd
-- A body that is a bare WHILE loop: only the block keeps it whole.
-- +goose StatementBegin
CREATE PROCEDURE fill_things(IN n INT)
WHILE n > 0 DO
  INSERT INTO things VALUES (100 + n, 'FILLED');
  SET n = n - 1;
END WHILE;
-- +goose StatementEnd

-- +goose Down
DROP PROCEDURE fill_things;
DROP PROCEDURE add_thing;
",
            ),
        ],
    };
    files
        .iter()
        .map(|(path, content)| json!({"path": path, "content": content}))
        .collect()
}

#[tokio::test]
async fn goose_annotations_run_as_goose_runs_them_on_both_engines() {
    let app = TestApp::spawn().await;
    let fleet = Fleet::start_with(&app, 8);
    for engine in [Engine::Postgres, Engine::Mysql] {
        let slug = app
            .project(match engine {
                Engine::Postgres => "goose-annotations-pg",
                Engine::Mysql => "goose-annotations-my",
            })
            .await;
        let (status, report) = app
            .post(
                &format!("/api/v1/projects/{slug}/migrations/import"),
                &app.user,
                json!({"files": goose_files(engine)}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{engine:?}: {report}");
        assert_eq!(report["layout"], "goose");
        assert_eq!(report["created"], json!(["1", "2"]));

        let (_, list) = app
            .get(&format!("/api/v1/projects/{slug}/migrations"), &app.user)
            .await;
        let items = list["items"].as_array().unwrap();
        let by = |v: &str| items.iter().find(|m| m["version"] == v).unwrap().clone();
        assert_eq!(by("1")["transactional"], true, "{engine:?}");
        if engine == Engine::Postgres {
            // `-- +goose NO TRANSACTION` stays in the script, where the hub reads it.
            let up = by("2")["up_sql"].as_str().unwrap().to_owned();
            assert!(up.starts_with("-- +goose NO TRANSACTION\n"), "{up}");
            assert_eq!(by("2")["transactional"], false);
        }

        let set = app.db_set(&slug, "main", "daily").await;
        let (target_id, db) = target(&app, &slug, &set, engine).await;
        let up = run(&app, &slug, &set, "up", "2").await;
        assert_eq!(up["state"], "succeeded", "{engine:?}: {up}");
        assert_eq!(applied(&app, &target_id).await, ["1", "2"]);

        // The functions, trigger and procedures arrived whole and work.
        match engine {
            Engine::Postgres => {
                assert_eq!(
                    db.number(
                        "SELECT count(*) FROM pg_indexes WHERE indexname = 'things_name_idx'"
                    )
                    .await,
                    1
                );
                let Guard::Pg(pg) = &db else { unreachable!() };
                pg.run("INSERT INTO things VALUES (1, 'ABC'), (2, 'Def')")
                    .await;
                assert_eq!(db.number("SELECT things_count()").await, 2);
                assert_eq!(
                    db.number("SELECT count(*) FROM things WHERE name IN ('abc', 'def')")
                        .await,
                    2
                );
            }
            Engine::Mysql => {
                let Guard::My(my) = &db else { unreachable!() };
                my.run("CALL add_thing(1, ' ABC ')").await;
                my.run("CALL fill_things(2)").await;
                assert_eq!(db.number("SELECT COUNT(*) FROM things").await, 3);
                assert_eq!(
                    db.number("SELECT COUNT(*) FROM things WHERE name IN ('abc!', 'filled')")
                        .await,
                    3
                );
            }
        }

        let down = run(&app, &slug, &set, "down", "0").await;
        assert_eq!(down["state"], "succeeded", "{engine:?}: {down}");
        assert!(applied(&app, &target_id).await.is_empty());
        let left = match engine {
            Engine::Postgres => {
                "SELECT (SELECT count(*) FROM pg_proc WHERE proname IN ('things_lower', 'things_count'))
                      + (SELECT count(*) FROM pg_class WHERE relname IN ('things', 'things_name_idx'))"
            }
            Engine::Mysql => {
                "SELECT (SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = DATABASE())
                      + (SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = DATABASE())
                      + (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'things')"
            }
        };
        assert_eq!(db.number(left).await, 0, "{engine:?}: all gone after down");
    }
    fleet.stop().await;
}
