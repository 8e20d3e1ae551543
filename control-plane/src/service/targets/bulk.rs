//! Bulk creation of targets, for real fleets: a JSON array of targets, or a
//! pasted list of `host:port/database` lines with shared defaults. All or
//! nothing: every entry is checked before anything is written, then all
//! are inserted in one statement of one transaction, with one audit row.

use std::collections::{BTreeMap, HashSet};

use common::{
    lifecycle,
    store::{audit, inventory, runs::RunScope},
    targets::Password,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::TargetInput;
use super::ValidTarget;
use super::parse_engine;
use super::validate;
use crate::{
    auth::CurrentUser,
    error::ApiError,
    service::inventory::{db_set, parse_object_name},
    state::AppState,
};

/// At most this many targets per request.
pub const MAX_TARGETS: usize = 1000;

/// Either `targets` or `lines` (with `defaults`).
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct BulkTargets {
    pub targets: Option<Vec<TargetInput>>,
    /// One `host[:port]/database` per line; blank lines and lines starting
    /// with `#` are skipped.
    pub lines: Option<String>,
    #[serde(default)]
    pub defaults: BulkDefaults,
}

/// What every target given as a line shares.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct BulkDefaults {
    pub engine: Option<String>,
    pub username: Option<String>,
    /// Write-only, like a single target's.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<Password>,
    pub tls_mode: Option<String>,
    pub worker_pool: Option<String>,
    #[serde(default)]
    pub session_settings: String,
    /// Names become `<prefix><n>`, numbered after the highest such name in
    /// the DB set; without a prefix a target is named after its database.
    pub name_prefix: Option<String>,
}

/// The targets a bulk request added.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkCreated {
    pub count: usize,
    pub items: Vec<inventory::TargetRow>,
}

/// Adds every target of the request to the DB set, or none of them.
pub async fn create_targets(
    state: &AppState,
    user: &CurrentUser,
    slug: &str,
    db_set_id: Uuid,
    body: &BulkTargets,
) -> Result<Vec<inventory::TargetRow>, ApiError> {
    let mut tx = state.db.begin().await?;
    let (project, set) = db_set(&mut tx, slug, db_set_id).await?;
    let existing = inventory::target_names(&mut tx, set.id).await?;
    let entries = match (&body.targets, &body.lines) {
        (Some(targets), None) => from_json(targets)?,
        (None, Some(lines)) => from_lines(lines, &body.defaults, &existing)?,
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "lines",
                "send either targets or lines, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "targets",
                "send targets (a list of targets) or lines (host:port/database per line)",
            ));
        }
    };
    let existing: HashSet<&str> = existing.iter().map(String::as_str).collect();
    if let Some((field, target)) = entries
        .iter()
        .find(|(_, t)| existing.contains(t.name.as_str()))
    {
        return Err(ApiError::conflict(
            "duplicate_name",
            format!(
                "{field}: a target named {} already exists in the DB set",
                target.name
            ),
        ));
    }

    let names: Vec<&str> = entries.iter().map(|(_, t)| t.name.as_str()).collect();
    let reason = format!(
        "{} targets were added to DB set {}",
        entries.len(),
        set.name
    );
    let invalidated =
        lifecycle::invalidate_where(&mut tx, &user.caller(), RunScope::DbSet(set.id), &reason)
            .await?;
    let new: Vec<_> = entries.iter().map(|(_, t)| t.as_new()).collect();
    let rows = inventory::insert_targets(&mut tx, state.keys(), set.id, &new).await?;
    let mut engines: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, t) in &entries {
        *engines.entry(t.engine.as_str()).or_default() += 1;
    }
    // One row for the whole request: what was added, never a password.
    audit::append(
        &mut tx,
        &user
            .audit("target.bulk_created", "db_set", set.id)
            .project(project.id)
            .details(json!({
                "db_set_id": set.id,
                "count": rows.len(),
                "names": names,
                "engines": engines,
                "runs_invalidated": invalidated.len(),
            })),
    )
    .await?;
    lifecycle::announce_invalidated(&mut tx, &user.caller(), &invalidated, &reason).await?;
    tx.commit().await?;
    Ok(rows)
}

fn check_count(field: &str, count: usize) -> Result<(), ApiError> {
    match count {
        0 => Err(ApiError::invalid(field, "must hold at least one target")),
        n if n > MAX_TARGETS => Err(ApiError::invalid(
            field,
            format!("at most {MAX_TARGETS} targets per request, got {n}"),
        )),
        _ => Ok(()),
    }
}

/// Each entry checked, named by its place in the request (`targets[3]`).
fn from_json(targets: &[TargetInput]) -> Result<Vec<(String, ValidTarget)>, ApiError> {
    check_count("targets", targets.len())?;
    let mut seen = HashSet::new();
    targets
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let target = validate(input, &format!("targets[{i}]."))?;
            if !seen.insert(target.name.clone()) {
                return Err(ApiError::invalid(
                    format!("targets[{i}].name"),
                    format!("{} appears more than once in this request", target.name),
                ));
            }
            Ok((format!("targets[{i}].name"), target))
        })
        .collect()
}

/// The lines' targets, named `lines[<line number>]` (counting from 1, as an
/// editor does) in errors.
fn from_lines(
    lines: &str,
    defaults: &BulkDefaults,
    existing: &[String],
) -> Result<Vec<(String, ValidTarget)>, ApiError> {
    let engine = defaults
        .engine
        .as_deref()
        .ok_or_else(|| ApiError::invalid("defaults.engine", "is required with lines"))?;
    let engine = parse_engine("defaults.engine", engine)?;
    let username = defaults
        .username
        .as_deref()
        .ok_or_else(|| ApiError::invalid("defaults.username", "is required with lines"))?;
    let prefix = defaults
        .name_prefix
        .as_deref()
        .map(|p| parse_object_name("defaults.name_prefix", p))
        .transpose()?;
    let default_port = i64::from(engine.default_port());
    // Numbering continues after the highest `<prefix><n>` already in the set.
    let mut next = prefix.as_deref().map_or(1, |prefix| {
        existing
            .iter()
            .filter_map(|name| name.strip_prefix(prefix)?.parse::<u64>().ok())
            .max()
            .map_or(1, |n| n + 1)
    });

    let entries: Vec<(usize, &str)> = lines
        .lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .collect();
    check_count("lines", entries.len())?;
    let mut seen = HashSet::new();
    entries
        .into_iter()
        .map(|(number, line)| {
            let field = format!("lines[{number}]");
            let at_line = |e: ApiError| match e {
                ApiError::Invalid { field: inner, message } => {
                    ApiError::invalid(field.clone(), format!("{inner} {message}"))
                }
                other => other,
            };
            let (host, port, database) =
                parse_line(line, default_port).map_err(|m| ApiError::invalid(&field, m))?;
            let name = match &prefix {
                Some(prefix) => {
                    let name = format!("{prefix}{next}");
                    next += 1;
                    name
                }
                None => database.to_owned(),
            };
            let target = validate(
                &TargetInput {
                    name,
                    engine: engine.to_string(),
                    host: host.to_owned(),
                    port,
                    database: database.to_owned(),
                    username: username.to_owned(),
                    password: defaults.password.clone(),
                    tls_mode: defaults.tls_mode.clone(),
                    session_settings: defaults.session_settings.clone(),
                    worker_pool: defaults.worker_pool.clone(),
                },
                "",
            )
            .map_err(at_line)?;
            if !seen.insert(target.name.clone()) {
                return Err(ApiError::invalid(
                    &field,
                    format!(
                        "name {} appears more than once in this request (set defaults.name_prefix to number the targets)",
                        target.name
                    ),
                ));
            }
            Ok((field, target))
        })
        .collect()
}

/// `host[:port]/database`, with `[v6-address]` for IPv6 hosts.
fn parse_line(line: &str, default_port: i64) -> Result<(&str, i64, &str), String> {
    const SHAPE: &str = "expected host:port/database";
    let (address, database) = line.split_once('/').ok_or(SHAPE)?;
    let database = database.trim();
    if database.is_empty() {
        return Err(format!("{SHAPE}: the database is missing"));
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(SHAPE)?;
        (host, after.strip_prefix(':'))
    } else {
        match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        }
    };
    if host.trim().is_empty() {
        return Err(format!("{SHAPE}: the host is missing"));
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("port {p:?} is not a number"))?,
    };
    Ok((host.trim(), port, database))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_host_port_and_database() {
        assert_eq!(
            parse_line("db1:5433/orders", 5432),
            Ok(("db1", 5433, "orders"))
        );
        assert_eq!(parse_line("db1/orders", 3306), Ok(("db1", 3306, "orders")));
        assert_eq!(parse_line("[::1]:6432/app", 5432), Ok(("::1", 6432, "app")));
        assert_eq!(
            parse_line("[fe80::1]/app", 5432),
            Ok(("fe80::1", 5432, "app"))
        );
        assert!(parse_line("db1:5432", 5432).is_err());
        assert!(
            parse_line("db1:x/app", 5432)
                .unwrap_err()
                .contains("not a number")
        );
        assert!(parse_line(":5432/app", 5432).unwrap_err().contains("host"));
        assert!(
            parse_line("db1:5432/", 5432)
                .unwrap_err()
                .contains("database")
        );
    }

    fn defaults(prefix: Option<&str>) -> BulkDefaults {
        BulkDefaults {
            engine: Some("postgres".into()),
            username: Some("migrator".into()),
            name_prefix: prefix.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn prefixed_names_continue_after_the_highest_existing_number() {
        let existing = vec![
            "shard-7".to_owned(),
            "shard-x".to_owned(),
            "other".to_owned(),
        ];
        let got = from_lines(
            "a/db\n\n# comment\nb:6000/db\n",
            &defaults(Some("shard-")),
            &existing,
        )
        .unwrap();
        let names: Vec<(&str, &str, i32)> = got
            .iter()
            .map(|(f, t)| (f.as_str(), t.name.as_str(), t.port))
            .collect();
        assert_eq!(
            names,
            [("lines[1]", "shard-8", 5432), ("lines[4]", "shard-9", 6000)]
        );
    }

    #[test]
    fn bad_lines_are_named_by_their_line_number() {
        let err = from_lines("a/db1\nb:70000/db2", &defaults(None), &[]).unwrap_err();
        assert!(
            matches!(err, ApiError::Invalid { ref field, ref message } if field == "lines[2]" && message.contains("port")),
            "{err}"
        );
        let err = from_lines("a/app\nb/app", &defaults(None), &[]).unwrap_err();
        assert!(
            matches!(err, ApiError::Invalid { ref field, .. } if field == "lines[2]"),
            "{err}"
        );
        let err = from_lines("a/app", &BulkDefaults::default(), &[]).unwrap_err();
        assert!(
            matches!(err, ApiError::Invalid { ref field, .. } if field == "defaults.engine"),
            "{err}"
        );
        let err = from_lines("# nothing\n", &defaults(None), &[]).unwrap_err();
        assert!(
            matches!(err, ApiError::Invalid { ref field, .. } if field == "lines"),
            "{err}"
        );
    }
}
