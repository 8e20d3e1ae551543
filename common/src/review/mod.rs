//! SQL review: what a migration script will do to the database it runs on,
//! said before anyone approves it.
//!
//! Each engine's script is read with that engine's own grammar —
//! PostgreSQL's parser (libpg_query, through `pg_query`) and a MySQL-dialect
//! parser (`sqlparser`) — and every statement is handed to the analyzers.
//! An analyzer reports [`Finding`]s: a stable code (see [`ANALYZERS`]), a
//! severity, the statement and line it points at, and how to fix it. A
//! statement the parser does not understand is a [`PARSE`] finding, never a
//! silent pass: an unreviewed statement must not look like a clean one.
//!
//! Pure: no database is consulted. What the reviewer cannot see in the
//! script it learns from the [`Context`]: whether the script runs in one
//! transaction, and which tables the same run created before it (a table
//! created in this run holds no rows yet, so locking it or validating it
//! costs nothing).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::domain::{Engine, directives};

mod mysql;
pub mod policy;
mod postgres;
mod rules;
pub mod run;

pub use mysql::review_mysql;
pub use postgres::review_postgres;
pub use rules::{ANALYZERS, Analyzer, Category, PARSE};

/// How much a finding matters.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    /// The script should not run as written.
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing a reviewer should know about one statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The analyzer's stable code (one of [`ANALYZERS`]).
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    /// 1-based index of the statement in the script.
    pub statement: usize,
    /// 1-based line of the script on which the statement starts.
    pub line: usize,
    /// How to write it instead.
    pub hint: String,
}

/// What the reviewer needs to know beyond the script's text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Whether the script runs as one transaction (PostgreSQL; MySQL
    /// commits DDL implicitly, so its scripts never do).
    pub transactional: bool,
    /// Tables (lower-case, unqualified) created earlier in the same run.
    /// The review adds those the script creates, so one context passed
    /// through a run's migrations in order knows them all.
    pub created_tables: BTreeSet<String>,
}

impl Context {
    /// The context of a script reviewed on its own, for `engine`: a
    /// PostgreSQL script is transactional unless it holds what the executor
    /// runs outside a transaction ([`directives::needs_no_transaction`], the
    /// one rule the executor follows too).
    pub fn for_script(engine: Engine, sql: &str) -> Self {
        Context {
            transactional: engine == Engine::Postgres && !directives::needs_no_transaction(sql),
            created_tables: BTreeSet::new(),
        }
    }

    /// Whether `table` existed before this run (so may hold rows and be
    /// in use).
    fn existing(&self, table: &str) -> bool {
        !self.created_tables.contains(&table.to_ascii_lowercase())
    }
}

/// Reviews `sql` for `engine`, in `ctx` (see [`Context`]).
pub fn review(engine: Engine, sql: &str, ctx: &mut Context) -> Vec<Finding> {
    match engine {
        Engine::Postgres => review_postgres(sql, ctx),
        Engine::Mysql => review_mysql(sql, ctx),
    }
}

/// The tables a PostgreSQL script names (as PostgreSQL's parser reads
/// them, schema-qualified where written), for the pre-flight that looks for
/// sessions holding them; empty for a script that does not parse, and for
/// MySQL scripts (their pre-flight looks at transactions instead).
pub fn tables_touched(engine: Engine, sql: &str) -> Vec<String> {
    match engine {
        Engine::Postgres => pg_query::parse(sql)
            .map(|parsed| parsed.tables())
            .unwrap_or_default(),
        Engine::Mysql => Vec::new(),
    }
}

/// The 1-based line of byte `offset` in `sql`, after skipping the
/// whitespace and comments that precede the statement there.
fn line_at(sql: &str, offset: usize) -> usize {
    let offset = skip_trivia(sql, offset.min(sql.len()));
    sql.as_bytes()[..offset]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn skip_trivia(sql: &str, mut i: usize) -> usize {
    let bytes = sql.as_bytes();
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes[i..].starts_with(b"--") {
            i = bytes[i..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |n| i + n + 1);
        } else if bytes[i..].starts_with(b"/*") && !bytes[i..].starts_with(b"/*!") {
            i = sql[i + 2..]
                .find("*/")
                .map_or(bytes.len(), |n| i + 2 + n + 2);
        } else {
            return i;
        }
    }
}

/// The findings of one statement, before they know where it is.
struct Findings {
    statement: usize,
    line: usize,
    out: Vec<Finding>,
}

impl Findings {
    fn new(statement: usize, line: usize) -> Self {
        Findings {
            statement,
            line,
            out: Vec::new(),
        }
    }

    /// Reports analyzer `code` with its default severity.
    fn add(&mut self, code: &'static str, message: impl Into<String>) {
        let analyzer = rules::analyzer(code);
        self.add_as(code, analyzer.severity, message);
    }

    /// Reports analyzer `code` with `severity` (where one engine makes the
    /// same thing worse than the other).
    fn add_as(&mut self, code: &'static str, severity: Severity, message: impl Into<String>) {
        let analyzer = rules::analyzer(code);
        self.out.push(Finding {
            code,
            severity,
            message: message.into(),
            statement: self.statement,
            line: self.line,
            hint: analyzer.hint.to_owned(),
        });
    }
}

/// The part after the last dot, unquoted and lower-case: how tables are
/// compared. Schemas are not told apart (a run rarely creates `a.t` and
/// alters an existing `b.t`).
fn table_key(name: &str) -> String {
    name.rsplit('.')
        .next()
        .unwrap_or(name)
        .trim_matches(|c| c == '"' || c == '`')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests;
