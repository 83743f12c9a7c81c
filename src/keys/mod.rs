//! Virtual keys: who may call the gateway, on which routes, with which
//! limits and budgets. Owns secret issuing and checking (`secret`), the
//! in-memory key cache the request path reads (`cache`), spend tracking
//! for budgets (`budget`), the management operations shared by the CLI and
//! the admin HTTP API (`manage`, `admin`, `cli`). The rows themselves live
//! in `store`; rate limits are stored here but enforced by `limits`.
//! May not: touch routing or upstreams, or log, return or store a secret
//! (only its visible prefix and SHA-256), except the one time a secret is
//! issued.
//!
//! Consistency: an authenticated request never waits on the database while
//! its key's cache entry is fresh. Entries are trusted for `cache_ttl`
//! (`[keys] cache_ttl`, default 5 s): a revocation, rotation expiry or limit
//! change made through another process takes effect on this gateway within
//! that bound; made through this gateway's admin API, at once. While the
//! store is unreachable, entries already cached keep being served for up to
//! `max_stale` (default 10 min) rather than failing every request.

pub mod admin;
mod budget;
mod cache;
pub mod cli;
mod guard;
mod manage;
pub mod secret;

pub use manage::{
    parse_date, Expiry, Issued, KeyStatus, KeyView, LimitsUpdate, NewKey, SecretView, SpendView,
    Update,
};

use crate::store::{PrefixMatch, Store, StoreError};
use budget::{BudgetTracker, SpendCell};
use cache::{Cached, Candidate, Entry, KeyCache};
use guard::AddressGuard;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Rate limits of a key; enforced by the `limits` module, not here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct KeyLimits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub max_concurrent: Option<u32>,
}

/// Spend caps in USD per UTC day and per UTC month.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct KeyBudget {
    pub daily_usd: Option<f64>,
    pub monthly_usd: Option<f64>,
}

/// An authenticated key as the request path sees it. Holds no secret.
#[derive(Debug)]
pub struct KeyInfo {
    pub id: i64,
    pub name: String,
    pub service: String,
    /// `None`: every route.
    pub allowed_routes: Option<Vec<String>>,
    pub limits: KeyLimits,
    pub budget: KeyBudget,
    /// Whether this key's requests may be served by a degraded fallback.
    pub allow_degraded: bool,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    spend: Arc<SpendCell>,
}

impl KeyInfo {
    pub fn allows_route(&self, route: &str) -> bool {
        self.allowed_routes
            .as_ref()
            .is_none_or(|routes| routes.iter().any(|r| r == route))
    }
}

/// Why a presented key was refused. Messages say which, never echo it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("no API key was presented; send `Authorization: Bearer <key>` or `x-api-key: <key>`")]
    Missing,
    #[error("the API key is not valid")]
    Unknown,
    #[error("the API key has expired")]
    Expired,
    #[error("the API key has been revoked")]
    Revoked,
    /// The key could not be checked: map to 503, not 401.
    #[error("the key store is unavailable; try again shortly")]
    Store(#[source] Arc<StoreError>),
    /// `auth = "keys"` but the key service is not running (never started,
    /// or a config swapped in without it): refuse, never serve open (503).
    #[error("this gateway requires virtual keys but its key service is not running; no request is served")]
    Unavailable,
    /// The client's address presented too many invalid keys (429).
    #[error(
        "too many invalid API keys from this address; retry after {}s",
        retry_after.as_secs().max(1)
    )]
    Throttled { retry_after: Duration },
}

impl AuthError {
    /// Whether this refusal counts against the client's address: the key
    /// presented was wrong (not the store, not the limit itself).
    fn is_failure(&self) -> bool {
        !matches!(
            self,
            AuthError::Store(_) | AuthError::Unavailable | AuthError::Throttled { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Daily,
    Monthly,
}

impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Monthly => "monthly",
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "this API key's {period} budget of ${limit_usd:.2} is spent (${spent_usd:.2} used); it resets in {}",
    humantime::format_duration(Duration::from_secs(retry_after.as_secs()))
)]
pub struct BudgetExceeded {
    pub period: BudgetPeriod,
    pub limit_usd: f64,
    pub spent_usd: f64,
    /// Until the period resets (UTC midnight or the first of the month).
    pub retry_after: Duration,
}

/// Errors of the management operations (CLI, admin API).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no key named \"{0}\"")]
    NotFound(String),
    #[error("a key named \"{0}\" already exists")]
    Exists(String),
    #[error("key \"{0}\" is revoked")]
    Revoked(String),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Unix time in milliseconds: the system clock, or a manual one for tests
/// (expiry, cache TTL and budget periods all read this one clock).
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<AtomicI64>>);

impl Clock {
    pub fn manual(start_ms: i64) -> Clock {
        Clock(Some(Arc::new(AtomicI64::new(start_ms))))
    }

    pub fn now_ms(&self) -> i64 {
        match &self.0 {
            Some(manual) => manual.load(Ordering::Acquire),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }

    /// Moves a manual clock; no effect on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(manual) = &self.0 {
            manual.fetch_add(by.as_millis() as i64, Ordering::AcqRel);
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(_) => write!(f, "Clock::manual({})", self.now_ms()),
            None => f.write_str("Clock::system"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeySettings {
    /// How long a cached key is trusted without asking the store.
    pub cache_ttl: Duration,
    /// How long an unknown prefix is remembered as unknown.
    pub negative_ttl: Duration,
    /// At most this many unknown prefixes are remembered.
    pub negative_capacity: usize,
    /// Store lookups in flight at once (cache misses).
    pub concurrent_lookups: usize,
    /// A cache miss gives up (503) after this long (`[store] timeout`).
    pub store_timeout: Duration,
    /// While the store fails, a cached entry this old is still served.
    pub max_stale: Duration,
    /// Pending spend is written this often.
    pub flush_every: Duration,
    /// Failed authentications a client address may make per minute before
    /// it is throttled (see `guard`); 0 turns the limit off.
    pub failed_auth_per_minute: u32,
    pub clock: Clock,
}

impl Default for KeySettings {
    fn default() -> Self {
        KeySettings {
            cache_ttl: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(1),
            negative_capacity: 10_000,
            concurrent_lookups: 4,
            store_timeout: Duration::from_secs(2),
            max_stale: Duration::from_secs(600),
            flush_every: Duration::from_secs(1),
            failed_auth_per_minute: 60,
            clock: Clock::default(),
        }
    }
}

impl KeySettings {
    /// Defaults with the configured `[keys] cache_ttl` and `[store] timeout`.
    pub fn from_config(config: &crate::config::Config) -> KeySettings {
        let cache_ttl = config.keys.cache_ttl;
        KeySettings {
            cache_ttl,
            negative_ttl: cache_ttl.min(Duration::from_secs(1)),
            failed_auth_per_minute: config.keys.failed_auth_per_minute,
            // One bound for every store call; here it covers waiting for a
            // lookup slot too.
            store_timeout: config.store_timeout,
            ..KeySettings::default()
        }
    }
}

/// The secret a request presents: `Authorization: Bearer …` (scheme
/// case-insensitive; OpenAI clients), else `x-api-key` (Anthropic clients).
pub fn presented_secret(headers: &http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|text| text.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, rest)| rest.trim());
    bearer
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        })
        .filter(|s| !s.is_empty())
}

/// Virtual keys over a store: authentication (cached), budgets, and the
/// management operations. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    settings: KeySettings,
    cache: KeyCache,
    guard: AddressGuard,
    budgets: BudgetTracker,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Starts the background spend writer on the current runtime, so call
    /// it on one that runs as long as the gateway (as the request log
    /// writer does); the writer stops when the last clone of this `Keys`
    /// is dropped. `Store::connect` has created the tables.
    pub async fn open(store: Store, settings: KeySettings) -> Result<Keys, KeyError> {
        let inner = Arc::new(Inner {
            cache: KeyCache::new(settings.negative_capacity, settings.concurrent_lookups),
            guard: AddressGuard::new(settings.failed_auth_per_minute),
            budgets: BudgetTracker::default(),
            store,
            settings,
        });
        tokio::spawn(background(
            Arc::downgrade(&inner),
            inner.settings.flush_every,
        ));
        Ok(Keys { inner })
    }

    pub fn settings(&self) -> &KeySettings {
        &self.inner.settings
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn now_ms(&self) -> i64 {
        self.inner.settings.clock.now_ms()
    }

    /// Authenticates a presented secret (from `Authorization: Bearer …` or
    /// `x-api-key`; see [`presented_secret`]). Malformed input is refused
    /// without any lookup; a fresh cached key without any await.
    pub async fn authenticate(&self, presented: &str) -> Result<Arc<KeyInfo>, AuthError> {
        self.authenticate_from(presented, None).await
    }

    /// [`Keys::authenticate`] for a client at `address`: its failures are
    /// counted, and past `failed_auth_per_minute` it may start no store
    /// lookup (429) while keys already cached keep working (see `guard`).
    pub async fn authenticate_from(
        &self,
        presented: &str,
        address: Option<IpAddr>,
    ) -> Result<Arc<KeyInfo>, AuthError> {
        let now = self.now_ms();
        let result = self.check(presented, address, now).await;
        match result {
            Err(e) if e.is_failure() => {
                let guard = &self.inner.guard;
                guard.failed(address, now);
                Err(match guard.throttled(address, now) {
                    Some(t) => AuthError::Throttled {
                        retry_after: t.retry_after,
                    },
                    None => e,
                })
            }
            result => result,
        }
    }

    async fn check(
        &self,
        presented: &str,
        address: Option<IpAddr>,
        now: i64,
    ) -> Result<Arc<KeyInfo>, AuthError> {
        let presented = presented.trim();
        if presented.is_empty() {
            return Err(AuthError::Missing);
        }
        let key = secret::lookup_key(presented).ok_or(AuthError::Unknown)?;
        let digest = secret::digest(presented);
        let entry = match self.inner.cache.get(key, now) {
            Cached::Fresh(entry) => entry,
            Cached::KnownUnknown => return Err(AuthError::Unknown),
            Cached::Miss(stale) => {
                // Renewing a prefix known to be valid is not something random
                // keys can cause (and the cache renews it once per TTL).
                let _lookup = match stale {
                    Some(_) => None,
                    None => Some(self.inner.guard.begin_lookup(address, now).map_err(|t| {
                        AuthError::Throttled {
                            retry_after: t.retry_after,
                        }
                    })?),
                };
                self.load(key, now, stale).await?
            }
        };
        verify(&entry, &digest, now)
    }

    async fn load(
        &self,
        key: secret::PrefixKey,
        now: i64,
        stale: Option<Arc<Entry>>,
    ) -> Result<Arc<Entry>, AuthError> {
        let inner = &self.inner;
        let generation_before = inner.cache.generation();
        let loading = inner.cache.load(key, stale.is_some(), || async {
            let generation = inner.cache.generation();
            let candidates = self
                .fetch_candidates(key, now)
                .await
                .map_err(|e| AuthError::Store(Arc::new(e)))?;
            let entry = Arc::new(Entry {
                loaded_at_ms: now,
                fresh_until_ms: now.saturating_add(millis(inner.settings.cache_ttl)),
                candidates,
            });
            let negative_until = now.saturating_add(millis(inner.settings.negative_ttl));
            inner
                .cache
                .insert(key, entry.clone(), generation, negative_until);
            Ok(entry)
        });
        // The bound covers waiting for a lookup permit too.
        let error = match tokio::time::timeout(inner.settings.store_timeout, loading).await {
            Ok(Ok(entry)) => return Ok(entry),
            Ok(Err(e)) => e,
            Err(_) => AuthError::Store(Arc::new(StoreError::Timeout)),
        };
        match stale {
            Some(stale)
                if now.saturating_sub(stale.loaded_at_ms) <= millis(inner.settings.max_stale) =>
            {
                tracing::warn!(
                    error = ?std::error::Error::source(&error),
                    "key store unreachable; serving a cached key past its TTL"
                );
                // Ask the store again in a second, not on every request.
                let retry = Arc::new(Entry {
                    loaded_at_ms: stale.loaded_at_ms,
                    fresh_until_ms: now.saturating_add(1_000),
                    candidates: stale.candidates.clone(),
                });
                inner.cache.insert(key, retry, generation_before, now);
                Ok(stale)
            }
            _ => Err(error),
        }
    }

    async fn fetch_candidates(
        &self,
        key: secret::PrefixKey,
        now: i64,
    ) -> Result<Vec<Candidate>, StoreError> {
        let rows = self.inner.store.secrets_by_prefix(&key.to_prefix()).await?;
        let mut candidates = Vec::with_capacity(rows.len());
        for row in rows {
            let PrefixMatch {
                key,
                hash,
                secret_expires_at_ms,
            } = row;
            let Some(hash) = secret::from_hex(&hash) else {
                tracing::error!(key = %key.name, "stored secret hash is not 64 hex digits; ignoring it");
                continue;
            };
            let spend = self
                .inner
                .budgets
                .cell(&self.inner.store, key.id, now)
                .await?;
            candidates.push(Candidate {
                hash,
                secret_expires_at_ms,
                info: Arc::new(manage::key_info(key, spend)),
            });
        }
        Ok(candidates)
    }

    /// Records a finished request's cost for budgets: a few arithmetic
    /// operations under the key's own mutex; written to the store later in
    /// batches.
    pub fn record_spend(&self, key: &KeyInfo, cost_usd: f64) {
        key.spend.record(self.now_ms(), cost_usd);
    }

    /// Err when the key's daily or monthly budget is spent. Spend is known
    /// once requests finish, so concurrent requests can overshoot a budget
    /// by what they cost together.
    pub fn check_budget(&self, key: &KeyInfo) -> Result<(), BudgetExceeded> {
        key.spend.check(self.now_ms(), &key.budget)
    }

    /// Writes pending spend to the store now (shutdown, tests). Failures
    /// are logged; the spend stays pending for the next try.
    pub async fn flush(&self) {
        if let Err(e) = self
            .inner
            .budgets
            .flush(&self.inner.store, self.now_ms())
            .await
        {
            tracing::warn!(error = %e, "key spend not written; will retry");
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn verify(entry: &Entry, digest: &secret::Digest, now: i64) -> Result<Arc<KeyInfo>, AuthError> {
    // Every candidate is compared (no early exit) so timing does not say
    // which one matched.
    let mut matched = None;
    for candidate in &entry.candidates {
        if secret::digests_equal(&candidate.hash, digest) {
            matched = Some(candidate);
        }
    }
    let candidate = matched.ok_or(AuthError::Unknown)?;
    let info = &candidate.info;
    // Revocation is immediate whatever the revoking node's clock said.
    if info.revoked_at_ms.is_some() {
        return Err(AuthError::Revoked);
    }
    let expired = |at: Option<i64>| at.is_some_and(|at| at <= now);
    if expired(info.expires_at_ms) || expired(candidate.secret_expires_at_ms) {
        return Err(AuthError::Expired);
    }
    Ok(info.clone())
}

/// Writes spend every `flush_every` and drops cache entries too old to
/// serve; ends with the last `Keys`.
async fn background(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; nothing is pending yet.
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let now = inner.settings.clock.now_ms();
        if let Err(e) = inner.budgets.flush(&inner.store, now).await {
            tracing::warn!(error = %e, "key spend not written; will retry");
        }
        let max_stale = millis(
            inner
                .settings
                .cache_ttl
                .saturating_add(inner.settings.max_stale),
        );
        inner.cache.purge(now, max_stale);
    }
}
