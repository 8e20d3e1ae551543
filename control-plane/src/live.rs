//! Runs being watched live: who is waiting for a run's next change on this
//! replica, told the moment the tool database announces one
//! ([`crate::changes`]).
//!
//! One `watch` channel per watched run: a change wakes that run's watchers
//! only, and a watcher busy sending sees any number of changes heard
//! meanwhile as one (coalesced per run). A run nobody watches any more is
//! forgotten at its next change.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::{sync::watch, time::Instant};
use uuid::Uuid;

/// The runs watched on this replica.
#[derive(Debug)]
pub struct LiveRuns {
    runs: Mutex<HashMap<Uuid, watch::Sender<Option<Instant>>>>,
    /// Changes cannot be heard (the listener is not connected): watchers
    /// look for themselves, every second.
    deaf: AtomicBool,
    /// Set when the process stops: every stream ends.
    closing: watch::Sender<bool>,
}

impl Default for LiveRuns {
    fn default() -> Self {
        Self {
            runs: Mutex::default(),
            deaf: AtomicBool::new(true),
            closing: watch::channel(false).0,
        }
    }
}

/// One watcher of one run.
#[derive(Debug)]
pub struct Watch {
    /// When the run's last change was heard.
    pub changes: watch::Receiver<Option<Instant>>,
    pub closing: watch::Receiver<bool>,
}

impl LiveRuns {
    /// Starts watching `run`: the receiver wakes at its next change.
    pub fn watch(&self, run: Uuid) -> Watch {
        let mut runs = self.runs.lock().expect("live runs");
        let changes = runs
            .entry(run)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Watch {
            changes,
            closing: self.closing.subscribe(),
        }
    }

    /// A change of `run` was heard: its watchers look again.
    pub fn changed(&self, run: Uuid) {
        let mut runs = self.runs.lock().expect("live runs");
        if let Some(sender) = runs.get(&run) {
            if sender.receiver_count() == 0 {
                runs.remove(&run);
            } else {
                sender.send_replace(Some(Instant::now()));
            }
        }
    }

    /// Anything may have changed (changes went unheard for a while): every
    /// watcher looks again.
    pub fn all_changed(&self) {
        let mut runs = self.runs.lock().expect("live runs");
        let now = Instant::now();
        runs.retain(|_, sender| {
            sender.send_replace(Some(now));
            sender.receiver_count() > 0
        });
    }

    /// Whether changes can be heard; while they cannot, watchers poll.
    pub fn set_deaf(&self, deaf: bool) {
        self.deaf.store(deaf, Ordering::SeqCst);
    }

    pub fn is_deaf(&self) -> bool {
        self.deaf.load(Ordering::SeqCst)
    }

    /// Ends every stream: the process is stopping.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// How many runs have watchers.
    pub fn watched(&self) -> usize {
        let runs = self.runs.lock().expect("live runs");
        runs.values().filter(|s| s.receiver_count() > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_watchers_of_its_run_only_and_coalesces() {
        let live = LiveRuns::default();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut on_a = live.watch(a);
        let on_b = live.watch(b);
        live.changed(a);
        live.changed(a);
        live.changed(a);
        assert!(on_a.changes.has_changed().unwrap());
        on_a.changes.borrow_and_update();
        assert!(
            !on_a.changes.has_changed().unwrap(),
            "three changes, one wake"
        );
        assert!(!on_b.changes.has_changed().unwrap());
        live.all_changed();
        assert!(on_b.changes.has_changed().unwrap());
        drop(on_b);
        live.changed(b);
        assert_eq!(live.watched(), 1, "a run nobody watches is forgotten");
        live.close();
        assert!(*on_a.closing.borrow_and_update());
    }
}
