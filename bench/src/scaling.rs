//! Scaling: 1, 2 and 4 `worker` processes (the real binary, 4 targets at a
//! time each) of one pool execute a run of `targets` PostgreSQL databases
//! whose one migration sleeps half a second; the speed-up is the time with
//! one process over the time with N. Then fairness: while a run of 1,000
//! targets executes in a pool (one process), 1-target runs of the same pool
//! are executed one after another; each must start (its target `running`)
//! soon after its Execute, not behind the large run.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    Config,
    processes::{Processes, Scans},
    report::{Outcome, Row, Stats, round, secs},
    scratch::Scratch,
    stack::{ControlPlane, Stack, timed_run, wait_final},
};

pub const BAR_2: f64 = 1.9;
pub const BAR_4: f64 = 3.6;
pub const FAIRNESS_P99_BAR_MS: f64 = 2000.0;
/// Targets of the run that holds the pool while the fairness probes run.
const FAIRNESS_FLEET: usize = 1000;
/// Targets each worker process runs at once.
const PER_WORKER: usize = 4;
/// The migration's own time on each target.
const SLEEP: &str = "0.5";

pub async fn run(cfg: &Config, scratch: &Scratch) -> anyhow::Result<Outcome> {
    let stack = Stack::start(scratch, &ControlPlane::InProcess, 0, PER_WORKER).await?;
    let result = measure(cfg, scratch, &stack).await;
    stack.stop().await?;
    result
}

/// A DB set of `n` fresh databases served by `pool`; returns its id.
async fn fleet(
    scratch: &Scratch,
    stack: &Stack,
    slug: &str,
    name: &str,
    pool: &str,
    n: usize,
) -> anyhow::Result<String> {
    let dbs = scratch.pg_databases(&format!("scale_{name}"), n).await?;
    let server = scratch.servers.pg();
    let set = stack.api.db_set(slug, name).await?;
    let targets = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| {
            let mut t = crate::target_json(&format!("{name}-{i:03}"), "postgres", &server, db, "");
            t["worker_pool"] = json!(pool);
            t
        })
        .collect();
    stack.api.targets(slug, &set, targets).await?;
    Ok(set)
}

async fn measure(cfg: &Config, scratch: &Scratch, stack: &Stack) -> anyhow::Result<Outcome> {
    let slug = "scaling";
    stack.api.project(slug).await?;
    stack
        .api
        .migration(
            slug,
            "1",
            "sleeps",
            &format!("CREATE TABLE bench_scaling (id int); SELECT pg_sleep({SLEEP});"),
            "DROP TABLE bench_scaling;",
        )
        .await?;
    let n = cfg.scaling_targets;
    let mut times = Vec::new();
    for workers in [1usize, 2, 4] {
        let pool = format!("scale-{workers}");
        let set = fleet(scratch, stack, slug, &format!("w{workers}"), &pool, n).await?;
        // As the binary runs by default: each new target is read once by an
        // idle worker (its first drift scan) before the clock starts, as in
        // the fan-out; a fleet's targets are registered before runs come.
        let processes = Processes::start(cfg, stack, &pool, workers, PER_WORKER, Scans::On).await?;
        crate::stack::wait_scanned(&stack.pool, &set, n).await?;
        let busy_before = crate::report::machine_busy_seconds();
        let result = timed_run(
            stack,
            slug,
            json!({"db_set_id": set, "direction": "up", "target_version": "1",
                   "concurrency": n, "note": "scaling benchmark"}),
        )
        .await;
        let busy = crate::report::machine_busy_since(busy_before);
        processes.stop().await;
        let (run, seconds) = result?;
        let mut profile = crate::profile_run(&stack.pool, &run).await?;
        // The whole machine's CPU over the run (workers, PostgreSQL, the
        // tool database, this process), per target: steadier than the
        // clock on a shared host.
        profile["machine_cpu_ms_per_target"] = json!(busy.map(|b| round(b * 1000.0 / n as f64)));
        profile["machine_cores_busy"] = json!(busy.map(|b| round(b / seconds)));
        profile["timeline"] = timeline(&stack.pool, &run).await?;
        times.push((workers, seconds, profile));
    }
    let one = times[0].1;
    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();
    for (workers, seconds, profile) in &times {
        let speedup = round(one / seconds);
        let bar = match workers {
            2 => Some(BAR_2),
            4 => Some(BAR_4),
            _ => None,
        };
        let mut row = Row::new(
            "scaling",
            format!(
                "{workers} worker process{} × {PER_WORKER} at a time, {n} targets, migration sleeps {SLEEP} s",
                if *workers == 1 { "" } else { "es" }
            ),
        )
        .hub(format!("{} ({speedup}× one process)", secs(*seconds)));
        if let Some(bar) = bar {
            row = row.bar(format!("≥ {bar}×"), speedup >= bar);
        }
        rows.push(row);
        details.insert(
            format!("workers_{workers}"),
            json!({"seconds": round(*seconds), "speedup": speedup, "profile": profile}),
        );
    }

    let (probes, fleet) = fairness(cfg, scratch, stack, slug).await?;
    let stats = Stats::of(&probes);
    rows.push(
        Row::new(
            "fairness",
            format!(
                "a 1-target run executed while a {}-target run ({} at a time) holds the pool (1 process × {PER_WORKER}): Execute → running, {} probes",
                fleet,
                cfg.concurrency,
                probes.len()
            ),
        )
        .hub(format!("p99 {} ms (p50 {} ms)", stats.p99_ms, stats.p50_ms))
        .bar(
            format!("p99 < {FAIRNESS_P99_BAR_MS} ms"),
            stats.p99_ms < FAIRNESS_P99_BAR_MS,
        ),
    );
    details.insert("fairness".into(), json!(stats));
    details.insert("targets".into(), json!(n));
    details.insert("per_worker".into(), json!(PER_WORKER));
    Ok(Outcome {
        name: "scaling",
        rows,
        details: Value::Object(details),
        notes: Vec::new(),
    })
}

/// 1-target runs of the pool executed one after another while a large run
/// holds it; returns each one's milliseconds from Execute to `running`, and
/// the large run's targets.
async fn fairness(
    cfg: &Config,
    scratch: &Scratch,
    stack: &Stack,
    slug: &str,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let pool = "fair";
    // A fleet of 1,000 (with --quick's few targets, four times them); the
    // probes are over long before it is, and it is cancelled then.
    let n = if cfg.pg_targets < 10 {
        cfg.pg_targets * 4
    } else {
        FAIRNESS_FLEET
    };
    let probes = cfg.samples.min(20);
    let big = fleet(scratch, stack, slug, "big", pool, n).await?;
    let mut small = Vec::new();
    for i in 0..probes {
        let set = fleet(scratch, stack, slug, &format!("probe{i:02}"), pool, 1).await?;
        small.push(
            stack
                .api
                .approved_run(
                    slug,
                    json!({"db_set_id": set, "direction": "up", "target_version": "1"}),
                )
                .await?,
        );
    }
    let processes = Processes::start(cfg, stack, pool, 1, PER_WORKER, Scans::Off).await?;
    let big_run = stack
        .api
        .approved_run(
            slug,
            // At the usual parallelism: the run keeps that many jobs queued.
            json!({"db_set_id": big, "direction": "up", "target_version": "1",
                   "concurrency": cfg.concurrency}),
        )
        .await?;
    stack.api.execute(&big_run, json!({})).await?;
    let mut delays = Vec::new();
    let result = async {
        // The probes come once the large run executes (its first target
        // claimed), so each of them is measured against it.
        let big_id: uuid::Uuid = big_run.parse()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while run_state(&stack.pool, big_id).await? != "running" {
            anyhow::ensure!(Instant::now() < deadline, "the large run never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for run in &small {
            let id: uuid::Uuid = run.parse()?;
            let executed = time::OffsetDateTime::now_utc();
            stack.api.execute(run, json!({})).await?;
            let deadline = Instant::now() + Duration::from_secs(120);
            let started = loop {
                let started: Option<time::OffsetDateTime> = sqlx::query_scalar(
                    "SELECT started_at FROM target_executions WHERE run_id = $1",
                )
                .bind(id)
                .fetch_one(&stack.pool)
                .await?;
                if let Some(at) = started {
                    break at;
                }
                anyhow::ensure!(Instant::now() < deadline, "probe {run} never started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            // Only a probe that started while the large run held the pool
            // counts.
            if run_state(&stack.pool, big_id).await? == "running" {
                delays.push(((started - executed).as_seconds_f64() * 1000.0).max(0.0));
            }
        }
        anyhow::ensure!(
            !delays.is_empty(),
            "the large run ended before the first probe started: use more targets"
        );
        Ok(())
    }
    .await;
    let _ = stack.api.cancel(&big_run).await;
    for run in small.iter().chain([&big_run]) {
        let _ = wait_final(&stack.pool, run, Duration::from_secs(600)).await;
    }
    processes.stop().await;
    result?;
    Ok((delays, n))
}

/// The state of run `id`.
async fn run_state(pool: &sqlx::PgPool, id: uuid::Uuid) -> anyhow::Result<String> {
    Ok(sqlx::query_scalar("SELECT state FROM runs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await?)
}

/// Each target execution of the run as `[worker, started, finished]`, in
/// ms after Execute (workers numbered by their first start): to see how the
/// targets were spread over the processes' places.
async fn timeline(pool: &sqlx::PgPool, run: &str) -> anyhow::Result<Value> {
    let id: uuid::Uuid = run.parse()?;
    let rows: Vec<(i64, f64, f64)> = sqlx::query_as(
        "WITH t0 AS (SELECT min(queued_at) AS t0 FROM target_executions WHERE run_id = $1),
              w AS (SELECT worker_id, rank() OVER (ORDER BY min(started_at)) AS n
                      FROM target_executions WHERE run_id = $1 AND worker_id IS NOT NULL
                     GROUP BY worker_id)
         SELECT w.n, (extract(epoch FROM te.started_at - t0.t0) * 1000)::float8,
                (extract(epoch FROM te.finished_at - t0.t0) * 1000)::float8
           FROM target_executions te JOIN w ON w.worker_id = te.worker_id, t0
          WHERE te.run_id = $1 ORDER BY 2",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(json!(
        rows.iter()
            .map(|(w, s, f)| json!([w, round(*s), round(*f)]))
            .collect::<Vec<_>>()
    ))
}
