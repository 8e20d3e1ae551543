//! The routes of `me` over [`crate::service::me`].

use axum::{Json, extract::State, http::StatusCode};
use common::domain::Capability;
use common::{
    domain::Role,
    store::{
        audit::{self},
        users::{self, TokenRow},
    },
};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    input::required_text,
    paging::Page,
    routes::{Access, Routes},
    service::me::{CreatedToken, DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, Me, issue_token},
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
