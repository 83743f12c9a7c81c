//! Per-target health that outlives any one config: the circuit breaker,
//! requests in flight, and latency statistics. Keyed by provider, model and
//! region, so a reload that keeps a target keeps its state.
//!
//! With `[cluster]` sharing on, each verdict this replica reaches (a breaker
//! opening or closing, a `Retry-After` cooldown, a failure towards the
//! fleet's streak) is also handed, without waiting, to a bounded queue that
//! `cluster` drains into Redis; `cluster` applies the other replicas'
//! verdicts through the `apply_*` methods. Nothing here talks to Redis.

use crate::resilience::breaker::{
    Admission, Breaker, BreakerPolicy, BreakerSnapshot, State, Transition,
};
use crate::resilience::FailureClass;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Peak-EWMA latency (linkerd's load estimator): jumps up to a slow sample at
/// once, decays back with time constant `TAU`.
#[derive(Debug, Clone, Copy)]
struct PeakEwma {
    micros: f64,
    updated: Option<Instant>,
}

const TAU: Duration = Duration::from_secs(10);

impl PeakEwma {
    fn observe(&mut self, sample: Duration, now: Instant) {
        let rtt = sample.as_secs_f64() * 1e6;
        self.micros = match self.updated {
            None => rtt,
            Some(_) if rtt > self.micros => rtt,
            Some(then) => {
                let decay =
                    (-now.saturating_duration_since(then).as_secs_f64() / TAU.as_secs_f64()).exp();
                self.micros * decay + rtt * (1.0 - decay)
            }
        };
        self.updated = Some(now);
    }
}

/// What a disabled key answers when asked when to come back: it will not
/// on its own, but callers need a finite time.
const DISABLED_RETRY: Duration = Duration::from_secs(60);

/// The last `RING` first-byte latencies, for hedging at a percentile.
const RING: usize = 128;

#[derive(Debug)]
struct Ring {
    samples: [u32; RING],
    len: usize,
    next: usize,
}

/// A breaker opening, from the first trip until the breaker closed again.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Incident {
    pub target: String,
    #[serde(with = "unix_seconds")]
    pub started: std::time::SystemTime,
    #[serde(with = "unix_seconds_opt")]
    pub ended: Option<std::time::SystemTime>,
    pub cause: String,
}

mod unix_seconds {
    pub fn serialize<S: serde::Serializer>(
        t: &std::time::SystemTime,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }
}

mod unix_seconds_opt {
    pub fn serialize<S: serde::Serializer>(
        t: &Option<std::time::SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::unix_seconds::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}

/// The last `INCIDENTS_KEPT` incidents, newest last.
const INCIDENTS_KEPT: usize = 100;

#[derive(Default)]
pub struct Incidents(Mutex<std::collections::VecDeque<Incident>>);

impl Incidents {
    /// Opens an incident for `target` unless one is already ongoing.
    pub fn opened(&self, target: &str, cause: &str) {
        let mut list = lock(&self.0);
        if list.iter().any(|i| i.target == target && i.ended.is_none()) {
            return; // still the same incident (open → half-open → open)
        }
        if list.len() == INCIDENTS_KEPT {
            list.pop_front();
        }
        list.push_back(Incident {
            target: target.to_owned(),
            started: std::time::SystemTime::now(),
            ended: None,
            cause: cause.to_owned(),
        });
    }

    /// Ends the ongoing incident of `target`, if any.
    pub fn closed(&self, target: &str) {
        if let Some(i) = lock(&self.0)
            .iter_mut()
            .rev()
            .find(|i| i.target == target && i.ended.is_none())
        {
            i.ended = Some(std::time::SystemTime::now());
        }
    }

    pub fn all(&self) -> Vec<Incident> {
        lock(&self.0).iter().cloned().collect()
    }
}

/// A verdict of this replica about one target, for the other replicas.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthEvent {
    /// The breaker opened here; a probe may go at `probe_at`.
    Opened {
        key: String,
        probe_at: Instant,
        cause: String,
    },
    /// The breaker closed here (its probes succeeded).
    Closed { key: String },
    /// An upstream asked everyone to wait until `until` (`Retry-After`).
    Cooled { key: String, until: Instant },
    /// A failure that counts towards the breaker, for the fleet's streak.
    Failed {
        key: String,
        threshold: u32,
        window: Duration,
    },
    /// A success after the fleet's streak was seen above zero: resets it.
    Recovered { key: String },
}

/// Where verdicts go when sharing is on: a bounded queue (a full one drops
/// the event: the others then learn from their own traffic, as without
/// sharing) and this replica's name.
pub struct ClusterLink {
    pub events: mpsc::Sender<HealthEvent>,
    pub replica: Arc<str>,
}

/// Who opened a breaker and when: this replica or another one.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenedBy {
    pub replica: Arc<str>,
    pub at: SystemTime,
    pub cause: String,
}

pub struct TargetHealth {
    pub key: String,
    incidents: Arc<Incidents>,
    link: Arc<OnceLock<ClusterLink>>,
    opened_by: Mutex<Option<OpenedBy>>,
    /// The fleet's failure streak was last seen above zero (or this
    /// replica added to it): the next success resets it.
    shared_streak: AtomicBool,
    breaker: Mutex<Breaker>,
    inflight: AtomicU32,
    latency: Mutex<PeakEwma>,
    first_bytes: Mutex<Ring>,
    pub attempts: AtomicU64,
    pub failures: AtomicU64,
    /// Cooling until then after an upstream `Retry-After` (a pooled key's
    /// 429 without one cools it briefly too): every request skips it.
    cooled_until: Mutex<Option<Instant>>,
    /// A pooled upstream key the provider refused (401/403): out of use
    /// until the config is reloaded.
    disabled: AtomicBool,
    /// The deprecation warning is logged once per target.
    pub deprecation_logged: AtomicBool,
}

impl std::fmt::Debug for TargetHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetHealth")
            .field("key", &self.key)
            .finish()
    }
}

impl TargetHealth {
    fn new(
        key: String,
        policy: BreakerPolicy,
        now: Instant,
        incidents: Arc<Incidents>,
        link: Arc<OnceLock<ClusterLink>>,
    ) -> Self {
        TargetHealth {
            key,
            incidents,
            link,
            opened_by: Mutex::new(None),
            shared_streak: AtomicBool::new(false),
            breaker: Mutex::new(Breaker::new(policy, now)),
            inflight: AtomicU32::new(0),
            latency: Mutex::new(PeakEwma {
                micros: 0.0,
                updated: None,
            }),
            first_bytes: Mutex::new(Ring {
                samples: [0; RING],
                len: 0,
                next: 0,
            }),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cooled_until: Mutex::new(None),
            disabled: AtomicBool::new(false),
            deprecation_logged: AtomicBool::new(false),
        }
    }

    /// Keeps every request away until `until` (an upstream Retry-After),
    /// on every replica when sharing is on.
    pub fn cool_until(&self, until: Instant) {
        if self.cool_locally(until) {
            self.tell_cluster(|key| HealthEvent::Cooled { key, until });
        }
    }

    /// True if this extended the cooling.
    fn cool_locally(&self, until: Instant) -> bool {
        let mut cooled = lock(&self.cooled_until);
        let longer = cooled.is_none_or(|t| t < until);
        if longer {
            *cooled = Some(until);
        }
        longer
    }

    fn tell_cluster(&self, event: impl FnOnce(String) -> HealthEvent) {
        if let Some(link) = self.link.get() {
            // Full: dropped; see `ClusterLink`.
            let _ = link.events.try_send(event(self.key.clone()));
        }
    }

    /// A reload re-derives cooling: no key stays cooled past `latest`.
    fn cap_cooling(&self, latest: Instant) {
        let mut cooled = lock(&self.cooled_until);
        *cooled = cooled.map(|t| t.min(latest));
    }

    /// Takes a pooled key out of use until the next reload.
    pub fn disable(&self, reason: &str) {
        if !self.disabled.swap(true, Ordering::Relaxed) {
            tracing::error!(
                target_key = %self.key,
                reason,
                "upstream key refused by the provider: disabled until the config is reloaded"
            );
        }
    }

    /// A reload gives refused keys another chance (the operator may have
    /// fixed the secret).
    pub fn enable(&self) {
        self.disabled.store(false, Ordering::Relaxed);
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// When a cooling key may be used again.
    pub fn cooled_until(&self, now: Instant) -> Option<Instant> {
        lock(&self.cooled_until).filter(|t| *t > now)
    }

    /// Asks the breaker for an attempt. `Err` carries when to ask again.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Result<AttemptGuard, Instant> {
        if self.is_disabled() {
            return Err(now + DISABLED_RETRY);
        }
        if let Some(until) = self.cooled_until(now) {
            return Err(until);
        }
        let probe = match lock(&self.breaker).admit(now) {
            Admission::Allowed => false,
            Admission::Probe => true,
            Admission::Rejected { retry_at } => return Err(retry_at),
        };
        if probe {
            tracing::info!(target_key = %self.key, "breaker half-open: probing");
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(AttemptGuard {
            health: self.clone(),
            probe,
            started: now,
            done: false,
            timed: false,
        })
    }

    pub fn state(&self) -> State {
        lock(&self.breaker).state()
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Peak-EWMA of attempt latency in µs; 0 before any sample.
    pub fn latency_micros(&self) -> f64 {
        lock(&self.latency).micros
    }

    pub fn traffic_share(&self, now: Instant) -> f64 {
        lock(&self.breaker).traffic_share(now)
    }

    pub fn snapshot(&self, now: Instant) -> BreakerSnapshot {
        lock(&self.breaker).snapshot(now)
    }

    /// The `q` quantile of recent first-byte latencies (None until 16 samples).
    pub fn first_byte_quantile(&self, q: f64) -> Option<Duration> {
        let ring = lock(&self.first_bytes);
        if ring.len < 16 {
            return None;
        }
        let mut v: Vec<u32> = ring.samples[..ring.len].to_vec();
        drop(ring);
        v.sort_unstable();
        let idx = ((v.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
        Some(Duration::from_micros(u64::from(v[idx])))
    }

    /// Who opened the breaker, while it is not closed.
    pub fn opened_by(&self) -> Option<OpenedBy> {
        lock(&self.opened_by).clone()
    }

    /// A transition this replica decided: recorded, logged and shared.
    fn log_transition(&self, t: Transition, cause: &str) {
        let replica = self
            .link
            .get()
            .map_or_else(|| "".into(), |l| l.replica.clone());
        self.record_transition(t, cause, &replica);
        match t.to {
            State::Open => {
                let probe_at = lock(&self.breaker)
                    .next_probe()
                    .unwrap_or_else(Instant::now);
                self.tell_cluster(|key| HealthEvent::Opened {
                    key,
                    probe_at,
                    cause: cause.to_owned(),
                });
            }
            State::Closed => self.tell_cluster(|key| HealthEvent::Closed { key }),
            State::HalfOpen => {}
        }
    }

    /// Incident, `opened_by` and the log line for a transition decided
    /// by `replica` (empty: this replica without sharing).
    fn record_transition(&self, t: Transition, cause: &str, replica: &Arc<str>) {
        match t.to {
            State::Open => {
                self.incidents.opened(&self.key, cause);
                *lock(&self.opened_by) = Some(OpenedBy {
                    replica: replica.clone(),
                    at: SystemTime::now(),
                    cause: cause.to_owned(),
                });
            }
            State::Closed => {
                self.incidents.closed(&self.key);
                *lock(&self.opened_by) = None;
            }
            State::HalfOpen => {}
        }
        tracing::warn!(
            target_key = %self.key,
            from = t.from.as_str(),
            to = t.to.as_str(),
            cause,
            replica = &**replica,
            "breaker transition"
        );
    }

    /// This replica's view, for `cluster` to compare with the fleet's.
    pub fn local_view(&self, now: Instant) -> LocalView {
        let breaker = lock(&self.breaker);
        let opened_by = lock(&self.opened_by);
        let me = self.link.get().map(|l| &l.replica);
        LocalView {
            state: breaker.state(),
            next_probe: breaker.next_probe(),
            opened_at: opened_by.as_ref().map(|o| o.at),
            opened_here: opened_by.as_ref().is_some_and(|o| Some(&o.replica) == me),
            cooled_until: self.cooled_until(now),
        }
    }

    /// Another replica opened this target's breaker until `until`.
    pub fn apply_remote_open(&self, until: Instant, by: OpenedBy) {
        let now = Instant::now();
        let transition = lock(&self.breaker).hold_open(now, until);
        if let Some(t) = transition {
            let cause = format!("opened by replica {}: {}", by.replica, by.cause);
            self.record_transition(t, &cause, &by.replica);
            *lock(&self.opened_by) = Some(by);
        }
    }

    /// Another replica's probes found the target healthy again.
    pub fn apply_remote_close(&self, replica: &Arc<str>) {
        let transition = lock(&self.breaker).close_remote(Instant::now());
        if let Some(t) = transition {
            self.record_transition(t, "closed by another replica's probes", replica);
        }
    }

    /// Another replica saw a `Retry-After`: wait as it does.
    pub fn apply_remote_cooling(&self, until: Instant) {
        self.cool_locally(until);
    }

    /// Another replica holds the probe lease until `until`: no probe here.
    pub fn hold_for_probe(&self, until: Instant) {
        let _ = lock(&self.breaker).hold_open(Instant::now(), until);
    }

    /// The fleet's failure streak, last read from Redis, is above zero.
    pub fn note_shared_streak(&self, above_zero: bool) {
        self.shared_streak.store(above_zero, Ordering::Relaxed);
    }

    /// The fleet's failure streak reached the limit: open here (and so,
    /// through the event this sends, everywhere).
    pub fn trip_by_fleet(&self, streak: u64) {
        let transition = lock(&self.breaker).trip(Instant::now());
        if let Some(t) = transition {
            self.log_transition(t, &format!("{streak} failures in a row across replicas"));
        }
    }
}

/// What `cluster` compares with the fleet's verdicts for one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalView {
    pub state: State,
    pub next_probe: Option<Instant>,
    /// When the current opening started (None while closed).
    pub opened_at: Option<SystemTime>,
    /// This replica decided the current opening.
    pub opened_here: bool,
    pub cooled_until: Option<Instant>,
}

/// One admitted attempt. Report its outcome; dropping it unreported (the
/// client left, a hedge lost) frees a probe slot without judging the target.
pub struct AttemptGuard {
    health: Arc<TargetHealth>,
    probe: bool,
    started: Instant,
    done: bool,
    /// Latency already sampled (at a stream's first content).
    timed: bool,
}

impl AttemptGuard {
    /// Samples the target's latency (time to first byte or first content).
    /// A stream calls this at its first content and reports its outcome
    /// only when it ends, so a stream that breaks half-way counts as a
    /// failure, not a success.
    pub fn first_content(&mut self, now: Instant) {
        if std::mem::replace(&mut self.timed, true) {
            return;
        }
        let h = &self.health;
        let elapsed = now.saturating_duration_since(self.started);
        lock(&h.latency).observe(elapsed, now);
        let mut ring = lock(&h.first_bytes);
        let next = ring.next;
        ring.samples[next] = elapsed.as_micros().min(u128::from(u32::MAX)) as u32;
        ring.next = (next + 1) % RING;
        ring.len = (ring.len + 1).min(RING);
    }

    pub fn success(mut self, now: Instant) {
        self.first_content(now);
        self.done = true;
        let h = &self.health;
        h.inflight.fetch_sub(1, Ordering::Relaxed);
        let transition = lock(&h.breaker).on_success(now, self.probe);
        if let Some(t) = transition {
            h.log_transition(t, "probe succeeded");
        }
        if h.shared_streak.load(Ordering::Relaxed) && h.shared_streak.swap(false, Ordering::Relaxed)
        {
            h.tell_cluster(|key| HealthEvent::Recovered { key });
        }
    }

    pub fn failure(mut self, now: Instant, class: FailureClass, retry_after: Option<Duration>) {
        self.done = true;
        let h = &self.health;
        h.inflight.fetch_sub(1, Ordering::Relaxed);
        if matches!(
            class,
            FailureClass::ClientError | FailureClass::ContextLength
        ) {
            // The upstream answered sensibly about a bad request: alive.
            if self.probe {
                let t = lock(&h.breaker).on_success(now, true);
                if let Some(t) = t {
                    h.log_transition(t, "probe answered");
                }
            }
            return;
        }
        h.failures.fetch_add(1, Ordering::Relaxed);
        if !self.timed {
            // A slow failure still tells the balancer the target is slow.
            lock(&h.latency).observe(now.saturating_duration_since(self.started), now);
        }
        let (transition, policy) = {
            let mut breaker = lock(&h.breaker);
            (
                breaker.on_failure(now, self.probe, retry_after),
                breaker.policy(),
            )
        };
        if let Some(t) = transition {
            h.log_transition(t, class.as_str());
        } else if policy.consecutive_failures > 0 && h.link.get().is_some() {
            h.shared_streak.store(true, Ordering::Relaxed);
            h.tell_cluster(|key| HealthEvent::Failed {
                key,
                threshold: policy.consecutive_failures,
                window: policy.window,
            });
        }
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if !self.done {
            self.health.inflight.fetch_sub(1, Ordering::Relaxed);
            lock(&self.health.breaker).on_abandoned(self.probe);
        }
    }
}

/// Every target's health, by key, and each route's own state (SLO
/// degradation), by name. Shared by successive route tables.
#[derive(Default)]
pub struct HealthRegistry {
    targets: Mutex<HashMap<String, Arc<TargetHealth>>>,
    routes: Mutex<HashMap<String, Arc<super::degrade::RouteHealth>>>,
    pub incidents: Arc<Incidents>,
    link: Arc<OnceLock<ClusterLink>>,
}

impl HealthRegistry {
    /// The existing state for `key` (adopting `policy`), or a fresh one.
    pub fn get_or_create(&self, key: &str, policy: BreakerPolicy) -> Arc<TargetHealth> {
        let mut map = lock(&self.targets);
        if let Some(h) = map.get(key) {
            let now = Instant::now();
            lock(&h.breaker).set_policy(policy, now);
            h.cap_cooling(now + policy.open_max);
            return h.clone();
        }
        let h = Arc::new(TargetHealth::new(
            key.to_owned(),
            policy,
            Instant::now(),
            self.incidents.clone(),
            self.link.clone(),
        ));
        map.insert(key.to_owned(), h.clone());
        h
    }

    pub fn find(&self, key: &str) -> Option<Arc<TargetHealth>> {
        lock(&self.targets).get(key).cloned()
    }

    /// Forgets targets no longer in the config.
    pub fn retain(&self, keys: &HashSet<String>) {
        lock(&self.targets).retain(|k, _| keys.contains(k));
    }

    /// The state of route `name`, kept across reloads.
    pub fn route(&self, name: &str) -> Arc<super::degrade::RouteHealth> {
        lock(&self.routes)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets routes no longer in the config.
    pub fn retain_routes(&self, names: &HashSet<String>) {
        lock(&self.routes).retain(|k, _| names.contains(k));
    }

    pub fn all(&self) -> Vec<Arc<TargetHealth>> {
        let mut v: Vec<_> = lock(&self.targets).values().cloned().collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// Turns sharing on: every target's verdicts go to `link` from now on.
    /// Only the first call counts.
    pub fn link_cluster(&self, link: ClusterLink) {
        let _ = self.link.set(link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reload_rederives_cooling_from_the_new_open_max() {
        let registry = HealthRegistry::default();
        let policy = BreakerPolicy {
            open_max: Duration::from_secs(600),
            ..BreakerPolicy::default()
        };
        let h = registry.get_or_create("p/m/r", policy);
        let now = Instant::now();
        h.cool_until(now + Duration::from_secs(500));
        let reloaded = BreakerPolicy {
            open_max: Duration::from_secs(10),
            ..policy
        };
        let same = registry.get_or_create("p/m/r", reloaded);
        assert!(Arc::ptr_eq(&h, &same), "a reload keeps the target's state");
        assert_eq!(h.cooled_until(now), Some(now + Duration::from_secs(10)));
    }
}
