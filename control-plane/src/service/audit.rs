//! The audit log for people: actors and objects by name with a link to
//! their page, details as a short key/value list with the whole JSON on
//! demand. The stored rows (and the CSV export) keep the raw values.

use std::collections::HashMap;

use common::store::audit::{self, AuditRow};
use serde::Serialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// A name with its page, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub text: String,
    pub href: Option<String>,
}

/// One row of the log as the audit page shows it.
#[derive(Debug, Serialize)]
pub struct AuditLine {
    pub seq: i64,
    pub at: String,
    pub actor: Label,
    pub action: String,
    pub object: Label,
    /// At most [`DETAILS_SHOWN`] fields, each value in one short line.
    pub details: Vec<(String, String)>,
    /// The details whole, pretty-printed.
    pub details_json: String,
    pub ip: Option<String>,
}

/// How many fields of a row's details are listed.
pub const DETAILS_SHOWN: usize = 8;
/// The longest value listed, in characters.
const VALUE_CHARS: usize = 120;

/// The rows, with every actor and object that the tool database knows
/// named (in one query for the page).
pub async fn describe(state: &AppState, rows: Vec<AuditRow>) -> Result<Vec<AuditLine>, ApiError> {
    let mut ids: Vec<Uuid> = rows
        .iter()
        .flat_map(|r| [object_uuid(r), worker_id(&r.actor)])
        .flatten()
        .collect();
    ids.sort();
    ids.dedup();
    let names: HashMap<Uuid, Label> = audit::names(&state.db, &ids)
        .await?
        .into_iter()
        .map(|n| {
            (
                n.id,
                Label {
                    text: n.label,
                    href: n.href,
                },
            )
        })
        .collect();
    Ok(rows
        .into_iter()
        .map(|r| {
            let actor = match worker_id(&r.actor).and_then(|id| names.get(&id)) {
                Some(worker) => worker.clone(),
                None => plain(&r.actor),
            };
            let object = object_uuid(&r)
                .and_then(|id| names.get(&id).cloned())
                .unwrap_or_else(|| unnamed(&r.object_type, &r.object_id));
            AuditLine {
                seq: r.seq,
                at: r.at.format(&Rfc3339).unwrap_or_default(),
                actor,
                action: r.action,
                object,
                details: details_list(&r.details),
                details_json: serde_json::to_string_pretty(&r.details).unwrap_or_default(),
                ip: r.ip,
            }
        })
        .collect())
}

fn plain(text: &str) -> Label {
    Label {
        text: text.to_owned(),
        href: None,
    }
}

/// The object's id, when it is one the tool database may name.
fn object_uuid(r: &AuditRow) -> Option<Uuid> {
    match r.object_type.as_str() {
        "route" | "environment" => None,
        _ => r.object_id.parse().ok(),
    }
}

/// `system:worker:<id>`: the worker's id.
fn worker_id(actor: &str) -> Option<Uuid> {
    actor.strip_prefix("system:worker:")?.parse().ok()
}

/// An object the tool database does not name (any more): its kind in
/// words and a short id, or the route as sent.
fn unnamed(kind: &str, id: &str) -> Label {
    let short = |id: &str| id.chars().take(8).collect::<String>();
    match kind {
        "route" => plain(id),
        "environment" => Label {
            text: format!("environment {id}"),
            href: Some("/admin/environments".into()),
        },
        "api_token" => plain(&format!("API token {}", short(id))),
        other => plain(&format!("{} {}", other.replace('_', " "), short(id))),
    }
}

/// The top-level fields of a row's details, each value on one short line:
/// text as is, lists of plain values joined, anything else as compact JSON;
/// cut at [`VALUE_CHARS`].
pub fn details_list(details: &Value) -> Vec<(String, String)> {
    let Some(fields) = details.as_object() else {
        return match details {
            Value::Null => Vec::new(),
            other => vec![("value".into(), short(&other.to_string()))],
        };
    };
    fields
        .iter()
        .take(DETAILS_SHOWN)
        .map(|(k, v)| (k.replace('_', " "), short(&one_line(v))))
        .collect()
}

fn one_line(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            items.iter().map(one_line).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() > VALUE_CHARS || line.len() < text.len() {
        format!("{}…", line.chars().take(VALUE_CHARS).collect::<String>())
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn details_read_as_short_fields() {
        let details = json!({
            "reason": "freeze week",
            "targets_cancelled": 3,
            "changed": ["table public.accounts", "index public.x"],
            "from": { "a": 1 },
            "note": "first line\nsecond line",
            "error": null,
        });
        let list = details_list(&details);
        let get = |k: &str| {
            list.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("reason"), Some("freeze week"));
        assert_eq!(get("targets cancelled"), Some("3"));
        assert_eq!(
            get("changed"),
            Some("table public.accounts, index public.x")
        );
        assert_eq!(get("from"), Some("{\"a\":1}"));
        assert_eq!(get("note"), Some("first line…"));
        assert_eq!(get("error"), Some("none"));
        assert!(details_list(&Value::Null).is_empty());
        let long = json!({ "sql": "x".repeat(500) });
        assert_eq!(details_list(&long)[0].1.chars().count(), VALUE_CHARS + 1);
    }

    #[test]
    fn workers_and_unnamed_objects_read_as_words() {
        let id = Uuid::now_v7();
        assert_eq!(worker_id(&format!("system:worker:{id}")), Some(id));
        assert_eq!(worker_id("system:retention"), None);
        assert_eq!(worker_id("ann@example.com"), None);
        assert_eq!(
            unnamed("target_execution", "01a24892-aaaa"),
            plain("target execution 01a24892")
        );
        assert_eq!(unnamed("route", "POST /api/v1/runs/x/approve").href, None);
        assert_eq!(
            unnamed("environment", "prd").href.as_deref(),
            Some("/admin/environments")
        );
    }
}
