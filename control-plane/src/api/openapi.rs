//! The OpenAPI document, generated from the route table so that it lists
//! exactly the routes the server has, with their access rules.

use axum::Json;
use serde_json::{Map, Value, json};

use crate::routes::{Access, RouteInfo};

/// Path parameters named in a route template, in order.
fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let schema = if name == "id" {
                json!({"type": "string", "format": "uuid"})
            } else {
                json!({"type": "string"})
            };
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect()
}

pub fn document(routes: &[RouteInfo]) -> Value {
    let mut paths = Map::new();
    let error = json!({ "$ref": "#/components/responses/Error" });
    for route in routes.iter().filter(|r| {
        r.path.starts_with("/api/")
            || matches!(r.path.as_str(), "/healthz" | "/readyz" | "/metrics")
    }) {
        let mut op = Map::new();
        op.insert(
            "operationId".into(),
            json!(format!("{} {}", route.method, route.path)),
        );
        let params = parameters(&route.path);
        if !params.is_empty() {
            op.insert("parameters".into(), json!(params));
        }
        let mut responses = Map::new();
        responses.insert("2XX".into(), json!({ "description": "success" }));
        match route.access {
            Access::Public => {
                op.insert("security".into(), json!([]));
            }
            Access::Needs(capability) => {
                op.insert("x-required-role".into(), json!(capability.minimum_role()));
                responses.insert("401".into(), error.clone());
                responses.insert("403".into(), error.clone());
            }
        }
        for status in ["400", "404", "409", "413", "422"] {
            if route.method != axum::http::Method::GET || status == "404" {
                responses.insert(status.into(), error.clone());
            }
        }
        op.insert("responses".into(), Value::Object(responses));
        let entry = paths.entry(route.path.clone()).or_insert_with(|| json!({}));
        entry[route.method.as_str().to_lowercase()] = Value::Object(op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "migrate-hub API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Fields and examples are described in docs/API.md. Errors are {\"error\": {\"code\", \"message\"}}.",
        },
        "paths": paths,
        "security": [{ "bearer": [] }, { "session": [] }],
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "An API token (mh_…)." },
                "session": { "type": "apiKey", "in": "cookie", "name": "mh_session", "description": "Browser session; unsafe methods also need the X-CSRF-Token header." },
            },
            "responses": {
                "Error": {
                    "description": "An error with a stable code",
                    "content": { "application/json": { "schema": {
                        "type": "object",
                        "required": ["error"],
                        "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
                            "code": { "type": "string" }, "message": { "type": "string" }, "field": { "type": "string" }
                        }}}
                    }}}
                }
            }
        }
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document(&crate::app::route_table()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_api_route_with_its_parameters() {
        let doc = document(&crate::app::route_table());
        let approve = &doc["paths"]["/api/v1/runs/{id}/approve"]["post"];
        assert_eq!(approve["x-required-role"], "manager");
        assert_eq!(approve["parameters"][0]["name"], "id");
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        assert!(doc["paths"]["/api/v1/openapi.json"]["get"].is_object());
    }
}
