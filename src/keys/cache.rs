//! The in-memory key cache the request path reads: lookup prefix →
//! candidate secrets (hash, expiry, key identity), fetched on first use and
//! trusted for a bounded TTL. A fresh hit is a read lock, a map lookup and
//! an `Arc` clone, no await.
//!
//! Misses are shielded three ways, so a client spraying random well-formed
//! keys cannot hammer the store: one load per prefix at a time
//! (singleflight), a bounded number of store lookups in flight at once, and
//! unknown prefixes remembered briefly in a bounded negative cache.
//! Management calls on this node invalidate at once; changes made by other
//! nodes or processes are seen when an entry's TTL runs out.

use super::secret::{Digest, PrefixKey};
use super::{AuthError, KeyInfo};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use tokio::sync::{OnceCell, Semaphore};

#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub hash: Digest,
    pub secret_expires_at_ms: Option<i64>,
    pub info: Arc<KeyInfo>,
}

#[derive(Debug)]
pub(crate) struct Entry {
    /// When the store was last read for this prefix.
    pub loaded_at_ms: i64,
    /// Trusted without asking the store until then.
    pub fresh_until_ms: i64,
    pub candidates: Vec<Candidate>,
}

impl Entry {
    fn fresh(&self, now_ms: i64) -> bool {
        // A clock stepped back makes entries stale, never fresher.
        now_ms >= self.loaded_at_ms && now_ms < self.fresh_until_ms
    }
}

/// What the cache knows without asking the store.
pub(crate) enum Cached {
    Fresh(Arc<Entry>),
    KnownUnknown,
    /// Not known, or known but past its TTL (kept for a store outage).
    Miss(Option<Arc<Entry>>),
}

type Flight = Arc<OnceCell<Result<Arc<Entry>, AuthError>>>;

/// Takes a finished (or abandoned) flight out of the in-flight map.
struct Landing<'c> {
    cache: &'c KeyCache,
    key: PrefixKey,
    flight: Flight,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut inflight = self
            .cache
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Other waiters may still share it; the last one out removes it
        // (the map holds one reference, each waiter's guard one).
        if inflight
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight) && Arc::strong_count(f) <= 2)
        {
            inflight.remove(&self.key);
        }
    }
}

pub(crate) struct KeyCache {
    positive: RwLock<HashMap<PrefixKey, Arc<Entry>>>,
    /// Unknown prefix → remembered until.
    negative: Mutex<HashMap<PrefixKey, i64>>,
    negative_capacity: usize,
    inflight: Mutex<HashMap<PrefixKey, Flight>>,
    /// Store lookups of prefixes the cache has never seen valid.
    lookups: Semaphore,
    /// Lookups renewing a key that was valid (its entry went stale): never
    /// starved by a flood of unknown prefixes.
    renewals: Semaphore,
    /// Bumped by every invalidation: a load that started before one does
    /// not cache what it read.
    generation: AtomicU64,
}

impl KeyCache {
    pub(crate) fn new(negative_capacity: usize, concurrent_lookups: usize) -> Self {
        KeyCache {
            positive: RwLock::default(),
            negative: Mutex::default(),
            negative_capacity,
            inflight: Mutex::default(),
            lookups: Semaphore::new(concurrent_lookups.max(1)),
            renewals: Semaphore::new(concurrent_lookups.max(1)),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn get(&self, key: PrefixKey, now_ms: i64) -> Cached {
        let entry = self
            .positive
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        match entry {
            Some(entry) if entry.fresh(now_ms) => Cached::Fresh(entry),
            Some(stale) => Cached::Miss(Some(stale)),
            None => {
                let negative = self.negative.lock().unwrap_or_else(PoisonError::into_inner);
                match negative.get(&key) {
                    Some(until) if now_ms < *until => Cached::KnownUnknown,
                    _ => Cached::Miss(None),
                }
            }
        }
    }

    /// Loads `key` with `load` unless a load of it is already running, in
    /// which case this waits for that one's result. `load` runs holding one
    /// of the bounded lookup permits: of the renewal pool when `renewal`
    /// (the key was valid before), else of the pool unknown prefixes share.
    pub(crate) async fn load<F, Fut>(
        &self,
        key: PrefixKey,
        renewal: bool,
        load: F,
    ) -> Result<Arc<Entry>, AuthError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Arc<Entry>, AuthError>>,
    {
        let flight = self
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        // Removes the flight however this ends, a caller's timeout included.
        let landing = Landing {
            cache: self,
            key,
            flight,
        };
        let permits = if renewal {
            &self.renewals
        } else {
            &self.lookups
        };
        landing
            .flight
            .get_or_init(|| async {
                // The semaphore is never closed; treat that as "no permit
                // needed" rather than failing.
                let _permit = permits.acquire().await.ok();
                load().await
            })
            .await
            .clone()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a loaded entry unless an invalidation happened since
    /// `generation` was read. An empty entry goes to the negative cache.
    pub(crate) fn insert(
        &self,
        key: PrefixKey,
        entry: Arc<Entry>,
        generation: u64,
        negative_until_ms: i64,
    ) {
        if entry.candidates.is_empty() {
            // Whatever was cached for this prefix is gone from the store.
            self.positive
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            let mut negative = self.negative.lock().unwrap_or_else(PoisonError::into_inner);
            if negative.len() >= self.negative_capacity {
                let now = entry.loaded_at_ms;
                negative.retain(|_, until| *until > now);
                if negative.len() >= self.negative_capacity {
                    // Full of fresh misses: someone is spraying keys. Start
                    // over; the lookup bound still protects the store.
                    negative.clear();
                }
            }
            if self.generation() == generation {
                negative.insert(key, negative_until_ms);
            }
            return;
        }
        let mut positive = self
            .positive
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if self.generation() == generation {
            positive.insert(key, entry);
        }
    }

    /// Forgets every entry of key `key_id` and the negative entry of
    /// `prefix` (a secret just issued under it).
    pub(crate) fn invalidate(&self, key_id: i64, prefix: Option<PrefixKey>) {
        let mut positive = self
            .positive
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        positive.retain(|_, e| !e.candidates.iter().any(|c| c.info.id == key_id));
        drop(positive);
        if let Some(prefix) = prefix {
            self.negative
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&prefix);
        }
    }

    /// Drops entries too old to serve even during a store outage, and
    /// expired negative entries.
    pub(crate) fn purge(&self, now_ms: i64, max_stale_ms: i64) {
        self.positive
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, e| now_ms.saturating_sub(e.loaded_at_ms) <= max_stale_ms);
        self.negative
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, until| *until > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn prefix(n: u32) -> PrefixKey {
        PrefixKey::from_prefix(&format!("sy-{n:08}")).unwrap()
    }

    fn empty(at: i64) -> Arc<Entry> {
        Arc::new(Entry {
            loaded_at_ms: at,
            fresh_until_ms: at + 1_000,
            candidates: Vec::new(),
        })
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_prefix_load_once() {
        let cache = Arc::new(KeyCache::new(10, 1));
        let loads = Arc::new(AtomicUsize::new(0));
        let entered = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, loads, entered) = (cache.clone(), loads.clone(), entered.clone());
                let mut released = released.clone();
                tokio::spawn(async move {
                    // Joining the flight happens in this same poll, before
                    // any await inside `load`.
                    entered.fetch_add(1, Ordering::SeqCst);
                    cache
                        .load(prefix(1), false, || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            let _ = released.wait_for(|go| *go).await;
                            Ok(empty(0))
                        })
                        .await
                })
            })
            .collect();
        for _ in 0..1_000 {
            if entered.load(Ordering::SeqCst) == 20 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(entered.load(Ordering::SeqCst), 20);
        release.send(true).unwrap();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap().unwrap());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(results.iter().all(|r| Arc::ptr_eq(r, &results[0])));
        assert!(cache.inflight.lock().unwrap().is_empty(), "flight cleared");
    }

    #[tokio::test]
    async fn an_abandoned_lookup_leaves_no_flight_behind() {
        let cache = KeyCache::new(10, 1);
        let hung = cache.load(prefix(1), false, std::future::pending);
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(1), hung).await;
        assert!(timed_out.is_err());
        assert!(
            cache.inflight.lock().unwrap().is_empty(),
            "flight removed on drop"
        );
    }

    #[tokio::test]
    async fn unknown_prefixes_cannot_starve_renewals() {
        let cache = Arc::new(KeyCache::new(10, 1));
        // An unknown prefix holds the only lookup permit forever.
        let hog = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.load(prefix(1), false, std::future::pending).await })
        };
        while cache.lookups.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let renewed = cache.load(prefix(2), true, || async { Ok(empty(0)) }).await;
        assert!(renewed.is_ok(), "a key that was valid still gets looked up");
        hog.abort();
    }

    #[test]
    fn the_negative_cache_is_bounded() {
        let cache = KeyCache::new(10, 1);
        for n in 0..10 {
            cache.insert(prefix(n), empty(0), cache.generation(), 1_000);
        }
        assert!(matches!(cache.get(prefix(3), 500), Cached::KnownUnknown));
        assert!(matches!(cache.get(prefix(3), 1_000), Cached::Miss(None)));
        cache.insert(prefix(10), empty(0), cache.generation(), 1_000);
        assert!(cache.negative.lock().unwrap().len() <= 10);
        assert!(matches!(cache.get(prefix(10), 500), Cached::KnownUnknown));
        // Expired entries make room before anything fresh is dropped.
        let cache = KeyCache::new(10, 1);
        for n in 0..10 {
            cache.insert(prefix(n), empty(0), cache.generation(), 100 + i64::from(n));
        }
        cache.insert(prefix(10), empty(105), cache.generation(), 2_000);
        let negative = cache.negative.lock().unwrap();
        assert_eq!(negative.len(), 5, "only the expired ones went");
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let cache = KeyCache::new(10, 1);
        let before = cache.generation();
        cache.invalidate(7, Some(prefix(1)));
        cache.insert(prefix(1), empty(0), before, 1_000);
        assert!(matches!(cache.get(prefix(1), 1), Cached::Miss(None)));
        cache.insert(prefix(1), empty(0), cache.generation(), 1_000);
        assert!(matches!(cache.get(prefix(1), 1), Cached::KnownUnknown));
        cache.invalidate(7, Some(prefix(1)));
        assert!(matches!(cache.get(prefix(1), 1), Cached::Miss(None)));
    }
}
