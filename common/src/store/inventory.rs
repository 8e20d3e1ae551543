//! Environments, projects, DB sets and targets.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    crypto::{Keyring, Sealed},
    domain::{Engine, TlsMode, approval::Policy, run::PinnedTarget, schema_drift::OnDrift},
    review::policy::Policy as ReviewPolicy,
};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct EnvironmentRow {
    pub name: String,
    pub position: i32,
    pub required_approvals: i32,
    pub allow_self_approval: bool,
    pub require_previous_success: bool,
    pub lock_timeout_ms: i32,
    pub statement_timeout_ms: i32,
    /// How often a migration whose lock budget (`lock_timeout_ms`) ran out
    /// is tried again, where that is safe (0-20).
    pub lock_retries: i32,
    /// How long a target waits for blocking sessions to go before it tries
    /// its migration anyway (0-3600000).
    pub preflight_wait_ms: i32,
    /// From what age an open transaction in the target's database counts as
    /// a blocker (0-86400000).
    pub blocker_age_ms: i32,
    /// Opt-in: after the pre-flight's wait, terminate blockers `idle in
    /// transaction` for at least this long (`None`: never).
    pub terminate_idle_blockers_after_ms: Option<i32>,
    /// The SQL review's policy: a setting per analyzer (those absent follow
    /// the defaults of docs/SQL_Review.md) and whether every migration must
    /// have a down script.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub review_policy: sqlx::types::Json<ReviewPolicy>,
    /// Approvals a high-risk run needs (0: as many as `required_approvals`).
    pub high_risk_approvals: i32,
    /// Whether one approver of a high-risk run must be an admin.
    pub high_risk_requires_admin: bool,
    /// When targets may be migrated (`common::domain::window`, canonical
    /// text); `None`: at any time.
    pub maintenance_window: Option<String>,
    /// What runs do with a drifted target: `warn` or `block`.
    #[sqlx(try_from = "String")]
    pub on_drift: OnDrift,
}

impl EnvironmentRow {
    pub fn policy(&self) -> Policy {
        Policy {
            environment: self.name.clone(),
            required_approvals: self.required_approvals,
            allow_self_approval: self.allow_self_approval,
            require_previous_success: self.require_previous_success,
            high_risk_approvals: self.high_risk_approvals,
            high_risk_requires_admin: self.high_risk_requires_admin,
        }
    }
}

/// The columns of an [`EnvironmentRow`], for `concat!`.
macro_rules! environment_columns {
    () => {
        "name, position, required_approvals, allow_self_approval, require_previous_success,
         lock_timeout_ms, statement_timeout_ms, review_policy, high_risk_approvals, high_risk_requires_admin,
         lock_retries, preflight_wait_ms, blocker_age_ms, terminate_idle_blockers_after_ms,
         maintenance_window, on_drift"
    };
}

pub async fn list_environments(pool: &PgPool) -> Result<Vec<EnvironmentRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        environment_columns!(),
        " FROM environments ORDER BY position"
    ))
    .fetch_all(pool)
    .await
}

pub async fn environment(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<EnvironmentRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        environment_columns!(),
        " FROM environments WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// Locks the environment's row until the transaction ends, so that policy
/// edits and the invalidations they cause are serialized.
pub async fn lock_environment(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<EnvironmentRow>, sqlx::Error> {
    sqlx::query_as(concat!(
        "SELECT ",
        environment_columns!(),
        " FROM environments WHERE name = $1 FOR UPDATE"
    ))
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// The position after the last environment. Takes a lock that lets readers
/// through but makes a concurrent insert wait, so two new environments
/// without a position never pick the same one.
pub async fn next_environment_position(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query("LOCK TABLE environments IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar("SELECT COALESCE(max(position), 0) + 10 FROM environments")
        .fetch_one(conn)
        .await
}

pub async fn insert_environment(
    conn: &mut PgConnection,
    env: &EnvironmentRow,
) -> Result<EnvironmentRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "INSERT INTO environments (name, position, required_approvals, allow_self_approval,
                                   require_previous_success, lock_timeout_ms, statement_timeout_ms,
                                   review_policy, high_risk_approvals, high_risk_requires_admin, lock_retries,
                                   preflight_wait_ms, blocker_age_ms, terminate_idle_blockers_after_ms,
                                   maintenance_window, on_drift)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
         RETURNING ",
        environment_columns!(),
        ""
    ))
    .bind(&env.name)
    .bind(env.position)
    .bind(env.required_approvals)
    .bind(env.allow_self_approval)
    .bind(env.require_previous_success)
    .bind(env.lock_timeout_ms)
    .bind(env.statement_timeout_ms)
    .bind(&env.review_policy)
    .bind(env.high_risk_approvals)
    .bind(env.high_risk_requires_admin)
    .bind(env.lock_retries)
    .bind(env.preflight_wait_ms)
    .bind(env.blocker_age_ms)
    .bind(env.terminate_idle_blockers_after_ms)
    .bind(&env.maintenance_window)
    .bind(env.on_drift.as_str())
    .fetch_one(conn)
    .await
}

/// Writes every policy field of the environment named `env.name`.
pub async fn update_environment(
    conn: &mut PgConnection,
    env: &EnvironmentRow,
) -> Result<EnvironmentRow, sqlx::Error> {
    sqlx::query_as(concat!(
        "UPDATE environments SET position = $2, required_approvals = $3, allow_self_approval = $4,
                require_previous_success = $5, lock_timeout_ms = $6, statement_timeout_ms = $7,
                review_policy = $8, high_risk_approvals = $9, high_risk_requires_admin = $10,
                lock_retries = $11, preflight_wait_ms = $12, blocker_age_ms = $13,
                terminate_idle_blockers_after_ms = $14, maintenance_window = $15, on_drift = $16,
                updated_at = now()
         WHERE name = $1
         RETURNING ",
        environment_columns!(),
        ""
    ))
    .bind(&env.name)
    .bind(env.position)
    .bind(env.required_approvals)
    .bind(env.allow_self_approval)
    .bind(env.require_previous_success)
    .bind(env.lock_timeout_ms)
    .bind(env.statement_timeout_ms)
    .bind(&env.review_policy)
    .bind(env.high_risk_approvals)
    .bind(env.high_risk_requires_admin)
    .bind(env.lock_retries)
    .bind(env.preflight_wait_ms)
    .bind(env.blocker_age_ms)
    .bind(env.terminate_idle_blockers_after_ms)
    .bind(&env.maintenance_window)
    .bind(env.on_drift.as_str())
    .fetch_one(conn)
    .await
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// Like [`project_by_slug`], and locks the row until the transaction ends.
pub async fn lock_project(
    conn: &mut PgConnection,
    slug: &str,
) -> Result<Option<ProjectRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, slug, name, description, archived_at, created_at FROM projects
         WHERE slug = $1 AND archived_at IS NULL FOR UPDATE",
    )
    .bind(slug)
    .fetch_optional(conn)
    .await
}

pub async fn update_project(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    description: &str,
) -> Result<ProjectRow, sqlx::Error> {
    sqlx::query_as(
        "UPDATE projects SET name = $2, description = $3, updated_at = now() WHERE id = $1
         RETURNING id, slug, name, description, archived_at, created_at",
    )
    .bind(id)
    .bind(name)
    .bind(description)
    .fetch_one(conn)
    .await
}

/// Archives the project: it disappears from lists and look-ups. Its rows
/// (and its slug) are kept for the audit trail.
pub async fn archive_project(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE projects SET archived_at = now(), updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct DbSetRow {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub environment: String,
    /// The DB set's own maintenance window, overriding its environment's
    /// (`always`: none); `None`: the environment's.
    pub maintenance_window: Option<String>,
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
         RETURNING id, project_id, name, environment, maintenance_window, created_at",
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
        "SELECT d.id, d.project_id, d.name, d.environment, d.maintenance_window, d.created_at
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
        "SELECT id, project_id, name, environment, maintenance_window, created_at FROM db_sets
         WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(project_id)
    .fetch_optional(conn)
    .await
}

/// Like [`db_set`], and locks the row until the transaction ends.
pub async fn lock_db_set(
    conn: &mut PgConnection,
    project_id: Uuid,
    id: Uuid,
) -> Result<Option<DbSetRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, project_id, name, environment, maintenance_window, created_at FROM db_sets
         WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .bind(project_id)
    .fetch_optional(conn)
    .await
}

pub async fn rename_db_set(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
) -> Result<DbSetRow, sqlx::Error> {
    sqlx::query_as(
        "UPDATE db_sets SET name = $2, updated_at = now() WHERE id = $1
         RETURNING id, project_id, name, environment, maintenance_window, created_at",
    )
    .bind(id)
    .bind(name)
    .fetch_one(conn)
    .await
}

/// Sets the DB set's own maintenance window (`None`: its environment's).
pub async fn set_db_set_window(
    conn: &mut PgConnection,
    id: Uuid,
    window: Option<&str>,
) -> Result<DbSetRow, sqlx::Error> {
    sqlx::query_as(
        "UPDATE db_sets SET maintenance_window = $2, updated_at = now() WHERE id = $1
         RETURNING id, project_id, name, environment, maintenance_window, created_at",
    )
    .bind(id)
    .bind(window)
    .fetch_one(conn)
    .await
}

/// Soft-deletes the DB set and its targets; returns how many targets went
/// with it. The rows stay for the runs and audit rows that name them.
pub async fn delete_db_set(conn: &mut PgConnection, id: Uuid) -> Result<u64, sqlx::Error> {
    let targets = sqlx::query(
        "UPDATE targets SET deleted_at = now(), updated_at = now() WHERE db_set_id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    sqlx::query("UPDATE db_sets SET deleted_at = now(), updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(targets)
}

/// A target without its secret. The password never leaves the store in a
/// form that serializes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct TargetRow {
    pub id: Uuid,
    pub db_set_id: Uuid,
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub engine: Engine,
    pub host: String,
    pub port: i32,
    #[sqlx(rename = "database_name")]
    #[serde(rename = "database")]
    pub database: String,
    pub username: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub tls_mode: TlsMode,
    pub session_settings: String,
    pub worker_pool: String,
    pub has_password: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl TargetRow {
    /// The target as a run pins it.
    pub fn pinned(&self) -> PinnedTarget {
        self.as_new().pinned(self.id)
    }

    /// The stored fields, without the password (which never leaves the
    /// store).
    fn as_new(&self) -> NewTarget<'_> {
        NewTarget {
            name: &self.name,
            engine: self.engine,
            host: &self.host,
            port: self.port,
            database: &self.database,
            username: &self.username,
            password: None,
            tls_mode: self.tls_mode,
            session_settings: &self.session_settings,
            worker_pool: &self.worker_pool,
        }
    }
}

/// The columns of [`TargetRow`], for queries that call the table `t`.
const TARGET_COLUMNS: &str =
    "t.id, t.db_set_id, t.name, t.engine, t.host, t.port, t.database_name, t.username, t.tls_mode,
    t.session_settings, t.worker_pool, (t.password_ciphertext IS NOT NULL) AS has_password, t.created_at";

/// A target is visible while it, its DB set and its project are all live:
/// deleting a DB set or archiving a project hides its targets too.
const VISIBLE_TARGETS: &str = "FROM targets t
    JOIN db_sets d ON d.id = t.db_set_id AND d.deleted_at IS NULL
    JOIN projects p ON p.id = d.project_id AND p.archived_at IS NULL
    WHERE t.deleted_at IS NULL";

/// Fields of a new target.
#[derive(Debug, Clone)]
pub struct NewTarget<'a> {
    pub name: &'a str,
    pub engine: Engine,
    pub host: &'a str,
    pub port: i32,
    pub database: &'a str,
    pub username: &'a str,
    pub password: Option<&'a str>,
    pub tls_mode: TlsMode,
    pub session_settings: &'a str,
    pub worker_pool: &'a str,
}

impl NewTarget<'_> {
    /// The target as a run pins it, stored under `id`: the one place that
    /// says which of a target's fields an approval covers.
    pub fn pinned(&self, id: Uuid) -> PinnedTarget {
        PinnedTarget {
            id,
            engine: self.engine,
            host: self.host.to_owned(),
            port: self.port,
            database: self.database.to_owned(),
            username: self.username.to_owned(),
            tls_mode: self.tls_mode,
            session_settings: self.session_settings.to_owned(),
            worker_pool: self.worker_pool.to_owned(),
        }
    }
}

/// Inserts a target; its password is sealed with the target's id as
/// associated data before it reaches the database.
pub async fn insert_target(
    conn: &mut PgConnection,
    keys: &Keyring,
    db_set_id: Uuid,
    t: &NewTarget<'_>,
) -> Result<TargetRow, sqlx::Error> {
    let mut rows = insert_targets(conn, keys, db_set_id, std::slice::from_ref(t)).await?;
    rows.pop().ok_or(sqlx::Error::RowNotFound)
}

/// Inserts many targets in one statement (a fleet of a thousand shards is
/// one round trip) and returns them in the order given. Each password is
/// sealed with its own target's id as associated data.
pub async fn insert_targets(
    conn: &mut PgConnection,
    keys: &Keyring,
    db_set_id: Uuid,
    targets: &[NewTarget<'_>],
) -> Result<Vec<TargetRow>, sqlx::Error> {
    let ids: Vec<Uuid> = targets.iter().map(|_| Uuid::now_v7()).collect();
    let sealed: Vec<Option<Sealed>> = ids
        .iter()
        .zip(targets)
        .map(|(id, t)| t.password.map(|p| keys.seal(id.as_bytes(), p.as_bytes())))
        .collect();
    let column = |f: for<'r> fn(&'r NewTarget<'r>) -> &'r str| -> Vec<String> {
        targets.iter().map(|t| f(t).to_owned()).collect()
    };
    let mut rows: Vec<TargetRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO targets AS t (id, db_set_id, name, engine, host, port, database_name, username,
                                   password_ciphertext, password_key_id, tls_mode, session_settings, worker_pool)
         SELECT id, $1, name, engine, host, port, database_name, username, ciphertext, key_id, tls_mode,
                session_settings, worker_pool
         FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[], $8::text[],
                     $9::bytea[], $10::text[], $11::text[], $12::text[], $13::text[])
              AS n(id, name, engine, host, port, database_name, username, ciphertext, key_id, tls_mode,
                   session_settings, worker_pool)
         RETURNING {TARGET_COLUMNS}"
    )))
    .bind(db_set_id)
    .bind(&ids)
    .bind(column(|t| t.name))
    .bind(column(|t| t.engine.as_str()))
    .bind(column(|t| t.host))
    .bind(targets.iter().map(|t| t.port).collect::<Vec<i32>>())
    .bind(column(|t| t.database))
    .bind(column(|t| t.username))
    .bind(
        sealed
            .iter()
            .map(|s| s.as_ref().map(|s| s.ciphertext.clone()))
            .collect::<Vec<Option<Vec<u8>>>>(),
    )
    .bind(
        sealed
            .iter()
            .map(|s| s.as_ref().map(|s| s.key_id.clone()))
            .collect::<Vec<Option<String>>>(),
    )
    .bind(column(|t| t.tls_mode.as_str()))
    .bind(column(|t| t.session_settings))
    .bind(column(|t| t.worker_pool))
    .fetch_all(conn)
    .await?;
    rows.sort_by_key(|row| ids.iter().position(|id| *id == row.id));
    Ok(rows)
}

pub async fn list_targets(
    conn: &mut PgConnection,
    db_set_id: Uuid,
) -> Result<Vec<TargetRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS} FROM targets t WHERE t.db_set_id = $1 AND t.deleted_at IS NULL ORDER BY t.name, t.id"
    )))
    .bind(db_set_id)
    .fetch_all(conn)
    .await
}

/// The live targets among `ids` (one page of a DB set), in no order.
pub async fn targets_by_ids(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<TargetRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS} FROM targets t WHERE t.id = ANY($1) AND t.deleted_at IS NULL"
    )))
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// How many live targets each live DB set of the project has.
pub async fn target_counts(
    pool: &PgPool,
    project_id: Uuid,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, count(t.id) FROM db_sets d
         LEFT JOIN targets t ON t.db_set_id = d.id AND t.deleted_at IS NULL
         WHERE d.project_id = $1 AND d.deleted_at IS NULL GROUP BY d.id",
    )
    .bind(project_id)
    .fetch_all(pool)
    .await
}

/// The engines of a project's visible targets, each once, in a stable
/// order.
pub async fn project_engines(
    conn: &mut PgConnection,
    project_id: Uuid,
) -> Result<Vec<Engine>, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT t.engine {VISIBLE_TARGETS} AND d.project_id = $1 ORDER BY t.engine"
    )))
    .bind(project_id)
    .fetch_all(conn)
    .await
}

/// Where a visible target lives, for links back: the project's slug and
/// the id and name of its DB set.
pub async fn target_location(
    conn: &mut PgConnection,
    target_id: Uuid,
) -> Result<Option<(String, Uuid, String)>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT p.slug, d.id, d.name {VISIBLE_TARGETS} AND t.id = $1"
    )))
    .bind(target_id)
    .fetch_optional(conn)
    .await
}

/// The names of the DB set's live targets.
pub async fn target_names(
    conn: &mut PgConnection,
    db_set_id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM targets WHERE db_set_id = $1 AND deleted_at IS NULL")
        .bind(db_set_id)
        .fetch_all(conn)
        .await
}

pub async fn target(conn: &mut PgConnection, id: Uuid) -> Result<Option<TargetRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS} {VISIBLE_TARGETS} AND t.id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What a job reads about its target when it claims it, in one statement:
/// the target, its sealed password, whether it has a schema snapshot yet,
/// and — when its environment blocks drifted targets — since when it is
/// drifted.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedTarget {
    #[sqlx(flatten)]
    pub target: TargetRow,
    password_ciphertext: Option<Vec<u8>>,
    password_key_id: Option<String>,
    pub has_snapshot: bool,
    pub drift_blocks: Option<OffsetDateTime>,
}

impl ClaimedTarget {
    /// The target's sealed password, if it has one.
    pub fn secret(&self) -> Option<Sealed> {
        Some(Sealed {
            key_id: self.password_key_id.clone()?,
            ciphertext: self.password_ciphertext.clone()?,
        })
    }
}

/// The visible target `id` as a job claiming it needs it ([`ClaimedTarget`]).
pub async fn claimed_target(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ClaimedTarget>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS}, t.password_ciphertext, t.password_key_id,
                EXISTS (SELECT 1 FROM schema_snapshots sn WHERE sn.target_id = t.id) AS has_snapshot,
                (SELECT dr.detected_at FROM schema_drift dr JOIN environments e ON e.name = d.environment
                 WHERE dr.target_id = t.id AND e.on_drift = 'block') AS drift_blocks
         {VISIBLE_TARGETS} AND t.id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// A target with the project and environment of its DB set.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScopedTarget {
    #[sqlx(flatten)]
    pub target: TargetRow,
    pub project_id: Uuid,
    pub environment: String,
}

/// The visible target with its scope; with `lock`, its row stays locked
/// until the transaction ends, so edits of one target are serialized.
pub async fn scoped_target(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<ScopedTarget>, sqlx::Error> {
    let lock = if lock { "FOR UPDATE OF t" } else { "" };
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TARGET_COLUMNS}, d.project_id, d.environment {VISIBLE_TARGETS} AND t.id = $1 {lock}"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Writes every field of the target. With `keep_password` the stored
/// ciphertext stays as it is; otherwise `t.password` becomes the password
/// (sealed, with the target's id as associated data), `None` clearing it.
pub async fn update_target(
    conn: &mut PgConnection,
    keys: &Keyring,
    id: Uuid,
    t: &NewTarget<'_>,
    keep_password: bool,
) -> Result<TargetRow, sqlx::Error> {
    let sealed = t.password.map(|p| keys.seal(id.as_bytes(), p.as_bytes()));
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE targets AS t SET name = $2, engine = $3, host = $4, port = $5, database_name = $6, username = $7,
                tls_mode = $8, session_settings = $9, worker_pool = $10,
                password_ciphertext = CASE WHEN $11 THEN t.password_ciphertext ELSE $12 END,
                password_key_id = CASE WHEN $11 THEN t.password_key_id ELSE $13 END,
                updated_at = now()
         WHERE t.id = $1
         RETURNING {TARGET_COLUMNS}"
    )))
    .bind(id)
    .bind(t.name)
    .bind(t.engine)
    .bind(t.host)
    .bind(t.port)
    .bind(t.database)
    .bind(t.username)
    .bind(t.tls_mode)
    .bind(t.session_settings)
    .bind(t.worker_pool)
    .bind(keep_password)
    .bind(sealed.as_ref().map(|s| s.ciphertext.clone()))
    .bind(sealed.as_ref().map(|s| s.key_id.clone()))
    .fetch_one(conn)
    .await
}

/// Soft-deletes the target; its row stays for the runs that name it.
pub async fn delete_target(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE targets SET deleted_at = now(), updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
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
