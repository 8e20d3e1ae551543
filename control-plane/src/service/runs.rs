//! The control plane's side of a run, shared by the API and the pages: the
//! shared read of a run ([`run_snapshot`], of the read model in
//! `crate::run_view`) and the changes — request, approve, deny, execute, cancel — each one
//! transaction over `common::lifecycle`, answering with the run as it then
//! is.

use std::{collections::HashMap, sync::Arc};

use common::{
    domain::{Direction, ProjectSlug, RunState, Version},
    lifecycle::{self, LifecycleError, RunRequest},
    store::inventory,
    store::runs::{self},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use time::OffsetDateTime;
use tracing::Instrument;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::CurrentUser,
    error::ApiError,
    input::{optional_text, required_text},
    run_view::{RunSnapshot, RunView, run_view},
    state::AppState,
};

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

pub async fn request_run(
    state: &AppState,
    user: &CurrentUser,
    slug: String,
    body: RequestRun,
) -> Result<RunView, ApiError> {
    let note = optional_text("note", body.note.as_deref().unwrap_or("").trim(), 2000)?;
    let caller = user.caller();
    change_run(state, async |tx| {
        let project = ProjectSlug::parse(&slug)
            .ok()
            .map(|slug| slug.as_str().to_owned());
        let project = match project {
            Some(slug) => inventory::project_by_slug(tx, &slug)
                .await
                .map_err(ApiError::from)?,
            None => None,
        }
        .ok_or(ApiError::NotFound("project"))?;
        let ask = RunRequest {
            project_id: project.id,
            db_set_id: body.db_set_id,
            direction: body.direction,
            target_version: body.target_version,
            note,
            stop_on_failure: body.stop_on_failure.unwrap_or(false),
            concurrency: body.concurrency,
            canary: body.canary,
        };
        Ok(lifecycle::request(tx, &caller, &ask).await?)
    })
    .await
}

/// One transaction per change of a run: the lifecycle step, then the run as
/// it now is, committed together. A refusal is committed too when it wrote
/// something that must stay (an audited denial, an invalidation).
async fn change_run(
    state: &AppState,
    step: impl AsyncFnOnce(&mut PgConnection) -> Result<Uuid, StepError>,
) -> Result<RunView, ApiError> {
    let mut tx = state.db.begin().await?;
    match step(&mut tx).await {
        Ok(id) => {
            let view = run_view(&mut tx, id).await?;
            tx.commit().await?;
            Ok(view)
        }
        Err(StepError::Lifecycle(err)) if err.keeps_writes() => {
            tx.commit().await?;
            Err(err.into())
        }
        Err(StepError::Lifecycle(err)) => Err(err.into()),
        Err(StepError::Api(err)) => Err(err),
    }
}

/// What a step of [`change_run`] can fail with.
enum StepError {
    Api(ApiError),
    Lifecycle(LifecycleError),
}

impl From<ApiError> for StepError {
    fn from(err: ApiError) -> Self {
        Self::Api(err)
    }
}

impl From<LifecycleError> for StepError {
    fn from(err: LifecycleError) -> Self {
        Self::Lifecycle(err)
    }
}

/// The run `id` as it is now, within the freshness `crate::shared_reads`
/// promises, sharing the read with concurrent callers.
pub async fn run_snapshot(state: &AppState, id: Uuid) -> Result<Arc<RunSnapshot>, ApiError> {
    run_snapshot_after(state, id, None).await
}

/// [`run_snapshot`] from a read that started at or after `after` (when a
/// change of the run was heard).
pub async fn run_snapshot_after(
    state: &AppState,
    id: Uuid,
    after: Option<tokio::time::Instant>,
) -> Result<Arc<RunSnapshot>, ApiError> {
    let db = state.db.clone();
    state
        .run_reads
        .get_after(id, after, move || async move {
            let mut conn = db.acquire().await?;
            let record = runs::record(&mut conn, id)
                .await?
                .ok_or(ApiError::NotFound("run"))?;
            let run = record.run.clone();
            Ok(RunSnapshot::new(run, RunView::from(record)))
        })
        .await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ApproveBody {
    #[serde(default)]
    pub comment: String,
}

pub async fn approve_run(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    body: ApproveBody,
) -> Result<RunView, ApiError> {
    let comment = optional_text("comment", body.comment.trim(), 2000)?;
    let caller = user.caller();
    change_run(state, async |tx| {
        lifecycle::approve(tx, &caller, id, &comment).await?;
        Ok(id)
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DenyBody {
    pub reason: String,
}

pub async fn deny_run(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    body: DenyBody,
) -> Result<RunView, ApiError> {
    let reason = required_text("reason", &body.reason, 2000)?;
    let caller = user.caller();
    change_run(state, async |tx| {
        lifecycle::deny(tx, &caller, id, &reason).await?;
        Ok(id)
    })
    .await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ExecuteBody {
    /// RFC 3339, within 30 days: no target starts before it.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_before: Option<OffsetDateTime>,
}

pub async fn execute_run(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    body: ExecuteBody,
) -> Result<RunView, ApiError> {
    // The span whose trace every job of the run continues.
    let span = tracing::info_span!("execute_run", run_id = %id);
    execute_traced(state, user, id, body).instrument(span).await
}

async fn execute_traced(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    body: ExecuteBody,
) -> Result<RunView, ApiError> {
    let caller = user.caller();
    // Every job of the run, also those queued as earlier targets finish,
    // continues this request's trace.
    let traceparent = common::telemetry::traceparent(&tracing::Span::current());
    change_run(state, async |tx| {
        lifecycle::execute(tx, &caller, id, body.not_before, traceparent).await?;
        Ok(id)
    })
    .await
}

/// An admin's waiver of one finding of a run's SQL review.
#[derive(Debug, Deserialize, ToSchema)]
pub struct WaiveBody {
    /// The pinned migration's version.
    pub version: String,
    /// The finding's analyzer code.
    pub code: String,
    /// The finding's line in the script (0 for a finding about the whole script).
    #[serde(default)]
    pub line: u32,
    /// Why the finding is acceptable here (1-1000 characters); audited.
    pub reason: String,
}

pub async fn waive_finding(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    body: WaiveBody,
) -> Result<RunView, ApiError> {
    let ask = lifecycle::WaiverRequest {
        version: required_text("version", &body.version, 100)?,
        code: required_text("code", &body.code, 100)?,
        line: body.line as usize,
        reason: required_text("reason", &body.reason, 1000)?,
    };
    let caller = user.caller();
    change_run(state, async |tx| {
        lifecycle::waive(tx, &caller, id, &ask).await?;
        Ok(id)
    })
    .await
}

/// The scripts a run pins, as they are now (an edit invalidates the run;
/// its page says so beside each changed one).
pub async fn pinned_scripts(
    state: &AppState,
    id: Uuid,
) -> Result<Vec<runs::RunMigrationRow>, ApiError> {
    let mut conn = state.db.acquire().await?;
    Ok(runs::migrations(&mut conn, id).await?)
}

/// What a waiting run will do on one target.
#[derive(Debug, Serialize)]
pub struct PlanRow {
    pub target: String,
    pub engine: String,
    /// The newest version the hub records as applied there now.
    pub current_version: Option<String>,
    /// The pinned versions the run applies there (`up`) or rolls back
    /// (`down`), in execution order.
    pub will_run: Vec<String>,
    /// The pinned versions it skips there: already applied (`up`), or
    /// never applied (`down`).
    pub skips: Vec<String>,
}

/// Per target, what a run waiting for approval or execution will do, from
/// the versions each target has now; `None` once the run has started.
pub async fn target_plan(
    state: &AppState,
    view: &RunView,
) -> Result<Option<Vec<PlanRow>>, ApiError> {
    if !matches!(view.state, RunState::PendingApproval | RunState::Approved) {
        return Ok(None);
    }
    let ids: Vec<Uuid> = view.targets.iter().map(|t| t.target_id).collect();
    let mut conn = state.db.acquire().await?;
    let mut applied: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (target, version) in runs::applied_versions(&mut conn, &ids).await? {
        applied.entry(target).or_default().push(version);
    }
    let plan = view
        .targets
        .iter()
        .map(|t| {
            let has = applied
                .get(&t.target_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let current = has
                .iter()
                .filter_map(|v| Version::parse(v).ok())
                .max()
                .map(|v| v.to_string());
            let (done, pending): (Vec<String>, Vec<String>) = view
                .migrations
                .iter()
                .map(|m| m.version.clone())
                .partition(|v| has.contains(v));
            let (will_run, skips) = match view.direction {
                Direction::Up => (pending, done),
                Direction::Down => (done, pending),
            };
            PlanRow {
                target: t.target_name.clone(),
                engine: t.engine.clone(),
                current_version: current,
                will_run,
                skips,
            }
        })
        .collect();
    Ok(Some(plan))
}

pub async fn cancel_run(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
) -> Result<RunView, ApiError> {
    let caller = user.caller();
    change_run(state, async |tx| {
        lifecycle::cancel(tx, &caller, id).await?;
        Ok(id)
    })
    .await
}
