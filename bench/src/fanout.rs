//! Fan-out: `synthetic-fanout` on a DB set of PostgreSQL databases and one of
//! MariaDB databases, `concurrency` targets at a time, from Execute to the
//! last target done; the floor is plain `psql` / `mysql` sessions, one per
//! database, at the same parallelism.

use serde_json::{Value, json};

use crate::{
    Config,
    report::{Outcome, Row, median, ratio, round, secs},
    scratch::Scratch,
    stack::{ControlPlane, Stack, timed_run},
    workload::{self, Client, Direction},
};

pub const BAR: f64 = 1.3;

pub async fn run(cfg: &Config, scratch: &Scratch) -> anyhow::Result<Outcome> {
    let stack = Stack::start(scratch, &ControlPlane::InProcess, 1, cfg.concurrency).await?;
    let result = measure(cfg, scratch, &stack).await;
    stack.stop().await?;
    result
}

async fn measure(cfg: &Config, scratch: &Scratch, stack: &Stack) -> anyhow::Result<Outcome> {
    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();
    for (engine, n) in [("postgres", cfg.pg_targets), ("mysql", cfg.mysql_targets)] {
        if n == 0 {
            continue;
        }
        // Each repetition on fresh databases; the medians are reported.
        let mut reps = Vec::new();
        for rep in 0..cfg.repeat {
            reps.push(engine_run(cfg, scratch, stack, engine, n, rep).await?);
        }
        let hub_all: Vec<f64> = reps.iter().map(|m| round(m.hub_s)).collect();
        let floor_all: Vec<f64> = reps.iter().map(|m| round(m.floor_s)).collect();
        let m = Measured {
            migrations: reps[0].migrations,
            hub_s: median(&hub_all),
            floor_s: median(&floor_all),
            profile: Value::Array(reps.iter().map(|m| m.profile.clone()).collect()),
        };
        let r = ratio(m.hub_s, m.floor_s);
        let label = if engine == "postgres" {
            "PostgreSQL"
        } else {
            "MariaDB"
        };
        rows.push(
            Row::new(
                "fan-out",
                format!(
                    "{label}: {n} targets × {} migrations, {} at a time",
                    m.migrations, cfg.concurrency
                ),
            )
            .hub(format!("{} ({r}× floor)", secs(m.hub_s)))
            .compared(format!("floor {}", secs(m.floor_s)))
            .bar(format!("≤ {BAR}× floor"), r <= BAR),
        );
        details.insert(
            engine.to_owned(),
            json!({
                "targets": n,
                "migrations": m.migrations,
                "concurrency": cfg.concurrency,
                "hub_seconds": round(m.hub_s),
                "floor_seconds": round(m.floor_s),
                "hub_seconds_each": hub_all,
                "floor_seconds_each": floor_all,
                "ratio": r,
                "bar": BAR,
                "met": r <= BAR,
                "profile": m.profile,
            }),
        );
    }
    Ok(Outcome {
        name: "fanout",
        rows,
        details: Value::Object(details),
        notes: Vec::new(),
    })
}

struct Measured {
    migrations: usize,
    hub_s: f64,
    floor_s: f64,
    profile: Value,
}

async fn engine_run(
    cfg: &Config,
    scratch: &Scratch,
    stack: &Stack,
    engine: &str,
    n: usize,
    rep: usize,
) -> anyhow::Result<Measured> {
    let dir = cfg.workloads.join("synthetic-fanout").join(engine);
    let migrations = workload::golang_migrate(&dir)?;
    let slug = format!("fanout-{engine}-{rep}");
    stack.api.project(&slug).await?;
    stack.api.import(&slug, &dir).await?;
    let (server, hub_dbs, floor_dbs) = if engine == "postgres" {
        (
            scratch.servers.pg(),
            scratch.pg_databases("fanout_hub", n).await?,
            scratch.pg_databases("fanout_floor", n).await?,
        )
    } else {
        (
            scratch.servers.mysql(),
            scratch.mysql_databases("fanout_hub", n).await?,
            scratch.mysql_databases("fanout_floor", n).await?,
        )
    };
    let set = stack.api.db_set(&slug, "fleet").await?;
    let targets = hub_dbs
        .iter()
        .enumerate()
        .map(|(i, db)| crate::target_json(&format!("t{i:03}"), engine, &server, db, ""))
        .collect();
    stack.api.targets(&slug, &set, targets).await?;

    // The floor first, then the hub, each on its own fresh databases.
    let hub_flags = crate::transactional_flags(&stack.api, &slug).await?;
    let floor_s = match engine {
        "postgres" => {
            let script = workload::psql_script(&migrations, Direction::Up, &|m| {
                hub_flags.get(&m.hub_version()).copied().unwrap_or(true)
            });
            let path = workload::write_script(&cfg.work_dir, "fanout-pg.sql", &script)?;
            workload::fan_out(Client::Psql, &server, &floor_dbs, &path, cfg.concurrency).await?
        }
        _ => {
            let script = workload::mysql_script(&migrations, Direction::Up, "");
            let path = workload::write_script(&cfg.work_dir, "fanout-mysql.sql", &script)?;
            workload::fan_out(Client::Mysql, &server, &floor_dbs, &path, cfg.concurrency).await?
        }
    };
    let latest = migrations.last().unwrap().hub_version();
    let (run, hub_s) = timed_run(
        stack,
        &slug,
        json!({"db_set_id": set, "direction": "up", "target_version": latest,
               "concurrency": cfg.concurrency, "note": "fan-out benchmark"}),
    )
    .await?;
    let profile = crate::profile_run(&stack.pool, &run).await?;
    Ok(Measured {
        migrations: migrations.len(),
        hub_s,
        floor_s,
        profile,
    })
}
