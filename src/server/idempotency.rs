//! `Idempotency-Key`: a client request repeated under the same key (scoped
//! to its virtual key and path) is answered with the first request's
//! result instead of reaching an upstream again.
//!
//! Owns the key's syntax, the request fingerprint (SHA-256 of the body),
//! and the bounded in-memory store of keys in flight and answers kept
//! (`[idempotency]`: `ttl`, `max_entries`, `max_bytes`, `max_body`; the
//! oldest key is forgotten first). It may not do HTTP I/O or know about
//! protocols: the proxy's idempotency phase (`server::proxy`) asks
//! [`IdempotencyStore::begin`] and settles the [`Lead`] it gets.
//!
//! Across replicas (the fleet's Redis), a lead also claims its key in
//! `server::shared_idempotency` and its verdict goes there too; this
//! module's store stays the first stop, so repeats on the same replica
//! never ask Redis.

use super::shared_idempotency::SharedIdempotency;
pub use super::stored::{StoredAnswer, X_ORIGINAL_REQUEST_ID};
use crate::config::IdempotencySettings;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tokio::time::Instant;

/// The request header (Stripe's and OpenAI's SDKs send it on retries).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `true` on an answer replayed from an earlier request.
pub const X_REPLAY: &str = "x-switchyard-idempotent-replay";
/// The longest key accepted, as Stripe's.
const MAX_KEY_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyError {
    #[error("the Idempotency-Key header must be 1 to 255 printable ASCII characters")]
    InvalidKey,
    #[error("this Idempotency-Key was already used with a different request body; send a new key for a new request")]
    Reused,
    #[error("the request with this Idempotency-Key was a stream, and streams are not replayed; send a new key to ask again")]
    Stream,
    #[error("the answer to the request with this Idempotency-Key was larger than idempotency.max_body and was not kept; send a new key to ask again")]
    NotStored,
    #[error("the request with this Idempotency-Key is still in progress; retry later")]
    InProgress,
}

impl IdempotencyError {
    pub fn status(&self) -> StatusCode {
        match self {
            IdempotencyError::InvalidKey => StatusCode::BAD_REQUEST,
            IdempotencyError::Reused => StatusCode::UNPROCESSABLE_ENTITY,
            IdempotencyError::Stream
            | IdempotencyError::NotStored
            | IdempotencyError::InProgress => StatusCode::CONFLICT,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            IdempotencyError::InvalidKey => "invalid_idempotency_key",
            IdempotencyError::Reused => "idempotency_key_reused",
            IdempotencyError::Stream => "idempotency_stream",
            IdempotencyError::NotStored => "idempotency_not_stored",
            IdempotencyError::InProgress => "idempotency_in_progress",
        }
    }
}

/// The client's key, if it sent one; malformed keys are refused, not ignored
/// (a client that believes it is protected must learn it is not).
pub fn client_key(headers: &HeaderMap) -> Result<Option<&str>, IdempotencyError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    let printable = bytes.iter().all(|b| (0x20..0x7f).contains(b));
    if bytes.is_empty() || bytes.len() > MAX_KEY_LEN || !printable {
        return Err(IdempotencyError::InvalidKey);
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| IdempotencyError::InvalidKey)
}

/// What a key is scoped to: the virtual key's id (`None` with `auth =
/// "none"`), the request path, the client's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub owner: Option<i64>,
    pub path: String,
    pub key: String,
}

impl Scope {
    fn bytes(&self) -> usize {
        self.path.len() + self.key.len() + 64
    }
}

pub type Fingerprint = [u8; 32];

/// The request body's SHA-256: a repeat must send the same bytes.
pub fn fingerprint(body: &[u8]) -> Fingerprint {
    Sha256::digest(body).into()
}

/// How a key's first request ended, for every repeat.
#[derive(Debug, Clone)]
pub enum Verdict {
    Answer(Arc<StoredAnswer>),
    Refused(IdempotencyError),
}

/// What [`IdempotencyStore::begin`] found.
pub enum Begin {
    /// The key is new: this request goes upstream and settles the lead.
    Lead(Lead),
    /// The first request is in flight: wait for its verdict. A closed
    /// channel means it was released (failed retryably): ask again.
    Wait(watch::Receiver<Option<Verdict>>),
    Done(Verdict),
}

enum Slot {
    InFlight(watch::Receiver<Option<Verdict>>),
    Done { verdict: Verdict, expires: Instant },
}

struct Entry {
    fingerprint: Fingerprint,
    generation: u64,
    slot: Slot,
    bytes: usize,
}

#[derive(Default)]
struct State {
    entries: HashMap<Scope, Entry>,
    /// Keys in the order they were first seen, with their generation; an
    /// item whose entry was since released or replaced is stale.
    order: VecDeque<(Scope, u64)>,
    bytes: usize,
    next_generation: u64,
}

/// Keys in flight and answers kept, bounded by entries and bytes.
#[derive(Clone, Default)]
pub struct IdempotencyStore {
    state: Arc<Mutex<State>>,
    shared: Arc<std::sync::OnceLock<Arc<SharedIdempotency>>>,
}

impl IdempotencyStore {
    /// Shares keys with the other replicas through Redis from now on.
    pub fn connect_shared(&self, url: &str, prefix: &str) -> redis::RedisResult<()> {
        let shared = SharedIdempotency::connect(url, prefix)?;
        let _ = self.shared.set(Arc::new(shared));
        Ok(())
    }

    pub fn shared(&self) -> Option<&Arc<SharedIdempotency>> {
        self.shared.get()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock panics; a poisoned map is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn begin(
        &self,
        scope: Scope,
        fingerprint: Fingerprint,
        limits: &IdempotencySettings,
        now: Instant,
    ) -> Result<Begin, IdempotencyError> {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get(&scope) {
            let expired = matches!(entry.slot, Slot::Done { expires, .. } if expires <= now);
            if !expired {
                if entry.fingerprint != fingerprint {
                    return Err(IdempotencyError::Reused);
                }
                return Ok(match &entry.slot {
                    Slot::InFlight(rx) => Begin::Wait(rx.clone()),
                    Slot::Done { verdict, .. } => Begin::Done(verdict.clone()),
                });
            }
            state.remove(&scope);
        }
        state.evict(limits, now, scope.bytes(), true);
        let generation = state.next_generation;
        state.next_generation += 1;
        let (sender, receiver) = watch::channel(None);
        let bytes = scope.bytes();
        state.bytes += bytes;
        state.order.push_back((scope.clone(), generation));
        state.entries.insert(
            scope.clone(),
            Entry {
                fingerprint,
                generation,
                slot: Slot::InFlight(receiver),
                bytes,
            },
        );
        state.compact(limits.max_entries);
        Ok(Begin::Lead(Lead {
            store: self.clone(),
            scope,
            generation,
            sender: Some(sender),
            fleet: None,
        }))
    }

    /// Keys remembered (in flight and completed).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn remove(&mut self, scope: &Scope) {
        if let Some(entry) = self.entries.remove(scope) {
            self.bytes -= entry.bytes;
        }
    }

    /// Forgets expired answers at the front, then the oldest keys until
    /// `incoming` more bytes (and one more entry, for a new key) fit.
    fn evict(
        &mut self,
        limits: &IdempotencySettings,
        now: Instant,
        incoming: usize,
        new_key: bool,
    ) {
        while let Some((scope, generation)) = self.order.front() {
            let entry = self
                .entries
                .get(scope)
                .filter(|e| e.generation == *generation);
            let over = (new_key && self.entries.len() >= limits.max_entries)
                || self.bytes + incoming > limits.max_bytes;
            let expired = entry
                .is_some_and(|e| matches!(e.slot, Slot::Done { expires, .. } if expires <= now));
            if entry.is_some() && !over && !expired {
                break;
            }
            if let Some((scope, generation)) = self.order.pop_front() {
                if self
                    .entries
                    .get(&scope)
                    .is_some_and(|e| e.generation == generation)
                {
                    self.remove(&scope);
                }
            }
        }
    }

    /// Drops stale order items once they outnumber live entries, so the
    /// queue stays within twice `max_entries`.
    fn compact(&mut self, max_entries: usize) {
        if self.order.len() > 2 * max_entries.max(1) {
            let entries = &self.entries;
            self.order
                .retain(|(s, g)| entries.get(s).is_some_and(|e| e.generation == *g));
        }
    }
}

/// The first request under a key. Settled with [`Lead::settle`]; dropped
/// unsettled (a retryable failure, a cancelled request) it releases the
/// key, so the client's retry goes upstream.
pub struct Lead {
    store: IdempotencyStore,
    scope: Scope,
    generation: u64,
    sender: Option<watch::Sender<Option<Verdict>>>,
    /// The key claimed for the fleet too; settled or released with this.
    fleet: Option<super::shared_idempotency::FleetClaim>,
}

impl Lead {
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// From now on the verdict is the fleet's too.
    pub fn claimed_for_fleet(&mut self, claim: super::shared_idempotency::FleetClaim) {
        self.fleet = Some(claim);
    }

    /// Keeps `verdict` for `ttl` and hands it to every waiting repeat. An
    /// answer over `max_body` is kept as [`IdempotencyError::NotStored`].
    pub fn settle(mut self, verdict: Verdict, limits: &IdempotencySettings, now: Instant) {
        let verdict = match verdict {
            Verdict::Answer(a) if a.body.len() > limits.max_body => {
                Verdict::Refused(IdempotencyError::NotStored)
            }
            v => v,
        };
        let size = match &verdict {
            Verdict::Answer(a) => a.bytes(),
            Verdict::Refused(_) => 0,
        };
        {
            let mut state = self.store.lock();
            state.evict(limits, now, size, false);
            let generation = self.generation;
            if let Some(entry) = state
                .entries
                .get_mut(&self.scope)
                .filter(|e| e.generation == generation)
            {
                entry.slot = Slot::Done {
                    verdict: verdict.clone(),
                    expires: now + limits.ttl,
                };
                entry.bytes += size;
                state.bytes += size;
            }
        }
        if let Some(claim) = self.fleet.take() {
            claim.settle(&verdict, limits.ttl);
        }
        if let Some(sender) = self.sender.take() {
            sender.send_replace(Some(verdict));
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if self.sender.is_none() {
            return;
        }
        let mut state = self.store.lock();
        let generation = self.generation;
        if state
            .entries
            .get(&self.scope)
            .is_some_and(|e| e.generation == generation)
        {
            state.remove(&self.scope);
        }
        // The sender drops after this: waiters see the channel closed.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderValue;
    use std::time::Duration;

    fn limits(max_entries: usize) -> IdempotencySettings {
        IdempotencySettings {
            ttl: Duration::from_secs(60),
            max_entries,
            max_bytes: 1 << 20,
            max_body: 1024,
        }
    }

    fn scope(key: &str) -> Scope {
        Scope {
            owner: Some(1),
            path: "/v1/chat/completions".into(),
            key: key.into(),
        }
    }

    fn answer(body: &'static str) -> Verdict {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-ratelimit-remaining-requests", HeaderValue::from(3u32));
        Verdict::Answer(Arc::new(StoredAnswer::new(
            StatusCode::OK,
            &headers,
            Bytes::from_static(body.as_bytes()),
        )))
    }

    fn lead(begin: Result<Begin, IdempotencyError>) -> Lead {
        match begin {
            Ok(Begin::Lead(lead)) => lead,
            _ => panic!("expected a lead"),
        }
    }

    #[test]
    fn keys_must_be_short_printable_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(client_key(&headers), Ok(None));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static("abc-123 x"));
        assert_eq!(client_key(&headers), Ok(Some("abc-123 x")));
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(""));
        assert_eq!(client_key(&headers), Err(IdempotencyError::InvalidKey));
        let long = HeaderValue::try_from("k".repeat(256)).unwrap();
        headers.insert(IDEMPOTENCY_KEY, long);
        assert_eq!(client_key(&headers), Err(IdempotencyError::InvalidKey));
        let tab = HeaderValue::from_bytes(b"a\tb").unwrap();
        headers.insert(IDEMPOTENCY_KEY, tab);
        assert_eq!(client_key(&headers), Err(IdempotencyError::InvalidKey));
    }

    #[tokio::test(start_paused = true)]
    async fn a_settled_key_replays_and_a_different_body_is_refused() {
        let store = IdempotencyStore::default();
        let l = limits(10);
        let now = Instant::now();
        let first = lead(store.begin(scope("a"), fingerprint(b"x"), &l, now));
        first.settle(answer("hello"), &l, now);
        match store.begin(scope("a"), fingerprint(b"x"), &l, now) {
            Ok(Begin::Done(Verdict::Answer(a))) => assert_eq!(a.body, "hello"),
            _ => panic!("expected the stored answer"),
        }
        assert!(matches!(
            store.begin(scope("a"), fingerprint(b"y"), &l, now),
            Err(IdempotencyError::Reused)
        ));
        // After the TTL the key is new again.
        let later = now + Duration::from_secs(61);
        lead(store.begin(scope("a"), fingerprint(b"y"), &l, later));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_verdict_and_a_dropped_lead_releases_the_key() {
        let store = IdempotencyStore::default();
        let l = limits(10);
        let now = Instant::now();
        let first = lead(store.begin(scope("a"), fingerprint(b"x"), &l, now));
        let Ok(Begin::Wait(mut rx)) = store.begin(scope("a"), fingerprint(b"x"), &l, now) else {
            panic!("expected to wait");
        };
        drop(first);
        assert!(rx.wait_for(Option::is_some).await.is_err(), "released");
        let second = lead(store.begin(scope("a"), fingerprint(b"x"), &l, now));
        let Ok(Begin::Wait(mut rx)) = store.begin(scope("a"), fingerprint(b"x"), &l, now) else {
            panic!("expected to wait");
        };
        second.settle(Verdict::Refused(IdempotencyError::Stream), &l, now);
        let verdict = rx.wait_for(Option::is_some).await.map(|v| v.clone());
        assert!(matches!(
            verdict,
            Ok(Some(Verdict::Refused(IdempotencyError::Stream)))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_key_is_evicted_at_max_entries() {
        let store = IdempotencyStore::default();
        let l = limits(3);
        let now = Instant::now();
        for key in ["a", "b", "c", "d"] {
            lead(store.begin(scope(key), fingerprint(b"x"), &l, now)).settle(answer("1"), &l, now);
        }
        assert_eq!(store.len(), 3);
        // "a" was forgotten: it is new again; "d" is still kept.
        assert!(matches!(
            store.begin(scope("d"), fingerprint(b"x"), &l, now),
            Ok(Begin::Done(_))
        ));
        assert!(matches!(
            store.begin(scope("a"), fingerprint(b"other"), &l, now),
            Ok(Begin::Lead(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn stored_bytes_are_bounded_and_large_bodies_are_not_kept() {
        let store = IdempotencyStore::default();
        let mut l = limits(100);
        l.max_bytes = 2_000;
        let now = Instant::now();
        for i in 0..20 {
            let key = format!("k{i}");
            let body = Bytes::from(vec![b'x'; 500]);
            let a = StoredAnswer::new(StatusCode::OK, &HeaderMap::new(), body);
            lead(store.begin(scope(&key), fingerprint(b"x"), &l, now)).settle(
                Verdict::Answer(Arc::new(a)),
                &l,
                now,
            );
        }
        assert!(store.lock().bytes <= 2_000);
        assert!(store.len() <= 3);
        let big = StoredAnswer::new(StatusCode::OK, &HeaderMap::new(), vec![0; 1025].into());
        lead(store.begin(scope("big"), fingerprint(b"x"), &l, now)).settle(
            Verdict::Answer(Arc::new(big)),
            &l,
            now,
        );
        assert!(matches!(
            store.begin(scope("big"), fingerprint(b"x"), &l, now),
            Ok(Begin::Done(Verdict::Refused(IdempotencyError::NotStored)))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn released_keys_leave_the_order_queue_bounded() {
        let store = IdempotencyStore::default();
        let l = limits(4);
        let now = Instant::now();
        for _ in 0..100 {
            drop(lead(store.begin(scope("a"), fingerprint(b"x"), &l, now)));
        }
        assert!(store.lock().order.len() <= 8);
        assert!(store.is_empty());
    }
}
