//! The environments page: the ordered list with each approval policy, for
//! everyone; adding and editing them, for admins (through the same service
//! functions as the API).

use axum::{
    extract::State,
    response::{Html, Response},
};
use common::{domain::Capability, store::inventory};
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
}

/// The page; `extra` holds the input and errors of a refused form.
async fn page(state: &AppState, viewer: &Viewer, extra: Value) -> Result<Html<String>, ApiError> {
    let list = inventory::list_environments(&state.db).await?;
    let mut context = json!({
        "environments": list,
        "can_edit": viewer.user.can(Capability::ManageProjects),
        "add": {
            "form": { "required_approvals": 1, "allow_self_approval": true,
                      "lock_timeout_ms": 5000, "statement_timeout_ms": 600000 },
            "errors": {},
        },
        "edit": { "name": null, "form": {}, "errors": {} },
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
    })
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
