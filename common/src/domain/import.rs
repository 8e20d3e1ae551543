//! Reading migration folders in the layouts people already have.
//!
//! | layout | files |
//! |---|---|
//! | Flyway | `V<version>__<name>.sql` (+ optional `U<version>__<name>.sql` undo) |
//! | golang-migrate | `<version>_<name>.up.sql` + `<version>_<name>.down.sql` |
//! | dbmate | `<version>_<name>.sql` with `-- migrate:up` / `-- migrate:down` sections |
//! | diesel | `<version>_<name>/up.sql` + `<version>_<name>/down.sql` |
//!
//! The layout is detected from the file names; every file must belong to the
//! one detected layout, so a stray file is reported instead of ignored.
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
        "the files do not follow one known layout (Flyway, golang-migrate, dbmate or diesel); first unrecognised file: {0}"
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
        Layout::Dbmate => {
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

/// The layout every (non-ignorable) file fits, trying the most specific first.
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

/// Reads `files` (path, content) into migrations in version order.
pub fn read(files: &[(String, String)]) -> Result<(Layout, Vec<ImportedMigration>), ImportError> {
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    let layout = detect(&paths)?;
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
                let (up, down) = split_dbmate(path, content)?;
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
/// files someone has to edit. Files the importer skips are left out.
pub fn sources(paths: &[&str]) -> Result<(Layout, BTreeMap<Version, Vec<String>>), ImportError> {
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
    Ok((layout, by_version))
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
        let (layout, sources) = sources(&[
            "db/000002_orders.up.sql",
            "db/000001_users.up.sql",
            "db/000001_users.down.sql",
            "db/README.md",
        ])
        .unwrap();
        assert_eq!(layout, Layout::GolangMigrate);
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
