//! Real history: `kratos` through the hub on one fresh target, all ups, then
//! every down it has (newest first, empty down files rolling back as no-ops,
//! down to the version whose down script fails upstream), on PostgreSQL and
//! MariaDB. Compared
//! with plain `psql` / `mysql` (one session, each PostgreSQL migration in its
//! own transaction except the non-transactional ones) and with dbmate.

use serde_json::{Value, json};

use crate::{
    Config,
    report::{Outcome, Row, median, ratio, round, secs},
    scratch::Scratch,
    stack::{ControlPlane, Stack, timed_run},
    workload::{self, Dbmate, Direction},
};

pub const BAR: f64 = 1.3;
/// The kratos version whose down script fails for every tool (`column
/// "code" does not exist`; see the workloads' README): down runs stop just
/// above it.
pub const DOWN_FAILS_AT: &str = "20200831110752000003";
/// The session setting the MariaDB history needs (see the workloads' README).
pub const MARIADB_SESSION: &str = "SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION';";

pub async fn run(cfg: &Config, scratch: &Scratch) -> anyhow::Result<Outcome> {
    let stack = Stack::start(scratch, &ControlPlane::InProcess, 1, cfg.concurrency).await?;
    let result = measure(cfg, scratch, &stack).await;
    stack.stop().await?;
    result
}

async fn measure(cfg: &Config, scratch: &Scratch, stack: &Stack) -> anyhow::Result<Outcome> {
    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();
    let mut notes = Vec::new();
    for engine in ["postgres", "mysql"] {
        if engine == "mysql" && cfg.mysql_targets == 0 {
            continue;
        }
        // Each repetition on fresh databases; the medians are reported.
        let mut reps = Vec::new();
        for rep in 0..cfg.repeat {
            reps.push(engine_run(cfg, scratch, stack, engine, rep).await?);
        }
        let each = |f: &dyn Fn(&Measured) -> f64| -> Vec<f64> {
            reps.iter().map(|m| round(f(m))).collect()
        };
        let dbmate_each =
            |f: &dyn Fn(&Measured) -> &Result<f64, String>| -> Result<Vec<f64>, String> {
                reps.iter().map(|m| f(m).clone().map(round)).collect()
            };
        let all = json!({
            "hub_up": each(&|m| m.hub_up), "hub_down": each(&|m| m.hub_down),
            "floor_up": each(&|m| m.floor_up), "floor_down": each(&|m| m.floor_down),
            "dbmate_up": dbmate_each(&|m| &m.dbmate_up).ok(),
            "dbmate_down": dbmate_each(&|m| &m.dbmate_down).ok(),
        });
        let m = Measured {
            ups: reps[0].ups,
            downs: reps[0].downs,
            down_target: reps[0].down_target.clone(),
            hub_up: median(&each(&|m| m.hub_up)),
            hub_down: median(&each(&|m| m.hub_down)),
            floor_up: median(&each(&|m| m.floor_up)),
            floor_down: median(&each(&|m| m.floor_down)),
            dbmate_up: dbmate_each(&|m| &m.dbmate_up).map(|v| median(&v)),
            dbmate_down: dbmate_each(&|m| &m.dbmate_down).map(|v| median(&v)),
            up_profile: Value::Array(reps.iter().map(|m| m.up_profile.clone()).collect()),
            down_profile: Value::Array(reps.iter().map(|m| m.down_profile.clone()).collect()),
            snapshot: (median(&each(&|m| m.snapshot.0)), reps[0].snapshot.1),
        };
        let label = if engine == "postgres" {
            "PostgreSQL"
        } else {
            "MariaDB"
        };
        for (step, count, hub, floor, dbmate) in [
            ("up", m.ups, m.hub_up, m.floor_up, &m.dbmate_up),
            ("down", m.downs, m.hub_down, m.floor_down, &m.dbmate_down),
        ] {
            let r = ratio(hub, floor);
            let (compared, faster) = match dbmate {
                Ok(d) => (
                    format!("floor {}; dbmate {}", secs(floor), secs(*d)),
                    hub < *d,
                ),
                Err(e) => {
                    notes.push(format!("{label} {step}: dbmate could not run: {e}"));
                    (format!("floor {}; dbmate n/a", secs(floor)), true)
                }
            };
            let bar = if dbmate.is_ok() {
                format!("≤ {BAR}× floor, < dbmate")
            } else {
                format!("≤ {BAR}× floor")
            };
            rows.push(
                Row::new(
                    "real history",
                    format!("{label}: kratos, {count} {step}s, one target"),
                )
                .hub(format!("{} ({r}× floor)", secs(hub)))
                .compared(compared)
                .bar(bar, r <= BAR && faster),
            );
        }
        rows.push(
            Row::new(
                "real history",
                format!(
                    "{label}: schema snapshot of kratos at its final version ({} objects)",
                    m.snapshot.1
                ),
            )
            .hub(secs(m.snapshot.0)),
        );
        details.insert(
            engine.to_owned(),
            json!({
                "ups": m.ups,
                "downs": m.downs,
                "down_target_version": m.down_target,
                "hub_up_seconds": round(m.hub_up),
                "hub_down_seconds": round(m.hub_down),
                "floor_up_seconds": round(m.floor_up),
                "floor_down_seconds": round(m.floor_down),
                "dbmate_up_seconds": m.dbmate_up.as_ref().ok().map(|s| round(*s)),
                "dbmate_down_seconds": m.dbmate_down.as_ref().ok().map(|s| round(*s)),
                "up_ratio": ratio(m.hub_up, m.floor_up),
                "down_ratio": ratio(m.hub_down, m.floor_down),
                "repetitions": all,
                "session_settings": if engine == "mysql" { MARIADB_SESSION } else { "" },
                "snapshot_seconds": round(m.snapshot.0),
                "snapshot_objects": m.snapshot.1,
                "up_profile": m.up_profile,
                "down_profile": m.down_profile,
            }),
        );
    }
    Ok(Outcome {
        name: "history",
        rows,
        details: Value::Object(details),
        notes,
    })
}

struct Measured {
    ups: usize,
    downs: usize,
    down_target: String,
    hub_up: f64,
    hub_down: f64,
    floor_up: f64,
    floor_down: f64,
    dbmate_up: Result<f64, String>,
    dbmate_down: Result<f64, String>,
    up_profile: Value,
    down_profile: Value,
    /// Reading the schema of kratos at its final version: seconds, objects.
    snapshot: (f64, usize),
}

/// How long a snapshot's catalog reads and rendering take on `db` (the
/// session is opened before the clock starts), and how many objects it has.
async fn snapshot_time(
    engine: &str,
    server: &crate::scratch::Endpoint,
    db: &str,
) -> anyhow::Result<(f64, usize)> {
    use common::targets::{Endpoint, Password, introspect};
    let endpoint = Endpoint {
        host: server.host.clone(),
        port: server.port,
        database: db.to_owned(),
        username: server.user.clone(),
        tls_mode: common::domain::TlsMode::Disable,
        session_settings: String::new(),
    };
    let password = server.password.clone().map(Password::new);
    let wait = std::time::Duration::from_secs(10);
    let (seconds, read) = if engine == "postgres" {
        let client = common::targets::postgres::connect(&endpoint, password.as_ref(), wait)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = std::time::Instant::now();
        let read = introspect::postgres(&client)
            .await
            .map_err(anyhow::Error::msg)?;
        (t, read)
    } else {
        let mut conn = common::targets::mysql::connect(&endpoint, password.as_ref(), wait)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let t = std::time::Instant::now();
        let read = introspect::mysql(&mut conn, db)
            .await
            .map_err(anyhow::Error::msg)?;
        (t, read)
    };
    let schema = common::domain::schema::render(read.objects);
    Ok((seconds.elapsed().as_secs_f64(), schema.objects))
}

async fn engine_run(
    cfg: &Config,
    scratch: &Scratch,
    stack: &Stack,
    engine: &str,
    rep: usize,
) -> anyhow::Result<Measured> {
    let dir = cfg.workloads.join("kratos").join(engine);
    let migrations = workload::golang_migrate(&dir)?;
    let (down_target, downs) = workload::supported_downs(&migrations, Some(DOWN_FAILS_AT));
    let slug = format!("kratos-{engine}-{rep}");
    stack.api.project(&slug).await?;
    stack.api.import(&slug, &dir).await?;
    let flags = crate::transactional_flags(&stack.api, &slug).await?;
    let transactional =
        |m: &workload::Migration| flags.get(&m.hub_version()).copied().unwrap_or(true);
    let (server, session, label) = if engine == "postgres" {
        (scratch.servers.pg(), "", "pg")
    } else {
        (scratch.servers.mysql(), MARIADB_SESSION, "mysql")
    };
    let fresh = |what: &'static str| async move {
        if engine == "postgres" {
            scratch.pg_database(what).await
        } else {
            scratch.mysql_database(what).await
        }
    };

    // The floor: one session for all ups, one for the downs. Between them,
    // kratos at its final version: how long reading its schema takes.
    let floor_db = fresh("kratos_floor").await?;
    let snapshot;
    let (floor_up, floor_down) = if engine == "postgres" {
        let up = workload::write_script(
            &cfg.work_dir,
            "kratos-pg-up.sql",
            &workload::psql_script(&migrations, Direction::Up, &transactional),
        )?;
        let down = workload::write_script(
            &cfg.work_dir,
            "kratos-pg-down.sql",
            &workload::psql_script(&downs, Direction::Down, &transactional),
        )?;
        let t = std::time::Instant::now();
        workload::psql(&server, &floor_db, &up).await?;
        let floor_up = t.elapsed().as_secs_f64();
        snapshot = snapshot_time(engine, &server, &floor_db).await?;
        let t = std::time::Instant::now();
        workload::psql(&server, &floor_db, &down).await?;
        (floor_up, t.elapsed().as_secs_f64())
    } else {
        let up = workload::write_script(
            &cfg.work_dir,
            "kratos-mysql-up.sql",
            &workload::mysql_script(&migrations, Direction::Up, session),
        )?;
        let down = workload::write_script(
            &cfg.work_dir,
            "kratos-mysql-down.sql",
            &workload::mysql_script(&downs, Direction::Down, session),
        )?;
        let t = std::time::Instant::now();
        workload::mysql(&server, &floor_db, &up).await?;
        let floor_up = t.elapsed().as_secs_f64();
        snapshot = snapshot_time(engine, &server, &floor_db).await?;
        let t = std::time::Instant::now();
        workload::mysql(&server, &floor_db, &down).await?;
        (floor_up, t.elapsed().as_secs_f64())
    };

    // dbmate: `up`, then one `rollback` per supported down.
    let (dbmate_up, dbmate_down) = match &cfg.dbmate {
        None => (
            Err("dbmate is not installed".to_owned()),
            Err("dbmate is not installed".to_owned()),
        ),
        Some(binary) => {
            let db = fresh("kratos_dbmate").await?;
            let url = if engine == "postgres" {
                format!(
                    "postgres://{}{}@{}:{}/{db}?sslmode=disable",
                    server.user,
                    server
                        .password
                        .as_ref()
                        .map(|p| format!(":{p}"))
                        .unwrap_or_default(),
                    server.host,
                    server.port
                )
            } else {
                // go-sql-driver sets unknown parameters as session variables.
                format!(
                    "mysql://{}{}@{}:{}/{db}?sql_mode=%27NO_ENGINE_SUBSTITUTION%27",
                    server.user,
                    server
                        .password
                        .as_ref()
                        .map(|p| format!(":{p}"))
                        .unwrap_or_default(),
                    server.host,
                    server.port
                )
            };
            let dbmate = Dbmate::prepare(
                binary.clone(),
                url,
                cfg.work_dir.join(format!("dbmate-{label}-{rep}")),
                &migrations,
                &transactional,
            )?;
            match dbmate.up().await {
                Ok(up) => (
                    Ok(up),
                    dbmate.rollback(downs.len()).await.map_err(|e| one_line(&e)),
                ),
                Err(e) => (Err(one_line(&e)), Err("dbmate up failed".to_owned())),
            }
        }
    };

    // The hub: one fresh target.
    let target_db = fresh("kratos_hub").await?;
    let set = stack.api.db_set(&slug, "one").await?;
    stack
        .api
        .targets(
            &slug,
            &set,
            vec![crate::target_json(
                "t1", engine, &server, &target_db, session,
            )],
        )
        .await?;
    let latest = migrations.last().unwrap().hub_version();
    let (up_run, hub_up) = timed_run(
        stack,
        &slug,
        json!({"db_set_id": set, "direction": "up", "target_version": latest, "note": "history benchmark: ups"}),
    )
    .await?;
    let (down_run, hub_down) = timed_run(
        stack,
        &slug,
        json!({"db_set_id": set, "direction": "down", "target_version": down_target, "note": "history benchmark: downs"}),
    )
    .await?;
    let run = stack.api.get(&format!("/api/v1/runs/{down_run}")).await?;
    let hub_downs = run["migrations"].as_array().map(Vec::len).unwrap_or(0);
    anyhow::ensure!(
        hub_downs == downs.len(),
        "the hub's down run covers {hub_downs} migrations, the floor {}",
        downs.len()
    );
    Ok(Measured {
        ups: migrations.len(),
        downs: downs.len(),
        down_target,
        hub_up,
        hub_down,
        floor_up,
        floor_down,
        dbmate_up,
        dbmate_down,
        up_profile: crate::profile_run(&stack.pool, &up_run).await?,
        down_profile: crate::profile_run(&stack.pool, &down_run).await?,
        snapshot,
    })
}

fn one_line(e: &anyhow::Error) -> String {
    let s = format!("{e:#}");
    let s = s.lines().next().unwrap_or_default();
    s.chars().take(300).collect()
}
