//! Worker pools as a run sees them: a pool whose targets a run still has to
//! execute, and that no live worker serves, holds the run up — said in
//! words, never left for people to guess.

use serde::Serialize;
use time::OffsetDateTime;

/// A pool a run needs that has no live worker.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolWithoutWorker {
    pub pool: String,
    /// When a worker of the pool was last heard from (its last heartbeat,
    /// or when it stopped); `null` when none ever registered.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen_at: Option<OffsetDateTime>,
    /// Said for people: "no worker of pool `eu` seen for 4 min".
    pub message: String,
}

impl PoolWithoutWorker {
    pub fn new(pool: String, last_seen_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Self {
        let message = match last_seen_at {
            Some(seen) => format!(
                "no worker of pool `{pool}` seen for {}",
                silence(now - seen)
            ),
            None => format!("no worker of pool `{pool}` has ever registered"),
        };
        Self {
            pool,
            last_seen_at,
            message,
        }
    }
}

/// A silence in the largest unit that keeps it readable.
fn silence(gap: time::Duration) -> String {
    let secs = gap.whole_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..7_200 => format!("{} min", secs / 60),
        7_200..172_800 => format!("{} h", secs / 3_600),
        _ => format!("{} days", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_message_says_which_pool_and_for_how_long() {
        let now = datetime!(2026-12-06 12:00 UTC);
        let said = |seen| PoolWithoutWorker::new("eu".into(), seen, now).message;
        assert_eq!(
            said(Some(now - time::Duration::minutes(4))),
            "no worker of pool `eu` seen for 4 min"
        );
        assert_eq!(
            said(Some(now - time::Duration::seconds(25))),
            "no worker of pool `eu` seen for 25 s"
        );
        assert_eq!(
            said(Some(now - time::Duration::hours(5))),
            "no worker of pool `eu` seen for 5 h"
        );
        assert_eq!(
            said(Some(now - time::Duration::days(9))),
            "no worker of pool `eu` seen for 9 days"
        );
        assert_eq!(said(None), "no worker of pool `eu` has ever registered");
    }
}
