//! The caller and their own API tokens.

use common::{
    crypto::new_api_token,
    domain::Role,
    store::{
        audit::{self, Actor, Entry},
        users::{self},
    },
};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

pub const DEFAULT_TOKEN_DAYS: i64 = 90;
pub const MAX_TOKEN_DAYS: i64 = 366;

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// The role this request acts with (a token's, at most its owner's).
    pub role: Role,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub id: Uuid,
    /// Shown once; only its hash is kept.
    pub token: String,
    pub name: String,
    pub role: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// Issues a token for `owner`, audited as `actor`. Shared by the API and the
/// `token create` command.
pub async fn issue_token(
    conn: &mut PgConnection,
    owner: Uuid,
    name: &str,
    role: Role,
    expires_in_days: i64,
    actor: &Actor,
    ip: Option<String>,
) -> Result<CreatedToken, sqlx::Error> {
    let (token, hash) = new_api_token();
    let expires_at = OffsetDateTime::now_utc() + Duration::days(expires_in_days);
    let row = users::insert_token(conn, owner, name, role, &hash, expires_at).await?;
    audit::append(
        conn,
        &Entry::new(actor.clone(), "token.created", "api_token", row.id)
            .ip(ip)
            .details(json!({ "owner": owner, "name": name, "role": role, "expires_at": expires_at.unix_timestamp() })),
    )
    .await?;
    Ok(CreatedToken {
        id: row.id,
        token,
        name: row.name,
        role: row.role,
        expires_at: row.expires_at,
    })
}
