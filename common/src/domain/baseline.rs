//! Adopting a database that was migrated before the hub: which of the
//! project's versions to record as applied on it, without running them.
//!
//! A baseline comes either from an explicit version `V` (every migration of
//! the project at or below `V` counts as applied, like Flyway's
//! `baselineVersion`) or from the history table another tool left on the
//! target:
//!
//! | tool | table (default) | what counts as applied |
//! |---|---|---|
//! | Flyway | `flyway_schema_history` | successful versioned rows in `installed_rank` order; a `BASELINE` row means "everything at or below it"; `UNDO_*` and `DELETE` rows take their version back; repeatable (`version` NULL) and `SCHEMA` rows are ignored |
//! | golang-migrate | `schema_migrations` (`version bigint, dirty bool`) | its single row: everything at or below `version` |
//! | dbmate | `schema_migrations` (`version varchar`) | one row per applied version |
//! | goose | `goose_db_version` (`id`, `version_id bigint`, `is_applied bool`) | per `version_id`, its latest row (highest `id`) if `is_applied`; version 0 (goose's own first row) is ignored |
//!
//! The rules are deliberately strict, because a wrong baseline either skips
//! a migration forever or re-runs one on a live database:
//! - a target the hub has touched (applied versions, rows in its
//!   `migrate_hub_history`) or that is dirty is never baselined;
//! - a tool that says a migration stopped half-way (golang-migrate's
//!   `dirty`, a failed Flyway row without a later success) is refused: the
//!   database must be fixed first, as the tool itself demands;
//! - versions the target records that the project does not have (unknown)
//!   and project versions below the target's highest one that the table
//!   does not record (missing, i.e. gaps) are refused with both lists,
//!   unless the request accepts the mismatch: then exactly the versions both
//!   sides know are recorded, unknown ones are ignored and missing ones stay
//!   pending (the next `up` run applies them).
//!
//! Versions are compared as the hub compares them ([`Version`]): Flyway's
//! `1.2` is the hub's `1.2`, golang-migrate's, dbmate's and goose's `0001`
//! is `1`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    str::FromStr,
};

use serde::Serialize;

use super::Version;

/// The tool whose history table a baseline is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Flyway,
    GolangMigrate,
    Dbmate,
    Goose,
}

impl Source {
    pub const ALL: [Source; 4] = [
        Source::Flyway,
        Source::GolangMigrate,
        Source::Dbmate,
        Source::Goose,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flyway => "flyway",
            Source::GolangMigrate => "golang-migrate",
            Source::Dbmate => "dbmate",
            Source::Goose => "goose",
        }
    }

    /// The table the tool writes unless configured otherwise.
    pub fn default_table(self) -> &'static str {
        match self {
            Source::Flyway => "flyway_schema_history",
            Source::GolangMigrate | Source::Dbmate => "schema_migrations",
            Source::Goose => "goose_db_version",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Source::ALL
            .into_iter()
            .find(|source| source.as_str() == s.trim())
            .ok_or_else(|| "must be flyway, golang-migrate, dbmate or goose".to_owned())
    }
}

/// A table name on the target, optionally qualified (`schema.table` on
/// PostgreSQL, `database.table` on MySQL). Only plain identifiers are
/// accepted, so the name can be quoted into SQL safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    qualifier: Option<String>,
    name: String,
}

impl TableName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let valid = |part: &str| {
            let mut chars = part.chars();
            part.len() <= 63
                && chars
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        };
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() > 2 || !parts.iter().all(|p| valid(p)) {
            return Err(
                "must be a table name like schema_migrations or app.schema_migrations \
                 (letters, digits, _ and $, at most 63 characters per part)"
                    .to_owned(),
            );
        }
        Ok(match parts.as_slice() {
            [name] => TableName {
                qualifier: None,
                name: (*name).to_owned(),
            },
            [qualifier, name] => TableName {
                qualifier: Some((*qualifier).to_owned()),
                name: (*name).to_owned(),
            },
            _ => unreachable!("one or two parts"),
        })
    }

    /// `"schema"."table"` for PostgreSQL.
    pub fn quoted_pg(&self) -> String {
        self.quoted('"')
    }

    /// `` `database`.`table` `` for MySQL/MariaDB.
    pub fn quoted_mysql(&self) -> String {
        self.quoted('`')
    }

    fn quoted(&self, quote: char) -> String {
        match &self.qualifier {
            Some(q) => format!("{quote}{q}{quote}.{quote}{}{quote}", self.name),
            None => format!("{quote}{}{quote}", self.name),
        }
    }

    pub fn qualifier(&self) -> Option<&str> {
        self.qualifier.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.qualifier {
            Some(q) => write!(f, "{q}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One row of `flyway_schema_history` (the columns a baseline needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlywayRow {
    pub installed_rank: i64,
    /// NULL for repeatable migrations.
    pub version: Option<String>,
    pub description: String,
    /// `SQL`, `JDBC`, `BASELINE`, `UNDO_SQL`, `DELETE`, `SCHEMA`, …
    pub kind: String,
    pub success: bool,
}

/// The single row golang-migrate keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GolangMigrateRow {
    pub version: i64,
    pub dirty: bool,
}

/// One row of goose's `goose_db_version`: goose appends a row per apply;
/// a rollback has been recorded either as a row with `is_applied` false or
/// by deleting the version's rows, so the latest row of a version decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GooseRow {
    pub id: i64,
    pub version_id: i64,
    pub is_applied: bool,
}

/// Another tool's history table, as read from the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalHistory {
    Flyway(Vec<FlywayRow>),
    GolangMigrate(Vec<GolangMigrateRow>),
    /// One version per applied migration.
    Dbmate(Vec<String>),
    Goose(Vec<GooseRow>),
}

impl ExternalHistory {
    pub fn source(&self) -> Source {
        match self {
            ExternalHistory::Flyway(_) => Source::Flyway,
            ExternalHistory::GolangMigrate(_) => Source::GolangMigrate,
            ExternalHistory::Dbmate(_) => Source::Dbmate,
            ExternalHistory::Goose(_) => Source::Goose,
        }
    }
}

/// What a baseline request asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every migration at or below the version.
    AtVersion(Version),
    /// Whatever the tool's table on the target says.
    From { source: Source, table: TableName },
}

/// A field that is absent or blank counts as not given.
fn present(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Why a request is not even well-formed (422), naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub message: String,
}

impl Request {
    /// From the request's fields: exactly one of `version` and `from`;
    /// `table` only with `from` (default: the tool's own table name).
    pub fn parse(
        version: Option<&str>,
        from: Option<&str>,
        table: Option<&str>,
    ) -> Result<Self, InvalidRequest> {
        let invalid = |field, message: &str| InvalidRequest {
            field,
            message: message.to_owned(),
        };
        match (present(version), present(from)) {
            (Some(_), Some(_)) => Err(invalid(
                "from",
                "give either a version or a tool to read (from), not both",
            )),
            (None, None) => Err(invalid(
                "version",
                "give a version to baseline at, or from: flyway, golang-migrate, dbmate or goose",
            )),
            (Some(version), None) => {
                if present(table).is_some() {
                    return Err(invalid("table", "is only read with from"));
                }
                Version::parse(version)
                    .map(Request::AtVersion)
                    .map_err(|e| invalid("version", &e.to_string()))
            }
            (None, Some(from)) => {
                let source: Source = from.parse().map_err(|e: String| invalid("from", &e))?;
                let table = TableName::parse(present(table).unwrap_or(source.default_table()))
                    .map_err(|e| invalid("table", &e))?;
                Ok(Request::From { source, table })
            }
        }
    }
}

/// Why a target cannot be baselined as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaselineError {
    #[error(
        "the target already has history ({hub} version(s) applied in the hub, {target} row(s) in its \
         migrate_hub_history); only a target the hub has never migrated can be baselined"
    )]
    AlreadyHasHistory { hub: usize, target: usize },
    #[error(
        "the target is dirty at version {0} after a failed script; an admin must resolve it first"
    )]
    TargetDirty(String),
    #[error("{}", external_dirty_message(*tool, version))]
    ExternalDirty { tool: Source, version: String },
    #[error("{table} on the target records no applied migration; there is nothing to adopt")]
    Empty { table: String },
    #[error("no migration of the project is at or below version {0}")]
    NothingAtOrBelow(Version),
    #[error("{}", mismatch_message(table, unknown, missing))]
    Mismatch {
        table: String,
        unknown: Vec<String>,
        missing: Vec<String>,
    },
}

impl BaselineError {
    /// The API's stable code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            BaselineError::AlreadyHasHistory { .. } => "target_not_empty",
            BaselineError::TargetDirty(_) => "target_dirty",
            BaselineError::ExternalDirty { .. } => "external_dirty",
            BaselineError::Empty { .. } => "nothing_to_baseline",
            BaselineError::NothingAtOrBelow(_) => "nothing_to_baseline",
            BaselineError::Mismatch { .. } => "baseline_mismatch",
        }
    }
}

fn external_dirty_message(source: Source, version: &str) -> String {
    match source {
        Source::GolangMigrate => format!(
            "golang-migrate marks version {version} dirty: a migration stopped part-way on the \
             target. Fix the database, clear the mark (migrate force {version}), then baseline"
        ),
        Source::Flyway => format!(
            "flyway_schema_history records a failed migration to version {version}. Fix the \
             database and remove the failed row (flyway repair), then baseline"
        ),
        Source::Dbmate => format!("dbmate records version {version} as not completed"),
        Source::Goose => format!("goose records version {version} as not completed"),
    }
}

/// At most this many versions are listed in a message.
const LISTED: usize = 20;

fn list(versions: &[String]) -> String {
    let mut text = versions
        .iter()
        .take(LISTED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if versions.len() > LISTED {
        text.push_str(&format!(" and {} more", versions.len() - LISTED));
    }
    text
}

fn mismatch_message(table: &str, unknown: &[String], missing: &[String]) -> String {
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!(
            "{table} records version(s) the project does not have: {}",
            list(unknown)
        ));
    }
    if !missing.is_empty() {
        parts.push(format!(
            "the project has version(s) below the target's highest that {table} does not record: {}",
            list(missing)
        ));
    }
    format!(
        "{}. Add the missing migrations to the project, or accept the mismatch (allow_mismatch) \
         to record only the versions both know; unrecorded ones then stay pending",
        parts.join("; ")
    )
}

/// Refuses a target that is not a fresh adoption: the hub applied versions
/// on it, its `migrate_hub_history` has rows, or it is dirty.
pub fn ensure_fresh(
    hub_applied: usize,
    target_history: usize,
    dirty_version: Option<&str>,
) -> Result<(), BaselineError> {
    if let Some(version) = dirty_version {
        return Err(BaselineError::TargetDirty(version.to_owned()));
    }
    if hub_applied > 0 || target_history > 0 {
        return Err(BaselineError::AlreadyHasHistory {
            hub: hub_applied,
            target: target_history,
        });
    }
    Ok(())
}

/// What the target's history claims, before it is matched with the project.
#[derive(Debug, Default)]
struct Claim {
    /// Everything at or below this counts as applied; `true` when the
    /// version itself must be one of the project's (golang-migrate records
    /// the version of the last file it applied; a Flyway baseline or an
    /// explicit version need not name a migration).
    through: Option<(Version, bool)>,
    /// Versions recorded one by one, as the tool wrote them.
    listed: Vec<String>,
}

fn claim(history: &ExternalHistory) -> Result<Claim, BaselineError> {
    let mut claim = Claim::default();
    match history {
        ExternalHistory::Flyway(rows) => {
            let mut rows: Vec<&FlywayRow> = rows.iter().collect();
            rows.sort_by_key(|r| r.installed_rank);
            let mut listed: Vec<String> = Vec::new();
            let mut failed: Vec<String> = Vec::new();
            for row in rows {
                let Some(version) = row.version.as_deref().map(str::trim) else {
                    continue; // repeatable: not part of the versioned history
                };
                let kind = row.kind.to_ascii_uppercase();
                if kind == "SCHEMA" {
                    continue; // Flyway's marker for schemas it created
                }
                if !row.success {
                    failed.push(version.to_owned());
                    continue;
                }
                failed.retain(|v| v != version);
                if kind.ends_with("BASELINE") {
                    let at = Version::parse(version).map_err(|_| BaselineError::Mismatch {
                        table: Source::Flyway.default_table().to_owned(),
                        unknown: vec![version.to_owned()],
                        missing: Vec::new(),
                    })?;
                    if claim.through.as_ref().is_none_or(|(t, _)| *t < at) {
                        claim.through = Some((at, false));
                    }
                } else if kind.starts_with("UNDO") || kind == "DELETE" {
                    listed.retain(|v| v != version);
                } else if !listed.iter().any(|v| v == version) {
                    listed.push(version.to_owned());
                }
            }
            if let Some(version) = failed.into_iter().next() {
                return Err(BaselineError::ExternalDirty {
                    tool: Source::Flyway,
                    version,
                });
            }
            claim.listed = listed;
        }
        ExternalHistory::GolangMigrate(rows) => {
            if let Some(row) = rows.iter().find(|r| r.dirty) {
                return Err(BaselineError::ExternalDirty {
                    tool: Source::GolangMigrate,
                    version: row.version.to_string(),
                });
            }
            // golang-migrate keeps one row; should there be more, the
            // highest is where it stands.
            if let Some(row) = rows.iter().max_by_key(|r| r.version) {
                match Version::parse(&row.version.to_string()) {
                    Ok(version) => claim.through = Some((version, true)),
                    Err(_) => claim.listed.push(row.version.to_string()),
                }
            }
        }
        ExternalHistory::Dbmate(versions) => {
            claim.listed = versions.iter().map(|v| v.trim().to_owned()).collect();
        }
        ExternalHistory::Goose(rows) => {
            // The latest row of each version says where it stands; goose
            // writes version 0 for itself when it creates the table.
            let mut latest: BTreeMap<i64, &GooseRow> = BTreeMap::new();
            for row in rows.iter().filter(|r| r.version_id != 0) {
                let entry = latest.entry(row.version_id).or_insert(row);
                if row.id > entry.id {
                    *entry = row;
                }
            }
            claim.listed = latest
                .values()
                .filter(|r| r.is_applied)
                .map(|r| r.version_id.to_string())
                .collect();
        }
    }
    Ok(claim)
}

/// The versions a baseline records, with what was set aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Baseline {
    /// The project's versions to record as applied, in version order.
    pub versions: Vec<Version>,
    /// Versions the target records that the project does not have (only
    /// when the mismatch was accepted).
    pub unknown: Vec<String>,
    /// Project versions below the target's highest that its table does not
    /// record, left pending (only when the mismatch was accepted).
    pub missing: Vec<Version>,
}

/// Decides what to record. `project` is every version of the project's
/// migrations; `history` is the tool's table for [`Request::From`] (ignored
/// for [`Request::AtVersion`]); `table` names it in messages.
pub fn plan(
    project: &[Version],
    at: Option<&Version>,
    history: Option<&ExternalHistory>,
    table: &str,
    allow_mismatch: bool,
) -> Result<Baseline, BaselineError> {
    let mut project: Vec<&Version> = project.iter().collect();
    project.sort();
    project.dedup();
    let claim = match (at, history) {
        (Some(at), _) => Claim {
            through: Some((at.clone(), false)),
            listed: Vec::new(),
        },
        (None, Some(history)) => claim(history)?,
        (None, None) => Claim::default(),
    };
    if claim.through.is_none() && claim.listed.is_empty() {
        return Err(BaselineError::Empty {
            table: table.to_owned(),
        });
    }

    let mut applied: BTreeSet<&Version> = BTreeSet::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut highest: Option<Version> = None;
    if let Some((through, must_exist)) = &claim.through {
        if *must_exist && !project.contains(&through) {
            unknown.push(through.to_string());
        }
        applied.extend(project.iter().copied().filter(|v| *v <= through));
        highest = Some(through.clone());
    }
    for raw in &claim.listed {
        match Version::parse(raw) {
            Ok(version) => {
                match project.iter().find(|v| ***v == version) {
                    Some(known) => {
                        applied.insert(known);
                    }
                    None => unknown.push(raw.clone()),
                }
                if highest.as_ref().is_none_or(|h| *h < version) {
                    highest = Some(version);
                }
            }
            Err(_) => unknown.push(raw.clone()),
        }
    }
    let missing: Vec<Version> = match &highest {
        Some(highest) => project
            .iter()
            .filter(|v| **v <= highest && !applied.contains(*v))
            .map(|v| (*v).clone())
            .collect(),
        None => Vec::new(),
    };
    if !allow_mismatch && (!unknown.is_empty() || !missing.is_empty()) {
        return Err(BaselineError::Mismatch {
            table: table.to_owned(),
            unknown,
            missing: missing.iter().map(Version::to_string).collect(),
        });
    }
    if applied.is_empty() {
        return Err(match at {
            Some(at) => BaselineError::NothingAtOrBelow(at.clone()),
            None => BaselineError::Empty {
                table: table.to_owned(),
            },
        });
    }
    Ok(Baseline {
        versions: applied.into_iter().cloned().collect(),
        unknown,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &[&str]) -> Vec<Version> {
        list.iter().map(|v| Version::parse(v).unwrap()).collect()
    }

    fn texts(list: &[Version]) -> Vec<String> {
        list.iter().map(Version::to_string).collect()
    }

    fn flyway(rank: i64, version: Option<&str>, kind: &str, success: bool) -> FlywayRow {
        FlywayRow {
            installed_rank: rank,
            version: version.map(str::to_owned),
            description: String::new(),
            kind: kind.to_owned(),
            success,
        }
    }

    fn from(history: &ExternalHistory, project: &[&str]) -> Result<Baseline, BaselineError> {
        let table = history.source().default_table();
        plan(&versions(project), None, Some(history), table, false)
    }

    #[test]
    fn requests_need_exactly_one_of_version_and_from() {
        assert_eq!(
            Request::parse(Some(" 0002 "), None, None),
            Ok(Request::AtVersion(Version::parse("2").unwrap()))
        );
        assert_eq!(
            Request::parse(None, Some("flyway"), None),
            Ok(Request::From {
                source: Source::Flyway,
                table: TableName::parse("flyway_schema_history").unwrap()
            })
        );
        assert_eq!(
            Request::parse(None, Some("dbmate"), Some("app.migrations")),
            Ok(Request::From {
                source: Source::Dbmate,
                table: TableName::parse("app.migrations").unwrap()
            })
        );
        let field = |r: Result<Request, InvalidRequest>| r.unwrap_err().field;
        assert_eq!(field(Request::parse(None, None, None)), "version");
        assert_eq!(field(Request::parse(Some(""), Some(" "), None)), "version");
        assert_eq!(
            field(Request::parse(Some("1"), Some("flyway"), None)),
            "from"
        );
        assert_eq!(field(Request::parse(Some("1"), None, Some("t"))), "table");
        assert_eq!(field(Request::parse(Some("v1"), None, None)), "version");
        assert_eq!(field(Request::parse(None, Some("liquibase"), None)), "from");
        assert_eq!(
            field(Request::parse(
                None,
                Some("dbmate"),
                Some("x; DROP TABLE y")
            )),
            "table"
        );
    }

    #[test]
    fn table_names_are_plain_identifiers_and_quote_safely() {
        let t = TableName::parse("app.schema_migrations").unwrap();
        assert_eq!(t.quoted_pg(), "\"app\".\"schema_migrations\"");
        assert_eq!(t.quoted_mysql(), "`app`.`schema_migrations`");
        assert_eq!(t.to_string(), "app.schema_migrations");
        assert_eq!(TableName::parse("t$1").unwrap().quoted_pg(), "\"t$1\"");
        for bad in ["", "a.b.c", "1abc", "a b", "a\"b", "a`b", ".t", "t.", "a-b"] {
            assert!(TableName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(TableName::parse(&"a".repeat(64)).is_err());
    }

    #[test]
    fn explicit_version_marks_everything_at_or_below_it() {
        let project = versions(&["1", "2", "2.1", "3", "10"]);
        let at = Version::parse("2.5").unwrap();
        let b = plan(&project, Some(&at), None, "", false).unwrap();
        assert_eq!(texts(&b.versions), ["1", "2", "2.1"]);
        // A version below every migration has nothing to record.
        let err = plan(
            &project,
            Some(&Version::parse("0").unwrap()),
            None,
            "",
            false,
        );
        assert_eq!(err.unwrap_err().code(), "nothing_to_baseline");
    }

    #[test]
    fn flyway_successful_versioned_rows_count() {
        let history = ExternalHistory::Flyway(vec![
            flyway(3, Some("1.1"), "SQL", true),
            flyway(1, Some("0"), "SCHEMA", true),
            flyway(2, Some("1"), "SQL", true),
            flyway(4, None, "SQL", true), // repeatable R__
            flyway(5, Some("2"), "JDBC", true),
        ]);
        let b = from(&history, &["1", "1.1", "2", "3"]).unwrap();
        assert_eq!(texts(&b.versions), ["1", "1.1", "2"]);
        assert!(b.unknown.is_empty() && b.missing.is_empty());
    }

    #[test]
    fn flyway_baseline_row_covers_everything_below_it() {
        let history = ExternalHistory::Flyway(vec![
            flyway(1, Some("5"), "BASELINE", true),
            flyway(2, Some("6"), "SQL", true),
        ]);
        // The baseline version itself need not be a migration of the project.
        let b = from(&history, &["1", "4.9", "6", "7"]).unwrap();
        assert_eq!(texts(&b.versions), ["1", "4.9", "6"]);
    }

    #[test]
    fn flyway_undo_and_delete_rows_take_versions_back() {
        let history = ExternalHistory::Flyway(vec![
            flyway(1, Some("1"), "SQL", true),
            flyway(2, Some("2"), "SQL", true),
            flyway(3, Some("3"), "SQL", true),
            flyway(4, Some("3"), "UNDO_SQL", true),
        ]);
        let b = from(&history, &["1", "2", "3"]).unwrap();
        assert_eq!(texts(&b.versions), ["1", "2"]);
        let history = ExternalHistory::Flyway(vec![
            flyway(1, Some("1"), "SQL", true),
            flyway(2, Some("2"), "SQL", true),
            flyway(3, Some("2"), "DELETE", true),
        ]);
        let b = from(&history, &["1", "2"]).unwrap();
        assert_eq!(texts(&b.versions), ["1"]);
    }

    #[test]
    fn flyway_failed_migration_is_refused_unless_it_later_succeeded() {
        let history = ExternalHistory::Flyway(vec![
            flyway(1, Some("1"), "SQL", true),
            flyway(2, Some("2"), "SQL", false),
        ]);
        let err = from(&history, &["1", "2"]).unwrap_err();
        assert_eq!(err.code(), "external_dirty");
        assert!(err.to_string().contains("version 2"), "{err}");
        assert!(err.to_string().contains("flyway repair"), "{err}");
        let history = ExternalHistory::Flyway(vec![
            flyway(1, Some("1"), "SQL", false),
            flyway(2, Some("1"), "SQL", true),
        ]);
        assert_eq!(texts(&from(&history, &["1"]).unwrap().versions), ["1"]);
    }

    #[test]
    fn golang_migrate_row_means_everything_up_to_it() {
        let history = ExternalHistory::GolangMigrate(vec![GolangMigrateRow {
            version: 20240102000000,
            dirty: false,
        }]);
        let b = from(
            &history,
            &["20240101000000", "20240102000000", "20240103000000"],
        )
        .unwrap();
        assert_eq!(texts(&b.versions), ["20240101000000", "20240102000000"]);
    }

    #[test]
    fn golang_migrate_dirty_is_refused_with_the_fix() {
        let history = ExternalHistory::GolangMigrate(vec![GolangMigrateRow {
            version: 3,
            dirty: true,
        }]);
        let err = from(&history, &["1", "2", "3"]).unwrap_err();
        assert_eq!(err.code(), "external_dirty");
        assert!(err.to_string().contains("migrate force 3"), "{err}");
    }

    #[test]
    fn golang_migrate_version_must_be_a_project_version() {
        let history = ExternalHistory::GolangMigrate(vec![GolangMigrateRow {
            version: 4,
            dirty: false,
        }]);
        let err = from(&history, &["1", "2", "3"]).unwrap_err();
        assert_eq!(
            err,
            BaselineError::Mismatch {
                table: "schema_migrations".into(),
                unknown: vec!["4".into()],
                missing: vec![],
            }
        );
        let accepted = plan(
            &versions(&["1", "2", "3"]),
            None,
            Some(&history),
            "schema_migrations",
            true,
        )
        .unwrap();
        assert_eq!(texts(&accepted.versions), ["1", "2", "3"]);
        assert_eq!(accepted.unknown, ["4"]);
    }

    #[test]
    fn empty_tables_have_nothing_to_adopt() {
        for history in [
            ExternalHistory::GolangMigrate(vec![]),
            ExternalHistory::Dbmate(vec![]),
            ExternalHistory::Flyway(vec![flyway(1, None, "SQL", true)]),
        ] {
            let err = from(&history, &["1"]).unwrap_err();
            assert_eq!(err.code(), "nothing_to_baseline", "{history:?}");
        }
    }

    #[test]
    fn dbmate_versions_are_canonicalised() {
        let history = ExternalHistory::Dbmate(vec!["001".into(), "002".into()]);
        let b = from(&history, &["1", "2", "3"]).unwrap();
        assert_eq!(texts(&b.versions), ["1", "2"]);
    }

    fn goose(id: i64, version_id: i64, is_applied: bool) -> GooseRow {
        GooseRow {
            id,
            version_id,
            is_applied,
        }
    }

    #[test]
    fn goose_latest_row_of_each_version_decides() {
        let history = ExternalHistory::Goose(vec![
            goose(1, 0, true), // goose's own first row
            goose(2, 1, true),
            goose(3, 2, true),
            // 3: applied, rolled back, applied again.
            goose(4, 3, true),
            goose(5, 3, false),
            goose(7, 3, true),
            // 4: applied, then rolled back last (rows out of id order).
            goose(8, 4, false),
            goose(6, 4, true),
        ]);
        let b = from(&history, &["1", "2", "3", "4"]).unwrap();
        assert_eq!(texts(&b.versions), ["1", "2", "3"]);
        assert!(b.unknown.is_empty() && b.missing.is_empty());
        assert_eq!(history.source().default_table(), "goose_db_version");
    }

    #[test]
    fn goose_rolled_back_versions_below_applied_ones_are_gaps() {
        let history = ExternalHistory::Goose(vec![
            goose(1, 0, true),
            goose(2, 1, true),
            goose(3, 2, true),
            goose(4, 3, true),
            goose(5, 2, false),
        ]);
        let err = from(&history, &["1", "2", "3"]).unwrap_err();
        assert_eq!(
            err,
            BaselineError::Mismatch {
                table: "goose_db_version".into(),
                unknown: vec![],
                missing: vec!["2".into()],
            }
        );
    }

    #[test]
    fn goose_with_only_its_own_row_has_nothing_to_adopt() {
        let history = ExternalHistory::Goose(vec![goose(1, 0, true), goose(2, 1, false)]);
        assert_eq!(
            from(&history, &["1"]).unwrap_err().code(),
            "nothing_to_baseline"
        );
        assert_eq!(
            Request::parse(None, Some("goose"), None),
            Ok(Request::From {
                source: Source::Goose,
                table: TableName::parse("goose_db_version").unwrap()
            })
        );
    }

    #[test]
    fn unknown_versions_and_gaps_are_refused_with_both_lists() {
        let history = ExternalHistory::Dbmate(vec![
            "20230101000000".into(),
            "20240101000000".into(),
            "20240103000000".into(),
            "not-a-version".into(),
        ]);
        let project = [
            "20240101000000",
            "20240102000000",
            "20240103000000",
            "20240104000000",
        ];
        let err = from(&history, &project).unwrap_err();
        assert_eq!(
            err,
            BaselineError::Mismatch {
                table: "schema_migrations".into(),
                unknown: vec!["20230101000000".into(), "not-a-version".into()],
                missing: vec!["20240102000000".into()],
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("20230101000000, not-a-version"),
            "{message}"
        );
        assert!(
            message.contains("does not record: 20240102000000"),
            "{message}"
        );
        assert!(message.contains("allow_mismatch"), "{message}");

        // Accepted: only what both know is recorded; the gap stays pending.
        let b = plan(
            &versions(&project),
            None,
            Some(&history),
            "schema_migrations",
            true,
        )
        .unwrap();
        assert_eq!(texts(&b.versions), ["20240101000000", "20240103000000"]);
        assert_eq!(texts(&b.missing), ["20240102000000"]);
        assert_eq!(b.unknown.len(), 2);
    }

    #[test]
    fn flyway_gaps_above_the_baseline_are_reported() {
        let history = ExternalHistory::Flyway(vec![
            flyway(1, Some("1"), "BASELINE", true),
            flyway(2, Some("3"), "SQL", true),
        ]);
        let err = from(&history, &["1", "2", "3"]).unwrap_err();
        assert_eq!(err.code(), "baseline_mismatch");
        assert!(err.to_string().contains("does not record: 2"), "{err}");
    }

    #[test]
    fn long_lists_are_shortened() {
        let history = ExternalHistory::Dbmate((100..130).map(|v| v.to_string()).collect());
        let message = from(&history, &["1"]).unwrap_err().to_string();
        assert!(message.contains("119 and 10 more"), "{message}");
        assert!(!message.contains("120"), "{message}");
    }

    #[test]
    fn only_fresh_targets_are_baselined() {
        assert_eq!(ensure_fresh(0, 0, None), Ok(()));
        assert_eq!(
            ensure_fresh(2, 0, None).unwrap_err().code(),
            "target_not_empty"
        );
        assert_eq!(
            ensure_fresh(0, 1, None).unwrap_err().code(),
            "target_not_empty"
        );
        let dirty = ensure_fresh(0, 0, Some("7")).unwrap_err();
        assert_eq!(dirty.code(), "target_dirty");
        assert!(dirty.to_string().contains("version 7"));
    }
}
