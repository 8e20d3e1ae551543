//! The run page: what is pinned, who decided, and live per-target progress;
//! with the approve, deny, execute and cancel forms.

use std::collections::HashMap;

use axum::{
    Form,
    extract::State,
    response::{Html, Response},
};
use common::domain::{Capability, RunState};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Viewer, render, see_other};
use crate::{
    api::runs::{
        ApproveBody, DenyBody, ExecuteBody, approve_run, cancel_run, deny_run, execute_run,
    },
    app::AppState,
    auth::rules,
    error::{ApiError, ApiPath},
    routes::{Access, Routes},
};

pub fn router() -> Routes {
    Routes::new()
        .get("/runs/{id}", Access::Needs(Capability::View), run_page)
        .get(
            "/runs/{id}/live",
            Access::Needs(Capability::View),
            live_fragment,
        )
        .post(
            "/runs/{id}/approve",
            Access::Needs(Capability::Approve),
            approve_form,
        )
        .post(
            "/runs/{id}/deny",
            Access::Needs(Capability::Approve),
            deny_form,
        )
        .post(
            "/runs/{id}/execute",
            Access::Needs(Capability::Author),
            execute_form,
        )
        .post(
            "/runs/{id}/cancel",
            Access::Needs(Capability::Author),
            cancel_form,
        )
}

async fn view_of(state: &AppState, id: Uuid) -> Result<(Value, RunState, Uuid), ApiError> {
    let snapshot = crate::api::runs::run_snapshot(state, id).await?;
    let view = serde_json::to_value(&snapshot.view).map_err(anyhow::Error::from)?;
    Ok((view, snapshot.run.state(), snapshot.run.requested_by))
}

async fn run_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Html<String>, ApiError> {
    let (view, run_state, requested_by) = view_of(&state, id).await?;
    let operator = requested_by == viewer.user.id || viewer.user.can(Capability::OperateAnyRun);
    let context = json!({
        "run": view,
        "final": run_state.is_final(),
        "can_approve": run_state == RunState::PendingApproval && viewer.user.can(Capability::Approve),
        "can_execute": run_state == RunState::Approved && operator,
        "can_cancel": matches!(run_state, RunState::PendingApproval | RunState::Approved | RunState::Queued | RunState::Running) && operator,
    });
    render(&state, "runs/detail.html", context, Some(&viewer))
}

/// The live part of the run page, polled by `/static/app.js`.
async fn live_fragment(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Html<String>, ApiError> {
    let (view, run_state, _) = view_of(&state, id).await?;
    render(
        &state,
        "runs/live.html",
        json!({ "run": view, "final": run_state.is_final() }),
        Some(&viewer),
    )
}

fn text(form: &HashMap<String, String>, key: &str) -> String {
    form.get(key)
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

async fn approve_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Approve>,
    ApiPath(id): ApiPath<Uuid>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    approve_run(
        &state,
        &viewer.user,
        id,
        ApproveBody {
            comment: text(&form, "comment"),
        },
    )
    .await?;
    Ok(see_other(&format!("/runs/{id}")))
}

async fn deny_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Approve>,
    ApiPath(id): ApiPath<Uuid>,
    Form(form): Form<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    deny_run(
        &state,
        &viewer.user,
        id,
        DenyBody {
            reason: text(&form, "reason"),
        },
    )
    .await?;
    Ok(see_other(&format!("/runs/{id}")))
}

async fn execute_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Author>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    execute_run(&state, &viewer.user, id, ExecuteBody::default()).await?;
    Ok(see_other(&format!("/runs/{id}")))
}

async fn cancel_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::Author>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    cancel_run(&state, &viewer.user, id).await?;
    Ok(see_other(&format!("/runs/{id}")))
}
