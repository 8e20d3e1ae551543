//! Migrations of a project.

use crate::routes::{Access, Routes};
use axum::{Json, extract::State, http::StatusCode};
use common::domain::Capability;
use common::{
    domain::{Checksum, Version, directives::needs_no_transaction},
    store::{
        audit,
        migrations::{self, MigrationRow, NewMigration},
    },
};
use serde::Deserialize;
use serde_json::json;

use super::{Page, PageQuery, inventory::project, required_text};
use crate::{
    app::AppState,
    auth::{Authorized, CurrentUser, rules},
    error::{ApiError, ApiJson, ApiPath, ApiQuery},
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/projects/{slug}/migrations",
            Access::Needs(Capability::View),
            list,
        )
        .post(
            "/projects/{slug}/migrations",
            Access::Needs(Capability::Author),
            create,
        )
        .get(
            "/projects/{slug}/migrations/{version}",
            Access::Needs(Capability::View),
            get_one,
        )
}

#[derive(Debug, Deserialize)]
pub struct CreateMigration {
    pub version: String,
    pub name: String,
    pub up_sql: String,
    #[serde(default)]
    pub down_sql: String,
    /// Overrides detection of statements that cannot run in a transaction.
    pub transactional: Option<bool>,
}

async fn create(
    State(state): State<AppState>,
    user: Authorized<rules::Author>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<CreateMigration>,
) -> Result<(StatusCode, Json<MigrationRow>), ApiError> {
    create_migration(&state, &user, slug, body).await.map(|m| (StatusCode::CREATED, Json(m)))
}

pub async fn create_migration(state: &AppState, user: &CurrentUser, slug: String, body: CreateMigration) -> Result<MigrationRow, ApiError> {
    let version =
        Version::parse(&body.version).map_err(|e| ApiError::invalid("version", e.to_string()))?;
    let name = required_text("name", &body.name, 200)?;
    let max = state.settings.max_sql_bytes;
    if body.up_sql.len() + body.down_sql.len() > max {
        return Err(ApiError::TooLarge(format!(
            "up_sql and down_sql together are {} bytes; the limit is {max}",
            body.up_sql.len() + body.down_sql.len()
        )));
    }
    if body.up_sql.trim().is_empty() {
        return Err(ApiError::invalid("up_sql", "must not be empty"));
    }
    for (field, sql) in [("up_sql", &body.up_sql), ("down_sql", &body.down_sql)] {
        if sql.contains('\0') {
            return Err(ApiError::invalid(field, "must not contain NUL characters"));
        }
    }
    let transactional = body.transactional.unwrap_or_else(|| {
        !needs_no_transaction(&body.up_sql) && !needs_no_transaction(&body.down_sql)
    });

    let mut tx = state.db.begin().await?;
    let project = project(&mut tx, &slug).await?;
    if migrations::by_version(&mut tx, project.id, &version)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "duplicate_version",
            format!(
                "version {version} already exists in project {}",
                project.slug
            ),
        ));
    }
    let new = NewMigration {
        version: &version,
        name: &name,
        up_sql: &body.up_sql,
        down_sql: &body.down_sql,
        transactional,
    };
    migrations::insert(&mut tx, project.id, user.id, &new).await?;
    audit::append(
        &mut tx,
        &user
            .audit(
                "migration.created",
                "migration",
                format!("{}@{version}", project.slug),
            )
            .project(project.id)
            .details(json!({
                "version": version,
                "name": name,
                "checksum": Checksum::of(&body.up_sql, &body.down_sql),
            })),
    )
    .await?;
    let row = migrations::by_version(&mut tx, project.id, &version)
        .await?
        .ok_or_else(|| anyhow::anyhow!("inserted migration not found"))?;
    tx.commit().await?;
    Ok(row)
}

async fn list(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(slug): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<MigrationRow>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    let after = page
        .cursor
        .as_deref()
        .map(Version::parse)
        .transpose()
        .map_err(|_| ApiError::BadRequest("cursor is not a version".into()))?;
    let limit = page.limit();
    let rows = migrations::page(&state.db, project.id, after.as_ref(), limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |m| m.version.clone())))
}

async fn get_one(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath((slug, version)): ApiPath<(String, String)>,
) -> Result<Json<MigrationRow>, ApiError> {
    let version = Version::parse(&version).map_err(|_| ApiError::NotFound("migration"))?;
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    let row = migrations::by_version(&mut conn, project.id, &version)
        .await?
        .ok_or(ApiError::NotFound("migration"))?;
    Ok(Json(row))
}
