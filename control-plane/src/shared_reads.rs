//! Many readers of one object, few database reads. A run page watched by
//! many people, or one API token used by many concurrent requests, costs one
//! read per round instead of one per request.
//!
//! Freshness is bounded, never traded away:
//! - a request takes the latest read of its key only when that read started
//!   at most `max_age` (`MH_READ_MAX_AGE_MS`) before the request arrived, and
//!   after the last write this process answered ([`WriteMark`]), so a change
//!   made through this control plane (an approval, a revoked token) is seen
//!   by every request that follows it;
//! - otherwise the request waits for the next read, which it shares with
//!   every request waiting at the time;
//! - when a request is served a read older than [`REFRESH_AFTER`] (or a
//!   quarter of `max_age`, if less), it starts the next read in the
//!   background: under steady load reads stay that fresh and nobody waits,
//!   unless the database takes nearly `max_age` to answer.
//!
//! With `max_age` zero every request waits for a read that started after it
//! arrived.
//!
//! Writes made elsewhere — another replica, a command — that take rights
//! away (a revoked token, a disabled user, a changed role) are announced by
//! the tool database and heard by [`crate::changes`], which marks them here
//! like a write of this process. A change to one run (its state, an
//! approval, a target execution — made by a worker, another replica) is
//! announced too and retires the reads of that run alone
//! ([`SharedReads::retire`]). While that listener is not connected the
//! mark is *deaf*: every request reads for itself, as with `max_age` zero.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{extract::Request, middleware::Next, response::Response};
use tokio::time::Instant;

/// How old a served read may get before the next one is started.
pub const REFRESH_AFTER: Duration = Duration::from_millis(50);

/// When this process last answered a request that may have written: reads
/// that started before it are not served any more.
#[derive(Debug)]
pub struct WriteMark {
    base: Instant,
    /// Nanoseconds after `base`; 0 until the first write.
    last: AtomicU64,
    /// Changes made elsewhere cannot be heard: nothing is shared.
    deaf: AtomicBool,
}

impl Default for WriteMark {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
            deaf: AtomicBool::new(false),
        }
    }
}

impl WriteMark {
    /// A mark that shares nothing until [`WriteMark::set_deaf`]`(false)`:
    /// for a process that must first start listening for changes.
    pub fn deaf() -> Self {
        let mark = Self::default();
        mark.deaf.store(true, Ordering::SeqCst);
        mark
    }

    /// Whether changes made elsewhere can be heard; while they cannot,
    /// every request reads for itself.
    pub fn set_deaf(&self, deaf: bool) {
        self.deaf.store(deaf, Ordering::SeqCst);
    }

    fn is_deaf(&self) -> bool {
        self.deaf.load(Ordering::SeqCst)
    }

    /// Records that a write has just been answered.
    pub fn record(&self) {
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.fetch_max(now.max(1), Ordering::SeqCst);
    }

    fn last(&self) -> Option<Instant> {
        match self.last.load(Ordering::SeqCst) {
            0 => None,
            nanos => Some(self.base + Duration::from_nanos(nanos)),
        }
    }

    /// Middleware: every request with an unsafe method marks a write once its
    /// handler has answered (and so committed), before the client sees the
    /// answer — also when the answer never completes (the client went away,
    /// a panic), since the handler may have committed. Requests refused
    /// before any handler ran (401, 403, 429: no or bad credentials, CSRF,
    /// roles, rate limits) mark nothing, so they cannot retire reads.
    pub async fn after_writes(
        axum::extract::State(mark): axum::extract::State<Arc<WriteMark>>,
        req: Request,
        next: Next,
    ) -> Response {
        if req.method().is_safe() {
            return next.run(req).await;
        }
        let mut pending = MarkOnDrop {
            mark: &mark,
            armed: true,
        };
        let response = next.run(req).await;
        pending.armed = !matches!(response.status().as_u16(), 401 | 403 | 429);
        response
    }
}

/// Records a write when dropped, unless disarmed.
struct MarkOnDrop<'a> {
    mark: &'a WriteMark,
    armed: bool,
}

impl Drop for MarkOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.mark.record();
        }
    }
}

/// Clears a slot's `refreshing` flag when dropped, however its read ended.
struct RefreshDone<'a>(&'a AtomicBool);

impl Drop for RefreshDone<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// The latest read of each key being watched.
pub struct SharedReads<K, V> {
    /// What is read (`run`, `token`): the `kind` label of the metrics.
    kind: &'static str,
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
    max_age: Duration,
    writes: Arc<WriteMark>,
    /// When idle slots were last dropped.
    swept: Mutex<Instant>,
}

struct Slot<V> {
    latest: Mutex<Latest<V>>,
    /// Held while a read of the key runs: waiting requests queue on it.
    reading: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
}

struct Read<V> {
    started: Instant,
    value: Arc<V>,
}

/// A slot's latest read; since when reads of its key are retired by a
/// change heard for that key alone ([`SharedReads::retire`]); and when a
/// change that only calls for the next read was last heard
/// ([`SharedReads::refresh_soon`]).
struct Latest<V> {
    read: Option<Read<V>>,
    retired: Option<Instant>,
    changed: Option<Instant>,
}

impl<V> Default for Slot<V> {
    fn default() -> Self {
        Self {
            latest: Mutex::new(Latest {
                read: None,
                retired: None,
                changed: None,
            }),
            reading: tokio::sync::Mutex::new(()),
            refreshing: AtomicBool::new(false),
        }
    }
}

impl<V> Slot<V> {
    /// The latest value if its read started at or after `floor`, with the
    /// time it started.
    fn latest_since(&self, floor: Instant) -> Option<(Instant, Arc<V>)> {
        let latest = self.latest.lock().expect("shared read slot");
        let floor = latest.retired.map_or(floor, |retired| retired.max(floor));
        latest
            .read
            .as_ref()
            .filter(|r| r.started >= floor)
            .map(|r| (r.started, r.value.clone()))
    }

    fn store(&self, started: Instant, value: Arc<V>) {
        let mut latest = self.latest.lock().expect("shared read slot");
        if latest.read.as_ref().is_none_or(|r| r.started <= started) {
            latest.read = Some(Read { started, value });
        }
    }

    fn changed(&self, now: Instant) {
        let mut latest = self.latest.lock().expect("shared read slot");
        latest.changed = Some(latest.changed.map_or(now, |c| c.max(now)));
    }

    /// Whether a change was heard after the read that started at `started`.
    fn changed_since(&self, started: Instant) -> bool {
        let latest = self.latest.lock().expect("shared read slot");
        latest.changed.is_some_and(|c| c > started)
    }

    fn retire(&self, now: Instant) {
        let mut latest = self.latest.lock().expect("shared read slot");
        latest.retired = Some(latest.retired.map_or(now, |r| r.max(now)));
    }

    fn started(&self) -> Option<Instant> {
        let latest = self.latest.lock().expect("shared read slot");
        latest.read.as_ref().map(|r| r.started)
    }
}

impl<K, V> SharedReads<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    pub fn new(kind: &'static str, max_age: Duration, writes: Arc<WriteMark>) -> Self {
        Self {
            kind,
            slots: Mutex::new(HashMap::new()),
            max_age,
            writes,
            swept: Mutex::new(Instant::now()),
        }
    }

    /// The value of `key`: the latest read, if fresh enough for a request
    /// arriving now, or else the next one.
    pub async fn get<E, F, Fut>(&self, key: K, read: F) -> Result<Arc<V>, E>
    where
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.get_after(key, None, read).await
    }

    /// [`SharedReads::get`], taking only a read that started at or after
    /// `after` (a moment a change of the key was heard): what a live stream
    /// woken by that change must send.
    pub async fn get_after<E, F, Fut>(
        &self,
        key: K,
        after: Option<Instant>,
        read: F,
    ) -> Result<Arc<V>, E>
    where
        E: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let arrived = Instant::now();
        let floor = self.floor(arrived);
        let floor = after.map_or(floor, |after| after.max(floor));
        let slot = self.slot(&key, arrived);
        if let Some((started, value)) = slot.latest_since(floor) {
            if (self.due(started, arrived) || slot.changed_since(started))
                && !slot.refreshing.swap(true, Ordering::SeqCst)
            {
                tokio::spawn(refresh(self.kind, slot, read));
            }
            self.served("latest");
            return Ok(value);
        }
        self.served("waited");
        // Waiters queue here one after the other; if a read fails, the next
        // waiter tries its own (a database that is down costs each waiter
        // its own attempt, as it would without sharing).
        let _reading = slot.reading.lock().await;
        // A read that finished while this request waited may do.
        if let Some((_, value)) = slot.latest_since(floor) {
            return Ok(value);
        }
        let started = Instant::now();
        let value = Arc::new(timed(self.kind, read()).await?);
        slot.store(started, value.clone());
        Ok(value)
    }

    /// Retires the reads of `key` made so far: a change to it was heard
    /// (made elsewhere, and committed), so every request that follows waits
    /// for a read that started after now. Other keys keep theirs.
    pub fn retire(&self, key: &K) {
        let now = Instant::now();
        let slot = self.slots.lock().expect("shared reads").get(key).cloned();
        if let Some(slot) = slot {
            slot.retire(now);
        }
    }

    /// A change of `key` was heard that does not retire its reads (a
    /// target's progress): requests are still served the latest read, but
    /// the first one starts the next read at once, so the change shows
    /// within one read.
    pub fn refresh_soon(&self, key: &K) {
        let now = Instant::now();
        let slot = self.slots.lock().expect("shared reads").get(key).cloned();
        if let Some(slot) = slot {
            slot.changed(now);
        }
    }

    /// Counts a request served from the latest read or after waiting for
    /// the next one.
    fn served(&self, how: &'static str) {
        metrics::counter!("migrate_hub_shared_read_requests_total", "kind" => self.kind, "served" => how)
            .increment(1);
    }

    /// The oldest start of a read a request arriving at `arrived` may take.
    fn floor(&self, arrived: Instant) -> Instant {
        if self.writes.is_deaf() {
            return arrived;
        }
        let aged = arrived.checked_sub(self.max_age).unwrap_or(arrived);
        match self.writes.last() {
            Some(write) if write > aged => write,
            _ => aged,
        }
    }

    /// Whether a read that started at `started` should be followed by the
    /// next one now.
    fn due(&self, started: Instant, now: Instant) -> bool {
        !self.max_age.is_zero()
            && now.saturating_duration_since(started) >= (self.max_age / 4).min(REFRESH_AFTER)
    }

    fn slot(&self, key: &K, now: Instant) -> Arc<Slot<V>> {
        let mut slots = self.slots.lock().expect("shared reads");
        self.sweep(&mut slots, now);
        slots.entry(key.clone()).or_default().clone()
    }

    /// Drops, at most every `max_age` (and at least every second), the
    /// slots nobody is reading whose latest read is too old to serve.
    fn sweep(&self, slots: &mut HashMap<K, Arc<Slot<V>>>, now: Instant) {
        let every = self
            .max_age
            .clamp(Duration::from_millis(1), Duration::from_secs(1));
        let mut swept = self.swept.lock().expect("shared reads sweep");
        if now.saturating_duration_since(*swept) < every {
            return;
        }
        *swept = now;
        let aged = now.checked_sub(self.max_age).unwrap_or(now);
        slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1 || slot.started().is_some_and(|s| s >= aged)
        });
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.slots.lock().expect("shared reads").len()
    }
}

/// The next read of a slot, started by a request that was served the
/// previous one. A failed read is dropped: the next request tries again.
async fn refresh<V, E, F, Fut>(kind: &'static str, slot: Arc<Slot<V>>, read: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<V, E>>,
{
    let _done = RefreshDone(&slot.refreshing);
    let _reading = slot.reading.lock().await;
    let started = Instant::now();
    if let Ok(value) = timed(kind, read()).await {
        slot.store(started, Arc::new(value));
    }
}

/// Runs a read, recording how long it took.
async fn timed<V, E>(kind: &'static str, read: impl Future<Output = Result<V, E>>) -> Result<V, E> {
    let started = Instant::now();
    let result = read.await;
    metrics::histogram!("migrate_hub_shared_read_duration_seconds", "kind" => kind)
        .record(started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn reads(max_age_ms: u64) -> (Arc<SharedReads<u32, usize>>, Arc<WriteMark>) {
        let writes = Arc::new(WriteMark::default());
        let reads = SharedReads::new("test", Duration::from_millis(max_age_ms), writes.clone());
        (Arc::new(reads), writes)
    }

    /// A read that counts how often it ran and returns that count.
    fn counting(
        count: &Arc<AtomicUsize>,
    ) -> impl FnOnce() -> std::future::Ready<Result<usize, ()>> + Send + 'static {
        let count = count.clone();
        move || std::future::ready(Ok(count.fetch_add(1, Ordering::SeqCst) + 1))
    }

    #[tokio::test(start_paused = true)]
    async fn without_max_age_a_reader_never_takes_a_read_older_than_itself() {
        let (reads, _) = reads(0);
        let count = Arc::new(AtomicUsize::new(0));
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 1);
        tokio::time::advance(Duration::from_nanos(1)).await;
        // One after the other: each needs a read of its own.
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 2);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(*reads.get(2, counting(&count)).await.unwrap(), 3);
        assert_eq!(reads.keys(), 1, "the idle key 1 was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_serves_for_max_age_and_is_refreshed_in_the_background() {
        let (reads, _) = reads(100);
        let count = Arc::new(AtomicUsize::new(0));
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 1);
        tokio::time::advance(Duration::from_millis(20)).await;
        assert_eq!(
            *reads.get(1, counting(&count)).await.unwrap(),
            1,
            "young enough"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // Past a quarter of the age: served, and the next read starts behind it.
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 1);
        // Let the refresh run without letting (paused) time pass.
        for _ in 0..100 {
            if count.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(count.load(Ordering::SeqCst), 2, "one background read");
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 2);
        // Past the age, nothing old is served: the request reads.
        tokio::time::advance(Duration::from_millis(101)).await;
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_answered_here_retires_every_earlier_read() {
        let (reads, writes) = reads(10_000);
        let count = Arc::new(AtomicUsize::new(0));
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        writes.record();
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 2);
        assert_eq!(
            *reads.get(1, counting(&count)).await.unwrap(),
            2,
            "read after the write"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_heard_for_one_key_retires_its_reads_only() {
        let (reads, _) = reads(10_000);
        let count = Arc::new(AtomicUsize::new(0));
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 1);
        assert_eq!(*reads.get(2, counting(&count)).await.unwrap(), 2);
        tokio::time::advance(Duration::from_millis(1)).await;
        reads.retire(&1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            *reads.get(1, counting(&count)).await.unwrap(),
            3,
            "read again"
        );
        assert_eq!(
            *reads.get(1, counting(&count)).await.unwrap(),
            3,
            "then shared"
        );
        assert_eq!(
            *reads.get(2, counting(&count)).await.unwrap(),
            2,
            "key 2 kept"
        );
        // A key nobody reads yet has nothing to retire.
        reads.retire(&3);
        assert_eq!(*reads.get(3, counting(&count)).await.unwrap(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_that_calls_for_the_next_read_starts_it_without_making_anyone_wait() {
        let (reads, _) = reads(10_000);
        let count = Arc::new(AtomicUsize::new(0));
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        reads.refresh_soon(&1);
        tokio::time::advance(Duration::from_millis(1)).await;
        // Served at once, and the next read starts behind it.
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 1);
        for _ in 0..100 {
            if count.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(count.load(Ordering::SeqCst), 2, "one background read");
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 2);
        // A reader that must see what was heard at a moment waits for a
        // read that started after it.
        tokio::time::advance(Duration::from_millis(1)).await;
        let heard = Instant::now();
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            *reads
                .get_after(1, Some(heard), counting(&count))
                .await
                .unwrap(),
            3
        );
    }

    #[tokio::test(start_paused = true)]
    async fn while_deaf_to_changes_made_elsewhere_every_request_reads() {
        let writes = Arc::new(WriteMark::deaf());
        let reads = SharedReads::new("test", Duration::from_secs(10), writes.clone());
        let count = Arc::new(AtomicUsize::new(0));
        assert_eq!(*reads.get(1, counting(&count)).await.unwrap(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            *reads.get(1, counting(&count)).await.unwrap(),
            2,
            "deaf: no sharing"
        );
        writes.set_deaf(false);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            *reads.get(1, counting(&count)).await.unwrap(),
            2,
            "listening: shared"
        );
    }

    #[tokio::test]
    async fn readers_waiting_behind_a_read_share_the_next_one() {
        let (reads, _) = reads(0);
        let count = Arc::new(AtomicUsize::new(0));
        let (release, gate) = tokio::sync::watch::channel(false);
        let slow_read = {
            let count = count.clone();
            move || {
                let count = count.clone();
                let mut gate = gate.clone();
                async move {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    gate.wait_for(|open| *open).await.unwrap();
                    Ok::<_, ()>(n)
                }
            }
        };
        // The first read holds the slot until released.
        let first = tokio::spawn({
            let (reads, read) = (reads.clone(), slow_read.clone());
            async move { *reads.get(7, read).await.unwrap() }
        });
        common::testing::wait_for(
            Duration::from_secs(5),
            "the first read to start",
            || async { (count.load(Ordering::SeqCst) == 1).then_some(()) },
        )
        .await;
        // Ten readers arrive while it runs: they must not take its result.
        let waiting: Vec<_> = (0..10)
            .map(|_| {
                let (reads, read) = (reads.clone(), slow_read.clone());
                tokio::spawn(async move { *reads.get(7, read).await.unwrap() })
            })
            .collect();
        common::testing::wait_for(Duration::from_secs(5), "the readers to queue", || async {
            (Arc::strong_count(&reads.slots.lock().unwrap()[&7]) == 12).then_some(())
        })
        .await;
        release.send(true).unwrap();
        assert_eq!(first.await.unwrap(), 1);
        for reader in waiting {
            assert_eq!(reader.await.unwrap(), 2, "one shared second read");
        }
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failed_reads_are_not_kept() {
        let (reads, _) = reads(10_000);
        assert!(
            reads
                .get(1, || async { Err::<usize, _>("down") })
                .await
                .is_err()
        );
        assert_eq!(*reads.get(1, || async { Ok::<_, ()>(5) }).await.unwrap(), 5);
    }
}
