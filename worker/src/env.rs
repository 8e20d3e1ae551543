//! What every job of one worker shares, and the worker's heartbeat.

use std::time::Duration;

use common::{crypto::Keyring, store::audit::Actor};
use sqlx::PgPool;
use uuid::Uuid;

/// How often the worker tells the fleet page it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// What every job of one worker shares.
#[derive(Debug, Clone)]
pub struct JobEnv {
    pub db: PgPool,
    pub keys: Keyring,
    pub worker_id: Uuid,
    /// `MH_LOCK_WAIT_MS`: how long a job waits for another to release its target.
    pub lock_wait: Duration,
    /// Where finished executions leave their schema snapshot.
    pub snapshots: crate::snapshot::Snapshots,
}

impl JobEnv {
    /// The audit actor of this worker's writes.
    pub fn actor(&self) -> Actor {
        Actor::System(format!("worker:{}", self.worker_id))
    }
}
