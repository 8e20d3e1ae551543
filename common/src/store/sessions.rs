//! Web sessions (the rows behind the session cookie).

use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

/// Inserts a new session; false when the id is taken (then pick another).
pub async fn create(
    pool: &PgPool,
    id: &str,
    user_id: Option<Uuid>,
    data: &[u8],
    expiry: OffsetDateTime,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO sessions (id, user_id, data, expiry_date) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(user_id)
    .bind(data)
    .bind(expiry)
    .execute(pool)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Writes a session, creating it when it is new.
pub async fn save(
    pool: &PgPool,
    id: &str,
    user_id: Option<Uuid>,
    data: &[u8],
    expiry: OffsetDateTime,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, data, expiry_date) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, data = EXCLUDED.data,
                                        expiry_date = EXCLUDED.expiry_date",
    )
    .bind(id)
    .bind(user_id)
    .bind(data)
    .bind(expiry)
    .execute(pool)
    .await?;
    Ok(())
}

/// A session's data and expiry, unless it has expired.
pub async fn load(
    pool: &PgPool,
    id: &str,
) -> Result<Option<(Vec<u8>, OffsetDateTime)>, sqlx::Error> {
    sqlx::query_as("SELECT data, expiry_date FROM sessions WHERE id = $1 AND expiry_date > now()")
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn delete(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_expired(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE expiry_date <= now()")
        .execute(pool)
        .await?;
    Ok(())
}
