//! Web: `clients` concurrent clients (each its own keep-alive HTTP/1.1
//! connection, no pause between requests, on threads of their own) alternate between the run page (HTML) and
//! `GET /api/v1/runs/{id}` while a run on `pg_targets` targets executes. The
//! control plane runs as its own process, so its memory can be read from
//! `/proc/<pid>/status`. Before that, two runs of their own: one alone
//! (the control plane's CPU for a run), one watched by `watchers` live
//! streams (the delay from each target's commit to its event at the
//! watchers, and the memory and CPU each watcher costs); the mix then has
//! the watchers too. Last, on a fourth run, every client asks for the API
//! alone, with the watchers (the API's own bar under load).

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
    watchers::Watchers,
};

pub const P99_BAR_MS: f64 = 50.0;
pub const RSS_BAR_MB: f64 = 100.0;
/// From a target's commit to its event at a watcher of the run's stream.
pub const PUSH_BAR_MS: f64 = 250.0;

/// A fresh DB set of `cfg.pg_targets` new PostgreSQL databases and an
/// approved run of it to `latest`; returns the run's id.
async fn prepared_run(
    cfg: &Config,
    scratch: &Scratch,
    stack: &Stack,
    slug: &str,
    name: &str,
    latest: &str,
) -> anyhow::Result<String> {
    let dbs = scratch
        .pg_databases(&format!("web_{name}"), cfg.pg_targets)
        .await?;
    let server = scratch.servers.pg();
    let set = stack.api.db_set(slug, name).await?;
    let targets = dbs
        .iter()
        .enumerate()
        .map(|(i, db)| crate::target_json(&format!("{name}-{i:03}"), "postgres", &server, db, ""))
        .collect();
    stack.api.targets(slug, &set, targets).await?;
    stack
        .api
        .approved_run(
            slug,
            json!({"db_set_id": set, "direction": "up", "target_version": latest,
                   "concurrency": cfg.concurrency}),
        )
        .await
}

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
    let latest = migrations.last().unwrap().hub_version();
    let addr = stack.api.base.trim_start_matches("http://").to_owned();

    // 1. The run alone: what the control plane spends on it.
    let run = prepared_run(cfg, scratch, stack, slug, "alone", &latest).await?;
    let cpu_before = cpu_seconds(pid);
    stack.api.execute(&run, json!({})).await?;
    let state = wait_final(&stack.pool, &run, Duration::from_secs(1800)).await?;
    anyhow::ensure!(state == "succeeded", "the run alone ended {state}");
    let cpu_alone = cpu_seconds(pid).zip(cpu_before).map(|(a, b)| a - b);

    // 2. The run watched by `watchers` live streams, nothing else.
    let run = prepared_run(cfg, scratch, stack, slug, "watched", &latest).await?;
    let rss_idle = status_kib(pid, "VmRSS:");
    let watchers = Watchers::opened(&addr, &stack.api.user, &run, cfg.watchers).await?;
    let rss_watching = status_kib(pid, "VmRSS:");
    let cpu_before = cpu_seconds(pid);
    stack.api.execute(&run, json!({})).await?;
    let state = wait_final(&stack.pool, &run, Duration::from_secs(1800)).await?;
    anyhow::ensure!(state == "succeeded", "the watched run ended {state}");
    let watched = watchers.finish().await?;
    let cpu_watched = cpu_seconds(pid).zip(cpu_before).map(|(a, b)| a - b);
    let push = Stats::of(&watched.delays_ms);
    let kib_per_watcher = rss_watching
        .zip(rss_idle)
        .map(|(w, i)| round(w.saturating_sub(i) as f64 / cfg.watchers as f64));
    let cpu_ms_per_watcher = cpu_watched
        .zip(cpu_alone)
        .map(|(w, a)| round((w - a).max(0.0) * 1000.0 / cfg.watchers as f64));

    // 3. The mix: clients without pause and the watchers, on a third run.
    let mix = loaded(cfg, scratch, stack, pid, slug, &latest, Mix::PageAndApi).await?;
    let served = server_side(&stack.api).await?;
    // 4. API clients only, with the watchers, on a fourth run.
    let api_only = loaded(cfg, scratch, stack, pid, slug, &latest, Mix::ApiOnly).await?;
    let hwm_kib = status_kib(pid, "VmHWM:").unwrap_or(0);
    let peak_kib = mix.peak_kib.max(api_only.peak_kib).max(hwm_kib);
    let rss_mb = round(peak_kib as f64 / 1024.0);
    let Loaded {
        samples: all,
        elapsed,
        cpu_used,
        own_used,
        machine_used,
        rss_before,
        watched: mixed,
        ..
    } = mix;
    let mixed_push = Stats::of(&mixed.delays_ms);
    let api_alone = Stats::of(&api_only.samples.api);
    let api_alone_push = Stats::of(&api_only.watched.delays_ms);
    let api_alone_requests = api_only.samples.api.len() as u64 + api_only.samples.errors;

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
        Row::new("web", "requests answered 200")
            .hub(format!("{} of {requests}", both.len()))
            .bar("all", all.errors == 0),
        Row::new(
            "web",
            format!(
                "GET /api/v1/runs/{{id}} alone: {} API clients and {} live watchers, {}-target run executing",
                cfg.clients, cfg.watchers, cfg.pg_targets
            ),
        )
        .hub(format!(
            "p99 {} ms (p50 {} ms), {} of {api_alone_requests} answered 200; live p99 {} ms",
            api_alone.p99_ms,
            api_alone.p50_ms,
            api_only.samples.api.len(),
            api_alone_push.p99_ms
        ))
        .bar(
            format!("p99 < {P99_BAR_MS} ms, all 200"),
            api_alone.p99_ms < P99_BAR_MS && api_only.samples.errors == 0,
        ),
        Row::new("web", "control-plane peak RSS (VmHWM)")
            .hub(format!("{rss_mb} MB"))
            .bar(format!("< {RSS_BAR_MB} MB"), rss_mb < RSS_BAR_MB),
        Row::new(
            "live",
            format!(
                "{} watchers of a {}-target run's event stream: commit → event at the client",
                cfg.watchers, cfg.pg_targets
            ),
        )
        .hub(format!(
            "p99 {} ms (p50 {} ms), {} of {} streams ended",
            push.p99_ms, push.p50_ms, watched.ended, cfg.watchers
        ))
        .bar(
            format!("p99 < {PUSH_BAR_MS} ms"),
            push.p99_ms < PUSH_BAR_MS && watched.errors == 0 && watched.ended == cfg.watchers,
        ),
        Row::new("live", "control plane per watcher").hub(format!(
            "{} KiB memory, {} ms CPU over the run",
            kib_per_watcher.map_or("?".into(), |k| k.to_string()),
            cpu_ms_per_watcher.map_or("?".into(), |c| c.to_string())
        )),
        Row::new(
            "live",
            format!(
                "the same {} watchers during the web mix above: commit → event",
                cfg.watchers
            ),
        )
        .hub(format!(
            "p99 {} ms (p50 {} ms), {} of {} streams ended",
            mixed_push.p99_ms, mixed_push.p50_ms, mixed.ended, cfg.watchers
        )),
    ];
    let mut notes = Vec::new();
    if all.errors > 0 {
        notes.push(format!("{} requests failed or were not 200", all.errors));
    }
    if api_only.samples.errors > 0 {
        notes.push(format!(
            "{} API-only requests failed or were not 200",
            api_only.samples.errors
        ));
    }
    let api_only_details = json!({
        "seconds": round(api_only.elapsed),
        "requests": api_alone_requests,
        "requests_per_second": round(api_alone_requests as f64 / api_only.elapsed),
        "errors": api_only.samples.errors,
        "api_run": api_alone,
        "live_push": api_alone_push,
        "streams_ended": api_only.watched.ended,
        "watcher_errors": api_only.watched.errors,
        "control_plane_cpu_cores_busy": api_only.cpu_used.map(|c| round(c / api_only.elapsed)),
        "machine_cpu_cores_busy": api_only.machine_used.map(|c| round(c / api_only.elapsed)),
        "rss_mb_peak": round(api_only.peak_kib as f64 / 1024.0),
    });
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
            "server_side": served,
            "rss_mb_before_load": rss_before.map(|k| round(k as f64 / 1024.0)),
            "rss_mb_peak": rss_mb,
            "watchers": cfg.watchers,
            "live_push": push,
            "live_push_streams_ended": watched.ended,
            "live_push_errors": watched.errors,
            "live_events_received": watched.events,
            "control_plane_cpu_seconds_run_alone": cpu_alone.map(round),
            "control_plane_cpu_seconds_run_watched": cpu_watched.map(round),
            "control_plane_kib_per_watcher": kib_per_watcher,
            "control_plane_cpu_ms_per_watcher": cpu_ms_per_watcher,
            "rss_mb_idle": rss_idle.map(|k| round(k as f64 / 1024.0)),
            "rss_mb_with_watchers": rss_watching.map(|k| round(k as f64 / 1024.0)),
            "mixed_live_push": mixed_push,
            "mixed_streams_ended": mixed.ended,
            "mixed_watcher_errors": mixed.errors,
            "api_only": api_only_details,
        }),
        notes,
    })
}

/// What the clients ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// Half the clients start with the run page, half with the API, and
    /// each alternates (`quality.md`'s web row).
    PageAndApi,
    /// Every client asks for `GET /api/v1/runs/{id}` only.
    ApiOnly,
}

/// One load phase and what it measured.
struct Loaded {
    samples: Samples,
    elapsed: f64,
    cpu_used: Option<f64>,
    own_used: Option<f64>,
    machine_used: Option<f64>,
    rss_before: Option<u64>,
    /// The control plane's largest RSS seen during the phase, in KiB.
    peak_kib: u64,
    watched: crate::watchers::Seen,
}

/// A fresh run executed while `cfg.clients` clients ask without pause
/// (`mix`) and `cfg.watchers` watch its live stream.
async fn loaded(
    cfg: &Config,
    scratch: &Scratch,
    stack: &Stack,
    pid: u32,
    slug: &str,
    latest: &str,
    mix: Mix,
) -> anyhow::Result<Loaded> {
    let name = match mix {
        Mix::PageAndApi => "mixed",
        Mix::ApiOnly => "api",
    };
    let addr = stack.api.base.trim_start_matches("http://").to_owned();
    let run = prepared_run(cfg, scratch, stack, slug, name, latest).await?;
    let watchers = Watchers::opened(&addr, &stack.api.user, &run, cfg.watchers).await?;
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
    // The clients run on threads of their own, so the worker's tasks in
    // this process do not delay the reading of their answers.
    let clients = {
        let (stop, api) = (stop.clone(), stack.api.clone());
        let (page, json) = (format!("/runs/{run}"), format!("/api/v1/runs/{run}"));
        let count = cfg.clients;
        std::thread::spawn(move || -> anyhow::Result<Samples> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let clients: Vec<_> = (0..count)
                    .map(|i| {
                        let paths = match mix {
                            Mix::PageAndApi if i % 2 == 0 => vec![page.clone(), json.clone()],
                            Mix::PageAndApi => vec![json.clone(), page.clone()],
                            Mix::ApiOnly => vec![json.clone()],
                        };
                        let (stop, token) = (stop.clone(), api.user.clone());
                        tokio::spawn(client(addr.clone(), paths, token, stop))
                    })
                    .collect();
                let mut all = Samples::default();
                for c in clients {
                    let s = c.await?;
                    all.page.extend(s.page);
                    all.api.extend(s.api);
                    all.errors += s.errors;
                }
                Ok(all)
            })
        })
    };
    let started = Instant::now();
    let cpu_before = cpu_seconds(pid);
    let own_before = cpu_seconds(std::process::id());
    let machine_before = crate::report::machine_busy_seconds();
    stack.api.execute(&run, json!({})).await?;
    let state = wait_final(&stack.pool, &run, Duration::from_secs(1800)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_used = cpu_seconds(pid).zip(cpu_before).map(|(a, b)| a - b);
    let own_used = cpu_seconds(std::process::id())
        .zip(own_before)
        .map(|(a, b)| a - b);
    let machine_used = crate::report::machine_busy_since(machine_before);
    stop.store(true, Ordering::Relaxed);
    let samples = tokio::task::spawn_blocking(move || clients.join())
        .await?
        .map_err(|_| anyhow::anyhow!("a web client thread panicked"))??;
    let _ = sampler.await;
    let state = state?;
    anyhow::ensure!(state == "succeeded", "the run under load ended {state}");
    let watched = watchers.finish().await?;
    Ok(Loaded {
        samples,
        elapsed,
        cpu_used,
        own_used,
        machine_used,
        rss_before,
        peak_kib: peak_rss.load(Ordering::Relaxed),
        watched,
    })
}

/// One client: its own keep-alive HTTP/1.1 connection, no pause, asking
/// for `paths` in turn. A failed connection is opened again.
async fn client(addr: String, paths: Vec<String>, token: String, stop: Arc<AtomicBool>) -> Samples {
    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;

    let mut samples = Samples::default();
    let mut turn = 0;
    let authorization = format!("Bearer {token}");
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = tokio::net::TcpStream::connect(&addr).await else {
            samples.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await
        else {
            samples.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let connection = tokio::spawn(connection);
        while !stop.load(Ordering::Relaxed) {
            let path = &paths[turn % paths.len()];
            turn += 1;
            let request = hyper::Request::get(path.as_str())
                .header(hyper::header::HOST, addr.as_str())
                .header(hyper::header::AUTHORIZATION, authorization.as_str())
                .body(Empty::new())
                .expect("a valid request");
            let started = Instant::now();
            let answered = match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    response
                        .into_body()
                        .collect()
                        .await
                        .map(|_| status.is_success())
                }
                Err(err) => Err(err),
            };
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            match answered {
                Ok(true) => {}
                Ok(false) => {
                    samples.errors += 1;
                    continue;
                }
                // The connection broke: open another.
                Err(_) => {
                    samples.errors += 1;
                    connection.abort();
                    continue 'connect;
                }
            }
            if path.starts_with("/api/") {
                samples.api.push(ms);
            } else {
                samples.page.push(ms);
            }
        }
        connection.abort();
    }
    samples
}

/// The control plane's own view of the two routes, from its latency
/// histogram: requests handled, and the share that took longer than 10, 25
/// and 50 ms between routing and response. What the clients measured on top
/// of that is time in sockets and in the clients' own queues.
async fn server_side(api: &crate::stack::Api) -> anyhow::Result<serde_json::Value> {
    let text = api
        .client
        .get(api.url("/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out = serde_json::Map::new();
    for route in ["/runs/{id}", "/api/v1/runs/{id}"] {
        let selector = format!("method=\"GET\",route=\"{route}\",status=\"200\"");
        let value = |suffix: &str, le: Option<&str>| -> Option<f64> {
            text.lines().find_map(|line| {
                let rest =
                    line.strip_prefix(&format!("http_request_duration_seconds{suffix}{{"))?;
                let (labels, value) = rest.split_once("} ")?;
                let wanted = match le {
                    Some(le) => {
                        labels.contains(&selector) && labels.contains(&format!("le=\"{le}\""))
                    }
                    None => labels == selector,
                };
                wanted.then(|| value.trim().parse().ok()).flatten()
            })
        };
        let count = value("_count", None).unwrap_or(0.0);
        let over = |le: &str| {
            value("_bucket", Some(le))
                .filter(|_| count > 0.0)
                .map(|within| round(100.0 * (count - within) / count))
        };
        out.insert(
            route.to_owned(),
            json!({
                "requests": count,
                "percent_over_10_ms": over("0.01"),
                "percent_over_25_ms": over("0.025"),
                "percent_over_50_ms": over("0.05"),
            }),
        );
    }
    for kind in ["run", "token"] {
        let sum = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix) && l.contains(&format!("kind=\"{kind}\"")))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        };
        let reads = sum("migrate_hub_shared_read_duration_seconds_count{");
        let seconds = sum("migrate_hub_shared_read_duration_seconds_sum{");
        let waited = text
            .lines()
            .filter(|l| {
                l.starts_with("migrate_hub_shared_read_requests_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains("served=\"waited\"")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>();
        out.insert(
            format!("{kind} reads"),
            json!({
                "reads": reads,
                "mean_read_ms": (reads > 0.0).then(|| round(seconds * 1000.0 / reads)),
                "requests_that_waited": waited,
            }),
        );
    }
    Ok(serde_json::Value::Object(out))
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

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
