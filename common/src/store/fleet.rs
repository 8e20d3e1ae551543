//! A DB set as a fleet: per live target, where it stands — its current
//! version and how many of the project's migrations it lacks, whether it is
//! dirty, drifted or was unreachable at the last check, and its last run —
//! and the same counted over the whole DB set.

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::fleet::{Counts, Sort, StateFilter};

/// One target of a DB set, where it stands.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TargetStanding {
    pub target_id: Uuid,
    /// The newest version the hub records as applied (`null`: none).
    pub current_version: Option<String>,
    /// How many of the project's migrations are not applied on it.
    pub pending: i64,
    /// A script stopped part-way on it: an admin must resolve it.
    pub dirty: bool,
    /// Its schema differs from its baseline (see the drift of the target).
    pub drifted: bool,
    /// Why the last drift scan could not read it (`null`: it could, or it
    /// was never scanned).
    pub unreachable: Option<String>,
    /// Its newest execution: run, state, and when it ended (or started).
    pub last_run_id: Option<Uuid>,
    pub last_run_state: Option<String>,
    pub last_run_at: Option<OffsetDateTime>,
}

/// Per live target of the DB set: the columns of [`TargetStanding`] and its
/// name (for paging), as the CTE `s`.
const STANDINGS: &str = "WITH s AS (
    SELECT t.id AS target_id, t.name,
           (SELECT a.version FROM applied_migrations a WHERE a.target_id = t.id
            ORDER BY a.version_key DESC LIMIT 1) AS current_version,
           (SELECT count(*) FROM migrations m WHERE m.project_id = d.project_id
              AND NOT EXISTS (SELECT 1 FROM applied_migrations a
                              WHERE a.target_id = t.id AND a.version = m.version)) AS pending,
           EXISTS (SELECT 1 FROM target_dirty_states x WHERE x.target_id = t.id) AS dirty,
           EXISTS (SELECT 1 FROM schema_drift x WHERE x.target_id = t.id) AS drifted,
           t.schema_scan_error AS unreachable,
           l.run_id AS last_run_id, l.state AS last_run_state, l.at AS last_run_at
    FROM targets t JOIN db_sets d ON d.id = t.db_set_id
    LEFT JOIN LATERAL (
        SELECT e.run_id, e.state, COALESCE(e.finished_at, e.started_at) AS at
        FROM target_executions e
        WHERE e.target_id = t.id AND e.started_at IS NOT NULL
        ORDER BY e.started_at DESC LIMIT 1) l ON true
    WHERE t.db_set_id = $1 AND t.deleted_at IS NULL)";

/// Which page of a DB set's targets: after a name (in name order), or
/// after so many (in the other orders).
#[derive(Debug, Clone, Copy)]
pub enum Paging<'a> {
    Start,
    AfterName(&'a str),
    Offset(i64),
}

/// A page of the DB set's targets that match `filter`, in `sort` order,
/// where each stands.
pub async fn standings(
    conn: &mut PgConnection,
    db_set_id: Uuid,
    filter: Option<StateFilter>,
    sort: Sort,
    from: Paging<'_>,
    limit: i64,
) -> Result<Vec<TargetStanding>, sqlx::Error> {
    let (after, offset) = match from {
        Paging::Start => (None, 0),
        Paging::AfterName(name) => (Some(name), 0),
        Paging::Offset(n) => (None, n.max(0)),
    };
    let order = match sort {
        Sort::Name => "name",
        Sort::Behind => "pending DESC, name",
        Sort::LastRun => "last_run_at DESC NULLS LAST, name",
    };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{STANDINGS}
         SELECT target_id, current_version, pending, dirty, drifted, unreachable,
                last_run_id, last_run_state, last_run_at
         FROM s WHERE ($2::text IS NULL OR name > $2) AND {}
         ORDER BY {order} LIMIT $3 OFFSET $4",
        filter_sql(filter)
    )))
    .bind(db_set_id)
    .bind(after)
    .bind(limit)
    .bind(offset)
    .fetch_all(conn)
    .await
}

/// The condition of a state filter on the CTE `s` (fixed text, no input).
fn filter_sql(filter: Option<StateFilter>) -> &'static str {
    match filter {
        None => "true",
        Some(StateFilter::UpToDate) => "pending = 0",
        Some(StateFilter::Behind) => "pending > 0",
        Some(StateFilter::Dirty) => "dirty",
        Some(StateFilter::Drifted) => "drifted",
        Some(StateFilter::Unreachable) => "unreachable IS NOT NULL",
        Some(StateFilter::Failed) => "last_run_state IN ('failed', 'interrupted')",
    }
}

/// The DB set's targets counted by where they stand, with the project's
/// newest version.
pub async fn counts(conn: &mut PgConnection, db_set_id: Uuid) -> Result<Counts, sqlx::Error> {
    let row: (i64, i64, i64, i64, i64, i64, i64, Option<String>) =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{STANDINGS}
             SELECT (SELECT count(*) FROM s),
                    (SELECT count(*) FROM s WHERE pending = 0),
                    (SELECT count(*) FROM s WHERE pending > 0),
                    (SELECT count(*) FROM s WHERE dirty),
                    (SELECT count(*) FROM s WHERE drifted),
                    (SELECT count(*) FROM s WHERE unreachable IS NOT NULL),
                    (SELECT count(*) FROM s WHERE last_run_state IN ('failed', 'interrupted')),
                    (SELECT m.version FROM migrations m JOIN db_sets d ON d.project_id = m.project_id
                     WHERE d.id = $1 ORDER BY m.version_key DESC LIMIT 1)"
        )))
        .bind(db_set_id)
        .fetch_one(conn)
        .await?;
    let (total, up_to_date, behind, dirty, drifted, unreachable, failed, latest_version) = row;
    Ok(Counts {
        total,
        up_to_date,
        behind,
        dirty,
        drifted,
        unreachable,
        failed,
        latest_version,
    })
}
