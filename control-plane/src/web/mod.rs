//! The server-rendered UI: one module per page group, templates from
//! `templates/` (embedded at build time, HTML autoescaped).

use std::marker::PhantomData;

use axum::{
    body::Body,
    extract::{FromRequestParts, Request, State},
    http::{StatusCode, header, request::Parts},
    middleware::Next,
    response::{Html, IntoResponse, Redirect, Response},
};
use minijinja::Environment;
use serde_json::{Value, json};
use tower_sessions::Session;

use crate::{
    app::AppState,
    auth::{Authorized, csrf, extract::Rule, rules},
    error::ApiError,
    routes::{Access, Routes},
};

pub mod admin;
pub mod auth;
pub mod diff;
pub mod environments;
pub mod inventory;
pub mod pages;
pub mod projects;
pub mod runs;
pub mod targets;

/// All templates, loaded once at start.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    minijinja_embed::load_templates!(&mut env);
    env
}

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
        return Redirect::to(&target).into_response();
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

/// A full error page (no navigation: the viewer may not be known here).
pub fn error_page(
    templates: Option<&Environment<'static>>,
    status: StatusCode,
    code: Option<&str>,
    message: Option<&str>,
) -> Response {
    let heading = match status {
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Not possible right now",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        s if s.is_server_error() => "Something went wrong",
        _ => "Please check your input",
    };
    let html = templates
        .and_then(|t| t.get_template("error.html").ok())
        .and_then(|t| {
            t.render(minijinja::Value::from(minijinja::value::Serde(json!({
                "heading": heading,
                "message": message.unwrap_or("The request could not be completed."),
                "status": status.as_u16(),
                "code": code,
            }))))
            .ok()
        })
        .unwrap_or_else(|| format!("<h1>{}</h1>", status.as_u16()));
    let mut response = Html(html).into_response();
    *response.status_mut() = status;
    response
}

pub fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// A local path to return to after sign-in; anything else becomes `/`, so the
/// sign-in flow cannot be used to redirect to another site.
pub fn safe_return_to(raw: Option<&str>) -> String {
    match raw {
        Some(p)
            if p.starts_with('/')
                && !p.starts_with("//")
                && !p.contains('\\')
                && !p.starts_with("/auth/") =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Empty body helper for redirects that must not be cached.
pub fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .body(Body::empty())
        .expect("static response is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_stays_on_this_site() {
        assert_eq!(safe_return_to(Some("/runs/1")), "/runs/1");
        for bad in [
            "//evil.test/",
            "https://evil.test/",
            "/\\evil",
            "evil",
            "/auth/login",
        ] {
            assert_eq!(safe_return_to(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn every_template_parses() {
        let env = templates();
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
        ] {
            env.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
