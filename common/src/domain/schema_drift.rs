//! Schema drift: a target whose schema, as a scan reads it, is not what its
//! baseline says — someone changed it behind the hub's back. The baseline
//! is the newest snapshot that is not itself a drift reading: the one the
//! target's last execution left, an admin's acceptance of earlier drift, or
//! the first reading of a target the hub had never read.
//!
//! (Not to be confused with [`super::drift`], where the hub's record of the
//! applied versions and the target's own history disagree.)

use super::text_enum::text_enum;

text_enum!(
    /// What runs do with a drifted target of an environment.
    #[derive(Default)]
    OnDrift {
        /// The drift is shown (target, DB set, run pages, to approvers);
        /// runs go on, and the next execution's snapshot is the new
        /// baseline.
        #[default]
        Warn => "warn",
        /// The target's executions are refused until an admin accepts the
        /// drift as the new baseline or it is reverted.
        Block => "block",
    }
);

/// What one scan's reading means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target has no baseline yet: the reading becomes it.
    Initial,
    /// As the baseline says, and no drift was flagged.
    InSync,
    /// As the baseline says again: the flagged drift was reverted.
    Reverted,
    /// Differs from the baseline, and from what was flagged before, if
    /// anything (`first`: nothing was): recorded and reported.
    Drifted { first: bool },
    /// The same drift as flagged already: nothing new to report.
    StillDrifted,
}

/// Judges a scan's `reading` (a schema hash) against the target's
/// `baseline` and the reading of the drift already `flagged`, if any.
pub fn judge(baseline: Option<&str>, flagged: Option<&str>, reading: &str) -> Verdict {
    match (baseline, flagged) {
        (None, _) => Verdict::Initial,
        (Some(base), None) if base == reading => Verdict::InSync,
        (Some(base), Some(_)) if base == reading => Verdict::Reverted,
        (Some(_), Some(seen)) if seen == reading => Verdict::StillDrifted,
        (Some(_), flagged) => Verdict::Drifted {
            first: flagged.is_none(),
        },
    }
}

/// Whether a run may execute on a target of an environment with `policy`
/// while the target is `drifted`.
pub fn refuses(policy: OnDrift, drifted: bool) -> bool {
    drifted && policy == OnDrift::Block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_a_baseline_takes_the_reading_as_its_baseline() {
        assert_eq!(judge(None, None, "a"), Verdict::Initial);
    }

    #[test]
    fn a_reading_like_the_baseline_is_in_sync_or_reverts_the_drift() {
        assert_eq!(judge(Some("a"), None, "a"), Verdict::InSync);
        assert_eq!(judge(Some("a"), Some("b"), "a"), Verdict::Reverted);
    }

    #[test]
    fn a_different_reading_is_drift_reported_once_per_new_schema() {
        assert_eq!(
            judge(Some("a"), None, "b"),
            Verdict::Drifted { first: true }
        );
        assert_eq!(judge(Some("a"), Some("b"), "b"), Verdict::StillDrifted);
        // Changed again by hand: a new reading to record and report.
        assert_eq!(
            judge(Some("a"), Some("b"), "c"),
            Verdict::Drifted { first: false }
        );
    }

    #[test]
    fn only_block_refuses_and_only_a_drifted_target() {
        assert!(refuses(OnDrift::Block, true));
        assert!(!refuses(OnDrift::Block, false));
        assert!(!refuses(OnDrift::Warn, true));
        assert_eq!(OnDrift::default(), OnDrift::Warn);
        assert_eq!("block".parse::<OnDrift>().unwrap(), OnDrift::Block);
        assert!("ignore".parse::<OnDrift>().is_err());
    }
}
