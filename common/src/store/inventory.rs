//! Environments, projects, DB sets and targets.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    crypto::{Keyring, Sealed},
    domain::approval::Policy,
};

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct EnvironmentRow {
    pub name: String,
    pub position: i32,
    pub required_approvals: i32,
    pub allow_self_approval: bool,
    pub require_previous_success: bool,
    pub lock_timeout_ms: i32,
    pub statement_timeout_ms: i32,
}

impl EnvironmentRow {
    pub fn policy(&self) -> Policy {
        Policy {
            environment: self.name.clone(),
            required_approvals: self.required_approvals,
            allow_self_approval: self.allow_self_approval,
            require_previous_success: self.require_previous_success,
        }
    }
}

pub async fn list_environments(pool: &PgPool) -> Result<Vec<EnvironmentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, position, required_approvals, allow_self_approval, require_previous_success,
                lock_timeout_ms, statement_timeout_ms
         FROM environments ORDER BY position",
    )
    .fetch_all(pool)
    .await
}

pub async fn environment(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<EnvironmentRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT name, position, required_approvals, allow_self_approval, require_previous_success,
                lock_timeout_ms, statement_timeout_ms
         FROM environments WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct ProjectRow {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub description: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub archived_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub async fn insert_project(
    conn: &mut PgConnection,
    slug: &str,
    name: &str,
    description: &str,
    created_by: Uuid,
) -> Result<ProjectRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO projects (id, slug, name, description, created_by) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, slug, name, description, archived_at, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(slug)
    .bind(name)
    .bind(description)
    .bind(created_by)
    .fetch_one(conn)
    .await
}

/// Projects in slug order after `after` (exclusive), archived ones excluded.
pub async fn list_projects(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ProjectRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, slug, name, description, archived_at, created_at FROM projects
         WHERE archived_at IS NULL AND ($1::text IS NULL OR slug > $1)
         ORDER BY slug LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn project_by_slug(
    conn: &mut PgConnection,
    slug: &str,
) -> Result<Option<ProjectRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, slug, name, description, archived_at, created_at FROM projects
         WHERE slug = $1 AND archived_at IS NULL",
    )
    .bind(slug)
    .fetch_optional(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct DbSetRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub environment: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub async fn insert_db_set(
    conn: &mut PgConnection,
    project_id: Uuid,
    name: &str,
    environment: &str,
) -> Result<DbSetRow, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO db_sets (id, project_id, name, environment) VALUES ($1, $2, $3, $4)
         RETURNING id, project_id, name, environment, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(project_id)
    .bind(name)
    .bind(environment)
    .fetch_one(conn)
    .await
}

pub async fn list_db_sets(pool: &PgPool, project_id: Uuid) -> Result<Vec<DbSetRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.project_id, d.name, d.environment, d.created_at
         FROM db_sets d JOIN environments e ON e.name = d.environment
         WHERE d.project_id = $1 AND d.deleted_at IS NULL ORDER BY e.position, d.name",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await
}

pub async fn db_set(
    conn: &mut PgConnection,
    project_id: Uuid,
    id: Uuid,
) -> Result<Option<DbSetRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, project_id, name, environment, created_at FROM db_sets
         WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(project_id)
    .fetch_optional(conn)
    .await
}

/// A target without its secret. The password never leaves the store in a
/// form that serializes.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct TargetRow {
    pub id: Uuid,
    pub db_set_id: Uuid,
    pub name: String,
    pub engine: String,
    pub host: String,
    pub port: i32,
    #[sqlx(rename = "database_name")]
    #[serde(rename = "database")]
    pub database: String,
    pub username: String,
    pub tls_mode: String,
    pub session_settings: String,
    pub worker_pool: String,
    pub has_password: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

const TARGET_COLUMNS: &str =
    "id, db_set_id, name, engine, host, port, database_name, username, tls_mode,
    session_settings, worker_pool, (password_ciphertext IS NOT NULL) AS has_password, created_at";

/// Fields of a new target.
#[derive(Debug, Clone)]
pub struct NewTarget<'a> {
    pub name: &'a str,
    pub engine: &'a str,
    pub host: &'a str,
    pub port: i32,
    pub database: &'a str,
    pub username: &'a str,
    pub password: Option<&'a str>,
    pub tls_mode: &'a str,
    pub session_settings: &'a str,
    pub worker_pool: &'a str,
}

/// Inserts a target; its password is sealed with the target's id as
/// associated data before it reaches the database.
pub async fn insert_target(
    conn: &mut PgConnection,
    keys: &Keyring,
    db_set_id: Uuid,
    t: &NewTarget<'_>,
) -> Result<TargetRow, sqlx::Error> {
    let id = Uuid::now_v7();
    let sealed = t.password.map(|p| keys.seal(id.as_bytes(), p.as_bytes()));
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO targets (id, db_set_id, name, engine, host, port, database_name, username,
                              password_ciphertext, password_key_id, tls_mode, session_settings, worker_pool)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         RETURNING {TARGET_COLUMNS}"
    )))
    .bind(id)
    .bind(db_set_id)
    .bind(t.name)
    .bind(t.engine)
    .bind(t.host)
    .bind(t.port)
    .bind(t.database)
    .bind(t.username)
    .bind(sealed.as_ref().map(|s| s.ciphertext.clone()))
    .bind(sealed.as_ref().map(|s| s.key_id.clone()))
    .bind(t.tls_mode)
    .bind(t.session_settings)
    .bind(t.worker_pool)
    .fetch_one(conn)
    .await
}

pub async fn list_targets(
    conn: &mut PgConnection,
    db_set_id: Uuid,
) -> Result<Vec<TargetRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS} FROM targets WHERE db_set_id = $1 AND deleted_at IS NULL ORDER BY name, id"
    )))
    .bind(db_set_id)
    .fetch_all(conn)
    .await
}

pub async fn target(conn: &mut PgConnection, id: Uuid) -> Result<Option<TargetRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS} FROM targets WHERE id = $1 AND deleted_at IS NULL"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The sealed password of a target, for the worker and for connection tests.
pub async fn target_secret(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Sealed>, sqlx::Error> {
    let row: Option<(Option<Vec<u8>>, Option<String>)> =
        sqlx::query_as("SELECT password_ciphertext, password_key_id FROM targets WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.and_then(|(ciphertext, key_id)| {
        Some(Sealed {
            key_id: key_id?,
            ciphertext: ciphertext?,
        })
    }))
}

/// Project id and environment of the DB set a target belongs to.
pub async fn target_scope(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.project_id, d.environment FROM targets t JOIN db_sets d ON d.id = t.db_set_id
         WHERE t.id = $1 AND t.deleted_at IS NULL",
    )
    .bind(target_id)
    .fetch_optional(conn)
    .await
}
