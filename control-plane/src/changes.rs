//! Changes made elsewhere, heard at once: every replica listens on the tool
//! database's channel `migrate_hub_changes`, where triggers announce, at
//! commit, with ids only:
//! - every change that takes rights away (a revoked or re-scoped API token,
//!   a disabled user, a changed role — the migration
//!   `20261206000003_identity_changes.sql`): hearing one retires every shared
//!   read this replica holds ([`WriteMark::record`]), so the very next
//!   request reads the database again, exactly as after a write made here;
//! - every change of a run (`run:<id>`: its state, an approval, whoever
//!   made it — the migration `20261206000013_run_changes.sql`): hearing one
//!   retires the shared reads of that run ([`SharedReads::retire`]), so the
//!   next request reads it again, and wakes its live streams
//!   ([`LiveRuns::changed`]);
//! - every change of a target execution's state (`execution:<run id>`:
//!   claimed, finished — `20261206000015_execution_changes.sql`, and
//!   `20261206000016_execution_state_changes.sql`: progress within a state
//!   is not announced), many a second in a large run: requests go on being
//!   served the latest read while the next one starts at once ([`SharedReads::refresh_soon`]),
//!   so it shows within one read and nobody waits; live streams wake and
//!   take a read that started after they heard it.
//!
//! Notifications are not queued for a listener that is away: while the
//! listening connection is down (and until it is first up) the replica is
//! *deaf*: every request reads for itself and live streams poll; on
//! reconnecting it retires everything it holds and wakes every stream,
//! since it may have missed announcements.

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};
use uuid::Uuid;

use crate::{
    live::LiveRuns,
    run_view::RunSnapshot,
    shared_reads::{SharedReads, WriteMark},
};

/// The channel the tool database announces changes on.
pub const CHANNEL: &str = "migrate_hub_changes";

/// What hearing a change acts on.
#[derive(Clone)]
pub struct Listeners {
    pub writes: Arc<WriteMark>,
    pub runs: Arc<SharedReads<Uuid, RunSnapshot>>,
    pub live: Arc<LiveRuns>,
}

impl Listeners {
    fn set_deaf(&self, deaf: bool) {
        self.writes.set_deaf(deaf);
        self.live.set_deaf(deaf);
    }

    /// Acts on one announcement.
    fn heard(&self, payload: &str) {
        let (kind, id) = payload.split_once(':').unwrap_or((payload, ""));
        match (kind, Uuid::parse_str(id)) {
            ("run", Ok(run)) => {
                // Retired first: the streams woken next read afresh.
                self.runs.retire(&run);
                self.live.changed(run);
                metrics::counter!("migrate_hub_changes_heard_total", "kind" => "run").increment(1);
            }
            // A target execution's progress: many a second in a large run.
            // Requests are not made to wait for it; the next read starts at
            // once and the streams read after it.
            ("execution", Ok(run)) => {
                self.runs.refresh_soon(&run);
                self.live.changed(run);
                metrics::counter!("migrate_hub_changes_heard_total", "kind" => "execution")
                    .increment(1);
            }
            _ => {
                self.writes.record();
                metrics::counter!("migrate_hub_changes_heard_total", "kind" => "identity")
                    .increment(1);
            }
        }
    }
}

/// Listens until the process ends, reconnecting after a pause when the
/// connection drops.
pub async fn listen_forever(db: PgPool, listeners: Listeners) {
    loop {
        match listen(&db, &listeners).await {
            Ok(()) => tracing::warn!("change notifications: connection lost; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "change notifications: cannot listen; retrying"),
        }
        listeners.set_deaf(true);
        // Watchers poll while deaf: wake them to start.
        listeners.live.all_changed();
        metrics::gauge!("migrate_hub_changes_listening").set(0.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One listening connection: returns when it is lost.
async fn listen(db: &PgPool, listeners: &Listeners) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen(CHANNEL).await?;
    // Anything announced while nobody listened is unknown: start afresh.
    listeners.writes.record();
    listeners.set_deaf(false);
    listeners.live.all_changed();
    metrics::gauge!("migrate_hub_changes_listening").set(1.0);
    tracing::info!(channel = CHANNEL, "listening for changes made elsewhere");
    // `try_recv` answers `None` when the connection is lost, instead of
    // reconnecting behind our back and dropping what was sent meanwhile.
    while let Some(notification) = listener.try_recv().await? {
        listeners.heard(notification.payload());
        tracing::trace!(change = notification.payload(), "change made elsewhere");
    }
    Ok(())
}
