//! The response cache (exact match, opt-in per route with
//! `[routes.NAME.cache]`): which requests may be cached, the cache key,
//! and the bounded in-memory store of answers, shared through Redis across
//! replicas when `[limits] redis_url` is set.
//!
//! Owns the cacheability rule ([`cacheable`]), the client's
//! `Cache-Control` ([`Directive`]), the key ([`key`]: SHA-256 of the route,
//! the caller's service and the body with its object keys sorted), and the
//! store ([`ResponseCache`]: bounded by `[cache] max_bytes`, entries over
//! `max_entry_bytes` refused, least recently used evicted first, expired
//! after the route's `ttl`). It may not do HTTP or know about protocols:
//! the proxy's cache phase (`server::proxy::cache`) asks it and fills it
//! with [`StoredAnswer`]s.
//!
//! A small map rather than `moka`/`quick_cache`: expiry runs on tokio's
//! clock (so tests pause time), each entry has its route's TTL, and the
//! bound is bytes; the whole store is one `HashMap` plus a `BTreeMap` of
//! use order under one mutex held for O(log n) work.

use super::stored::StoredAnswer;
use crate::config::CacheSettings;
use crate::telemetry::metrics::CacheGauges;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

/// `hit`, `miss` or `bypass` on every response of a cached route.
pub const X_CACHE: &str = "x-switchyard-cache";
/// Bound on every Redis call; past it the request goes on memory-only.
const REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// Map and order bookkeeping per entry, counted against `max_bytes`.
const ENTRY_OVERHEAD: usize = 128;

/// What kind of answer an inbound request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheClass {
    /// Sampled text (chat, completions, Responses, Messages): cached only
    /// when deterministic (see [`cacheable`]).
    Generation,
    /// The same input always gives the same answer (embeddings).
    Deterministic,
    /// Never cached (images, audio, moderations, stored Responses).
    Never,
}

/// What the client's `Cache-Control` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Normal,
    /// `no-cache`: skip the lookup, the fresh answer may be stored.
    NoCache,
    /// `no-store`: neither read nor write.
    NoStore,
}

impl Directive {
    /// `no-store` wins over `no-cache`; other directives are ignored.
    pub fn of(headers: &HeaderMap) -> Directive {
        let mut directive = Directive::Normal;
        let values = headers.get_all(http::header::CACHE_CONTROL);
        let tokens = values
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase());
        for token in tokens {
            match token.as_str() {
                "no-store" => return Directive::NoStore,
                "no-cache" => directive = Directive::NoCache,
                _ => {}
            }
        }
        directive
    }
}

/// Whether a request of `class` with this body may be answered from the
/// cache. A generation is deterministic when it says `temperature: 0`
/// (absent means the provider's default, 1; `seed` is best-effort upstream
/// and does not count) and asks for one choice (`n`, `best_of` absent or
/// 1); `nondeterministic` (the route's option) caches every generation.
pub fn cacheable(class: CacheClass, body: &Value, nondeterministic: bool) -> bool {
    match class {
        CacheClass::Never => false,
        CacheClass::Deterministic => true,
        CacheClass::Generation if nondeterministic => true,
        CacheClass::Generation => {
            let zero = body.get("temperature").and_then(Value::as_f64) == Some(0.0);
            let one = |field: &str| body.get(field).is_none_or(|n| n.as_u64() == Some(1));
            zero && one("n") && one("best_of")
        }
    }
}

pub type CacheKey = [u8; 32];

/// SHA-256 of the route, the caller's scope (its virtual key's service;
/// `None` with `auth = "none"`: one scope) and the body re-serialised with
/// object keys sorted at every depth. `stream` is part of the body: a
/// stream and a complete answer are different entries.
pub fn key(route: &str, scope: Option<&str>, body: &Value) -> CacheKey {
    let mut hasher = Sha256::new();
    hasher.update(b"switchyard-cache-v1\0");
    hasher.update(route.as_bytes());
    hasher.update(b"\0");
    match scope {
        Some(service) => {
            hasher.update(b"s:");
            hasher.update(service.as_bytes());
        }
        None => hasher.update(b"-"),
    }
    hasher.update(b"\0");
    let mut canonical = Vec::with_capacity(256);
    write_canonical(body, &mut canonical);
    hasher.update(&canonical);
    hasher.finalize().into()
}

/// `value` as JSON with every object's keys in sorted order.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut fields: Vec<_> = map.iter().collect();
            fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (name, field)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(name.clone()), out);
                out.push(b':');
                write_canonical(field, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a scalar to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

struct Entry {
    answer: Arc<StoredAnswer>,
    expires: Instant,
    bytes: usize,
    /// Its place in `State::order`.
    used: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<CacheKey, Entry>,
    /// Use order: the smallest tick is the least recently used entry.
    order: BTreeMap<u64, CacheKey>,
    bytes: usize,
    tick: u64,
}

impl State {
    fn remove(&mut self, key: &CacheKey) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.used);
        self.bytes -= entry.bytes;
        Some(entry)
    }

    fn touch(&mut self, key: &CacheKey) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(entry) = self.entries.get_mut(key) {
            self.order.remove(&entry.used);
            entry.used = tick;
            self.order.insert(tick, *key);
        }
    }

    /// Drops expired entries at the old end, then the least recently used
    /// until `incoming` more bytes fit; returns how many made room.
    fn make_room(&mut self, incoming: usize, max_bytes: usize, now: Instant) -> u64 {
        let mut evicted = 0;
        while let Some((_, key)) = self.order.first_key_value() {
            let key = *key;
            let expired = self.entries.get(&key).is_none_or(|e| e.expires <= now);
            let over = self.bytes + incoming > max_bytes;
            if !expired && !over {
                break;
            }
            self.remove(&key);
            evicted += u64::from(!expired);
        }
        evicted
    }
}

/// Cached answers in this replica's memory, and in Redis when connected.
pub struct ResponseCache {
    state: Mutex<State>,
    gauges: CacheGauges,
    redis: OnceLock<RedisCache>,
}

impl ResponseCache {
    pub fn new(gauges: CacheGauges) -> Self {
        ResponseCache {
            state: Mutex::default(),
            gauges,
            redis: OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock panics; a poisoned map is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shares answers through Redis from now on (keys under `prefix`).
    pub fn connect_redis(&self, url: &str, prefix: &str) -> Result<(), redis::RedisError> {
        let redis = RedisCache::connect(url, prefix)?;
        let _ = self.redis.set(redis);
        Ok(())
    }

    /// The answer kept under `key`, unless it expired.
    pub fn get_local(&self, key: &CacheKey, now: Instant) -> Option<Arc<StoredAnswer>> {
        let mut state = self.lock();
        let entry = state.entries.get(key)?;
        if entry.expires <= now {
            state.remove(key);
            self.publish(&state);
            return None;
        }
        let answer = entry.answer.clone();
        state.touch(key);
        Some(answer)
    }

    /// Memory first, then Redis (an answer found there is kept in memory
    /// for `ttl` too). Redis failing is a miss.
    pub async fn get(
        &self,
        key: &CacheKey,
        ttl: Duration,
        limits: &CacheSettings,
    ) -> Option<Arc<StoredAnswer>> {
        if let Some(answer) = self.get_local(key, Instant::now()) {
            return Some(answer);
        }
        let redis = self.redis.get()?;
        let answer = Arc::new(redis.get(key, limits.max_entry_bytes).await?);
        self.insert_local(*key, answer.clone(), ttl, limits, Instant::now());
        Some(answer)
    }

    /// Keeps `answer` for `ttl`, unless it is over `max_entry_bytes`;
    /// returns whether it was kept.
    pub fn insert_local(
        &self,
        key: CacheKey,
        answer: Arc<StoredAnswer>,
        ttl: Duration,
        limits: &CacheSettings,
        now: Instant,
    ) -> bool {
        if answer.bytes() > limits.max_entry_bytes {
            return false;
        }
        let bytes = answer.bytes() + ENTRY_OVERHEAD;
        let mut state = self.lock();
        state.remove(&key);
        let evicted = state.make_room(bytes, limits.max_bytes, now);
        if state.bytes + bytes > limits.max_bytes {
            self.publish(&state);
            return false;
        }
        state.tick += 1;
        let used = state.tick;
        state.order.insert(used, key);
        state.bytes += bytes;
        let expires = now + ttl;
        state.entries.insert(
            key,
            Entry {
                answer,
                expires,
                bytes,
                used,
            },
        );
        self.gauges.evictions.inc_by(evicted);
        self.publish(&state);
        true
    }

    /// Keeps `answer` in memory and writes it to Redis (bounded by
    /// [`REDIS_TIMEOUT`]) so other replicas find it.
    pub async fn insert(
        &self,
        key: CacheKey,
        answer: StoredAnswer,
        ttl: Duration,
        limits: &CacheSettings,
    ) {
        let answer = Arc::new(answer);
        if !self.insert_local(key, answer.clone(), ttl, limits, Instant::now()) {
            return;
        }
        if let Some(redis) = self.redis.get() {
            redis.set(&key, &answer, ttl).await;
        }
    }

    /// Like [`ResponseCache::insert`], for a caller that cannot wait (the
    /// end of a stream): kept in memory now, the Redis write runs on its
    /// own task.
    pub fn insert_detached(
        self: &Arc<Self>,
        key: CacheKey,
        answer: StoredAnswer,
        ttl: Duration,
        limits: &CacheSettings,
    ) {
        let answer = Arc::new(answer);
        if !self.insert_local(key, answer.clone(), ttl, limits, Instant::now()) {
            return;
        }
        if self.redis.get().is_some() {
            let cache = self.clone();
            tokio::spawn(async move {
                if let Some(redis) = cache.redis.get() {
                    redis.set(&key, &answer, ttl).await;
                }
            });
        }
    }

    fn publish(&self, state: &State) {
        self.gauges.bytes.set(state.bytes as i64);
        self.gauges.entries.set(state.entries.len() as i64);
    }

    /// Answers held in memory.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held in memory (answers and bookkeeping).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Cached answers in Redis: `SET prefix:cache:<hex key> <answer> PX ttl`,
/// every call bounded by [`REDIS_TIMEOUT`] (`RedisLink`: a failure means
/// memory-only for a while, logged at most every 30 s).
struct RedisCache {
    link: crate::redis_link::RedisLink,
    prefix: Box<str>,
}

impl RedisCache {
    fn connect(url: &str, prefix: &str) -> Result<Self, redis::RedisError> {
        Ok(RedisCache {
            link: crate::redis_link::RedisLink::connect(url, "response cache", REDIS_TIMEOUT)?,
            prefix: prefix.into(),
        })
    }

    fn redis_key(&self, key: &CacheKey) -> String {
        use std::fmt::Write;
        let mut out = format!("{}:cache:", self.prefix);
        for b in key {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    async fn get(&self, key: &CacheKey, max_entry_bytes: usize) -> Option<StoredAnswer> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.redis_key(key));
        let value: Option<Vec<u8>> = self.link.query(&cmd).await?;
        let value = value.filter(|v| v.len() <= max_entry_bytes + 1024)?;
        StoredAnswer::decode(Bytes::from(value))
    }

    async fn set(&self, key: &CacheKey, answer: &StoredAnswer, ttl: Duration) {
        let mut cmd = redis::cmd("SET");
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        cmd.arg(self.redis_key(key))
            .arg(answer.encode().as_ref())
            .arg("PX")
            .arg(millis);
        let _: Option<()> = self.link.query(&cmd).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};
    use serde_json::json;

    fn answer(len: usize) -> Arc<StoredAnswer> {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        Arc::new(StoredAnswer::new(
            StatusCode::OK,
            &headers,
            Bytes::from(vec![b'x'; len]),
        ))
    }

    fn limits(max_bytes: usize) -> CacheSettings {
        CacheSettings {
            max_bytes,
            max_entry_bytes: 1000,
        }
    }

    #[test]
    fn keys_ignore_field_order_but_not_values_routes_or_scopes() {
        let a = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0});
        let b = json!({"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m"});
        let c = json!({"temperature": 0, "messages": [{"content": "ho", "role": "user"}], "model": "m"});
        assert_eq!(key("r", None, &a), key("r", None, &b));
        assert_ne!(key("r", None, &a), key("r", None, &c));
        assert_ne!(key("r", None, &a), key("other", None, &a));
        assert_ne!(key("r", Some("svc-a"), &a), key("r", Some("svc-b"), &a));
        assert_ne!(key("r", Some("svc-a"), &a), key("r", None, &a));
        let stream = json!({"model": "m", "messages": [], "temperature": 0, "stream": true});
        let complete = json!({"model": "m", "messages": [], "temperature": 0});
        assert_ne!(key("r", None, &stream), key("r", None, &complete));
    }

    #[test]
    fn only_deterministic_generations_are_cacheable_unless_the_route_says_so() {
        let g = CacheClass::Generation;
        assert!(cacheable(g, &json!({"temperature": 0}), false));
        assert!(cacheable(g, &json!({"temperature": 0.0, "n": 1}), false));
        assert!(!cacheable(g, &json!({"temperature": 0.7}), false));
        assert!(
            !cacheable(g, &json!({}), false),
            "absent: the provider's default, 1"
        );
        assert!(!cacheable(g, &json!({"seed": 7}), false));
        assert!(!cacheable(g, &json!({"temperature": 0, "n": 2}), false));
        assert!(!cacheable(
            g,
            &json!({"temperature": 0, "best_of": 3}),
            false
        ));
        assert!(cacheable(g, &json!({"temperature": 1.2, "n": 4}), true));
        assert!(cacheable(CacheClass::Deterministic, &json!({}), false));
        assert!(!cacheable(
            CacheClass::Never,
            &json!({"temperature": 0}),
            true
        ));
    }

    #[test]
    fn no_store_wins_and_other_directives_are_ignored() {
        let mut headers = HeaderMap::new();
        assert_eq!(Directive::of(&headers), Directive::Normal);
        headers.insert(
            "cache-control",
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        assert_eq!(Directive::of(&headers), Directive::NoCache);
        headers.append("cache-control", HeaderValue::from_static("no-store"));
        assert_eq!(Directive::of(&headers), Directive::NoStore);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_their_ttl() {
        let cache = ResponseCache::new(CacheGauges::default());
        let l = limits(1 << 20);
        let now = Instant::now();
        assert!(cache.insert_local([1; 32], answer(10), Duration::from_secs(60), &l, now));
        assert!(cache.get_local(&[1; 32], now).is_some());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(cache
            .get(&[1; 32], Duration::from_secs(60), &l)
            .await
            .is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(cache
            .get(&[1; 32], Duration::from_secs(60), &l)
            .await
            .is_none());
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_least_recently_used_entry_is_evicted_to_stay_within_max_bytes() {
        let gauges = CacheGauges::default();
        let cache = ResponseCache::new(gauges.clone());
        let size = answer(300).bytes() + ENTRY_OVERHEAD;
        let l = limits(3 * size);
        let now = Instant::now();
        let ttl = Duration::from_secs(60);
        for k in 1..=3 {
            assert!(cache.insert_local([k; 32], answer(300), ttl, &l, now));
        }
        assert_eq!(cache.bytes(), 3 * size);
        // Using 1 makes 2 the least recently used.
        assert!(cache.get_local(&[1; 32], now).is_some());
        assert!(cache.insert_local([4; 32], answer(300), ttl, &l, now));
        assert!(cache.get_local(&[2; 32], now).is_none(), "2 was evicted");
        for k in [1, 3, 4] {
            assert!(cache.get_local(&[k; 32], now).is_some(), "{k} was kept");
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.bytes() <= 3 * size);
        assert_eq!(gauges.evictions.get(), 1);
        assert_eq!(gauges.entries.get(), 3);
        assert_eq!(gauges.bytes.get(), cache.bytes() as i64);
        // Over max_entry_bytes: refused, nothing evicted for it.
        assert!(!cache.insert_local([5; 32], answer(1001), ttl, &l, now));
        assert_eq!(cache.len(), 3);
    }
}
