//! Web: `clients` concurrent clients (each its own keep-alive connection,
//! no pause between requests) alternate between the run page (HTML) and
//! `GET /api/v1/runs/{id}` while a run on `pg_targets` targets executes. The
//! control plane runs as its own process, so its memory can be read from
//! `/proc/<pid>/status`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::json;

use crate::{
    Config,
    report::{Outcome, Row, Stats, round},
    scratch::Scratch,
    stack::{ControlPlane, Stack, wait_final},
};

pub const P99_BAR_MS: f64 = 50.0;
pub const RSS_BAR_MB: f64 = 100.0;

pub async fn run(cfg: &Config, scratch: &Scratch) -> anyhow::Result<Outcome> {
    let binary = cfg
        .control_plane
        .clone()
        .context("the web benchmark needs the control-plane binary")?;
    let stack = Stack::start(scratch, &ControlPlane::Process(binary), 1, cfg.concurrency).await?;
    let result = measure(cfg, scratch, &stack).await;
    stack.stop().await?;
    result
}

#[derive(Default)]
struct Samples {
    page: Vec<f64>,
    api: Vec<f64>,
    errors: u64,
}

async fn measure(cfg: &Config, scratch: &Scratch, stack: &Stack) -> anyhow::Result<Outcome> {
    let pid = stack
        .control_plane_pid
        .context("the control plane's process id is unknown")?;
    let slug = "web";
    let dir = cfg.workloads.join("synthetic-fanout/postgres");
    let migrations = crate::workload::golang_migrate(&dir)?;
    stack.api.project(slug).await?;
    stack.api.import(slug, &dir).await?;
    let dbs = scratch.pg_databases("web", cfg.pg_targets).await?;
    let server = scratch.servers.pg();
    let set = stack.api.db_set(slug, "fleet").await?;
    let targets = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| crate::target_json(&format!("t{i:03}"), "postgres", &server, db, ""))
        .collect();
    stack.api.targets(slug, &set, targets).await?;
    let run = stack
        .api
        .approved_run(
            slug,
            json!({"db_set_id": set, "direction": "up",
                   "target_version": migrations.last().unwrap().hub_version(),
                   "concurrency": cfg.concurrency}),
        )
        .await?;
    let rss_before = status_kib(pid, "VmRSS:");

    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak_rss.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS:") {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut clients = Vec::new();
    for i in 0..cfg.clients {
        let (stop, api) = (stop.clone(), stack.api.clone());
        let page_url = api.url(&format!("/runs/{run}"));
        let api_url = api.url(&format!("/api/v1/runs/{run}"));
        clients.push(tokio::spawn(async move {
            // One client, one keep-alive connection.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("HTTP client builds");
            let mut samples = Samples::default();
            let mut page = i % 2 == 0;
            while !stop.load(Ordering::Relaxed) {
                let url = if page { &page_url } else { &api_url };
                let started = Instant::now();
                let ok = match client.get(url).bearer_auth(&api.user).send().await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        ok && resp.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                if !ok {
                    samples.errors += 1;
                } else if page {
                    samples.page.push(ms);
                } else {
                    samples.api.push(ms);
                }
                page = !page;
            }
            samples
        }));
    }
    let started = Instant::now();
    let cpu_before = cpu_seconds(pid);
    let own_before = cpu_seconds(std::process::id());
    let machine_before = machine_busy_seconds();
    stack.api.execute(&run, json!({})).await?;
    let state = wait_final(&stack.pool, &run, Duration::from_secs(1800)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_used = cpu_seconds(pid).zip(cpu_before).map(|(a, b)| a - b);
    let own_used = cpu_seconds(std::process::id())
        .zip(own_before)
        .map(|(a, b)| a - b);
    let machine_used = machine_busy_seconds()
        .zip(machine_before)
        .map(|(a, b)| a - b);
    stop.store(true, Ordering::Relaxed);
    let mut all = Samples::default();
    for c in clients {
        let s = c.await?;
        all.page.extend(s.page);
        all.api.extend(s.api);
        all.errors += s.errors;
    }
    let _ = sampler.await;
    let state = state?;
    anyhow::ensure!(state == "succeeded", "the run under load ended {state}");
    let hwm_kib = status_kib(pid, "VmHWM:").unwrap_or(0);
    let peak_kib = peak_rss.load(Ordering::Relaxed).max(hwm_kib);
    let rss_mb = round(peak_kib as f64 / 1024.0);

    let page = Stats::of(&all.page);
    let api = Stats::of(&all.api);
    let mut both = all.page.clone();
    both.extend(&all.api);
    let overall = Stats::of(&both);
    let requests = both.len() as f64 + all.errors as f64;
    let rows = vec![
        Row::new(
            "web",
            format!(
                "run page (HTML), {} clients, {}-target run executing",
                cfg.clients, cfg.pg_targets
            ),
        )
        .hub(format!("p99 {} ms (p50 {} ms)", page.p99_ms, page.p50_ms))
        .bar(format!("p99 < {P99_BAR_MS} ms"), page.p99_ms < P99_BAR_MS),
        Row::new("web", "GET /api/v1/runs/{id}")
            .hub(format!("p99 {} ms (p50 {} ms)", api.p99_ms, api.p50_ms))
            .bar(format!("p99 < {P99_BAR_MS} ms"), api.p99_ms < P99_BAR_MS),
        Row::new("web", "control-plane peak RSS (VmHWM)")
            .hub(format!("{rss_mb} MB"))
            .bar(format!("< {RSS_BAR_MB} MB"), rss_mb < RSS_BAR_MB),
    ];
    let mut notes = Vec::new();
    if all.errors > 0 {
        notes.push(format!("{} requests failed or were not 200", all.errors));
    }
    Ok(Outcome {
        name: "web",
        rows,
        details: json!({
            "clients": cfg.clients,
            "targets": cfg.pg_targets,
            "seconds": round(elapsed),
            "requests": requests,
            "requests_per_second": round(requests / elapsed),
            "errors": all.errors,
            "run_page": page,
            "api_run": api,
            "overall": overall,
            "control_plane_cpu_seconds": cpu_used.map(round),
            "control_plane_cpu_cores_busy": cpu_used.map(|c| round(c / elapsed)),
            "control_plane_cpu_ms_per_request": cpu_used.map(|c| round(c * 1000.0 / requests)),
            "bench_process_cpu_cores_busy": own_used.map(|c| round(c / elapsed)),
            "machine_cpu_cores_busy": machine_used.map(|c| round(c / elapsed)),
            "rss_mb_before_load": rss_before.map(|k| round(k as f64 / 1024.0)),
            "rss_mb_peak": rss_mb,
        }),
        notes,
    })
}

/// User plus system CPU time of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; 100 per second on Linux.
    Some((utime + stime) / 100.0)
}

/// CPU seconds the whole machine spent busy (all but idle and iowait),
/// from `/proc/stat`: the rest of the load (PostgreSQL, other processes).
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    Some(busy / 100.0)
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
