//! Schema snapshots: each distinct schema text once (`schema_texts`, by
//! hash), and each target's snapshots pointing at one (`schema_snapshots`).

use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    domain::{Engine, schema::Schema},
    targets::introspect::TableSize,
};

/// When a snapshot was taken, relative to its execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Before the first migration, on a target without a snapshot yet.
    Before,
    /// After the execution, whatever its outcome.
    After,
    /// A drift scan's reading that differs from the target's baseline.
    Scan,
    /// An admin accepted the target's drift as its new baseline.
    Accepted,
    /// The first reading of a target that had no snapshot.
    Initial,
}

impl Taken {
    pub fn as_str(self) -> &'static str {
        match self {
            Taken::Before => "before",
            Taken::After => "after",
            Taken::Scan => "scan",
            Taken::Accepted => "accepted",
            Taken::Initial => "initial",
        }
    }
}

/// A snapshot to record.
#[derive(Debug, Clone)]
pub struct NewSnapshot<'a> {
    pub target_id: Uuid,
    pub execution_id: Option<Uuid>,
    pub engine: Engine,
    pub schema: &'a Schema,
    pub sizes: &'a [TableSize],
    pub taken: Taken,
}

/// A recorded snapshot: its id, and whether its text was new.
#[derive(Debug, Clone, Copy)]
pub struct Recorded {
    pub id: Uuid,
    pub stored: bool,
}

/// Records a snapshot; the schema's text is stored only when no target had
/// it before (a fleet of identical targets keeps one copy).
pub async fn record(conn: &mut PgConnection, s: &NewSnapshot<'_>) -> Result<Recorded, sqlx::Error> {
    // A known text is safe from retention when it was used within the hour
    // (retention removes only texts unused for whole days); an older one is
    // touched, which locks it so retention cannot remove it under us. A
    // fleet of identical targets thus does not queue on one row.
    let known: bool = sqlx::query_scalar(
        "WITH touched AS (
             UPDATE schema_texts SET last_used_at = now()
              WHERE hash = $1 AND last_used_at < now() - interval '1 hour'
             RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM touched)
             OR EXISTS (SELECT 1 FROM schema_texts
                         WHERE hash = $1 AND last_used_at >= now() - interval '1 hour')",
    )
    .bind(&s.schema.hash)
    .fetch_one(&mut *conn)
    .await?;
    let stored = if known {
        false
    } else {
        sqlx::query(
            "INSERT INTO schema_texts (hash, engine, schema, objects) VALUES ($1, $2, $3, $4)
             ON CONFLICT (hash) DO UPDATE SET last_used_at = now()",
        )
        .bind(&s.schema.hash)
        .bind(s.engine.as_str())
        .bind(&s.schema.text)
        .bind(i32::try_from(s.schema.objects).unwrap_or(i32::MAX))
        .execute(&mut *conn)
        .await?
        .rows_affected()
            == 1
    };
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO schema_snapshots (id, target_id, execution_id, hash, taken, sizes, version)
         VALUES ($1, $2, $3, $4, $5, $6,
                 (SELECT version FROM applied_migrations WHERE target_id = $2
                  ORDER BY version_key DESC LIMIT 1))",
    )
    .bind(id)
    .bind(s.target_id)
    .bind(s.execution_id)
    .bind(&s.schema.hash)
    .bind(s.taken.as_str())
    .bind(sqlx::types::Json(s.sizes))
    .execute(conn)
    .await?;
    Ok(Recorded { id, stored })
}

/// One snapshot, without its text.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotRow {
    pub id: Uuid,
    pub target_id: Uuid,
    pub execution_id: Option<Uuid>,
    pub hash: String,
    pub taken: String,
    /// The newest version the hub recorded as applied on the target when
    /// the snapshot was taken.
    pub version: Option<String>,
    pub objects: i32,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<TableSize>))]
    pub sizes: sqlx::types::Json<Vec<TableSize>>,
    #[serde(with = "time::serde::rfc3339")]
    pub taken_at: OffsetDateTime,
}

const COLUMNS: &str =
    "s.id, s.target_id, s.execution_id, s.hash, s.taken, s.version, t.objects, s.sizes, s.taken_at";

/// The snapshot an execution left after it, and the one the target had
/// before it (its own `before`, else the newest earlier one).
pub async fn around_execution(
    conn: &mut PgConnection,
    target_id: Uuid,
    execution_id: Uuid,
) -> Result<(Option<SnapshotRow>, Option<SnapshotRow>), sqlx::Error> {
    let after: Option<SnapshotRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM schema_snapshots s JOIN schema_texts t ON t.hash = s.hash
         WHERE s.execution_id = $1 AND s.target_id = $2 AND s.taken = 'after'
         ORDER BY s.taken_at DESC LIMIT 1"
    )))
    .bind(execution_id)
    .bind(target_id)
    .fetch_optional(&mut *conn)
    .await?;
    let before: Option<SnapshotRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM schema_snapshots s JOIN schema_texts t ON t.hash = s.hash
         WHERE s.target_id = $1
           AND ((s.execution_id = $2 AND s.taken = 'before')
                OR (s.execution_id IS DISTINCT FROM $2
                    AND s.taken_at < COALESCE((SELECT min(taken_at) FROM schema_snapshots
                                               WHERE execution_id = $2), now())))
         ORDER BY (s.execution_id = $2) DESC NULLS LAST, s.taken_at DESC LIMIT 1"
    )))
    .bind(target_id)
    .bind(execution_id)
    .fetch_optional(conn)
    .await?;
    Ok((before, after))
}

/// A schema's text by its hash.
pub async fn text(conn: &mut PgConnection, hash: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT schema FROM schema_texts WHERE hash = $1")
        .bind(hash)
        .fetch_optional(conn)
        .await
}

/// The run's execution on the target, if it has one, and the target's name.
pub async fn execution_of(
    conn: &mut PgConnection,
    run_id: Uuid,
    target_id: Uuid,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT e.id, t.name FROM target_executions e JOIN targets t ON t.id = e.target_id
         WHERE e.run_id = $1 AND e.target_id = $2",
    )
    .bind(run_id)
    .bind(target_id)
    .fetch_optional(conn)
    .await
}

/// A live target of a DB set with the newest version the hub records as
/// applied there and the hash of its newest snapshot.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FleetRow {
    pub id: Uuid,
    pub name: String,
    pub version: Option<String>,
    pub hash: Option<String>,
}

/// Every live target of the DB set, by name.
pub async fn fleet(conn: &mut PgConnection, db_set_id: Uuid) -> Result<Vec<FleetRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id, t.name,
                (SELECT a.version FROM applied_migrations a WHERE a.target_id = t.id
                 ORDER BY a.version_key DESC LIMIT 1) AS version,
                (SELECT s.hash FROM schema_snapshots s WHERE s.target_id = t.id
                 ORDER BY s.taken_at DESC LIMIT 1) AS hash
         FROM targets t WHERE t.db_set_id = $1 AND t.deleted_at IS NULL ORDER BY t.name",
    )
    .bind(db_set_id)
    .fetch_all(conn)
    .await
}

/// Whether the `after` snapshot of `execution_id` is no longer wanted: the
/// target has begun another execution since it finished, or a drift scan
/// already recorded its reading as that execution's `after` (a worker kept
/// busy by a long run takes its backlog slowly).
pub async fn superseded(
    conn: &mut PgConnection,
    target_id: Uuid,
    execution_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM target_executions o
                        WHERE o.target_id = $1 AND o.id <> $2
                          AND o.started_at >= (SELECT finished_at FROM target_executions WHERE id = $2))
             OR EXISTS (SELECT 1 FROM schema_snapshots WHERE execution_id = $2 AND taken = 'after')",
    )
    .bind(target_id)
    .bind(execution_id)
    .fetch_one(conn)
    .await
}

/// The target's snapshots, newest first, at most `limit`.
pub async fn list(
    conn: &mut PgConnection,
    target_id: Uuid,
    limit: i64,
) -> Result<Vec<SnapshotRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM schema_snapshots s JOIN schema_texts t ON t.hash = s.hash
         WHERE s.target_id = $1 ORDER BY s.taken_at DESC, s.id DESC LIMIT $2"
    )))
    .bind(target_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// One of the target's snapshots.
pub async fn get(
    conn: &mut PgConnection,
    target_id: Uuid,
    id: Uuid,
) -> Result<Option<SnapshotRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM schema_snapshots s JOIN schema_texts t ON t.hash = s.hash
         WHERE s.target_id = $1 AND s.id = $2"
    )))
    .bind(target_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The newest snapshot of one of a project's targets on one engine.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EngineSnapshot {
    pub engine: String,
    pub target_name: String,
    #[sqlx(flatten)]
    pub snapshot: SnapshotRow,
}

/// Per engine, the newest snapshot of one of the project's live targets
/// taken at `version`, with the target's name.
pub async fn at_version(
    conn: &mut PgConnection,
    project_id: Uuid,
    version: &str,
) -> Result<Vec<EngineSnapshot>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (tg.engine) tg.engine, tg.name AS target_name, {COLUMNS}
         FROM schema_snapshots s JOIN schema_texts t ON t.hash = s.hash
         JOIN targets tg ON tg.id = s.target_id JOIN db_sets d ON d.id = tg.db_set_id
         WHERE d.project_id = $1 AND s.version = $2 AND tg.deleted_at IS NULL AND s.taken <> 'scan'
         ORDER BY tg.engine, s.taken_at DESC"
    )))
    .bind(project_id)
    .bind(version)
    .fetch_all(conn)
    .await
}

/// What one pass of retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub snapshots: u64,
    pub texts: u64,
}

/// Removes snapshots taken more than `days` ago — never a target's newest,
/// which is what the next run's change is compared with, nor its baseline
/// (its newest that is not a drift reading) or a flagged drift's reading —
/// and the schema texts no snapshot refers to any more that were last used
/// before then.
pub async fn prune(conn: &mut PgConnection, days: u32) -> Result<Pruned, sqlx::Error> {
    let days = i32::try_from(days).unwrap_or(i32::MAX);
    let snapshots = sqlx::query(
        "DELETE FROM schema_snapshots s
         WHERE s.taken_at < now() - make_interval(days => $1)
           AND s.id <> (SELECT n.id FROM schema_snapshots n WHERE n.target_id = s.target_id
                        ORDER BY n.taken_at DESC, n.id DESC LIMIT 1)
           AND s.id IS DISTINCT FROM (SELECT n.id FROM schema_snapshots n
                                      WHERE n.target_id = s.target_id AND n.taken <> 'scan'
                                      ORDER BY n.taken_at DESC, n.id DESC LIMIT 1)
           AND NOT EXISTS (SELECT 1 FROM schema_drift d
                           WHERE d.baseline_id = s.id OR d.snapshot_id = s.id)",
    )
    .bind(days)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let texts = sqlx::query(
        "DELETE FROM schema_texts t
         WHERE t.last_used_at < now() - make_interval(days => $1)
           AND NOT EXISTS (SELECT 1 FROM schema_snapshots s WHERE s.hash = t.hash)",
    )
    .bind(days)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(Pruned { snapshots, texts })
}
