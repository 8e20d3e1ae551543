//! Schema drift in the tool database: which targets are due for a scan,
//! their baselines, and the drift flagged on them (`schema_drift`).

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::schema_drift::OnDrift;

/// How long after an execution that applied something its target is left
/// alone by the scans while its `after` snapshot is missing: that snapshot
/// is taken when the worker is idle (within a minute), and a scan before
/// it would take the execution's change for drift. Past this, the
/// snapshot is presumed lost and the next scan records its reading as the
/// execution's `after` instead.
pub const SETTLE_SECS: i64 = 120;

/// Claims the target of the pool whose scan is most overdue — never
/// scanned, or last scanned more than `every_secs` ago — that no execution
/// is running on or still owes its `after` snapshot, and marks it scanned
/// now, so that the pool's other workers take other targets.
pub async fn claim_due(
    pool: &PgPool,
    worker_pool: &str,
    every_secs: i64,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE targets SET schema_scanned_at = now()
         WHERE id = (
             SELECT t.id FROM targets t
             WHERE t.worker_pool = $1 AND t.deleted_at IS NULL
               AND (t.schema_scanned_at IS NULL
                    OR t.schema_scanned_at < now() - make_interval(secs => $2))
               AND NOT EXISTS (
                   SELECT 1 FROM target_executions e WHERE e.target_id = t.id
                     AND (e.state = 'running'
                          OR (e.finished_at > now() - make_interval(secs => $3)
                              AND e.current_version IS NOT NULL
                              AND NOT EXISTS (SELECT 1 FROM schema_snapshots s
                                              WHERE s.execution_id = e.id AND s.taken = 'after'))))
             ORDER BY t.schema_scanned_at NULLS FIRST
             LIMIT 1 FOR UPDATE OF t SKIP LOCKED)
         RETURNING id",
    )
    .bind(worker_pool)
    .bind(every_secs as f64)
    .bind(SETTLE_SECS as f64)
    .fetch_optional(pool)
    .await
}

/// Records that the target was scanned now, and why the scan could not
/// read it (`None`: it could).
pub async fn scan_result(
    conn: &mut PgConnection,
    target_id: Uuid,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE targets SET schema_scan_error = $2, schema_scanned_at = now() WHERE id = $1",
    )
    .bind(target_id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// A target's baseline: its newest snapshot that is not a drift reading.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Baseline {
    pub id: Uuid,
    pub hash: String,
    pub taken_at: OffsetDateTime,
}

pub async fn baseline(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Option<Baseline>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, hash, taken_at FROM schema_snapshots WHERE target_id = $1 AND taken <> 'scan'
         ORDER BY taken_at DESC, id DESC LIMIT 1",
    )
    .bind(target_id)
    .fetch_optional(conn)
    .await
}

/// The newest execution that finished on the target after `since`, reached
/// a migration and left no `after` snapshot (its worker stopped before the
/// snapshot was taken, or the target could not be read then).
pub async fn unsnapshotted_execution(
    conn: &mut PgConnection,
    target_id: Uuid,
    since: OffsetDateTime,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT e.id FROM target_executions e
         WHERE e.target_id = $1 AND e.finished_at > $2 AND e.current_version IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM schema_snapshots s
                           WHERE s.execution_id = e.id AND s.taken = 'after')
         ORDER BY e.finished_at DESC LIMIT 1",
    )
    .bind(target_id)
    .bind(since)
    .fetch_optional(conn)
    .await
}

/// The drift flagged on a target.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Flagged {
    pub target_id: Uuid,
    /// The snapshot the target was expected to match.
    pub baseline_id: Uuid,
    /// The scan's reading that differs from it.
    pub snapshot_id: Uuid,
    #[serde(skip)]
    pub baseline_hash: String,
    #[serde(skip)]
    pub snapshot_hash: String,
    /// When a scan first found the target drifted.
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    /// When a scan last found it so.
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
}

const FLAGGED: &str = "SELECT d.target_id, d.baseline_id, d.snapshot_id, b.hash AS baseline_hash,
        r.hash AS snapshot_hash, d.detected_at, d.checked_at
 FROM schema_drift d JOIN schema_snapshots b ON b.id = d.baseline_id
 JOIN schema_snapshots r ON r.id = d.snapshot_id";

/// The drift flagged on the target, locked until the transaction ends.
pub async fn lock_flagged(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Option<Flagged>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{FLAGGED} WHERE d.target_id = $1 FOR UPDATE OF d"
    )))
    .bind(target_id)
    .fetch_optional(conn)
    .await
}

/// The drift flagged on the target.
pub async fn flagged(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Option<Flagged>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{FLAGGED} WHERE d.target_id = $1"
    )))
    .bind(target_id)
    .fetch_optional(conn)
    .await
}

/// Flags the target drifted from `baseline_id` as read in `snapshot_id`
/// (keeping the first detection's time when it was flagged already).
pub async fn flag(
    conn: &mut PgConnection,
    target_id: Uuid,
    baseline_id: Uuid,
    snapshot_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO schema_drift (target_id, baseline_id, snapshot_id) VALUES ($1, $2, $3)
         ON CONFLICT (target_id) DO UPDATE
         SET baseline_id = EXCLUDED.baseline_id, snapshot_id = EXCLUDED.snapshot_id, checked_at = now()",
    )
    .bind(target_id)
    .bind(baseline_id)
    .bind(snapshot_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A scan found the flagged drift unchanged.
pub async fn still_drifted(conn: &mut PgConnection, target_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE schema_drift SET checked_at = now() WHERE target_id = $1")
        .bind(target_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Clears the target's drift flag; returns it, if there was one.
pub async fn clear(conn: &mut PgConnection, target_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("DELETE FROM schema_drift WHERE target_id = $1 RETURNING snapshot_id")
        .bind(target_id)
        .fetch_optional(conn)
        .await
}

/// A drifted live target, for the pages that list them.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DriftedTarget {
    pub target_id: Uuid,
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    /// The environment's policy: `block` refuses the target's executions.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub on_drift: String,
}

/// The drifted live targets of a DB set, by name.
pub async fn in_db_set(
    conn: &mut PgConnection,
    db_set_id: Uuid,
) -> Result<Vec<DriftedTarget>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id AS target_id, t.name, d.detected_at, e.on_drift
         FROM schema_drift d JOIN targets t ON t.id = d.target_id
         JOIN db_sets s ON s.id = t.db_set_id JOIN environments e ON e.name = s.environment
         WHERE t.db_set_id = $1 AND t.deleted_at IS NULL ORDER BY t.name",
    )
    .bind(db_set_id)
    .fetch_all(conn)
    .await
}

/// Drifted live targets per environment, every environment listed.
pub async fn count_by_environment(pool: &PgPool) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.name, count(t.id) FROM environments e
         LEFT JOIN db_sets s ON s.environment = e.name
         LEFT JOIN targets t ON t.db_set_id = s.id AND t.deleted_at IS NULL
              AND EXISTS (SELECT 1 FROM schema_drift d WHERE d.target_id = t.id)
         GROUP BY e.name ORDER BY e.name",
    )
    .fetch_all(pool)
    .await
}

/// The policy of the target's environment.
pub async fn policy(conn: &mut PgConnection, target_id: Uuid) -> Result<OnDrift, sqlx::Error> {
    let text: Option<String> = sqlx::query_scalar(
        "SELECT e.on_drift FROM targets t JOIN db_sets s ON s.id = t.db_set_id
         JOIN environments e ON e.name = s.environment WHERE t.id = $1",
    )
    .bind(target_id)
    .fetch_optional(conn)
    .await?;
    Ok(text.and_then(|t| t.parse().ok()).unwrap_or_default())
}

/// When the target was last scanned and why that scan could not read it.
pub async fn scan_state(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<(Option<OffsetDateTime>, Option<String>), sqlx::Error> {
    let row: Option<(Option<OffsetDateTime>, Option<String>)> =
        sqlx::query_as("SELECT schema_scanned_at, schema_scan_error FROM targets WHERE id = $1")
            .bind(target_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.unwrap_or_default())
}

/// Who a target is, for the audit rows and webhooks about its drift; its
/// row is locked until the transaction ends, so that the scans, executions
/// and acceptances of one target's drift are serialized.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TargetContext {
    pub name: String,
    pub db_set_id: Uuid,
    pub db_set: String,
    pub environment: String,
    pub project_id: Uuid,
    pub project: String,
}

pub async fn lock_target(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Option<TargetContext>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.name, s.id AS db_set_id, s.name AS db_set, s.environment, p.id AS project_id,
                p.slug AS project
         FROM targets t JOIN db_sets s ON s.id = t.db_set_id JOIN projects p ON p.id = s.project_id
         WHERE t.id = $1 FOR NO KEY UPDATE OF t",
    )
    .bind(target_id)
    .fetch_optional(conn)
    .await
}

/// Records the flagged drift's reading as the target's new baseline (an
/// `accepted` snapshot of the same schema and sizes); returns its id.
pub async fn accept_reading(
    conn: &mut PgConnection,
    flagged: &Flagged,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO schema_snapshots (id, target_id, execution_id, hash, taken, sizes, version)
         SELECT $1, r.target_id, NULL, r.hash, 'accepted', r.sizes,
                (SELECT version FROM applied_migrations WHERE target_id = r.target_id
                 ORDER BY version_key DESC LIMIT 1)
         FROM schema_snapshots r WHERE r.id = $2",
    )
    .bind(id)
    .bind(flagged.snapshot_id)
    .execute(conn)
    .await?;
    Ok(id)
}
