//! Checks API answers against the OpenAPI document: the status must be one
//! the operation declares, and a JSON body must match that response's
//! schema. Object schemas are made strict here (no undeclared properties),
//! so a field added to or dropped from an answer without the document
//! following fails the test that saw it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use reqwest::StatusCode;
use serde_json::{Map, Value, json};

/// The generated document (the one `/api/v1/openapi.json` serves).
pub fn document() -> &'static Value {
    control_plane::api::openapi::document()
}

/// The document's path template that `path` (concrete, without query)
/// instantiates and that has an operation for `method`; literal segments
/// win over parameters (`/migrations/import` over `/migrations/{version}`).
pub fn template_for(method: &str, path: &str) -> Option<String> {
    let method = method.to_lowercase();
    let segments: Vec<&str> = path.split('/').collect();
    document()["paths"]
        .as_object()?
        .iter()
        .filter(|(_, item)| item.get(&method).is_some())
        .filter_map(|(template, _)| {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literals = 0;
            for (part, segment) in parts.iter().zip(&segments) {
                if part.starts_with('{') && part.ends_with('}') {
                    if segment.is_empty() {
                        return None;
                    }
                } else if part == segment {
                    literals += 1;
                } else {
                    return None;
                }
            }
            Some((literals, template.clone()))
        })
        .max_by_key(|(literals, _)| *literals)
        .map(|(_, template)| template)
}

/// Rewrites `#/components/schemas/X` references to `#/$defs/X` and makes
/// every object schema with declared properties closed.
fn strict(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let value = match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => {
                        json!(r.replace("#/components/schemas/", "#/$defs/"))
                    }
                    // Property names are not schemas: keep the names, walk the values.
                    ("properties", Value::Object(props)) => {
                        Value::Object(props.iter().map(|(k, v)| (k.clone(), strict(v))).collect())
                    }
                    _ => strict(value),
                };
                out.insert(key.clone(), value);
            }
            if out.contains_key("properties") && !out.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), json!(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strict).collect()),
        other => other.clone(),
    }
}

/// A JSON Schema (2020-12) for `schema`, a schema taken from the document,
/// with the document's component schemas as `$defs`.
pub fn json_schema(schema: &Value) -> Value {
    let mut root = strict(schema);
    let defs = strict(&document()["components"]["schemas"]);
    let root_map = root.as_object_mut().expect("a schema is an object");
    root_map.insert("$defs".into(), defs);
    root_map.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    root
}

/// Compiles a schema from the document; panics when it is not valid JSON Schema.
pub fn compile(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&json_schema(schema))
        .unwrap_or_else(|e| panic!("schema does not compile: {e}\n{schema:#}"))
}

/// Every way `instance` breaks `validator`, one per line.
pub fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

type Key = (String, String, String);

fn validators() -> &'static Mutex<HashMap<Key, Arc<jsonschema::Validator>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<jsonschema::Validator>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Checks an answer of `method path` (concrete, query allowed) against the
/// document. Paths the document does not describe (pages, sign-in) and
/// methods a path does not have (a 405) are not checked.
pub fn check(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &Value,
) -> Result<(), String> {
    let path = path.split('?').next().unwrap_or(path);
    let Some(template) = template_for(method, path) else {
        return Ok(());
    };
    let op = &document()["paths"][&template][method.to_lowercase()];
    let status_key = status.to_string();
    let response = &op["responses"][&status_key];
    let what = format!("{method} {template} answered {status}");
    if !response.is_object() {
        return Err(format!(
            "{what}, a status the OpenAPI document does not declare for it: {body}"
        ));
    }
    let Some(content) = response.get("content").and_then(Value::as_object) else {
        return match body {
            Value::Null => Ok(()),
            Value::String(s) if s.is_empty() => Ok(()),
            _ => Err(format!(
                "{what} with a body, but the document declares none: {body}"
            )),
        };
    };
    let content_type = content_type.unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    let Some(declared) = content
        .iter()
        .find(|(k, _)| k.split(';').next().unwrap_or_default().trim() == media)
        .map(|(_, v)| v)
    else {
        return Err(format!(
            "{what} with Content-Type {content_type:?}; the document declares {:?}",
            content.keys().collect::<Vec<_>>()
        ));
    };
    if media != "application/json" {
        return Ok(());
    }
    let key = (template.clone(), method.to_lowercase(), status_key);
    let validator = {
        let mut cache = validators().lock().unwrap();
        cache
            .entry(key)
            .or_insert_with(|| Arc::new(compile(&declared["schema"])))
            .clone()
    };
    let problems = errors(&validator, body);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what} with a body that does not match the OpenAPI document:\n  {}\nbody: {body:#}",
            problems.join("\n  ")
        ))
    }
}

/// Reads `resp`, the answer to `method path`, and holds it to the document
/// ([`assert_matches`]); returns its status and body (JSON, else the text as
/// a JSON string).
pub async fn read_checked(
    method: &str,
    path: &str,
    resp: reqwest::Response,
) -> (StatusCode, Value) {
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    assert_matches(
        method,
        path,
        status.as_u16(),
        content_type.as_deref(),
        &body,
    );
    (status, body)
}

/// [`check`], failing the test.
pub fn assert_matches(
    method: &str,
    path: &str,
    status: u16,
    content_type: Option<&str>,
    body: &Value,
) {
    if let Err(problem) = check(method, path, status, content_type, body) {
        panic!("{problem}");
    }
}
