//! Fan-out: `synthetic-fanout` on a DB set of PostgreSQL databases and one of
//! MariaDB databases, `concurrency` targets at a time, from Execute to the
//! last target done; the floor is plain `psql` / `mysql` sessions, one per
//! database, at the same parallelism. The worker scans for drift as it does
//! by default (each new target is read once before the floor starts); the
//! time one drift scan of the whole DB set takes, target after target as a
//! worker does it, is reported beside.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    Config,
    processes::{Processes, Scans},
    report::{Outcome, Row, median, ratio, round, secs},
    scratch::Scratch,
    stack::{ControlPlane, Stack, timed_run},
    workload::{self, Client, Direction},
};

pub const BAR: f64 = 1.3;

pub async fn run(cfg: &Config, scratch: &Scratch) -> anyhow::Result<Outcome> {
    let in_process = usize::from(cfg.worker_processes == 0);
    let stack = Stack::start(
        scratch,
        &ControlPlane::InProcess,
        in_process,
        cfg.concurrency,
    )
    .await?;
    let processes = match cfg.worker_processes {
        0 => None,
        n => {
            let per_worker = cfg.concurrency / n;
            Some(Processes::start(cfg, &stack, "default", n, per_worker, Scans::On).await?)
        }
    };
    let result = measure(cfg, scratch, &stack).await;
    if let Some(processes) = processes {
        processes.stop().await;
    }
    stack.stop().await?;
    result
}

/// "8 at a time", or "32 at a time over 4 worker processes".
fn parallelism(cfg: &Config) -> String {
    match cfg.worker_processes {
        0 => format!("{} at a time", cfg.concurrency),
        n => format!("{} at a time over {n} worker processes", cfg.concurrency),
    }
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
        let scan_all: Vec<f64> = reps.iter().map(|m| round(m.scan_s)).collect();
        let scan_s = median(&scan_all);
        let hub_all: Vec<f64> = reps.iter().map(|m| round(m.hub_s)).collect();
        let floor_all: Vec<f64> = reps.iter().map(|m| round(m.floor_s)).collect();
        let commits_all: Vec<f64> = reps.iter().map(|m| m.tool.commits).collect();
        let rows_all: Vec<f64> = reps.iter().map(|m| m.tool.rows_read).collect();
        let m = Measured {
            migrations: reps[0].migrations,
            hub_s: median(&hub_all),
            floor_s: median(&floor_all),
            scan_s,
            profile: Value::Array(reps.iter().map(|m| m.profile.clone()).collect()),
            tool: ToolActivity {
                commits: median(&commits_all),
                rows_read: median(&rows_all),
            },
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
                    "{label}: {n} targets × {} migrations, {}",
                    m.migrations,
                    parallelism(cfg)
                ),
            )
            .hub(format!("{} ({r}× floor)", secs(m.hub_s)))
            .compared(format!("floor {}", secs(m.floor_s)))
            .bar(format!("≤ {BAR}× floor"), r <= BAR),
        );
        rows.push(
            Row::new(
                "tool database",
                format!("{label}: work per target execution of that fan-out ({n} targets)"),
            )
            .hub(format!(
                "{} commits, {} rows read ({} ms of hub time per target)",
                m.tool.commits,
                m.tool.rows_read,
                round(m.hub_s * 1000.0 / n as f64)
            )),
        );
        rows.push(
            Row::new(
                "drift scan",
                format!(
                    "{label}: the {n} fan-out targets at their final version, one after another"
                ),
            )
            .hub(format!(
                "{} ({} ms per target)",
                secs(scan_s),
                round(scan_s * 1000.0 / n as f64)
            )),
        );
        details.insert(
            engine.to_owned(),
            json!({
                "targets": n,
                "migrations": m.migrations,
                "concurrency": cfg.concurrency,
                "worker_processes": cfg.worker_processes,
                "hub_seconds": round(m.hub_s),
                "floor_seconds": round(m.floor_s),
                "hub_seconds_each": hub_all,
                "drift_scan_seconds": scan_s,
                "drift_scan_seconds_each": scan_all,
                "floor_seconds_each": floor_all,
                "ratio": r,
                "bar": BAR,
                "met": r <= BAR,
                "profile": m.profile,
                "tool_commits_per_target": m.tool.commits,
                "tool_rows_read_per_target": m.tool.rows_read,
                "tool_commits_per_target_each": commits_all,
                "tool_rows_read_per_target_each": rows_all,
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
    /// One drift scan of every target, one after another.
    scan_s: f64,
    profile: Value,
    /// The tool database's work per target execution.
    tool: ToolActivity,
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
    // The worker reads each new target once when idle: done before the
    // clocks start, so that neither side shares the CPU with it.
    crate::stack::wait_scanned(&stack.pool, &set, n).await?;

    // The floor first, then the hub, each on its own fresh databases.
    let hub_flags = crate::transactional_flags(&stack.api, &slug).await?;
    let busy_at_floor = crate::report::machine_busy_seconds();
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
    let floor_cpu = crate::report::machine_busy_since(busy_at_floor);
    let latest = migrations.last().unwrap().hub_version();
    let tool_before = tool_activity(&stack.pool).await?;
    let tables_before = table_reads(&stack.pool).await?;
    let busy_at_hub = crate::report::machine_busy_seconds();
    let (run, hub_s) = timed_run(
        stack,
        &slug,
        json!({"db_set_id": set, "direction": "up", "target_version": latest,
               "concurrency": cfg.concurrency, "note": "fan-out benchmark"}),
    )
    .await?;
    let hub_cpu = crate::report::machine_busy_since(busy_at_hub);
    // The tool database's work for the run, from Execute until it is over
    // (the bench only polls the run's row meanwhile). PostgreSQL publishes a
    // backend's counters when it goes idle, at the latest 10 s later; the
    // `after` snapshots the worker takes once idle partly fall into that
    // pause and are not counted otherwise.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let tool = tool_activity(&stack.pool).await?.since(&tool_before, n);
    let tables = reads_since(&table_reads(&stack.pool).await?, &tables_before, n);
    let mut profile = crate::profile_run(&stack.pool, &run).await?;
    profile["tool_rows_read_per_target_by_table"] = tables;
    // The whole machine's CPU per target, each side from its start until
    // its last target is done: what the hub costs beyond the floor's
    // sessions, steadier than the clock on a shared host.
    let per_target = |cpu: Option<f64>| cpu.map(|c| round(c * 1000.0 / n as f64));
    profile["machine_cpu_ms_per_target"] = json!(per_target(hub_cpu));
    profile["floor_machine_cpu_ms_per_target"] = json!(per_target(floor_cpu));
    wait_after_snapshots(stack, &run, n).await?;
    let scan_s = scan_all(stack, &run).await?;
    Ok(Measured {
        migrations: migrations.len(),
        hub_s,
        floor_s,
        scan_s,
        profile,
        tool,
    })
}

/// The tool database's counters (`pg_stat_database`): transactions
/// committed and rows read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToolActivity {
    pub commits: f64,
    pub rows_read: f64,
}

impl ToolActivity {
    /// Per target execution, since `before`.
    pub fn since(&self, before: &ToolActivity, n: usize) -> ToolActivity {
        ToolActivity {
            commits: round((self.commits - before.commits) / n as f64),
            rows_read: round((self.rows_read - before.rows_read) / n as f64),
        }
    }
}

/// Rows read per table of the tool database (sequential and index scans).
pub async fn table_reads(pool: &sqlx::PgPool) -> anyhow::Result<Vec<(String, i64, i64)>> {
    Ok(sqlx::query_as(
        "SELECT relname::text, COALESCE(seq_tup_read, 0), COALESCE(idx_tup_fetch, 0)
         FROM pg_stat_user_tables ORDER BY relname",
    )
    .fetch_all(pool)
    .await?)
}

/// Per target execution, per table, the rows read since `before`, the
/// largest first.
fn reads_since(after: &[(String, i64, i64)], before: &[(String, i64, i64)], n: usize) -> Value {
    let mut out: Vec<(String, f64, f64)> = after
        .iter()
        .map(|(table, seq, idx)| {
            let (b_seq, b_idx) = before
                .iter()
                .find(|(t, ..)| t == table)
                .map_or((0, 0), |(_, s, i)| (*s, *i));
            (
                table.clone(),
                round((seq - b_seq) as f64 / n as f64),
                round((idx - b_idx) as f64 / n as f64),
            )
        })
        .filter(|(_, s, i)| *s + *i >= 1.0)
        .collect();
    out.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)));
    json!(
        out.into_iter()
            .map(|(t, s, i)| json!({"table": t, "seq_rows": s, "index_rows": i}))
            .collect::<Vec<_>>()
    )
}

pub async fn tool_activity(pool: &sqlx::PgPool) -> anyhow::Result<ToolActivity> {
    let (commits, rows): (i64, i64) = sqlx::query_as(
        "SELECT xact_commit, tup_returned + tup_fetched FROM pg_stat_database
         WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await?;
    Ok(ToolActivity {
        commits: commits as f64,
        rows_read: rows as f64,
    })
}

/// Waits until every execution of the run has its `after` snapshot (taken
/// by the worker once idle).
async fn wait_after_snapshots(stack: &Stack, run: &str, n: usize) -> anyhow::Result<()> {
    let run: uuid::Uuid = run.parse()?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let after: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM schema_snapshots s JOIN target_executions e ON e.id = s.execution_id
             WHERE e.run_id = $1 AND s.taken = 'after'",
        )
        .bind(run)
        .fetch_one(&stack.pool)
        .await?;
        if after as usize >= n {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {after} of {n} after-snapshots in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Scans each target of the run once, one after another as a worker does
/// (after every execution's `after` snapshot is in, so that each reading is
/// judged against it); returns the seconds taken.
async fn scan_all(stack: &Stack, run: &str) -> anyhow::Result<f64> {
    let run: uuid::Uuid = run.parse()?;
    let targets: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT target_id FROM target_executions WHERE run_id = $1")
            .bind(run)
            .fetch_all(&stack.pool)
            .await?;
    let scanner = worker::scan::Scanner {
        db: stack.pool.clone(),
        keys: stack.keys.clone(),
        pool: "default".into(),
        actor: common::store::audit::Actor::system("bench"),
        lock_wait: Duration::from_secs(2),
        every: Duration::from_secs(3600),
    };
    let started = Instant::now();
    for target in targets {
        let scanned = scanner
            .scan(target)
            .await
            .map_err(|e| anyhow::anyhow!("scanning {target}: {e}"))?;
        anyhow::ensure!(
            scanned
                == common::lifecycle::schema_drift::Scanned::Judged(
                    common::domain::schema_drift::Verdict::InSync
                ),
            "target {target} scanned as {scanned:?}, not in sync with its baseline"
        );
    }
    Ok(started.elapsed().as_secs_f64())
}
