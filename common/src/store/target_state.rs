//! What the hub knows about one target: the versions applied on it and
//! whether a failed script left it dirty.

use serde::Serialize;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

/// One version applied on a target, as the hub recorded it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct AppliedVersion {
    pub version: String,
    pub checksum: String,
    pub run_id: Option<Uuid>,
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    pub duration_ms: i64,
}

/// The versions applied on the target, in version order.
pub async fn applied(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Vec<AppliedVersion>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, checksum, run_id, applied_at, duration_ms FROM applied_migrations
         WHERE target_id = $1 ORDER BY version_key",
    )
    .bind(target_id)
    .fetch_all(conn)
    .await
}

/// Where a non-transactional script stopped on the target.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct DirtyState {
    pub version: String,
    /// `up` or `down`: which script stopped.
    pub direction: String,
    pub statement_index: i32,
    /// Hash of the statements applied before `statement_index`.
    #[serde(skip)]
    pub statements_hash: String,
    /// Set while a resume an admin asked for waits for its worker.
    pub resume_from: Option<i32>,
    pub error: String,
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    pub run_id: Uuid,
}

pub async fn dirty(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Option<DirtyState>, sqlx::Error> {
    sqlx::query_as(
        "SELECT version, direction, statement_index, statements_hash, resume_from, error, since, run_id
         FROM target_dirty_states WHERE target_id = $1",
    )
    .bind(target_id)
    .fetch_optional(conn)
    .await
}

/// Takes up the resume an admin asked for: the worker about to run it
/// clears the request, so a resume that fails again leaves the target
/// dirty and waiting for a new decision.
pub async fn take_resume(conn: &mut PgConnection, target_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE target_dirty_states SET resume_from = NULL WHERE target_id = $1")
        .bind(target_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Asks for the dirty script on `target_id` to be resumed from the 1-based
/// statement `from` by the run that left it dirty: its execution on the
/// target is queued again and the run goes back to `running`. Returns the
/// execution queued, or `None` when the run's execution on the target is
/// not failed or interrupted (still running, or the run was cancelled).
/// The caller holds the dirty row locked.
pub async fn request_resume(
    conn: &mut PgConnection,
    target_id: Uuid,
    run_id: Uuid,
    from: i32,
) -> Result<Option<Uuid>, sqlx::Error> {
    let Some(run) = super::runs::lock(conn, run_id).await? else {
        return Ok(None);
    };
    let Ok(next) = run.state().transition(crate::domain::run::RunEvent::Resume) else {
        return Ok(None);
    };
    let queued: Option<(Uuid, Uuid, String)> = sqlx::query_as(
        "UPDATE target_executions
         SET state = 'queued', queued_at = now(), finished_at = NULL, duration_ms = NULL, error = NULL
         WHERE run_id = $1 AND target_id = $2 AND state IN ('failed', 'interrupted')
         RETURNING id, target_id, worker_pool",
    )
    .bind(run_id)
    .bind(target_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(queued) = queued else {
        return Ok(None);
    };
    sqlx::query("UPDATE target_dirty_states SET resume_from = $2 WHERE target_id = $1")
        .bind(target_id)
        .bind(from)
        .execute(&mut *conn)
        .await?;
    if next != run.state() {
        super::runs::set_state(conn, &run, next, None, Some("resumed by an admin")).await?;
    }
    crate::jobs::push(
        conn,
        run_id,
        run.traceparent.as_deref(),
        std::slice::from_ref(&queued),
        None,
    )
    .await?;
    Ok(Some(queued.0))
}
