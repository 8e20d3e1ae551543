//! How a job on a target stops, whatever its engine: the texts shown on the
//! run page, and when a stop leaves the target dirty. Both executors build
//! their errors here, so a PostgreSQL and a MySQL target that stop the same
//! way say the same thing and are marked the same way.

use common::{
    domain::{Direction, split::StatementsHash},
    targets::{ConnectError, Endpoint},
};

use super::{ExecError, Resume};
use crate::{plan::Step, report::Reporter};

/// The job's session could not be opened: nothing was applied.
pub(super) fn unreachable(target: &Endpoint, err: ConnectError) -> ExecError {
    match err {
        ConnectError::SessionSettings(_) => ExecError::target(err.to_string()),
        _ => ExecError::target(format!("could not connect to {}: {err}", target.describe())),
    }
}

/// The target's `migrate_hub_history` could not be created or read.
pub(super) fn history_unreadable(cause: &str) -> ExecError {
    ExecError::target(format!(
        "could not read the target's migrate_hub_history: {cause}"
    ))
}

/// A script that cannot be split into statements, found before anything of
/// it runs.
pub(super) fn unsplittable(
    step: &Step,
    direction: Direction,
    err: impl std::fmt::Display,
) -> ExecError {
    ExecError::Target {
        message: format!(
            "the {direction} script of version {} cannot be split into statements: {err}; \
             nothing was applied",
            step.version
        ),
        version: Some(step.version.to_string()),
    }
}

/// The error for a resume whose version the target no longer has pending:
/// its history says the script completed (or, for `down`, was undone).
pub(super) fn not_pending(resume: Option<&Resume>, direction: Direction) -> ExecError {
    let version = resume.map(|r| r.version.clone()).unwrap_or_default();
    ExecError::Target {
        message: format!(
            "cannot resume the {direction} script of version {version}: the target's \
             migrate_hub_history says it is not pending; nothing was run — resolve the target as \
             applied or rolled back instead"
        ),
        version: Some(version),
    }
}

/// A script run statement by statement, at the statement that failed.
pub(super) struct StatementStop<'a> {
    pub version: &'a str,
    pub direction: Direction,
    /// The 1-based statement that failed, of `total`.
    pub index: usize,
    pub total: usize,
    /// Where the statement starts in the script.
    pub line: usize,
    /// The script was resumed: statements before `index` were applied by an
    /// earlier run, whatever happens now.
    pub resumed: bool,
    /// The hash of the statements applied before `index`.
    pub applied: &'a StatementsHash,
}

impl StatementStop<'_> {
    /// The error for the failed statement, with `cause` (the database's
    /// words) first.
    ///
    /// The target is dirty when statements before it were applied, or when
    /// the outcome of this one is unknown because the session was `lost`
    /// while it ran. A first statement the server refused leaves nothing
    /// behind: a single statement is atomic on PostgreSQL, MariaDB 10.6+ and
    /// MySQL 8.
    pub(super) fn error(&self, reporter: &Reporter, cause: &str, lost: bool) -> ExecError {
        let Self { version, index, .. } = *self;
        if lost {
            let why =
                format!("the session was lost while statement {index} of version {version} ran");
            return self.unknown(reporter, cause, &why);
        }
        if index == 1 && !self.resumed {
            let message = format!(
                "{}\nnothing of version {version} was applied",
                self.heading(cause)
            );
            return self.stop(message, None);
        }
        let message = format!(
            "{}\nthe target is dirty: statements 1 to {} of version {version} were applied and \
             stay applied; an admin must resolve it",
            self.heading(cause),
            index - 1
        );
        self.stop(message, Some(reporter))
    }

    /// The error for a statement whose outcome is unknown (`why`, in words):
    /// the target is dirty at it, with the statements before it applied.
    pub(super) fn unknown(&self, reporter: &Reporter, cause: &str, why: &str) -> ExecError {
        let message = format!(
            "{}\nthe target is dirty: {why}, so whether it was applied is unknown; an admin must \
             resolve it",
            self.heading(cause)
        );
        self.stop(message, Some(reporter))
    }

    /// The database's words, then where the script stopped.
    fn heading(&self, cause: &str) -> String {
        format!(
            "{cause}\nSTATEMENT: {} of {} in the {} script, at line {}",
            self.index, self.total, self.direction, self.line
        )
    }

    /// The stop, leaving the target dirty at this statement when `dirty`
    /// reports it.
    fn stop(&self, message: String, dirty: Option<&Reporter>) -> ExecError {
        ExecError::Statement {
            message,
            version: self.version.to_owned(),
            statement: self.index,
            dirty: dirty.map(|reporter| {
                Box::new(reporter.dirty_mark(self.version, self.index, &self.applied.hex()))
            }),
        }
    }
}

/// Every statement of the script ran, but recording it in the target's
/// history failed: the target is ahead of its own history, so it is left
/// dirty just past its last statement.
pub(super) fn history_write_failed(
    reporter: &Reporter,
    direction: Direction,
    version: &str,
    statements: usize,
    applied: &StatementsHash,
    cause: &str,
) -> ExecError {
    let index = statements + 1;
    ExecError::Statement {
        message: format!(
            "the {direction} script of version {version} ran completely, but recording it in \
             migrate_hub_history failed: {cause}\nthe target is dirty: an admin must resolve it"
        ),
        version: version.to_owned(),
        statement: index,
        dirty: Some(Box::new(reporter.dirty_mark(
            version,
            index,
            &applied.hex(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter() -> Reporter {
        Reporter {
            db: sqlx::PgPool::connect_lazy("postgres://unused/unused").unwrap(),
            execution_id: uuid::Uuid::nil(),
            run_id: uuid::Uuid::nil(),
            target_id: uuid::Uuid::nil(),
            project_id: uuid::Uuid::nil(),
            direction: Direction::Up,
            actor: common::store::audit::Actor::System("worker:test".into()),
        }
    }

    fn stop(index: usize, resumed: bool, applied: &StatementsHash) -> StatementStop<'_> {
        StatementStop {
            version: "7",
            direction: Direction::Up,
            index,
            total: 3,
            line: 4,
            resumed,
            applied,
        }
    }

    fn outcome(err: ExecError) -> (String, Option<i32>) {
        match err {
            ExecError::Statement { message, dirty, .. } => {
                (message, dirty.map(|mark| mark.statement_index))
            }
            other => panic!("not a statement stop: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_refused_first_statement_leaves_the_target_clean() {
        let applied = StatementsHash::of([]);
        let (message, dirty) = outcome(stop(1, false, &applied).error(&reporter(), "ERROR", false));
        assert_eq!(
            message,
            "ERROR\nSTATEMENT: 1 of 3 in the up script, at line 4\nnothing of version 7 was applied"
        );
        assert_eq!(dirty, None);
    }

    #[tokio::test]
    async fn stops_after_applied_statements_or_a_lost_session_leave_it_dirty() {
        let applied = StatementsHash::of(["CREATE TABLE a ()"]);
        let (message, dirty) = outcome(stop(2, false, &applied).error(&reporter(), "ERROR", false));
        assert!(message.ends_with("statements 1 to 1 of version 7 were applied and stay applied; an admin must resolve it"), "{message}");
        assert_eq!(dirty, Some(2));
        let (message, dirty) = outcome(stop(1, false, &applied).error(&reporter(), "gone", true));
        assert!(
            message.contains("the session was lost while statement 1 of version 7 ran"),
            "{message}"
        );
        assert_eq!(dirty, Some(1));
        let (_, dirty) = outcome(stop(1, true, &applied).error(&reporter(), "ERROR", false));
        assert_eq!(
            dirty,
            Some(1),
            "a resumed script had applied statements before"
        );
        let (message, dirty) = outcome(history_write_failed(
            &reporter(),
            Direction::Down,
            "7",
            3,
            &applied,
            "denied",
        ));
        assert!(
            message.starts_with("the down script of version 7 ran completely"),
            "{message}"
        );
        assert_eq!(dirty, Some(4));
    }
}
