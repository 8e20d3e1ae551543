//! Migrations and their revisions.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Checksum, Version};

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct MigrationRow {
    #[serde(skip)]
    pub id: Uuid,
    #[serde(skip)]
    pub project_id: Uuid,
    pub version: String,
    pub name: String,
    pub up_sql: String,
    pub down_sql: String,
    pub checksum: String,
    pub transactional: bool,
    pub revision: i32,
    pub author: String,
    #[serde(skip)]
    pub author_id: Uuid,
    pub applied_anywhere: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

const COLUMNS: &str =
    "m.id, m.project_id, m.version, m.name, m.up_sql, m.down_sql, m.checksum, m.transactional,
    m.revision, u.email AS author, m.author_id,
    EXISTS (SELECT 1 FROM applied_migrations a WHERE a.migration_id = m.id) AS applied_anywhere,
    m.created_at, m.updated_at";

/// A new migration, already validated.
#[derive(Debug, Clone)]
pub struct NewMigration<'a> {
    pub version: &'a Version,
    pub name: &'a str,
    pub up_sql: &'a str,
    pub down_sql: &'a str,
    pub transactional: bool,
}

pub async fn insert(
    conn: &mut PgConnection,
    project_id: Uuid,
    author_id: Uuid,
    m: &NewMigration<'_>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let checksum = Checksum::of(m.up_sql, m.down_sql);
    sqlx::query(
        "INSERT INTO migrations (id, project_id, version, version_key, name, up_sql, down_sql, checksum, transactional, author_id)
         VALUES ($1, $2, $3, $4::numeric[], $5, $6, $7, $8, $9, $10)",
    )
    .bind(id)
    .bind(project_id)
    .bind(m.version.to_string())
    .bind(m.version.sort_key())
    .bind(m.name)
    .bind(m.up_sql)
    .bind(m.down_sql)
    .bind(checksum.as_str())
    .bind(m.transactional)
    .bind(author_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO migration_revisions (migration_id, revision, name, up_sql, down_sql, checksum, author_id)
         VALUES ($1, 1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(m.name)
    .bind(m.up_sql)
    .bind(m.down_sql)
    .bind(checksum.as_str())
    .bind(author_id)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

/// All migrations of a project in version order.
pub async fn list(
    conn: &mut PgConnection,
    project_id: Uuid,
) -> Result<Vec<MigrationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM migrations m JOIN users u ON u.id = m.author_id
         WHERE m.project_id = $1 ORDER BY m.version_key"
    )))
    .bind(project_id)
    .fetch_all(conn)
    .await
}

/// A page of migrations in version order, after the version `after`.
pub async fn page(
    pool: &PgPool,
    project_id: Uuid,
    after: Option<&Version>,
    limit: i64,
) -> Result<Vec<MigrationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM migrations m JOIN users u ON u.id = m.author_id
         WHERE m.project_id = $1 AND ($2::numeric[] IS NULL OR m.version_key > $2::numeric[])
         ORDER BY m.version_key LIMIT $3"
    )))
    .bind(project_id)
    .bind(after.map(Version::sort_key))
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn by_version(
    conn: &mut PgConnection,
    project_id: Uuid,
    version: &Version,
) -> Result<Option<MigrationRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM migrations m JOIN users u ON u.id = m.author_id
         WHERE m.project_id = $1 AND m.version = $2"
    )))
    .bind(project_id)
    .bind(version.to_string())
    .fetch_optional(conn)
    .await
}
