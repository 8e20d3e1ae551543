//! Executions whose worker died. A worker that stops heartbeating for
//! [`SILENT_AFTER`] is dead: its `running` executions are over — a
//! PostgreSQL target rolled the migration in progress back and released the
//! target lock when the worker's connection died; a MySQL target keeps the
//! statements it had committed — and are marked `interrupted` through
//! [`super::finish`], like any other ending, so the run moves on and
//! settles. Nothing is ever re-applied.
//!
//! Two callers, one rule: every control-plane replica sweeps for them
//! ([`interrupt_dead`], whatever the pool, so no run waits on a pool nobody
//! serves), and a worker that is redelivered such an execution's job does
//! the same for that one execution.

use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Finish, LifecycleError, finish};
use crate::{
    domain::{Engine, TargetState},
    store::{
        audit::Actor,
        executions::{self, DirtyMark, LastProgress},
    },
};

/// How long a worker may stay silent before it counts as dead: three
/// missed heartbeats (a worker beats every 5 s), the silence after which
/// the queue redelivers its jobs.
pub const SILENT_AFTER: Duration = Duration::from_secs(15);

/// How a dead worker's execution ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphaned {
    pub error: String,
    pub failed_version: Option<String>,
    pub statement: Option<i32>,
    /// A MySQL script the worker had started is left part-way: the target
    /// is dirty at the statement last reported.
    pub dirty: Option<DirtyMark>,
}

/// The ending of an execution whose worker died, from what the worker last
/// reported. A PostgreSQL target rolled back the migration in progress when
/// the connection died. A MySQL target commits each statement, so a script
/// that had started is left part-way: the target is marked dirty at the
/// statement last reported, with the hash of the statements before it, for
/// an admin to resolve or resume.
pub fn orphaned(last: &LastProgress) -> Orphaned {
    let mut ending = Orphaned {
        error: "the worker executing this target stopped mid-run; a PostgreSQL target rolled \
                back the migration in progress, and the versions recorded before it stay applied"
            .into(),
        failed_version: None,
        statement: None,
        dirty: None,
    };
    if last.engine != Engine::Mysql {
        return ending;
    }
    let (Some(version), Some(statement), Some(hash)) = (
        last.version.clone(),
        last.statement_index,
        last.statements_hash.clone(),
    ) else {
        ending.error = "the worker executing this target stopped mid-run, between scripts as far \
                        as it reported; compare the target's migrate_hub_history with the hub \
                        before running again"
            .into();
        return ending;
    };
    ending.error = format!(
        "the worker executing this target stopped while statement {statement} of version \
         {version} ran (the last statement it reported); the statements before it were applied, \
         and MySQL commits each statement, so later ones may have been too\nthe target is \
         dirty: an admin must look at it and resolve it"
    );
    ending.failed_version = Some(version.clone());
    ending.statement = Some(statement);
    ending.dirty = Some(DirtyMark {
        target_id: last.target_id,
        run_id: last.run_id,
        version,
        direction: last.direction,
        statement_index: statement,
        statements_hash: hash,
    });
    ending
}

/// An execution marked `interrupted` because its worker died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub run_id: Uuid,
    pub target_id: Uuid,
    /// The target was left dirty (MySQL, a script part-way).
    pub dirty: bool,
}

/// Marks the execution `interrupted` if it is `running` on a worker that is
/// dead (silent for [`SILENT_AFTER`], stopped, or unknown); `None` when it
/// is not (finished meanwhile, still alive, or being finished by someone
/// else right now). The caller commits, then settles the run
/// ([`super::settle`]).
pub async fn interrupt_if_dead(
    conn: &mut PgConnection,
    execution_id: Uuid,
    actor: &Actor,
) -> Result<Option<Interrupted>, LifecycleError> {
    let Some(last) = executions::lock_if_on_dead_worker(conn, execution_id, SILENT_AFTER).await?
    else {
        return Ok(None);
    };
    let ending = orphaned(&last);
    finish(
        conn,
        &Finish {
            execution_id,
            state: TargetState::Interrupted,
            error: Some(&ending.error),
            failed_version: ending.failed_version.as_deref(),
            statement: ending.statement,
            dirty: ending.dirty.as_ref(),
            worker: actor,
        },
    )
    .await?;
    Ok(Some(Interrupted {
        run_id: last.run_id,
        target_id: last.target_id,
        dirty: ending.dirty.is_some(),
    }))
}

/// The `running` executions whose worker is dead, oldest first, at most
/// `limit`: what [`interrupt_if_dead`] is asked about, one transaction each.
pub async fn dead(conn: &mut PgConnection, limit: i64) -> Result<Vec<Uuid>, LifecycleError> {
    Ok(executions::running_on_dead_workers(conn, SILENT_AFTER, limit).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Direction;

    fn last(engine: Engine, reached: Option<(&str, i32, &str)>) -> LastProgress {
        LastProgress {
            run_id: Uuid::from_u128(1),
            target_id: Uuid::from_u128(2),
            engine,
            direction: Direction::Up,
            version: reached.map(|r| r.0.to_owned()),
            statement_index: reached.map(|r| r.1),
            statements_hash: reached.map(|r| r.2.to_owned()),
        }
    }

    #[test]
    fn a_postgres_target_rolled_back_and_is_never_dirty() {
        let ending = orphaned(&last(Engine::Postgres, Some(("3", 4, "abc"))));
        assert!(ending.dirty.is_none());
        assert!(ending.error.contains("rolled back"));
        assert_eq!(ending.failed_version, None);
    }

    #[test]
    fn a_mysql_script_part_way_leaves_the_target_dirty_at_the_last_statement() {
        let ending = orphaned(&last(Engine::Mysql, Some(("20240101", 7, "h"))));
        let dirty = ending.dirty.expect("dirty");
        assert_eq!(dirty.version, "20240101");
        assert_eq!(dirty.statement_index, 7);
        assert_eq!(dirty.statements_hash, "h");
        assert_eq!(dirty.target_id, Uuid::from_u128(2));
        assert_eq!(ending.statement, Some(7));
        assert_eq!(ending.failed_version.as_deref(), Some("20240101"));
        assert!(ending.error.contains("statement 7 of version 20240101"));
    }

    #[test]
    fn a_mysql_target_between_scripts_is_not_marked_dirty() {
        let ending = orphaned(&last(Engine::Mysql, None));
        assert!(ending.dirty.is_none());
        assert!(ending.error.contains("between scripts"));
    }
}
