//! Changes made elsewhere, heard at once: every replica listens on the tool
//! database's channel `migrate_hub_changes`, where triggers announce, at
//! commit, every change that takes rights away (a revoked or re-scoped API
//! token, a disabled user, a changed role — see the migration
//! `20261206000003_identity_changes.sql`). Hearing one retires every shared
//! read this replica holds ([`WriteMark::record`]), so the very next request
//! reads the database again, exactly as after a write made here.
//!
//! Notifications are not queued for a listener that is away: while the
//! listening connection is down (and until it is first up) the replica is
//! *deaf* and every request reads for itself; on reconnecting it retires
//! everything it holds, since it may have missed announcements.

use std::{sync::Arc, time::Duration};

use sqlx::{PgPool, postgres::PgListener};

use crate::shared_reads::WriteMark;

/// The channel the tool database announces changes on.
pub const CHANNEL: &str = "migrate_hub_changes";

/// Listens until the process ends, reconnecting after a pause when the
/// connection drops.
pub async fn listen_forever(db: PgPool, writes: Arc<WriteMark>) {
    loop {
        match listen(&db, &writes).await {
            Ok(()) => tracing::warn!("change notifications: connection lost; reconnecting"),
            Err(e) => tracing::warn!(error = %e, "change notifications: cannot listen; retrying"),
        }
        writes.set_deaf(true);
        metrics::gauge!("migrate_hub_changes_listening").set(0.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One listening connection: returns when it is lost.
async fn listen(db: &PgPool, writes: &WriteMark) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen(CHANNEL).await?;
    // Anything announced while nobody listened is unknown: start afresh.
    writes.record();
    writes.set_deaf(false);
    metrics::gauge!("migrate_hub_changes_listening").set(1.0);
    tracing::info!(channel = CHANNEL, "listening for changes made elsewhere");
    // `try_recv` answers `None` when the connection is lost, instead of
    // reconnecting behind our back and dropping what was sent meanwhile.
    while let Some(notification) = listener.try_recv().await? {
        writes.record();
        metrics::counter!("migrate_hub_changes_heard_total").increment(1);
        tracing::debug!(change = notification.payload(), "change made elsewhere");
    }
    Ok(())
}
