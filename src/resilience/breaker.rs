//! A circuit breaker for one target: closed → open → half-open → closed.
//!
//! Pure state machine: every method takes `now`, so tests drive it with
//! paused Tokio time and no sleeps. The caller (routing) asks for admission
//! before an attempt and reports the outcome after it.
//!
//! - Trips on a failure ratio over a rolling window (with a minimum volume)
//!   or on N consecutive failures.
//! - Stays open for `open_base * open_factor^(trips-1)`, capped at
//!   `open_max`, and never less than an upstream `Retry-After` still in
//!   force. The growth is forgotten only once the target has stayed closed
//!   for `open_max`: a flapping target keeps its long open time, a recovered
//!   one starts again from `open_base`.
//! - Half-open admits a bounded number of probes; enough successes close it,
//!   one failure re-opens it with the next, longer, duration.
//! - After closing, traffic ramps back over `slow_start` instead of jumping
//!   to full share.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Trip when failures / requests in the window reach this (0..=1).
    pub failure_ratio: f64,
    /// ...and the window holds at least this many requests.
    pub min_requests: u32,
    pub window: Duration,
    /// Trip after this many failures in a row (0 = off).
    pub consecutive_failures: u32,
    pub open_base: Duration,
    pub open_factor: f64,
    pub open_max: Duration,
    /// Probes admitted at once while half-open.
    pub half_open_probes: u32,
    /// Probe successes needed to close.
    pub close_after: u32,
    /// Ramp-up period after closing (zero = none).
    pub slow_start: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            consecutive_failures: 5,
            open_base: Duration::from_secs(5),
            open_factor: 2.0,
            // Short enough that a recovered primary gets a probe within
            // 30 s; see the README's resilience section for the trade-off.
            open_max: Duration::from_secs(30),
            half_open_probes: 1,
            close_after: 2,
            slow_start: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

/// What the breaker allows for one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Normal traffic.
    Allowed,
    /// A half-open probe: report its outcome with `probe = true`.
    Probe,
    /// Not now; the breaker may admit a probe at `retry_at`.
    Rejected { retry_at: Instant },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

const BUCKETS: usize = 10;

/// Success/failure counts over a rolling window of `BUCKETS` time slices.
#[derive(Debug, Clone)]
struct Window {
    slice: Duration,
    buckets: [(u32, u32); BUCKETS],
    /// Index of the slice that `head_start` begins.
    head: usize,
    head_start: Instant,
}

impl Window {
    fn new(window: Duration, now: Instant) -> Self {
        Window {
            slice: (window / BUCKETS as u32).max(Duration::from_millis(1)),
            buckets: [(0, 0); BUCKETS],
            head: 0,
            head_start: now,
        }
    }

    fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.head_start);
        let steps = (elapsed.as_nanos() / self.slice.as_nanos()) as usize;
        if steps == 0 {
            return;
        }
        for _ in 0..steps.min(BUCKETS) {
            self.head = (self.head + 1) % BUCKETS;
            self.buckets[self.head] = (0, 0);
        }
        self.head_start += self.slice * steps.min(u32::MAX as usize) as u32;
    }

    fn record(&mut self, now: Instant, failed: bool) {
        self.advance(now);
        let b = &mut self.buckets[self.head];
        if failed {
            b.1 += 1;
        } else {
            b.0 += 1;
        }
    }

    /// (requests, failures) in the window.
    fn totals(&mut self, now: Instant) -> (u32, u32) {
        self.advance(now);
        self.buckets
            .iter()
            .fold((0, 0), |(r, f), (s, x)| (r + s + x, f + x))
    }

    fn clear(&mut self) {
        self.buckets = [(0, 0); BUCKETS];
    }
}

#[derive(Debug, Clone)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: State,
    window: Window,
    consecutive: u32,
    /// Trips since the breaker last stayed closed for `open_max`; drives the
    /// open duration.
    trips: u32,
    opened_at: Option<Instant>,
    /// Open: when a probe may go. Half-open: unused.
    probe_at: Instant,
    probes_in_flight: u32,
    probe_successes: u32,
    closed_at: Option<Instant>,
    /// An upstream Retry-After still in force.
    retry_after_until: Option<Instant>,
    pub transitions: u64,
}

/// A read-only view for `/admin/targets` and logs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BreakerSnapshot {
    pub state: State,
    pub failure_ratio: f64,
    pub window_requests: u32,
    pub consecutive_failures: u32,
    pub trips: u32,
    #[serde(skip)]
    pub opened_at: Option<Instant>,
    #[serde(skip)]
    pub next_probe: Option<Instant>,
    pub transitions: u64,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy, now: Instant) -> Self {
        Breaker {
            policy,
            state: State::Closed,
            window: Window::new(policy.window, now),
            consecutive: 0,
            trips: 0,
            opened_at: None,
            probe_at: now,
            probes_in_flight: 0,
            probe_successes: 0,
            closed_at: None,
            retry_after_until: None,
            transitions: 0,
        }
    }

    /// Keeps the state and counts; adopts a new policy (hot reload). Waits
    /// already in force are re-derived: none lasts past `now + open_max`.
    pub fn set_policy(&mut self, policy: BreakerPolicy, now: Instant) {
        if policy.window != self.policy.window {
            self.window = Window::new(policy.window, self.window.head_start);
        }
        self.policy = policy;
        let latest = now + policy.open_max;
        self.retry_after_until = self.retry_after_until.map(|u| u.min(latest));
        if self.state == State::Open {
            self.probe_at = self.probe_at.min(latest);
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn policy(&self) -> BreakerPolicy {
        self.policy
    }

    /// When an open breaker will admit a probe (None unless open).
    pub fn next_probe(&self) -> Option<Instant> {
        (self.state == State::Open).then_some(self.probe_at)
    }

    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed => Admission::Allowed,
            State::Open if now < self.probe_at => Admission::Rejected {
                retry_at: self.probe_at,
            },
            State::Open => {
                self.state = State::HalfOpen;
                self.transitions += 1;
                self.probe_successes = 0;
                self.probes_in_flight = 1;
                Admission::Probe
            }
            State::HalfOpen if self.probes_in_flight < self.policy.half_open_probes.max(1) => {
                self.probes_in_flight += 1;
                Admission::Probe
            }
            // Probes are out; their outcome decides. Ask again shortly.
            State::HalfOpen => Admission::Rejected {
                retry_at: now + Duration::from_millis(50),
            },
        }
    }

    pub fn on_success(&mut self, now: Instant, probe: bool) -> Option<Transition> {
        self.consecutive = 0;
        if probe {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
        match self.state {
            State::Closed => {
                self.window.record(now, false);
                None
            }
            State::HalfOpen if probe => {
                self.probe_successes += 1;
                (self.probe_successes >= self.policy.close_after.max(1)).then(|| self.close(now))
            }
            // A late success from before the breaker opened says little.
            _ => None,
        }
    }

    pub fn on_failure(
        &mut self,
        now: Instant,
        probe: bool,
        retry_after: Option<Duration>,
    ) -> Option<Transition> {
        if let Some(wait) = retry_after {
            // Parsed hints are capped already; this holds for any caller.
            let until = now + wait.min(self.policy.open_max);
            self.retry_after_until = Some(self.retry_after_until.map_or(until, |u| u.max(until)));
        }
        if probe {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
        match self.state {
            State::Closed => {
                self.consecutive += 1;
                self.window.record(now, true);
                let (requests, failures) = self.window.totals(now);
                let by_ratio = requests >= self.policy.min_requests.max(1)
                    && f64::from(failures) >= self.policy.failure_ratio * f64::from(requests);
                let by_streak = self.policy.consecutive_failures > 0
                    && self.consecutive >= self.policy.consecutive_failures;
                (by_ratio || by_streak).then(|| self.open(now))
            }
            State::HalfOpen if probe => Some(self.open(now)),
            _ => None,
        }
    }

    /// A probe that ended without an outcome (cancelled) frees its slot.
    pub fn on_abandoned(&mut self, probe: bool) {
        if probe {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    fn open(&mut self, now: Instant) -> Transition {
        let from = self.state;
        let healthy_since = self.closed_at.filter(|_| from == State::Closed);
        if healthy_since.is_some_and(|c| now.saturating_duration_since(c) >= self.policy.open_max) {
            self.trips = 0;
        }
        self.trips += 1;
        let factor = self
            .policy
            .open_factor
            .max(1.0)
            .powi(self.trips.saturating_sub(1).min(64) as i32);
        let duration = self
            .policy
            .open_base
            .mul_f64(factor.min(1e6))
            .min(self.policy.open_max.max(self.policy.open_base));
        let mut probe_at = now + duration;
        if let Some(until) = self.retry_after_until {
            probe_at = probe_at.max(until);
        }
        self.state = State::Open;
        self.opened_at = Some(now);
        self.probe_at = probe_at;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        self.consecutive = 0;
        self.window.clear();
        self.transitions += 1;
        Transition {
            from,
            to: State::Open,
        }
    }

    /// Another replica's verdict that the target is down: open until
    /// `until`, or longer if this breaker already waits longer. `trips` is
    /// left alone: the opening replica's open time already has its growth.
    pub fn hold_open(&mut self, now: Instant, until: Instant) -> Option<Transition> {
        if self.state == State::Open {
            self.probe_at = self.probe_at.max(until);
            return None;
        }
        let from = self.state;
        self.state = State::Open;
        self.opened_at = Some(now);
        self.probe_at = until;
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        self.consecutive = 0;
        self.window.clear();
        self.transitions += 1;
        Some(Transition {
            from,
            to: State::Open,
        })
    }

    /// Another replica's probes closed the breaker: so does this one.
    pub fn close_remote(&mut self, now: Instant) -> Option<Transition> {
        (self.state != State::Closed).then(|| self.close(now))
    }

    /// Opens a closed breaker now (the fleet's failure streak reached the
    /// limit); the open time grows with `trips` as for a local trip.
    pub fn trip(&mut self, now: Instant) -> Option<Transition> {
        (self.state == State::Closed).then(|| self.open(now))
    }

    fn close(&mut self, now: Instant) -> Transition {
        let from = self.state;
        self.state = State::Closed;
        // `trips` is kept: see `open`.
        self.closed_at = Some(now);
        self.opened_at = None;
        self.retry_after_until = None;
        self.window.clear();
        self.transitions += 1;
        Transition {
            from,
            to: State::Closed,
        }
    }

    /// Share of normal traffic this target should take now: ramps from 10%
    /// to 100% over `slow_start` after closing; 1.0 otherwise.
    pub fn traffic_share(&self, now: Instant) -> f64 {
        match (self.state, self.closed_at) {
            (State::Closed, Some(closed)) if !self.policy.slow_start.is_zero() => {
                let ramp = now.saturating_duration_since(closed).as_secs_f64()
                    / self.policy.slow_start.as_secs_f64();
                (0.1 + 0.9 * ramp).min(1.0)
            }
            _ => 1.0,
        }
    }

    pub fn snapshot(&mut self, now: Instant) -> BreakerSnapshot {
        let (requests, failures) = self.window.totals(now);
        BreakerSnapshot {
            state: self.state,
            failure_ratio: if requests == 0 {
                0.0
            } else {
                f64::from(failures) / f64::from(requests)
            },
            window_requests: requests,
            consecutive_failures: self.consecutive,
            trips: self.trips,
            opened_at: self.opened_at,
            next_probe: self.next_probe(),
            transitions: self.transitions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failure_ratio: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            consecutive_failures: 0,
            open_base: Duration::from_secs(1),
            open_factor: 2.0,
            open_max: Duration::from_secs(5),
            half_open_probes: 1,
            close_after: 2,
            slow_start: Duration::from_secs(10),
        }
    }

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_ratio_only_with_enough_volume() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for _ in 0..9 {
            assert_eq!(b.on_failure(t0, false, None), None, "below minimum volume");
        }
        let tr = b
            .on_failure(t0, false, None)
            .expect("10 requests, 100% failed");
        assert_eq!(
            tr,
            Transition {
                from: State::Closed,
                to: State::Open
            }
        );
        assert_eq!(
            b.admit(t0),
            Admission::Rejected {
                retry_at: t0 + secs(1.0)
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_below_threshold_stays_closed_and_old_failures_age_out() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        for i in 0..20 {
            if i % 3 == 0 {
                b.on_failure(t0, false, None);
            } else {
                b.on_success(t0, false);
            }
        }
        assert_eq!(b.state(), State::Closed, "7/20 failures < 50%");
        // Twelve seconds later the window is empty again.
        let later = t0 + secs(12.0);
        assert_eq!(b.snapshot(later).window_requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn trips_on_consecutive_failures() {
        let t0 = Instant::now();
        let mut b = Breaker::new(
            BreakerPolicy {
                consecutive_failures: 3,
                min_requests: 1000,
                ..policy()
            },
            t0,
        );
        b.on_failure(t0, false, None);
        b.on_failure(t0, false, None);
        b.on_success(t0, false);
        b.on_failure(t0, false, None);
        b.on_failure(t0, false, None);
        assert_eq!(b.state(), State::Closed, "the success reset the streak");
        assert!(b.on_failure(t0, false, None).is_some());
        assert_eq!(b.state(), State::Open);
    }

    fn trip(b: &mut Breaker, now: Instant) {
        while b.state() != State::Open {
            b.on_failure(now, false, None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_bounded_probes_and_closes_after_successes() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        trip(&mut b, t0);
        let t1 = t0 + secs(1.0);
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(b.state(), State::HalfOpen);
        assert!(
            matches!(b.admit(t1), Admission::Rejected { .. }),
            "one probe at a time"
        );
        assert_eq!(b.on_success(t1, true), None, "needs two successes");
        assert_eq!(b.admit(t1), Admission::Probe);
        assert_eq!(
            b.on_success(t1, true),
            Some(Transition {
                from: State::HalfOpen,
                to: State::Closed
            })
        );
        assert_eq!(b.admit(t1), Admission::Allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_for_longer_and_duration_is_capped() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        trip(&mut b, t0);
        let mut now = t0;
        let mut durations = Vec::new();
        for _ in 0..5 {
            let probe_at = b.next_probe().unwrap();
            durations.push(probe_at - now);
            now = probe_at;
            assert_eq!(b.admit(now), Admission::Probe);
            b.on_failure(now, true, None);
        }
        assert_eq!(
            durations,
            vec![secs(1.0), secs(2.0), secs(4.0), secs(5.0), secs(5.0)]
        );
    }

    /// With the default policy, a 60 s outage followed by health: the open
    /// time never exceeds 30 s, so the recovered target is probed (and
    /// closed, with `close_after` successes in a row) within 30 s.
    #[tokio::test(start_paused = true)]
    async fn defaults_bring_a_recovered_target_back_within_30_s() {
        let policy = BreakerPolicy::default();
        assert_eq!(policy.open_max, secs(30.0));
        let t0 = Instant::now();
        let recovered = t0 + secs(60.0);
        let mut b = Breaker::new(policy, t0);
        trip(&mut b, t0);
        let mut durations = Vec::new();
        let mut opened = t0;
        loop {
            let probe_at = b.next_probe().unwrap();
            durations.push(probe_at - opened);
            assert_eq!(b.admit(probe_at), Admission::Probe);
            if probe_at >= recovered {
                assert!(
                    probe_at - recovered <= secs(30.0),
                    "first probe {:?} after recovery",
                    probe_at - recovered
                );
                b.on_success(probe_at, true);
                assert_eq!(b.admit(probe_at), Admission::Probe);
                b.on_success(probe_at, true);
                break;
            }
            b.on_failure(probe_at, true, None);
            opened = probe_at;
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(
            durations,
            vec![secs(5.0), secs(10.0), secs(20.0), secs(30.0)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn open_time_growth_is_forgotten_only_after_a_healthy_period() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        let close = |b: &mut Breaker, now: Instant| {
            for _ in 0..policy().close_after {
                assert_eq!(b.admit(now), Admission::Probe);
                b.on_success(now, true);
            }
            assert_eq!(b.state(), State::Closed);
        };
        trip(&mut b, t0); // open 1 s
        let mut now = b.next_probe().unwrap();
        assert_eq!(b.admit(now), Admission::Probe);
        b.on_failure(now, true, None); // open 2 s
        now = b.next_probe().unwrap();
        close(&mut b, now);
        // Flapping: it fails again right after closing and opens for 4 s.
        now += secs(1.0);
        trip(&mut b, now);
        assert_eq!(b.next_probe(), Some(now + secs(4.0)));
        now = b.next_probe().unwrap();
        close(&mut b, now);
        // Closed for open_max (5 s): the next trip starts from open_base.
        now += policy().open_max;
        trip(&mut b, now);
        assert_eq!(b.next_probe(), Some(now + secs(1.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn open_lasts_at_least_the_retry_after_in_force() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        b.on_failure(t0, false, Some(secs(4.0)));
        trip(&mut b, t0);
        assert_eq!(b.next_probe(), Some(t0 + secs(4.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_never_keeps_it_open_past_open_max() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        b.on_failure(t0, false, Some(Duration::from_secs(86_400 * 365)));
        trip(&mut b, t0);
        assert_eq!(b.next_probe(), Some(t0 + policy().open_max));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_rederives_the_waits_in_force() {
        let t0 = Instant::now();
        let long = BreakerPolicy {
            open_base: secs(60.0),
            open_max: secs(600.0),
            ..policy()
        };
        let mut b = Breaker::new(long, t0);
        b.on_failure(t0, false, Some(secs(500.0)));
        trip(&mut b, t0);
        assert_eq!(b.next_probe(), Some(t0 + secs(500.0)));
        let later = t0 + secs(1.0);
        b.set_policy(policy(), later);
        assert_eq!(b.next_probe(), Some(later + policy().open_max));
        assert_eq!(b.admit(later + secs(5.0)), Admission::Probe);
        // The failed probe reopens without the old Retry-After's 500 s.
        b.on_failure(later + secs(5.0), true, None);
        assert!(b.next_probe().unwrap() <= later + secs(10.0));
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probe_frees_its_slot() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        trip(&mut b, t0);
        let t1 = t0 + secs(1.0);
        assert_eq!(b.admit(t1), Admission::Probe);
        b.on_abandoned(true);
        assert_eq!(b.admit(t1), Admission::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn traffic_ramps_up_after_closing() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        assert_eq!(b.traffic_share(t0), 1.0, "never tripped: full share");
        trip(&mut b, t0);
        let t1 = t0 + secs(1.0);
        b.admit(t1);
        b.on_success(t1, true);
        b.admit(t1);
        b.on_success(t1, true);
        assert_eq!(b.state(), State::Closed);
        assert!((b.traffic_share(t1) - 0.1).abs() < 1e-9);
        assert!((b.traffic_share(t1 + secs(5.0)) - 0.55).abs() < 1e-9);
        assert_eq!(b.traffic_share(t1 + secs(20.0)), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn late_outcomes_from_before_opening_are_ignored() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        trip(&mut b, t0);
        assert_eq!(b.on_success(t0, false), None);
        assert_eq!(b.on_failure(t0, false, None), None);
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_hold_opens_until_then_and_never_shortens_a_longer_wait() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        let until = t0 + secs(3.0);
        let t = b.hold_open(t0, until).expect("closed -> open");
        assert_eq!((t.from, t.to), (State::Closed, State::Open));
        assert_eq!(
            b.admit(t0 + secs(2.9)),
            Admission::Rejected { retry_at: until }
        );
        assert_eq!(b.hold_open(t0, t0 + secs(1.0)), None, "already open");
        assert_eq!(b.next_probe(), Some(until), "a shorter hold is ignored");
        assert_eq!(b.hold_open(t0, t0 + secs(4.0)), None);
        assert_eq!(b.next_probe(), Some(t0 + secs(4.0)), "a longer one extends");
        assert_eq!(b.snapshot(t0).trips, 0, "the opener counted the trip");
    }

    #[tokio::test(start_paused = true)]
    async fn a_remote_close_closes_from_open_or_half_open_only() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        assert_eq!(b.close_remote(t0), None);
        trip(&mut b, t0);
        let t1 = t0 + secs(1.0);
        assert_eq!(b.admit(t1), Admission::Probe);
        let t = b.close_remote(t1).expect("half-open -> closed");
        assert_eq!((t.from, t.to), (State::HalfOpen, State::Closed));
        assert!(
            (b.traffic_share(t1) - 0.1).abs() < 1e-9,
            "slow start applies"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_trip_opens_a_closed_breaker_with_the_local_growth() {
        let t0 = Instant::now();
        let mut b = Breaker::new(policy(), t0);
        assert!(b.trip(t0).is_some());
        assert_eq!(b.trip(t0), None, "already open");
        assert_eq!(b.next_probe(), Some(t0 + secs(1.0)), "open_base");
    }
}
