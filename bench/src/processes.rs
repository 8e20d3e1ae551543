//! `worker` processes (the real binary) of one pool, for the benchmarks
//! that measure more than one worker.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::{Config, stack::Stack};

/// `worker` processes of one pool, stopped (SIGTERM) by [`Processes::stop`]
/// or killed when dropped.
pub struct Processes(Vec<tokio::process::Child>);

/// Whether the processes scan idle targets for drift (their default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scans {
    On,
    /// Only the run's work is measured.
    Off,
}

impl Processes {
    /// Starts `n` processes of `pool`, each running `per_worker` targets at
    /// once, and waits until all are registered.
    pub async fn start(
        cfg: &Config,
        stack: &Stack,
        pool: &str,
        n: usize,
        per_worker: usize,
        scans: Scans,
    ) -> anyhow::Result<Self> {
        let binary = worker_binary(cfg)?;
        let mut children = Vec::new();
        for _ in 0..n {
            let mut command = tokio::process::Command::new(&binary);
            command
                .args(["--pool", pool, "--concurrency", &per_worker.to_string()])
                .env("MH_DATABASE_URL", &stack.tool_url)
                .env("MH_ENCRYPTION_KEYS", &stack.key_entry)
                .env("MH_METRICS_LISTEN", "127.0.0.1:0")
                .env("RUST_LOG", "warn");
            if scans == Scans::Off {
                command.env("MH_DRIFT_SCAN_MINUTES", "0");
            }
            children.push(
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .with_context(|| format!("starting {}", binary.display()))?,
            );
        }
        // Registered: ready to claim.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let live: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM workers WHERE pool = $1 AND stopped_at IS NULL",
            )
            .bind(pool)
            .fetch_one(&stack.pool)
            .await?;
            if live as usize >= n {
                return Ok(Processes(children));
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {live} of {n} workers registered"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(self) {
        for mut child in self.0 {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

fn worker_binary(cfg: &Config) -> anyhow::Result<PathBuf> {
    let path = cfg
        .control_plane
        .as_ref()
        .and_then(|cp| cp.parent().map(|d| d.join("worker")))
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("worker")))
        })
        .context("where the worker binary is")?;
    anyhow::ensure!(
        path.is_file(),
        "worker processes need the worker binary, not found at {} (cargo build --release -p worker)",
        path.display()
    );
    Ok(path)
}
