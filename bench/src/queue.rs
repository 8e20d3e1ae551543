//! Queue latency: from the Execute request to the first target `running`,
//! idle and with a backlog of queued jobs. The end is the `started_at` the
//! worker records in the tool database when it claims the execution, so how
//! often the bench looks does not bias the result.
//!
//! The backlog is jobs that sit in the same queue table without being due
//! for this worker: half in a pool no worker serves, half in the measured
//! pool but scheduled for tomorrow (`not_before`). Jobs that are due in the
//! same pool would only measure how long the worker takes to drain them.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
    Config,
    report::{Outcome, Row, Stats},
    scratch::Scratch,
    stack::{ControlPlane, Stack, first_error, wait_final},
};

pub const P50_BAR_MS: f64 = 50.0;
pub const P99_BAR_MS: f64 = 250.0;

pub async fn run(cfg: &Config, scratch: &Scratch) -> anyhow::Result<Outcome> {
    let stack = Stack::start(scratch, &ControlPlane::InProcess, 1, cfg.concurrency).await?;
    let result = measure(cfg, scratch, &stack).await;
    stack.stop().await?;
    result
}

async fn measure(cfg: &Config, scratch: &Scratch, stack: &Stack) -> anyhow::Result<Outcome> {
    let slug = "queue";
    stack.api.project(slug).await?;
    stack
        .api
        .migration(
            slug,
            "1",
            "probe",
            "CREATE TABLE bench_probe (id int);",
            "DROP TABLE bench_probe;",
        )
        .await?;
    let db = scratch.pg_database("queue").await?;
    let set = stack.api.db_set(slug, "one").await?;
    let server = scratch.servers.pg();
    stack
        .api
        .targets(
            slug,
            &set,
            vec![crate::target_json("t1", "postgres", &server, &db, "")],
        )
        .await?;

    let mut up = true;
    let idle = samples(cfg, stack, slug, &set, &mut up).await?;
    let depth = backlog(cfg, stack).await?;
    let loaded = samples(cfg, stack, slug, &set, &mut up).await?;

    let mut rows = Vec::new();
    for (label, stats) in [
        ("idle".to_owned(), &idle.0),
        (format!("{depth} jobs queued"), &loaded.0),
    ] {
        rows.push(
            Row::new(
                "queue latency",
                format!("{label}: Execute → first target running, p50"),
            )
            .hub(format!("{} ms", stats.p50_ms))
            .bar(format!("< {P50_BAR_MS} ms"), stats.p50_ms < P50_BAR_MS),
        );
        rows.push(
            Row::new(
                "queue latency",
                format!("{label}: p99 of {} runs", stats.samples),
            )
            .hub(format!("{} ms (max {} ms)", stats.p99_ms, stats.max_ms))
            .bar(format!("< {P99_BAR_MS} ms"), stats.p99_ms < P99_BAR_MS),
        );
    }
    Ok(Outcome {
        name: "queue",
        rows,
        details: json!({
            "measured_from": "the Execute request being sent (bench clock) to target_executions.started_at (set by the worker's claim)",
            "idle": idle.0,
            "idle_from_queued_at": idle.1,
            "backlog": {"queued_jobs": depth, "kind": "half in a pool without workers, half scheduled for tomorrow in the measured pool"},
            "loaded": loaded.0,
            "loaded_from_queued_at": loaded.1,
            "worker_concurrency": cfg.concurrency,
        }),
        notes: Vec::new(),
    })
}

/// `cfg.samples` runs of one target, alternately up and down; the latency of
/// each from the request (and, second, from `queued_at`, the Execute
/// transaction's time) to `started_at`.
async fn samples(
    cfg: &Config,
    stack: &Stack,
    slug: &str,
    set: &str,
    up: &mut bool,
) -> anyhow::Result<(Stats, Stats)> {
    let mut from_request = Vec::new();
    let mut from_queued = Vec::new();
    for _ in 0..cfg.samples {
        let body = if *up {
            json!({"db_set_id": set, "direction": "up", "target_version": "1"})
        } else {
            json!({"db_set_id": set, "direction": "down", "target_version": "0"})
        };
        let id = stack.api.approved_run(slug, body).await?;
        let sent = time::OffsetDateTime::now_utc();
        stack.api.execute(&id, json!({})).await?;
        let state = wait_final(&stack.pool, &id, Duration::from_secs(60)).await?;
        anyhow::ensure!(
            state == "succeeded",
            "probe run {id} ended {state}: {}",
            first_error(&stack.pool, &id).await
        );
        let (queued, started): (time::OffsetDateTime, time::OffsetDateTime) = sqlx::query_as(
            "SELECT queued_at, started_at FROM target_executions WHERE run_id = $1
             ORDER BY started_at LIMIT 1",
        )
        .bind(id.parse::<uuid::Uuid>()?)
        .fetch_one(&stack.pool)
        .await
        .context("reading the probe run's timestamps")?;
        from_request.push((started - sent).as_seconds_f64() * 1000.0);
        from_queued.push((started - queued).as_seconds_f64() * 1000.0);
        *up = !*up;
    }
    Ok((Stats::of(&from_request), Stats::of(&from_queued)))
}

/// Queues `cfg.backlog` jobs that this worker must pass over; returns how
/// many jobs wait in the queue table afterwards.
async fn backlog(cfg: &Config, stack: &Stack) -> anyhow::Result<i64> {
    let slug = "queue-backlog";
    stack.api.project(slug).await?;
    stack
        .api
        .call(
            reqwest::Method::POST,
            &format!("/api/v1/projects/{slug}/migrations"),
            &stack.api.user,
            Some(json!({"version": "1", "name": "never-run", "up_sql": "SELECT 1;"})),
            &[reqwest::StatusCode::CREATED],
        )
        .await?;
    let parked = cfg.backlog / 2;
    let later = cfg.backlog - parked;
    for (name, count, pool, not_before) in [
        ("parked", parked, "parked", None),
        (
            "later",
            later,
            "default",
            Some(time::OffsetDateTime::now_utc() + time::Duration::days(1)),
        ),
    ] {
        if count == 0 {
            continue;
        }
        let set = stack.api.db_set(slug, name).await?;
        // Targets are never reached: their jobs never become due here.
        let targets: Vec<Value> = (0..count)
            .map(|i| {
                json!({"name": format!("{name}-{i:03}"), "engine": "postgres", "host": "127.0.0.1",
                       "port": 5432, "database": format!("never_{i}"), "username": "nobody",
                       "tls_mode": "disable", "worker_pool": pool})
            })
            .collect();
        stack.api.targets(slug, &set, targets).await?;
        let id = stack
            .api
            .approved_run(
                slug,
                json!({"db_set_id": set, "direction": "up", "target_version": "1", "concurrency": count}),
            )
            .await?;
        let body = match not_before {
            Some(t) => {
                json!({"not_before": t.format(&time::format_description::well_known::Rfc3339)?})
            }
            None => json!({}),
        };
        stack.api.execute(&id, body).await?;
    }
    let queued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM target_executions WHERE state = 'queued'")
            .fetch_one(&stack.pool)
            .await?;
    Ok(queued)
}
