//! The caller and their own API tokens.

use crate::routes::{Access, Routes};
use axum::{Json, extract::State, http::StatusCode};
use common::domain::Capability;
use common::{
    crypto::new_api_token,
    domain::Role,
    store::{
        audit::{self, Actor, Entry},
        users::{self, TokenRow},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, required_text};
use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get("/me", Access::Needs(Capability::View), me)
        .get("/tokens", Access::Needs(Capability::View), list_tokens)
        .post("/tokens", Access::Needs(Capability::Author), create_token)
        .delete(
            "/tokens/{id}",
            Access::Needs(Capability::View),
            revoke_token,
        )
}

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// The role this request acts with (a token's, at most its owner's).
    pub role: Role,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "me",
    responses((status = 200, description = "The caller", body = Me)))]
pub(crate) async fn me(user: Authorized<rules::View>) -> Json<Me> {
    Json(Me {
        id: user.id,
        email: user.email.clone(),
        name: user.name.clone(),
        role: user.role,
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateToken {
    name: String,
    /// Defaults to your own role; may not exceed it.
    role: Option<Role>,
    /// 1-366; defaults to 90.
    expires_in_days: Option<i64>,
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

pub const DEFAULT_TOKEN_DAYS: i64 = 90;
pub const MAX_TOKEN_DAYS: i64 = 366;

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

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "The token; `token` is shown only here", body = CreatedToken),
        (status = 403, description = "`role_too_high`: a token can carry at most your own role", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `name`, `role` or `expires_in_days`", body = ErrorBody),
    ))]
pub(crate) async fn create_token(
    State(state): State<AppState>,
    user: Authorized<rules::Author>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let name = required_text("name", &body.name, 100)?;
    let role = body.role.unwrap_or(user.role);
    if role > user.role {
        // An attempt to raise one's own role: refused and audited.
        let refusal = ApiError::ForbiddenCode {
            code: "role_too_high",
            message: format!("a token can carry at most your own role ({})", user.role),
        };
        return Err(user.refuse(&state, refusal).await);
    }
    let days = body.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(ApiError::invalid(
            "expires_in_days",
            format!("must be between 1 and {MAX_TOKEN_DAYS}"),
        ));
    }
    let mut tx = state.db.begin().await?;
    let created = issue_token(
        &mut tx,
        user.id,
        &name,
        role,
        days,
        &user.actor(),
        user.ip.clone(),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, description = "The caller's tokens (never their secrets), whole", body = Page<TokenRow>)))]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    user: Authorized<rules::View>,
) -> Result<Json<Page<TokenRow>>, ApiError> {
    Ok(Json(Page::all(
        users::list_tokens(&state.db, user.id).await?,
    )))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = Uuid, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "`not_found`: no such token of yours", body = ErrorBody),
    ))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.db.begin().await?;
    if !users::revoke_token(&mut tx, user.id, id).await? {
        return Err(ApiError::NotFound("token"));
    }
    audit::append(&mut tx, &user.audit("token.revoked", "api_token", id)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
