//! Schema snapshots after executions, taken when the worker is idle.
//!
//! Reading a schema costs the target's server some milliseconds of CPU;
//! taken inline, it would lengthen every target's execution and a fan-out
//! with it. So a finished execution hands its snapshot here, and one task
//! per worker takes them one at a time while no job runs (or once one has
//! waited [`MAX_DEFER`], then at most one per [`BUSY_PACE`] while jobs run),
//! on a session of its own, under the target lock.
//! A snapshot whose target has begun another execution since is dropped
//! (that execution takes its own), and so is one a drift scan already
//! recorded as the execution's `after`. On shutdown the ones waiting are taken
//! before the worker stops, for at most [`DRAIN_FOR`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{
    domain::Engine,
    store::snapshots::Taken,
    targets::{
        self,
        introspect::{self, Introspected},
    },
};
use tokio::{
    sync::{Notify, Semaphore, mpsc},
    task::JoinHandle,
    time::Instant,
};

use crate::{executor::TargetSpec, lock, report::Reporter};

/// The longest a snapshot waits for the worker to be idle.
pub const MAX_DEFER: Duration = Duration::from_secs(30);
/// While jobs run, the least time between two snapshots taken because they
/// waited [`MAX_DEFER`]: a long run's backlog is read a little at a time
/// beside its jobs, the rest once the worker is idle.
pub const BUSY_PACE: Duration = Duration::from_secs(1);
/// How long a stopping worker keeps taking the snapshots still waiting.
pub const DRAIN_FOR: Duration = Duration::from_secs(15);
/// How often the task looks whether the worker is idle.
const IDLE_POLL: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A snapshot to take after an execution.
pub struct Pending {
    pub target: TargetSpec,
    /// The execution's reporter: who records the snapshot, for what.
    pub reporter: Reporter,
    queued: Instant,
}

impl Pending {
    pub fn new(target: TargetSpec, reporter: Reporter) -> Self {
        Self {
            target,
            reporter,
            queued: Instant::now(),
        }
    }
}

/// Hands snapshots to the worker's snapshot task.
#[derive(Debug, Clone)]
pub struct Snapshots {
    tx: mpsc::UnboundedSender<Pending>,
    closing: Arc<AtomicBool>,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("execution_id", &self.reporter.execution_id)
            .finish_non_exhaustive()
    }
}

/// The running snapshot task; [`SnapshotTask::drain`] ends it.
pub struct SnapshotTask {
    snapshots: Snapshots,
    task: JoinHandle<()>,
}

impl Snapshots {
    /// Starts the task of a worker whose jobs hold `permits` (all
    /// `concurrency` of them free: idle); `lock_wait` bounds the wait for a
    /// target's lock.
    pub fn start(
        permits: Arc<Semaphore>,
        concurrency: usize,
        lock_wait: Duration,
    ) -> (Self, SnapshotTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        let snapshots = Self {
            tx,
            closing: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(Notify::new()),
        };
        let task = tokio::spawn(take_all(
            rx,
            snapshots.clone(),
            permits,
            concurrency,
            lock_wait,
        ));
        (snapshots.clone(), SnapshotTask { snapshots, task })
    }

    /// Queues the snapshot after an execution.
    pub fn defer(&self, pending: Pending) {
        if self.tx.send(pending).is_err() {
            tracing::warn!("the snapshot task has stopped; a snapshot is dropped");
        }
    }
}

impl SnapshotTask {
    /// Takes the snapshots still waiting (for at most [`DRAIN_FOR`]) and ends.
    pub async fn drain(self) {
        self.snapshots.closing.store(true, Ordering::SeqCst);
        self.snapshots.wake.notify_one();
        let abort = self.task.abort_handle();
        if tokio::time::timeout(DRAIN_FOR, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("stopped before every schema snapshot was taken");
        }
    }
}

async fn take_all(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    snapshots: Snapshots,
    permits: Arc<Semaphore>,
    concurrency: usize,
    lock_wait: Duration,
) {
    // When the last snapshot taken while jobs ran was taken.
    let mut busy_take: Option<Instant> = None;
    loop {
        let pending = match rx.try_recv() {
            Ok(pending) => pending,
            Err(mpsc::error::TryRecvError::Disconnected) => return,
            Err(mpsc::error::TryRecvError::Empty) => {
                if snapshots.closing.load(Ordering::SeqCst) {
                    return;
                }
                tokio::select! {
                    received = rx.recv() => match received {
                        Some(pending) => pending,
                        None => return,
                    },
                    () = snapshots.wake.notified() => continue,
                }
            }
        };
        loop {
            let busy = permits.available_permits() < concurrency;
            let closing = snapshots.closing.load(Ordering::SeqCst);
            let since_busy_take = busy_take.map(|at: Instant| at.elapsed());
            if !waits(busy, closing, pending.queued.elapsed(), since_busy_take) {
                if busy && !closing {
                    busy_take = Some(Instant::now());
                }
                break;
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
        take(&pending, lock_wait).await;
    }
}

/// Whether a snapshot that has `waited` waits longer: never when the worker
/// is idle or stopping; while jobs run, until it has waited [`MAX_DEFER`]
/// and the last one taken while busy is [`BUSY_PACE`] ago.
fn waits(busy: bool, closing: bool, waited: Duration, since_busy_take: Option<Duration>) -> bool {
    if !busy || closing {
        return false;
    }
    waited < MAX_DEFER || since_busy_take.is_some_and(|since| since < BUSY_PACE)
}

/// Takes one snapshot: unless the target has begun another execution since,
/// reads its schema under the target lock and records it.
async fn take(pending: &Pending, lock_wait: Duration) {
    let reporter = &pending.reporter;
    match reporter.superseded().await {
        Ok(false) => {}
        Ok(true) => {
            tracing::debug!(execution_id = %reporter.execution_id, "target ran again since; its own snapshot follows");
            return;
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not check the target before its snapshot");
            return;
        }
    }
    match read(&pending.target, lock_wait).await {
        Ok(read) => {
            reporter
                .snapshot(pending.target.engine, read, Taken::After)
                .await;
        }
        Err(err) => {
            tracing::warn!(error = %err, execution_id = %reporter.execution_id, "could not take the target's schema snapshot");
        }
    }
}

/// Reads the target's schema on a session of its own, under the target
/// lock (waiting at most `lock_wait` for it): no job runs meanwhile.
pub async fn read(target: &TargetSpec, lock_wait: Duration) -> Result<Introspected, String> {
    match target.engine {
        Engine::Postgres => postgres(target, lock_wait).await,
        Engine::Mysql => mysql(target, lock_wait).await,
    }
}

async fn postgres(target: &TargetSpec, lock_wait: Duration) -> Result<Introspected, String> {
    let client =
        targets::postgres::connect(&target.endpoint, target.password.as_ref(), CONNECT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
    lock::acquire_pg(&client, lock_wait)
        .await
        .map_err(|e| e.to_string())?;
    let read = introspect::postgres(&client).await;
    lock::release_pg(&client).await;
    read
}

async fn mysql(target: &TargetSpec, lock_wait: Duration) -> Result<Introspected, String> {
    let database = &target.endpoint.database;
    let mut conn =
        targets::mysql::connect(&target.endpoint, target.password.as_ref(), CONNECT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
    let read = match lock::acquire_mysql(&mut conn, database, lock_wait).await {
        Ok(_) => {
            let read = introspect::mysql(&mut conn, database).await;
            lock::release_mysql(&mut conn, database).await;
            read
        }
        Err(err) => Err(err.to_string()),
    };
    if let Err(err) = conn.disconnect().await {
        tracing::debug!(error = %err, "snapshot session ended with an error");
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn an_idle_or_stopping_worker_takes_a_snapshot_at_once() {
        assert!(!waits(false, false, Duration::ZERO, None));
        assert!(!waits(true, true, Duration::ZERO, Some(Duration::ZERO)));
    }

    #[test]
    fn a_busy_worker_waits_until_the_snapshot_is_old_enough() {
        assert!(waits(true, false, MAX_DEFER - SECOND, None));
        assert!(!waits(true, false, MAX_DEFER, None));
    }

    #[test]
    fn a_busy_worker_takes_old_snapshots_one_per_pace_not_back_to_back() {
        let old = MAX_DEFER + 10 * SECOND;
        assert!(waits(true, false, old, Some(Duration::ZERO)));
        assert!(waits(
            true,
            false,
            old,
            Some(BUSY_PACE - Duration::from_millis(1))
        ));
        assert!(!waits(true, false, old, Some(BUSY_PACE)));
        // Idle again: the backlog goes back to back.
        assert!(!waits(false, false, old, Some(Duration::ZERO)));
    }
}
