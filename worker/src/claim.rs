//! Claiming work in the tool database: a target execution when its job
//! starts, then, once the job holds the target lock, the hub's record of the
//! target — what it holds as applied, and whether a script stopped part-way
//! there. What the job then does is reported by [`crate::report`].

use common::{
    crypto::Sealed,
    domain::{
        Version,
        window::{Schedule, WindowError, WindowState},
    },
    lifecycle,
    queue::TargetJob,
    store::{
        executions::{self, ClaimedExecution},
        inventory::{self, TargetRow},
        runs::{self, RunMigrationRow, RunRow},
        target_state::{self, DirtyState},
    },
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{env::JobEnv, retry::with_retry};

/// One row of a target's `migrate_hub_history`.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub version: String,
    pub checksum: String,
    /// The hub run that applied it (text; absent for baselines).
    pub run_id: Option<String>,
}

/// What a claimed execution needs, read in the claim's transaction.
pub struct Claimed {
    pub execution: ClaimedExecution,
    pub run: RunRow,
    pub migrations: Vec<RunMigrationRow>,
    pub target: Option<TargetRow>,
    pub secret: Option<Sealed>,
    /// Set when a script stopped part-way on the target before.
    pub dirty: Option<DirtyState>,
    /// The maintenance window in force (or why it cannot be read).
    pub window: Result<Schedule, WindowError>,
    /// Whether the target has a schema snapshot yet (else one is taken
    /// before its first migration).
    pub has_snapshot: bool,
    /// Set when the target's schema has drifted and its environment blocks
    /// drifted targets: since when.
    pub drift_blocks: Option<time::OffsetDateTime>,
}

/// What became of a job's execution when the job started.
pub enum Claim {
    /// Claimed: the job runs it.
    Claimed(Box<Claimed>),
    /// Outside its maintenance window: it waits for the next one, its job
    /// due then.
    WaitsForWindow(time::OffsetDateTime),
    /// Not `queued` (nor waiting for its window) any more.
    NotQueued,
}

/// Marks the execution `running` for this worker and audits the start, in
/// one transaction that also reads everything the job needs — unless the
/// maintenance window is closed: then the execution waits for the next one.
pub async fn execution(env: &JobEnv, job: &TargetJob) -> Result<Claim, sqlx::Error> {
    let actor = env.actor();
    with_retry("claim target execution", || async {
        let mut tx = env.db.begin().await?;
        let window = lifecycle::window::schedule(&mut tx, job.run_id).await?;
        if let Ok(schedule) = &window
            && let WindowState::Closed { opens_at } =
                schedule.state_at(time::OffsetDateTime::now_utc())
        {
            let waits = lifecycle::window::wait_for_window(
                &mut tx,
                &actor,
                job.execution_id,
                schedule,
                opens_at,
            )
            .await?;
            tx.commit().await?;
            return Ok(if waits {
                Claim::WaitsForWindow(opens_at)
            } else {
                Claim::NotQueued
            });
        }
        let Some((execution, run)) =
            lifecycle::claim(&mut tx, job.execution_id, env.worker_id).await?
        else {
            return Ok(Claim::NotQueued);
        };
        let migrations = runs::migrations(&mut tx, run.id).await?;
        let claimed = inventory::claimed_target(&mut tx, execution.target_id).await?;
        let dirty = target_state::dirty(&mut tx, execution.target_id).await?;
        let secret = claimed.as_ref().and_then(inventory::ClaimedTarget::secret);
        let (has_snapshot, drift_blocks) = claimed
            .as_ref()
            .map_or((false, None), |c| (c.has_snapshot, c.drift_blocks));
        let target = claimed.map(|c| c.target);
        lifecycle::started(&mut tx, &actor, env.worker_id, &execution, run.project_id).await?;
        tx.commit().await?;
        Ok(Claim::Claimed(Box::new(Claimed {
            execution,
            run,
            migrations,
            target,
            secret,
            dirty,
            window,
            has_snapshot,
            drift_blocks,
        })))
    })
    .await
}

/// What the hub holds of a target, read under its lock.
#[derive(Debug, Clone)]
pub struct HubRecord {
    /// Applied versions and their checksums.
    pub applied: Vec<(String, String)>,
    /// Set when a script stopped part-way on the target.
    pub dirty: Option<DirtyState>,
}

/// The hub's record of one target, read and amended only while the job
/// holds the target lock, so no other run can change it in between.
#[derive(Debug, Clone)]
pub struct TargetClaim {
    pub db: PgPool,
    pub target_id: Uuid,
    /// Whether the target had a schema snapshot when the job claimed it.
    pub has_snapshot: bool,
}

impl TargetClaim {
    /// The hub's record of this target, read together on one connection:
    /// its applied versions and checksums, and its dirty state if a script
    /// stopped part-way on it.
    pub async fn record(&self) -> Result<HubRecord, sqlx::Error> {
        with_retry("read the target's record", || async {
            let mut conn = self.db.acquire().await?;
            let applied = executions::applied(&mut conn, self.target_id).await?;
            let dirty = target_state::dirty(&mut conn, self.target_id).await?;
            Ok(HubRecord { applied, dirty })
        })
        .await
    }

    /// The hub's applied versions and checksums of this target.
    pub async fn applied(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        with_retry("read applied state", || async {
            let mut conn = self.db.acquire().await?;
            executions::applied(&mut conn, self.target_id).await
        })
        .await
    }

    /// Records, as applied, versions of the target's history that this
    /// hub's own runs applied there but never recorded. Returns how many.
    pub async fn catch_up(&self, rows: &[&HistoryRow]) -> Result<u64, sqlx::Error> {
        let found: Vec<executions::Unrecorded> = rows
            .iter()
            .filter_map(|row| {
                Some(executions::Unrecorded {
                    version: Version::parse(&row.version).ok()?,
                    checksum: row.checksum.clone(),
                    run_id: row.run_id.as_deref()?.parse().ok()?,
                })
            })
            .collect();
        with_retry("catch up applied state", || async {
            let mut tx = self.db.begin().await?;
            let count = executions::catch_up(&mut tx, self.target_id, &found).await?;
            tx.commit().await?;
            Ok(count)
        })
        .await
    }

    /// Takes up the resume an admin asked for on this target (see
    /// [`target_state::take_resume`]).
    pub async fn take_resume(&self) -> Result<(), sqlx::Error> {
        with_retry("take up the resume", || async {
            let mut conn = self.db.acquire().await?;
            target_state::take_resume(&mut conn, self.target_id).await
        })
        .await
    }
}

/// Why a dirty target refuses a job, for the run page.
pub fn dirty_refusal(dirty: &DirtyState) -> String {
    let since = common::domain::utc_seconds(dirty.since);
    format!(
        "target is dirty since {since} (version {}, statement {}); an admin must resolve it; \
         nothing was applied",
        dirty.version, dirty.statement_index
    )
}
