//! The commands of the `control-plane` binary besides `serve`.

use common::{
    domain::Role,
    store::{
        audit::{self, Actor, Entry},
        users,
    },
};
use serde_json::json;
use sqlx::PgPool;

use crate::api::me::{DEFAULT_TOKEN_DAYS, MAX_TOKEN_DAYS, issue_token};

/// `user add`: create the user or update their role.
pub async fn user_add(pool: &PgPool, email: &str, name: &str, role: Role) -> anyhow::Result<()> {
    let email =
        crate::api::users::parse_email("--email", email).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut tx = pool.begin().await?;
    let (user, created) = users::upsert(&mut tx, &email, name, role).await?;
    audit::append(
        &mut tx,
        &Entry::new(
            Actor::system("cli"),
            if created {
                "user.created"
            } else {
                "user.updated"
            },
            "user",
            user.id,
        )
        .details(json!({ "email": user.email, "role": role })),
    )
    .await?;
    tx.commit().await?;
    eprintln!(
        "{} user {} with role {}",
        if created { "created" } else { "updated" },
        user.email,
        user.role
    );
    Ok(())
}

/// `token create`: prints the new token alone on standard output.
pub async fn token_create(
    pool: &PgPool,
    email: &str,
    name: &str,
    role: Option<Role>,
    expires_in_days: Option<i64>,
) -> anyhow::Result<String> {
    let days = expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
    anyhow::ensure!(
        (1..=MAX_TOKEN_DAYS).contains(&days),
        "--expires-in-days must be between 1 and {MAX_TOKEN_DAYS}"
    );
    anyhow::ensure!(!name.trim().is_empty(), "--name must not be empty");
    let mut tx = pool.begin().await?;
    let user = users::find_by_email(&mut tx, email).await?.ok_or_else(|| {
        anyhow::anyhow!("no user with e-mail {email}; add one with `control-plane user add`")
    })?;
    anyhow::ensure!(!user.disabled, "user {email} is disabled");
    let role = role.unwrap_or(user.role());
    anyhow::ensure!(
        role <= user.role(),
        "a token can carry at most its owner's role ({})",
        user.role
    );
    let created = issue_token(
        &mut tx,
        user.id,
        name.trim(),
        role,
        days,
        &Actor::system("cli"),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(created.token)
}
