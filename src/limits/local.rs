//! Limits kept in this process: one state per key in a sharded map, requests
//! per minute in governor's GCRA, tokens per minute in [`AtomicGcra`],
//! requests in flight in an atomic counter. The clock is a type parameter so
//! tests can move time by hand.

use super::gcra::{AtomicGcra, Gcra};
use super::{Admission, Hold, LimitKind, Limits, Refusal, Window, MINUTE};
use dashmap::DashMap;
use governor::clock::{Clock, QuantaClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A key unused this long, with nothing in flight and no token debt, is
/// forgotten; its buckets have long refilled, so forgetting changes nothing.
const IDLE: Duration = Duration::from_secs(120);
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What a concurrency refusal suggests waiting: a guess, since no one knows
/// when a request in flight ends.
pub(super) const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

type RequestLimiter<C> = RateLimiter<NotKeyed, InMemoryState, C, StateInformationMiddleware>;

pub(super) struct Local<C: Clock = QuantaClock> {
    clock: C,
    start: C::Instant,
    keys: DashMap<i64, Arc<KeyState<C>>>,
    /// Nanoseconds since `start` when the next idle sweep is due.
    next_sweep: AtomicU64,
}

impl Local {
    pub fn new() -> Local {
        Local::with_clock(QuantaClock::default())
    }
}

impl<C> Local<C>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    pub fn with_clock(clock: C) -> Local<C> {
        let start = clock.now();
        Local {
            clock,
            start,
            keys: DashMap::new(),
            next_sweep: AtomicU64::new(nanos(SWEEP_EVERY)),
        }
    }

    pub fn admit(
        &self,
        key_id: i64,
        limits: &Limits,
        estimated_tokens: u32,
    ) -> Result<Admission, Refusal> {
        if let Some(refusal) = limits.refuse_zero() {
            return Err(refusal);
        }
        let now = since(&self.clock, self.start);
        self.sweep_if_due(now);
        // Admission runs under the shard's lock (read for a known key), so a
        // sweep can never drop a state between its lookup and its use.
        if let Some(state) = self.keys.get(&key_id) {
            if state.limits == *limits {
                return state.admit(now, estimated_tokens);
            }
        }
        let fresh = || Arc::new(KeyState::new(*limits, self.clock.clone(), self.start));
        let state = self
            .keys
            .entry(key_id)
            .and_modify(|s| {
                if s.limits != *limits {
                    *s = fresh();
                }
            })
            .or_insert_with(fresh);
        state.admit(now, estimated_tokens)
    }

    fn sweep_if_due(&self, now: u64) {
        let due = self.next_sweep.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let next = now.saturating_add(nanos(SWEEP_EVERY));
        // One caller wins the sweep; the others go on.
        if self
            .next_sweep
            .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.keys.retain(|_, state| !state.is_idle(now));
        }
    }

    #[cfg(test)]
    fn known_keys(&self) -> usize {
        self.keys.len()
    }
}

struct KeyState<C: Clock> {
    limits: Limits,
    requests: Option<RequestLimiter<C>>,
    tokens: Option<AtomicGcra>,
    inflight: AtomicU32,
    last_seen: AtomicU64,
    clock: C,
    start: C::Instant,
}

impl<C> KeyState<C>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    fn new(limits: Limits, clock: C, start: C::Instant) -> KeyState<C> {
        let requests = limits
            .requests_per_minute
            .and_then(NonZeroU32::new)
            .map(|rpm| {
                RateLimiter::direct_with_clock(Quota::per_minute(rpm), clock.clone())
                    .with_middleware::<StateInformationMiddleware>()
            });
        let tokens = limits
            .tokens_per_minute
            .filter(|tpm| *tpm > 0)
            .map(|tpm| AtomicGcra::new(Gcra::new(tpm, MINUTE)));
        KeyState {
            limits,
            requests,
            tokens,
            inflight: AtomicU32::new(0),
            last_seen: AtomicU64::new(since(&clock, start)),
            clock,
            start,
        }
    }

    /// Concurrency, then tokens, then requests: each later refusal undoes the
    /// earlier charges, and governor's charge is the one that cannot be undone.
    fn admit(self: &Arc<Self>, now: u64, estimated_tokens: u32) -> Result<Admission, Refusal> {
        self.last_seen.fetch_max(now, Ordering::Relaxed);
        // Counted even without a concurrency limit: a key with requests in
        // flight is never evicted, so their reconciliations are not lost.
        let in_flight = self.inflight.fetch_add(1, Ordering::AcqRel);
        let release_slot = || {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
        };
        if self
            .limits
            .max_concurrent
            .is_some_and(|max| in_flight >= max)
        {
            release_slot();
            return Err(Refusal {
                which: LimitKind::Concurrency,
                retry_after: CONCURRENCY_RETRY,
                requests: None,
                tokens: self.token_window(now),
            });
        }
        let (tokens, charged) = match &self.tokens {
            None => (None, 0),
            Some(cell) => match cell.charge(now, estimated_tokens) {
                Ok(c) => {
                    let window = Window {
                        limit: cell.gcra.limit(),
                        remaining: cell.gcra.remaining(c.tat, now),
                        reset: cell.gcra.reset(c.tat, now),
                    };
                    (Some(window), c.cost)
                }
                Err(wait) => {
                    release_slot();
                    return Err(Refusal {
                        which: LimitKind::Tokens,
                        retry_after: wait,
                        requests: None,
                        tokens: self.token_window(now),
                    });
                }
            },
        };
        let requests = match (&self.requests, self.limits.requests_per_minute) {
            (Some(limiter), Some(limit)) => match limiter.check() {
                Ok(snapshot) => {
                    let remaining = snapshot.remaining_burst_capacity();
                    Some(Window {
                        limit,
                        remaining,
                        reset: interval(limit) * limit.saturating_sub(remaining),
                    })
                }
                Err(not_until) => {
                    if let Some(cell) = &self.tokens {
                        cell.adjust(now, -i64::from(charged));
                    }
                    release_slot();
                    let wait = not_until.wait_time_from(self.clock.now());
                    return Err(Refusal {
                        which: LimitKind::Requests,
                        retry_after: wait,
                        requests: Some(Window {
                            limit,
                            remaining: 0,
                            reset: wait + interval(limit) * limit.saturating_sub(1),
                        }),
                        tokens: self.token_window(now),
                    });
                }
            },
            _ => None,
        };
        Ok(Admission {
            requests,
            tokens,
            charged: AtomicU32::new(charged),
            hold: Hold::Local(LocalHold {
                state: self.clone(),
                in_flight: true,
            }),
        })
    }

    fn token_window(&self, now: u64) -> Option<Window> {
        self.tokens.as_ref().map(|cell| {
            let tat = cell.tat();
            Window {
                limit: cell.gcra.limit(),
                remaining: cell.gcra.remaining(tat, now),
                reset: cell.gcra.reset(tat, now),
            }
        })
    }

    fn is_idle(&self, now: u64) -> bool {
        let last_seen = self.last_seen.load(Ordering::Relaxed);
        now.saturating_sub(last_seen) >= nanos(IDLE)
            && self.inflight.load(Ordering::Acquire) == 0
            && self.tokens.as_ref().is_none_or(|cell| cell.tat() <= now)
    }
}

/// What an [`Admission`] needs of its key's state, without its clock type.
trait Held: Send + Sync {
    fn adjust_tokens(&self, delta: i64);
    fn release_slot(&self);
}

impl<C> Held for KeyState<C>
where
    C: Clock + Clone + Send + Sync + 'static,
{
    fn adjust_tokens(&self, delta: i64) {
        if let Some(cell) = &self.tokens {
            cell.adjust(since(&self.clock, self.start), delta);
        }
    }

    fn release_slot(&self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub(super) struct LocalHold {
    state: Arc<dyn Held>,
    /// Until released, this admission counts toward the key's requests in flight.
    in_flight: bool,
}

impl LocalHold {
    pub fn adjust_tokens(&self, delta: i64) {
        self.state.adjust_tokens(delta);
    }

    pub fn release(&mut self) {
        if std::mem::take(&mut self.in_flight) {
            self.state.release_slot();
        }
    }
}

fn since<C: Clock>(clock: &C, start: C::Instant) -> u64 {
    u64::from(clock.now().duration_since(start))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Time one request takes to replenish.
fn interval(limit: u32) -> Duration {
    MINUTE / limit.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limits(rpm: Option<u32>, tpm: Option<u32>, concurrent: Option<u32>) -> Limits {
        Limits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            max_concurrent: concurrent,
        }
    }

    fn admitted(local: &Local<FakeRelativeClock>, key: i64, l: &Limits, tokens: u32) -> usize {
        (0..100)
            .map(|_| local.admit(key, l, tokens))
            .filter(Result::is_ok)
            .count()
    }

    #[test]
    fn requests_replenish_one_interval_at_a_time() {
        let clock = FakeRelativeClock::default();
        let local = Local::with_clock(clock.clone());
        let l = limits(Some(6), None, None); // one per 10 s
        assert_eq!(admitted(&local, 1, &l, 0), 6);
        clock.advance(Duration::from_secs(10));
        assert_eq!(admitted(&local, 1, &l, 0), 1);
        clock.advance(Duration::from_secs(60));
        assert_eq!(admitted(&local, 1, &l, 0), 6);
        assert_eq!(admitted(&local, 2, &l, 0), 6, "keys do not share limits");
    }

    #[test]
    fn refused_by_requests_means_no_tokens_charged() {
        let clock = FakeRelativeClock::default();
        let local = Local::with_clock(clock);
        let l = limits(Some(1), Some(1000), None);
        let first = local.admit(1, &l, 100).unwrap();
        assert_eq!(first.tokens().map(|w| w.remaining), Some(900));
        let refused = local.admit(1, &l, 100).unwrap_err();
        assert_eq!(refused.which, LimitKind::Requests);
        assert_eq!(refused.retry_after, MINUTE);
        assert_eq!(
            refused.tokens.map(|w| w.remaining),
            Some(900),
            "the refused request's tokens were given back"
        );
    }

    #[test]
    fn eviction_forgets_idle_keys_only() {
        let clock = FakeRelativeClock::default();
        let local = Local::with_clock(clock.clone());
        let l = limits(Some(10), Some(100), Some(2));
        let held = local.admit(1, &l, 10).unwrap();
        // In flight without a concurrency limit: kept too, or its
        // reconciliation would land on a forgotten state.
        let tokens_only = limits(None, Some(100), None);
        let streaming = local.admit(5, &tokens_only, 10).unwrap();
        drop(local.admit(2, &l, 10).unwrap());
        // Key 3 owes tokens well beyond the idle time.
        let debtor = local.admit(3, &l, 10).unwrap();
        debtor.reconcile(1000);
        drop(debtor);
        clock.advance(IDLE + SWEEP_EVERY);
        drop(local.admit(4, &l, 0).unwrap()); // runs the due sweep
        assert_eq!(
            local.known_keys(),
            4,
            "keys 1 and 5 (in flight), 3 (debt), 4 remain"
        );
        drop(held);
        drop(streaming);
        clock.advance(IDLE * 10);
        drop(local.admit(4, &l, 0).unwrap());
        assert_eq!(local.known_keys(), 1);
    }

    #[test]
    fn changed_limits_take_effect_at_once() {
        let local = Local::with_clock(FakeRelativeClock::default());
        assert_eq!(admitted(&local, 1, &limits(Some(2), None, None), 0), 2);
        assert_eq!(admitted(&local, 1, &limits(Some(5), None, None), 0), 5);
    }
}
