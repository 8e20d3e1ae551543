//! The run page: what is pinned, who decided, and live per-target progress;
//! with the approve, deny, execute and cancel forms.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
};

use axum::{
    body::Bytes,
    extract::State,
    response::{Html, Response},
};
use common::{
    domain::{Capability, Direction, RunState},
    review::run::Item,
    store::runs::{ExecutionRow, RunMigrationRow},
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Viewer, render_value, see_other};
use crate::{
    auth::rules,
    error::{ApiError, ApiForm, ApiPath, ApiQuery},
    routes::{Access, Routes},
    run_view::{self, RunPages, RunSnapshot, RunView, TARGETS_PER_PAGE, TargetQuery},
    service::runs::{
        ApproveBody, DenyBody, ExecuteBody, WaiveBody, approve_run, cancel_run, deny_run,
        execute_run, waive_finding,
    },
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get("/runs/{id}", Access::Needs(Capability::View), run_page)
        .get(
            "/runs/{id}/live",
            Access::Needs(Capability::View),
            live_fragment,
        )
        .get(
            "/runs/{id}/events",
            Access::Needs(Capability::View),
            live_events,
        )
        .get(
            "/runs/{id}/targets/{target_id}/schema",
            Access::Needs(Capability::View),
            schema_page,
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
            "/runs/{id}/waivers",
            Access::Needs(Capability::WaiveFindings),
            waive_form,
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

async fn pages_of(
    state: &AppState,
    id: Uuid,
) -> Result<(Arc<RunSnapshot>, Arc<RunPages>), ApiError> {
    let snapshot = crate::service::runs::run_snapshot(state, id).await?;
    if let Some(pages) = snapshot.pages.get().cloned() {
        return Ok((snapshot, pages));
    }
    let plan = crate::service::runs::target_plan(state, &snapshot.view).await?;
    let context = minijinja::context! {
        run => minijinja::Value::from(minijinja::value::Serde(&snapshot.view)),
        review_html => review_section(state, &snapshot).await?,
        plan => minijinja::Value::from(minijinja::value::Serde(plan)),
        final => snapshot.run.state.is_final(),
    };
    let part = |name: &str| render_value(state, name, context.clone(), None).map(|html| html.0);
    let timeline = crate::timeline::svg(&snapshot.view.targets, time::OffsetDateTime::now_utc());
    let summary = minijinja::Value::from_safe_string(part("runs/summary.html")?);
    let record = minijinja::Value::from_safe_string(part("runs/record.html")?);
    let live = Bytes::from(live_part(
        state,
        &snapshot,
        timeline.as_deref(),
        &TargetParams::default(),
    )?);
    let pages = Arc::new(RunPages {
        summary,
        record,
        live,
        timeline,
    });
    let pages = snapshot.pages.get_or_init(|| pages).clone();
    Ok((snapshot, pages))
}

/// `?state=&q=&page=` of the run page and its live part: which targets to
/// show (empty values count as absent, as a form sends them).
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct TargetParams {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    q: Option<String>,
    /// 1-based.
    #[serde(default)]
    page: Option<usize>,
}

impl TargetParams {
    fn state(&self) -> Option<&str> {
        self.state
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    fn name(&self) -> Option<&str> {
        self.q.as_deref().map(str::trim).filter(|s| !s.is_empty())
    }

    fn is_default(&self) -> bool {
        self.state().is_none() && self.name().is_none() && self.page.unwrap_or(1) <= 1
    }

    fn query(&self) -> Result<TargetQuery, ApiError> {
        Ok(TargetQuery {
            filter: self.state().map(str::parse).transpose()?,
            name: self.name().map(str::to_owned),
        })
    }

    /// The query string (with its `?`) that asks for these targets on
    /// `page`; empty for the default view.
    fn query_string(&self, page: usize) -> String {
        let mut qs = form_urlencoded::Serializer::new(String::new());
        if let Some(state) = self.state() {
            qs.append_pair("state", state);
        }
        if let Some(name) = self.name() {
            qs.append_pair("q", name);
        }
        if page > 1 {
            qs.append_pair("page", &page.to_string());
        }
        let qs = qs.finish();
        if qs.is_empty() { qs } else { format!("?{qs}") }
    }
}

/// The live part of the run page for `params`: state, counts, progress,
/// the timeline and one page of targets, those needing attention first.
fn live_part(
    state: &AppState,
    snapshot: &RunSnapshot,
    timeline: Option<&str>,
    params: &TargetParams,
) -> Result<String, ApiError> {
    let view = &snapshot.view;
    let query = params.query()?;
    let chosen = run_view::select(&view.targets, &query);
    let pages = chosen.len().div_ceil(TARGETS_PER_PAGE).max(1);
    let page = params.page.unwrap_or(1).clamp(1, pages);
    let rows: Vec<&ExecutionRow> = chosen
        .iter()
        .skip((page - 1) * TARGETS_PER_PAGE)
        .take(TARGETS_PER_PAGE)
        .copied()
        .collect();
    let attention = view
        .targets
        .iter()
        .filter(|t| run_view::needs_attention(t))
        .count();
    let context = minijinja::context! {
        run => minijinja::Value::from(minijinja::value::Serde(view)),
        final => snapshot.run.state.is_final(),
        rows => minijinja::Value::from(minijinja::value::Serde(&rows)),
        matching => chosen.len(),
        first => (page - 1) * TARGETS_PER_PAGE + 1,
        page => page,
        pages => pages,
        filtered => params.state().is_some() || params.name().is_some(),
        prev => (page > 1).then(|| params.query_string(page - 1)),
        next => (page < pages).then(|| params.query_string(page + 1)),
        attention => attention,
        timeline => timeline.map(|svg| minijinja::Value::from_safe_string(svg.to_owned())),
    };
    Ok(render_value(state, "runs/live.html", context, None)?.0)
}

/// Rendered review sections, by run and review digest: a run's review (and
/// the scripts it shows) change only with its digest, while its other parts
/// change with every finished target, so the section is rendered once, not
/// once per read of the run.
static REVIEW_SECTIONS: LazyLock<Mutex<HashMap<(Uuid, String), minijinja::Value>>> =
    LazyLock::new(Mutex::default);
/// Sections kept before the cache starts over.
const REVIEW_SECTIONS_KEPT: usize = 256;

/// The run's SQL review section (`runs/review.html`), from the cache.
async fn review_section(
    state: &AppState,
    snapshot: &RunSnapshot,
) -> Result<minijinja::Value, ApiError> {
    let key = (
        snapshot.run.id,
        snapshot.run.review_digest.clone().unwrap_or_default(),
    );
    let cached = REVIEW_SECTIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    if let Some(html) = cached {
        return Ok(html);
    }
    let scripts = crate::service::runs::pinned_scripts(state, snapshot.run.id).await?;
    let context = minijinja::context! {
        run => minijinja::Value::from(minijinja::value::Serde(&snapshot.view)),
        review => minijinja::Value::from(minijinja::value::Serde(review_context(&snapshot.view, &scripts))),
    };
    let html = minijinja::Value::from_safe_string(
        render_value(state, "runs/review.html", context, None)?.0,
    );
    let mut sections = REVIEW_SECTIONS.lock().unwrap_or_else(|e| e.into_inner());
    if sections.len() >= REVIEW_SECTIONS_KEPT {
        sections.clear();
    }
    sections.insert(key, html.clone());
    Ok(html)
}

/// The run's review as its page shows it: per pinned script and engine,
/// the script's lines with the findings under the line they point at.
fn review_context(view: &RunView, scripts: &[RunMigrationRow]) -> Value {
    let Some(review) = &view.review else {
        return json!(null);
    };
    let shown: Vec<Value> = review
        .scripts
        .iter()
        .map(|s| {
            let pinned = scripts.iter().find(|m| m.version == s.version);
            let sql = pinned.map_or("", |m| match view.direction {
                Direction::Up => m.up_sql.as_str(),
                Direction::Down => m.down_sql.as_str(),
            });
            let lines: Vec<Value> = sql
                .lines()
                .enumerate()
                .map(|(i, text)| {
                    let at: Vec<&Item> = s.findings.iter().filter(|f| f.line == i + 1).collect();
                    json!({ "n": i + 1, "text": text, "findings": at })
                })
                .collect();
            let whole: Vec<&Item> = s.findings.iter().filter(|f| f.line == 0).collect();
            json!({
                "version": s.version,
                "name": pinned.map(|m| m.name.as_str()),
                "engine": s.engine,
                "count": s.findings.len(),
                "blocking": s.findings.iter().filter(|f| f.blocks()).count(),
                "lines": lines,
                "whole": whole,
            })
        })
        .collect();
    json!({
        "risk": review.risk,
        "analyzers": review.analyzers,
        "scripts": shown,
    })
}

async fn run_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<TargetParams>,
) -> Result<Html<String>, ApiError> {
    let (snapshot, pages) = pages_of(&state, id).await?;
    let live = if params.is_default() {
        pages.live.clone()
    } else {
        Bytes::from(live_part(
            &state,
            &snapshot,
            pages.timeline.as_deref(),
            &params,
        )?)
    };
    let run_state = snapshot.run.state;
    let operator =
        snapshot.run.requested_by == viewer.user.id || viewer.user.can(Capability::OperateAnyRun);
    let context = minijinja::context! {
        run => minijinja::context! { id => id.to_string() },
        summary => pages.summary.clone(),
        record => pages.record.clone(),
        live => minijinja::Value::from_safe_string(String::from_utf8_lossy(&live).into_owned()),
        live_query => params.query_string(params.page.unwrap_or(1)),
        filter_state => params.state(),
        filter_q => params.name(),
        counts => minijinja::Value::from(minijinja::value::Serde(&snapshot.view.counts)),
        can_approve => run_state == RunState::PendingApproval && viewer.user.can(Capability::Approve) && snapshot.view.blocking_findings == 0,
        can_deny => run_state == RunState::PendingApproval && viewer.user.can(Capability::Approve),
        review_blocks => run_state == RunState::PendingApproval && snapshot.view.blocking_findings > 0,
        can_waive => run_state == RunState::PendingApproval && viewer.user.can(Capability::WaiveFindings),
        blocking => minijinja::Value::from(minijinja::value::Serde(blocking_findings(&snapshot.view))),
        can_execute => run_state == RunState::Approved && operator,
        can_cancel => matches!(run_state, RunState::PendingApproval | RunState::Approved | RunState::Queued | RunState::Running) && operator,
    };
    render_value(&state, "runs/detail.html", context, Some(&viewer))
}

/// What the run changed on one target: the schema diff, line by line.
async fn schema_page(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath((id, target_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Html<String>, ApiError> {
    let change = crate::service::snapshots::run_target_change(&state, id, target_id).await?;
    let context = minijinja::context! {
        change => minijinja::Value::from(minijinja::value::Serde(&change)),
    };
    render_value(&state, "runs/schema.html", context, Some(&viewer))
}

/// The live part of the run page, refreshed by `/static/app.js`: shared by
/// every viewer of the default view, rendered for a filtered one.
async fn live_fragment(
    State(state): State<AppState>,
    _viewer: Viewer,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<TargetParams>,
) -> Result<Html<Bytes>, ApiError> {
    let (snapshot, pages) = pages_of(&state, id).await?;
    if params.is_default() {
        return Ok(Html(pages.live.clone()));
    }
    let html = live_part(&state, &snapshot, pages.timeline.as_deref(), &params)?;
    Ok(Html(Bytes::from(html)))
}

/// The run's live stream for its page (the API's, with the session's
/// sign-in): `/static/app.js` refreshes the live part when it says the run
/// changed.
async fn live_events(
    State(state): State<AppState>,
    _viewer: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    use axum::response::IntoResponse;
    Ok(crate::service::run_events::events(state, id)
        .await?
        .into_response())
}

/// The findings that keep the run from being approved, for the waiver forms.
fn blocking_findings(view: &RunView) -> Vec<Value> {
    let Some(review) = &view.review else {
        return Vec::new();
    };
    review
        .scripts
        .iter()
        .flat_map(|s| {
            s.findings
                .iter()
                .filter(|f| f.blocks())
                .map(move |f| json!({ "version": s.version, "engine": s.engine, "finding": f }))
        })
        .collect()
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
    ApiForm(form): ApiForm<HashMap<String, String>>,
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
    ApiForm(form): ApiForm<HashMap<String, String>>,
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

async fn waive_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::WaiveFindings>,
    ApiPath(id): ApiPath<Uuid>,
    ApiForm(form): ApiForm<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let line = text(&form, "line")
        .parse()
        .map_err(|_| ApiError::invalid("line", "must be a whole number"))?;
    waive_finding(
        &state,
        &viewer.user,
        id,
        WaiveBody {
            version: text(&form, "version"),
            code: text(&form, "code"),
            line,
            reason: text(&form, "reason"),
        },
    )
    .await?;
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
