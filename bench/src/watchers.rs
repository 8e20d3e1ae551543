//! Watchers of a run's live stream (`GET /api/v1/runs/{id}/events`), each
//! on its own keep-alive HTTP/1.1 connection, on threads of their own. For
//! every target that ends, a watcher records how long after the finishing
//! transaction (the target's `finished_at`, taken by PostgreSQL inside that
//! transaction, so a little before its commit) the event reached it: the
//! delay from the worker's commit to the client, slightly overstated.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use serde_json::Value;
use time::OffsetDateTime;

/// What the watchers saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Milliseconds from each target's `finished_at` to its final event, per
    /// watcher and target.
    pub delays_ms: Vec<f64>,
    /// Watchers that got the `end` event.
    pub ended: usize,
    /// Events received in all.
    pub events: u64,
    /// Watchers that failed (could not connect, the stream broke).
    pub errors: usize,
}

/// Watchers started on a thread of their own.
pub struct Watchers {
    /// How many have received the run's opening events.
    pub opened: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<anyhow::Result<Seen>>,
}

impl Watchers {
    /// Starts `count` watchers of `run` at `addr` (`host:port`) with `token`.
    pub fn start(addr: String, token: String, run: String, count: usize) -> Watchers {
        let opened = Arc::new(AtomicUsize::new(0));
        let thread = {
            let opened = opened.clone();
            std::thread::spawn(move || -> anyhow::Result<Seen> {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let path = format!("/api/v1/runs/{run}/events");
                    let tasks: Vec<_> = (0..count)
                        .map(|_| {
                            tokio::spawn(watch(
                                addr.clone(),
                                path.clone(),
                                token.clone(),
                                opened.clone(),
                            ))
                        })
                        .collect();
                    let mut seen = Seen::default();
                    for task in tasks {
                        match task.await? {
                            Ok(one) => {
                                seen.delays_ms.extend(one.delays_ms);
                                seen.ended += one.ended;
                                seen.events += one.events;
                            }
                            Err(_) => seen.errors += 1,
                        }
                    }
                    Ok(seen)
                })
            })
        };
        Watchers { opened, thread }
    }

    /// Starts `count` watchers and waits until each has the run's opening
    /// events.
    pub async fn opened(addr: &str, token: &str, run: &str, count: usize) -> anyhow::Result<Self> {
        let watchers = Self::start(addr.to_owned(), token.to_owned(), run.to_owned(), count);
        watchers
            .wait_opened(count, Duration::from_secs(120))
            .await?;
        Ok(watchers)
    }

    /// Waits until every watcher has the run's opening events.
    pub async fn wait_opened(&self, count: usize, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.opened.load(Ordering::Relaxed) < count {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} watchers opened their stream in {limit:?}",
                self.opened.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until every stream has ended; what they saw.
    pub async fn finish(self) -> anyhow::Result<Seen> {
        tokio::task::spawn_blocking(move || self.thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the watcher thread panicked"))?
    }
}

/// One watcher: reads the stream until `end`.
async fn watch(
    addr: String,
    path: String,
    token: String,
    opened: Arc<AtomicUsize>,
) -> anyhow::Result<Seen> {
    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;

    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let _ = stream.set_nodelay(true);
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await?;
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, addr.as_str())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::ACCEPT, "text/event-stream")
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status().is_success(), "{}", response.status());
    let mut body = response.into_body();
    let mut buffer = String::new();
    let mut seen = Seen::default();
    let mut finished = HashSet::new();
    // The opening is the run event and one event per target: how many of
    // those are still to come (`None` before the run event).
    let mut opening: Option<usize> = None;
    'read: while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let arrived = OffsetDateTime::now_utc();
        buffer.push_str(std::str::from_utf8(data).context("event text")?);
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut name, mut payload) = ("", String::new());
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    payload.push_str(d.trim_start());
                }
            }
            if name.is_empty() {
                continue;
            }
            seen.events += 1;
            let data: Value = serde_json::from_str(&payload)?;
            match (opening, name) {
                (None, "run") => {
                    let total = data["total"].as_u64().unwrap_or(0) as usize;
                    opening = Some(total);
                    if total == 0 {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (Some(left), "target") if left > 0 => {
                    opening = Some(left - 1);
                    if left == 1 {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (_, "target") => {
                    let state = data["state"].as_str().unwrap_or("");
                    let done = matches!(
                        state,
                        "succeeded" | "failed" | "skipped" | "interrupted" | "cancelled"
                    );
                    let target = data["target_id"].as_str().unwrap_or("").to_owned();
                    if done && finished.insert(target) {
                        let at = data["finished_at"]
                            .as_str()
                            .and_then(|t| {
                                OffsetDateTime::parse(
                                    t,
                                    &time::format_description::well_known::Rfc3339,
                                )
                                .ok()
                            })
                            .context("a final target without finished_at")?;
                        seen.delays_ms
                            .push((arrived - at).as_seconds_f64().max(0.0) * 1000.0);
                    }
                }
                (_, "end") => {
                    seen.ended = 1;
                    break 'read;
                }
                _ => {}
            }
        }
    }
    connection.abort();
    anyhow::ensure!(seen.ended == 1, "the stream closed before `end`");
    Ok(seen)
}
