//! What a migration's SQL says about how it must run.
//!
//! PostgreSQL refuses some statements inside a transaction block
//! (`CREATE INDEX CONCURRENTLY`, `VACUUM`, …). A migration holding one runs
//! statement by statement instead of in one transaction. Authors can also
//! declare it with the directive comment `-- migrate-hub:no-transaction`,
//! or goose's annotation `-- +goose NO TRANSACTION`.

/// The directive comment that marks a migration as non-transactional.
pub const NO_TRANSACTION: &str = "migrate-hub:no-transaction";

/// Whether a line is goose's `-- +goose NO TRANSACTION` annotation (any
/// case, any blanks between its words).
///
/// The hub reads goose's annotation itself rather than having the importer
/// translate it into its own directive: the stored script stays the text of
/// the author's file (what the checksum covers and a reviewer reads), an
/// imported script edited in the hub keeps behaving as it reads, and
/// whether a migration is transactional is still decided in one place,
/// from its text, however the migration arrived.
fn is_goose_no_transaction(line: &str) -> bool {
    let Some(comment) = line.trim().strip_prefix("--") else {
        return false;
    };
    let words: Vec<&str> = comment.split_whitespace().collect();
    matches!(
        words.as_slice(),
        [goose, no, transaction] if goose.eq_ignore_ascii_case("+goose")
            && no.eq_ignore_ascii_case("no")
            && transaction.eq_ignore_ascii_case("transaction")
    )
}

/// Whether the PostgreSQL script must run outside a transaction block.
pub fn needs_no_transaction(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    if lower.lines().any(|l| {
        (l.trim_start().starts_with("--") && l.contains(NO_TRANSACTION))
            || is_goose_no_transaction(l)
    }) {
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

/// Whether a script holds no SQL at all: nothing but whitespace, `--` line
/// comments and `/* … */` block comments (nested, as PostgreSQL reads them).
/// Such a script is a no-op version: golang-migrate, dbmate and goose apply
/// an empty file by recording it, and so does the hub, without sending
/// anything to the target. MySQL's executable comments (`/*! … */`,
/// `/*M! … */`) are code, not comments.
pub fn is_no_op(sql: &str) -> bool {
    let sql = sql.strip_prefix('\u{feff}').unwrap_or(sql);
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |n| i + n + 1);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                if matches!(bytes.get(i + 2), Some(b'!')) || bytes[i + 2..].starts_with(b"M!") {
                    return false;
                }
                let mut depth = 0usize;
                loop {
                    if i >= bytes.len() {
                        // An unclosed comment: the server will say so.
                        return false;
                    }
                    if bytes[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if bytes[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_comment_only_scripts_are_no_ops() {
        assert!(is_no_op(""));
        assert!(is_no_op("  \n\t\r\n"));
        assert!(is_no_op("\u{feff}-- only MySQL needed this fix\n"));
        assert!(is_no_op("-- a\n/* b /* nested */ still comment */\n-- c"));
        assert!(!is_no_op("SELECT 1;"));
        assert!(!is_no_op("-- comment\nSELECT 1"));
        assert!(!is_no_op(";"), "an empty statement is still sent");
        assert!(!is_no_op("/*!40101 SET NAMES utf8 */;"));
        assert!(!is_no_op("/*M!100100 SET x = 1 */"));
        assert!(!is_no_op("/* never closed"));
        assert!(!is_no_op("- -"));
    }

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
    fn honours_gooses_no_transaction_annotation() {
        assert!(needs_no_transaction(
            "-- +goose NO TRANSACTION\nUPDATE t SET a = 1;\n"
        ));
        assert!(needs_no_transaction("  --  +Goose   no transaction  \n"));
        assert!(!needs_no_transaction(
            "-- +goose StatementBegin\nUPDATE t SET a = 1;\n-- +goose StatementEnd\n"
        ));
        assert!(!needs_no_transaction(
            "-- we used +goose NO TRANSACTION before\nUPDATE t SET a = 1;"
        ));
        assert!(!needs_no_transaction("SELECT '-- +goose NO TRANSACTION';"));
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
