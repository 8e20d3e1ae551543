//! Many readers of one object, one database read: while a read of a run is
//! under way, the requests for the same run that arrive queue behind it and
//! share the *next* read, so a run page watched by many people costs one
//! set of queries per round instead of one per request.
//!
//! Freshness is not traded away: a request only takes a result whose read
//! started after the request arrived, so it never sees data older than
//! itself (an Approve followed by a GET always sees the approval).

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex},
};

use tokio::time::Instant;

/// The latest read of each key, and the lock that queues its readers.
pub struct SharedReads<K, V> {
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

type Slot<V> = tokio::sync::Mutex<Option<(Instant, Arc<V>)>>;

impl<K: Eq + Hash + Clone, V> Default for SharedReads<K, V> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V> SharedReads<K, V> {
    /// The value of `key`, read by `read` — or by a read of another request
    /// that started after this one arrived.
    pub async fn get<E, F, Fut>(&self, key: K, read: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let arrived = Instant::now();
        let slot = {
            let mut slots = self.slots.lock().expect("shared reads lock");
            slots.entry(key.clone()).or_default().clone()
        };
        let result = {
            let mut latest = slot.lock().await;
            match latest.as_ref() {
                Some((started, value)) if *started >= arrived => Ok(value.clone()),
                _ => {
                    let started = Instant::now();
                    match read().await {
                        Ok(value) => {
                            let value = Arc::new(value);
                            *latest = Some((started, value.clone()));
                            Ok(value)
                        }
                        Err(err) => Err(err),
                    }
                }
            }
        };
        // The last reader of a key takes its slot away, so the map only
        // holds keys being read.
        let mut slots = self.slots.lock().expect("shared reads lock");
        if Arc::strong_count(&slot) == 2 {
            slots.remove(&key);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_reader_never_takes_a_read_older_than_itself() {
        let reads = SharedReads::<u32, usize>::default();
        let count = AtomicUsize::new(0);
        let read = || async { Ok::<_, ()>(count.fetch_add(1, Ordering::SeqCst) + 1) };
        assert_eq!(*reads.get(1, read).await.unwrap(), 1);
        // One after the other: each needs a read of its own.
        assert_eq!(*reads.get(1, read).await.unwrap(), 2);
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(
            reads.slots.lock().unwrap().is_empty(),
            "idle keys are dropped"
        );
    }

    #[tokio::test]
    async fn readers_waiting_behind_a_read_share_the_next_one() {
        let reads = Arc::new(SharedReads::<u32, usize>::default());
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
            std::time::Duration::from_secs(5),
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
        common::testing::wait_for(
            std::time::Duration::from_secs(5),
            "the readers to queue",
            || async { (Arc::strong_count(&reads.slots.lock().unwrap()[&7]) == 12).then_some(()) },
        )
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
        let reads = SharedReads::<u32, usize>::default();
        assert!(
            reads
                .get(1, || async { Err::<usize, _>("down") })
                .await
                .is_err()
        );
        assert_eq!(*reads.get(1, || async { Ok::<_, ()>(5) }).await.unwrap(), 5);
    }
}
