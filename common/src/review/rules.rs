//! The catalogue of analyzers: one entry per stable code, with its default
//! severity and fix. `docs/SQL_Review.md` describes each; a test keeps the
//! two in step.

use serde::Serialize;

use super::Severity;

/// What kind of risk an analyzer looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Parse,
    Destructive,
    BackwardIncompatible,
    DataDependent,
    Locking,
    Hygiene,
}

/// One analyzer: its code, default severity and fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Analyzer {
    pub code: &'static str,
    pub category: Category,
    /// `postgres`, `mysql` or both.
    pub engines: &'static [&'static str],
    pub severity: Severity,
    pub summary: &'static str,
    pub hint: &'static str,
}

/// A statement the engine's grammar does not accept.
pub const PARSE: &str = "parse";

const BOTH: &[&str] = &["postgres", "mysql"];
const PG: &[&str] = &["postgres"];
const MY: &[&str] = &["mysql"];

macro_rules! analyzers {
    ($( $code:literal, $category:ident, $engines:expr, $severity:ident, $summary:literal, $hint:literal; )*) => {
        /// Every analyzer, in the order the documentation lists them.
        pub const ANALYZERS: &[Analyzer] = &[
            $( Analyzer {
                code: $code,
                category: Category::$category,
                engines: $engines,
                severity: Severity::$severity,
                summary: $summary,
                hint: $hint,
            }, )*
        ];
    };
}

analyzers! {
    "parse", Parse, BOTH, Warning,
        "a statement the engine's grammar does not accept (so nothing else was checked in it)",
        "check the statement runs on the server; if it does, report the parser gap and review the statement by hand";
    "drop-schema", Destructive, BOTH, Error,
        "DROP SCHEMA / DROP DATABASE: every object and row in it is gone",
        "drop in a later release, after a backup, once nothing uses it";
    "drop-table", Destructive, BOTH, Error,
        "DROP TABLE of a table this run did not create",
        "rename the table aside first and drop it in a later release, once no code reads it";
    "drop-column", Destructive, BOTH, Error,
        "DROP COLUMN: the data is gone and running code that still reads it breaks",
        "stop reading and writing the column in a release before, then drop it";
    "truncate", Destructive, BOTH, Error,
        "TRUNCATE empties the table",
        "delete the rows you mean with a WHERE clause, or move the data aside first";
    "dml-without-where", Destructive, BOTH, Warning,
        "DELETE or UPDATE without WHERE touches every row of an existing table",
        "add a WHERE clause; for large tables, update in batches";
    "rename-table", BackwardIncompatible, BOTH, Error,
        "renaming a table breaks every running query that names it",
        "create the new table (or a view under the old name) and move readers and writers over before removing the old name";
    "rename-column", BackwardIncompatible, BOTH, Error,
        "renaming a column breaks every running query that names it",
        "add the new column, write both, backfill, move readers, then drop the old one";
    "set-not-null", BackwardIncompatible, BOTH, Warning,
        "NOT NULL added to an existing column: writers that still send NULL fail, and existing NULLs make it fail",
        "backfill the NULLs and make sure every writer sets the column before adding NOT NULL";
    "change-column-type", BackwardIncompatible, BOTH, Warning,
        "a column's type changes under running code (values may be narrowed or refused)",
        "add a column of the new type, backfill it, move readers and writers, then drop the old one";
    "unique-on-existing", DataDependent, BOTH, Warning,
        "a unique index or constraint on an existing table fails if duplicates exist",
        "look for duplicates first (GROUP BY … HAVING count(*) > 1) and clean them up in an earlier migration";
    "not-null-column-without-default", DataDependent, BOTH, Error,
        "ADD COLUMN … NOT NULL without DEFAULT on an existing table",
        "add the column with a DEFAULT, or nullable, backfill it, then add NOT NULL";
    "validates-existing-rows", DataDependent, BOTH, Warning,
        "a FOREIGN KEY or CHECK added to an existing table is checked against every row: it fails if one does not satisfy it",
        "check the existing rows satisfy it first; on PostgreSQL add it NOT VALID and VALIDATE CONSTRAINT separately";
    "index-not-concurrent", Locking, PG, Warning,
        "CREATE INDEX without CONCURRENTLY blocks writes to the table for the whole build",
        "CREATE INDEX CONCURRENTLY, in a migration of its own (it runs outside a transaction)";
    "drop-index-not-concurrent", Locking, PG, Warning,
        "DROP INDEX without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on the table",
        "DROP INDEX CONCURRENTLY, in a migration of its own (it runs outside a transaction)";
    "concurrently-in-transaction", Locking, PG, Error,
        "CONCURRENTLY inside a transaction: PostgreSQL refuses it, the script cannot run",
        "put the statement in a migration of its own, with `-- migrate-hub:no-transaction` if needed, and no BEGIN around it";
    "type-change-rewrites", Locking, PG, Warning,
        "ALTER COLUMN TYPE rewrites the table and its indexes under an ACCESS EXCLUSIVE lock (except binary-compatible changes such as varchar(n) to text)",
        "add a new column, backfill in batches, switch over; or check the change is binary-compatible";
    "volatile-default", Locking, PG, Warning,
        "ADD COLUMN with a volatile DEFAULT (random(), gen_random_uuid(), clock_timestamp(), nextval/serial …) rewrites the table under an ACCESS EXCLUSIVE lock",
        "add the column without a default (or with a constant one), set the default after, backfill in batches";
    "constraint-without-not-valid", Locking, PG, Warning,
        "ADD FOREIGN KEY / CHECK without NOT VALID scans the table while holding a lock that blocks writes",
        "ADD CONSTRAINT … NOT VALID, then ALTER TABLE … VALIDATE CONSTRAINT in a later statement or migration";
    "constraint-without-index", Locking, PG, Warning,
        "ADD PRIMARY KEY / UNIQUE without USING INDEX builds the index while blocking writes",
        "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT … PRIMARY KEY / UNIQUE USING INDEX";
    "vacuum-full", Locking, PG, Warning,
        "VACUUM FULL rewrites the table under an ACCESS EXCLUSIVE lock",
        "use plain VACUUM, or pg_repack outside the migration";
    "cluster", Locking, PG, Warning,
        "CLUSTER rewrites the table under an ACCESS EXCLUSIVE lock",
        "run it in a maintenance window outside migrations, or use pg_repack";
    "lock-table", Locking, BOTH, Warning,
        "an explicit LOCK TABLE(S) blocks other sessions for as long as the migration runs",
        "drop the explicit lock; if it is needed, keep the locked part short and set lock_timeout";
    "transaction-control", Locking, PG, Error,
        "BEGIN / COMMIT / ROLLBACK inside a migration the hub already runs in a transaction",
        "remove the transaction statements: the hub wraps the script in one transaction (or mark it `-- migrate-hub:no-transaction`)";
    "mysql-copy-alter", Locking, MY, Warning,
        "an ALTER that changes a column's definition (MODIFY / CHANGE / type) may copy the table, blocking writes, and no ALGORITHM/LOCK says otherwise",
        "state ALGORITHM=INPLACE (or INSTANT), LOCK=NONE so the server refuses instead of copying, or use an online schema change tool";
    "mysql-multiple-alters", Locking, MY, Warning,
        "several ALTER TABLE statements on one table: each may rebuild it",
        "merge them into one ALTER TABLE with comma-separated changes";
    "mysql-mixed-ddl-dml", Locking, MY, Warning,
        "DDL and data changes in one script: MySQL commits each DDL statement, so a failure leaves the script half-applied",
        "put schema changes and data changes in separate migrations";
    "table-without-primary-key", Hygiene, BOTH, Warning,
        "CREATE TABLE without a primary key",
        "add a primary key (replication, online schema changes and row-based tooling rely on one)";
    "down-absent", Hygiene, BOTH, Error,
        "the migration has no down script, and this environment's policy wants every migration to be reversible",
        "write the down script (empty if rolling back needs no SQL), or waive it with the reason it cannot be undone";
    "allow-directive", Hygiene, BOTH, Error,
        "a `-- migrate-hub:allow` directive that names no known analyzer or gives no reason: it waives nothing",
        "write `-- migrate-hub:allow CODE reason` with a code from this page and why the finding is acceptable";
}

/// The analyzer of `code`.
///
/// # Panics
/// On an unknown code: the analyzers only report codes of the catalogue.
pub(super) fn analyzer(code: &str) -> &'static Analyzer {
    ANALYZERS
        .iter()
        .find(|a| a.code == code)
        .unwrap_or_else(|| panic!("analyzer {code} is not in the catalogue"))
}
