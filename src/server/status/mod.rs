//! The status page (`/status`, HTML, no JavaScript, auto-refresh) and its
//! data (`/status.json`), and the full rolling statistics (`/admin/stats`).
//! Read-only views over the route table, target health, statistics and
//! (for the uptime bars) the request log in the store. Each route and
//! target is a component whose state [`state::health`] decides.

mod history;
mod page;
pub mod state;

pub use history::HistoryCache;
pub use page::html;
pub use state::Health;

use super::AppState;
use crate::resilience::breaker::State;
use crate::routing::health::Incident;
use crate::telemetry::slo::SloSummary;
use crate::telemetry::stats::Percentiles;
use history::{Loaded, Span, Uptime};
use serde::Serialize;
use state::Signals;
use std::sync::Arc;
use tokio::time::Instant;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The worst component shown.
    pub state: Health,
    /// Where the uptime bars come from: `request_log`, `request_log_off`
    /// (no bars) or `unavailable` (the store did not answer).
    pub history: &'static str,
    pub routes: Vec<RouteStatus>,
    pub incidents: Vec<Incident>,
}

#[derive(Debug, Serialize)]
pub struct RouteStatus {
    pub route: String,
    pub state: Health,
    pub requests_1h: u64,
    pub success_ratio_1h: Option<f64>,
    pub latency_1h: Option<Percentiles>,
    /// Compliance and error budget left of each objective, if the route has an SLO.
    pub slo: Vec<SloSummary>,
    /// The route's SLO alert (`degrade_on`) sends its requests to the
    /// degraded targets first.
    pub degraded_by_slo: bool,
    /// The latency objective's percentile over the last hour is above its
    /// threshold.
    pub latency_slo_missed: bool,
    /// Hourly and daily bars from the request log (`None` without it).
    pub uptime: Option<Uptime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<TargetStatus>>,
}

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    pub target: String,
    pub region: String,
    pub state: Health,
    pub breaker: State,
    /// Upstream attempts (not client requests) in the last hour.
    pub attempts_1h: u64,
    pub success_ratio_1h: Option<f64>,
    pub latency_1h: Option<Percentiles>,
}

/// The uptime history for the page: `None` when the request log is off.
pub async fn load_history(state: &AppState) -> Option<Arc<Loaded>> {
    let log = state.request_log.get()?;
    Some(state.status_history.get(log.store()).await)
}

/// Whether `latency` misses the objective (threshold, ratio): the
/// percentile nearest below the ratio (p99 from 0.99, p95 from 0.95, else
/// p50) is above the threshold.
fn latency_missed(
    objective: Option<(std::time::Duration, f64)>,
    latency: Option<Percentiles>,
) -> bool {
    let (Some((threshold, ratio)), Some(p)) = (objective, latency) else {
        return false;
    };
    let ms = if ratio >= 0.99 {
        p.p99_ms
    } else if ratio >= 0.95 {
        p.p95_ms
    } else {
        p.p50_ms
    };
    ms > threshold.as_secs_f64() * 1000.0
}

pub fn report(state: &AppState, public: bool, history: Option<&Loaded>) -> StatusReport {
    let table = state.table.load();
    let now = Instant::now();
    let all_incidents = state.registry.incidents.all();
    let mut routes = Vec::new();
    for name in table.config.route_names() {
        let Some(live) = table.route(name) else {
            continue;
        };
        routes.push(route_status(live, now, history, &all_incidents, public));
    }
    let mut incidents = all_incidents;
    incidents.reverse();
    if public {
        for i in &mut incidents {
            i.target = "an upstream provider".to_owned();
            i.cause = String::new();
        }
    }
    let targets = routes.iter().flat_map(|r| r.targets.iter().flatten());
    StatusReport {
        state: routes
            .iter()
            .map(|r| r.state)
            .chain(targets.map(|t| t.state))
            .max()
            .unwrap_or(Health::Operational),
        history: match history {
            None => "request_log_off",
            Some(h) if h.failed => "unavailable",
            Some(_) => "request_log",
        },
        routes,
        incidents,
    }
}

fn route_status(
    live: &crate::routing::table::LiveRoute,
    now: Instant,
    history: Option<&Loaded>,
    incidents: &[Incident],
    public: bool,
) -> RouteStatus {
    let [_, hour, _] = live.stats.summaries(now);
    let policy = live.slo.as_ref().map(|t| t.policy);
    let objective = policy.and_then(|p| p.success);
    let targets: Vec<TargetStatus> = live
        .route
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let [_, th, _] = live.target_stats[i].summaries(now);
            let breaker = live.health[i].state();
            TargetStatus {
                target: t.label().to_owned(),
                region: t.region().to_owned(),
                state: state::health(&Signals {
                    success_ratio: th.success_ratio,
                    success_objective: objective,
                    breakers: 1,
                    open: usize::from(breaker == State::Open),
                    half_open: usize::from(breaker == State::HalfOpen),
                    ..Signals::default()
                }),
                breaker,
                attempts_1h: th.requests,
                success_ratio_1h: th.success_ratio,
                latency_1h: th.latency,
            }
        })
        .collect();
    let count = |s: State| targets.iter().filter(|t| t.breaker == s).count();
    let degraded_by_slo = live.route_health.slo_degraded();
    let latency_slo_missed = latency_missed(policy.and_then(|p| p.latency), hour.latency);
    let keys: Vec<String> = live.route.targets.iter().map(|t| t.health_key()).collect();
    // A target's breaker opening, or a regional outage of this route.
    let regional = format!(" of route {}", live.route.name);
    let spans: Vec<Span> = incidents
        .iter()
        .filter(|i| keys.contains(&i.target) || i.target.ends_with(&regional))
        .map(|i| (history::unix_ms(i.started), i.ended.map(history::unix_ms)))
        .collect();
    RouteStatus {
        route: live.route.name.clone(),
        state: state::health(&Signals {
            success_ratio: hour.success_ratio,
            success_objective: objective,
            latency_missed: latency_slo_missed,
            breakers: targets.len(),
            open: count(State::Open),
            half_open: count(State::HalfOpen),
            degraded_by_slo,
        }),
        requests_1h: hour.requests,
        success_ratio_1h: hour.success_ratio,
        latency_1h: hour.latency,
        slo: live
            .slo
            .as_ref()
            .map(|t| t.summaries(now))
            .unwrap_or_default(),
        degraded_by_slo,
        latency_slo_missed,
        uptime: history
            .filter(|h| !h.failed)
            .map(|h| history::uptime(h, &live.route.name, objective, &spans)),
        targets: (!public).then_some(targets),
    }
}

/// Every series and window, for `/admin/stats`.
pub fn stats(state: &AppState) -> serde_json::Value {
    let table = state.table.load();
    let now = Instant::now();
    let routes: Vec<_> = table
        .config
        .route_names()
        .iter()
        .filter_map(|name| table.route(name))
        .map(|live| {
            let targets: Vec<_> = live
                .route
                .targets
                .iter()
                .zip(&live.target_stats)
                .map(|(t, s)| serde_json::json!({ "target": t.label(), "windows": s.summaries(now) }))
                .collect();
            serde_json::json!({
                "route": live.route.name,
                "windows": live.stats.summaries(now),
                "targets": targets,
            })
        })
        .collect();
    serde_json::json!({ "routes": routes })
}
