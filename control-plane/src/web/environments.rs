//! The environments page: the ordered list with each approval policy, for
//! everyone; adding and editing them, for admins (through the same service
//! functions as the API).

use axum::{
    extract::State,
    response::{Html, Response},
};
use std::collections::BTreeMap;

use common::{
    domain::Capability,
    review::{
        ANALYZERS,
        policy::{Policy as ReviewPolicy, Setting},
    },
    store::inventory,
};
use serde_json::{Value, json};

use super::{
    Viewer,
    inventory::{FormData, field_errors, text, unprocessable},
    render, see_other,
};
use crate::{
    auth::rules,
    error::{ApiError, ApiForm, ApiPath},
    routes::{Access, Routes},
    service::environments::{EnvironmentInput, create_environment, update_environment},
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/admin/environments",
            Access::Needs(Capability::View),
            environments_page,
        )
        .post(
            "/admin/environments",
            Access::Needs(Capability::ManageProjects),
            create_form,
        )
        .post(
            "/admin/environments/{name}",
            Access::Needs(Capability::ManageProjects),
            update_form,
        )
        .post(
            "/admin/environments/{name}/review",
            Access::Needs(Capability::ManageProjects),
            review_form,
        )
}

/// Each analyzer as the environment's review policy sets it: the explicit
/// setting (or none) and the one that applies.
fn review_rows(env: &inventory::EnvironmentRow) -> Value {
    let policy = &env.review_policy.0;
    let rows: Vec<Value> = ANALYZERS
        .iter()
        .map(|a| {
            json!({
                "code": a.code,
                "category": a.category,
                "summary": a.summary,
                "explicit": policy.settings.get(a.code),
                "default": ReviewPolicy::default_setting(&env.name, a),
                "effective": policy.setting(&env.name, a),
            })
        })
        .collect();
    json!(rows)
}

/// The page; `extra` holds the input and errors of a refused form.
async fn page(state: &AppState, viewer: &Viewer, extra: Value) -> Result<Html<String>, ApiError> {
    let list = inventory::list_environments(&state.db).await?;
    let reviews: serde_json::Map<String, Value> = list
        .iter()
        .map(|e| (e.name.clone(), review_rows(e)))
        .collect();
    let mut context = json!({
        "environments": list,
        "reviews": reviews,
        "can_edit": viewer.user.can(Capability::ManageProjects),
        "add": {
            "form": { "required_approvals": 1, "allow_self_approval": true,
                      "lock_timeout_ms": 2000, "statement_timeout_ms": 600000,
                      "lock_retries": 5, "preflight_wait_ms": 60000, "blocker_age_ms": 60000 },
            "errors": {},
        },
        "edit": { "name": null, "form": {}, "errors": {} },
        "review_edit": { "name": null, "errors": {} },
    });
    if let (Some(ctx), Some(extra)) = (context.as_object_mut(), extra.as_object()) {
        ctx.extend(extra.clone());
    }
    render(state, "admin/environments.html", context, Some(viewer))
}

async fn environments_page(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Html<String>, ApiError> {
    page(&state, &viewer, json!({})).await
}

/// The policy fields of a submitted form. Numbers left empty are absent (a
/// new environment takes the default, an edited one keeps its value); the
/// checkboxes are always sent, as HTML sends them: absent means off.
fn parse(form: &FormData, with_name: bool) -> Result<EnvironmentInput, ApiError> {
    let number = |field: &str| -> Result<Option<i64>, ApiError> {
        let value = text(form, field);
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        value
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid(field, "must be a whole number"))
    };
    Ok(EnvironmentInput {
        name: with_name.then(|| text(form, "name")),
        position: number("position")?,
        required_approvals: number("required_approvals")?,
        allow_self_approval: Some(form.contains_key("allow_self_approval")),
        require_previous_success: Some(form.contains_key("require_previous_success")),
        lock_timeout_ms: number("lock_timeout_ms")?,
        statement_timeout_ms: number("statement_timeout_ms")?,
        lock_retries: number("lock_retries")?,
        preflight_wait_ms: number("preflight_wait_ms")?,
        blocker_age_ms: number("blocker_age_ms")?,
        terminate_idle_blockers_after_ms: number("terminate_idle_blockers_after_ms")?,
        // Sent by both forms (empty: no window); a form without it keeps it.
        maintenance_window: form
            .contains_key("maintenance_window")
            .then(|| Some(text(form, "maintenance_window"))),
        on_drift: form
            .contains_key("on_drift")
            .then(|| text(form, "on_drift")),
        ..EnvironmentInput::default()
    })
}

/// The review fields of a submitted review form: `setting.CODE` is
/// `default`, `off`, `warning` or `error`.
fn parse_review(form: &FormData) -> Result<EnvironmentInput, ApiError> {
    let mut settings = BTreeMap::new();
    for a in ANALYZERS {
        let field = format!("setting.{}", a.code);
        let setting = match text(form, &field).trim() {
            "" | "default" => continue,
            "off" => Setting::Off,
            "warning" => Setting::Warning,
            "error" => Setting::Error,
            _ => {
                return Err(ApiError::invalid(
                    "review_policy",
                    format!("{}: choose default, off, warning or error", a.code),
                ));
            }
        };
        settings.insert(a.code.to_owned(), setting);
    }
    let approvals = text(form, "high_risk_approvals");
    let approvals = approvals.trim();
    Ok(EnvironmentInput {
        review_policy: Some(ReviewPolicy {
            settings,
            require_down: form.contains_key("require_down"),
        }),
        high_risk_approvals: if approvals.is_empty() {
            None
        } else {
            Some(
                approvals.parse().map_err(|_| {
                    ApiError::invalid("high_risk_approvals", "must be a whole number")
                })?,
            )
        },
        high_risk_requires_admin: Some(form.contains_key("high_risk_requires_admin")),
        ..EnvironmentInput::default()
    })
}

async fn review_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageProjects>,
    ApiPath(name): ApiPath<String>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let result = match parse_review(&form) {
        Ok(input) => update_environment(&state, &viewer.user, &name, &input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(see_other("/admin/environments")),
        Err(err) => {
            let errors = field_errors(err)?;
            let extra = json!({ "review_edit": { "name": name, "errors": errors } });
            Ok(unprocessable(page(&state, &viewer.plain(), extra).await?))
        }
    }
}

async fn create_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageProjects>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let result = match parse(&form, true) {
        Ok(input) => create_environment(&state, &viewer.user, &input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(see_other("/admin/environments")),
        Err(err) => {
            let errors = field_errors(err)?;
            let extra = json!({ "add": { "form": form, "errors": errors } });
            Ok(unprocessable(page(&state, &viewer.plain(), extra).await?))
        }
    }
}

async fn update_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageProjects>,
    ApiPath(name): ApiPath<String>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let result = match parse(&form, false) {
        Ok(input) => update_environment(&state, &viewer.user, &name, &input).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Ok(see_other("/admin/environments")),
        Err(err) => {
            let errors = field_errors(err)?;
            let extra = json!({ "edit": { "name": name, "form": form, "errors": errors } });
            Ok(unprocessable(page(&state, &viewer.plain(), extra).await?))
        }
    }
}
