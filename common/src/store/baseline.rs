//! The hub's side of a baseline: what the target already has in the hub,
//! and recording the adopted versions as applied without a run.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::migrations::MigrationRow;

/// How many versions the hub records as applied on the target, and the
/// version it is dirty at, if any. Read in the caller's transaction, after
/// it locked the target's row.
pub async fn target_history(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<(i64, Option<String>), sqlx::Error> {
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM applied_migrations WHERE target_id = $1")
            .bind(target_id)
            .fetch_one(&mut *conn)
            .await?;
    let dirty: Option<String> =
        sqlx::query_scalar("SELECT version FROM target_dirty_states WHERE target_id = $1")
            .bind(target_id)
            .fetch_optional(&mut *conn)
            .await?;
    Ok((applied, dirty))
}

/// Records `migrations` as applied on the target by a baseline: no run
/// (`run_id` NULL), `baseline` set, the project's checksum (the same one
/// written to the target's `migrate_hub_history`, so drift checks agree).
pub async fn record(
    conn: &mut PgConnection,
    target_id: Uuid,
    migrations: &[&MigrationRow],
) -> Result<(), sqlx::Error> {
    for m in migrations {
        let key = crate::domain::Version::parse(&m.version)
            .map(|v| v.sort_key())
            .map_err(|e| {
                sqlx::Error::Decode(format!("stored version {}: {e}", m.version).into())
            })?;
        sqlx::query(
            "INSERT INTO applied_migrations (target_id, version, version_key, migration_id, checksum, run_id, baseline)
             VALUES ($1, $2, $3::numeric[], $4, $5, NULL, true)",
        )
        .bind(target_id)
        .bind(&m.version)
        .bind(&key)
        .bind(m.id)
        .bind(&m.checksum)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
