//! Reading migration folders in the layouts people already have.
//!
//! | layout | files |
//! |---|---|
//! | Flyway | `V<version>__<name>.sql` (+ optional `U<version>__<name>.sql` undo) |
//! | golang-migrate | `<version>_<name>.up.sql` + `<version>_<name>.down.sql` |
//! | dbmate | `<version>_<name>.sql` with `-- migrate:up` / `-- migrate:down` sections |
//! | goose | `<version>_<name>.sql` with `-- +goose Up` / `-- +goose Down` sections |
//! | diesel | `<version>_<name>/up.sql` + `<version>_<name>/down.sql` |
//!
//! The layout is detected from the file names; every file must belong to the
//! one detected layout, so a stray file is reported instead of ignored.
//! dbmate and goose name their files alike, so their contents decide: every
//! file must carry the one tool's up marker.
//!
//! goose's annotations keep their meaning: a `-- +goose StatementBegin` …
//! `-- +goose StatementEnd` block stays in the script and the statement
//! splitters send it as one statement; `-- +goose NO TRANSACTION` stays in
//! the up script (see [`super::directives::needs_no_transaction`]);
//! `-- +goose ENVSUB ON` is refused, since the hub does not substitute
//! environment variables and the script would run differently.
//!
//! Each tool's own reading of its files is kept: an up file that is empty is
//! a no-op version (golang-migrate and dbmate apply it by recording it); a
//! down file (or dbmate `-- migrate:down` section, or Flyway `U` file) that
//! exists is a down script even when it is empty ("rolling back needs no
//! SQL"), and a missing one means the version cannot be rolled back.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{checksum::Checksum, version::Version};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    Flyway,
    GolangMigrate,
    Dbmate,
    Goose,
    Diesel,
}

/// One migration read from the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedMigration {
    pub version: Version,
    pub name: String,
    pub up_sql: String,
    /// `None`: no down file, so the version cannot be rolled back.
    pub down_sql: Option<String>,
}

impl ImportedMigration {
    pub fn checksum(&self) -> Checksum {
        Checksum::of(&self.up_sql, self.down_sql.as_deref())
    }

    /// Whether the stored migration with `checksum` (and a down script or
    /// not: `reversible`) is this one, so importing it again changes nothing.
    ///
    /// Before absent and empty down scripts were told apart, an empty down
    /// file was imported as "cannot be rolled back", hashed over its text.
    /// Re-importing that unchanged file must stay a no-op: the stored
    /// version keeps its meaning (it is immutable once applied), and the
    /// import reports it unchanged instead of as a conflict.
    pub fn matches_stored(&self, checksum: &str, reversible: bool) -> bool {
        if self.checksum().as_str() == checksum {
            return true;
        }
        match &self.down_sql {
            Some(down) if !reversible && down.trim().is_empty() => {
                Checksum::of_stored(&self.up_sql, down, false).as_str() == checksum
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("no migration files were given")]
    Empty,
    #[error(
        "the files do not follow one known layout (Flyway, golang-migrate, dbmate, goose or diesel); first unrecognised file: {0}"
    )]
    UnknownLayout(String),
    #[error("{path}: {reason}")]
    BadFile { path: String, reason: String },
    #[error("version {version} appears more than once ({first} and {second})")]
    DuplicateVersion {
        version: String,
        first: String,
        second: String,
    },
    #[error("version {version} has a down script but no up script")]
    MissingUp { version: String },
}

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

fn parent_name(path: &str) -> Option<&str> {
    let mut parts = path.rsplit(['/', '\\']);
    parts.next()?;
    parts.next()
}

/// `20190101000000`, `1_1` (Flyway), `2019-01-01-000000` (diesel) → a version.
fn parse_version(raw: &str, path: &str) -> Result<Version, ImportError> {
    let canonical: String = if raw.contains('-') {
        raw.chars().filter(|c| *c != '-').collect()
    } else {
        raw.replace('_', ".")
    };
    Version::parse(&canonical).map_err(|e| ImportError::BadFile {
        path: path.to_owned(),
        reason: format!("version {raw:?}: {e}"),
    })
}

/// How one file fits a layout: (version text, name, which script).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Up,
    Down,
    /// dbmate: both scripts in one file.
    Both,
}

fn classify(path: &str, layout: Layout) -> Option<(String, String, Part)> {
    let name = file_name(path);
    match layout {
        Layout::Flyway => {
            let (kind, rest) = (name.get(..1)?, name.get(1..)?);
            let part = match kind {
                "V" => Part::Up,
                "U" => Part::Down,
                _ => return None,
            };
            let rest = rest.strip_suffix(".sql")?;
            let (version, title) = rest.split_once("__")?;
            version
                .chars()
                .all(|c| c.is_ascii_digit() || c == '_' || c == '.')
                .then_some(())?;
            (!version.is_empty()).then_some(())?;
            Some((version.to_owned(), title.replace('_', " "), part))
        }
        Layout::GolangMigrate => {
            let (stem, part) = if let Some(s) = name.strip_suffix(".up.sql") {
                (s, Part::Up)
            } else {
                (name.strip_suffix(".down.sql")?, Part::Down)
            };
            let (version, title) = stem.split_once('_').unwrap_or((stem, ""));
            version.chars().all(|c| c.is_ascii_digit()).then_some(())?;
            (!version.is_empty()).then_some(())?;
            Some((version.to_owned(), title.to_owned(), part))
        }
        Layout::Dbmate | Layout::Goose => {
            let stem = name.strip_suffix(".sql")?;
            if stem.ends_with(".up") || stem.ends_with(".down") {
                return None;
            }
            let (version, title) = stem.split_once('_')?;
            version.chars().all(|c| c.is_ascii_digit()).then_some(())?;
            (!version.is_empty()).then_some(())?;
            Some((version.to_owned(), title.to_owned(), Part::Both))
        }
        Layout::Diesel => {
            let part = match name {
                "up.sql" => Part::Up,
                "down.sql" => Part::Down,
                _ => return None,
            };
            let dir = parent_name(path)?;
            let (version, title) = dir.split_once('_')?;
            version
                .chars()
                .all(|c| c.is_ascii_digit() || c == '-')
                .then_some(())?;
            version
                .starts_with(|c: char| c.is_ascii_digit())
                .then_some(())?;
            Some((version.to_owned(), title.to_owned(), part))
        }
    }
}

/// Files the importer skips in every layout: documentation and dotfiles.
fn ignorable(path: &str) -> bool {
    let name = file_name(path);
    name.starts_with('.') || !name.ends_with(".sql")
}

/// The layout every (non-ignorable) file fits by its name, trying the most
/// specific first. Names alone cannot tell goose from dbmate: both come out
/// as [`Layout::Dbmate`], which [`read`] settles by the files' contents.
pub fn detect(paths: &[&str]) -> Result<Layout, ImportError> {
    let files: Vec<&str> = paths.iter().copied().filter(|p| !ignorable(p)).collect();
    if files.is_empty() {
        return Err(ImportError::Empty);
    }
    for layout in [
        Layout::Diesel,
        Layout::GolangMigrate,
        Layout::Flyway,
        Layout::Dbmate,
    ] {
        if files.iter().all(|p| classify(p, layout).is_some()) {
            return Ok(layout);
        }
    }
    // Name the first file that fits no layout at all, or else the first one
    // that breaks the layout most files follow.
    let stray = files
        .iter()
        .find(|p| {
            [
                Layout::Diesel,
                Layout::GolangMigrate,
                Layout::Flyway,
                Layout::Dbmate,
            ]
            .iter()
            .all(|l| classify(p, *l).is_none())
        })
        .unwrap_or(&files[0]);
    Err(ImportError::UnknownLayout((*stray).to_owned()))
}

/// dbmate keeps both scripts in one file, after `-- migrate:up` and
/// `-- migrate:down` markers; without the down marker there is no down script.
fn split_dbmate(path: &str, content: &str) -> Result<(String, Option<String>), ImportError> {
    #[derive(PartialEq)]
    enum Section {
        Before,
        Up,
        Down,
    }
    let (mut section, mut up, mut down, mut saw_up, mut saw_down) =
        (Section::Before, String::new(), String::new(), false, false);
    for line in content.split_inclusive('\n') {
        let marker = line.trim();
        if marker.starts_with("-- migrate:up") {
            section = Section::Up;
            saw_up = true;
        } else if marker.starts_with("-- migrate:down") {
            section = Section::Down;
            saw_down = true;
        } else if section == Section::Up {
            up.push_str(line);
        } else if section == Section::Down {
            down.push_str(line);
        }
    }
    if !saw_up {
        return Err(ImportError::BadFile {
            path: path.to_owned(),
            reason: "no `-- migrate:up` section".into(),
        });
    }
    let up = up.trim();
    let up = if up.is_empty() {
        String::new()
    } else {
        up.to_owned() + "\n"
    };
    Ok((up, saw_down.then(|| down.trim().to_owned())))
}

/// A goose annotation line: `-- +goose <annotation>`, the annotation
/// lowercased with its blanks collapsed (`no transaction`, `statementbegin`).
fn goose_annotation(line: &str) -> Option<String> {
    let text = line.trim().strip_prefix("--")?.trim_start();
    let rest = text
        .get(..6)
        .filter(|p| p.eq_ignore_ascii_case("+goose"))
        .map(|_| &text[6..])?;
    Some(
        rest.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase(),
    )
}

/// Whether a file is goose's (its `-- +goose Up` marker), or dbmate's
/// (`-- migrate:up`); `None` for neither.
fn one_file_layout(content: &str) -> Option<Layout> {
    content.lines().find_map(|line| {
        if goose_annotation(line).as_deref() == Some("up") {
            Some(Layout::Goose)
        } else if line.trim().starts_with("-- migrate:up") {
            Some(Layout::Dbmate)
        } else {
            None
        }
    })
}

/// The annotation goose reads for "run this file outside a transaction",
/// as the importer writes it when it has to carry it into the up script.
const GOOSE_NO_TRANSACTION: &str = "-- +goose NO TRANSACTION";

/// goose keeps both scripts in one file, after `-- +goose Up` and
/// `-- +goose Down`; without the Down annotation there is no down script.
///
/// `StatementBegin`/`StatementEnd` lines stay in the scripts (the splitters
/// honour them) and must pair up within a section. `NO TRANSACTION` is a
/// file-wide annotation that goose usually finds above `-- +goose Up`: it
/// is carried into the up script, where the hub reads it. `ENVSUB` is
/// refused; so are annotations goose does not know and SQL before the Up
/// section, which goose refuses too.
fn split_goose(path: &str, content: &str) -> Result<(String, Option<String>), ImportError> {
    #[derive(PartialEq)]
    enum Section {
        Before,
        Up,
        Down,
    }
    let bad = |line: usize, reason: String| ImportError::BadFile {
        path: path.to_owned(),
        reason: format!("line {line}: {reason}"),
    };
    let (mut section, mut up, mut down) = (Section::Before, String::new(), None::<String>);
    let (mut no_transaction, mut no_transaction_in_up) = (false, false);
    let mut open_block: Option<usize> = None;
    for (index, line) in content.split_inclusive('\n').enumerate() {
        let number = index + 1;
        let annotation = goose_annotation(line);
        match annotation.as_deref() {
            Some(marker @ ("up" | "down")) => {
                if let Some(begin) = open_block {
                    return Err(bad(
                        begin,
                        "`-- +goose StatementBegin` without its `-- +goose StatementEnd`".into(),
                    ));
                }
                match (marker, &section) {
                    ("up", Section::Before) => section = Section::Up,
                    ("down", Section::Up) => {
                        section = Section::Down;
                        down = Some(String::new());
                    }
                    ("down", Section::Before) => {
                        return Err(bad(number, "`-- +goose Down` before `-- +goose Up`".into()));
                    }
                    _ => {
                        return Err(bad(number, format!("a second `-- +goose {marker}` marker")));
                    }
                }
                continue;
            }
            Some("no transaction") => {
                no_transaction = true;
                no_transaction_in_up |= section == Section::Up;
            }
            Some(envsub) if envsub.starts_with("envsub") => {
                return Err(bad(
                    number,
                    "`-- +goose ENVSUB` is not supported: the hub runs scripts as written,                      without substituting environment variables; write the values into the file"
                        .into(),
                ));
            }
            Some("statementbegin") => {
                if section == Section::Before {
                    return Err(bad(
                        number,
                        "`-- +goose StatementBegin` before `-- +goose Up`".into(),
                    ));
                }
                if open_block.is_some() {
                    return Err(bad(
                        number,
                        "`-- +goose StatementBegin` inside another block".into(),
                    ));
                }
                open_block = Some(number);
            }
            Some("statementend") => {
                let Some(_) = open_block.take() else {
                    return Err(bad(
                        number,
                        "`-- +goose StatementEnd` without a `-- +goose StatementBegin`".into(),
                    ));
                };
            }
            Some(other) => {
                return Err(bad(
                    number,
                    format!("unknown goose annotation `+goose {other}`"),
                ));
            }
            None => {}
        }
        match section {
            Section::Before => {
                let text = line.trim();
                if !text.is_empty() && !text.starts_with("--") {
                    return Err(bad(number, "SQL before `-- +goose Up`".into()));
                }
            }
            Section::Up => up.push_str(line),
            Section::Down => down.get_or_insert_with(String::new).push_str(line),
        }
    }
    if section == Section::Before {
        return Err(ImportError::BadFile {
            path: path.to_owned(),
            reason: "no `-- +goose Up` section".into(),
        });
    }
    if let Some(begin) = open_block {
        return Err(bad(
            begin,
            "`-- +goose StatementBegin` without its `-- +goose StatementEnd`".into(),
        ));
    }
    let mut up = up.trim().to_owned();
    if no_transaction && !no_transaction_in_up {
        up = if up.is_empty() {
            GOOSE_NO_TRANSACTION.to_owned()
        } else {
            format!("{GOOSE_NO_TRANSACTION}\n{up}")
        };
    }
    if !up.is_empty() {
        up.push('\n');
    }
    Ok((up, down.map(|d| d.trim().to_owned())))
}

/// dbmate or goose, as every file's content says; a file that is neither,
/// or that breaks the others' layout, is reported.
fn dbmate_or_goose(files: &[(String, String)]) -> Result<Layout, ImportError> {
    let mut found: Option<(Layout, &str)> = None;
    for (path, content) in files.iter().filter(|(p, _)| !ignorable(p)) {
        let Some(layout) = one_file_layout(content) else {
            return Err(ImportError::BadFile {
                path: path.clone(),
                reason: "neither a dbmate file (`-- migrate:up`) nor a goose file (`-- +goose Up`)"
                    .into(),
            });
        };
        match found {
            None => found = Some((layout, path)),
            Some((first, first_path)) if first != layout => {
                return Err(ImportError::BadFile {
                    path: path.clone(),
                    reason: format!(
                        "a {} file among {} files (such as {first_path})",
                        layout_name(layout),
                        layout_name(first)
                    ),
                });
            }
            Some(_) => {}
        }
    }
    Ok(found.map_or(Layout::Dbmate, |(layout, _)| layout))
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Flyway => "Flyway",
        Layout::GolangMigrate => "golang-migrate",
        Layout::Dbmate => "dbmate",
        Layout::Goose => "goose",
        Layout::Diesel => "diesel",
    }
}

/// Reads `files` (path, content) into migrations in version order.
pub fn read(files: &[(String, String)]) -> Result<(Layout, Vec<ImportedMigration>), ImportError> {
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    let layout = match detect(&paths)? {
        Layout::Dbmate => dbmate_or_goose(files)?,
        layout => layout,
    };
    struct Draft {
        name: String,
        up: Option<(String, String)>,
        down: Option<(String, String)>,
    }
    let mut drafts: BTreeMap<Version, Draft> = BTreeMap::new();
    for (path, content) in files.iter().filter(|(p, _)| !ignorable(p)) {
        let (raw_version, name, part) =
            classify(path, layout).expect("detected layout fits every file");
        let version = parse_version(&raw_version, path)?;
        let draft = drafts.entry(version.clone()).or_insert_with(|| Draft {
            name: name.clone(),
            up: None,
            down: None,
        });
        let duplicate = |first: &str| ImportError::DuplicateVersion {
            version: version.to_string(),
            first: first.to_owned(),
            second: path.clone(),
        };
        match part {
            Part::Up => {
                if let Some((first, _)) = &draft.up {
                    return Err(duplicate(first));
                }
                draft.name = name;
                draft.up = Some((path.clone(), content.clone()));
            }
            Part::Down => {
                if let Some((first, _)) = &draft.down {
                    return Err(duplicate(first));
                }
                draft.down = Some((path.clone(), content.clone()));
            }
            Part::Both => {
                if let Some((first, _)) = &draft.up {
                    return Err(duplicate(first));
                }
                let (up, down) = if layout == Layout::Goose {
                    split_goose(path, content)?
                } else {
                    split_dbmate(path, content)?
                };
                draft.up = Some((path.clone(), up));
                draft.down = down.map(|down| (path.clone(), down));
            }
        }
    }
    let mut out = Vec::with_capacity(drafts.len());
    for (version, draft) in drafts {
        let (_, up_sql) = draft.up.ok_or_else(|| ImportError::MissingUp {
            version: version.to_string(),
        })?;
        out.push(ImportedMigration {
            version,
            name: if draft.name.is_empty() {
                "migration".into()
            } else {
                draft.name
            },
            up_sql,
            down_sql: draft.down.map(|(_, d)| d),
        });
    }
    Ok((layout, out))
}

/// The files each version of a folder comes from, in version order: how a
/// report about versions (a conflict, a failed script) is traced back to the
/// files someone has to edit. Files the importer skips are left out. Names
/// are enough for this (they are not for telling goose from dbmate, so no
/// layout is returned: [`read`] says which it is).
pub fn sources(paths: &[&str]) -> Result<BTreeMap<Version, Vec<String>>, ImportError> {
    let layout = detect(paths)?;
    let mut by_version: BTreeMap<Version, Vec<String>> = BTreeMap::new();
    for path in paths.iter().filter(|p| !ignorable(p)) {
        let (raw_version, _, _) = classify(path, layout).expect("detected layout fits every file");
        let version = parse_version(&raw_version, path)?;
        by_version
            .entry(version)
            .or_default()
            .push((*path).to_owned());
    }
    Ok(by_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect()
    }

    #[test]
    fn reads_golang_migrate() {
        let (layout, m) = read(&files(&[
            ("db/000002_orders.up.sql", "CREATE TABLE o();"),
            ("db/000001_users.up.sql", "CREATE TABLE u();"),
            ("db/000001_users.down.sql", "DROP TABLE u;"),
            ("db/README.md", "notes"),
        ]))
        .unwrap();
        assert_eq!(layout, Layout::GolangMigrate);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].version.to_string(), m[0].name.as_str()),
            ("1".into(), "users")
        );
        assert_eq!(m[0].down_sql.as_deref(), Some("DROP TABLE u;"));
        assert_eq!(m[1].down_sql, None, "no down file: not reversible");
    }

    #[test]
    fn sources_name_the_files_of_each_version() {
        let sources = sources(&[
            "db/000002_orders.up.sql",
            "db/000001_users.up.sql",
            "db/000001_users.down.sql",
            "db/README.md",
        ])
        .unwrap();
        let listed: Vec<(String, Vec<String>)> = sources
            .into_iter()
            .map(|(v, p)| (v.to_string(), p))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "1".to_string(),
                    vec![
                        "db/000001_users.up.sql".to_string(),
                        "db/000001_users.down.sql".to_string()
                    ]
                ),
                ("2".to_string(), vec!["db/000002_orders.up.sql".to_string()]),
            ]
        );
    }

    #[test]
    fn reads_flyway_with_undo() {
        let (layout, m) = read(&files(&[
            ("V1__init.sql", "CREATE TABLE a();"),
            ("V1_1__add_col.sql", "ALTER TABLE a ADD b int;"),
            ("U1_1__add_col.sql", "ALTER TABLE a DROP b;"),
            ("V10__later.sql", "SELECT 1;"),
        ]))
        .unwrap();
        assert_eq!(layout, Layout::Flyway);
        let versions: Vec<String> = m.iter().map(|x| x.version.to_string()).collect();
        assert_eq!(versions, ["1", "1.1", "10"]);
        assert_eq!(m[1].name, "add col");
        assert_eq!(m[1].down_sql.as_deref(), Some("ALTER TABLE a DROP b;"));
        assert_eq!(m[0].down_sql, None, "no U file");
    }

    #[test]
    fn reads_dbmate_sections() {
        let (layout, m) = read(&files(&[(
            "20240101120000_create_users.sql",
            "-- migrate:up\nCREATE TABLE users (id int);\n\n-- migrate:down\nDROP TABLE users;\n",
        )]))
        .unwrap();
        assert_eq!(layout, Layout::Dbmate);
        assert_eq!(m[0].up_sql, "CREATE TABLE users (id int);\n");
        assert_eq!(m[0].down_sql.as_deref(), Some("DROP TABLE users;"));
        assert!(
            read(&files(&[("20240101120000_x.sql", "CREATE TABLE x();")])).is_err(),
            "no markers"
        );
    }

    #[test]
    fn reads_goose_sections_told_from_dbmate_by_content() {
        let (layout, m) = read(&files(&[
            (
                "migrations/00001_create_users.sql",
                "-- +goose Up\nCREATE TABLE users (id int);\n\n-- +goose Down\nDROP TABLE users;\n",
            ),
            (
                "migrations/20230101120000_touch.sql",
                "-- touch rows on update\n-- +goose up\n-- +goose StatementBegin\nCREATE FUNCTION touch() RETURNS trigger AS $$\nBEGIN\n  RETURN NEW;\nEND;\n$$ LANGUAGE plpgsql;\n-- +goose StatementEnd\n",
            ),
        ]))
        .unwrap();
        assert_eq!(layout, Layout::Goose);
        assert_eq!(m[0].version.to_string(), "1");
        assert_eq!(m[0].name, "create_users");
        assert_eq!(m[0].up_sql, "CREATE TABLE users (id int);\n");
        assert_eq!(m[0].down_sql.as_deref(), Some("DROP TABLE users;"));
        assert_eq!(m[1].version.to_string(), "20230101120000");
        // The block's annotations stay: the splitters keep it one statement.
        assert!(
            m[1].up_sql
                .starts_with("-- +goose StatementBegin\nCREATE FUNCTION")
        );
        assert!(m[1].up_sql.ends_with("-- +goose StatementEnd\n"));
        assert_eq!(m[1].down_sql, None, "no Down annotation: not reversible");
    }

    #[test]
    fn goose_empty_down_section_is_present() {
        let (_, m) = read(&files(&[
            ("1_a.sql", "-- +goose Up\n-- +goose Down\n"),
            ("2_b.sql", "-- +goose Up\nSELECT 1;\n-- +goose Down\n\n"),
        ]))
        .unwrap();
        assert_eq!(
            (m[0].up_sql.as_str(), m[0].down_sql.as_deref()),
            ("", Some(""))
        );
        assert_eq!(m[1].down_sql.as_deref(), Some(""));
    }

    #[test]
    fn goose_no_transaction_reaches_the_up_script() {
        use crate::domain::directives::needs_no_transaction;
        let (_, m) = read(&files(&[
            (
                "1_index.sql",
                "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY i ON t (a);\n-- +goose Down\nDROP INDEX CONCURRENTLY i;\n",
            ),
            (
                "2_update.sql",
                "-- +goose Up\n-- +goose NO TRANSACTION\nUPDATE t SET a = 1;\n",
            ),
            ("3_plain.sql", "-- +goose Up\nUPDATE t SET a = 2;\n"),
        ]))
        .unwrap();
        assert_eq!(
            m[0].up_sql,
            "-- +goose NO TRANSACTION\nCREATE INDEX CONCURRENTLY i ON t (a);\n"
        );
        assert_eq!(
            m[1].up_sql,
            "-- +goose NO TRANSACTION\nUPDATE t SET a = 1;\n"
        );
        assert!(needs_no_transaction(&m[1].up_sql));
        assert!(!needs_no_transaction(&m[2].up_sql));
    }

    #[test]
    fn goose_files_that_would_run_differently_are_refused() {
        let refused = |content: &str| match read(&files(&[("1_a.sql", content)])) {
            Err(ImportError::BadFile { path, reason }) => {
                assert_eq!(path, "1_a.sql");
                reason
            }
            other => panic!("{content:?}: {other:?}"),
        };
        let reason = refused("-- +goose ENVSUB ON\n-- +goose Up\nCREATE TABLE ${T} ();\n");
        assert!(
            reason.starts_with("line 1: `-- +goose ENVSUB` is not supported"),
            "{reason}"
        );
        let reason = refused("-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n");
        assert!(
            reason.contains("line 2") && reason.contains("StatementEnd"),
            "{reason}"
        );
        let reason = refused(
            "-- +goose Up\n-- +goose StatementBegin\nSELECT 1;\n-- +goose Down\nSELECT 2;\n-- +goose StatementEnd\n",
        );
        assert!(reason.contains("without its"), "{reason}");
        assert!(refused("-- +goose Up\n-- +goose StatementEnd\n").contains("without a"));
        assert!(refused("SELECT 1;\n-- +goose Up\n").contains("SQL before"));
        assert!(
            refused("-- +goose Down\nSELECT 1;\n-- +goose Up\n").contains("before `-- +goose Up`")
        );
        assert!(refused("-- +goose Up\n-- +goose Up\n").contains("a second"));
        assert!(refused("-- +goose Up\n-- +goose Sideways\n").contains("unknown goose annotation"));
    }

    #[test]
    fn dbmate_and_goose_files_do_not_mix_and_others_are_named() {
        let err = read(&files(&[
            ("1_a.sql", "-- migrate:up\nSELECT 1;\n"),
            ("2_b.sql", "-- +goose Up\nSELECT 2;\n"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "2_b.sql: a goose file among dbmate files (such as 1_a.sql)"
        );
        let err = read(&files(&[
            ("1_a.sql", "-- +goose Up\nSELECT 1;\n"),
            ("db/2_b.sql", "SELECT 2;\n"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "db/2_b.sql: neither a dbmate file (`-- migrate:up`) nor a goose file (`-- +goose Up`)"
        );
    }

    #[test]
    fn empty_files_keep_each_tools_meaning() {
        // golang-migrate: an empty up is a no-op version; an empty down file
        // exists, so rolling back needs no SQL; a missing one cannot roll back.
        let (_, m) = read(&files(&[
            ("9_mysql_only_fix.up.sql", ""),
            ("9_mysql_only_fix.down.sql", ""),
            ("10_add.up.sql", "ALTER TABLE a ADD b int;"),
        ]))
        .unwrap();
        assert_eq!(m[0].version.to_string(), "9", "numeric order: 9 < 10");
        assert_eq!(
            (m[0].up_sql.as_str(), m[0].down_sql.as_deref()),
            ("", Some(""))
        );
        assert_eq!(m[1].down_sql, None);
        // dbmate: an empty down section is present; no down marker is absent.
        let (_, m) = read(&files(&[
            ("1_a.sql", "-- migrate:up\n\n-- migrate:down\n"),
            ("2_b.sql", "-- migrate:up\nCREATE TABLE b ();\n"),
        ]))
        .unwrap();
        assert_eq!(
            (m[0].up_sql.as_str(), m[0].down_sql.as_deref()),
            ("", Some(""))
        );
        assert_eq!(m[1].down_sql, None);
        // Flyway: an empty U file is present.
        let (_, m) = read(&files(&[("V1__a.sql", "SELECT 1;"), ("U1__a.sql", "")])).unwrap();
        assert_eq!(m[0].down_sql.as_deref(), Some(""));
    }

    #[test]
    fn reimporting_an_empty_down_file_matches_what_was_stored_before() {
        let (_, m) = read(&files(&[
            ("1_a.up.sql", "SELECT 1;\n"),
            ("1_a.down.sql", "\n"),
        ]))
        .unwrap();
        let m = &m[0];
        assert!(m.matches_stored(m.checksum().as_str(), true));
        // Stored by an older hub: not reversible, hashed over the file's text.
        let older = Checksum::of_stored("SELECT 1;\n", "\n", false);
        assert!(m.matches_stored(older.as_str(), false));
        assert!(!m.matches_stored(older.as_str(), true));
        let other = Checksum::of("SELECT 2;\n", None);
        assert!(!m.matches_stored(other.as_str(), false));
    }

    #[test]
    fn reads_diesel_folders() {
        let (layout, m) = read(&files(&[
            (
                "migrations/2019-01-01-000000_create_users/up.sql",
                "CREATE TABLE users();",
            ),
            (
                "migrations/2019-01-01-000000_create_users/down.sql",
                "DROP TABLE users;",
            ),
            (
                "migrations/00000000000000_diesel_initial_setup/up.sql",
                "SELECT 1;",
            ),
            (
                "migrations/00000000000000_diesel_initial_setup/down.sql",
                "SELECT 2;",
            ),
        ]))
        .unwrap();
        assert_eq!(layout, Layout::Diesel);
        assert_eq!(m[1].version.to_string(), "20190101000000");
        assert_eq!(m[1].name, "create_users");
    }

    #[test]
    fn mixed_or_unknown_files_are_refused() {
        let err = read(&files(&[("V1__a.sql", "x"), ("2_b.up.sql", "y")])).unwrap_err();
        assert!(matches!(err, ImportError::UnknownLayout(_)), "{err}");
        assert!(matches!(
            read(&files(&[("schema.sql", "x")])),
            Err(ImportError::UnknownLayout(_))
        ));
        assert_eq!(read(&[]), Err(ImportError::Empty));
    }

    #[test]
    fn duplicates_and_orphan_downs_are_refused() {
        let err = read(&files(&[("1_a.up.sql", "x"), ("01_b.up.sql", "y")])).unwrap_err();
        assert!(matches!(err, ImportError::DuplicateVersion { .. }), "{err}");
        let err = read(&files(&[("1_a.up.sql", "x"), ("2_b.down.sql", "y")])).unwrap_err();
        assert_eq!(
            err,
            ImportError::MissingUp {
                version: "2".into()
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn detection_never_panics(names in proptest::collection::vec("[A-Za-z0-9_./-]{1,30}", 1..6)) {
            let paths: Vec<&str> = names.iter().map(String::as_str).collect();
            let _ = detect(&paths);
        }
    }
}
