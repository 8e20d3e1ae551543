//! The control plane's side of a run, shared by the API and the pages: the
//! read model (`RunView`, and `RunSnapshot` shared by everyone watching a
//! run) and the changes — request, approve, deny, execute, cancel — each one
//! transaction over `common::lifecycle`, answering with the run as it then
//! is.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use common::{
    domain::{Direction, ProjectSlug, RunState},
    lifecycle::{self, LifecycleError, RunRequest},
    store::inventory,
    store::runs::{self, ApprovalRow, ExecutionRow, RunRecord, RunRow, TransitionRow},
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
    state::AppState,
};

/// A run with its pinned migrations, decisions, targets and state history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    pub id: Uuid,
    pub project_id: Uuid,
    pub db_set_id: Uuid,
    pub environment: String,
    pub direction: Direction,
    pub target_version: String,
    pub state: RunState,
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

/// The run `id` as this transaction sees it: what the state-changing routes
/// answer.
pub async fn run_view(tx: &mut PgConnection, id: Uuid) -> Result<RunView, ApiError> {
    let record = runs::record_in(tx, id)
        .await?
        .ok_or(ApiError::NotFound("run"))?;
    Ok(RunView::from(record))
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
