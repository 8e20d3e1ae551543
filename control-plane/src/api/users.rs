//! User administration (admins).

use crate::routes::{Access, Routes};
use axum::{Json, extract::State, http::StatusCode};
use common::domain::Capability;
use common::{
    domain::Role,
    store::{
        audit,
        users::{self, TokenRow},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, optional_text};
use crate::{
    auth::{Authorized, CurrentUser, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get("/users", Access::Needs(Capability::Administer), list)
        .post("/users", Access::Needs(Capability::Administer), create)
        .patch("/users/{id}", Access::Needs(Capability::Administer), update)
        .get(
            "/users/{id}/tokens",
            Access::Needs(Capability::Administer),
            list_tokens,
        )
        .delete(
            "/users/{id}/tokens/{token_id}",
            Access::Needs(Capability::Administer),
            revoke_token,
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// `user`, `manager` or `admin`.
    pub role: String,
    pub disabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<users::UserRow> for UserView {
    fn from(u: users::UserRow) -> Self {
        UserView {
            id: u.id,
            email: u.email,
            name: u.name,
            role: u.role,
            disabled: u.disabled,
            created_at: u.created_at,
        }
    }
}

/// A plausible e-mail address: one `@`, non-empty parts, a dot in the domain.
pub fn parse_email(field: &str, raw: &str) -> Result<String, ApiError> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.contains('@')
               && !domain.starts_with('.') && !domain.ends_with('.'));
    if valid {
        Ok(email)
    } else {
        Err(ApiError::invalid(field, "must be an e-mail address"))
    }
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, description = "Every user, whole", body = Page<UserView>)))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _admin: Authorized<rules::Administer>,
) -> Result<Json<Page<UserView>>, ApiError> {
    let items: Vec<UserView> = users::list(&state.db)
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    Ok(Json(Page::all(items)))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreateUser {
    email: String,
    #[serde(default)]
    name: String,
    role: Role,
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    request_body = CreateUser,
    responses(
        (status = 201, description = "The user", body = UserView),
        (status = 409, description = "`duplicate_email`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `email`, `name` or `role`", body = ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    admin: Authorized<rules::Administer>,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let email = parse_email("email", &body.email)?;
    let name = optional_text("name", body.name.trim(), 200)?;
    let mut tx = state.db.begin().await?;
    if users::find_by_email(&mut tx, &email).await?.is_some() {
        return Err(ApiError::conflict(
            "duplicate_email",
            "a user with this e-mail already exists",
        ));
    }
    let (user, _) = users::upsert(&mut tx, &email, &name, body.role).await?;
    audit::append(
        &mut tx,
        &admin
            .audit("user.created", "user", user.id)
            .details(json!({ "email": email, "role": body.role })),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UpdateUser {
    role: Option<Role>,
    disabled: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`self_lockout`: admins cannot disable or demote themselves", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `role` or `disabled`", body = ErrorBody),
    ))]
pub(crate) async fn update(
    State(state): State<AppState>,
    admin: Authorized<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    let mut tx = state.db.begin().await?;
    let current = users::get(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if id == admin.id
        && (body.disabled == Some(true) || body.role.is_some_and(|r| r != Role::Admin))
    {
        return Err(ApiError::conflict(
            "self_lockout",
            "admins cannot disable or demote themselves",
        ));
    }
    let updated = users::update(&mut tx, id, body.role, body.disabled).await?;
    audit::append(
        &mut tx,
        &admin.audit("user.updated", "user", id).details(json!({
            "email": current.email,
            "role": { "from": current.role, "to": updated.role },
            "disabled": { "from": current.disabled, "to": updated.disabled },
        })),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(updated.into()))
}

#[utoipa::path(get, path = "/api/v1/users/{id}/tokens", tag = "users",
    params(("id" = Uuid, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user's API tokens, revoked and expired ones too (never their secrets), whole", body = Page<TokenRow>),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
    ))]
pub(crate) async fn list_tokens(
    State(state): State<AppState>,
    _admin: Authorized<rules::Administer>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Page<TokenRow>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    users::get(&mut conn, id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    Ok(Json(Page::all(users::list_tokens(&state.db, id).await?)))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}/tokens/{token_id}", tag = "users",
    params(
        ("id" = Uuid, Path, description = "The user's id"),
        ("token_id" = Uuid, Path, description = "The token's id"),
    ),
    responses(
        (status = 204, description = "Revoked; the token stops working at once"),
        (status = 404, description = "`not_found`: no such live token of this user", body = ErrorBody),
    ))]
pub(crate) async fn revoke_token(
    State(state): State<AppState>,
    admin: Authorized<rules::Administer>,
    ApiPath((id, token_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    revoke_users_token(&state, &admin, id, token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An admin revokes someone's token (a leaked CI token, a person who left):
/// audited as `token.revoked` with its owner, in one transaction.
pub async fn revoke_users_token(
    state: &AppState,
    admin: &CurrentUser,
    owner: Uuid,
    token_id: Uuid,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let user = users::get(&mut tx, owner)
        .await?
        .ok_or(ApiError::NotFound("token"))?;
    if !users::revoke_token(&mut tx, owner, token_id).await? {
        return Err(ApiError::NotFound("token"));
    }
    audit::append(
        &mut tx,
        &admin
            .audit("token.revoked", "api_token", token_id)
            .details(json!({ "owner": owner, "owner_email": user.email, "by_admin": true })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
