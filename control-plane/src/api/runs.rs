//! Runs: request, approve, deny, execute, cancel.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use common::{
    domain::{
        Capability, Checksum, Direction, RunState, Version,
        approval::{self, ApprovalContext, ApprovalError},
        order,
        run::{ExecutionSettings, PinnedMigration, RunEvent},
    },
    store::{
        audit, dispatch,
        inventory::{self, EnvironmentRow},
        migrations,
        runs::{self, ApprovalRow, ExecutionRow, NewRun, RunRecord, RunRow, TransitionRow},
        webhooks,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgConnection;
use time::OffsetDateTime;
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Page, PageQuery, inventory::project, optional_text};
use crate::routes::{Access, Routes};
use crate::{
    app::AppState,
    auth::{Authorized, CurrentUser, rules},
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, OptionalJson},
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/projects/{slug}/runs",
            Access::Needs(Capability::View),
            list,
        )
        .post(
            "/projects/{slug}/runs",
            Access::Needs(Capability::Author),
            request,
        )
        .get("/runs/{id}", Access::Needs(Capability::View), get_one)
        .post(
            "/runs/{id}/approve",
            Access::Needs(Capability::Approve),
            approve,
        )
        .post("/runs/{id}/deny", Access::Needs(Capability::Approve), deny)
        // Requesters operate their own runs; the handler checks ownership
        // or OperateAnyRun.
        .post(
            "/runs/{id}/execute",
            Access::Needs(Capability::Author),
            execute,
        )
        .post(
            "/runs/{id}/cancel",
            Access::Needs(Capability::Author),
            cancel,
        )
}

/// A run with its pinned migrations, decisions, targets and state history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    pub id: Uuid,
    pub project_id: Uuid,
    pub db_set_id: Uuid,
    pub environment: String,
    #[schema(value_type = Direction)]
    pub direction: String,
    pub target_version: String,
    #[schema(value_type = RunState)]
    pub state: String,
    /// Why the run is in its state (denial reason, invalidation cause).
    pub state_reason: Option<String>,
    pub note: String,
    /// The requester's e-mail.
    pub requested_by: String,
    /// What an approval covers: migrations, checksums, targets, timeouts.
    pub digest: String,
    pub stop_on_failure: bool,
    pub concurrency: i32,
    pub canary: i32,
    pub lock_timeout_ms: i32,
    pub statement_timeout_ms: i32,
    /// The environment's current requirement.
    pub required_approvals: Option<i32>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub queued_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub migrations: Vec<PinnedView>,
    pub approvals: Vec<ApprovalRow>,
    pub targets: Vec<ExecutionRow>,
    pub history: Vec<TransitionRow>,
}

/// A migration as the run pinned it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PinnedView {
    pub version: String,
    pub name: String,
    pub checksum: String,
    /// The migration was edited after the run was requested.
    pub changed_since_pinned: bool,
}

impl From<RunRecord> for RunView {
    fn from(record: RunRecord) -> Self {
        let RunRecord {
            run,
            pinned,
            approvals,
            executions,
            transitions,
            required_approvals,
        } = record;
        RunView {
            id: run.id,
            project_id: run.project_id,
            db_set_id: run.db_set_id,
            environment: run.environment,
            direction: run.direction,
            target_version: run.target_version,
            state: run.state,
            state_reason: run.state_reason,
            note: run.note,
            requested_by: run.requester,
            digest: run.digest,
            stop_on_failure: run.stop_on_failure,
            concurrency: run.concurrency,
            canary: run.canary,
            lock_timeout_ms: run.lock_timeout_ms,
            statement_timeout_ms: run.statement_timeout_ms,
            required_approvals,
            not_before: run.not_before,
            created_at: run.created_at,
            queued_at: run.queued_at,
            finished_at: run.finished_at,
            migrations: pinned
                .into_iter()
                .map(|m| PinnedView {
                    changed_since_pinned: m.checksum != m.current_checksum,
                    version: m.version,
                    name: m.name,
                    checksum: m.checksum,
                })
                .collect(),
            approvals,
            targets: executions,
            history: transitions,
        }
    }
}

/// The run `id` as this transaction sees it, as JSON: what the state-changing
/// routes answer.
pub async fn run_view(tx: &mut PgConnection, id: Uuid) -> Result<Value, ApiError> {
    let record = runs::record_in(tx, id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    Ok(serde_json::to_value(RunView::from(record)).map_err(anyhow::Error::from)?)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestRun {
    /// A DB set of the project; its environment's policy applies.
    pub db_set_id: Uuid,
    pub direction: Direction,
    /// `up`: apply every version up to this one; `down`: roll back every version above it.
    pub target_version: String,
    pub note: Option<String>,
    /// Default false.
    pub stop_on_failure: Option<bool>,
    /// Targets at once, 1-256; default 8.
    pub concurrency: Option<i32>,
    /// Targets that run (and must succeed) first; default 0.
    pub canary: Option<i32>,
}

const MAX_CONCURRENCY: i32 = 256;

/// The environment that comes before `env` in the promotion order.
async fn previous_environment(
    conn: &mut PgConnection,
    env: &EnvironmentRow,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT name FROM environments WHERE position < $1 ORDER BY position DESC LIMIT 1",
    )
    .bind(env.position)
    .fetch_optional(conn)
    .await
}

/// Promotion gate: every migration of an `up` run must already be applied on
/// every target of the project's DB sets in the previous environment.
async fn check_promotion_gate(
    conn: &mut PgConnection,
    project_id: Uuid,
    env: &EnvironmentRow,
    migration_ids: &[Uuid],
) -> Result<(), ApiError> {
    let Some(previous) = previous_environment(conn, env).await? else {
        return Ok(());
    };
    let (targets, missing): (i64, Option<String>) = sqlx::query_as(
        "WITH prev AS (
             SELECT t.id FROM targets t JOIN db_sets d ON d.id = t.db_set_id
             WHERE d.project_id = $1 AND d.environment = $2 AND d.deleted_at IS NULL AND t.deleted_at IS NULL
         )
         SELECT (SELECT count(*) FROM prev),
                (SELECT m.version FROM migrations m
                 WHERE m.id = ANY($3)
                   AND (SELECT count(*) FROM applied_migrations a WHERE a.migration_id = m.id AND a.target_id IN (SELECT id FROM prev))
                       < (SELECT count(*) FROM prev)
                 ORDER BY m.version_key LIMIT 1)",
    )
    .bind(project_id)
    .bind(&previous)
    .bind(migration_ids)
    .fetch_one(conn)
    .await?;
    if targets == 0 {
        return Err(ApiError::conflict(
            "promotion_gate",
            format!(
                "environment {} requires success on {previous} first, and this project has no targets in {previous}",
                env.name
            ),
        ));
    }
    if let Some(version) = missing {
        return Err(ApiError::conflict(
            "promotion_gate",
            format!(
                "version {version} has not succeeded on every {previous} target of this project yet"
            ),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/projects/{slug}/runs", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug")),
    request_body = RequestRun,
    responses(
        (status = 201, description = "The run, pending approval", body = RunView),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
        (status = 409, description = "`nothing_to_do`, `promotion_gate`, `target_dirty`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `db_set_id`, `target_version`, `note`, `concurrency` or `canary`", body = ErrorBody),
    ))]
pub(crate) async fn request(
    State(state): State<AppState>,
    user: Authorized<rules::Author>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<RequestRun>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    request_run(&state, &user, slug, body)
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

pub async fn request_run(
    state: &AppState,
    user: &CurrentUser,
    slug: String,
    body: RequestRun,
) -> Result<Value, ApiError> {
    let target_version = Version::parse(&body.target_version)
        .map_err(|e| ApiError::invalid("target_version", e.to_string()))?;
    let note = optional_text("note", body.note.as_deref().unwrap_or("").trim(), 2000)?;
    let concurrency = body.concurrency.unwrap_or(8);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(ApiError::invalid(
            "concurrency",
            format!("must be between 1 and {MAX_CONCURRENCY}"),
        ));
    }

    let mut tx = state.db.begin().await?;
    let project = project(&mut tx, &slug).await?;
    let set = inventory::db_set(&mut tx, project.id, body.db_set_id)
        .await?
        .ok_or_else(|| ApiError::invalid("db_set_id", "no such DB set in this project"))?;
    let env = inventory::environment(&mut tx, &set.environment)
        .await?
        .ok_or_else(|| anyhow::anyhow!("DB set {} names a missing environment", set.id))?;
    let targets = runs::pinned_targets(&mut tx, set.id).await?;
    if targets.is_empty() {
        return Err(ApiError::invalid("db_set_id", "the DB set has no targets"));
    }
    let canary = body.canary.unwrap_or(0);
    if !(0..=targets.len() as i32).contains(&canary) {
        return Err(ApiError::invalid(
            "canary",
            "must be between 0 and the number of targets",
        ));
    }
    let dirty: Option<String> = sqlx::query_scalar(
        "SELECT t.name FROM target_dirty_states d JOIN targets t ON t.id = d.target_id WHERE t.db_set_id = $1 LIMIT 1",
    )
    .bind(set.id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(name) = dirty {
        return Err(ApiError::conflict(
            "target_dirty",
            format!("target {name} is dirty after a failed script; an admin must resolve it first"),
        ));
    }

    // How many of the set's targets have each version applied.
    let target_ids: Vec<Uuid> = targets.iter().map(|t| t.id).collect();
    let applied: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT version, count(*) FROM applied_migrations WHERE target_id = ANY($1) GROUP BY version",
    )
    .bind(&target_ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let all = migrations::list(&mut tx, project.id).await?;
    let n = targets.len() as i64;
    let count = |version: &str| applied.get(version).copied().unwrap_or(0);
    let covered: Vec<_> = match body.direction {
        Direction::Up => {
            if !all.iter().any(|m| m.version == target_version.to_string()) {
                return Err(ApiError::invalid(
                    "target_version",
                    format!("project has no migration {target_version}"),
                ));
            }
            all.iter()
                .filter(|m| {
                    Version::parse(&m.version).is_ok_and(|v| v <= target_version)
                        && count(&m.version) < n
                })
                .collect()
        }
        Direction::Down => {
            let covered: Vec<_> = all
                .iter()
                .rev()
                .filter(|m| {
                    Version::parse(&m.version).is_ok_and(|v| v > target_version)
                        && count(&m.version) > 0
                })
                .collect();
            if let Some(m) = covered.iter().find(|m| m.down_sql.is_none()) {
                return Err(ApiError::invalid(
                    "target_version",
                    format!(
                        "version {} has no down script, so it cannot be rolled back",
                        m.version
                    ),
                ));
            }
            covered
        }
    };
    if covered.is_empty() {
        return Err(ApiError::conflict(
            "nothing_to_do",
            format!(
                "every target of {} is already at version {target_version}",
                set.name
            ),
        ));
    }
    if body.direction == Direction::Up && env.require_previous_success {
        let ids: Vec<Uuid> = covered.iter().map(|m| m.id).collect();
        check_promotion_gate(&mut tx, project.id, &env, &ids).await?;
    }

    let settings = ExecutionSettings {
        direction: body.direction,
        target_version,
        stop_on_failure: body.stop_on_failure.unwrap_or(false),
        concurrency,
        canary,
        lock_timeout_ms: env.lock_timeout_ms,
        statement_timeout_ms: env.statement_timeout_ms,
    };
    // Targets on which an `up` run applies a version below one they have.
    let out_of_order: Vec<Uuid> = if body.direction == Direction::Up {
        let mut by_target: HashMap<Uuid, Vec<Version>> = HashMap::new();
        for (target, version) in runs::applied_versions(&mut tx, &target_ids).await? {
            if let Ok(version) = Version::parse(&version) {
                by_target.entry(target).or_default().push(version);
            }
        }
        let pending: Vec<Version> = covered
            .iter()
            .filter_map(|m| Version::parse(&m.version).ok())
            .collect();
        by_target
            .into_iter()
            .filter(|(_, applied)| order::applies_out_of_order(&pending, applied))
            .map(|(target, _)| target)
            .collect()
    } else {
        Vec::new()
    };
    let pinned: Vec<(Uuid, PinnedMigration)> = covered
        .iter()
        .map(|m| {
            // Stored versions were parsed when written; a row that no longer
            // parses is a fault of the tool database, not of this request.
            let version = Version::parse(&m.version)
                .map_err(|e| anyhow::anyhow!("stored migration version {:?}: {e}", m.version))?;
            Ok((
                m.id,
                PinnedMigration {
                    version,
                    checksum: Checksum::from_stored(m.checksum.clone()),
                },
            ))
        })
        .collect::<Result<_, ApiError>>()?;
    let (run_id, digest) = runs::insert(
        &mut tx,
        &NewRun {
            project_id: project.id,
            db_set_id: set.id,
            environment: &env.name,
            requested_by: user.id,
            note: &note,
            settings: &settings,
            migrations: &pinned,
            targets: &targets,
            out_of_order: &out_of_order,
        },
    )
    .await?;
    webhooks::notify_run(&mut tx, run_id, "requested").await?;
    audit::append(
        &mut tx,
        &user.audit("run.requested", "run", run_id).project(project.id).details(json!({
            "db_set_id": set.id,
            "environment": env.name,
            "direction": settings.direction,
            "target_version": settings.target_version,
            "digest": digest,
            "migrations": pinned.iter().map(|(_, m)| json!({"version": m.version, "checksum": m.checksum})).collect::<Vec<_>>(),
            "targets": targets.len(),
            "out_of_order_targets": out_of_order.len(),
        })),
    )
    .await?;
    let view = run_view(&mut tx, run_id).await?;
    tx.commit().await?;
    Ok(view)
}

/// A run as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunListItem {
    pub id: Uuid,
    pub db_set_id: Uuid,
    pub environment: String,
    #[schema(value_type = Direction)]
    pub direction: String,
    pub target_version: String,
    #[schema(value_type = RunState)]
    pub state: String,
    /// The requester's e-mail.
    pub requested_by: String,
    pub digest: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/runs", tag = "runs",
    params(("slug" = String, Path, description = "The project's slug"), PageQuery),
    responses(
        (status = 200, description = "A page of the project's runs, newest first; the cursor is a run id", body = Page<RunListItem>),
        (status = 400, description = "`bad_request`: a cursor that names no run", body = ErrorBody),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(slug): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageQuery>,
) -> Result<Json<Page<RunListItem>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    // The cursor is the id of the last run seen; runs are listed newest first.
    let before = match page.cursor.as_deref() {
        None => None,
        Some(c) => {
            let id = Uuid::parse_str(c)
                .map_err(|_| ApiError::BadRequest("cursor is not a run id".into()))?;
            let run = runs::get(&mut conn, id)
                .await?
                .ok_or_else(|| ApiError::BadRequest("cursor names no run".into()))?;
            Some((run.created_at, run.id))
        }
    };
    let limit = page.limit();
    let rows = runs::list(&state.db, project.id, before, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let items = rows
        .iter()
        .take(limit as usize)
        .map(|r| RunListItem {
            id: r.id,
            db_set_id: r.db_set_id,
            environment: r.environment.clone(),
            direction: r.direction.clone(),
            target_version: r.target_version.clone(),
            state: r.state.clone(),
            requested_by: r.requester.clone(),
            digest: r.digest.clone(),
            created_at: r.created_at,
        })
        .collect();
    let next_cursor = if more {
        rows.get(limit as usize - 1).map(|r| r.id.to_string())
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = RunView),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    let snapshot = run_snapshot(&state, id).await?;
    let json = snapshot.json()?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// A run and its view, as one read shared by the requests watching it, with
/// what is made of it once for all of them.
#[derive(Debug)]
pub struct RunSnapshot {
    pub run: RunRow,
    pub view: RunView,
    json: OnceLock<Bytes>,
    /// The run page's parts, rendered on first use (`crate::web::runs`).
    pub pages: OnceLock<Arc<crate::web::runs::RunPages>>,
}

impl RunSnapshot {
    fn new(run: RunRow, view: RunView) -> Self {
        Self {
            run,
            view,
            json: OnceLock::new(),
            pages: OnceLock::new(),
        }
    }

    /// The view as the API's JSON body. The first readers of a snapshot may
    /// each serialize it; one result is kept.
    pub fn json(&self) -> Result<Bytes, ApiError> {
        if let Some(json) = self.json.get() {
            return Ok(json.clone());
        }
        let json = Bytes::from(serde_json::to_vec(&self.view).map_err(anyhow::Error::from)?);
        Ok(self.json.get_or_init(|| json).clone())
    }
}

/// The run `id` as it is now, within the freshness `crate::shared_reads`
/// promises, sharing the read with concurrent callers.
pub async fn run_snapshot(state: &AppState, id: Uuid) -> Result<Arc<RunSnapshot>, ApiError> {
    let db = state.db.clone();
    state
        .run_reads
        .get(id, move || async move {
            let mut conn = db.acquire().await?;
            let record = runs::record(&mut conn, id)
                .await?
                .ok_or(ApiError::NotFound("run"))?;
            let run = record.run.clone();
            Ok(RunSnapshot::new(run, RunView::from(record)))
        })
        .await
}

/// Invalidates the run if something its digest covers changed since it was
/// requested. Returns true when it did (the caller commits and reports 409).
async fn invalidate_if_stale(
    conn: &mut PgConnection,
    run: &RunRow,
    actor: &CurrentUser,
) -> Result<bool, ApiError> {
    if runs::current_digest(conn, run).await? == run.digest {
        return Ok(false);
    }
    let reason = "a migration, the DB set's targets or the environment's timeouts changed since the run was requested";
    runs::set_state(
        conn,
        run,
        RunState::Invalidated,
        Some(actor.id),
        Some(reason),
    )
    .await?;
    webhooks::notify_run(conn, run.id, "invalidated").await?;
    audit::append(
        conn,
        &actor
            .audit("run.invalidated", "run", run.id)
            .project(run.project_id)
            .details(json!({ "reason": reason, "pinned_digest": run.digest })),
    )
    .await?;
    Ok(true)
}

fn stale_error() -> ApiError {
    ApiError::conflict(
        "run_invalidated",
        "what this run covers changed since it was requested; it is invalidated and a new run must be requested",
    )
}

fn wrong_state(run: &RunRow, doing: &str) -> ApiError {
    let code = match run.state() {
        RunState::Invalidated => "run_invalidated",
        RunState::Queued
        | RunState::Running
        | RunState::Succeeded
        | RunState::Failed
        | RunState::PartiallyFailed
            if doing == "execute" =>
        {
            "already_executed"
        }
        _ => "invalid_state",
    };
    ApiError::conflict(code, format!("the run is {}; it cannot {doing}", run.state))
}

impl From<ApprovalError> for ApiError {
    fn from(err: ApprovalError) -> Self {
        let message = err.to_string();
        match err {
            ApprovalError::NotAllowed => ApiError::Forbidden(message),
            ApprovalError::SelfApproval(_) | ApprovalError::AuthorApproval(_) => {
                ApiError::ForbiddenCode {
                    code: "separation_of_duties",
                    message,
                }
            }
            ApprovalError::WrongState(RunState::Invalidated) | ApprovalError::Stale => {
                ApiError::conflict("run_invalidated", message)
            }
            ApprovalError::WrongState(_) => ApiError::conflict("invalid_state", message),
            ApprovalError::AlreadyApproved => ApiError::conflict("already_decided", message),
        }
    }
}

/// The answer to a refused approval or denial. A refusal for separation of
/// duties is a 403 and audited (`access.denied`, with the run) in the
/// transaction that holds the run's lock; other refusals write nothing.
async fn refuse_decision(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    user: &CurrentUser,
    run: &RunRow,
    err: ApprovalError,
) -> ApiError {
    let refusal = ApiError::from(err);
    if refusal.status() != axum::http::StatusCode::FORBIDDEN {
        return refusal;
    }
    let mut entry = user.denial(&refusal).project(run.project_id);
    entry.details["run"] = json!(run.id);
    let recorded = async {
        audit::append(&mut tx, &entry).await?;
        tx.commit().await
    };
    match recorded.await {
        Ok(()) => refusal,
        Err(err) => err.into(),
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ApproveBody {
    #[serde(default)]
    pub comment: String,
}

/// Loads what the approval rule needs about a locked run.
async fn approval_facts(
    conn: &mut PgConnection,
    run: &RunRow,
) -> Result<(EnvironmentRow, Vec<Uuid>, Vec<Uuid>), ApiError> {
    let env = inventory::environment(conn, &run.environment)
        .await?
        .ok_or_else(|| anyhow::anyhow!("run {} names a missing environment", run.id))?;
    let authors = runs::covered_authors(conn, run.id).await?;
    let approvers = runs::approvals(conn, run.id)
        .await?
        .into_iter()
        .filter(|a| a.decision == "approved" && a.digest == run.digest)
        .map(|a| a.user_id)
        .collect();
    Ok((env, authors, approvers))
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/approve", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    request_body(content = Option<ApproveBody>, description = "Optional; an empty body approves without a comment"),
    responses(
        (status = 200, description = "The run; `approved` once it has the approvals its environment requires", body = RunView),
        (status = 403, description = "`separation_of_duties`: the requester or an author may not approve here", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_decided`, `invalid_state`, `run_invalidated`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `comment`", body = ErrorBody),
    ))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    user: Authorized<rules::Approve>,
    ApiPath(id): ApiPath<Uuid>,
    OptionalJson(body): OptionalJson<ApproveBody>,
) -> Result<Json<Value>, ApiError> {
    approve_run(&state, &user, id, body).await.map(Json)
}

pub async fn approve_run(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    body: ApproveBody,
) -> Result<Value, ApiError> {
    let comment = optional_text("comment", body.comment.trim(), 2000)?;
    let mut tx = state.db.begin().await?;
    let run = runs::lock(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    if run.state() == RunState::PendingApproval && invalidate_if_stale(&mut tx, &run, user).await? {
        tx.commit().await?;
        return Err(stale_error());
    }
    let (env, authors, approvers) = approval_facts(&mut tx, &run).await?;
    let ctx = ApprovalContext {
        state: run.state(),
        requested_by: run.requested_by,
        authors: &authors,
        approvers: &approvers,
        digest_current: true,
    };
    let outcome = match approval::decide_approval(&env.policy(), &ctx, user.id, user.role) {
        Ok(outcome) => outcome,
        Err(err) => return Err(refuse_decision(tx, user, &run, err).await),
    };
    runs::insert_decision(&mut tx, run.id, user.id, "approved", &comment, &run.digest).await?;
    if outcome.fully_approved {
        let next = run
            .state()
            .transition(RunEvent::FullyApproved)
            .map_err(|_| wrong_state(&run, "be approved"))?;
        runs::set_state(&mut tx, &run, next, Some(user.id), None).await?;
        webhooks::notify_run(&mut tx, run.id, "approved").await?;
    }
    audit::append(
        &mut tx,
        &user
            .audit("run.approved", "run", run.id)
            .project(run.project_id)
            .details(json!({
                "digest": run.digest,
                "comment": comment,
                "approvals": outcome.count,
                "required": env.required_approvals,
            })),
    )
    .await?;
    let view = run_view(&mut tx, id).await?;
    tx.commit().await?;
    Ok(view)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DenyBody {
    pub reason: String,
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/deny", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    request_body = DenyBody,
    responses(
        (status = 200, description = "The run, denied", body = RunView),
        (status = 403, description = "`separation_of_duties`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`already_decided`, `invalid_state`, `run_invalidated`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `reason`", body = ErrorBody),
    ))]
pub(crate) async fn deny(
    State(state): State<AppState>,
    user: Authorized<rules::Approve>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<DenyBody>,
) -> Result<Json<Value>, ApiError> {
    deny_run(&state, &user, id, body).await.map(Json)
}

pub async fn deny_run(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    body: DenyBody,
) -> Result<Value, ApiError> {
    let reason = super::required_text("reason", &body.reason, 2000)?;
    let mut tx = state.db.begin().await?;
    let run = runs::lock(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    let (env, authors, approvers) = approval_facts(&mut tx, &run).await?;
    let ctx = ApprovalContext {
        state: run.state(),
        requested_by: run.requested_by,
        authors: &authors,
        approvers: &approvers,
        digest_current: true,
    };
    if let Err(err) = approval::check_denial(&env.policy(), &ctx, user.id, user.role) {
        return Err(refuse_decision(tx, user, &run, err).await);
    }
    runs::insert_decision(&mut tx, run.id, user.id, "denied", &reason, &run.digest).await?;
    let next = run
        .state()
        .transition(RunEvent::Deny)
        .map_err(|_| wrong_state(&run, "be denied"))?;
    runs::set_state(&mut tx, &run, next, Some(user.id), Some(&reason)).await?;
    webhooks::notify_run(&mut tx, run.id, "denied").await?;
    audit::append(
        &mut tx,
        &user
            .audit("run.denied", "run", run.id)
            .project(run.project_id)
            .details(json!({ "reason": reason })),
    )
    .await?;
    let view = run_view(&mut tx, id).await?;
    tx.commit().await?;
    Ok(view)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ExecuteBody {
    /// RFC 3339, within 30 days: no target starts before it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
}

/// Requesters operate their own runs; managers and admins any run.
async fn require_operator(
    state: &AppState,
    user: &CurrentUser,
    run: &RunRow,
) -> Result<(), ApiError> {
    if run.requested_by == user.id {
        return Ok(());
    }
    user.require(state, Capability::OperateAnyRun).await
}

/// Execute: in one transaction, lock the run, check it is approved and still
/// what was approved, queue the first targets (up to the run's concurrency,
/// or its canary) as jobs in their pools' queues, and move the run to
/// `queued`. Enqueueing and the state change commit together or not at all;
/// each finishing target dispatches the next.
#[utoipa::path(post, path = "/api/v1/runs/{id}/execute", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    request_body(content = Option<ExecuteBody>, description = "Optional"),
    responses(
        (status = 202, description = "The run, queued", body = RunView),
        (status = 403, description = "`forbidden`: only the requester, a manager or an admin may execute", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`not_approved`, `already_executed`, `invalid_state`, `run_invalidated`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `not_before`", body = ErrorBody),
    ))]
pub(crate) async fn execute(
    State(state): State<AppState>,
    user: Authorized<rules::Author>,
    ApiPath(id): ApiPath<Uuid>,
    OptionalJson(body): OptionalJson<ExecuteBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    execute_run(&state, &user, id, body)
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
}

pub async fn execute_run(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    body: ExecuteBody,
) -> Result<Value, ApiError> {
    // The span whose trace every job of the run continues.
    let span = tracing::info_span!("execute_run", run_id = %id);
    execute_traced(state, user, id, body).instrument(span).await
}

async fn execute_traced(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    body: ExecuteBody,
) -> Result<Value, ApiError> {
    let not_before = body.not_before;
    let now = OffsetDateTime::now_utc();
    if not_before.is_some_and(|t| t > now + time::Duration::days(30)) {
        return Err(ApiError::invalid("not_before", "must be within 30 days"));
    }
    let mut tx = state.db.begin().await?;
    let run = runs::lock(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    require_operator(state, user, &run).await?;
    let next = run
        .state()
        .transition(RunEvent::Execute)
        .map_err(|_| wrong_state(&run, "execute"))?;
    if invalidate_if_stale(&mut tx, &run, user).await? {
        tx.commit().await?;
        return Err(stale_error());
    }
    // Defence in depth: the approvals on record must cover this digest.
    let (env, _, approvers) = approval_facts(&mut tx, &run).await?;
    if (approvers.len() as i32) < env.required_approvals {
        return Err(ApiError::conflict(
            "not_approved",
            "the run lacks the approvals its environment requires",
        ));
    }

    // Every job of the run, also those queued as earlier targets finish,
    // continues this request's trace.
    let run = RunRow {
        traceparent: common::telemetry::traceparent(&tracing::Span::current()),
        ..run
    };
    // Up to the concurrency limit (or the canary) now; the rest as earlier
    // targets finish.
    let executions = dispatch::dispatch(&mut tx, &run, not_before).await?;
    sqlx::query(
        "UPDATE runs SET executed_by = $2, not_before = $3, traceparent = $4 WHERE id = $1",
    )
    .bind(run.id)
    .bind(user.id)
    .bind(not_before)
    .bind(&run.traceparent)
    .execute(&mut *tx)
    .await?;
    runs::set_state(&mut tx, &run, next, Some(user.id), None).await?;
    webhooks::notify_run(&mut tx, run.id, "executed").await?;
    audit::append(
        &mut tx,
        &user
            .audit("run.executed", "run", run.id)
            .project(run.project_id)
            .details(json!({
                "digest": run.digest,
                "targets": executions.len(),
                "not_before": not_before.map(|t| t.unix_timestamp()),
            })),
    )
    .await?;
    let view = run_view(&mut tx, id).await?;
    tx.commit().await?;
    Ok(view)
}

/// Cancel: targets not started are cancelled; running ones finish their
/// current migration and report as usual.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run, cancelled; running targets finish their current migration", body = RunView),
        (status = 403, description = "`forbidden`: only the requester, a manager or an admin may cancel", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the run is already final", body = ErrorBody),
    ))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    user: Authorized<rules::Author>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    cancel_run(&state, &user, id).await.map(Json)
}

pub async fn cancel_run(state: &AppState, user: &CurrentUser, id: Uuid) -> Result<Value, ApiError> {
    let mut tx = state.db.begin().await?;
    let run = runs::lock(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    require_operator(state, user, &run).await?;
    let next = run
        .state()
        .transition(RunEvent::Cancel)
        .map_err(|_| wrong_state(&run, "be cancelled"))?;
    let cancelled = sqlx::query(
        "UPDATE target_executions SET state = 'cancelled', finished_at = now()
         WHERE run_id = $1 AND state IN ('pending', 'queued')",
    )
    .bind(run.id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    runs::set_state(&mut tx, &run, next, Some(user.id), Some("cancelled")).await?;
    audit::append(
        &mut tx,
        &user
            .audit("run.cancelled", "run", run.id)
            .project(run.project_id)
            .details(json!({ "targets_cancelled": cancelled })),
    )
    .await?;
    let view = run_view(&mut tx, id).await?;
    tx.commit().await?;
    Ok(view)
}
