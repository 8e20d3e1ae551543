//! Targets: the validation that create, edit and bulk creation share;
//! editing and deleting; bulk creation (`bulk.rs`); the connection test and
//! the target state (`live.rs`), the only places where the control plane
//! connects to a target. Creating one target and reading them is routed in
//! `inventory.rs`.
//!
//! A target's password is write-only: it arrives in a request, is sealed
//! before it reaches the database, and is never returned, logged or audited.
//! Adding, removing or changing how a target is reached changes what an
//! approval of its DB set covers, so those changes invalidate the set's
//! waiting runs in the same transaction.

use common::{
    config::valid_pool_name,
    domain::{Engine, TlsMode, run::PinnedTarget},
    lifecycle,
    store::{
        audit,
        inventory::{self, NewTarget, ScopedTarget, TargetRow},
        runs::RunScope,
    },
    targets::Password,
};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;
use uuid::Uuid;

use super::inventory::{db_set, parse_object_name};
use super::projects::refuse_while_running;
use crate::{
    auth::CurrentUser,
    error::ApiError,
    input::{optional_text, required_text},
    state::AppState,
};

pub mod baseline;
pub mod bulk;
pub mod live;
pub mod resolve;

/// A target as a request describes it.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct TargetInput {
    /// 1-100 characters of letters, digits, `-`, `_` and `.`; unique in the DB set.
    pub name: String,
    /// `postgres` or `mysql` (MySQL and MariaDB).
    pub engine: String,
    pub host: String,
    /// 1-65535. Read wide, so that 70000 gets this API's message naming the field.
    pub port: i64,
    pub database: String,
    pub username: String,
    /// Write-only: sealed at rest, never returned. Absent or empty: no password.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<Password>,
    /// `disable`, `prefer` (default), `require` or `verify-full`.
    pub tls_mode: Option<String>,
    /// Statements run at the start of every session (e.g. `SET search_path = app`).
    #[serde(default)]
    pub session_settings: String,
    /// The worker pool that reaches the target; default `default`.
    pub worker_pool: Option<String>,
}

/// A checked target, ready to store.
#[derive(Debug, Clone)]
pub struct ValidTarget {
    pub name: String,
    pub engine: Engine,
    pub host: String,
    pub port: i32,
    pub database: String,
    pub username: String,
    pub password: Option<Password>,
    pub tls_mode: TlsMode,
    pub session_settings: String,
    pub worker_pool: String,
}

impl ValidTarget {
    pub fn as_new(&self) -> NewTarget<'_> {
        NewTarget {
            name: &self.name,
            engine: self.engine,
            host: &self.host,
            port: self.port,
            database: &self.database,
            username: &self.username,
            password: self.password.as_ref().map(Password::expose),
            tls_mode: self.tls_mode,
            session_settings: &self.session_settings,
            worker_pool: &self.worker_pool,
        }
    }

    /// The target as a run pins it, were it stored under `id`.
    pub fn pinned(&self, id: Uuid) -> PinnedTarget {
        self.as_new().pinned(id)
    }
}

/// Checks a password: absent or empty means none.
pub fn validate_password(
    field: &str,
    password: Option<&Password>,
) -> Result<Option<Password>, ApiError> {
    let Some(password) = password.filter(|p| !p.expose().is_empty()) else {
        return Ok(None);
    };
    if password.expose().len() > 1024 || password.expose().contains('\0') {
        return Err(ApiError::invalid(
            field,
            "must be at most 1024 bytes without NUL characters",
        ));
    }
    Ok(Some(password.clone()))
}

/// Reads an engine named in a request.
pub fn parse_engine(field: &str, engine: &str) -> Result<Engine, ApiError> {
    engine
        .parse()
        .map_err(|_| ApiError::invalid(field, "must be postgres or mysql"))
}

/// Checks every field of a target; `prefix` goes before each field name in
/// errors (`targets[3].` for bulk requests).
pub fn validate(input: &TargetInput, prefix: &str) -> Result<ValidTarget, ApiError> {
    let field = |name: &str| format!("{prefix}{name}");
    let name = parse_object_name(&field("name"), &input.name)?;
    let engine = parse_engine(&field("engine"), &input.engine)?;
    let host = required_text(&field("host"), &input.host, 253)?;
    if host.chars().any(char::is_whitespace) {
        return Err(ApiError::invalid(field("host"), "must not contain spaces"));
    }
    let port = i32::try_from(input.port)
        .ok()
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| ApiError::invalid(field("port"), "must be between 1 and 65535"))?;
    let database = required_text(&field("database"), &input.database, 128)?;
    let username = required_text(&field("username"), &input.username, 128)?;
    let password = validate_password(&field("password"), input.password.as_ref())?;
    let tls_mode = match &input.tls_mode {
        None => TlsMode::default(),
        Some(mode) => mode.parse().map_err(|_| {
            ApiError::invalid(
                field("tls_mode"),
                "must be disable, prefer, require or verify-full",
            )
        })?,
    };
    let session_settings =
        optional_text(&field("session_settings"), &input.session_settings, 4000)?;
    let worker_pool = input
        .worker_pool
        .clone()
        .unwrap_or_else(|| "default".into());
    if !valid_pool_name(&worker_pool) {
        return Err(ApiError::invalid(
            field("worker_pool"),
            "must be 1-40 characters of a-z, 0-9, '-' and '_'",
        ));
    }
    Ok(ValidTarget {
        name,
        engine,
        host,
        port,
        database,
        username,
        password,
        tls_mode,
        session_settings,
        worker_pool,
    })
}

/// The target's non-secret description for audit rows.
fn audit_view(target: &TargetRow) -> Value {
    json!({
        "db_set_id": target.db_set_id,
        "name": target.name,
        "engine": target.engine,
        "host": target.host,
        "port": target.port,
        "database": target.database,
        "worker_pool": target.worker_pool,
    })
}

/// Adds one target to a DB set.
pub async fn create_target(
    state: &AppState,
    user: &CurrentUser,
    slug: &str,
    db_set_id: Uuid,
    input: &TargetInput,
) -> Result<TargetRow, ApiError> {
    let target = validate(input, "")?;
    let mut tx = state.db.begin().await?;
    let (project, set) = db_set(&mut tx, slug, db_set_id).await?;
    let reason = format!("target {} was added to DB set {}", target.name, set.name);
    let invalidated =
        lifecycle::invalidate_where(&mut tx, &user.caller(), RunScope::DbSet(set.id), &reason)
            .await?;
    let row = inventory::insert_target(&mut tx, state.keys(), set.id, &target.as_new()).await?;
    // The audit row names the target, never its password.
    let mut details = audit_view(&row);
    details["runs_invalidated"] = json!(invalidated.len());
    audit::append(
        &mut tx,
        &user
            .audit("target.created", "target", row.id)
            .project(project.id)
            .details(details),
    )
    .await?;
    lifecycle::announce_invalidated(&mut tx, &user.caller(), &invalidated, &reason).await?;
    tx.commit().await?;
    Ok(row)
}

/// A field that may be absent (`None`), `null` (`Some(None)`) or a value.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// An edit: absent fields keep their value.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TargetPatch {
    pub name: Option<String>,
    pub engine: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub database: Option<String>,
    pub username: Option<String>,
    /// Absent or `""`: keep the stored password. `null`: clear it. A
    /// string: replace it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<Option<Password>>,
    pub tls_mode: Option<String>,
    pub session_settings: Option<String>,
    pub worker_pool: Option<String>,
}

async fn lock_target(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<ScopedTarget, ApiError> {
    inventory::scoped_target(conn, id, true)
        .await?
        .ok_or(ApiError::NotFound("target"))
}

/// Edits a target. The whole edited target is checked with the rules of
/// creation. Changing how it is reached (engine, host, port, database,
/// username, TLS mode, session settings, worker pool) invalidates the DB
/// set's waiting runs and is refused while one of its runs is queued or
/// running; renaming it or changing its password does neither.
pub async fn update_target(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    patch: &TargetPatch,
) -> Result<TargetRow, ApiError> {
    let mut tx = state.db.begin().await?;
    let ScopedTarget {
        target: current,
        project_id,
        ..
    } = lock_target(&mut tx, id).await?;
    let edited = validate(
        &TargetInput {
            name: patch.name.clone().unwrap_or_else(|| current.name.clone()),
            engine: patch
                .engine
                .clone()
                .unwrap_or_else(|| current.engine.to_string()),
            host: patch.host.clone().unwrap_or_else(|| current.host.clone()),
            port: patch.port.unwrap_or(i64::from(current.port)),
            database: patch
                .database
                .clone()
                .unwrap_or_else(|| current.database.clone()),
            username: patch
                .username
                .clone()
                .unwrap_or_else(|| current.username.clone()),
            password: None,
            tls_mode: Some(
                patch
                    .tls_mode
                    .clone()
                    .unwrap_or_else(|| current.tls_mode.to_string()),
            ),
            session_settings: patch
                .session_settings
                .clone()
                .unwrap_or_else(|| current.session_settings.clone()),
            worker_pool: Some(
                patch
                    .worker_pool
                    .clone()
                    .unwrap_or_else(|| current.worker_pool.clone()),
            ),
        },
        "",
    )?;
    // `None`: keep the stored password; `Some(p)`: it becomes `p` (`None` clears).
    let new_password: Option<Option<Password>> = match &patch.password {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) if p.expose().is_empty() => None,
        Some(Some(p)) => Some(validate_password("password", Some(p))?),
    };
    // What a run's approval covers of a target (`PinnedTarget`): a change
    // of any of it invalidates the runs waiting on the DB set.
    let pinned = |t: PinnedTarget| match serde_json::to_value(t) {
        Ok(Value::Object(fields)) => fields,
        _ => Map::new(),
    };
    let before = pinned(current.pinned());
    let mut changes = Map::new();
    for (field, to) in pinned(edited.pinned(current.id)) {
        if field != "id" && before.get(&field) != Some(&to) {
            changes.insert(
                field.clone(),
                json!({ "from": before.get(&field), "to": to }),
            );
        }
    }
    let reach_changed = !changes.is_empty();
    if edited.name != current.name {
        changes.insert(
            "name".into(),
            json!({ "from": current.name, "to": edited.name }),
        );
    }
    if changes.is_empty() && new_password.is_none() {
        return Ok(current);
    }

    let reason = format!(
        "target {} of the DB set changed ({})",
        current.name,
        changes
            .keys()
            .filter(|k| *k != "name")
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    let invalidated = if reach_changed {
        let scope = RunScope::DbSet(current.db_set_id);
        let invalidated =
            lifecycle::invalidate_where(&mut tx, &user.caller(), scope, &reason).await?;
        refuse_while_running(&mut tx, scope, "target's DB set").await?;
        invalidated
    } else {
        Vec::new()
    };
    let mut new = edited.as_new();
    new.password = new_password
        .as_ref()
        .and_then(|p| p.as_ref().map(Password::expose));
    let row =
        inventory::update_target(&mut tx, state.keys(), id, &new, new_password.is_none()).await?;
    let password = match &new_password {
        None => "kept",
        Some(None) => "cleared",
        Some(Some(_)) => "replaced",
    };
    audit::append(
        &mut tx,
        &user
            .audit("target.updated", "target", row.id)
            .project(project_id)
            .details(json!({
                "db_set_id": row.db_set_id,
                "name": row.name,
                "changes": changes,
                "password": password,
                "runs_invalidated": invalidated.len(),
            })),
    )
    .await?;
    lifecycle::announce_invalidated(&mut tx, &user.caller(), &invalidated, &reason).await?;
    tx.commit().await?;
    Ok(row)
}

/// Removes a target from its DB set (soft: the row stays for the runs and
/// audit rows that name it). Refused while a run of the set is queued or
/// running; the set's waiting runs are invalidated.
pub async fn delete_target(state: &AppState, user: &CurrentUser, id: Uuid) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let ScopedTarget {
        target, project_id, ..
    } = lock_target(&mut tx, id).await?;
    let scope = RunScope::DbSet(target.db_set_id);
    let reason = format!("target {} was removed from the DB set", target.name);
    let invalidated = lifecycle::invalidate_where(&mut tx, &user.caller(), scope, &reason).await?;
    refuse_while_running(&mut tx, scope, "target's DB set").await?;
    inventory::delete_target(&mut tx, target.id).await?;
    let mut details = audit_view(&target);
    details["runs_invalidated"] = json!(invalidated.len());
    audit::append(
        &mut tx,
        &user
            .audit("target.deleted", "target", target.id)
            .project(project_id)
            .details(details),
    )
    .await?;
    lifecycle::announce_invalidated(&mut tx, &user.caller(), &invalidated, &reason).await?;
    tx.commit().await?;
    Ok(())
}
