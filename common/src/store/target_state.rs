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
    pub statement_index: i32,
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
        "SELECT version, statement_index, error, since, run_id FROM target_dirty_states WHERE target_id = $1",
    )
    .bind(target_id)
    .fetch_optional(conn)
    .await
}
