//! The status page (`/status`, HTML, no JavaScript, auto-refresh) and its
//! data (`/status.json`), and the full rolling statistics (`/admin/stats`).
//! Read-only views over the route table, target health and statistics.

use super::AppState;
use crate::resilience::breaker::State;
use crate::routing::health::Incident;
use crate::telemetry::slo::{Objective, SloSummary};
use crate::telemetry::stats::Percentiles;
use serde::Serialize;
use std::fmt::Write as _;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Operational,
    Degraded,
    Outage,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Operational => "operational",
            Health::Degraded => "degraded",
            Health::Outage => "outage",
        }
    }
}

/// Below this success ratio over the last hour a route shows as degraded.
const DEGRADED_BELOW: f64 = 0.99;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub state: Health,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<TargetStatus>>,
}

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    pub target: String,
    pub region: String,
    pub breaker: State,
    /// Upstream attempts (not client requests) in the last hour.
    pub attempts_1h: u64,
    pub success_ratio_1h: Option<f64>,
    pub latency_1h: Option<Percentiles>,
}

pub fn report(state: &AppState, public: bool) -> StatusReport {
    let table = state.table.load();
    let now = Instant::now();
    let mut routes = Vec::new();
    for name in table.config.route_names() {
        let Some(live) = table.route(name) else {
            continue;
        };
        let [_, hour, _] = live.stats.summaries(now);
        let targets: Vec<TargetStatus> = live
            .route
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let [_, th, _] = live.target_stats[i].summaries(now);
                TargetStatus {
                    target: t.label().to_owned(),
                    region: t.region().to_owned(),
                    breaker: live.health[i].state(),
                    attempts_1h: th.requests,
                    success_ratio_1h: th.success_ratio,
                    latency_1h: th.latency,
                }
            })
            .collect();
        let open = targets
            .iter()
            .filter(|t| t.breaker != State::Closed)
            .count();
        let degraded_by_slo = live.route_health.slo_degraded();
        let state = if !targets.is_empty() && open == targets.len() {
            Health::Outage
        } else if open > 0
            || degraded_by_slo
            || hour.success_ratio.is_some_and(|r| r < DEGRADED_BELOW)
        {
            Health::Degraded
        } else {
            Health::Operational
        };
        routes.push(RouteStatus {
            route: name.clone(),
            state,
            requests_1h: hour.requests,
            success_ratio_1h: hour.success_ratio,
            latency_1h: hour.latency,
            slo: live
                .slo
                .as_ref()
                .map(|t| t.summaries(now))
                .unwrap_or_default(),
            degraded_by_slo,
            targets: (!public).then_some(targets),
        });
    }
    let mut incidents = state.registry.incidents.all();
    incidents.reverse();
    if public {
        for i in &mut incidents {
            i.target = "an upstream provider".to_owned();
            i.cause = String::new();
        }
    }
    StatusReport {
        state: routes
            .iter()
            .map(|r| r.state)
            .max()
            .unwrap_or(Health::Operational),
        routes,
        incidents,
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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn pct(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

fn lat(p: Option<Percentiles>) -> String {
    p.map_or("–".to_owned(), |p| {
        format!("{:.0} / {:.0} / {:.0} ms", p.p50_ms, p.p95_ms, p.p99_ms)
    })
}

fn ago(t: std::time::SystemTime) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

pub fn html(report: &StatusReport) -> String {
    let mut out = String::with_capacity(8 << 10);
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="15"><title>Status: {state}</title><style>
body{{font-family:system-ui,sans-serif;margin:0 auto;max-width:56rem;padding:1rem;color:#1b1b1b;background:#fafafa}}
h1{{font-size:1.4rem}} .card{{background:#fff;border:1px solid #ddd;border-radius:.5rem;padding:.8rem 1rem;margin:.8rem 0;overflow-x:auto}}
.operational{{color:#137333}} .degraded{{color:#b06000}} .outage{{color:#c5221f}} .badge{{font-weight:600;text-transform:uppercase;font-size:.8rem}}
table{{border-collapse:collapse;width:100%;font-size:.9rem}} td,th{{text-align:left;padding:.25rem .4rem;border-top:1px solid #eee}}
.banner{{padding:.8rem 1rem;border-radius:.5rem;color:#fff;font-weight:600}} .b-operational{{background:#137333}} .b-degraded{{background:#b06000}} .b-outage{{background:#c5221f}}
</style></head><body><h1>Switchyard status</h1><div class="banner b-{state}">{headline}</div>"#,
        state = report.state.as_str(),
        headline = match report.state {
            Health::Operational => "All routes operational",
            Health::Degraded => "Some routes are degraded",
            Health::Outage => "Outage: some routes cannot serve requests",
        }
    );
    for r in &report.routes {
        let _ = write!(
            out,
            r#"<div class="card"><b>{}</b> <span class="badge {}">{}</span><br>Last hour: {} requests, success {}, latency p50/p95/p99 {}"#,
            escape(&r.route),
            r.state.as_str(),
            r.state.as_str(),
            r.requests_1h,
            pct(r.success_ratio_1h),
            lat(r.latency_1h)
        );
        if r.degraded_by_slo {
            out.push_str(r#"<br><span class="degraded">degraded by SLO: requests go to the degraded tier first until the alert clears</span>"#);
        }
        for slo in &r.slo {
            let what = match slo.objective {
                Some(Objective::Latency) => "latency",
                _ => "success",
            };
            let budget = slo.error_budget_remaining;
            let class = if budget > 0.25 {
                "operational"
            } else if budget > 0.0 {
                "degraded"
            } else {
                "outage"
            };
            let _ = write!(
                out,
                r#"<br>SLO {what} {}: compliance {}, <span class="{class}">error budget left {:.0}%</span>"#,
                pct(Some(slo.target)),
                pct(slo.compliance),
                budget.max(0.0) * 100.0
            );
        }
        if let Some(targets) = &r.targets {
            out.push_str("<table><tr><th>target</th><th>region</th><th>breaker</th><th>success (1 h)</th><th>p50/p95/p99 (1 h)</th></tr>");
            for t in targets {
                let class = match t.breaker {
                    State::Closed => "operational",
                    State::HalfOpen => "degraded",
                    State::Open => "outage",
                };
                let _ = write!(
                    out,
                    r#"<tr><td>{}</td><td>{}</td><td class="{class}">{}</td><td>{}</td><td>{}</td></tr>"#,
                    escape(&t.target),
                    escape(&t.region),
                    t.breaker.as_str(),
                    pct(t.success_ratio_1h),
                    lat(t.latency_1h)
                );
            }
            out.push_str("</table>");
        }
        out.push_str("</div>");
    }
    out.push_str(r#"<div class="card"><b>Recent incidents</b>"#);
    if report.incidents.is_empty() {
        out.push_str("<p>No incidents recorded.</p>");
    } else {
        out.push_str("<table><tr><th>what</th><th>started</th><th>resolved</th></tr>");
        for i in &report.incidents {
            let _ = write!(
                out,
                "<tr><td>{} unavailable{}</td><td>{}</td><td>{}</td></tr>",
                escape(&i.target),
                if i.cause.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", escape(&i.cause))
                },
                ago(i.started),
                i.ended.map_or("ongoing".to_owned(), ago)
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</div><p style=\"color:#777;font-size:.8rem\">Refreshes every 15 s. Data: <a href=\"/status.json\">/status.json</a></p></body></html>");
    out
}
