//! Errors that no handler wrote — an unknown route (404), a method the route
//! does not take (405), the request timeout (408), an over-long URI (414),
//! a framework rejection in plain text — get the body every other error
//! has: the `{"error": {"code", "message"}}` envelope on machine paths, the
//! error page on browser paths. Installed inside the security-header
//! layers, so these answers carry the headers too.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use minijinja::Environment;

use crate::error::{ErrorBody, ErrorDetail};

/// The longest URI (path and query) the app reads. Browsers and proxies
/// keep well below it; longer ones are refused with 414 before routing.
/// (hyper itself refuses URIs over 64 KiB before the app sees them; the
/// listener gives that refusal the same body.)
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// Paths answered in JSON; the rest are pages for people.
pub fn is_machine_path(path: &str) -> bool {
    path.starts_with("/api/") || matches!(path, "/api" | "/healthz" | "/readyz" | "/metrics")
}

/// A refusal made before routing (by the HTTP server, see
/// [`crate::listener`]) to be rendered like every other error. Only the
/// server sets it: no client can put an extension on a request.
#[derive(Debug, Clone)]
pub struct EdgeRefusal {
    pub status: StatusCode,
    pub message: String,
}

pub async fn complete(
    State(templates): State<Arc<Environment<'static>>>,
    req: Request,
    next: Next,
) -> Response {
    let machine = is_machine_path(req.uri().path());
    if let Some(refusal) = req.extensions().get::<EdgeRefusal>() {
        return render(&templates, machine, refusal.status, &refusal.message);
    }
    let method = req.method().clone();
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        let message = format!("the URI is longer than {MAX_URI_BYTES} bytes");
        return render(&templates, machine, StatusCode::URI_TOO_LONG, &message);
    }
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || has_body_format(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    // A framework rejection says what went wrong in plain text; keep that.
    let text = axum::body::to_bytes(body, 4 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if !text.is_empty() && !status.is_server_error() {
        text
    } else {
        default_message(status, &method)
    };
    let mut completed = render(&templates, machine, status, &message);
    // `Allow` of a 405 and the like stay; the body's own headers are new.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            completed.headers_mut().insert(name.clone(), value.clone());
        }
    }
    completed
}

fn has_body_format(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .is_some_and(|v| v.starts_with(b"application/json") || v.starts_with(b"text/html"))
}

fn render(
    templates: &Environment<'static>,
    machine: bool,
    status: StatusCode,
    message: &str,
) -> Response {
    let code = code_for(status);
    if machine {
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: message.to_owned(),
                field: None,
            },
        };
        (status, Json(body)).into_response()
    } else {
        crate::templates::error_page(Some(templates), status, Some(&code), Some(message))
    }
}

/// The stable code of an answer no handler wrote.
fn code_for(status: StatusCode) -> String {
    match status {
        StatusCode::BAD_REQUEST => "bad_request".into(),
        StatusCode::NOT_FOUND => "not_found".into(),
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed".into(),
        StatusCode::REQUEST_TIMEOUT => "request_timeout".into(),
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large".into(),
        StatusCode::URI_TOO_LONG => "uri_too_long".into(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type".into(),
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_field".into(),
        s if s.is_server_error() => "internal".into(),
        s => s
            .canonical_reason()
            .unwrap_or("error")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect(),
    }
}

fn default_message(status: StatusCode, method: &Method) -> String {
    match status {
        StatusCode::NOT_FOUND => "no such page or API route".into(),
        StatusCode::METHOD_NOT_ALLOWED => format!("this route does not take {method}"),
        StatusCode::REQUEST_TIMEOUT => "the request took too long and was stopped".into(),
        StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".into(),
        s if s.is_server_error() => "internal error".into(),
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case() {
        assert_eq!(
            code_for(StatusCode::METHOD_NOT_ALLOWED),
            "method_not_allowed"
        );
        assert_eq!(code_for(StatusCode::URI_TOO_LONG), "uri_too_long");
        assert_eq!(code_for(StatusCode::IM_A_TEAPOT), "i_m_a_teapot");
        assert_eq!(code_for(StatusCode::BAD_GATEWAY), "internal");
    }

    #[test]
    fn machine_paths_answer_json() {
        assert!(is_machine_path("/api/v1/nope"));
        assert!(is_machine_path("/healthz"));
        assert!(!is_machine_path("/projects/x"));
        assert!(!is_machine_path("/apiary"));
    }
}
