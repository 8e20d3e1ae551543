//! The inventory forms of the projects pages: creating, editing and
//! archiving projects (admin); creating, renaming and deleting DB sets and
//! adding and removing webhooks (manager+). Each form calls the service
//! function its JSON API route uses, so both enforce the same rules and
//! write the same audit rows. A refused input re-renders the page with what
//! was typed and the field's error, with status 422.

use std::collections::HashMap;

use axum::{
    extract::State,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use common::{domain::Capability, store::webhooks};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Viewer, pages, projects::project_context, render, see_other};
use crate::{
    auth::rules,
    error::{ApiError, ApiForm, ApiPath},
    routes::{Access, Routes},
    service::{
        db_sets::{UpdateDbSet, delete_db_set, update_db_set},
        inventory::{CreateDbSet, CreateProject, create_db_set, create_project},
        projects::{UpdateProject, archive_project, update_project},
        webhooks::{CreateWebhook, create_webhook, remove_webhook},
    },
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .post(
            "/projects",
            Access::Needs(Capability::ManageProjects),
            create_project_form,
        )
        .post(
            "/projects/{slug}/edit",
            Access::Needs(Capability::ManageProjects),
            edit_project_form,
        )
        .post(
            "/projects/{slug}/archive",
            Access::Needs(Capability::ManageProjects),
            archive_project_form,
        )
        .post(
            "/projects/{slug}/db-sets",
            Access::Needs(Capability::ManageTargets),
            create_db_set_form,
        )
        .post(
            "/projects/{slug}/db-sets/{id}/rename",
            Access::Needs(Capability::ManageTargets),
            rename_db_set_form,
        )
        .post(
            "/projects/{slug}/db-sets/{id}/delete",
            Access::Needs(Capability::ManageTargets),
            delete_db_set_form,
        )
        .post(
            "/projects/{slug}/webhooks",
            Access::Needs(Capability::ManageTargets),
            create_webhook_form,
        )
        .post(
            "/projects/{slug}/webhooks/{id}/delete",
            Access::Needs(Capability::ManageTargets),
            remove_webhook_form,
        )
}

/// A submitted HTML form: one value per field name.
pub(super) type FormData = HashMap<String, String>;

/// The field's value, or empty when the form did not send it.
pub(super) fn text(form: &FormData, key: &str) -> String {
    form.get(key).cloned().unwrap_or_default()
}

/// A form's field errors, from a service error: a 422 names its field, a
/// duplicate slug or name belongs to that field. Any other error
/// propagates (and becomes an error page).
pub(super) fn field_errors(err: ApiError) -> Result<Value, ApiError> {
    match err {
        ApiError::Invalid { field, message } => Ok(json!({ field: message })),
        ApiError::Conflict {
            code: "duplicate_slug",
            message,
        } => Ok(json!({ "slug": message })),
        ApiError::Conflict {
            code: "duplicate_name",
            message,
        } => Ok(json!({ "name": message })),
        other => Err(other),
    }
}

pub(super) fn unprocessable(page: Html<String>) -> Response {
    let mut response = page.into_response();
    *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    response
}

/// The project page again, with one inventory form's input and errors.
async fn project_page_with(
    state: &AppState,
    viewer: &Viewer,
    slug: &str,
    which: &str,
    form: Value,
    errors: Value,
) -> Result<Response, ApiError> {
    let mut context = project_context(state, slug, viewer).await?;
    context["inventory"]["forms"][which] = form;
    context["inventory"]["errors"][which] = errors;
    let page = render(state, "projects/detail.html", context, Some(viewer))?;
    Ok(unprocessable(page))
}

async fn create_project_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageProjects>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let body = CreateProject {
        slug: text(&form, "slug").trim().to_owned(),
        name: text(&form, "name"),
        description: text(&form, "description"),
    };
    match create_project(&state, &viewer.user, &body).await {
        Ok(project) => Ok(see_other(&format!("/projects/{}", project.slug))),
        Err(err) => {
            let errors = field_errors(err)?;
            let page =
                pages::projects_page(&state, &viewer.plain(), None, json!(form), errors).await?;
            Ok(unprocessable(page))
        }
    }
}

async fn edit_project_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageProjects>,
    ApiPath(slug): ApiPath<String>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let body = UpdateProject {
        name: Some(text(&form, "name")),
        description: Some(text(&form, "description")),
    };
    match update_project(&state, &viewer.user, &slug, &body).await {
        Ok(project) => Ok(see_other(&format!("/projects/{}", project.slug))),
        Err(err) => {
            let errors = field_errors(err)?;
            project_page_with(
                &state,
                &viewer.plain(),
                &slug,
                "project",
                json!(form),
                errors,
            )
            .await
        }
    }
}

async fn archive_project_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageProjects>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Response, ApiError> {
    archive_project(&state, &viewer.user, &slug).await?;
    Ok(see_other("/projects"))
}

async fn create_db_set_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath(slug): ApiPath<String>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let body = CreateDbSet {
        name: text(&form, "name"),
        environment: text(&form, "environment"),
    };
    match create_db_set(&state, &viewer.user, &slug, &body).await {
        Ok(set) => Ok(see_other(&format!("/projects/{slug}/db-sets/{}", set.id))),
        Err(err) => {
            let errors = field_errors(err)?;
            project_page_with(
                &state,
                &viewer.plain(),
                &slug,
                "db_set",
                json!(form),
                errors,
            )
            .await
        }
    }
}

async fn rename_db_set_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    let body = UpdateDbSet {
        name: Some(text(&form, "name")),
        ..Default::default()
    };
    match update_db_set(&state, &viewer.user, &slug, id, &body).await {
        Ok(_) => Ok(see_other(&format!("/projects/{slug}"))),
        Err(err) => {
            let errors = field_errors(err)?;
            let kept = json!({ "id": id, "name": text(&form, "name") });
            project_page_with(&state, &viewer.plain(), &slug, "rename", kept, errors).await
        }
    }
}

async fn delete_db_set_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<Response, ApiError> {
    delete_db_set(&state, &viewer.user, &slug, id).await?;
    Ok(see_other(&format!("/projects/{slug}")))
}

async fn create_webhook_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath(slug): ApiPath<String>,
    ApiForm(form): ApiForm<FormData>,
) -> Result<Response, ApiError> {
    // One checkbox per event, named `event_<event>`.
    let events: Vec<String> = webhooks::EVENTS
        .iter()
        .filter(|e| form.contains_key(&format!("event_{e}")))
        .map(|e| e.to_string())
        .collect();
    let body = CreateWebhook {
        url: text(&form, "url"),
        events: Some(events.clone()),
    };
    match create_webhook(&state, &viewer.user, &slug, &body).await {
        Ok(_) => Ok(see_other(&format!("/projects/{slug}#webhooks"))),
        Err(err) => {
            let errors = field_errors(err)?;
            let kept = json!({ "url": body.url, "events": events });
            project_page_with(&state, &viewer.plain(), &slug, "webhook", kept, errors).await
        }
    }
}

async fn remove_webhook_form(
    State(state): State<AppState>,
    viewer: Viewer<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<Response, ApiError> {
    remove_webhook(&state, &viewer.user, &slug, id).await?;
    Ok(see_other(&format!("/projects/{slug}#webhooks")))
}
