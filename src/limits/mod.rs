//! Per-key rate limits: requests per minute, tokens per minute and requests
//! in flight, enforced in this process or, with `[limits] redis_url`, shared
//! by every replica through Redis. Owns the admission decision and what a
//! client is told about it (429 `Retry-After`, OpenAI's `x-ratelimit-*`
//! headers); it may not know about keys' storage, routes or upstreams (the
//! caller passes a key id and its [`Limits`]).
//!
//! # How each limit works
//!
//! - **Requests per minute**: GCRA (a leaky bucket that holds one timestamp),
//!   with a burst of the whole minute's limit. Locally this is governor's
//!   direct rate limiter, one per key.
//! - **Tokens per minute**: the same GCRA with weighted cells, kept here
//!   (`gcra`) because reconciling needs refunds and late charges, which
//!   governor cannot do. Admission runs before the request body is read
//!   (a refused request costs no body buffer), so it charges
//!   [`estimate_tokens`] of the declared body length;
//!   [`Admission::raise_estimate`] completes the charge once the body and
//!   its `max_tokens` are known, and [`Admission::reconcile`] then charges
//!   or refunds the difference to the upstream's reported usage. A late charge beyond the limit is debt that
//!   holds every request back until paid. An estimate above the whole
//!   minute's limit is charged as the whole limit (it could never fit
//!   otherwise).
//! - **Concurrency**: a count of requests in flight; the [`Admission`] holds
//!   a slot and gives it back when dropped, which also happens when the
//!   request future is dropped (client gone, deadline).
//!
//! Admission is all or nothing: a request refused by one limit is not
//! charged by the others.
//!
//! # Local
//!
//! Per-key state lives in a sharded map (`dashmap`): no lock shared by all
//! keys, and the fast path for a known key is a shard read lock, a few
//! atomic operations and no allocation. Keys unused for two minutes, with
//! nothing in flight and no token debt, are evicted by a sweep that runs at
//! most once a minute on the request that finds it due. A key whose limits
//! change starts from fresh state (requests in flight under the old limits
//! are not counted against the new ones).
//!
//! # Shared through Redis
//!
//! One Lua script (`shared.lua`, run with EVALSHA) decides all three limits
//! atomically with the same GCRA math in microseconds of Redis server time
//! (`TIME`), so replicas' clocks do not matter. Needs Redis 5 or newer
//! (scripts that read `TIME` and then write). Concurrency is a sorted set of
//! leases scored by their expiry: a replica that crashes with requests in
//! flight leaks those slots for at most [`CONCURRENCY_LEASE`], after which
//! the next admission for that key drops them. A request that outlives its
//! lease no longer occupies a slot, so the lease must exceed the longest
//! request (the default route deadline is 5 minutes). Releases and
//! reconciliations are sent by a background task (the request path never
//! waits for them); if its queue is full they are dropped and the lease
//! expires on its own.
//!
//! **When Redis fails** (unreachable, slower than 200 ms, or an error) the
//! limiter fails open to the local limiter: each replica then enforces the
//! full limits on its own, so a key gets up to N times its limit across N
//! replicas. A warning is logged at most every 30 s, and Redis is not asked
//! again for a second, so an outage does not add a timeout to every request.
//! Unreachable at startup is not an error for the same reason. A call that
//! timed out may still have been counted by Redis; its lease then expires.

mod gcra;
mod local;
mod shared;

pub use crate::config::LimitSettings;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use local::{Local, LocalHold};
use shared::{Shared, SharedHold};
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a concurrency slot held in Redis survives a replica that died
/// without giving it back.
pub const CONCURRENCY_LEASE: Duration = Duration::from_secs(10 * 60);

/// The window every limit is counted over.
const MINUTE: Duration = Duration::from_secs(60);

/// A key's limits; `None` means unlimited, `Some(0)` admits nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub max_concurrent: Option<u32>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.max_concurrent.is_none()
    }

    /// A zero limit refuses without consulting any state.
    fn refuse_zero(&self) -> Option<Refusal> {
        let zero = |limit: Option<u32>| limit == Some(0);
        let which = if zero(self.max_concurrent) {
            LimitKind::Concurrency
        } else if zero(self.requests_per_minute) {
            LimitKind::Requests
        } else if zero(self.tokens_per_minute) {
            LimitKind::Tokens
        } else {
            return None;
        };
        let closed = |limit: Option<u32>| {
            limit.map(|limit| Window {
                limit,
                remaining: 0,
                reset: MINUTE,
            })
        };
        Some(Refusal {
            which,
            retry_after: MINUTE,
            requests: closed(self.requests_per_minute),
            tokens: closed(self.tokens_per_minute),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    Requests,
    Tokens,
    Concurrency,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Requests => "requests per minute",
            LimitKind::Tokens => "tokens per minute",
            LimitKind::Concurrency => "concurrent requests",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One per-minute limit as the client is told about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u32,
    pub remaining: u32,
    /// Until the limit is back to its full allowance.
    pub reset: Duration,
}

/// A request estimated at `prompt_tokens` (≈ body bytes / 4, the usual
/// tokenizer-free rule for English text and JSON) plus the completion it asked
/// for at most. OpenAI charges the larger of the two; charging the sum keeps
/// the estimate at or above what the request can really cost, so requests
/// admitted together cannot overrun the limit, and reconciliation refunds the
/// difference. Saturates instead of overflowing.
pub fn estimate_tokens(body_len: usize, max_tokens: Option<u32>) -> u32 {
    let prompt = u32::try_from(body_len.div_ceil(4)).unwrap_or(u32::MAX);
    prompt.saturating_add(max_tokens.unwrap_or(0))
}

/// Formats a duration the way OpenAI's `x-ratelimit-reset-*` headers do
/// (Go's duration syntax, to the millisecond): `"0s"`, `"12ms"`, `"1.5s"`,
/// `"6m0s"`, `"1h2m3s"`. Rounds up, so a wait never reads as zero.
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (secs, frac) = (ms / 1000, ms % 1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::with_capacity(16);
    // Writing to a String cannot fail.
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if h > 0 || m > 0 {
        let _ = write!(out, "{m}m");
    }
    let _ = write!(out, "{s}");
    if frac > 0 {
        let digits = format!("{frac:03}");
        let _ = write!(out, ".{}", digits.trim_end_matches('0'));
    }
    out.push('s');
    out
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The URL itself is never quoted: it may carry a password.
    #[error("limits.redis_url is not a usable Redis URL ({reason})")]
    RedisUrl { reason: String },
}

/// Decides admissions; shared by every runtime thread (`Arc<Limiter>`).
pub struct Limiter {
    local: Local,
    shared: Option<Arc<Shared>>,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the Redis URL or connection: they may carry a password.
        f.debug_struct("Limiter")
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Limiter {
    /// Local limits, or Redis-shared ones when `settings.redis_url` is set.
    /// Must run inside the Tokio runtime that lives as long as the limiter:
    /// the Redis connection and the release queue run there. A Redis that
    /// does not answer yet is not an error (see the module doc).
    pub async fn new(settings: &LimitSettings) -> Result<Limiter, LimitError> {
        let shared = match &settings.redis_url {
            Some(url) => {
                Some(Shared::connect(&url.0, &settings.key_prefix, CONCURRENCY_LEASE).await?)
            }
            None => None,
        };
        Ok(Limiter {
            local: Local::new(),
            shared,
        })
    }

    /// Admits one request of `key_id`, charging `estimated_tokens` (see
    /// [`estimate_tokens`]) against its tokens per minute. Keep the
    /// [`Admission`] for as long as the request runs.
    pub async fn admit(
        &self,
        key_id: i64,
        limits: &Limits,
        estimated_tokens: u32,
    ) -> Result<Admission, Refusal> {
        if limits.is_unlimited() {
            return Ok(Admission::unlimited());
        }
        if let Some(refusal) = limits.refuse_zero() {
            return Err(refusal);
        }
        if let Some(shared) = self.shared.as_ref().filter(|s| s.available()) {
            match shared.admit(key_id, limits, estimated_tokens).await {
                Ok(decision) => return decision,
                Err(e) => shared.failed(&e),
            }
        }
        self.local.admit(key_id, limits, estimated_tokens)
    }

    /// Waits until the releases and reconciliations queued so far have
    /// reached Redis (or failed); immediate for local limits. For a graceful
    /// shutdown, so this replica's slots are not left to expire.
    pub async fn flush(&self) {
        if let Some(shared) = &self.shared {
            shared.flush().await;
        }
    }
}

/// An admitted request. Holds its concurrency slot until dropped.
pub struct Admission {
    requests: Option<Window>,
    tokens: Option<Window>,
    /// Tokens charged so far, so reconciling twice charges only the change.
    charged: AtomicU32,
    hold: Hold,
}

enum Hold {
    Nothing,
    Local(LocalHold),
    Shared(SharedHold),
}

impl Admission {
    fn unlimited() -> Admission {
        Admission {
            requests: None,
            tokens: None,
            charged: AtomicU32::new(0),
            hold: Hold::Nothing,
        }
    }

    pub fn requests(&self) -> Option<Window> {
        self.requests
    }

    pub fn tokens(&self) -> Option<Window> {
        self.tokens
    }

    /// Whether Redis decided (false: this process did, by configuration or
    /// because Redis failed).
    pub fn is_shared(&self) -> bool {
        matches!(self.hold, Hold::Shared(_))
    }

    /// Replaces the estimate with what the request really cost (the
    /// upstream's reported prompt + completion tokens): refunds or charges
    /// the difference. Calling it again charges only the change since.
    pub fn reconcile(&self, actual_tokens: u32) {
        let before = self.charged.swap(actual_tokens, Ordering::AcqRel);
        let delta = i64::from(actual_tokens) - i64::from(before);
        if delta == 0 {
            return;
        }
        match &self.hold {
            Hold::Nothing => {}
            Hold::Local(hold) => hold.adjust_tokens(delta),
            Hold::Shared(hold) => hold.adjust_tokens(delta),
        }
    }

    /// Raises the charged estimate to `estimated_tokens` when the body
    /// turns out larger than admission assumed (admission runs before the
    /// body is read, on its declared length). Never lowers it: only the
    /// upstream's reported usage refunds ([`Admission::reconcile`]). Capped
    /// at the whole minute's limit, as admission caps an estimate, so one
    /// request's debt holds the key back for at most a minute. A key
    /// without a tokens limit charges nothing.
    pub fn raise_estimate(&self, estimated_tokens: u32) {
        let Some(window) = self.tokens else {
            return;
        };
        let target = estimated_tokens.min(window.limit);
        if target > self.charged.load(Ordering::Acquire) {
            self.reconcile(target);
        }
    }

    /// `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the limits
    /// the key has, as of admission.
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        window_headers(self.requests, self.tokens)
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("requests", &self.requests)
            .field("tokens", &self.tokens)
            .field("shared", &self.is_shared())
            .finish()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        match &mut self.hold {
            Hold::Nothing => {}
            Hold::Local(hold) => hold.release(),
            Hold::Shared(hold) => hold.release(),
        }
    }
}

/// A refused request: answer 429 with [`Refusal::headers`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit reached ({which}); retry after {}", format_reset(*retry_after))]
pub struct Refusal {
    /// One of the limits that refused (the one with the longest wait).
    pub which: LimitKind,
    /// For a concurrency refusal, a guess (1 s): no one knows when a request
    /// in flight ends.
    pub retry_after: Duration,
    /// The key's per-minute limits as far as they were checked.
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

impl Refusal {
    /// `Retry-After` (whole seconds, at least 1), `retry-after-ms` (read by
    /// OpenAI's SDKs) and the `x-ratelimit-*` headers.
    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
        let secs = self.retry_after.as_nanos().div_ceil(1_000_000_000).max(1);
        let ms = self.retry_after.as_nanos().div_ceil(1_000_000).max(1);
        let retry = [
            (RETRY_AFTER, header_number(secs)),
            (HeaderName::from_static("retry-after-ms"), header_number(ms)),
        ];
        retry
            .into_iter()
            .chain(window_headers(self.requests, self.tokens))
    }
}

fn header_number(n: u128) -> HeaderValue {
    HeaderValue::from(u64::try_from(n).unwrap_or(u64::MAX))
}

const REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

fn window_headers(
    requests: Option<Window>,
    tokens: Option<Window>,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
    let one = |names: [HeaderName; 3], w: Window| {
        let [limit, remaining, reset] = names;
        // Digits and unit letters only: always a valid header value.
        let reset_value = HeaderValue::from_str(&format_reset(w.reset))
            .unwrap_or_else(|_| HeaderValue::from_static("0s"));
        [
            (limit, HeaderValue::from(w.limit)),
            (remaining, HeaderValue::from(w.remaining)),
            (reset, reset_value),
        ]
    };
    requests
        .map(|w| one(REQUEST_HEADERS, w))
        .into_iter()
        .chain(tokens.map(|w| one(TOKEN_HEADERS, w)))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_reads_like_openai() {
        assert_eq!(format_reset(Duration::ZERO), "0s");
        assert_eq!(format_reset(Duration::from_micros(1)), "1ms");
        assert_eq!(format_reset(Duration::from_millis(12)), "12ms");
        assert_eq!(format_reset(Duration::from_secs(1)), "1s");
        assert_eq!(format_reset(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_reset(Duration::from_millis(60_020)), "1m0.02s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(format_reset(Duration::from_secs(7200)), "2h0m0s");
        assert!(!format_reset(Duration::MAX).is_empty());
    }

    #[test]
    fn estimate_is_a_quarter_of_the_body_plus_the_completion_cap() {
        assert_eq!(estimate_tokens(0, None), 0);
        assert_eq!(estimate_tokens(1, None), 1);
        assert_eq!(estimate_tokens(400, None), 100);
        assert_eq!(estimate_tokens(401, Some(50)), 151);
        assert_eq!(estimate_tokens(usize::MAX, Some(u32::MAX)), u32::MAX);
    }

    #[test]
    fn zero_limits_refuse_and_unset_ones_admit() {
        assert!(Limits::default().is_unlimited());
        let closed = Limits {
            requests_per_minute: Some(10),
            tokens_per_minute: Some(0),
            max_concurrent: None,
        };
        let refusal = closed.refuse_zero().unwrap();
        assert_eq!(refusal.which, LimitKind::Tokens);
        assert_eq!(refusal.retry_after, MINUTE);
        let open = Limits {
            tokens_per_minute: Some(1),
            ..closed
        };
        assert_eq!(open.refuse_zero(), None);
    }

    #[test]
    fn refusal_headers_round_up_to_whole_seconds() {
        let refusal = Refusal {
            which: LimitKind::Requests,
            retry_after: Duration::from_millis(1200),
            requests: Some(Window {
                limit: 60,
                remaining: 0,
                reset: Duration::from_secs(61),
            }),
            tokens: None,
        };
        let headers: Vec<(String, String)> = refusal
            .headers()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("retry-after"), Some("2"));
        assert_eq!(get("retry-after-ms"), Some("1200"));
        assert_eq!(get("x-ratelimit-limit-requests"), Some("60"));
        assert_eq!(get("x-ratelimit-remaining-requests"), Some("0"));
        assert_eq!(get("x-ratelimit-reset-requests"), Some("1m1s"));
        assert_eq!(get("x-ratelimit-limit-tokens"), None, "no token limit set");
        assert_eq!(headers.len(), 5);
    }
}
