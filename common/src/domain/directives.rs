//! What a migration's SQL says about how it must run.
//!
//! PostgreSQL refuses some statements inside a transaction block
//! (`CREATE INDEX CONCURRENTLY`, `VACUUM`, …). A migration holding one runs
//! statement by statement instead of in one transaction. Authors can also
//! declare it with the directive comment `-- migrate-hub:no-transaction`.

/// The directive comment that marks a migration as non-transactional.
pub const NO_TRANSACTION: &str = "migrate-hub:no-transaction";

/// Whether the PostgreSQL script must run outside a transaction block.
pub fn needs_no_transaction(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    if lower
        .lines()
        .any(|l| l.trim_start().starts_with("--") && l.contains(NO_TRANSACTION))
    {
        return true;
    }
    // Only code counts: drop line comments before looking for keywords.
    let code: String = lower
        .lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<&str> = code
        .split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .filter(|w| !w.is_empty())
        .collect();
    let pair = |a: &str, b: &str| words.windows(2).any(|w| w[0] == a && w[1] == b);
    pair("index", "concurrently")
        || (words.contains(&"reindex") && words.contains(&"concurrently"))
        || words.contains(&"vacuum")
        || pair("alter", "system")
        || pair("create", "database")
        || pair("drop", "database")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_statements_postgres_refuses_in_a_transaction() {
        assert!(needs_no_transaction(
            "CREATE INDEX CONCURRENTLY i ON t (a);"
        ));
        assert!(needs_no_transaction(
            "create unique index concurrently if not exists i on t(a);"
        ));
        assert!(needs_no_transaction("DROP INDEX CONCURRENTLY i;"));
        assert!(needs_no_transaction("VACUUM ANALYZE t;"));
        assert!(needs_no_transaction("REINDEX INDEX CONCURRENTLY i;"));
        assert!(needs_no_transaction("ALTER SYSTEM SET work_mem = '64MB';"));
    }

    #[test]
    fn honours_the_directive() {
        assert!(needs_no_transaction(
            "-- migrate-hub:no-transaction\nUPDATE t SET a = 1;"
        ));
    }

    #[test]
    fn ordinary_ddl_stays_transactional() {
        assert!(!needs_no_transaction("CREATE INDEX i ON t (a);"));
        assert!(!needs_no_transaction(
            "CREATE TABLE concurrently_log (id int);"
        ));
        assert!(!needs_no_transaction(
            "-- we do not use CREATE INDEX CONCURRENTLY here\nCREATE INDEX i ON t (a);"
        ));
        assert!(!needs_no_transaction("REINDEX INDEX i;"));
    }
}
