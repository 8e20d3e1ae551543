//! The page templates (`templates/`, embedded at build time, HTML
//! autoescaped) and the error page every layer may answer with.

use axum::{
    http::StatusCode,
    response::{Html, IntoResponse, Response},
};
use minijinja::Environment;
use serde_json::json;

/// All templates, loaded once at start.
pub fn templates() -> Environment<'static> {
    let mut env = Environment::new();
    minijinja_embed::load_templates!(&mut env);
    // `{{ t | ago }}`: a `<time>` element, relative, the exact UTC time on
    // hover; `{{ ms | duration }}`: "1.2 s", "3 min 4 s".
    env.add_filter("ago", |value: String| {
        minijinja::Value::from_safe_string(crate::human::time_element(
            &value,
            time::OffsetDateTime::now_utc(),
        ))
    });
    env.add_filter("duration", |ms: i64| crate::human::duration(ms));
    // `{% for l in diff.unified | diff_lines %}`: each line of a unified
    // diff with its class (`add`, `del`, `hunk`, `same`).
    env.add_filter("diff_lines", |unified: String| {
        unified
            .lines()
            .map(|line| {
                let class = match line.as_bytes().first() {
                    Some(b'+') if !line.starts_with("+++") => "add",
                    Some(b'-') if !line.starts_with("---") => "del",
                    Some(b'@') => "hunk",
                    _ => "same",
                };
                (class, line.to_owned())
            })
            .collect::<Vec<_>>()
    });
    env
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
