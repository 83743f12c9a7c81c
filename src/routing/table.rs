//! The live routing table: a validated `Config` bound to the state that must
//! survive reloads (target health, retry budgets). Built once per config
//! load and swapped as one unit, so a request sees either the old table or
//! the new one, never a mix.

use super::health::{HealthRegistry, TargetHealth};
use crate::config::{BudgetPolicy, Config, Route, Strategy};
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use crate::telemetry::slo::{SloRegistry, SloTracker};
use crate::telemetry::stats::{Series, StatsRegistry};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;

pub struct Budget {
    pub policy: BudgetPolicy,
    pub tokens: TpsBudget,
}

impl Budget {
    fn new(policy: BudgetPolicy) -> Arc<Self> {
        Arc::new(Budget {
            policy,
            // Config validation keeps ttl in 1..=60 s and the ratio in 0..=10,
            // inside TpsBudget's accepted ranges.
            tokens: TpsBudget::new(policy.ttl, policy.min_per_sec, policy.retry_ratio),
        })
    }
}

pub struct LiveRoute {
    pub route: Arc<Route>,
    /// Parallel to `route.targets`.
    pub health: Vec<Arc<TargetHealth>>,
    pub budget: Arc<Budget>,
    pub metrics: RouteMetrics,
    /// Rolling statistics of the route, and of each target within it.
    pub stats: Arc<Series>,
    pub target_stats: Vec<Arc<Series>>,
    pub slo: Option<Arc<SloTracker>>,
    /// The route's state kept across reloads (SLO degradation switch).
    pub route_health: Arc<super::degrade::RouteHealth>,
    /// Smooth weighted round-robin state, parallel to `route.targets`.
    swrr: Mutex<Vec<i64>>,
}

pub struct RouteTable {
    pub config: Arc<Config>,
    routes: HashMap<String, Arc<LiveRoute>>,
    pub global_budget: Arc<Budget>,
    pub registry: Arc<HealthRegistry>,
}

impl RouteTable {
    /// Binds `config` to the registry's target health, reusing the previous
    /// table's budgets where their policy is unchanged.
    pub fn build(
        config: Config,
        registry: Arc<HealthRegistry>,
        metrics: &Metrics,
        stats: &StatsRegistry,
        slos: &SloRegistry,
        previous: Option<&RouteTable>,
    ) -> RouteTable {
        let config = Arc::new(config);
        let mut keys = HashSet::new();
        let mut series = HashSet::new();
        let mut series_for = |name: String| {
            let s = stats.get_or_create(&name);
            series.insert(name);
            s
        };
        let mut routes = HashMap::new();
        for route in config.routes() {
            let health = route
                .targets
                .iter()
                .map(|t| {
                    let key = t.health_key();
                    keys.insert(key.clone());
                    let health = registry.get_or_create(&key, route.breaker);
                    health.enable();
                    health
                })
                .collect();
            let budget = previous
                .and_then(|p| p.routes.get(&route.name))
                .map(|r| r.budget.clone())
                .filter(|b| b.policy == route.budget)
                .unwrap_or_else(|| Budget::new(route.budget));
            routes.insert(
                route.name.clone(),
                Arc::new(LiveRoute {
                    route: route.clone(),
                    health,
                    budget,
                    metrics: metrics.route(
                        &route.name,
                        &route
                            .targets
                            .iter()
                            .map(|t| (t.label().to_owned(), t.region().to_owned()))
                            .collect::<Vec<_>>(),
                    ),
                    stats: series_for(route.name.clone()),
                    slo: route
                        .slo
                        .map(|policy| slos.get_or_create(&route.name, policy)),
                    route_health: registry.route(&route.name),
                    target_stats: route
                        .targets
                        .iter()
                        .map(|t| series_for(format!("{} {}", route.name, t.label())))
                        .collect(),
                    swrr: Mutex::new(vec![0; route.targets.len()]),
                }),
            );
        }
        registry.retain(&keys);
        registry.retain_routes(&config.routes().map(|r| r.name.clone()).collect());
        stats.retain(&series);
        slos.retain(
            &config
                .routes()
                .filter(|r| r.slo.is_some())
                .map(|r| r.name.clone())
                .collect(),
        );
        let global_budget = previous
            .map(|p| p.global_budget.clone())
            .filter(|b| b.policy == config.global_budget)
            .unwrap_or_else(|| Budget::new(config.global_budget));
        RouteTable {
            config,
            routes,
            global_budget,
            registry,
        }
    }

    pub fn route(&self, name: &str) -> Option<&Arc<LiveRoute>> {
        self.routes.get(name)
    }
}

impl LiveRoute {
    /// Whether one request with `allow_degraded` is planned degraded-first
    /// by the route's SLO (`degrade_on`): one atomic load and, for a share
    /// below 1, one draw.
    pub fn slo_degraded_first(&self, allow_degraded: bool) -> bool {
        let policy = self.route.slo_degrade.as_ref();
        let switched_on = policy.is_some() && self.route_health.slo_degraded();
        let draw = match policy {
            Some(p) if switched_on && p.share < 1.0 => rand::rng().random::<f64>(),
            _ => 0.0,
        };
        super::degrade::degraded_first(policy, switched_on, allow_degraded, draw)
    }
}

impl LiveRoute {
    /// The order in which to try this route's targets for one request:
    /// by priority; within a priority, the caller's region first, then other
    /// regions by measured latency; within a (priority, region) group, by the
    /// route's balancing strategy. Targets ramping up after their breaker
    /// closed (slow start) are moved to the very end for the share of
    /// requests they should not take yet.
    pub fn plan(&self, caller_region: Option<&str>, now: Instant) -> Vec<usize> {
        let targets = &self.route.targets;
        let n = targets.len();
        if n <= 1 {
            return (0..n).collect();
        }
        let mut region_latency: HashMap<&str, f64> = HashMap::new();
        for (t, h) in targets.iter().zip(&self.health) {
            let l = h.latency_micros();
            let e = region_latency.entry(t.region()).or_insert(f64::INFINITY);
            if l > 0.0 && l < *e {
                *e = l;
            }
        }
        let rank = |i: usize| -> (u32, u8, u64) {
            let region = targets[i].region();
            let away = u8::from(caller_region.is_some_and(|c| c != region));
            let latency = region_latency.get(region).copied().unwrap_or(f64::INFINITY);
            // Unmeasured regions sort after measured ones, in config order.
            let latency = if away == 0 || !latency.is_finite() {
                u64::MAX
            } else {
                latency as u64
            };
            (
                targets[i].priority,
                away,
                if away == 0 { 0 } else { latency },
            )
        };
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (rank(i), i));

        let mut rng = rand::rng();
        let mut start = 0;
        while start < n {
            let key = (rank(order[start]), targets[order[start]].region());
            let mut end = start + 1;
            while end < n && (rank(order[end]), targets[order[end]].region()) == key {
                end += 1;
            }
            if end - start > 1 {
                self.balance(&mut order[start..end], &mut rng);
            }
            start = end;
        }

        // Slow start: a target ramping up after its breaker closed keeps
        // its place only for its current share of requests; otherwise it
        // becomes the last resort, after every other target.
        let mut deferred: Vec<usize> = Vec::new();
        order.retain(|&i| {
            let share = self.health[i].traffic_share(now);
            let keep = share >= 1.0 || rng.random_bool(share.clamp(0.0, 1.0));
            if !keep {
                deferred.push(i);
            }
            keep
        });
        order.extend(deferred);
        order
    }

    fn balance(&self, group: &mut [usize], rng: &mut impl Rng) {
        match self.route.strategy {
            Strategy::Weighted => {
                // nginx's smooth weighted round robin: every member gains its
                // weight, the richest is picked and pays the total.
                let mut current = self.swrr.lock().unwrap_or_else(|p| p.into_inner());
                let total: i64 = group
                    .iter()
                    .map(|&i| i64::from(self.route.targets[i].weight))
                    .sum();
                let mut best = group[0];
                for &i in group.iter() {
                    current[i] += i64::from(self.route.targets[i].weight);
                    if current[i] > current[best] {
                        best = i;
                    }
                }
                current[best] -= total;
                drop(current);
                if let Some(pos) = group.iter().position(|&i| i == best) {
                    group[..=pos].rotate_right(1);
                }
            }
            Strategy::LeastInflight => {
                group.sort_by_key(|&i| self.health[i].inflight());
            }
            Strategy::Latency => {
                let score = |i: usize| {
                    let h = &self.health[i];
                    h.latency_micros().max(1.0) * f64::from(h.inflight() + 1)
                };
                // Power of two choices: compare two random members, put the
                // cheaper first; the rest follow by score.
                let a = rng.random_range(0..group.len());
                let mut b = rng.random_range(0..group.len() - 1);
                if b >= a {
                    b += 1;
                }
                let first = if score(group[a]) <= score(group[b]) {
                    group[a]
                } else {
                    group[b]
                };
                group.sort_by(|&x, &y| score(x).total_cmp(&score(y)));
                if let Some(pos) = group.iter().position(|&i| i == first) {
                    group[..=pos].rotate_right(1);
                }
            }
        }
    }
}
