//! `ci sync`: the folder of a repository becomes the project's migrations.

use std::collections::BTreeMap;

use common::domain::import;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, Failure, Outcome, SyncArgs};

/// Files per version of the folder, as the importer will read them.
struct Folder {
    files: Vec<(String, String)>,
    /// `None` when the importer cannot read the names: the server says why.
    sources: Option<BTreeMap<String, Vec<String>>>,
    newest: Option<String>,
}

fn read(dir: &std::path::Path) -> Result<Folder, Failure> {
    let files = crate::cli::read_folder(dir)
        .map_err(|e| Failure::new("unreadable_folder", format!("{e:#}")))?;
    if files.is_empty() {
        return Err(Failure::new(
            "no_files",
            format!("{} holds no .sql files", dir.display()),
        ));
    }
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    let (sources, newest) = match import::sources(&paths) {
        Ok(by_version) => {
            let newest = by_version.keys().next_back().map(ToString::to_string);
            let sources = by_version
                .into_iter()
                .map(|(v, p)| (v.to_string(), p))
                .collect();
            (Some(sources), newest)
        }
        Err(_) => (None, None),
    };
    Ok(Folder {
        files,
        sources,
        newest,
    })
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn run(api: &Api, args: &SyncArgs) -> Result<Outcome, Failure> {
    let folder = read(&args.dir)?;
    let files: Vec<Value> = folder
        .files
        .iter()
        .map(|(path, content)| json!({"path": path, "content": content}))
        .collect();
    let mut body = json!({ "files": files });
    // Only when asked: servers that do not know the field yet still take
    // the request.
    if args.allow_out_of_order {
        body["allow_out_of_order"] = json!(true);
    }
    let url = api.api_url(&["projects", &args.project, "migrations", "import"]);
    let answer = api.send(Method::POST, url, Some(&body)).await?;
    let report = &answer.body;
    let layout = report["layout"].as_str().unwrap_or("unknown").to_owned();
    let created = strings(&report["created"]);
    let unchanged = strings(&report["unchanged"]);
    match answer.status {
        StatusCode::OK | StatusCode::CREATED => {
            if args.json {
                println!(
                    "{}",
                    json!({
                        "status": if created.is_empty() { "unchanged" } else { "created" },
                        "project": args.project,
                        "layout": layout,
                        "created": created,
                        "unchanged": unchanged,
                        "newest_version": folder.newest,
                    })
                );
            } else {
                if created.is_empty() {
                    eprintln!(
                        "nothing new in {}: {} migration(s) unchanged ({layout} layout)",
                        args.project,
                        unchanged.len()
                    );
                } else {
                    eprintln!(
                        "created {} migration(s) in {}: {}; {} unchanged ({layout} layout)",
                        created.len(),
                        args.project,
                        created.join(", "),
                        unchanged.len()
                    );
                }
                if let Some(newest) = &folder.newest {
                    println!("{newest}");
                }
            }
            Ok(Outcome::Done)
        }
        StatusCode::CONFLICT if answer.failure().code == "import_conflicts" => {
            let failure = answer.failure();
            let conflicts: Vec<Value> = report["conflicts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|c| {
                    let version = c["version"].as_str().unwrap_or_default();
                    let paths = folder
                        .sources
                        .as_ref()
                        .and_then(|s| s.get(version))
                        .cloned()
                        .unwrap_or_default();
                    json!({"version": version, "reason": c["reason"], "paths": paths})
                })
                .collect();
            if args.json {
                println!(
                    "{}",
                    json!({
                        "status": "conflicts",
                        "project": args.project,
                        "layout": layout,
                        "created": created,
                        "unchanged": unchanged,
                        "conflicts": conflicts,
                        "error": {"code": failure.code, "message": failure.message},
                    })
                );
            }
            for c in &conflicts {
                let reason = c["reason"].as_str().unwrap_or_default();
                let version = c["version"].as_str().unwrap_or_default();
                let paths = strings(&c["paths"]);
                if paths.is_empty() {
                    eprintln!("conflict: version {version}: {reason}");
                }
                for path in paths {
                    eprintln!("conflict: {path}: version {version} {reason}");
                }
            }
            eprintln!(
                "nothing imported into {}: {} version(s) differ from the stored migrations \
                 (restore those files, or add a new version instead of editing one)",
                args.project,
                conflicts.len()
            );
            eprintln!("error: {}: {}", failure.code, failure.message);
            Ok(Outcome::Refused)
        }
        _ => Err(answer.failure()),
    }
}
