//! Drift scans: each worker reads the schema of its pool's targets now and
//! then and hands the reading to the lifecycle, which compares it with the
//! target's baseline and flags drift (`common::lifecycle::schema_drift`).
//!
//! Scans are paced so that they never slow a run: a worker scans only while
//! no job of its own runs, one target at a time, on a session of its own
//! under the target lock (a job waiting for the target waits at most one
//! reading, tens of milliseconds). The pool's workers share the scans
//! through the tool database: each claims the target whose scan is most
//! overdue, and a target that is running, or has just finished and still
//! waits for its `after` snapshot, is left for later.

use std::{sync::Arc, time::Duration};

use common::{
    crypto::Keyring,
    domain::schema,
    lifecycle::schema_drift::{self, Reading, Scanned},
    store::{audit::Actor, inventory, schema_drift as store},
};
use sqlx::PgPool;
use tokio::{sync::Semaphore, task::JoinHandle};
use uuid::Uuid;

use crate::{executor::TargetSpec, retry::with_retry, snapshot};

/// How often a busy worker looks whether it is idle again.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// The longest a worker waits before it looks for due targets again (a
/// new target is first read within this).
const MAX_TICK: Duration = Duration::from_secs(5);

/// What a worker's scans need.
#[derive(Debug, Clone)]
pub struct Scanner {
    pub db: PgPool,
    pub keys: Keyring,
    pub pool: String,
    pub actor: Actor,
    /// How long a scan waits for a target's lock (a target busy longer is
    /// scanned next time).
    pub lock_wait: Duration,
    /// How often each target is scanned.
    pub every: Duration,
}

/// The running scan task of a worker.
pub struct ScanTask {
    task: JoinHandle<()>,
}

impl ScanTask {
    /// Stops scanning; a reading in progress is dropped (its session
    /// closes, and the target lock with it; nothing was recorded).
    pub async fn stop(self) {
        self.task.abort();
        if let Err(err) = self.task.await
            && err.is_panic()
        {
            tracing::error!(error = %err, "the drift scan task panicked");
        }
    }
}

impl Scanner {
    /// Starts scanning while the worker whose jobs hold `permits` (all
    /// `concurrency` of them free: idle) has nothing to run.
    pub fn start(self, permits: Arc<Semaphore>, concurrency: usize) -> ScanTask {
        let task = tokio::spawn(async move { self.scan_forever(permits, concurrency).await });
        ScanTask { task }
    }

    async fn scan_forever(&self, permits: Arc<Semaphore>, concurrency: usize) {
        let tick = self.every.clamp(Duration::from_millis(100), MAX_TICK);
        let every_secs = i64::try_from(self.every.as_secs().max(1)).unwrap_or(i64::MAX);
        loop {
            if permits.available_permits() < concurrency {
                tokio::time::sleep(IDLE_POLL).await;
                continue;
            }
            match store::claim_due(&self.db, &self.pool, every_secs).await {
                Ok(Some(target_id)) => {
                    if let Err(err) = self.scan(target_id).await {
                        tracing::warn!(error = %err, %target_id, "drift scan failed");
                    }
                }
                Ok(None) => tokio::time::sleep(tick).await,
                Err(err) => {
                    tracing::warn!(error = %err, "could not look for targets to scan");
                    tokio::time::sleep(tick).await;
                }
            }
        }
    }

    /// Scans one target: reads its schema and records what the reading
    /// means. A target that cannot be read keeps the reason on its page.
    pub async fn scan(&self, target_id: Uuid) -> Result<Scanned, String> {
        let (target, secret) = {
            let mut conn = self.db.acquire().await.map_err(|e| e.to_string())?;
            let target = inventory::target(&mut conn, target_id)
                .await
                .map_err(|e| e.to_string())?;
            let secret = inventory::target_secret(&mut conn, target_id)
                .await
                .map_err(|e| e.to_string())?;
            (target, secret)
        };
        let Some(target) = target else {
            return Ok(Scanned::Gone);
        };
        let read = match TargetSpec::open(&self.keys, &target, secret.as_ref()) {
            Ok(spec) => snapshot::read(&spec, self.lock_wait).await,
            Err(err) => Err(err),
        };
        let read = match read {
            Ok(read) => read,
            Err(err) => {
                let mut conn = self.db.acquire().await.map_err(|e| e.to_string())?;
                store::scan_result(&mut conn, target_id, Some(&err))
                    .await
                    .map_err(|e| e.to_string())?;
                return Err(err);
            }
        };
        let schema = schema::render(read.objects);
        let reading = Reading {
            target_id,
            engine: target.engine,
            schema: &schema,
            sizes: &read.sizes,
        };
        let scanned = with_retry("record a drift scan", || async {
            let mut tx = self.db.begin().await?;
            let scanned = schema_drift::record_scan(&mut tx, &self.actor, &reading).await?;
            tx.commit().await?;
            Ok(scanned)
        })
        .await
        .map_err(|e| e.to_string())?;
        tracing::debug!(%target_id, ?scanned, "target scanned");
        Ok(scanned)
    }
}
