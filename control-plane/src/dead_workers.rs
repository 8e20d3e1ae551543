//! No run waits on a dead worker: every replica sweeps, every few seconds,
//! for `running` executions whose worker went silent
//! ([`common::lifecycle::dead_workers`]) and marks them `interrupted`, so
//! the run settles even when no other worker of that pool is left to pick
//! the job up. Replicas do not coordinate: each execution is taken with
//! `SKIP LOCKED` and finished at most once. The same sweep settles runs
//! whose last finisher stopped between its commit and the run's settling
//! ([`common::lifecycle::unsettled`]).

use std::time::Duration;

use common::{
    domain::RunState,
    lifecycle::{self, dead_workers},
    store::audit::Actor,
};
use sqlx::PgPool;
use uuid::Uuid;

/// How often a replica sweeps. With the 15 s of silence that make a worker
/// dead, its executions are interrupted within 20 s of its last heartbeat.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Executions handled per sweep; more wait for the next one.
const BATCH: i64 = 200;

/// Sweeps until the process ends.
pub async fn sweep_forever(db: PgPool) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = sweep(&db).await {
            tracing::warn!(error = %err, "could not sweep for executions of dead workers");
        }
    }
}

/// One sweep: returns how many executions were marked `interrupted`. Runs
/// whose last finisher stopped before settling them settle here too.
pub async fn sweep(db: &PgPool) -> Result<usize, sqlx::Error> {
    let candidates = {
        let mut conn = db.acquire().await?;
        dead_workers::dead(&mut conn, BATCH).await?
    };
    let actor = Actor::system("control-plane");
    let mut interrupted = 0;
    for execution_id in candidates {
        let mut tx = db.begin().await?;
        let Some(done) = dead_workers::interrupt_if_dead(&mut tx, execution_id, &actor).await?
        else {
            continue;
        };
        tx.commit().await?;
        let run_state = settle(db, done.run_id, &actor).await?;
        interrupted += 1;
        metrics::counter!("migrate_hub_executions_interrupted_total").increment(1);
        tracing::warn!(
            %execution_id,
            run_id = %done.run_id,
            target_id = %done.target_id,
            dirty = done.dirty,
            run_state = run_state.map(|s| s.as_str()),
            "the worker running this execution is dead; marked interrupted"
        );
    }
    let unsettled = {
        let mut conn = db.acquire().await?;
        lifecycle::unsettled(&mut conn, BATCH).await?
    };
    for run_id in unsettled {
        if let Some(run_state) = settle(db, run_id, &actor).await? {
            tracing::info!(%run_id, run_state = run_state.as_str(), "run finished");
        }
    }
    Ok(interrupted)
}

/// Records the run's outcome if its executions are all final.
async fn settle(db: &PgPool, run_id: Uuid, actor: &Actor) -> Result<Option<RunState>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let settled = lifecycle::settle(&mut tx, run_id, actor).await?;
    tx.commit().await?;
    Ok(settled)
}
