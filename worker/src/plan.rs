//! What a job will do on its target, decided from the run's pinned
//! migrations, the hub's applied state and the target's own history.
//!
//! Pure functions with no I/O, so the rules that keep a target safe (rule 2:
//! re-verify every checksum; drift blocks a target; nothing is applied twice)
//! are unit-tested without a database.

use std::collections::HashSet;

use common::{
    domain::{Checksum, Direction, Version, directives::is_no_op, drift::Difference},
    store::runs::RunMigrationRow,
};
use uuid::Uuid;

/// One pinned migration whose text still matches its pinned checksum.
#[derive(Debug, Clone)]
pub struct Step {
    pub migration_id: Uuid,
    pub version: Version,
    pub name: String,
    /// The checksum the run pinned (and the approvals cover).
    pub checksum: Checksum,
    pub up_sql: String,
    /// `None`: the migration cannot be rolled back.
    pub down_sql: Option<String>,
    pub transactional: bool,
}

impl Step {
    /// The SQL sent to move the target in `direction`: the script, or
    /// nothing at all for a no-op script (only comments), so that a comment
    /// one engine would read as code (MySQL's `--` without a space) is
    /// never sent. An absent down script reads as empty; [`pending`] refuses
    /// such steps first.
    pub fn script(&self, direction: Direction) -> &str {
        let script = match direction {
            Direction::Up => &self.up_sql,
            Direction::Down => self.down_sql.as_deref().unwrap_or(""),
        };
        if is_no_op(script) { "" } else { script }
    }

    /// The script holds no SQL: the step only records the version (or
    /// removes it, going down) and sends nothing else to the target.
    pub fn is_no_op(&self, direction: Direction) -> bool {
        self.script(direction).is_empty()
    }
}

/// Why a target cannot be executed. Every message is shown to users as the
/// target's error, so it names the version and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "checksum of version {version} changed since the run was approved; nothing was applied"
    )]
    ChecksumChanged { version: String },
    #[error("version {version} is stored in a form that cannot be parsed; nothing was applied")]
    InvalidVersion { version: String },
    #[error(
        "version {version} has no down script, so it cannot be rolled back; nothing was applied"
    )]
    NoDownScript { version: String },
    /// The hub's applied state and the target's `migrate_hub_history`
    /// disagree (the first disagreement, in version order).
    #[error(
        "drift: the target's migrate_hub_history disagrees with the hub: {0}; nothing was \
         applied, an admin must resolve the drift first"
    )]
    Drift(Difference),
}

impl PlanError {
    /// The version the error is about, recorded as the execution's failed version.
    pub fn version(&self) -> Option<&str> {
        match self {
            PlanError::ChecksumChanged { version }
            | PlanError::InvalidVersion { version }
            | PlanError::NoDownScript { version } => Some(version),
            PlanError::Drift(_) => None,
        }
    }
}

/// Re-verifies every pinned migration right before execution (rule 2): the
/// text is hashed again and must match both the checksum the run pinned and
/// the checksum the hub holds now. A mismatch means the script changed after
/// approval (or the stored text was tampered with), so nothing may run.
pub fn verify(rows: Vec<RunMigrationRow>) -> Result<Vec<Step>, PlanError> {
    rows.into_iter()
        .map(|row| {
            let recomputed = Checksum::of_stored(&row.up_sql, &row.down_sql, row.reversible);
            if recomputed.as_str() != row.checksum || row.current_checksum != row.checksum {
                return Err(PlanError::ChecksumChanged {
                    version: row.version,
                });
            }
            let version = Version::parse(&row.version).map_err(|_| PlanError::InvalidVersion {
                version: row.version.clone(),
            })?;
            Ok(Step {
                migration_id: row.migration_id,
                version,
                name: row.name,
                checksum: Checksum::from_stored(row.checksum),
                up_sql: row.up_sql,
                down_sql: row.reversible.then_some(row.down_sql),
                transactional: row.transactional,
            })
        })
        .collect()
}

/// The steps to run on a target whose history holds `applied`, in the run's
/// pinned order (ascending for `up`; the control plane pins `down` runs in
/// reverse). Computed only after the target lock is held, so two runs on one
/// target can never both see a version as pending.
///
/// Every step of a `down` run is checked for a down script before anything
/// runs, so a run never stops half-way for a reason known in advance.
pub fn pending<'a>(
    steps: &'a [Step],
    direction: Direction,
    applied: &HashSet<&str>,
) -> Result<Vec<&'a Step>, PlanError> {
    let is_applied = |s: &Step| applied.contains(s.version.to_string().as_str());
    match direction {
        Direction::Up => Ok(steps.iter().filter(|s| !is_applied(s)).collect()),
        Direction::Down => {
            let todo: Vec<&Step> = steps.iter().filter(|s| is_applied(s)).collect();
            if let Some(s) = todo.iter().find(|s| s.down_sql.is_none()) {
                return Err(PlanError::NoDownScript {
                    version: s.version.to_string(),
                });
            }
            Ok(todo)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: &str, up: &str, down: &str) -> RunMigrationRow {
        // Tests write an absent down script as "".
        let reversible = !down.is_empty();
        let sum = Checksum::of_stored(up, down, reversible).to_string();
        RunMigrationRow {
            position: 1,
            migration_id: Uuid::now_v7(),
            version: version.into(),
            checksum: sum.clone(),
            name: format!("m{version}"),
            current_checksum: sum,
            up_sql: up.into(),
            down_sql: down.into(),
            reversible,
            transactional: true,
            author_id: Uuid::now_v7(),
        }
    }

    #[test]
    fn verified_steps_keep_pinned_order_and_text() {
        let steps = verify(vec![row("2", "B", ""), row("1", "A", "")]).unwrap();
        let versions: Vec<String> = steps.iter().map(|s| s.version.to_string()).collect();
        assert_eq!(versions, ["2", "1"]);
        assert_eq!(steps[0].up_sql, "B");
        assert_eq!(steps[0].script(Direction::Up), "B");
    }

    #[test]
    fn edited_text_is_refused() {
        let mut r = row("3", "CREATE TABLE a();", "");
        r.up_sql = "DROP TABLE users;".into();
        assert_eq!(
            verify(vec![row("1", "x", ""), r]).unwrap_err(),
            PlanError::ChecksumChanged {
                version: "3".into()
            }
        );
    }

    #[test]
    fn edit_recorded_by_the_hub_is_refused() {
        // Text and current checksum agree with each other, but not with the pin.
        let mut r = row("4", "new", "");
        r.checksum = Checksum::of("old", None).to_string();
        let err = verify(vec![r]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "checksum of version 4 changed since the run was approved; nothing was applied"
        );
    }

    #[test]
    fn crlf_only_changes_are_not_edits() {
        let mut r = row("1", "SELECT 1;\n", "");
        r.up_sql = "SELECT 1;\r\n".into();
        assert!(verify(vec![r]).is_ok());
    }

    #[test]
    fn drift_stops_the_target_at_the_first_disagreement() {
        let hub = [("1".to_owned(), "a".to_owned())];
        let difference = common::domain::drift::first_difference(&hub, &[]).unwrap();
        assert_eq!(
            PlanError::Drift(difference).to_string(),
            "drift: the target's migrate_hub_history disagrees with the hub: version 1 is \
             recorded as applied in the hub but is missing from the target; nothing was \
             applied, an admin must resolve the drift first"
        );
    }

    #[test]
    fn up_runs_what_is_missing_in_pinned_order() {
        let steps = verify(vec![
            row("1", "a", ""),
            row("2", "b", ""),
            row("3", "c", ""),
        ])
        .unwrap();
        let applied = HashSet::from(["2"]);
        let todo = pending(&steps, Direction::Up, &applied).unwrap();
        let versions: Vec<String> = todo.iter().map(|s| s.version.to_string()).collect();
        assert_eq!(versions, ["1", "3"]);
        let all = HashSet::from(["1", "2", "3"]);
        assert!(pending(&steps, Direction::Up, &all).unwrap().is_empty());
    }

    #[test]
    fn down_rolls_back_only_applied_versions() {
        let steps = verify(vec![row("3", "c", "undo c"), row("2", "b", "undo b")]).unwrap();
        let applied = HashSet::from(["1", "2"]);
        let todo = pending(&steps, Direction::Down, &applied).unwrap();
        assert_eq!(todo.len(), 1);
        assert_eq!(todo[0].script(Direction::Down), "undo b");
    }

    #[test]
    fn legacy_blank_down_stays_absent_and_verifies() {
        // Stored before absent and empty were told apart: blank text, not reversible.
        let mut r = row("5", "e", "");
        r.down_sql = "\n".into();
        r.checksum = Checksum::of_stored("e", "\n", false).to_string();
        r.current_checksum = r.checksum.clone();
        let steps = verify(vec![r]).unwrap();
        assert_eq!(steps[0].down_sql, None);
    }

    #[test]
    fn empty_down_script_rolls_back_as_a_no_op() {
        let mut r = row("2", "CREATE TABLE b();", "");
        r.reversible = true;
        r.checksum = Checksum::of("CREATE TABLE b();", Some("")).to_string();
        r.current_checksum = r.checksum.clone();
        let steps = verify(vec![r]).unwrap();
        let todo = pending(&steps, Direction::Down, &HashSet::from(["2"])).unwrap();
        assert_eq!(todo.len(), 1);
        assert!(todo[0].is_no_op(Direction::Down));
        assert!(!todo[0].is_no_op(Direction::Up));
        let noop_up = verify(vec![row("3", "--MySQL only\n", "")]).unwrap();
        assert!(noop_up[0].is_no_op(Direction::Up));
        assert_eq!(noop_up[0].script(Direction::Up), "", "nothing is sent");
    }

    #[test]
    fn down_without_script_is_refused_before_anything_runs() {
        let steps = verify(vec![row("3", "c", "undo"), row("2", "b", "")]).unwrap();
        let applied = HashSet::from(["2", "3"]);
        assert_eq!(
            pending(&steps, Direction::Down, &applied).unwrap_err(),
            PlanError::NoDownScript {
                version: "2".into()
            }
        );
        // A version that is not applied needs no down script.
        assert!(pending(&steps, Direction::Down, &HashSet::from(["3"])).is_ok());
    }
}
