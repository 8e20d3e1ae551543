//! Migrations and their revisions.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::domain::{Checksum, Version, directives::is_no_op};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct MigrationRow {
    #[serde(skip)]
    pub id: Uuid,
    #[serde(skip)]
    pub project_id: Uuid,
    pub version: String,
    pub name: String,
    pub up_sql: String,
    /// `null`: the migration cannot be rolled back; `""`: rolling back needs no SQL.
    pub down_sql: Option<String>,
    /// The up script holds no SQL: applying it only records the version.
    #[sqlx(skip)]
    pub no_op: bool,
    pub checksum: String,
    pub transactional: bool,
    pub revision: i32,
    /// Who created the migration.
    pub author: String,
    #[serde(skip)]
    pub author_id: Uuid,
    /// Everyone who wrote or edited a revision, in the order they first did.
    pub authors: Vec<String>,
    pub applied_anywhere: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl MigrationRow {
    /// Fills the fields derived from the scripts.
    fn derive(mut self) -> Self {
        self.no_op = is_no_op(&self.up_sql);
        self
    }
}

const COLUMNS: &str = "m.id, m.project_id, m.version, m.name, m.up_sql,
    CASE WHEN m.reversible THEN m.down_sql END AS down_sql, m.checksum, m.transactional,
    m.revision, u.email AS author, m.author_id,
    ARRAY(SELECT ru.email FROM migration_revisions r JOIN users ru ON ru.id = r.author_id
          WHERE r.migration_id = m.id GROUP BY ru.email ORDER BY min(r.revision)) AS authors,
    EXISTS (SELECT 1 FROM applied_migrations a WHERE a.migration_id = m.id) AS applied_anywhere,
    m.created_at, m.updated_at";

/// A new migration, already validated.
#[derive(Debug, Clone)]
pub struct NewMigration<'a> {
    pub version: &'a Version,
    pub name: &'a str,
    pub up_sql: &'a str,
    /// `None`: cannot be rolled back.
    pub down_sql: Option<&'a str>,
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
        "INSERT INTO migrations (id, project_id, version, version_key, name, up_sql, down_sql, reversible, checksum, transactional, author_id)
         VALUES ($1, $2, $3, $4::numeric[], $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(project_id)
    .bind(m.version.to_string())
    .bind(m.version.sort_key())
    .bind(m.name)
    .bind(m.up_sql)
    .bind(m.down_sql.unwrap_or(""))
    .bind(m.down_sql.is_some())
    .bind(checksum.as_str())
    .bind(m.transactional)
    .bind(author_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO migration_revisions (migration_id, revision, name, up_sql, down_sql, reversible, checksum, author_id)
         VALUES ($1, 1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(m.name)
    .bind(m.up_sql)
    .bind(m.down_sql.unwrap_or(""))
    .bind(m.down_sql.is_some())
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
    .map(|rows| rows.into_iter().map(MigrationRow::derive).collect())
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
    .map(|rows| rows.into_iter().map(MigrationRow::derive).collect())
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
    .map(|row| row.map(MigrationRow::derive))
}

/// A revision of a migration, as kept for history and diffs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct RevisionRow {
    pub revision: i32,
    pub name: String,
    pub up_sql: String,
    /// `null`: no down script in this revision.
    pub down_sql: Option<String>,
    pub checksum: String,
    pub author: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub async fn revisions(
    conn: &mut PgConnection,
    migration_id: Uuid,
) -> Result<Vec<RevisionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT r.revision, r.name, r.up_sql, CASE WHEN r.reversible THEN r.down_sql END AS down_sql, r.checksum, u.email AS author, r.created_at
         FROM migration_revisions r JOIN users u ON u.id = r.author_id
         WHERE r.migration_id = $1 ORDER BY r.revision",
    )
    .bind(migration_id)
    .fetch_all(conn)
    .await
}

/// Locks the migration row and tells whether it was applied to any target
/// (now or in the past: a rolled-back migration stays immutable).
pub async fn lock_for_edit(
    conn: &mut PgConnection,
    migration_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM applied_migrations a WHERE a.migration_id = m.id)
                OR EXISTS (SELECT 1 FROM migration_executions e
                           JOIN target_executions te ON te.id = e.target_execution_id
                           JOIN run_migrations rm ON rm.run_id = te.run_id AND rm.version = e.version
                           WHERE rm.migration_id = m.id AND e.outcome = 'succeeded')
         FROM migrations m WHERE m.id = $1 FOR UPDATE",
    )
    .bind(migration_id)
    .fetch_one(conn)
    .await
}

/// Stores a new revision of a migration; returns the new revision number.
pub async fn update(
    conn: &mut PgConnection,
    migration_id: Uuid,
    editor_id: Uuid,
    name: &str,
    up_sql: &str,
    down_sql: Option<&str>,
    transactional: bool,
) -> Result<i32, sqlx::Error> {
    let checksum = Checksum::of(up_sql, down_sql);
    let revision: i32 = sqlx::query_scalar(
        "UPDATE migrations SET name = $2, up_sql = $3, down_sql = $4, reversible = $5, checksum = $6,
                               transactional = $7, revision = revision + 1, updated_at = now()
         WHERE id = $1 RETURNING revision",
    )
    .bind(migration_id)
    .bind(name)
    .bind(up_sql)
    .bind(down_sql.unwrap_or(""))
    .bind(down_sql.is_some())
    .bind(checksum.as_str())
    .bind(transactional)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO migration_revisions (migration_id, revision, name, up_sql, down_sql, reversible, checksum, author_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(migration_id)
    .bind(revision)
    .bind(name)
    .bind(up_sql)
    .bind(down_sql.unwrap_or(""))
    .bind(down_sql.is_some())
    .bind(checksum.as_str())
    .bind(editor_id)
    .execute(conn)
    .await?;
    Ok(revision)
}

/// The project's highest version applied on any of its live targets, and
/// the name of a target holding it.
pub async fn highest_applied(
    conn: &mut PgConnection,
    project_id: Uuid,
) -> Result<Option<(Version, String)>, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT a.version, t.name
         FROM applied_migrations a
         JOIN targets t ON t.id = a.target_id AND t.deleted_at IS NULL
         JOIN db_sets d ON d.id = t.db_set_id AND d.deleted_at IS NULL
         WHERE d.project_id = $1
         ORDER BY a.version_key DESC, t.name LIMIT 1",
    )
    .bind(project_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(version, target)| Some((Version::parse(&version).ok()?, target))))
}
