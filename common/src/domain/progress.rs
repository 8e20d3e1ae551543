//! How far a run has got and when it should be done, from what it did so
//! far.

use time::{Duration, OffsetDateTime};

/// When the run's remaining targets should be done, at the pace of those
/// done so far: the time since the run was queued, per finished target,
/// times the targets left. `None` before the first target finished, once
/// every one has, or when the run has not started.
pub fn eta(
    total: usize,
    done: usize,
    queued_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<Duration> {
    let since = queued_at?;
    if done == 0 || done >= total {
        return None;
    }
    let elapsed = (now - since).max(Duration::ZERO);
    let per_target = elapsed / done as f64;
    Some(per_target * (total - done) as f64)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_pace_so_far_gives_the_time_left() {
        let queued = datetime!(2026-12-06 12:00 UTC);
        let now = queued + Duration::seconds(60);
        assert_eq!(
            eta(1000, 250, Some(queued), now),
            Some(Duration::seconds(180)),
            "250 done in a minute: 750 more take three"
        );
        assert_eq!(eta(10, 0, Some(queued), now), None, "nothing done yet");
        assert_eq!(eta(10, 10, Some(queued), now), None, "all done");
        assert_eq!(eta(10, 5, None, now), None, "not started");
    }
}
