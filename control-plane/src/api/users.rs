//! The routes of `users` over [`crate::service::users`].

use axum::{Json, extract::State, http::StatusCode};
use common::domain::Capability;
use common::store::users::{self, TokenRow};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    paging::Page,
    routes::{Access, Routes},
    service::users::{
        CreateUser, UpdateUser, UserView, create_user, revoke_users_token, update_user,
    },
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
    let user = create_user(&state, &admin, &body).await?;
    Ok((StatusCode::CREATED, Json(user)))
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
    Ok(Json(update_user(&state, &admin, id, &body).await?))
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
