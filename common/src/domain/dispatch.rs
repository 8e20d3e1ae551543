//! Which targets of a run may start next: the concurrency limit, the canary
//! (the first N targets must all succeed before the rest start), and
//! stop-on-failure.

use super::run::TargetState;

/// One target execution of a run: its place in the run's order and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// 1-based place in the pinned target order.
    pub position: i32,
    pub state: TargetState,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Decision {
    /// Positions of pending targets to queue now, in order.
    pub queue: Vec<i32>,
    /// When set, every pending target is cancelled with this reason.
    pub cancel_pending: Option<&'static str>,
}

fn failed(s: TargetState) -> bool {
    matches!(s, TargetState::Failed | TargetState::Interrupted)
}

pub const STOPPED: &str = "not started: an earlier target failed and the run stops on failure";
pub const CANARY_FAILED: &str = "not started: a canary target did not succeed";

/// What the dispatch rule needs to know of a run's executions: a few index
/// probes of the tool database, never every execution, so deciding after
/// each finished target costs the same in a run of 10 targets or 10,000.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tally {
    /// The run's first pending positions, in order: at least as many as
    /// the run's concurrency, or all of them.
    pub first_pending: Vec<i32>,
    /// Executions queued, running or waiting for their maintenance window.
    pub active: i32,
    /// Some execution failed or was interrupted.
    pub any_failed: bool,
    /// The canary's executions (positions `1..=canary`), in order.
    pub canary: Vec<Slot>,
}

impl Tally {
    /// The tally of every execution of a run (what the store's probes
    /// answer, computed from all of them).
    pub fn of(slots: &[Slot], concurrency: i32, canary: i32) -> Self {
        let mut first_pending: Vec<i32> = slots
            .iter()
            .filter(|s| s.state == TargetState::Pending)
            .map(|s| s.position)
            .collect();
        first_pending.sort_unstable();
        first_pending.truncate(concurrency.max(0) as usize);
        let mut canary: Vec<Slot> = slots
            .iter()
            .filter(|s| s.position <= canary)
            .copied()
            .collect();
        canary.sort_by_key(|s| s.position);
        Self {
            first_pending,
            active: slots.iter().filter(|s| active(s.state)).count() as i32,
            any_failed: slots.iter().any(|s| failed(s.state)),
            canary,
        }
    }
}

/// Holds one of the run's places of concurrency.
pub fn active(s: TargetState) -> bool {
    matches!(
        s,
        TargetState::Queued | TargetState::Running | TargetState::WaitingForWindow
    )
}

pub fn next(tally: &Tally, concurrency: i32, canary: i32, stop_on_failure: bool) -> Decision {
    let canary_slots = &tally.canary;
    let any_pending = !tally.first_pending.is_empty()
        || canary_slots.iter().any(|s| s.state == TargetState::Pending);
    if !any_pending {
        return Decision::default();
    }
    if stop_on_failure && tally.any_failed {
        return Decision {
            queue: vec![],
            cancel_pending: Some(STOPPED),
        };
    }
    let canary_open = canary > 0 && canary_slots.iter().any(|s| !s.state.is_final());
    if canary > 0 && !canary_open && canary_slots.iter().any(|s| failed(s.state)) {
        return Decision {
            queue: vec![],
            cancel_pending: Some(CANARY_FAILED),
        };
    }
    let capacity = (concurrency - tally.active).max(0) as usize;
    let mut pending: Vec<i32> = if canary_open {
        canary_slots
            .iter()
            .filter(|s| s.state == TargetState::Pending)
            .map(|s| s.position)
            .collect()
    } else {
        tally.first_pending.clone()
    };
    pending.sort_unstable();
    pending.truncate(capacity);
    Decision {
        queue: pending,
        cancel_pending: None,
    }
}

/// Whether a finished target may act on the rule's `decision` without the
/// run's lock. Refilling places is safe alone: each finisher's tally is
/// one consistent reading in which its own place is free and the others'
/// endings either happened (their refills with them) or not yet, and the
/// queue skips a pending target another finisher is taking. Cancelling what
/// has not started, and anything while the canary is open, take the run's
/// lock, so that two finishers see each other's ending: two canaries ending
/// together would each see the other still running and open nothing.
pub fn refills_alone(tally: &Tally, decision: &Decision) -> bool {
    decision.cancel_pending.is_none() && tally.canary.iter().all(|s| s.state.is_final())
}

#[cfg(test)]
mod tests {
    use super::*;
    use TargetState::*;

    fn slots(states: &[TargetState]) -> Vec<Slot> {
        states
            .iter()
            .enumerate()
            .map(|(i, s)| Slot {
                position: i as i32 + 1,
                state: *s,
            })
            .collect()
    }

    /// The rule on the tally of every execution of a run.
    fn next(slots: &[Slot], concurrency: i32, canary: i32, stop: bool) -> Decision {
        super::next(
            &Tally::of(slots, concurrency, canary),
            concurrency,
            canary,
            stop,
        )
    }

    #[test]
    fn the_tally_keeps_only_what_the_rule_needs() {
        let t = Tally::of(
            &slots(&[Succeeded, Running, Failed, Pending, Pending, Pending]),
            2,
            2,
        );
        assert_eq!(t.first_pending, [4, 5], "as many as the concurrency");
        assert_eq!(t.active, 1);
        assert!(t.any_failed);
        assert_eq!(t.canary, slots(&[Succeeded, Running]));
    }

    #[test]
    fn a_canary_larger_than_the_concurrency_starts_within_it() {
        let d = next(&slots(&[Pending; 6]), 2, 4, false);
        assert_eq!(d.queue, [1, 2]);
        let d = next(
            &slots(&[Succeeded, Running, Pending, Pending, Pending]),
            2,
            4,
            false,
        );
        assert_eq!(d.queue, [3], "the canary first, within the concurrency");
    }

    #[test]
    fn concurrency_limits_what_runs_at_once() {
        let d = next(&slots(&[Pending; 5]), 2, 0, false);
        assert_eq!(d.queue, [1, 2]);
        let d = next(&slots(&[Running, Succeeded, Pending, Pending]), 2, 0, false);
        assert_eq!(d.queue, [3]);
        let d = next(&slots(&[Running, Queued, Pending]), 2, 0, false);
        assert!(d.queue.is_empty());
        // A target waiting for its maintenance window keeps its place.
        let d = next(&slots(&[WaitingForWindow, Succeeded, Pending]), 1, 0, false);
        assert!(d.queue.is_empty());
    }

    #[test]
    fn canary_runs_first_and_gates_the_rest() {
        let d = next(&slots(&[Pending; 4]), 8, 1, false);
        assert_eq!(d.queue, [1], "only the canary starts");
        let d = next(&slots(&[Running, Pending, Pending]), 8, 1, false);
        assert!(d.queue.is_empty(), "the rest wait for the canary");
        let d = next(&slots(&[Succeeded, Pending, Pending]), 8, 1, false);
        assert_eq!(d.queue, [2, 3]);
        let d = next(&slots(&[Failed, Pending, Pending]), 8, 1, false);
        assert_eq!(d.cancel_pending, Some(CANARY_FAILED));
        let d = next(&slots(&[Skipped, Pending]), 8, 1, false);
        assert_eq!(d.queue, [2], "an already-migrated canary counts as good");
    }

    #[test]
    fn stop_on_failure_cancels_what_has_not_started() {
        let d = next(&slots(&[Failed, Running, Pending]), 1, 0, true);
        assert_eq!(
            d,
            Decision {
                queue: vec![],
                cancel_pending: Some(STOPPED)
            }
        );
        let d = next(&slots(&[Failed, Pending]), 1, 0, false);
        assert_eq!(d.queue, [2], "without the option the others go on");
    }

    #[test]
    fn nothing_pending_means_nothing_to_do() {
        assert_eq!(
            next(&slots(&[Succeeded, Failed]), 4, 0, true),
            Decision::default()
        );
    }

    #[test]
    fn only_refilling_places_goes_without_the_run_lock() {
        let alone = |states: &[TargetState], canary: i32, stop: bool| {
            let tally = Tally::of(&slots(states), 2, canary);
            refills_alone(&tally, &super::next(&tally, 2, canary, stop))
        };
        assert!(alone(&[Succeeded, Running, Pending], 0, true));
        assert!(alone(&[Succeeded, Succeeded], 0, false), "nothing to do");
        assert!(
            !alone(&[Failed, Running, Pending], 0, true),
            "stop on failure cancels under the lock"
        );
        assert!(
            !alone(&[Succeeded, Running, Pending], 2, false),
            "the canary is still open"
        );
        assert!(alone(&[Succeeded, Skipped, Running, Pending], 2, false));
        assert!(
            !alone(&[Failed, Succeeded, Pending], 2, false),
            "a failed canary cancels the rest"
        );
    }
}
