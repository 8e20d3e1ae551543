//! CSRF protection for browser sessions.
//!
//! Every unsafe request made with the session cookie must carry the token
//! bound to that session, in the `X-CSRF-Token` header or the `csrf_token`
//! form field. Requests with an API token carry no ambient credential and
//! need none. The check is a layer over the whole router, so no route can
//! opt out by accident.

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use common::store::audit::{self, Actor, Entry};
use rand::RngCore;
use serde::Deserialize;
use serde_json::json;
use tower_sessions::Session;

use super::{oidc::constant_time_eq, session_store::USER_ID_KEY};
use crate::{error::ApiError, state::AppState};

pub const SESSION_KEY: &str = "csrf";
pub const HEADER: &str = "x-csrf-token";
pub const FORM_FIELD: &str = "csrf_token";

/// A fresh random token for a new session.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.len() > 7
                && v.get(..7)
                    .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
        })
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

#[derive(Deserialize)]
struct TokenField {
    csrf_token: Option<String>,
}

/// Largest form body the guard buffers to find the token.
const MAX_FORM_BYTES: usize = 4 * 1024 * 1024;

pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_safe(req.method()) || has_bearer(req.headers()) {
        return next.run(req).await;
    }
    let Some(session) = req.extensions().get::<Session>().cloned() else {
        return next.run(req).await;
    };
    let Some(user_id) = session.get::<String>(USER_ID_KEY).await.ok().flatten() else {
        // Not signed in: the route itself answers 401.
        return next.run(req).await;
    };
    let expected: Option<String> = session.get(SESSION_KEY).await.ok().flatten();

    let (parts, body) = req.into_parts();
    let from_header = parts
        .headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (presented, body) = match from_header {
        Some(token) => (Some(token), body),
        None if is_form(&parts.headers) => match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
            Ok(bytes) => {
                let field = serde_urlencoded::from_bytes::<TokenField>(&bytes)
                    .ok()
                    .and_then(|f| f.csrf_token);
                (field, Body::from(bytes))
            }
            Err(_) => return ApiError::TooLarge("form body is too large".into()).into_response(),
        },
        None => (None, body),
    };
    let valid = matches!((&expected, &presented), (Some(e), Some(p)) if constant_time_eq(e.as_bytes(), p.as_bytes()));
    if valid {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let reason = if presented.is_none() {
        "csrf_missing"
    } else {
        "csrf_mismatch"
    };
    if let Err(err) =
        record_refusal(&state, &user_id, &parts.method, parts.uri.path(), reason).await
    {
        return err.into_response();
    }
    let error = ApiError::ForbiddenCode {
        code: "csrf_failed",
        message:
            "the request did not carry this session's CSRF token; reload the page and try again"
                .into(),
    };
    if parts.uri.path().starts_with("/api/") {
        error.into_response()
    } else {
        let message = error.to_string();
        crate::templates::error_page(
            Some(&state.templates),
            error.status(),
            Some(error.code()),
            Some(&message),
        )
    }
}

async fn record_refusal(
    state: &AppState,
    user_id: &str,
    method: &Method,
    path: &str,
    reason: &str,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let actor = match user_id.parse().ok() {
        Some(id) => match common::store::users::get(&mut tx, id).await? {
            Some(u) => Actor::User {
                id: u.id,
                email: u.email,
            },
            None => Actor::system("anonymous"),
        },
        None => Actor::system("anonymous"),
    };
    audit::append(
        &mut tx,
        &Entry::new(actor, "access.denied", "route", format!("{method} {path}"))
            .details(json!({ "reason": reason })),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
