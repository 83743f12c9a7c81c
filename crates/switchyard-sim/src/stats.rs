//! Lock-free counters, the bounded request log and the cancellation guard.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{ReceivedBody, RequestRecord, SimStats};

/// HTTP status codes are three digits, so a flat array indexed by code
/// counts them without a map or a lock.
const STATUS_SLOTS: usize = 1000;

pub(crate) struct Stats {
    pub(crate) requests: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) hangs: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) error_events: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    pub(crate) streams_completed: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
    by_status: Box<[AtomicU64]>,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub(crate) fn new() -> Self {
        Self {
            requests: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            hangs: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            error_events: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            by_status: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn status(&self, code: u16) {
        if let Some(slot) = self.by_status.get(usize::from(code)) {
            bump(slot);
        }
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let errors_by_status: BTreeMap<u16, u64> = self
            .by_status
            .iter()
            .enumerate()
            .filter_map(|(code, c)| {
                let n = get(c);
                (n > 0).then(|| (u16::try_from(code).unwrap_or(u16::MAX), n))
            })
            .collect();
        SimStats {
            requests: get(&self.requests),
            ok: get(&self.ok),
            errors_by_status,
            hangs: get(&self.hangs),
            dropped: get(&self.dropped),
            error_events: get(&self.error_events),
            truncated: get(&self.truncated),
            cancelled: get(&self.cancelled),
            bad_requests: get(&self.bad_requests),
            streams_completed: get(&self.streams_completed),
            unauthorized: get(&self.unauthorized),
        }
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.requests,
            &self.ok,
            &self.hangs,
            &self.dropped,
            &self.error_events,
            &self.truncated,
            &self.cancelled,
            &self.bad_requests,
            &self.streams_completed,
            &self.unauthorized,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for c in self.by_status.iter() {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// Counts `cancelled` if dropped while armed: futures and bodies are dropped
/// without completing exactly when hyper gives up on a peer that went away.
pub(crate) struct CancelGuard<'a> {
    stats: &'a Stats,
    armed: bool,
}

impl<'a> CancelGuard<'a> {
    pub(crate) fn new(stats: &'a Stats) -> Self {
        Self { stats, armed: true }
    }

    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            bump(&self.stats.cancelled);
        }
    }
}

pub(crate) struct RequestLog {
    capacity: usize,
    records: Mutex<VecDeque<RequestRecord>>,
}

impl RequestLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            records: Mutex::new(VecDeque::new()),
        }
    }

    pub(crate) fn push(&self, record: RequestRecord) {
        // The evicted record is freed after the lock is released.
        let _evicted = {
            let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
            let evicted = if records.len() >= self.capacity {
                records.pop_front()
            } else {
                None
            };
            records.push_back(record);
            evicted
        };
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records.iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// The last bodies received, bounded in count (and each in size by the
/// caller).
pub(crate) struct BodyLog {
    capacity: usize,
    bodies: Mutex<VecDeque<ReceivedBody>>,
}

impl BodyLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            bodies: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    pub(crate) fn push(&self, body: ReceivedBody) {
        let _evicted = {
            let mut bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
            let evicted = if bodies.len() >= self.capacity {
                bodies.pop_front()
            } else {
                None
            };
            bodies.push_back(body);
            evicted
        };
    }

    pub(crate) fn snapshot(&self) -> Vec<ReceivedBody> {
        let bodies = self.bodies.lock().unwrap_or_else(PoisonError::into_inner);
        bodies.iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.bodies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
