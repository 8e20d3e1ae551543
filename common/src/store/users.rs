//! Users and their API tokens.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::Role;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: OffsetDateTime,
}

impl UserRow {
    pub fn role(&self) -> Role {
        self.role.parse().unwrap_or(Role::User)
    }
}

const USER_COLUMNS: &str = "id, email, name, role, disabled, created_at";

pub async fn find_by_email(
    conn: &mut PgConnection,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, name, role, disabled, created_at FROM users WHERE email = lower($1)",
    )
    .bind(email)
    .fetch_optional(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query_as("SELECT id, email, name, role, disabled, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Creates the user, or updates role and name of an existing one.
/// Returns the row and whether it was created.
pub async fn upsert(
    conn: &mut PgConnection,
    email: &str,
    name: &str,
    role: Role,
) -> Result<(UserRow, bool), sqlx::Error> {
    let row: (Uuid, String, String, String, bool, OffsetDateTime, bool) = sqlx::query_as(
        "INSERT INTO users (id, email, name, role) VALUES ($1, lower($2), $3, $4)
         ON CONFLICT (email) DO UPDATE
            SET role = EXCLUDED.role,
                name = CASE WHEN EXCLUDED.name = '' THEN users.name ELSE EXCLUDED.name END,
                updated_at = now()
         RETURNING id, email, name, role, disabled, created_at, (xmax = 0) AS inserted",
    )
    .bind(Uuid::now_v7())
    .bind(email)
    .bind(name)
    .bind(role.as_str())
    .fetch_one(conn)
    .await?;
    Ok((
        UserRow {
            id: row.0,
            email: row.1,
            name: row.2,
            role: row.3,
            disabled: row.4,
            created_at: row.5,
        },
        row.6,
    ))
}

pub async fn list(pool: &PgPool) -> Result<Vec<UserRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY email"
    )))
    .fetch_all(pool)
    .await
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct TokenRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub role: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

pub async fn insert_token(
    conn: &mut PgConnection,
    user_id: Uuid,
    name: &str,
    role: Role,
    token_hash: &[u8],
    expires_at: OffsetDateTime,
) -> Result<TokenRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO api_tokens (id, user_id, name, role, token_hash, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(name)
    .bind(role.as_str())
    .bind(token_hash)
    .bind(expires_at)
    .fetch_one(conn)
    .await
}

/// The bearer of a token, if the token is live and its owner is enabled.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenBearer {
    pub token_id: Uuid,
    pub token_role: String,
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub user_role: String,
    /// A lookup may serve later requests for a while: each checks expiry.
    pub expires_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
}

/// How often a token's use is recorded (`last_used_at`, audit `token.used`):
/// auditing every request would serialize all API traffic on the chain.
pub const TOKEN_USE_EVERY: time::Duration = time::Duration::minutes(5);

impl TokenBearer {
    /// Whether its use is due to be recorded (see [`touch_token`]).
    pub fn use_due(&self, now: OffsetDateTime) -> bool {
        self.last_used_at
            .is_none_or(|at| now - at >= TOKEN_USE_EVERY)
    }
}

/// Looks a presented token up by hash, reading only. Revoked and expired
/// tokens and tokens of disabled users are not found, so they stop working
/// at once.
pub async fn bearer_of(
    pool: &PgPool,
    token_hash: &[u8],
) -> Result<Option<TokenBearer>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id AS token_id, t.role AS token_role, u.id AS user_id, u.email, u.name,
                u.role AS user_role, t.expires_at, t.last_used_at
         FROM api_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now() AND NOT u.disabled",
    )
    .bind(token_hash)
    .fetch_optional(pool)
    .await
}

/// Records that a token is in use, unless that was done less than
/// [`TOKEN_USE_EVERY`] ago; true when it recorded (the caller then audits
/// the use in the same transaction). Concurrent callers record once.
pub async fn touch_token(conn: &mut PgConnection, token_id: Uuid) -> Result<bool, sqlx::Error> {
    let touched = sqlx::query(
        "UPDATE api_tokens SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at <= now() - $2::interval)",
    )
    .bind(token_id)
    .bind(format!("{} seconds", TOKEN_USE_EVERY.whole_seconds()))
    .execute(conn)
    .await?;
    Ok(touched.rows_affected() == 1)
}

pub async fn list_tokens(pool: &PgPool, user_id: Uuid) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at
         FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// A token with its owner's e-mail, for the admins' overview.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct OwnedTokenRow {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub token: TokenRow,
    pub owner_email: String,
}

/// Every token of every user (never a secret or hash): live ones first,
/// newest first.
pub async fn list_all_tokens(pool: &PgPool) -> Result<Vec<OwnedTokenRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT t.id, t.user_id, t.name, t.role, t.created_at, t.expires_at, t.revoked_at,
                t.last_used_at, u.email AS owner_email
         FROM api_tokens t JOIN users u ON u.id = t.user_id
         ORDER BY (t.revoked_at IS NULL AND t.expires_at > now()) DESC, t.created_at DESC",
    )
    .fetch_all(pool)
    .await
}

/// Revokes one of `user_id`'s tokens; false when there is no such live token.
pub async fn revoke_token(
    conn: &mut PgConnection,
    user_id: Uuid,
    token_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(token_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Changes role and/or disabled flag. Disabling also ends the user's
/// sessions, so a disabled user is out at once (tokens are checked per use).
pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    role: Option<Role>,
    disabled: Option<bool>,
) -> Result<UserRow, sqlx::Error> {
    let row: UserRow = sqlx::query_as(
        "UPDATE users SET role = COALESCE($2, role), disabled = COALESCE($3, disabled), updated_at = now()
         WHERE id = $1 RETURNING id, email, name, role, disabled, created_at",
    )
    .bind(id)
    .bind(role.map(Role::as_str))
    .bind(disabled)
    .fetch_one(&mut *conn)
    .await?;
    if row.disabled {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id)
            .execute(conn)
            .await?;
    }
    Ok(row)
}

pub async fn touch_login(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET last_login_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
