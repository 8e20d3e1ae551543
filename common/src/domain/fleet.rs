//! Where the targets of a DB set stand, in one line: "14 at 20261201,
//! 2 behind, 1 dirty".

use serde::Serialize;

use super::text_enum::text_enum;

text_enum!(
    /// The targets a DB set's page or API lists, by where they stand.
    StateFilter {
        /// Every migration of the project applied.
        UpToDate => "up_to_date",
        /// Some migration of the project not applied.
        Behind => "behind",
        /// A script stopped part-way.
        Dirty => "dirty",
        /// Its schema differs from its baseline.
        Drifted => "drifted",
        /// The last drift scan could not read it.
        Unreachable => "unreachable",
        /// Its last run failed or was interrupted on it.
        Failed => "failed",
    }
);

text_enum!(
    /// The order a DB set's targets are listed in.
    #[derive(Default)]
    Sort {
        /// By name (the default).
        #[default]
        Name => "name",
        /// The most migrations behind first, then by name.
        Behind => "behind",
        /// The most recently run first (never run last), then by name.
        LastRun => "last_run",
    }
);

/// A DB set's live targets counted by where they stand.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Counts {
    pub total: i64,
    pub up_to_date: i64,
    pub behind: i64,
    pub dirty: i64,
    pub drifted: i64,
    pub unreachable: i64,
    /// Their last run failed or was interrupted on them.
    pub failed: i64,
    /// The project's newest version (`null`: no migrations yet).
    pub latest_version: Option<String>,
}

/// "14 at 20261201, 2 behind, 1 dirty, 1 drifted": the up-to-date ones at
/// the project's newest version, then only the counts that are not zero.
pub fn summary(c: &Counts) -> String {
    if c.total == 0 {
        return "no targets".into();
    }
    let mut parts = Vec::new();
    match &c.latest_version {
        None => parts.push(format!("{} (no migrations yet)", plural(c.total, "target"))),
        Some(v) if c.up_to_date > 0 => parts.push(format!("{} at {v}", c.up_to_date)),
        Some(_) => {}
    }
    for (n, what) in [
        (c.behind, "behind"),
        (c.dirty, "dirty"),
        (c.drifted, "drifted"),
        (c.unreachable, "unreachable at the last check"),
        (c.failed, "failed in their last run"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(", ")
}

fn plural(n: i64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> Counts {
        Counts {
            total: 17,
            up_to_date: 14,
            behind: 3,
            latest_version: Some("20261201".into()),
            ..Counts::default()
        }
    }

    #[test]
    fn the_up_to_date_come_first_then_what_is_not_zero() {
        assert_eq!(summary(&counts()), "14 at 20261201, 3 behind");
        let c = Counts {
            dirty: 1,
            drifted: 2,
            unreachable: 1,
            failed: 1,
            ..counts()
        };
        assert_eq!(
            summary(&c),
            "14 at 20261201, 3 behind, 1 dirty, 2 drifted, 1 unreachable at the last check, \
             1 failed in their last run"
        );
    }

    #[test]
    fn empty_sets_and_projects_say_so() {
        assert_eq!(summary(&Counts::default()), "no targets");
        let c = Counts {
            total: 1,
            up_to_date: 1,
            ..Counts::default()
        };
        assert_eq!(summary(&c), "1 target (no migrations yet)");
        let none_current = Counts {
            up_to_date: 0,
            behind: 17,
            ..counts()
        };
        assert_eq!(summary(&none_current), "17 behind");
    }

    #[test]
    fn filters_have_fixed_spellings() {
        assert_eq!(
            "behind".parse::<StateFilter>().unwrap(),
            StateFilter::Behind
        );
        assert!("broken".parse::<StateFilter>().is_err());
    }
}
