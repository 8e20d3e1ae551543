//! The OpenAPI document, generated from the code: paths, parameters,
//! request bodies and responses come from each handler's
//! `#[utoipa::path]` annotation and the `ToSchema` types it names; who may
//! call a route comes from the route table (`routes.rs`), which also adds
//! the errors every route of its kind can answer (401/403 from the access
//! check, 400/413/422 from reading a JSON body, 422 for a query or path
//! parameter the edge refuses, 404 for a malformed path parameter, 500).
//! Tests check that the document lists exactly the router's routes and that
//! responses match their schemas.

use std::sync::OnceLock;

use axum::{Json, http::Method};
use common::domain::Role;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::{
    audit, db_sets, environments, health, inventory, lint, me, migrations, projects, runs, targets,
    users, webhooks,
};
use crate::routes::{Access, RouteInfo};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "migrate-hub API",
        description = "Change the schemas of PostgreSQL and MySQL/MariaDB databases through reviewed, approved runs. \
Errors are `{\"error\": {\"code\", \"message\"}}` with a stable snake_case code. \
`x-required-role` names the lowest role that may call an operation. Conventions and examples: docs/API.md.",
    ),
    paths(
        health::healthz,
        health::readyz,
        crate::metrics::scrape,
        serve,
        me::me,
        me::list_tokens,
        me::create_token,
        me::revoke_token,
        users::list,
        users::create,
        users::update,
        users::list_tokens,
        users::revoke_token,
        inventory::list_environments,
        environments::create,
        environments::update,
        inventory::list_projects,
        inventory::post_project,
        inventory::get_project,
        projects::update,
        projects::archive,
        inventory::list_db_sets,
        inventory::post_db_set,
        inventory::get_db_set,
        db_sets::update,
        db_sets::delete,
        db_sets::schema,
        inventory::list_targets,
        inventory::create_target,
        targets::bulk::create,
        inventory::get_target,
        targets::update,
        targets::delete,
        targets::live::test,
        targets::live::state,
        targets::snapshots::list,
        targets::snapshots::schema,
        targets::snapshots::diff,
        targets::drift::show,
        targets::drift::accept,
        targets::resolve::resolve,
        targets::baseline::record,
        targets::baseline::preview,
        migrations::list,
        migrations::create,
        migrations::import,
        migrations::get_one,
        migrations::edit,
        migrations::revisions,
        migrations::schema,
        runs::list,
        runs::request,
        runs::get_one,
        runs::events,
        runs::targets,
        runs::target_schema,
        runs::approve,
        runs::deny,
        runs::waive,
        runs::execute,
        runs::cancel,
        lint::review,
        audit::list,
        audit::verify,
        audit::export_csv,
        webhooks::list,
        webhooks::create,
        webhooks::remove,
        webhooks::deliveries,
        inventory::list_workers,
    ),
    components(schemas(crate::error::ErrorBody))
)]
struct ApiDoc;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } },
    })
}

/// Adds an error answer to an operation, or widens the description of the
/// one it declares for that status.
fn add_error(op: &mut Map<String, Value>, status: &str, description: &str) {
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    match responses.get_mut(status) {
        Some(existing) => {
            let text = existing["description"].as_str().unwrap_or_default();
            if !text.contains(description) {
                existing["description"] = json!(format!("{text}; {description}"));
            }
        }
        None => {
            responses.insert(status.to_owned(), error_response(description));
        }
    }
}

fn has_parameter(op: &Map<String, Value>, location: &str) -> bool {
    op.get("parameters")
        .and_then(Value::as_array)
        .is_some_and(|ps| ps.iter().any(|p| p["in"] == location))
}

/// Applies a route's access rule, and the errors that every route of its
/// kind can answer, to its operation.
fn apply_route(op: &mut Map<String, Value>, route: &RouteInfo) {
    let unsafe_method = !matches!(route.method, Method::GET | Method::HEAD | Method::OPTIONS);
    match route.access {
        Access::Public => {
            op.insert("security".into(), json!([]));
        }
        Access::Needs(capability) => {
            let role = capability.minimum_role();
            op.insert("x-required-role".into(), json!(role));
            op.insert("x-capability".into(), json!(format!("{capability:?}")));
            add_error(
                op,
                "401",
                "`unauthenticated`: no credential, or an unknown, expired or revoked token, or a disabled user",
            );
            add_error(
                op,
                "429",
                "`rate_limited`: the token's request budget (`MH_API_RATE_LIMIT`) or the address's refused-token budget (`MH_AUTH_FAILURE_LIMIT`) is used up; `Retry-After` says when to try again",
            );
            if role > Role::User {
                add_error(
                    op,
                    "403",
                    &format!("`forbidden`: the caller's role is below {role}"),
                );
            }
            if unsafe_method {
                add_error(
                    op,
                    "403",
                    "`csrf_failed`: a session request without the session's X-CSRF-Token",
                );
            }
        }
    }
    if op.contains_key("requestBody") {
        add_error(
            op,
            "400",
            "`bad_request`: the body is not JSON or not sent as application/json",
        );
        add_error(op, "413", "`payload_too_large`: the body is over the limit");
        add_error(
            op,
            "422",
            "`invalid_field`: a field of the wrong type, or a required field missing",
        );
    }
    if has_parameter(op, "query") {
        add_error(
            op,
            "400",
            "`bad_request`: a malformed query string or cursor",
        );
        add_error(
            op,
            "422",
            "`invalid_field`: a query parameter of the wrong type or out of range, or holding a control character",
        );
    }
    if has_parameter(op, "path") {
        add_error(op, "404", "`not_found`: a malformed path parameter");
        add_error(
            op,
            "422",
            "`invalid_field`: a path parameter holding a control character",
        );
    }
    if route.path.starts_with("/api/") && route.path != "/api/v1/openapi.json"
        || route.path == "/metrics"
    {
        add_error(
            op,
            "500",
            "`internal`: an unexpected failure (logged; the message is generic)",
        );
    }
}

/// Operation ids are the handlers' names; a name that several modules use
/// (`list`, `update`) is prefixed with the operation's tag (`users_list`).
fn unique_operation_ids(doc: &mut Value) {
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    for item in paths.values() {
        for method in METHODS {
            if let Some(id) = item[method]["operationId"].as_str() {
                *seen.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    for item in paths.values_mut() {
        for method in METHODS {
            let Some(op) = item.get_mut(method) else {
                continue;
            };
            let id = op["operationId"].as_str().unwrap_or_default().to_owned();
            if seen.get(&id).is_some_and(|n| *n > 1) {
                let tag = op["tags"][0].as_str().unwrap_or("api").replace('-', "_");
                op["operationId"] = json!(format!("{tag}_{id}"));
            }
        }
    }
}

/// The document for `routes`: the annotated paths, with each route's
/// access rule applied. Routes outside the API (pages, sign-in, static
/// files) are not in it.
pub fn document_for(routes: &[RouteInfo]) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    if let Some(paths) = doc["paths"].as_object_mut() {
        for route in routes {
            let method = route.method.as_str().to_lowercase();
            if let Some(op) = paths
                .get_mut(&route.path)
                .and_then(|item| item.get_mut(&method))
                .and_then(Value::as_object_mut)
            {
                apply_route(op, route);
            }
        }
    }
    unique_operation_ids(&mut doc);
    doc["security"] = json!([{ "bearer": [] }, { "session": [] }]);
    doc["components"]["securitySchemes"] = json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (`mh_` and 64 hex digits), acting with the lower of its own role and its owner's.",
        },
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": "mh_session",
            "description": "The browser session set by signing in; unsafe methods also need the session's X-CSRF-Token header.",
        },
    });
    doc
}

/// The document for the app's routes.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| document_for(&super::router().into_parts().1))
}

/// `GET /api/v1/openapi.json`.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "health",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object)))]
pub async fn serve() -> Json<Value> {
    Json(document().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules_come_from_the_route_table() {
        let doc = document();
        let approve = &doc["paths"]["/api/v1/runs/{id}/approve"]["post"];
        assert_eq!(approve["x-required-role"], "manager");
        assert_eq!(approve["parameters"][0]["name"], "id");
        assert!(approve["responses"]["401"].is_object());
        assert!(
            approve["responses"]["403"]["description"]
                .as_str()
                .unwrap()
                .contains("separation_of_duties")
        );
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
        // Every signed-in role may read: no 403 for a plain read.
        assert!(doc["paths"]["/api/v1/me"]["get"]["responses"]["403"].is_null());
        assert!(doc["paths"]["/api/v1/openapi.json"]["get"].is_object());
    }
}
