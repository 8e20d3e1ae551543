//! `ci request`: ask for a run of a DB set, by the set's name.

use reqwest::Method;
use serde_json::json;

use super::{Api, Failure, Outcome, RequestArgs};

/// The id of the project's DB set called `name`; an unknown name lists the
/// known ones, since a typo in a pipeline file is the usual cause.
async fn db_set_id(api: &Api, project: &str, name: &str) -> Result<(String, String), Failure> {
    let answer = api
        .expect_success(
            Method::GET,
            api.api_url(&["projects", project, "db-sets"]),
            None,
        )
        .await?;
    // The list is whole (one page): a project has few DB sets.
    let sets = answer.body["items"].as_array().cloned().unwrap_or_default();
    let found = sets.iter().find(|s| s["name"].as_str() == Some(name));
    match found {
        Some(set) => Ok((
            set["id"].as_str().unwrap_or_default().to_owned(),
            set["environment"].as_str().unwrap_or_default().to_owned(),
        )),
        None => {
            let mut known: Vec<&str> = sets.iter().filter_map(|s| s["name"].as_str()).collect();
            known.sort_unstable();
            Err(Failure::new(
                "unknown_db_set",
                if known.is_empty() {
                    format!("project {project} has no DB sets; there is no {name:?}")
                } else {
                    format!(
                        "project {project} has no DB set named {name:?}; known: {}",
                        known.join(", ")
                    )
                },
            ))
        }
    }
}

pub async fn run(api: &Api, args: &RequestArgs) -> Result<Outcome, Failure> {
    let (set_id, environment) = db_set_id(api, &args.project, &args.db_set).await?;
    let mut body = json!({
        "db_set_id": set_id,
        "direction": if args.down { "down" } else { "up" },
        "target_version": args.to,
    });
    if let Some(note) = &args.note {
        body["note"] = json!(note);
    }
    let answer = api
        .expect_success(
            Method::POST,
            api.api_url(&["projects", &args.project, "runs"]),
            Some(&body),
        )
        .await?;
    let run = &answer.body;
    let id = run["id"]
        .as_str()
        .ok_or_else(|| Failure::new("bad_response", "the run's answer has no id"))?;
    let url = api.url(&["runs", id]).to_string();
    let state = run["state"].as_str().unwrap_or_default();
    let versions: Vec<&str> = run["migrations"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["version"].as_str()).collect())
        .unwrap_or_default();
    if args.json {
        let mut out = json!({
            "id": id,
            "url": url,
            "state": state,
            "project": args.project,
            "db_set": args.db_set,
            "db_set_id": set_id,
            "environment": environment,
            "direction": run["direction"],
            "target_version": run["target_version"],
            "migrations": versions,
        });
        for field in ["risk", "required_approvals"] {
            if !run[field].is_null() {
                out[field] = run[field].clone();
            }
        }
        println!("{out}");
    } else {
        println!("{id}");
        eprintln!(
            "requested run {id}: {} {} to {} on {} ({environment}), {} migration(s), {}",
            args.project,
            if args.down { "down" } else { "up" },
            args.to,
            args.db_set,
            versions.len(),
            state.replace('_', " ")
        );
        eprintln!("{url}");
    }
    Ok(Outcome::Done)
}
