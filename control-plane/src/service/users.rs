//! User administration (admins).

use common::{
    domain::Role,
    store::{
        audit,
        users::{self},
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{auth::CurrentUser, error::ApiError, input::optional_text, state::AppState};

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

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUser {
    pub email: String,
    #[serde(default)]
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateUser {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

/// An admin adds a user: `duplicate_email` when the address is taken;
/// audited as `user.created`.
pub async fn create_user(
    state: &AppState,
    admin: &CurrentUser,
    body: &CreateUser,
) -> Result<UserView, ApiError> {
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
    Ok(user.into())
}

/// An admin changes a user's role or disables them; never their own
/// (`self_lockout`). Audited as `user.updated` with both sides.
pub async fn update_user(
    state: &AppState,
    admin: &CurrentUser,
    id: Uuid,
    body: &UpdateUser,
) -> Result<UserView, ApiError> {
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
    Ok(updated.into())
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
