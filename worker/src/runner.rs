//! The worker process's engine: registers in the fleet, heartbeats, and
//! consumes its pool's apalis queue until asked to stop.
//!
//! Jobs are claimed through apalis on the tool database. New jobs are
//! noticed through `LISTEN/NOTIFY` within milliseconds; a short poll
//! interval catches the few a notification misses (apalis only notifies a
//! job whose `run_at`, truncated to the second, is not after the pushing
//! transaction's start).
//!
//! Each job runs in its own tokio task holding one of `concurrency` permits.
//! That keeps a running migration alive when the apalis consumer has to be
//! rebuilt after a tool-database outage (the consumer stops on any backend
//! error), and the permits keep the limit exact across such rebuilds.

use std::{future::Future, sync::Arc, time::Duration};

use apalis::prelude::{
    BackendExt, BoxDynError, Data, Event, EventListenerExt, Strategy, WorkerBuilder,
    WorkerBuilderExt, WorkerContext, WorkerError,
};
use apalis_postgres::{Config, PostgresStorage};
use common::{crypto::Keyring, queue, store};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::{
    env::{HEARTBEAT, JobEnv},
    job,
    queue::{JobCodec, QueuedJob},
    scan::Scanner,
    snapshot::Snapshots,
};

/// apalis's own liveness: a consumer silent for `3 × 5 s` is presumed dead
/// and its claimed jobs are handed to another worker, which finds the
/// execution no longer `queued` and marks it `interrupted` if its worker is
/// dead (see `job::settle_orphan`).
const QUEUE_HEARTBEAT: Duration = Duration::from_secs(5);
const QUEUE_MISSED_HEARTBEATS: usize = 3;
/// The longest a drift scan waits for a target's lock.
const SCAN_LOCK_WAIT: Duration = Duration::from_secs(2);
/// Fallback poll for jobs whose notification was missed.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before rebuilding a consumer that stopped on an error.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(500);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// One worker process (or one in-process worker in tests).
#[derive(Debug)]
pub struct Worker {
    id: Uuid,
    db: PgPool,
    keys: Keyring,
    pool: String,
    concurrency: usize,
    lock_wait: Duration,
    poll_interval: Duration,
    drift_scan: Option<Duration>,
}

/// What the queue's handler needs; shared by all jobs of one worker.
#[derive(Debug)]
struct Handler {
    env: JobEnv,
    permits: Arc<Semaphore>,
}

impl Worker {
    /// A worker for the jobs of `pool`, running at most `concurrency` at once.
    pub fn new(
        db: PgPool,
        keys: Keyring,
        pool: impl Into<String>,
        concurrency: usize,
        lock_wait_ms: u64,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            db,
            keys,
            pool: pool.into(),
            concurrency: concurrency.max(1),
            lock_wait: Duration::from_millis(lock_wait_ms),
            poll_interval: DEFAULT_POLL_INTERVAL,
            drift_scan: None,
        }
    }

    /// Scans each target of the pool for schema drift this often, while
    /// the worker is idle (`None`, the default: never).
    pub fn drift_scan(mut self, every: Option<Duration>) -> Self {
        self.drift_scan = every;
        self
    }

    /// Overrides the fallback poll interval (default 1 s).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The id under which this worker registers in the fleet.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Runs until `shutdown` completes, then stops claiming, lets running
    /// jobs finish, and marks the worker stopped.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let hostname = hostname();
        store::workers::register(
            &self.db,
            self.id,
            &self.pool,
            &hostname,
            i32::try_from(self.concurrency).unwrap_or(i32::MAX),
        )
        .await?;
        tracing::info!(
            worker_id = %self.id,
            pool = %self.pool,
            concurrency = self.concurrency,
            drift_scan_secs = self.drift_scan.map(|every| every.as_secs()),
            "worker registered"
        );
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let (snapshots, snapshot_task) =
            Snapshots::start(permits.clone(), self.concurrency, self.lock_wait);
        let handler = Arc::new(Handler {
            env: JobEnv {
                db: self.db.clone(),
                keys: self.keys.clone(),
                worker_id: self.id,
                lock_wait: self.lock_wait,
                snapshots,
            },
            permits,
        });
        let heartbeat = tokio::spawn(heartbeat(
            self.db.clone(),
            self.id,
            handler.permits.clone(),
            self.concurrency,
        ));

        let scans = self.drift_scan.map(|every| {
            Scanner {
                db: self.db.clone(),
                keys: self.keys.clone(),
                pool: self.pool.clone(),
                actor: handler.env.actor(),
                lock_wait: self.lock_wait.min(SCAN_LOCK_WAIT),
                every,
            }
            .start(handler.permits.clone(), self.concurrency)
        });

        self.consume(handler.clone(), shutdown).await;
        if let Some(scans) = scans {
            scans.stop().await;
        }

        // Jobs that outlived a consumer rebuild still hold permits.
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        let _drained = handler.permits.acquire_many(all).await;
        snapshot_task.drain().await;
        heartbeat.abort();
        if let Err(err) = store::workers::stopped(&self.db, self.id).await {
            tracing::warn!(error = %err, "could not mark the worker stopped");
        }
        tracing::info!(worker_id = %self.id, "worker stopped");
        Ok(())
    }

    /// Runs apalis consumers until shutdown, rebuilding one that stops on an
    /// error (tool database restarted, listener lost) after a backoff.
    async fn consume(&self, handler: Arc<Handler>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut delay = FIRST_RESTART_DELAY;
        for generation in 1u64.. {
            // A fresh name per consumer: apalis refuses to register a name twice.
            let ctx = WorkerContext::new(&format!("{}-{generation}", self.id));
            let consumer = self.consumer(&ctx, handler.clone());
            tokio::pin!(consumer);
            let started = tokio::time::Instant::now();
            tokio::select! {
                // Polled first so the consumer has started before a stop.
                biased;
                result = &mut consumer => match result {
                    Ok(()) => return,
                    Err(err) => tracing::warn!(error = %err, "queue consumer stopped; rebuilding it"),
                },
                () = &mut shutdown => {
                    tracing::info!("shutting down: claiming no new jobs, waiting for running ones");
                    if ctx.stop().is_ok()
                        && let Err(err) = consumer.await
                    {
                        tracing::warn!(error = %err, "queue consumer failed while stopping");
                    }
                    return;
                }
            }
            if started.elapsed() > MAX_RESTART_DELAY {
                delay = FIRST_RESTART_DELAY;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = &mut shutdown => return,
            }
            delay = (delay * 2).min(MAX_RESTART_DELAY);
        }
    }

    /// Runs one apalis consumer of this worker's queue until it stops.
    async fn consumer(
        &self,
        ctx: &WorkerContext,
        handler: Arc<Handler>,
    ) -> Result<(), WorkerError> {
        let config = Config::default()
            .queue(queue::queue_name(&self.pool))
            // One job per fetch: a job never waits in one worker's buffer
            // while another worker of the pool is idle.
            .batch_size(1)
            .heartbeat_interval(QUEUE_HEARTBEAT)
            .missed_heartbeats(QUEUE_MISSED_HEARTBEATS);
        let backend = PostgresStorage::<QueuedJob>::new(&self.db)
            .with_config(config)
            .with_pubsub()
            .poll_with_strategy(Strategy::new().interval(self.poll_interval))
            .with_codec(JobCodec);
        WorkerBuilder::new(ctx)
            .backend(backend)
            .concurrency(self.concurrency)
            .data(handler)
            .on_event(|ctx, event| {
                if let Event::Error(err) = event {
                    tracing::warn!(consumer = ctx.name(), error = %err, "queue job failed");
                }
            })
            .build(handle)
            .run()
            .await
    }
}

/// The queue handler: runs the job in its own task under a permit.
async fn handle(job: QueuedJob, handler: Data<Arc<Handler>>) -> Result<(), BoxDynError> {
    let job = match job {
        QueuedJob::Target(job) => job,
        QueuedJob::Malformed(reason) => {
            tracing::error!(%reason, "dropping a malformed queue job");
            return Err(reason.into());
        }
    };
    let permit = handler.permits.clone().acquire_owned().await?;
    let env = handler.env.clone();
    let execution_id = job.execution_id;
    let task = tokio::spawn(async move {
        let _permit = permit;
        job::run(&env, &job).await
    });
    match task.await {
        Ok(result) => result.map_err(Into::into),
        Err(join_error) => {
            tracing::error!(%execution_id, error = %join_error, "job crashed");
            job::abandon(
                &handler.env,
                execution_id,
                "the worker crashed while executing this target; compare the target's \
                 migrate_hub_history with the hub before running again",
            )
            .await;
            Err(join_error.into())
        }
    }
}

/// Reports liveness and the number of running jobs every few seconds.
async fn heartbeat(db: PgPool, id: Uuid, permits: Arc<Semaphore>, concurrency: usize) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let running = concurrency.saturating_sub(permits.available_permits());
        let running = i32::try_from(running).unwrap_or(i32::MAX);
        crate::metrics::heartbeat(running);
        if let Err(err) = store::workers::heartbeat(&db, id, running).await {
            tracing::warn!(error = %err, "worker heartbeat failed");
        }
    }
}

/// The host name shown on the fleet page.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
