//! The OpenAPI document: it lists exactly the router's API routes, is a
//! structurally valid OpenAPI 3.1 document whose references all resolve,
//! is what `/api/v1/openapi.json` serves, and the schema check the other
//! API tests run catches drift.

use std::collections::BTreeSet;

use crate::support::{
    self, TestApp,
    openapi::{check, compile, document, errors},
};
use control_plane::{
    app::route_table,
    routes::{Access, RouteInfo},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Routes the document describes: the JSON API and the operational endpoints.
fn documented(route: &RouteInfo) -> bool {
    route.path.starts_with("/api/")
        || matches!(route.path.as_str(), "/healthz" | "/readyz" | "/metrics")
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if let Some(op) = item.get(method) {
                ops.push((method.to_owned(), path.clone(), op));
            }
        }
    }
    ops
}

#[test]
fn lists_exactly_the_routes_of_the_router() {
    let doc = document();
    let table = route_table();
    let routes: BTreeSet<(String, String)> = table
        .iter()
        .filter(|r| documented(r))
        .map(|r| (r.method.as_str().to_lowercase(), r.path.clone()))
        .collect();
    assert!(
        routes.len() > 50,
        "the API has its routes ({})",
        routes.len()
    );
    let documented_ops: BTreeSet<(String, String)> = operations(doc)
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect();
    let missing: Vec<_> = routes.difference(&documented_ops).collect();
    let extra: Vec<_> = documented_ops.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes without an operation in the document: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "operations the router does not have: {extra:?}"
    );
    // And no page of the web UI leaks into it.
    assert!(doc["paths"].get("/signin").is_none());
}

#[test]
fn carries_each_routes_access_rule() {
    let doc = document();
    for route in route_table().iter().filter(|r| documented(r)) {
        let op = &doc["paths"][&route.path][route.method.as_str().to_lowercase()];
        let what = format!("{} {}", route.method, route.path);
        match route.access {
            Access::Public => {
                assert_eq!(op["security"], json!([]), "{what} is public");
                assert!(op.get("x-required-role").is_none(), "{what}");
            }
            Access::Needs(capability) => {
                assert_eq!(
                    op["x-required-role"],
                    json!(capability.minimum_role()),
                    "{what}"
                );
                assert_eq!(
                    op["x-capability"],
                    json!(format!("{capability:?}")),
                    "{what}"
                );
                assert!(
                    op.get("security").is_none(),
                    "{what} takes the default credentials"
                );
                assert!(op["responses"]["401"].is_object(), "{what} declares 401");
            }
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["session"]["name"], "mh_session");
    assert_eq!(doc["security"], json!([{"bearer": []}, {"session": []}]));
}

/// Follows a local JSON pointer (`#/components/schemas/X`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[test]
fn is_a_valid_openapi_31_document() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    // It reads back as an OpenAPI document, losing nothing.
    let parsed: utoipa::openapi::OpenApi =
        serde_json::from_value(doc.clone()).expect("the document deserializes as OpenAPI");
    assert_eq!(&serde_json::to_value(&parsed).unwrap(), doc);

    // Every reference resolves.
    let mut refs = Vec::new();
    collect_refs(doc, &mut refs);
    assert!(
        refs.len() > 100,
        "schemas are shared by reference ({})",
        refs.len()
    );
    for r in &refs {
        assert!(r.starts_with("#/components/"), "{r} is local");
        assert!(resolve(doc, r).is_some(), "{r} does not resolve");
    }

    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(doc) {
        let what = format!("{method} {path}");
        if let Some(id) = op["operationId"].as_str() {
            assert!(
                ids.insert(id.to_owned()),
                "{what}: operationId {id} is not unique"
            );
        }
        // Path parameters are exactly the template's.
        let in_template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .inspect(|p| assert_eq!(p["required"], true, "{what}: {p}"))
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(in_template, declared, "{what}: path parameters");

        // A success answer, and every answer described and its schema sound.
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what} declares no success"
        );
        for (status, response) in responses {
            assert!(
                status.len() == 3 && status.parse::<u16>().is_ok(),
                "{what}: {status}"
            );
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{what} {status}"
            );
            if let Some(schema) = response.pointer("/content/application~1json/schema") {
                compile(schema);
                // Errors use the one envelope (a refused import may add its
                // report; an unready instance says what is not ready).
                if status.starts_with('4') || status.starts_with('5') {
                    let name = schema["$ref"].as_str().unwrap_or_default();
                    assert!(
                        name == "#/components/schemas/ErrorBody"
                            || (name == "#/components/schemas/ImportRefusal" && status == "409")
                            || (name == "#/components/schemas/Readiness" && path == "/readyz"),
                        "{what} {status} answers {schema}"
                    );
                }
            }
        }
        if let Some(body) = op.get("requestBody") {
            let schema = body
                .pointer("/content/application~1json/schema")
                .unwrap_or_else(|| panic!("{what}: a JSON request body"));
            compile(schema);
        }
    }
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        let _ = (name, compile(schema));
    }
}

#[test]
fn the_schema_check_catches_drift() {
    let project = json!({
        "id": "0190f0a4-6c1e-7a52-9d1c-3b6f8a1e2d40",
        "slug": "orders",
        "name": "Orders",
        "description": "",
        "archived_at": null,
        "created_at": "2026-11-24T09:30:00Z",
    });
    let json_type = Some("application/json");
    check("GET", "/api/v1/projects/orders", 200, json_type, &project).unwrap();

    let mut missing = project.clone();
    missing.as_object_mut().unwrap().remove("slug");
    let err = check("GET", "/api/v1/projects/orders", 200, json_type, &missing).unwrap_err();
    assert!(err.contains("slug"), "{err}");

    let mut extra = project.clone();
    extra["owner"] = json!("someone");
    let err = check("GET", "/api/v1/projects/orders", 200, json_type, &extra).unwrap_err();
    assert!(err.contains("owner"), "{err}");

    let mut wrong = project.clone();
    wrong["id"] = json!("not-a-uuid");
    assert!(check("GET", "/api/v1/projects/orders", 200, json_type, &wrong).is_err());

    // A status the operation does not declare, and a body where none is declared.
    let err = check("GET", "/api/v1/projects/orders", 409, json_type, &project).unwrap_err();
    assert!(err.contains("does not declare"), "{err}");
    assert!(check("DELETE", "/api/v1/projects/orders", 204, None, &json!("")).is_ok());
    assert!(check("DELETE", "/api/v1/projects/orders", 204, None, &project).is_err());

    // Errors: the envelope, and nothing else.
    let error = json!({"error": {"code": "not_found", "message": "project not found"}});
    check("GET", "/api/v1/projects/orders", 404, json_type, &error).unwrap();
    assert!(
        check(
            "GET",
            "/api/v1/projects/orders",
            404,
            json_type,
            &json!({"code": "x"})
        )
        .is_err()
    );

    // The literal route wins over the parameter.
    assert_eq!(
        support::openapi::template_for("POST", "/api/v1/projects/p/migrations/import").as_deref(),
        Some("/api/v1/projects/{slug}/migrations/import")
    );
    assert_eq!(
        support::openapi::template_for("GET", "/api/v1/projects/p/migrations/1.2").as_deref(),
        Some("/api/v1/projects/{slug}/migrations/{version}")
    );
    // Component schemas compile on their own too.
    let v = compile(&json!({"$ref": "#/components/schemas/ErrorBody"}));
    assert!(errors(&v, &error).is_empty());
}

#[tokio::test]
async fn serves_the_generated_document() {
    let app = TestApp::spawn().await;
    let (status, served) = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&served, document());
}
