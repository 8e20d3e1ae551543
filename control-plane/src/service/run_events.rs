//! A run's live stream: server-sent events pushed as the run's changes are
//! committed, whoever commits them (a worker finishing a target, another
//! replica approving).
//!
//! The stream starts with the run as it is — a `run` event (state, counts
//! by target state, pools without a worker) and one `target` event per
//! target — then sends, after each change heard ([`crate::changes`]), the
//! `run` event if it changed and a `target` event for each target that
//! changed; it ends with an `end` event once the run is final. Every
//! watcher of a run on this replica shares one read of it per change
//! ([`SharedReads`](crate::shared_reads::SharedReads)), and what each event
//! says is serialized once per read ([`RunSnapshot::stream`]), so a watcher
//! costs a comparison of hashes per change, not a query.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt, stream};
use tokio::time::Instant;
use uuid::Uuid;

use crate::{
    error::ApiError,
    live::Watch,
    run_view::{RunSnapshot, StreamParts},
    service::runs::{run_snapshot, run_snapshot_after},
    state::AppState,
};

/// Reads of the run one watcher asks for are at least this far apart: a
/// run whose targets finish many times a second is read twenty times a
/// second, not once per change.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);
/// How often a watcher looks for itself while changes cannot be heard.
const POLL_WHILE_DEAF: Duration = Duration::from_secs(1);
/// How often it looks anyway: a target's progress within its state (the
/// migration it has reached) is not announced (migration
/// `20261206000016_execution_state_changes.sql`), and a change may go
/// unheard. Every watcher of a run shares one read of it per
/// `MH_READ_MAX_AGE_MS`, so this costs the database nothing per watcher.
const POLL_WHILE_LISTENING: Duration = Duration::from_secs(2);

/// The live stream of run `id`; `not_found` when there is no such run.
pub async fn events(
    state: AppState,
    id: Uuid,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Watching before the first read: nothing committed after it is missed.
    let watch = state.live.watch(id);
    let first = run_snapshot(&state, id).await?;
    let mut watcher = Watcher {
        state,
        id,
        watch,
        sent: None,
        last_read: Instant::now(),
        done: false,
    };
    let opening = watcher.events_for(&first)?;
    let rest = stream::unfold(watcher, Watcher::next_events);
    let events = stream::iter([opening])
        .chain(rest)
        .flat_map(|events| stream::iter(events.into_iter().map(Ok)));
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// What one watcher has been told.
struct Sent {
    run: u64,
    targets: Vec<(Uuid, u64)>,
}

struct Watcher {
    state: AppState,
    id: Uuid,
    watch: Watch,
    sent: Option<Sent>,
    last_read: Instant,
    done: bool,
}

impl Watcher {
    /// The events after the next change; `None` when the stream ends.
    async fn next_events(mut self) -> Option<(Vec<Event>, Self)> {
        loop {
            if self.done {
                return None;
            }
            let heard = self.wait_for_change().await?;
            // A read that started after the change was heard, shared by
            // every watcher of the run woken by it.
            let snapshot = match run_snapshot_after(&self.state, self.id, heard).await {
                Ok(snapshot) => snapshot,
                Err(ApiError::NotFound(_)) => return None,
                // The tool database is away: try again at the next change
                // or poll.
                Err(err) => {
                    tracing::warn!(run_id = %self.id, error = %err, "live stream: cannot read the run");
                    continue;
                }
            };
            match self.events_for(&snapshot) {
                Ok(events) if events.is_empty() => {}
                Ok(events) => return Some((events, self)),
                Err(err) => {
                    tracing::warn!(run_id = %self.id, error = %err, "live stream: cannot encode the run");
                    return None;
                }
            }
        }
    }

    /// Waits for a change heard (or the poll while none can be heard),
    /// paced by [`MIN_INTERVAL`]; `Some` with when the latest change was
    /// heard (`None` inside for a poll: any read will do), or `None` when
    /// the process stops.
    async fn wait_for_change(&mut self) -> Option<Option<Instant>> {
        let poll = if self.state.live.is_deaf() {
            POLL_WHILE_DEAF
        } else {
            POLL_WHILE_LISTENING
        };
        let mut polled = false;
        tokio::select! {
            _ = self.watch.changes.changed() => {}
            _ = tokio::time::sleep(poll) => polled = true,
            _ = self.watch.closing.changed() => return None,
        }
        tokio::time::sleep_until(self.last_read + MIN_INTERVAL).await;
        // Whatever was heard until now is covered by the read that follows;
        // a change heard during it wakes the watcher again.
        let heard = *self.watch.changes.borrow_and_update();
        self.last_read = Instant::now();
        if *self.watch.closing.borrow() {
            return None;
        }
        Some(if polled { None } else { heard })
    }

    /// The events that bring the watcher from what it was sent to
    /// `snapshot`: everything, the first time.
    fn events_for(&mut self, snapshot: &RunSnapshot) -> Result<Vec<Event>, ApiError> {
        let parts: Arc<StreamParts> = snapshot.stream()?;
        let mut events = Vec::new();
        let sent = self.sent.get_or_insert_with(|| Sent {
            run: !parts.run.hash,
            targets: Vec::new(),
        });
        if sent.run != parts.run.hash {
            events.push(Event::default().event("run").data(&parts.run.json));
            sent.run = parts.run.hash;
        }
        for (i, (id, part)) in parts.targets.iter().enumerate() {
            match sent.targets.get_mut(i) {
                Some((sent_id, hash)) if sent_id == id => {
                    if *hash == part.hash {
                        continue;
                    }
                    *hash = part.hash;
                }
                Some(other) => *other = (*id, part.hash),
                None => sent.targets.push((*id, part.hash)),
            }
            events.push(Event::default().event("target").data(&part.json));
        }
        sent.targets.truncate(parts.targets.len());
        if parts.is_final {
            events.push(Event::default().event("end").data(&parts.run.json));
            self.done = true;
        }
        Ok(events)
    }
}
