//! `bench`: the benchmarks of migrate-hub against a real local stack it
//! starts itself (fresh tool database, control plane, workers, fresh target
//! databases — all dropped afterwards). Prints a table, writes JSON and
//! updates `docs/Benchmarks.md`.

mod fanout;
mod history;
mod lint;
mod processes;
mod queue;
mod report;
mod scaling;
mod scratch;
mod stack;
mod watchers;
mod web;
mod workload;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    report::{Machine, Outcome},
    scratch::{Endpoint, Scratch, Servers},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Benchmark {
    /// Every benchmark below.
    All,
    /// synthetic-fanout on 100 PostgreSQL and 20 MariaDB targets vs psql/mysql.
    Fanout,
    /// kratos ups and supported downs on one target vs psql/mysql and dbmate.
    History,
    /// Execute -> first target running, idle and with queued jobs.
    Queue,
    /// 64 clients on the run page and API while a 100-target run executes,
    /// and 500 watchers of a run's live stream.
    Web,
    /// The SQL review (`control-plane lint`) of the kratos history, per engine.
    Lint,
    /// 1, 2 and 4 worker processes of one pool on a run whose migration
    /// sleeps; then 1-target runs executed while a large run holds the pool.
    Scaling,
}

/// migrate-hub benchmarks, each against a real local stack it starts itself
/// (fresh tool and target databases, dropped afterwards): prints a table,
/// writes JSON and updates docs/Benchmarks.md (release builds only, unless
/// --docs is given). Build with
/// `cargo build --release -p bench -p control-plane -p worker` first.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
struct Cli {
    /// Which benchmarks to run.
    #[arg(value_enum, default_value = "all")]
    benchmarks: Vec<Benchmark>,
    /// Write the results as JSON here [default: target/bench/results.json].
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Update this Markdown file's benchmark blocks [default: docs/Benchmarks.md in release builds].
    #[arg(long, value_name = "PATH")]
    docs: Option<PathBuf>,
    /// Do not touch any Markdown file.
    #[arg(long, conflicts_with = "docs")]
    no_docs: bool,
    /// Small sizes for a quick check that everything works (2 targets, 3
    /// samples, 4 clients); never updates the docs.
    #[arg(long)]
    quick: bool,
    /// The workload folders [env: MH_WORKLOADS_DIR; default: ../shared/workloads beside the repository].
    #[arg(long, value_name = "DIR")]
    workloads: Option<PathBuf>,
    /// PostgreSQL targets of the fan-out and web benchmarks [default: 100]
    /// and of the scaling run [default: 96].
    #[arg(long, value_name = "N")]
    targets: Option<usize>,
    /// MariaDB targets of the fan-out benchmark; 0 skips MariaDB everywhere [default: 20].
    #[arg(long, value_name = "N")]
    mysql_targets: Option<usize>,
    /// Targets at a time (the run's concurrency and the worker's) [default: 8].
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,
    /// Worker processes (the real binary) of the fan-out, sharing
    /// --concurrency between them; 0 runs one worker in the bench's process
    /// [default: 0].
    #[arg(long, value_name = "N", default_value_t = 0)]
    worker_processes: usize,
    /// Repetitions of the fan-out and real-history measurements, each on
    /// fresh databases; medians are reported [default: 3, 1 with --quick].
    #[arg(long, value_name = "N")]
    repeat: Option<usize>,
    /// Runs measured per queue-latency case [default: 50].
    #[arg(long, value_name = "N")]
    samples: Option<usize>,
    /// Jobs queued for the loaded queue-latency case [default: 200].
    #[arg(long, value_name = "N")]
    backlog: Option<usize>,
    /// Concurrent clients of the web benchmark [default: 64].
    #[arg(long, value_name = "N")]
    clients: Option<usize>,
    /// Watchers of a run's live stream in the web benchmark [default: 500].
    #[arg(long, value_name = "N")]
    watchers: Option<usize>,
    /// Administrative PostgreSQL URL for the tool and target databases.
    #[arg(
        long,
        env = "MH_BENCH_PG_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pg_url: String,
    /// Administrative MariaDB/MySQL URL for the target databases.
    #[arg(
        long,
        env = "MH_BENCH_MYSQL_URL",
        default_value = "mysql://root@127.0.0.1:3306"
    )]
    mysql_url: String,
    /// The control-plane binary (web benchmark) [default: beside this binary].
    #[arg(long, value_name = "PATH")]
    control_plane: Option<PathBuf>,
    /// Experiment: run the tool database with `synchronous_commit = off`
    /// (commits do not wait for the disk); the docs are not updated.
    #[arg(long)]
    tool_async_commit: bool,
    /// Exit 1 when a bar is missed.
    #[arg(long)]
    check: bool,
}

/// Everything a benchmark needs to know.
pub struct Config {
    pub workloads: PathBuf,
    pub pg_targets: usize,
    /// PostgreSQL targets of the scaling run.
    pub scaling_targets: usize,
    pub mysql_targets: usize,
    pub concurrency: usize,
    /// Worker processes of the fan-out (0: one in-process worker).
    pub worker_processes: usize,
    pub repeat: usize,
    pub samples: usize,
    pub backlog: usize,
    pub clients: usize,
    pub watchers: usize,
    pub control_plane: Option<PathBuf>,
    pub dbmate: Option<PathBuf>,
    /// Scripts and dbmate folders of this run.
    pub work_dir: PathBuf,
    /// `synchronous_commit = off` on the tool database (an experiment).
    pub tool_async_commit: bool,
}

/// The repository root (this crate's parent folder).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ");
            eprintln!("bench: {line} (see bench --help)");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

/// A configuration problem: reported as one line, exit status 2.
struct BadConfig(String);

async fn run(cli: Cli) -> ExitCode {
    let (selected, cfg, servers) = match configure(&cli).await {
        Ok(c) => c,
        Err(BadConfig(reason)) => {
            eprintln!("bench: {reason}");
            return ExitCode::from(2);
        }
    };
    if cfg!(debug_assertions) {
        eprintln!("bench: this is a debug build; numbers are not comparable with release builds");
    }
    let versions = match server_versions(&servers, cfg.mysql_targets > 0).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let machine = Machine::read(versions.0, versions.1);
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    eprintln!("bench: {}", machine.summary());

    let mut scratch = Scratch::new(servers);
    scratch.tool_async_commit = cfg.tool_async_commit;
    let mut outcomes = Vec::new();
    let mut failure = None;
    for b in &selected {
        eprintln!("bench: running {b:?}...");
        let started = std::time::Instant::now();
        let result = match b {
            Benchmark::Fanout => fanout::run(&cfg, &scratch).await,
            Benchmark::History => history::run(&cfg, &scratch).await,
            Benchmark::Queue => queue::run(&cfg, &scratch).await,
            Benchmark::Web => web::run(&cfg, &scratch).await,
            Benchmark::Lint => lint::run(&cfg).await,
            Benchmark::Scaling => scaling::run(&cfg, &scratch).await,
            Benchmark::All => unreachable!("expanded"),
        };
        // Each benchmark's databases go as soon as it is done.
        let left = scratch.drop_all().await;
        if left > 0 {
            eprintln!("bench: {left} scratch databases could not be dropped");
        }
        match result {
            Ok(o) => {
                eprintln!(
                    "bench: {b:?} done in {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                outcomes.push(o);
            }
            Err(e) => {
                failure = Some(format!("{b:?}: {e:#}"));
                break;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&cfg.work_dir);
    if let Some(f) = &failure {
        eprintln!("bench: benchmark failed: {f}");
    }
    if outcomes.is_empty() {
        return ExitCode::FAILURE;
    }

    println!();
    report::print_table(&outcomes);
    let mut doc = report::json_document(&date, &machine, &outcomes);
    doc["build"] = json!(if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    });
    doc["config"] = json!({
        "targets": cfg.pg_targets, "mysql_targets": cfg.mysql_targets,
        "concurrency": cfg.concurrency, "worker_processes": cfg.worker_processes, "repeat": cfg.repeat, "samples": cfg.samples,
        "backlog": cfg.backlog, "clients": cfg.clients,
        "tool_async_commit": cfg.tool_async_commit,
    });
    doc["scratch_prefix"] = json!(scratch.prefix);
    if let Some(f) = &failure {
        doc["failure"] = json!(f);
    }
    let json_path = cli
        .json
        .clone()
        .unwrap_or_else(|| repo_root().join("target/bench/results.json"));
    if let Some(parent) = json_path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&json_path, serde_json::to_string_pretty(&doc).unwrap()) {
        Ok(()) => eprintln!("bench: results written to {}", json_path.display()),
        Err(e) => {
            eprintln!("bench: cannot write {}: {e}", json_path.display());
            return ExitCode::FAILURE;
        }
    }
    let keep_docs = cli.no_docs || cli.quick || cli.tool_async_commit || failure.is_some();
    let docs = match (&cli.docs, keep_docs) {
        (Some(p), false) => Some(p.clone()),
        (None, false) if !cfg!(debug_assertions) => Some(repo_root().join("docs/Benchmarks.md")),
        _ => None,
    };
    if let Some(path) = docs {
        match report::write_doc(&path, &date[..10], &machine, &outcomes) {
            Ok(()) => eprintln!("bench: {} updated", path.display()),
            Err(e) => eprintln!("bench: cannot update {}: {e}", path.display()),
        }
    }
    if failure.is_some() {
        return ExitCode::FAILURE;
    }
    let met = outcomes.iter().all(Outcome::bars_met);
    if !met {
        eprintln!("bench: at least one bar was missed");
        if cli.check {
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

async fn configure(cli: &Cli) -> Result<(Vec<Benchmark>, Config, Servers), BadConfig> {
    let bad = |s: String| BadConfig(s);
    let mut selected: Vec<Benchmark> = if cli.benchmarks.contains(&Benchmark::All) {
        vec![
            Benchmark::Fanout,
            Benchmark::History,
            Benchmark::Queue,
            Benchmark::Web,
            Benchmark::Lint,
            Benchmark::Scaling,
        ]
    } else {
        cli.benchmarks.clone()
    };
    selected.sort();
    selected.dedup();
    let q = cli.quick;
    let pg_targets = cli.targets.unwrap_or(if q { 2 } else { 100 });
    // A multiple of 16: 4 processes × 4 at a time end in whole waves.
    let scaling_targets = cli.targets.unwrap_or(if q { 2 } else { 96 });
    let mysql_targets = cli.mysql_targets.unwrap_or(if q { 1 } else { 20 });
    let samples = cli.samples.unwrap_or(if q { 3 } else { 50 });
    let repeat = cli.repeat.unwrap_or(if q { 1 } else { 3 });
    let backlog = cli.backlog.unwrap_or(if q { 4 } else { 200 });
    let clients = cli.clients.unwrap_or(if q { 4 } else { 64 });
    let watchers = cli.watchers.unwrap_or(if q { 10 } else { 500 });
    if pg_targets == 0 {
        return Err(bad("--targets must be at least 1".into()));
    }
    if !(1..=256).contains(&cli.concurrency) {
        return Err(bad("--concurrency must be between 1 and 256".into()));
    }
    if cli.worker_processes > 0 && !cli.concurrency.is_multiple_of(cli.worker_processes) {
        return Err(bad(
            "--concurrency must be a multiple of --worker-processes".into(),
        ));
    }
    if samples == 0 || clients == 0 || repeat == 0 {
        return Err(bad(
            "--samples, --clients and --repeat must be at least 1".into()
        ));
    }
    if backlog > 512 {
        return Err(bad("--backlog must be at most 512".into()));
    }
    let workloads = cli
        .workloads
        .clone()
        .or_else(|| std::env::var_os("MH_WORKLOADS_DIR").map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join("../shared/workloads"));
    for sub in ["synthetic-fanout/postgres", "kratos/postgres"] {
        if !workloads.join(sub).is_dir() {
            return Err(bad(format!(
                "no workloads at {} (missing {sub}; pass --workloads or set MH_WORKLOADS_DIR)",
                workloads.display()
            )));
        }
    }
    let needs_clients = selected
        .iter()
        .any(|b| matches!(b, Benchmark::Fanout | Benchmark::History));
    if needs_clients {
        for tool in ["psql", "mysql"] {
            if !on_path(tool) {
                return Err(bad(format!(
                    "`{tool}` is not on PATH (the floors need it; scripts/ensure-services.sh installs it)"
                )));
            }
        }
    }
    let control_plane = if selected.contains(&Benchmark::Web)
        || selected.contains(&Benchmark::Scaling)
    {
        let path = cli.control_plane.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("control-plane")))
                .unwrap_or_default()
        });
        if !path.is_file() {
            return Err(bad(format!(
                "the web benchmark needs the control-plane binary, not found at {} (cargo build --release -p control-plane, or --control-plane PATH)",
                path.display()
            )));
        }
        Some(path)
    } else {
        None
    };
    let dbmate = if selected.contains(&Benchmark::History) {
        Some(ensure_dbmate().map_err(|e| bad(format!("{e:#}")))?)
    } else {
        None
    };
    let work_dir = std::env::temp_dir().join(format!("mh-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work_dir)
        .map_err(|e| bad(format!("cannot create {}: {e}", work_dir.display())))?;
    let servers = Servers {
        pg_url: cli.pg_url.clone(),
        mysql_url: cli.mysql_url.clone(),
    };
    Ok((
        selected,
        Config {
            workloads,
            pg_targets,
            scaling_targets,
            mysql_targets,
            concurrency: cli.concurrency,
            worker_processes: cli.worker_processes,
            repeat,
            samples,
            backlog,
            clients,
            watchers,
            control_plane,
            dbmate,
            work_dir,
            tool_async_commit: cli.tool_async_commit,
        },
        servers,
    ))
}

/// dbmate from npm under `bench/` (installed there from the lock file on
/// first use; npm keeps only the current platform's binary in the lock, so
/// `npm install --no-save` rather than `npm ci`).
fn ensure_dbmate() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binary = dir.join("node_modules/.bin/dbmate");
    if binary.is_file() {
        return Ok(binary);
    }
    if !on_path("npm") {
        bail!(
            "dbmate is missing and npm is not on PATH (install Node.js, then run `npm install` in bench/)"
        );
    }
    eprintln!("bench: installing dbmate with npm in {}", dir.display());
    let status = std::process::Command::new("npm")
        .args(["install", "--no-save", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running npm install")?;
    if !status.success() || !binary.is_file() {
        bail!("`npm install` in {} did not install dbmate", dir.display());
    }
    Ok(binary)
}

/// The servers' versions; an unreachable server is a configuration error.
async fn server_versions(servers: &Servers, mysql: bool) -> anyhow::Result<(String, String)> {
    use mysql_async::prelude::Queryable;
    let mut pg = servers.pg_admin().await?;
    let pg_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut pg)
        .await?;
    let mariadb = if mysql {
        let mut conn = servers.mysql_admin().await?;
        let v: Option<String> = conn.query_first("SELECT version()").await?;
        let _ = conn.disconnect().await;
        v.unwrap_or_default()
    } else {
        "not used".into()
    };
    Ok((pg_version, mariadb))
}

/// A target of the bulk API on `server`'s database `database`.
pub fn target_json(
    name: &str,
    engine: &str,
    server: &Endpoint,
    database: &str,
    session: &str,
) -> Value {
    let mut t = json!({
        "name": name, "engine": engine, "host": server.host, "port": server.port,
        "database": database, "username": server.user, "tls_mode": "disable",
        "session_settings": session,
    });
    if let Some(p) = &server.password {
        t["password"] = json!(p);
    }
    t
}

/// Whether each migration of a project runs in a transaction, as the hub
/// decided at import (by hub version).
pub async fn transactional_flags(
    api: &stack::Api,
    slug: &str,
) -> anyhow::Result<HashMap<String, bool>> {
    Ok(api
        .migrations(slug)
        .await?
        .iter()
        .filter_map(|m| {
            Some((
                m["version"].as_str()?.to_owned(),
                m["transactional"].as_bool().unwrap_or(true),
            ))
        })
        .collect())
}

/// count, avg target ms, avg in-migrations ms, avg queue wait ms, run span ms, avg steps.
type ProfileRow = (
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

/// Where a run's time went, from the tool database: per target, the time
/// inside migrations versus around them, and the wait from queued to started.
pub async fn profile_run(pool: &PgPool, run: &str) -> anyhow::Result<Value> {
    let id: uuid::Uuid = run.parse()?;
    let row: ProfileRow = sqlx::query_as(
        "WITH m AS (
            SELECT target_execution_id, sum(duration_ms)::float8 AS ms, count(*) AS n,
                   min(started_at) AS first_start, max(finished_at) AS last_finish
              FROM migration_executions GROUP BY target_execution_id)
         SELECT count(*),
                avg(te.duration_ms)::float8,
                avg(m.ms)::float8,
                avg(extract(epoch FROM te.started_at - te.queued_at) * 1000)::float8,
                (extract(epoch FROM max(te.finished_at) - min(te.queued_at)) * 1000)::float8,
                avg(m.n)::float8,
                avg(extract(epoch FROM m.first_start - te.started_at) * 1000)::float8,
                avg(extract(epoch FROM te.finished_at - m.last_finish) * 1000)::float8,
                (percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM te.started_at - te.queued_at)) * 1000)::float8,
                (percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM te.started_at - te.queued_at)) * 1000)::float8
           FROM target_executions te LEFT JOIN m ON m.target_execution_id = te.id
          WHERE te.run_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    // A worker's hand-over: from one of its targets finishing to the next
    // one it starts, averaged (a worker running several at a time starts
    // the next in the slot the finished one left).
    let (handover, first_start): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT avg(extract(epoch FROM nxt.started_at - te.finished_at) * 1000)::float8,
                (SELECT extract(epoch FROM min(started_at) - min(queued_at)) * 1000
                   FROM target_executions WHERE run_id = $1)::float8
           FROM target_executions te
           CROSS JOIN LATERAL (
                SELECT min(o.started_at) AS started_at FROM target_executions o
                 WHERE o.run_id = te.run_id AND o.worker_id = te.worker_id
                   AND o.started_at >= te.finished_at) nxt
          WHERE te.run_id = $1 AND nxt.started_at IS NOT NULL",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    // How evenly the run's workers shared it: per worker, its targets, their
    // average time, and its first start and last finish after Execute.
    let workers: Vec<(i64, f64, f64, f64)> = sqlx::query_as(
        "SELECT count(*), avg(duration_ms)::float8,
                (extract(epoch FROM min(started_at) - (SELECT min(queued_at) FROM target_executions WHERE run_id = $1)) * 1000)::float8,
                (extract(epoch FROM max(finished_at) - (SELECT min(queued_at) FROM target_executions WHERE run_id = $1)) * 1000)::float8
           FROM target_executions WHERE run_id = $1 AND worker_id IS NOT NULL
          GROUP BY worker_id ORDER BY 3",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let per_worker: Vec<Value> = workers
        .iter()
        .map(|(n, avg, first, last)| {
            json!({"targets": n, "avg_target_ms": report::round(*avg),
                   "first_started_ms": report::round(*first), "last_finished_ms": report::round(*last)})
        })
        .collect();
    // `after` snapshots recorded while the run's targets executed (a
    // worker takes them when idle: each one that lands here shared the CPU
    // with the run's own targets).
    let snapshots_during: i64 = sqlx::query_scalar(
        "WITH span AS (SELECT min(queued_at) AS first, max(finished_at) AS last
                         FROM target_executions WHERE run_id = $1)
         SELECT count(*) FROM schema_snapshots s, span
          WHERE s.target_id IN (SELECT target_id FROM target_executions WHERE run_id = $1)
            AND s.taken = 'after' AND s.taken_at BETWEEN span.first AND span.last",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    let r = |x: Option<f64>| x.map(report::round);
    Ok(json!({
        "targets": row.0,
        "per_worker": per_worker,
        "after_snapshots_while_running": snapshots_during,
        "avg_finished_to_next_started_ms": r(handover),
        "first_queued_to_first_started_ms": r(first_start),
        "avg_target_ms": r(row.1),
        "avg_in_migrations_ms": r(row.2),
        "avg_outside_migrations_ms": r(row.1.zip(row.2).map(|(t, m)| t - m)),
        "avg_queued_to_started_ms": r(row.3),
        "first_queued_to_last_finished_ms": r(row.4),
        "avg_migrations_recorded": r(row.5),
        "avg_started_to_first_migration_ms": r(row.6),
        "avg_last_migration_to_finished_ms": r(row.7),
        "queued_to_started_p50_ms": r(row.8),
        "queued_to_started_p90_ms": r(row.9),
    }))
}
