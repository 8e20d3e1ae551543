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

pub fn next(slots: &[Slot], concurrency: i32, canary: i32, stop_on_failure: bool) -> Decision {
    let any_pending = slots.iter().any(|s| s.state == TargetState::Pending);
    if !any_pending {
        return Decision::default();
    }
    if stop_on_failure && slots.iter().any(|s| failed(s.state)) {
        return Decision {
            queue: vec![],
            cancel_pending: Some(STOPPED),
        };
    }
    let in_canary = |s: &Slot| canary > 0 && s.position <= canary;
    let canary_open = slots
        .iter()
        .filter(|s| in_canary(s))
        .any(|s| !s.state.is_final());
    if canary > 0
        && !canary_open
        && slots
            .iter()
            .filter(|s| in_canary(s))
            .any(|s| failed(s.state))
    {
        return Decision {
            queue: vec![],
            cancel_pending: Some(CANARY_FAILED),
        };
    }
    let active = slots
        .iter()
        .filter(|s| {
            matches!(
                s.state,
                TargetState::Queued | TargetState::Running | TargetState::WaitingForWindow
            )
        })
        .count() as i32;
    let capacity = (concurrency - active).max(0) as usize;
    let mut pending: Vec<i32> = slots
        .iter()
        .filter(|s| s.state == TargetState::Pending && (!canary_open || in_canary(s)))
        .map(|s| s.position)
        .collect();
    pending.sort_unstable();
    pending.truncate(capacity);
    Decision {
        queue: pending,
        cancel_pending: None,
    }
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
}
