//! Schema drift, in one place: what a scan's reading does (flag, report,
//! clear), what an execution's snapshot does to a flagged drift, and an
//! admin's acceptance of drift as the target's new baseline. Each step takes
//! the caller's transaction, locks the target's row (so the steps of one
//! target are serialized), and appends its audit row — and, for new drift,
//! the `target.drifted` webhook — in that transaction.

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Caller, LifecycleError};
use crate::{
    domain::{
        Engine,
        schema::{self, Schema},
        schema_drift::{self, Verdict},
    },
    store::{
        audit::{self, Actor, Entry},
        schema_drift::{self as store, Flagged, TargetContext},
        snapshots::{self, NewSnapshot, Taken},
        webhooks,
    },
    targets::introspect::TableSize,
};

/// The webhook event of new drift.
pub const DRIFTED_EVENT: &str = "target.drifted";

/// What a scan read on a target.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub target_id: Uuid,
    pub engine: Engine,
    pub schema: &'a Schema,
    pub sizes: &'a [TableSize],
}

/// What a scan's reading did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanned {
    /// Judged against the target's baseline.
    Judged(Verdict),
    /// An execution since the baseline had left no snapshot: the reading
    /// is recorded as that execution's `after` and is the new baseline.
    CaughtUp(Uuid),
    /// The target was deleted meanwhile; nothing recorded.
    Gone,
}

/// Records a scan's reading of a target and what it means: the first
/// reading of a target becomes its baseline; a reading that differs from
/// the baseline is stored and flags the target (audited `target.drifted`,
/// with the webhook, once per distinct reading); one that matches again
/// clears the flag (`target.drift_reverted`).
pub async fn record_scan(
    conn: &mut PgConnection,
    actor: &Actor,
    reading: &Reading<'_>,
) -> Result<Scanned, sqlx::Error> {
    let target_id = reading.target_id;
    let Some(target) = store::lock_target(conn, target_id).await? else {
        return Ok(Scanned::Gone);
    };
    store::scan_result(conn, target_id, None).await?;
    let snapshot = |taken, execution_id| NewSnapshot {
        target_id,
        execution_id,
        engine: reading.engine,
        schema: reading.schema,
        sizes: reading.sizes,
        taken,
    };
    let Some(baseline) = store::baseline(conn, target_id).await? else {
        snapshots::record(conn, &snapshot(Taken::Initial, None)).await?;
        return Ok(Scanned::Judged(Verdict::Initial));
    };
    if let Some(execution) =
        store::unsnapshotted_execution(conn, target_id, baseline.taken_at).await?
    {
        snapshots::record(conn, &snapshot(Taken::After, Some(execution))).await?;
        absorbed(conn, actor, target_id, &target, execution).await?;
        return Ok(Scanned::CaughtUp(execution));
    }
    let flagged = store::lock_flagged(conn, target_id).await?;
    let verdict = schema_drift::judge(
        Some(&baseline.hash),
        flagged.as_ref().map(|f| f.snapshot_hash.as_str()),
        &reading.schema.hash,
    );
    match verdict {
        Verdict::Initial | Verdict::InSync => {}
        Verdict::StillDrifted => store::still_drifted(conn, target_id).await?,
        Verdict::Reverted => {
            store::clear(conn, target_id).await?;
            let entry = Entry::new(actor.clone(), "target.drift_reverted", "target", target_id)
                .project(target.project_id)
                .details(json!({
                    "target": target.name,
                    "db_set": target.db_set,
                    "baseline_snapshot_id": baseline.id,
                }));
            audit::append(conn, &entry).await?;
        }
        Verdict::Drifted { first } => {
            let recorded = snapshots::record(conn, &snapshot(Taken::Scan, None)).await?;
            store::flag(conn, target_id, baseline.id, recorded.id).await?;
            let before = snapshots::text(conn, &baseline.hash)
                .await?
                .unwrap_or_default();
            let diff = schema::diff(&before, &reading.schema.text);
            let details = json!({
                "target": target.name,
                "db_set": target.db_set,
                "environment": target.environment,
                "first": first,
                "baseline_snapshot_id": baseline.id,
                "snapshot_id": recorded.id,
                "added": diff.added,
                "removed": diff.removed,
                "changed": diff.changed,
            });
            let entry = Entry::new(actor.clone(), "target.drifted", "target", target_id)
                .project(target.project_id)
                .details(details.clone());
            audit::append(conn, &entry).await?;
            webhooks::enqueue(
                conn,
                target.project_id,
                DRIFTED_EVENT,
                &drifted_payload(target_id, &target, &diff, details),
            )
            .await?;
        }
    }
    Ok(Scanned::Judged(verdict))
}

/// The `target.drifted` webhook's body (with a Slack-compatible `text`).
fn drifted_payload(
    target_id: Uuid,
    target: &TargetContext,
    diff: &schema::SchemaDiff,
    details: serde_json::Value,
) -> serde_json::Value {
    let objects: Vec<&str> = diff
        .added
        .iter()
        .chain(&diff.removed)
        .chain(&diff.changed)
        .map(String::as_str)
        .collect();
    let text = format!(
        "[{}] schema drift on target {} (DB set {}, {}): {}",
        target.project,
        target.name,
        target.db_set,
        target.environment,
        if objects.is_empty() {
            "objects changed".to_owned()
        } else {
            objects.join(", ")
        }
    );
    json!({
        "event": DRIFTED_EVENT,
        "text": text,
        "project": target.project,
        "target": { "id": target_id, "name": target.name, "db_set_id": target.db_set_id },
        "drift": details,
        "at": time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    })
}

/// An execution recorded the target's schema after it: that is the new
/// baseline, so drift flagged before is cleared (audited
/// `target.drift_absorbed`: the execution's snapshot includes it). Called
/// in the transaction that records the `after` snapshot.
pub async fn after_execution(
    conn: &mut PgConnection,
    actor: &Actor,
    target_id: Uuid,
    execution_id: Uuid,
) -> Result<(), sqlx::Error> {
    let Some(target) = store::lock_target(conn, target_id).await? else {
        return Ok(());
    };
    absorbed(conn, actor, target_id, &target, execution_id).await
}

async fn absorbed(
    conn: &mut PgConnection,
    actor: &Actor,
    target_id: Uuid,
    target: &TargetContext,
    execution_id: Uuid,
) -> Result<(), sqlx::Error> {
    if let Some(reading) = store::clear(conn, target_id).await? {
        let entry = Entry::new(actor.clone(), "target.drift_absorbed", "target", target_id)
            .project(target.project_id)
            .details(json!({
                "target": target.name,
                "db_set": target.db_set,
                "execution_id": execution_id,
                "drift_snapshot_id": reading,
            }));
        audit::append(conn, &entry).await?;
    }
    Ok(())
}

/// An admin accepts the target's drift as its new baseline (an `accepted`
/// snapshot of the drifted schema), with a reason; the flag is cleared and
/// the target's runs go on. Audited `target.drift_accepted`.
pub async fn accept(
    conn: &mut PgConnection,
    caller: &Caller,
    target_id: Uuid,
    reason: &str,
) -> Result<(Flagged, Uuid), LifecycleError> {
    let target = store::lock_target(conn, target_id)
        .await?
        .ok_or(LifecycleError::NotFound("target"))?;
    let Some(flagged) = store::lock_flagged(conn, target_id).await? else {
        return Err(LifecycleError::conflict(
            "not_drifted",
            "the target's schema has not drifted from its baseline; there is nothing to accept",
        ));
    };
    let accepted = store::accept_reading(conn, &flagged).await?;
    store::clear(conn, target_id).await?;
    let entry = caller
        .audit("target.drift_accepted", "target", target_id)
        .project(target.project_id)
        .details(json!({
            "target": target.name,
            "db_set": target.db_set,
            "reason": reason,
            "previous_baseline_snapshot_id": flagged.baseline_id,
            "accepted_snapshot_id": accepted,
            "detected_at": crate::domain::utc_seconds(flagged.detected_at),
        }));
    audit::append(conn, &entry).await?;
    Ok((flagged, accepted))
}

/// The refusal of an execution on a target whose environment blocks
/// drifted targets.
pub fn refusal(detected_at: time::OffsetDateTime) -> String {
    let since = crate::domain::utc_seconds(detected_at);
    format!(
        "the target's schema has drifted from its baseline (detected {since}) and its \
         environment blocks drifted targets (on_drift: block); an admin must accept the drift \
         as the new baseline, or it must be reverted; nothing was applied"
    )
}
