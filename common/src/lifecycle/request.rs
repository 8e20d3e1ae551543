//! Requesting a run: what it covers, and the rules it must pass before
//! anyone is asked to approve it.

use std::collections::HashMap;

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Caller, LifecycleError};
use crate::{
    domain::{
        Checksum, Direction, Version, order,
        run::{ExecutionSettings, PinnedMigration},
    },
    store::{
        audit, inventory, migrations,
        runs::{self, NewRun},
        webhooks,
    },
};

/// Most targets a run starts at once.
pub const MAX_CONCURRENCY: i32 = 256;

/// What an author asks for.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub project_id: Uuid,
    pub db_set_id: Uuid,
    pub direction: Direction,
    /// `up`: apply every version up to this one; `down`: roll back every
    /// version above it.
    pub target_version: String,
    /// Checked for length and characters by the caller.
    pub note: String,
    pub stop_on_failure: bool,
    /// Targets at once (default 8).
    pub concurrency: Option<i32>,
    /// Targets that run (and must succeed) first (default 0).
    pub canary: Option<i32>,
}

/// Creates a run waiting for approval and returns its id. Refused when the
/// DB set has a dirty target, nothing is left to do, a covered version
/// cannot be rolled back, or (for `up` runs where the environment asks for
/// it) the previous environment has not applied every covered version.
pub async fn request(
    conn: &mut PgConnection,
    caller: &Caller,
    ask: &RunRequest,
) -> Result<Uuid, LifecycleError> {
    let target_version = Version::parse(&ask.target_version)
        .map_err(|e| LifecycleError::invalid("target_version", e.to_string()))?;
    let concurrency = ask.concurrency.unwrap_or(8);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(LifecycleError::invalid(
            "concurrency",
            format!("must be between 1 and {MAX_CONCURRENCY}"),
        ));
    }
    let set = inventory::db_set(conn, ask.project_id, ask.db_set_id)
        .await?
        .ok_or_else(|| LifecycleError::invalid("db_set_id", "no such DB set in this project"))?;
    let env = inventory::environment(conn, &set.environment)
        .await?
        .ok_or_else(|| {
            LifecycleError::Corrupt(format!("DB set {} names a missing environment", set.id))
        })?;
    let targets = runs::pinned_targets(conn, set.id).await?;
    if targets.is_empty() {
        return Err(LifecycleError::invalid(
            "db_set_id",
            "the DB set has no targets",
        ));
    }
    let canary = ask.canary.unwrap_or(0);
    if !(0..=targets.len() as i32).contains(&canary) {
        return Err(LifecycleError::invalid(
            "canary",
            "must be between 0 and the number of targets",
        ));
    }
    if let Some(name) = runs::dirty_target_in(conn, set.id).await? {
        return Err(LifecycleError::conflict(
            "target_dirty",
            format!("target {name} is dirty after a failed script; an admin must resolve it first"),
        ));
    }

    let target_ids: Vec<Uuid> = targets.iter().map(|t| t.id).collect();
    let applied = runs::applied_counts(conn, &target_ids).await?;
    let all = migrations::list(conn, ask.project_id).await?;
    let covered = covered(
        &all,
        ask.direction,
        &target_version,
        &applied,
        targets.len(),
    )?;
    if covered.is_empty() {
        return Err(LifecycleError::conflict(
            "nothing_to_do",
            format!(
                "every target of {} is already at version {target_version}",
                set.name
            ),
        ));
    }
    if ask.direction == Direction::Up && env.require_previous_success {
        let ids: Vec<Uuid> = covered.iter().map(|m| m.id).collect();
        promotion_gate(conn, ask.project_id, &env, &ids).await?;
    }

    let settings = ExecutionSettings {
        direction: ask.direction,
        target_version,
        stop_on_failure: ask.stop_on_failure,
        concurrency,
        canary,
        lock_timeout_ms: env.lock_timeout_ms,
        statement_timeout_ms: env.statement_timeout_ms,
        lock_retries: Some(env.lock_retries),
        preflight_wait_ms: Some(env.preflight_wait_ms),
        blocker_age_ms: Some(env.blocker_age_ms),
        terminate_idle_blockers_after_ms: env.terminate_idle_blockers_after_ms,
    };
    let pinned: Vec<(Uuid, PinnedMigration)> = covered
        .iter()
        .map(|m| {
            // Stored versions were parsed when written; one that no longer
            // parses is a fault of the tool database, not of this request.
            let version = Version::parse(&m.version).map_err(|e| {
                LifecycleError::Corrupt(format!("stored migration version {:?}: {e}", m.version))
            })?;
            Ok((
                m.id,
                PinnedMigration {
                    version,
                    checksum: Checksum::from_stored(m.checksum.clone()),
                },
            ))
        })
        .collect::<Result<_, LifecycleError>>()?;
    let engines: Vec<_> = targets.iter().map(|t| t.engine).collect();
    let sources: Vec<super::review::Source<'_>> = covered
        .iter()
        .map(|m| super::review::Source {
            version: &m.version,
            up_sql: &m.up_sql,
            down_sql: m.down_sql.as_deref(),
            transactional: m.transactional,
        })
        .collect();
    let review = super::review::review(&env, ask.direction, &engines, &sources, &[]);
    let out_of_order = if ask.direction == Direction::Up {
        out_of_order_targets(conn, &target_ids, &pinned).await?
    } else {
        Vec::new()
    };
    let (run_id, digest) = runs::insert(
        conn,
        &NewRun {
            project_id: ask.project_id,
            db_set_id: set.id,
            environment: &env.name,
            requested_by: caller.id,
            note: &ask.note,
            settings: &settings,
            migrations: &pinned,
            targets: &targets,
            out_of_order: &out_of_order,
            review: &review,
        },
    )
    .await?;
    webhooks::notify_run(conn, run_id, "requested").await?;
    audit::append(
        conn,
        &caller.audit("run.requested", "run", run_id).project(ask.project_id).details(json!({
            "db_set_id": set.id,
            "environment": env.name,
            "direction": settings.direction,
            "target_version": settings.target_version,
            "digest": digest,
            "migrations": pinned.iter().map(|(_, m)| json!({"version": m.version, "checksum": m.checksum})).collect::<Vec<_>>(),
            "targets": targets.len(),
            "out_of_order_targets": out_of_order.len(),
            "risk": review.risk,
            "blocking_findings": review.blocking().len(),
        })),
    )
    .await?;
    Ok(run_id)
}

/// The migrations a run covers, in execution order: for `up`, every version
/// up to `target` not yet applied on all `targets` targets; for `down`,
/// every version above `target` applied on at least one, newest first —
/// each of which must have a down script.
fn covered<'a>(
    all: &'a [migrations::MigrationRow],
    direction: Direction,
    target: &Version,
    applied: &HashMap<String, i64>,
    targets: usize,
) -> Result<Vec<&'a migrations::MigrationRow>, LifecycleError> {
    let count = |version: &str| applied.get(version).copied().unwrap_or(0);
    let n = targets as i64;
    match direction {
        Direction::Up => {
            if !all.iter().any(|m| m.version == target.to_string()) {
                return Err(LifecycleError::invalid(
                    "target_version",
                    format!("project has no migration {target}"),
                ));
            }
            Ok(all
                .iter()
                .filter(|m| {
                    Version::parse(&m.version).is_ok_and(|v| v <= *target) && count(&m.version) < n
                })
                .collect())
        }
        Direction::Down => {
            let covered: Vec<_> = all
                .iter()
                .rev()
                .filter(|m| {
                    Version::parse(&m.version).is_ok_and(|v| v > *target) && count(&m.version) > 0
                })
                .collect();
            if let Some(m) = covered.iter().find(|m| m.down_sql.is_none()) {
                return Err(LifecycleError::invalid(
                    "target_version",
                    format!(
                        "version {} has no down script, so it cannot be rolled back",
                        m.version
                    ),
                ));
            }
            Ok(covered)
        }
    }
}

/// Promotion gate: every migration of an `up` run must already be applied
/// on every target of the project's DB sets in the previous environment.
async fn promotion_gate(
    conn: &mut PgConnection,
    project_id: Uuid,
    env: &inventory::EnvironmentRow,
    migration_ids: &[Uuid],
) -> Result<(), LifecycleError> {
    let Some(previous) = runs::previous_environment(conn, env.position).await? else {
        return Ok(());
    };
    let (targets, missing) =
        runs::promotion_gap(conn, project_id, &previous, migration_ids).await?;
    if targets == 0 {
        return Err(LifecycleError::conflict(
            "promotion_gate",
            format!(
                "environment {} requires success on {previous} first, and this project has no targets in {previous}",
                env.name
            ),
        ));
    }
    if let Some(version) = missing {
        return Err(LifecycleError::conflict(
            "promotion_gate",
            format!(
                "version {version} has not succeeded on every {previous} target of this project yet"
            ),
        ));
    }
    Ok(())
}

/// The targets on which an `up` run applies a version below one they have.
async fn out_of_order_targets(
    conn: &mut PgConnection,
    targets: &[Uuid],
    pinned: &[(Uuid, PinnedMigration)],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut by_target: HashMap<Uuid, Vec<Version>> = HashMap::new();
    for (target, version) in runs::applied_versions(conn, targets).await? {
        if let Ok(version) = Version::parse(&version) {
            by_target.entry(target).or_default().push(version);
        }
    }
    let pending: Vec<Version> = pinned.iter().map(|(_, m)| m.version.clone()).collect();
    Ok(by_target
        .into_iter()
        .filter(|(_, applied)| order::applies_out_of_order(&pending, applied))
        .map(|(target, _)| target)
        .collect())
}
