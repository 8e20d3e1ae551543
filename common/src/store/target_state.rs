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

/// A target's dirty mark, locked for an admin's decision.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedDirty {
    pub run_id: Uuid,
    pub version: String,
    pub direction: String,
    pub statement_index: i32,
}

/// Locks the target's dirty mark; `None` when the target is not dirty.
pub async fn lock_dirty(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Option<LockedDirty>, sqlx::Error> {
    sqlx::query_as(
        "SELECT run_id, version, direction, statement_index FROM target_dirty_states
         WHERE target_id = $1 FOR UPDATE",
    )
    .bind(target_id)
    .fetch_optional(conn)
    .await
}

/// Asks the worker that resumes the target to continue from statement `from`.
pub async fn ask_resume(
    conn: &mut PgConnection,
    target_id: Uuid,
    from: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE target_dirty_states SET resume_from = $2 WHERE target_id = $1")
        .bind(target_id)
        .bind(from)
        .execute(conn)
        .await?;
    Ok(())
}

/// Clears the target's dirty mark.
pub async fn clear_dirty(conn: &mut PgConnection, target_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM target_dirty_states WHERE target_id = $1")
        .bind(target_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A version an admin declares applied on a target (no migration ran for it
/// in the hub's records after the target stopped).
#[derive(Debug, Clone)]
pub struct DeclaredApplied<'a> {
    pub target_id: Uuid,
    pub version: &'a crate::domain::Version,
    pub migration_id: Uuid,
    pub checksum: &'a str,
    pub run_id: Uuid,
}

/// Records `declared` as applied (kept when it is already).
pub async fn declare_applied(
    conn: &mut PgConnection,
    declared: &DeclaredApplied<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO applied_migrations (target_id, version, version_key, migration_id, checksum, run_id)
         VALUES ($1, $2, $3::numeric[], $4, $5, $6) ON CONFLICT (target_id, version) DO NOTHING",
    )
    .bind(declared.target_id)
    .bind(declared.version.to_string())
    .bind(declared.version.sort_key())
    .bind(declared.migration_id)
    .bind(declared.checksum)
    .bind(declared.run_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets `version` as applied on the target.
pub async fn forget_applied(
    conn: &mut PgConnection,
    target_id: Uuid,
    version: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM applied_migrations WHERE target_id = $1 AND version = $2")
        .bind(target_id)
        .bind(version)
        .execute(conn)
        .await?;
    Ok(())
}
