//! The server-rendered UI: one module per page group, templates from
//! `templates/` (embedded at build time, HTML autoescaped).

use std::marker::PhantomData;

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware::Next,
    response::{Html, IntoResponse, Response},
};
use serde_json::Value;
use tower_sessions::Session;

pub mod admin;
pub mod auth;
pub mod diff;
pub mod environments;
pub mod inventory;
pub mod pages;
pub mod projects;
mod return_to;
pub mod runs;
pub mod targets;

pub use return_to::safe_return_to;

use crate::{
    auth::{Authorized, csrf, extract::Rule, rules},
    error::ApiError,
    routes::{Access, Routes},
    state::AppState,
    templates::error_page,
};

pub fn router() -> Routes {
    Routes::new()
        .merge(auth::router())
        .merge(pages::router())
        .merge(admin::router())
        .merge(projects::router())
        .merge(inventory::router())
        .merge(environments::router())
        .merge(targets::router())
        .merge(runs::router())
        .get("/static/app.css", Access::Public, stylesheet)
        .get("/static/app.js", Access::Public, script)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../templates/static/app.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../../templates/static/app.js"),
    )
}

/// Renders `name` with `context`; the layout gets the viewer and CSRF token.
pub fn render(
    state: &AppState,
    name: &str,
    context: Value,
    viewer: Option<&Viewer>,
) -> Result<Html<String>, ApiError> {
    render_value(
        state,
        name,
        minijinja::Value::from(minijinja::value::Serde(&context)),
        viewer,
    )
}

/// [`render`] with a template context built by the caller, which may hold
/// values (such as parts rendered before) that are shared, not copied.
pub fn render_value(
    state: &AppState,
    name: &str,
    context: minijinja::Value,
    viewer: Option<&Viewer>,
) -> Result<Html<String>, ApiError> {
    let context = match viewer {
        Some(v) => minijinja::context! {
            user => minijinja::context! {
                email => &v.user.email,
                name => &v.user.name,
                role => minijinja::Value::from(minijinja::value::Serde(&v.user.role)),
            },
            csrf => &v.csrf,
            ..context
        },
        None => context,
    };
    let template = state
        .templates
        .get_template(name)
        .map_err(|e| anyhow::anyhow!("template {name}: {e}"))?;
    let html = template
        .render(context)
        .map_err(|e| anyhow::anyhow!("rendering {name}: {e:#}"))?;
    Ok(Html(html))
}

/// The signed-in viewer of a page, holding capability `R`, with the
/// session's CSRF token for the page's forms.
pub struct Viewer<R: Rule = rules::View> {
    pub user: crate::auth::CurrentUser,
    pub csrf: String,
    _rule: PhantomData<R>,
}

impl<R: Rule> FromRequestParts<AppState> for Viewer<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = Authorized::<R>::from_request_parts(parts, state).await?.0;
        let session = parts.extensions.get::<Session>().cloned();
        let csrf = match session {
            Some(s) => s
                .get::<String>(csrf::SESSION_KEY)
                .await
                .ok()
                .flatten()
                .unwrap_or_default(),
            None => String::new(),
        };
        Ok(Viewer {
            user,
            csrf,
            _rule: PhantomData,
        })
    }
}

impl<R: Rule> Viewer<R> {
    /// The same viewer, as seen by the layout (rule erased).
    pub fn plain(&self) -> Viewer {
        Viewer {
            user: self.user.clone(),
            csrf: self.csrf.clone(),
            _rule: PhantomData,
        }
    }
}

/// Turns the API's JSON errors into pages on UI routes: 401 sends the browser
/// to the sign-in page, other errors render a page that says what happened.
pub async fn errors_as_pages(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return response;
    }
    if status == StatusCode::UNAUTHORIZED {
        let target = format!("/signin?return_to={}", urlencode(&path_and_query));
        return see_other(&target);
    }
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut page = error_page(
        Some(&state.templates),
        status,
        body["error"]["code"].as_str(),
        body["error"]["message"].as_str(),
    );
    if let Some(retry_after) = retry_after {
        page.headers_mut().insert(header::RETRY_AFTER, retry_after);
    }
    page
}

pub fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// A 303 to `location`: after a form post, and in the sign-in flow.
///
/// Locations are paths this app builds, but some carry input (a slug, a
/// `return_to`), so nothing here may panic: a location that is not plain
/// visible ASCII (a control character would let a header split or a browser
/// drop it and land elsewhere) is replaced by `/`.
pub fn see_other(location: &str) -> Response {
    let value = Some(location)
        .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_graphic()))
        .and_then(|l| HeaderValue::from_str(l).ok())
        .unwrap_or_else(|| {
            tracing::warn!(
                location = location.escape_debug().to_string(),
                "redirect location is not a valid header value; sending / instead"
            );
            HeaderValue::from_static("/")
        });
    (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(response: &Response) -> &str {
        response.headers()[header::LOCATION].to_str().unwrap()
    }

    #[test]
    fn see_other_keeps_plain_paths() {
        for path in [
            "/",
            "/runs/1",
            "/projects/shop#webhooks",
            "/signin?return_to=%2Ftokens",
        ] {
            let response = see_other(path);
            assert_eq!(response.status(), StatusCode::SEE_OTHER);
            assert_eq!(location(&response), path);
        }
    }

    /// Every control character, space, DEL and non-ASCII text, anywhere in
    /// the location: no panic, and the browser is sent home instead.
    #[test]
    fn see_other_never_panics_on_what_cannot_be_a_header() {
        let odd = (0u32..0x20)
            .chain([0x20, 0x7f, 0x85, 0xa0, 0xe9, 0x2028, 0xfeff])
            .filter_map(char::from_u32);
        for c in odd {
            for built in [
                format!("/{c}/evil.test/"),
                format!("{c}"),
                format!("/runs/1{c}"),
                format!("/projects/{c}shop?x={c}#{c}"),
            ] {
                let response = see_other(&built);
                assert_eq!(response.status(), StatusCode::SEE_OTHER, "{built:?}");
                assert_eq!(location(&response), "/", "{built:?}");
            }
        }
        assert_eq!(location(&see_other("")), "/");
    }

    /// The sign-in flow's path: whatever `return_to` held, the redirect
    /// after sign-in is built without panicking and stays on this site.
    #[test]
    fn return_to_always_makes_a_redirect() {
        for raw in [
            "/%0A/evil.test",
            "/\n/evil.test",
            "/\t/evil.test/",
            "/café",
            "/ok?x=1#f",
        ] {
            let response = see_other(&safe_return_to(Some(raw)));
            let target = location(&response);
            assert!(
                target.starts_with('/') && !target.starts_with("//"),
                "{raw:?} → {target}"
            );
        }
    }

    #[test]
    fn every_template_parses() {
        let env = crate::templates::templates();
        for name in [
            "layout.html",
            "error.html",
            "dashboard.html",
            "auth/signin.html",
            "admin/users.html",
            "admin/workers.html",
            "tokens.html",
            "audit.html",
            "projects.html",
            "projects/detail.html",
            "admin/environments.html",
            "targets/db_set.html",
            "targets/state.html",
            "runs/schema.html",
            "targets/schema.html",
        ] {
            env.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
