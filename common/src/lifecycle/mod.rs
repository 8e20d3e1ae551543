//! The life of a run, in one place. Every change of a run's state, of one
//! of its target executions or of a target's history goes through here,
//! whoever asks: the API, the web forms, the workers, the command line and
//! the tests.
//!
//! Each step takes the caller's transaction and who acts, decides with the
//! pure rules of [`crate::domain`] (the run's transition table, the
//! approval rule, the dispatch rule, the digest), writes through
//! [`crate::store`], and appends its webhook and audit rows last. The
//! caller commits; a refusal that wrote something which must stay (the
//! audit row of a refused approval, the invalidation of a stale run) says
//! so with [`LifecycleError::keeps_writes`].
//!
//! | step | who | from → to |
//! |---|---|---|
//! | [`request`] | author | → `pending_approval` |
//! | [`approve`], [`deny`] | manager, admin | `pending_approval` → `approved` / `denied` (an approval needs a review without unwaived errors) |
//! | [`waive`] | admin | a finding of the run's SQL review is waived (`pending_approval`; the digest changes) |
//! | [`review_waiting_runs`] | a change of an environment's review policy | `pending_approval`, `approved` → `invalidated` where the review changed |
//! | [`invalidate_if_stale`], [`invalidate_where`] | any change of what an approval covers | `pending_approval`, `approved` → `invalidated` |
//! | [`execute`] | requester, manager, admin | `approved` → `queued` (outside the maintenance window: its first targets due at the next opening) |
//! | [`cancel`] | requester, manager, admin | not final → `cancelled` |
//! | [`claim`] | worker | execution `queued` → `running`; run `queued` → `running` |
//! | [`record_steps`], [`progress`], [`waiting`] | worker | the execution's applied steps, the statement its script has reached, what it waits for and its lock retries (no state change) |
//! | [`blocker_terminated`] | worker, where the environment opted in | a blocking session `idle in transaction` was terminated (audit only) |
//! | [`window::wait_for_window`] | worker: a target outside its maintenance window, or one whose window ended between two migrations | execution `queued`, `running` → `waiting_for_window` (its job due at the next opening) |
//! | [`finish`] | worker | execution `running` → final (a target left dirty marked first); the places it freed refilled |
//! | [`settle`] | whoever finished, after its commit; the control-plane sweep for [`unsettled`] runs | run → its outcome, once no execution is open |
//! | [`dead_workers::interrupt_if_dead`] | control-plane sweep, a worker redelivered the job | execution `running` on a worker silent for 15 s → `interrupted` (MySQL part-way: dirty at the last reported statement), through [`finish`] |
//! | [`resolve`], [`resume`] | admin, on a dirty target | the version counts as applied / rolled back; or execution → `queued` again, run → `running` |
//! | [`baseline`] | admin, on a target the hub has never migrated | the versions it already has count as applied, without a run |
//! | [`schema_drift::record_scan`] | worker, scanning its pool's targets | a reading that differs from the target's baseline flags it drifted (`target.drifted`, webhook); one that matches again clears it |
//! | [`schema_drift::after_execution`] | worker, recording an execution's `after` snapshot | the drift flagged before is part of the new baseline: cleared |
//! | [`schema_drift::accept`] | admin, on a drifted target | the drifted schema becomes the target's baseline; its runs go on |

mod baseline;
pub mod dead_workers;
mod decide;
mod operate;
mod request;
pub mod resolve;
mod review;
pub mod schema_drift;
mod targets;
pub mod window;

pub use baseline::{Baseline, TargetFacts, baseline};
pub use decide::{announce_invalidated, approve, deny, invalidate_if_stale, invalidate_where};
pub use operate::{cancel, dispatch, execute};
pub use request::{RunRequest, request};
pub use resolve::{Resumed, lock_dirty, requeue_for_resume, resolve, resume};
pub use review::{WaiverRequest, review_policy_changed, review_waiting_runs, waive};
pub use targets::{
    Finish, Terminated, blocker_terminated, claim, finish, progress, record_steps, settle,
    settle_due, started, unsettled, waiting,
};

use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{Capability, Role},
    store::audit::{Actor, Entry},
};

/// The run `run_id`, locked for the step; `NotFound` when there is none.
async fn lock_run(
    conn: &mut sqlx::PgConnection,
    run_id: Uuid,
) -> Result<crate::store::runs::RunRow, LifecycleError> {
    crate::store::runs::lock(conn, run_id)
        .await?
        .ok_or(LifecycleError::NotFound("run"))
}

/// A person acting on a run (signed in, or through one of their tokens).
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub email: String,
    /// The lesser of the user's role and the token's role.
    pub role: Role,
    pub ip: Option<String>,
    /// The request as sent (`POST /api/v1/runs/…/approve`): the object of
    /// the audit row of a refusal.
    pub route: String,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::User {
            id: self.id,
            email: self.email.clone(),
        }
    }

    /// An audit entry by this caller, with their address.
    pub fn audit(
        &self,
        action: &'static str,
        object_type: &'static str,
        object_id: impl ToString,
    ) -> Entry {
        Entry::new(self.actor(), action, object_type, object_id).ip(self.ip.clone())
    }

    /// The audit row of a refused request (`access.denied` on the route).
    pub fn denial(&self, code: &str, reason: &str) -> Entry {
        self.audit("access.denied", "route", &self.route)
            .details(json!({ "code": code, "reason": reason }))
    }

    /// The audit row and message of a request refused for lack of
    /// `capability`.
    pub fn lacking(&self, capability: Capability) -> (Entry, String) {
        let entry = self
            .audit("access.denied", "route", &self.route)
            .details(json!({
                "code": "forbidden",
                "capability": format!("{capability:?}"),
                "role": self.role.as_str(),
            }));
        let message = format!(
            "your role ({}) does not allow this; it needs {} or above",
            self.role,
            capability.minimum_role()
        );
        (entry, message)
    }
}

/// Why a lifecycle step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A field of the request breaks a rule; `field` names it.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The run (or what it covers) is not in a state that allows the step.
    /// `recorded`: the refusal wrote something that must be committed (the
    /// run was invalidated).
    #[error("{message}")]
    Conflict {
        code: &'static str,
        message: String,
        recorded: bool,
    },
    /// The caller may not take this step; the refusal's audit row is in the
    /// transaction, which must be committed.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// The tool database holds something it should not (a broken invariant).
    #[error("{0}")]
    Corrupt(String),
}

impl LifecycleError {
    fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            message: message.into(),
            recorded: false,
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            message: message.into(),
        }
    }

    /// Whether the caller must commit its transaction although the step was
    /// refused: the refusal wrote an audit row or invalidated the run.
    pub fn keeps_writes(&self) -> bool {
        matches!(
            self,
            Self::Forbidden { .. } | Self::Conflict { recorded: true, .. }
        )
    }
}

/// For callers that retry on the tool database's errors (the workers): a
/// refusal becomes a protocol error, which is not retried.
impl From<LifecycleError> for sqlx::Error {
    fn from(err: LifecycleError) -> Self {
        match err {
            LifecycleError::Db(err) => err,
            other => sqlx::Error::Protocol(other.to_string()),
        }
    }
}
