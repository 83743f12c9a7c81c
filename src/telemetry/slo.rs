//! Service level objectives and multi-window, multi-burn-rate alerts, as in
//! Google's SRE workbook (chapter "Alerting on SLOs"):
//!
//! | severity | long window | short window | burn rate |
//! |---|---|---|---|
//! | page | 1 h | 5 min | 14.4 × |
//! | ticket | 6 h | 30 min | 6 × |
//!
//! A burn rate is the observed bad-event ratio divided by the ratio the SLO
//! allows (`1 - target`); an alert fires when both windows burn faster than
//! the threshold and resolves when either drops below it. Counts are kept in
//! one-minute buckets for 6 h and one-day buckets for the SLO period, so
//! memory is fixed. The clock is passed in: tests drive it directly.

use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloPolicy {
    /// Good ratio the route promises for successes, e.g. 0.999.
    pub success: Option<f64>,
    /// (threshold, ratio): e.g. 95% of requests faster than 2 s.
    pub latency: Option<(Duration, f64)>,
    /// The error-budget period, in whole days (e.g. 30).
    pub period_days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    Success,
    Latency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Page,
    Ticket,
}

struct Rule {
    severity: Severity,
    long_minutes: usize,
    short_minutes: usize,
    burn_rate: f64,
}

const RULES: [Rule; 2] = [
    Rule {
        severity: Severity::Page,
        long_minutes: 60,
        short_minutes: 5,
        burn_rate: 14.4,
    },
    Rule {
        severity: Severity::Ticket,
        long_minutes: 360,
        short_minutes: 30,
        burn_rate: 6.0,
    },
];

/// (total, bad for success, bad for latency)
type Counts = (u64, u64, u64);

struct Buckets {
    width: Duration,
    counts: Vec<Counts>,
    head: usize,
    head_start: Instant,
}

impl Buckets {
    fn new(width: Duration, len: usize, now: Instant) -> Self {
        Buckets {
            width,
            counts: vec![(0, 0, 0); len.max(1)],
            head: 0,
            head_start: now,
        }
    }

    fn advance(&mut self, now: Instant) {
        let steps = (now.saturating_duration_since(self.head_start).as_nanos()
            / self.width.as_nanos()) as usize;
        for _ in 0..steps.min(self.counts.len()) {
            self.head = (self.head + 1) % self.counts.len();
            self.counts[self.head] = (0, 0, 0);
        }
        if steps > 0 {
            self.head_start += self.width * steps.min(u32::MAX as usize) as u32;
        }
    }

    fn add(&mut self, now: Instant, c: Counts) {
        self.advance(now);
        let b = &mut self.counts[self.head];
        b.0 += c.0;
        b.1 += c.1;
        b.2 += c.2;
    }

    /// Sum of the newest `n` buckets (the current one included).
    fn last(&mut self, now: Instant, n: usize) -> Counts {
        self.advance(now);
        let len = self.counts.len();
        (0..n.min(len)).fold((0, 0, 0), |acc, i| {
            let c = self.counts[(self.head + len - i) % len];
            (acc.0 + c.0, acc.1 + c.1, acc.2 + c.2)
        })
    }
}

/// An alert that started or stopped firing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertChange {
    pub route: String,
    pub objective: Objective,
    pub severity: Severity,
    pub firing: bool,
    pub burn_rate_long: f64,
    pub burn_rate_short: f64,
    pub error_budget_remaining: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SloSummary {
    pub objective: Option<Objective>,
    pub target: f64,
    /// Good ratio over the SLO period so far.
    pub compliance: Option<f64>,
    /// 1 = untouched, 0 = spent, negative = overspent.
    pub error_budget_remaining: f64,
}

pub struct SloTracker {
    pub route: String,
    pub policy: SloPolicy,
    minutes: Mutex<Buckets>,
    days: Mutex<Buckets>,
    /// Firing state per (objective, rule).
    firing: Mutex<[[bool; 2]; 2]>,
}

impl SloTracker {
    pub fn new(route: &str, policy: SloPolicy, now: Instant) -> Self {
        SloTracker {
            route: route.to_owned(),
            policy,
            minutes: Mutex::new(Buckets::new(Duration::from_secs(60), 360, now)),
            days: Mutex::new(Buckets::new(
                Duration::from_secs(86_400),
                policy.period_days as usize,
                now,
            )),
            firing: Mutex::new([[false; 2]; 2]),
        }
    }

    pub fn record(&self, now: Instant, success: bool, latency: Duration) {
        let slow = self
            .policy
            .latency
            .is_some_and(|(threshold, _)| latency > threshold);
        let c = (1, u64::from(!success), u64::from(slow));
        self.minutes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(now, c);
        self.days
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(now, c);
    }

    fn objectives(&self) -> impl Iterator<Item = (usize, Objective, f64)> {
        let success = self.policy.success.map(|t| (0, Objective::Success, t));
        let latency = self.policy.latency.map(|(_, t)| (1, Objective::Latency, t));
        success.into_iter().chain(latency)
    }

    fn bad(c: Counts, objective: Objective) -> u64 {
        match objective {
            Objective::Success => c.1,
            Objective::Latency => c.2,
        }
    }

    fn budget_remaining(&self, now: Instant, objective: Objective, target: f64) -> f64 {
        let period = self
            .days
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last(now, self.policy.period_days as usize);
        if period.0 == 0 {
            return 1.0;
        }
        let allowed = (1.0 - target) * period.0 as f64;
        if allowed <= 0.0 {
            return if Self::bad(period, objective) == 0 {
                1.0
            } else {
                0.0
            };
        }
        1.0 - Self::bad(period, objective) as f64 / allowed
    }

    /// Compliance and budget of each objective.
    pub fn summaries(&self, now: Instant) -> Vec<SloSummary> {
        self.objectives()
            .map(|(_, objective, target)| {
                let period = self
                    .days
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last(now, self.policy.period_days as usize);
                SloSummary {
                    objective: Some(objective),
                    target,
                    compliance: (period.0 > 0)
                        .then(|| 1.0 - Self::bad(period, objective) as f64 / period.0 as f64),
                    error_budget_remaining: self.budget_remaining(now, objective, target),
                }
            })
            .collect()
    }

    /// Whether an alert of `severity` (for any objective) was firing at the
    /// last [`evaluate`](Self::evaluate).
    pub fn is_firing(&self, severity: Severity) -> bool {
        let rule = RULES.iter().position(|r| r.severity == severity);
        let state = self.firing.lock().unwrap_or_else(|p| p.into_inner());
        rule.is_some_and(|ri| state.iter().any(|objective| objective[ri]))
    }

    /// Evaluates every rule; returns the alerts whose state changed.
    pub fn evaluate(&self, now: Instant) -> Vec<AlertChange> {
        let mut changes = Vec::new();
        for (oi, objective, target) in self.objectives() {
            let allowed = (1.0 - target).max(1e-9);
            for (ri, rule) in RULES.iter().enumerate() {
                let burn = |minutes: usize| {
                    let c = self
                        .minutes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .last(now, minutes);
                    if c.0 == 0 {
                        0.0
                    } else {
                        Self::bad(c, objective) as f64 / c.0 as f64 / allowed
                    }
                };
                let (long, short) = (burn(rule.long_minutes), burn(rule.short_minutes));
                let firing = long >= rule.burn_rate && short >= rule.burn_rate;
                let mut state = self.firing.lock().unwrap_or_else(|p| p.into_inner());
                if state[oi][ri] != firing {
                    state[oi][ri] = firing;
                    changes.push(AlertChange {
                        route: self.route.clone(),
                        objective,
                        severity: rule.severity,
                        firing,
                        burn_rate_long: long,
                        burn_rate_short: short,
                        error_budget_remaining: self.budget_remaining(now, objective, target),
                    });
                }
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SloPolicy {
        SloPolicy {
            success: Some(0.999),
            latency: Some((Duration::from_secs(2), 0.95)),
            period_days: 30,
        }
    }

    fn minutes(n: u64) -> Duration {
        Duration::from_secs(60 * n)
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_traffic_never_alerts_and_keeps_its_budget() {
        let t0 = Instant::now();
        let slo = SloTracker::new("r", policy(), t0);
        for m in 0..120 {
            for _ in 0..100 {
                slo.record(t0 + minutes(m), true, Duration::from_millis(100));
            }
            assert!(slo.evaluate(t0 + minutes(m)).is_empty());
        }
        let s = slo.summaries(t0 + minutes(120));
        assert_eq!(s[0].compliance, Some(1.0));
        assert_eq!(s[0].error_budget_remaining, 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn fast_burn_pages_then_resolves_when_the_short_window_recovers() {
        let t0 = Instant::now();
        let slo = SloTracker::new("r", policy(), t0);
        // 2% errors against a 0.1% budget: burn rate 20 (> 14.4 and > 6).
        let mut fired = Vec::new();
        for m in 0..60 {
            for i in 0..100 {
                slo.record(t0 + minutes(m), i >= 2, Duration::from_millis(100));
            }
            fired.extend(slo.evaluate(t0 + minutes(m)));
        }
        let page = fired
            .iter()
            .find(|c| c.severity == Severity::Page)
            .expect("paged");
        assert!(page.firing && page.objective == Objective::Success);
        assert!((page.burn_rate_short - 20.0).abs() < 1e-9, "{page:?}");
        // The burn rate is a ratio of events, so the 6 h window (holding one
        // hour of traffic) burns at 20x too: the ticket fires as well.
        assert!(fired
            .iter()
            .any(|c| c.severity == Severity::Ticket && c.firing));
        assert!(
            slo.summaries(t0 + minutes(60))[0].error_budget_remaining < 0.0,
            "20x for an hour of a 1-hour period overspends"
        );
        // Errors stop: within 5 minutes the short window drops, the page resolves.
        let mut resolved = None;
        for m in 60..70 {
            for _ in 0..100 {
                slo.record(t0 + minutes(m), true, Duration::from_millis(100));
            }
            if let Some(c) = slo
                .evaluate(t0 + minutes(m))
                .into_iter()
                .find(|c| c.severity == Severity::Page)
            {
                resolved = Some((m, c));
                break;
            }
        }
        let (at, change) = resolved.expect("resolved");
        assert!(!change.firing);
        assert!(at <= 65, "resolved at minute {at}");
        assert!(!slo.is_firing(Severity::Page));
        assert!(
            slo.is_firing(Severity::Ticket),
            "the 30-minute window still burns"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_requests_burn_the_latency_objective_only() {
        let t0 = Instant::now();
        let slo = SloTracker::new("r", policy(), t0);
        let mut changes = Vec::new();
        for m in 0..10 {
            for _ in 0..100 {
                slo.record(t0 + minutes(m), true, Duration::from_secs(5));
            }
            changes.extend(slo.evaluate(t0 + minutes(m)));
        }
        assert!(changes.iter().all(|c| c.objective == Objective::Latency));
        assert!(changes
            .iter()
            .any(|c| c.severity == Severity::Page && c.firing));
    }
}

/// SLO trackers by route, shared by successive route tables; a tracker is
/// replaced (its counts dropped) only when its route's policy changes.
#[derive(Default)]
pub struct SloRegistry {
    trackers: Mutex<std::collections::HashMap<String, std::sync::Arc<SloTracker>>>,
}

impl SloRegistry {
    pub fn get_or_create(&self, route: &str, policy: SloPolicy) -> std::sync::Arc<SloTracker> {
        let mut map = self.trackers.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(route) {
            Some(t) if t.policy == policy => t.clone(),
            _ => {
                let t = std::sync::Arc::new(SloTracker::new(route, policy, Instant::now()));
                map.insert(route.to_owned(), t.clone());
                t
            }
        }
    }

    pub fn retain(&self, routes: &std::collections::HashSet<String>) {
        self.trackers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| routes.contains(k));
    }

    pub fn all(&self) -> Vec<std::sync::Arc<SloTracker>> {
        self.trackers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
