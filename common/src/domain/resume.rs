//! Resuming a script that stopped part-way on a target (a dirty target).
//!
//! A dirty mark says: statements `1 .. statement_index` of the version's
//! script were applied (their hash is kept), statement `statement_index`
//! failed or its outcome is unknown. An admin who has looked at the target
//! may resume from that statement (run it again) or from the one after it
//! (it was completed by hand). Before anything runs, the worker splits the
//! pinned script again and proves that the prefix it skips hashes to what
//! was applied: a splitter that now cuts the script differently must not
//! resume at the wrong place.

use super::split::{Statement, StatementsHash};

/// Why a resume cannot happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error(
        "a script that stopped at statement {stopped} can resume from statement {stopped} (run it \
         again) or {next} (it was completed by hand), not {asked}",
        next = stopped + 1
    )]
    OutOfRange { stopped: i32, asked: i32 },
    #[error(
        "the applied part of version {version} (statements 1 to {applied}) no longer matches the \
         script as it splits now; resuming could run the wrong statements, so nothing was run — \
         resolve the target as applied or rolled back instead"
    )]
    PrefixChanged { version: String, applied: usize },
}

/// The statement to resume from when the admin names none: the one that
/// stopped, run again.
pub fn resume_from(stopped: i32, asked: Option<i32>) -> Result<i32, ResumeError> {
    let from = asked.unwrap_or(stopped);
    if from == stopped || from == stopped + 1 {
        Ok(from)
    } else {
        Err(ResumeError::OutOfRange {
            stopped,
            asked: from,
        })
    }
}

/// Where a resumed script starts, proven: `statements` is the script split
/// now, `stopped` and `applied_hash` come from the dirty mark, `from` from
/// the admin. Returns the 0-based index of the first statement to run (the
/// script's length when only the history record is left to write).
pub fn start_index(
    version: &str,
    statements: &[Statement<'_>],
    stopped: usize,
    applied_hash: &str,
    from: usize,
) -> Result<usize, ResumeError> {
    let applied = stopped.saturating_sub(1);
    let changed = || ResumeError::PrefixChanged {
        version: version.to_owned(),
        applied,
    };
    let prefix = statements.get(..applied).ok_or_else(changed)?;
    if StatementsHash::of(prefix.iter().map(|s| s.text)).hex() != applied_hash {
        return Err(changed());
    }
    let start = from.saturating_sub(1);
    if from < stopped || start > statements.len() {
        return Err(changed());
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::split::split_mysql;

    #[test]
    fn resume_runs_the_stopped_statement_again_or_the_next() {
        assert_eq!(resume_from(3, None), Ok(3));
        assert_eq!(resume_from(3, Some(4)), Ok(4));
        let err = resume_from(3, Some(5)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a script that stopped at statement 3 can resume from statement 3 (run it again) or 4 \
             (it was completed by hand), not 5"
        );
        assert!(resume_from(3, Some(2)).is_err());
    }

    #[test]
    fn the_applied_prefix_must_hash_as_recorded() {
        let script =
            "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\nCREATE TABLE b (id int);";
        let statements = split_mysql(script).unwrap();
        let applied = StatementsHash::of(["CREATE TABLE a (id int)", "INSERT INTO a VALUES (1)"]);
        assert_eq!(start_index("7", &statements, 3, &applied.hex(), 3), Ok(2));
        assert_eq!(start_index("7", &statements, 3, &applied.hex(), 4), Ok(3));
        // Only the history record was missing.
        let all = StatementsHash::of(statements.iter().map(|s| s.text));
        assert_eq!(start_index("7", &statements, 4, &all.hex(), 4), Ok(3));
        // A different split of the same script is refused.
        let other = StatementsHash::of(["CREATE TABLE a (id int)"]);
        assert_eq!(
            start_index("7", &statements, 3, &other.hex(), 3),
            Err(ResumeError::PrefixChanged {
                version: "7".into(),
                applied: 2
            })
        );
        // A prefix longer than the script is refused too.
        assert!(start_index("7", &statements, 9, &applied.hex(), 9).is_err());
        // Nothing applied yet: the empty prefix.
        let none = StatementsHash::new();
        assert_eq!(start_index("7", &statements, 1, &none.hex(), 1), Ok(0));
    }
}
