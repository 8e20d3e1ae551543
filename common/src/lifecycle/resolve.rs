//! An admin's decision on a dirty target: the interrupted migration counts
//! as applied or as rolled back, or its script is resumed by the run that
//! left the target dirty.

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Caller, LifecycleError};
use crate::{
    domain::{Direction, Version, resume, run::RunEvent},
    queue,
    store::{
        audit, executions,
        runs::{self, PinnedVersion},
        target_state::{self, DeclaredApplied, LockedDirty},
    },
};

/// The target's dirty mark, locked for the decision, with the migration it
/// stopped in; refused when there is none or the admin named another
/// version.
pub async fn lock_dirty(
    conn: &mut PgConnection,
    target_id: Uuid,
    asked_version: &str,
) -> Result<(LockedDirty, PinnedVersion), LifecycleError> {
    let Some(dirty) = target_state::lock_dirty(conn, target_id).await? else {
        return Err(LifecycleError::conflict(
            "target_not_dirty",
            "the target is not dirty; there is nothing to resolve",
        ));
    };
    if asked_version.trim() != dirty.version {
        return Err(LifecycleError::invalid(
            "version",
            format!("the target is dirty at version {}", dirty.version),
        ));
    }
    let pinned = runs::pinned_version(conn, dirty.run_id, &dirty.version)
        .await?
        .ok_or_else(|| {
            LifecycleError::Corrupt(format!(
                "run {} does not pin the version {} it left dirty",
                dirty.run_id, dirty.version
            ))
        })?;
    Ok((dirty, pinned))
}

/// Whether the version counts as applied after the decision: applied after
/// an `up` declared applied, or after a `down` declared rolled back (it did
/// not happen).
pub fn now_applied(dirty: &LockedDirty, declared_applied: bool) -> Result<bool, LifecycleError> {
    let direction: Direction = dirty
        .direction
        .parse()
        .map_err(|_| LifecycleError::Corrupt(format!("stored direction {:?}", dirty.direction)))?;
    Ok((direction == Direction::Up) == declared_applied)
}

/// Records the decision in the hub, after the caller brought the target's
/// own history to it: the version is applied or not, the dirty mark is
/// cleared, and the decision is audited (`as_label`: `applied` or
/// `rolled_back`).
pub async fn resolve(
    conn: &mut PgConnection,
    caller: &Caller,
    target_id: Uuid,
    (dirty, pinned): &(LockedDirty, PinnedVersion),
    as_label: &str,
    reason: &str,
) -> Result<bool, LifecycleError> {
    let applied = now_applied(dirty, as_label == "applied")?;
    if applied {
        let version = Version::parse(&dirty.version)
            .map_err(|_| LifecycleError::Corrupt(format!("stored version {:?}", dirty.version)))?;
        target_state::declare_applied(
            conn,
            &DeclaredApplied {
                target_id,
                version: &version,
                migration_id: pinned.migration_id,
                checksum: &pinned.checksum,
                run_id: dirty.run_id,
            },
        )
        .await?;
    } else {
        target_state::forget_applied(conn, target_id, &dirty.version).await?;
    }
    target_state::clear_dirty(conn, target_id).await?;
    audit::append(
        conn,
        &caller
            .audit("target.resolved", "target", target_id)
            .project(pinned.project_id)
            .details(json!({
                "version": dirty.version,
                "as": as_label,
                "direction": dirty.direction,
                "statement_reached": dirty.statement_index,
                "reason": reason,
            })),
    )
    .await?;
    Ok(applied)
}

/// A resume as queued.
#[derive(Debug, Clone)]
pub struct Resumed {
    pub run_id: Uuid,
    pub execution_id: Uuid,
    pub version: String,
    pub from_statement: i32,
}

/// Resumes the dirty script on the target from `from_statement` (the one
/// that stopped when absent): the run that left it dirty queues its
/// execution there again. Nothing touches the target here: the worker
/// proves the applied prefix under the target lock before it runs anything.
pub async fn resume(
    conn: &mut PgConnection,
    caller: &Caller,
    target_id: Uuid,
    asked_version: &str,
    from_statement: Option<i32>,
    reason: &str,
) -> Result<Resumed, LifecycleError> {
    let (dirty, pinned) = lock_dirty(conn, target_id, asked_version).await?;
    let from = resume::resume_from(dirty.statement_index, from_statement)
        .map_err(|e| LifecycleError::invalid("from_statement", e.to_string()))?;
    let Some(execution_id) = requeue_for_resume(conn, target_id, dirty.run_id, from).await? else {
        return Err(LifecycleError::conflict(
            "run_not_resumable",
            "the run that left the target dirty is not waiting for a resume (its execution on \
             the target is still running, or the run was cancelled); resolve the target as \
             applied or rolled back instead",
        ));
    };
    audit::append(
        conn,
        &caller
            .audit("target.resume_requested", "target", target_id)
            .project(pinned.project_id)
            .details(json!({
                "version": dirty.version,
                "run_id": dirty.run_id,
                "execution_id": execution_id,
                "statement_reached": dirty.statement_index,
                "from_statement": from,
                "reason": reason,
            })),
    )
    .await?;
    Ok(Resumed {
        run_id: dirty.run_id,
        execution_id,
        version: dirty.version,
        from_statement: from,
    })
}

/// Queues the run's stopped execution on the target again, asks its worker
/// to continue from statement `from`, and moves the run back to `running`.
/// Returns the execution queued, or `None` when the run's execution on the
/// target is not failed or interrupted. The caller holds the dirty row
/// locked.
pub async fn requeue_for_resume(
    conn: &mut PgConnection,
    target_id: Uuid,
    run_id: Uuid,
    from: i32,
) -> Result<Option<Uuid>, LifecycleError> {
    let Some(run) = runs::lock(conn, run_id).await? else {
        return Ok(None);
    };
    let Ok(next) = run.state.transition(RunEvent::Resume) else {
        return Ok(None);
    };
    let Some(queued) = executions::requeue_stopped(conn, run_id, target_id).await? else {
        return Ok(None);
    };
    target_state::ask_resume(conn, target_id, from).await?;
    if next != run.state {
        runs::set_state(conn, &run, next, None, Some("resumed by an admin")).await?;
    }
    queue::push(
        conn,
        run_id,
        run.traceparent.as_deref(),
        std::slice::from_ref(&queued),
        None,
    )
    .await?;
    Ok(Some(queued.0))
}
