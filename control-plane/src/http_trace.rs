//! The span of each HTTP request: the root of its log lines (request id,
//! user id) and, when traces are exported, a server span named by the route
//! template that continues a caller's W3C `traceparent`.

use axum::{
    extract::{MatchedPath, Request},
    http::{Extensions, HeaderName},
    middleware::Next,
    response::Response,
};
use common::telemetry::{self, TraceContext};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's span; `user_id` is filled in once the caller is known, and
/// the exported name once the route is matched ([`name_by_route`]). The
/// method is recorded from the closed set of [`crate::metrics::method_label`]:
/// span names and attributes are grouped by, so they must not grow with
/// whatever a client sends.
pub fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "request",
        method = crate::metrics::method_label(req.method()),
        path = %req.uri().path(),
        request_id,
        user_id = tracing::field::Empty,
        otel.name = crate::metrics::method_label(req.method()),
        otel.kind = "server",
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let mut carrier = TraceContext::new();
    for name in ["traceparent", "tracestate"] {
        if let Some(value) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            carrier.insert(name.to_owned(), value.to_owned());
        }
    }
    telemetry::continue_trace(&span, &carrier);
    span
}

/// The request's span, kept in the request's extensions: layers in between
/// (the session layer) open spans of their own, so the current span inside a
/// handler is not necessarily the request's.
#[derive(Debug, Clone)]
pub struct RequestSpan(pub tracing::Span);

/// Keeps the current span (the request's, when layered right inside the
/// trace layer) in the request's extensions.
pub async fn keep_request_span(mut req: Request, next: Next) -> Response {
    req.extensions_mut()
        .insert(RequestSpan(tracing::Span::current()));
    next.run(req).await
}

/// The span of the request with these extensions (the current span if
/// none was kept).
pub fn of(extensions: &Extensions) -> tracing::Span {
    extensions
        .get::<RequestSpan>()
        .map(|s| s.0.clone())
        .unwrap_or_else(tracing::Span::current)
}

/// Names the request's span after its route template (`POST
/// /api/v1/runs/{id}/execute`), never the raw path or an invented method
/// (those are `other`, as in the metrics), and records the status.
pub async fn name_by_route(req: Request, next: Next) -> Response {
    let span = of(req.extensions());
    if let Some(route) = req.extensions().get::<MatchedPath>() {
        span.record("http.route", route.as_str());
        let method = crate::metrics::method_label(req.method());
        telemetry::rename(&span, format!("{method} {}", route.as_str()));
    }
    let response = next.run(req).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}
