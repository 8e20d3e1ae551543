//! The routes of `webhooks` over [`crate::service::webhooks`].

use axum::{Json, extract::State, http::StatusCode};
use common::{
    domain::Capability,
    store::webhooks::{self, WebhookRow},
};
use uuid::Uuid;

use crate::{
    auth::{Authorized, rules},
    error::{ApiError, ApiJson, ApiPath, ErrorBody},
    paging::Page,
    routes::{Access, Routes},
    service::{
        inventory::project,
        webhooks::{CreateWebhook, Delivery, create_webhook, remove_webhook},
    },
    state::AppState,
};

pub fn router() -> Routes {
    Routes::new()
        .get(
            "/projects/{slug}/webhooks",
            Access::Needs(Capability::ManageTargets),
            list,
        )
        .post(
            "/projects/{slug}/webhooks",
            Access::Needs(Capability::ManageTargets),
            create,
        )
        .delete(
            "/projects/{slug}/webhooks/{id}",
            Access::Needs(Capability::ManageTargets),
            remove,
        )
        .get(
            "/projects/{slug}/webhooks/{id}/deliveries",
            Access::Needs(Capability::ManageTargets),
            deliveries,
        )
}

#[utoipa::path(post, path = "/api/v1/projects/{slug}/webhooks", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug")),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "The webhook; its URL only as a hint", body = WebhookRow),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
        (status = 422, description = "`invalid_field`: `url` or `events`", body = ErrorBody),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath(slug): ApiPath<String>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, Json<webhooks::WebhookRow>), ApiError> {
    let hook = create_webhook(&state, &user, &slug, &body).await?;
    Ok((StatusCode::CREATED, Json(hook)))
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/webhooks", tag = "webhooks",
    params(("slug" = String, Path, description = "The project's slug")),
    responses(
        (status = 200, description = "The project's webhooks, whole", body = Page<WebhookRow>),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    _user: Authorized<rules::ManageTargets>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<Page<WebhookRow>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    Ok(Json(Page::all(
        webhooks::list(&state.db, project.id).await?,
    )))
}

#[utoipa::path(delete, path = "/api/v1/projects/{slug}/webhooks/{id}", tag = "webhooks",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The webhook's id"),
    ),
    responses(
        (status = 204, description = "Deactivated; its pending deliveries are dropped"),
        (status = 404, description = "`not_found`: no such project or webhook", body = ErrorBody),
    ))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    user: Authorized<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<StatusCode, ApiError> {
    remove_webhook(&state, &user, &slug, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/projects/{slug}/webhooks/{id}/deliveries", tag = "webhooks",
    params(
        ("slug" = String, Path, description = "The project's slug"),
        ("id" = Uuid, Path, description = "The webhook's id"),
    ),
    responses(
        (status = 200, description = "The webhook's last 100 deliveries, newest first", body = Page<Delivery>),
        (status = 404, description = "`not_found`: no such project", body = ErrorBody),
    ))]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    _user: Authorized<rules::ManageTargets>,
    ApiPath((slug, id)): ApiPath<(String, Uuid)>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let project = project(&mut conn, &slug).await?;
    let rows = webhooks::deliveries(&mut conn, id, project.id).await?;
    let items = rows
        .into_iter()
        .map(
            |(id, event, state, attempts, last_status, last_error)| Delivery {
                id,
                event,
                state,
                attempts,
                last_status,
                last_error,
            },
        )
        .collect();
    Ok(Json(Page::all(items)))
}
