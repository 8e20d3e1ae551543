//! Runs over the API: list, read, request, approve, deny, execute, cancel.
//! Routes and their documentation only; what they do is `crate::service::runs`.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use common::{
    domain::{Capability, Direction, RunState},
    store::runs,
};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, OptionalJson},
    paging::{Page, PageQuery},
    routes::{Access, Routes},
    run_view::RunView,
    service::{
        inventory::project,
        runs::{
            ApproveBody, DenyBody, ExecuteBody, RequestRun, WaiveBody, approve_run, cancel_run,
            deny_run, execute_run, request_run, run_snapshot, waive_finding,
        },
        snapshots::{TargetSchemaChange, run_target_change},
    },
    state::AppState,
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
        .get("/runs/{id}/events", Access::Needs(Capability::View), events)
        .get(
            "/runs/{id}/targets",
            Access::Needs(Capability::View),
            targets,
        )
        .get(
            "/runs/{id}/targets/{target_id}/schema",
            Access::Needs(Capability::View),
            target_schema,
        )
        .post(
            "/runs/{id}/approve",
            Access::Needs(Capability::Approve),
            approve,
        )
        .post("/runs/{id}/deny", Access::Needs(Capability::Approve), deny)
        .post(
            "/runs/{id}/waivers",
            Access::Needs(Capability::WaiveFindings),
            waive,
        )
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
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    request_run(&state, &user, slug, body)
        .await
        .map(|v| (StatusCode::CREATED, Json(v)))
}

/// A run as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunListItem {
    pub id: Uuid,
    pub db_set_id: Uuid,
    pub environment: String,
    pub direction: Direction,
    pub target_version: String,
    pub state: RunState,
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
            direction: r.direction,
            target_version: r.target_version.clone(),
            state: r.state,
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

/// `?state=&q=&limit=&cursor=` of a run's targets.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunTargetsQuery {
    /// Only the targets in this execution state, or `attention` (failed,
    /// interrupted or dirty).
    pub state: Option<String>,
    /// Only the targets whose name contains this, any case.
    pub q: Option<String>,
    /// How many targets (default 50, at most 500).
    #[serde(default, deserialize_with = "crate::paging::page_limit")]
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of a run's targets, with the run's counts.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunTargets {
    /// The targets asked for, those that need attention (failed,
    /// interrupted, dirty) first, then those running, then the rest, each
    /// in the run's order.
    pub items: Vec<runs::ExecutionRow>,
    /// Pass back as `cursor` for the next page; `null` when there is none.
    pub next_cursor: Option<String>,
    /// Targets that match the filter.
    pub matching: usize,
    /// The run's targets.
    pub total: usize,
    /// The run's targets by execution state.
    pub counts: std::collections::BTreeMap<&'static str, usize>,
    /// Targets whose execution is final.
    pub done: usize,
    /// Seconds until the run's last target should be done at the pace so
    /// far (`null` unless the run is running and a target has finished).
    pub eta_seconds: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/runs/{id}/targets", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id"), RunTargetsQuery),
    responses(
        (status = 200, description = "A page of the run's targets, filtered by state and name, with the run's counts by state", body = RunTargets),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `state`, `limit` or `cursor`", body = ErrorBody),
    ))]
pub(crate) async fn targets(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<RunTargetsQuery>,
) -> Result<Json<RunTargets>, ApiError> {
    let filter = crate::run_view::TargetQuery {
        filter: query
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .transpose()?,
        name: query.q.clone().filter(|q| !q.trim().is_empty()),
    };
    let offset: usize = match query.cursor.as_deref() {
        None | Some("") => 0,
        Some(cursor) => cursor
            .parse()
            .map_err(|_| ApiError::invalid("cursor", "is not a cursor this list gave"))?,
    };
    let limit = query.limit.unwrap_or(PageQuery::DEFAULT) as usize;
    let snapshot = run_snapshot(&state, id).await?;
    let view = &snapshot.view;
    let chosen = crate::run_view::select(&view.targets, &filter);
    let items: Vec<runs::ExecutionRow> = chosen
        .iter()
        .skip(offset)
        .take(limit)
        .map(|t| (*t).clone())
        .collect();
    let next_cursor = (offset + items.len() < chosen.len()).then(|| (offset + limit).to_string());
    Ok(Json(RunTargets {
        items,
        next_cursor,
        matching: chosen.len(),
        total: view.targets.len(),
        counts: view.counts.clone(),
        done: view.done,
        eta_seconds: view.eta_seconds,
    }))
}

#[utoipa::path(get, path = "/api/v1/runs/{id}/events", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "The run's changes as server-sent events, pushed as they are committed: first the run as it is (a `run` event with its state and counts by target state, then one `target` event per target), then the `run` event when it changed and a `target` event for each target that changed; an `end` event once the run is final, and the stream closes. Comments keep an idle stream open."),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ))]
pub(crate) async fn events(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    Ok(crate::service::run_events::events(state, id)
        .await?
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/runs/{id}/targets/{target_id}/schema", tag = "runs",
    params(
        ("id" = Uuid, Path, description = "The run's id"),
        ("target_id" = Uuid, Path, description = "One of the run's targets"),
    ),
    responses(
        (status = 200, description = "What the run changed on the target: its schema snapshots before and after the execution and their difference", body = TargetSchemaChange),
        (status = 404, description = "`not_found`: no such run, or it has no execution on that target", body = ErrorBody),
    ))]
pub(crate) async fn target_schema(
    State(state): State<AppState>,
    _user: Authorized<rules::View>,
    ApiPath((id, target_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<TargetSchemaChange>, ApiError> {
    Ok(Json(run_target_change(&state, id, target_id).await?))
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/approve", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    request_body(content = Option<ApproveBody>, description = "Optional; an empty body approves without a comment"),
    responses(
        (status = 200, description = "The run; `approved` once it has the approvals its environment requires", body = RunView),
        (status = 403, description = "`separation_of_duties`: the requester or an author may not approve here", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`review_failed` (error findings nobody waived, listed), `already_decided`, `invalid_state`, `run_invalidated`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `comment`", body = ErrorBody),
    ))]
pub(crate) async fn approve(
    State(state): State<AppState>,
    user: Authorized<rules::Approve>,
    ApiPath(id): ApiPath<Uuid>,
    OptionalJson(body): OptionalJson<ApproveBody>,
) -> Result<Json<RunView>, ApiError> {
    approve_run(&state, &user, id, body).await.map(Json)
}

#[utoipa::path(post, path = "/api/v1/runs/{id}/waivers", tag = "runs",
    params(("id" = Uuid, Path, description = "The run's id")),
    request_body = WaiveBody,
    responses(
        (status = 200, description = "The run with its new review and digest; approvals given before the waiver no longer count", body = RunView),
        (status = 403, description = "`forbidden`: only admins waive findings", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`invalid_state` (not waiting for approval), `already_waived`, `not_reviewed`, `run_invalidated`", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `version`, `code` (no such finding), `reason`", body = ErrorBody),
    ))]
pub(crate) async fn waive(
    State(state): State<AppState>,
    user: Authorized<rules::WaiveFindings>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<WaiveBody>,
) -> Result<Json<RunView>, ApiError> {
    waive_finding(&state, &user, id, body).await.map(Json)
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
) -> Result<Json<RunView>, ApiError> {
    deny_run(&state, &user, id, body).await.map(Json)
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
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    execute_run(&state, &user, id, body)
        .await
        .map(|v| (StatusCode::ACCEPTED, Json(v)))
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
) -> Result<Json<RunView>, ApiError> {
    cancel_run(&state, &user, id).await.map(Json)
}
