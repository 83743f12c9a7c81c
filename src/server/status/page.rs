//! The status page's HTML: a banner with the worst component, per route
//! its state, last-hour numbers, SLOs, 24-hour and 90-day uptime bars with
//! incident marks, and its targets; recent incidents; the thresholds. No
//! JavaScript (a meta refresh), one column that fits a phone. Escaping by
//! maud: the page is a compile-time `maud::html!` template, so every text
//! from config or state is escaped by the crate; only the constant CSS is
//! inserted as [`PreEscaped`]. One function per section.

use super::history::{Bar, Uptime};
use super::state::{Health, DEGRADED_BELOW, MAJOR_BELOW, PARTIAL_BELOW};
use super::{RouteStatus, StatusReport};
use crate::resilience::breaker::State;
use crate::telemetry::slo::Objective;
use crate::telemetry::stats::Percentiles;
use maud::{html, Markup, PreEscaped, DOCTYPE};

/// The page's CSS, inserted as it is (no escaping: it is ours).
const STYLE: PreEscaped<&str> = PreEscaped("body{font-family:system-ui,sans-serif;margin:0 auto;max-width:56rem;padding:1rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.4rem;margin:.2rem 0 .8rem}
.card{background:#fff;border:1px solid #ddd;border-radius:.5rem;padding:.8rem 1rem;margin:.8rem 0}
.operational{color:#137333}.degraded_performance{color:#8a6100}.partial_outage{color:#b3470b}.major_outage{color:#c5221f}
.badge{font-weight:600;font-size:.85rem;white-space:nowrap}
.head{display:flex;justify-content:space-between;gap:.5rem;flex-wrap:wrap;align-items:baseline}
.muted{color:#666;font-size:.85rem}
.banner{padding:.8rem 1rem;border-radius:.5rem;color:#fff;font-weight:600}
.b-operational{background:#137333}.b-degraded_performance{background:#8a6100}.b-partial_outage{background:#b3470b}.b-major_outage{background:#c5221f}
.bars{display:flex;gap:1px;height:2rem;margin:.3rem 0 .5rem}
.bars i{flex:1;min-width:1px;border-radius:1px;background:#d0d7de;position:relative}
.bars i.operational{background:#2da44e}.bars i.degraded_performance{background:#d4a72c}.bars i.partial_outage{background:#e16f24}.bars i.major_outage{background:#cf222e}
.bars i.inc::after{content:'';position:absolute;left:0;right:0;bottom:-6px;height:4px;background:#1b1b1b}
.axis{display:flex;justify-content:space-between;color:#666;font-size:.75rem;margin-top:.4rem}
.target{border-top:1px solid #eee;padding:.4rem 0}
.legend i{display:inline-block;width:.7rem;height:.7rem;border-radius:2px;margin:0 .25rem 0 .6rem;vertical-align:-1px}");

fn pct(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{:.2}%", r * 100.0))
}

/// A latency with three significant digits: "0.42 ms", "12.3 ms",
/// "250 ms", "1.20 s".
pub fn duration(ms: f64) -> String {
    match ms {
        m if m < 10.0 => format!("{m:.2} ms"),
        m if m < 100.0 => format!("{m:.1} ms"),
        m if m < 999.5 => format!("{m:.0} ms"),
        m if m < 9_995.0 => format!("{:.2} s", m / 1000.0),
        m if m < 99_950.0 => format!("{:.1} s", m / 1000.0),
        m => format!("{:.0} s", m / 1000.0),
    }
}

fn lat(p: Option<Percentiles>) -> String {
    p.map_or("–".to_owned(), |p| {
        format!(
            "{} / {} / {}",
            duration(p.p50_ms),
            duration(p.p95_ms),
            duration(p.p99_ms)
        )
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

/// "All systems operational", or the worst state and what is in it.
fn headline(report: &StatusReport) -> String {
    if report.state == Health::Operational {
        return "All systems operational".to_owned();
    }
    let mut names: Vec<&str> = Vec::new();
    for r in &report.routes {
        if r.state == report.state {
            names.push(&r.route);
        }
        for t in r.targets.iter().flatten() {
            if t.state == report.state {
                names.push(&t.target);
            }
        }
    }
    format!("{}: {}", report.state.label(), names.join(", "))
}

pub fn html(report: &StatusReport) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="15";
                title { "Status: " (report.state.label()) }
                style { (STYLE) }
            }
            body {
                h1 { "Switchyard status" }
                div class={ "banner b-" (report.state.as_str()) } { (headline(report)) }
                @for r in &report.routes { (route_card(r, report.history)) }
                (incidents(report))
                (thresholds())
                p.muted { "Refreshes every 15 s. Data: " a href="/status.json" { "/status.json" } }
            }
        }
    }
    .into_string()
}

fn route_card(r: &RouteStatus, history: &str) -> Markup {
    html! {
        div.card {
            div.head { b { (r.route) } span.badge.(r.state.as_str()) { (r.state.label()) } }
            div.muted {
                "Last hour: " (r.requests_1h) " requests, success " (pct(r.success_ratio_1h))
                ", latency p50/p95/p99 " (lat(r.latency_1h))
            }
            @if r.degraded_by_slo {
                div.degraded_performance { "degraded by SLO: requests go to the degraded tier first until the alert clears" }
            }
            @if r.latency_slo_missed {
                div.degraded_performance { "latency objective missed over the last hour" }
            }
            (slos(r))
            @match (&r.uptime, history) {
                (Some(up), _) => (uptime(up)),
                (None, "unavailable") => p.muted { "Uptime history unavailable: the store did not answer." },
                (None, _) => p.muted {
                    "No uptime history: the request log is off ("
                    code { "[request_log] enabled = true" } " keeps it)."
                },
            }
            (targets(r))
        }
    }
}

fn slos(r: &RouteStatus) -> Markup {
    html! {
        @for slo in &r.slo {
            @let what = match slo.objective {
                Some(Objective::Latency) => "latency",
                _ => "success",
            };
            @let budget = slo.error_budget_remaining;
            @let class = if budget > 0.25 {
                "operational"
            } else if budget > 0.0 {
                "degraded_performance"
            } else {
                "major_outage"
            };
            div.muted {
                "SLO " (what) " " (pct(Some(slo.target))) ": compliance " (pct(slo.compliance)) ", "
                span class=(class) { "error budget left " (format!("{:.0}", budget.max(0.0) * 100.0)) "%" }
            }
        }
    }
}

fn uptime(up: &Uptime) -> Markup {
    html! {
        div.axis { span { "Last 24 hours" } span { (pct(up.success_ratio_24h)) " success" } }
        (bars(&up.hours, "hours"))
        div.axis style="margin-top:-.3rem" { span { "24 h ago" } span { "now" } }
        div.axis { span { "Last 90 days" } span { (pct(up.success_ratio_90d)) " success" } }
        (bars(&up.days, "days"))
        div.axis style="margin-top:-.3rem" { span { "90 days ago" } span { "today" } }
    }
}

/// One bar: its state as the class (plus `inc` under an incident), what
/// happened in it as the tooltip.
fn bar(b: &Bar) -> Markup {
    let class = b.state.map_or("none", Health::as_str);
    let at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(b.start.max(0) as u64),
    );
    let what = match b.success_ratio {
        Some(r) => format!("{} of {} requests succeeded", pct(Some(r)), b.requests),
        None => "no requests".to_owned(),
    };
    let (mark, note) = match b.incidents {
        0 => ("", String::new()),
        n => (" inc", format!(", {n} incident(s)")),
    };
    html! { i class={ (class) (mark) } title={ (at) ": " (what) (note) } {} }
}

fn bars(bars: &[Bar], kind: &str) -> Markup {
    html! { div.bars data-bars=(kind) { @for b in bars { (bar(b)) } } }
}

/// One row per target that wraps on a narrow screen: name and state on
/// the first line, breaker, success and latency under them.
fn targets(r: &RouteStatus) -> Markup {
    let Some(targets) = &r.targets else {
        return html! {};
    };
    html! {
        div.targets {
            @for t in targets {
                @let class = match t.breaker {
                    State::Closed => "operational",
                    State::HalfOpen => "partial_outage",
                    State::Open => "major_outage",
                };
                div.target {
                    div.head {
                        span { b { (t.target) } " " span.muted { (t.region) } }
                        span.badge.(t.state.as_str()) { (t.state.label()) }
                    }
                    div.muted {
                        "breaker " span class=(class) { (t.breaker.as_str()) }
                        " · success (1 h) " (pct(t.success_ratio_1h)) " of " (t.attempts_1h)
                        " attempts · p50/p95/p99 " (lat(t.latency_1h))
                    }
                }
            }
        }
    }
}

fn incidents(report: &StatusReport) -> Markup {
    html! {
        div.card {
            b { "Recent incidents" } " "
            span.muted { "(breaker openings, kept in memory since the last start; marked under the bars)" }
            @if report.incidents.is_empty() {
                p { "No incidents recorded." }
            }
            @for i in &report.incidents {
                div.target {
                    b { (i.target) } " unavailable"
                    @if !i.cause.is_empty() { " (" (i.cause) ")" }
                    div.muted {
                        "started " (ago(i.started)) " · "
                        @match i.ended {
                            Some(t) => { "resolved " (ago(t)) },
                            None => "ongoing",
                        }
                    }
                }
            }
        }
    }
}

fn thresholds() -> Markup {
    let swatch = |color: &str| html! { i style={ "background:" (color) } {} };
    html! {
        div.card.legend {
            b { "How states are decided" } " "
            span.muted { "(last hour; bars: their hour or day)" }
            ul.muted {
                li { (swatch("#cf222e")) "Major outage: every breaker open, or success below "
                    (format!("{:.0}", MAJOR_BELOW * 100.0)) "%" }
                li { (swatch("#e16f24")) "Partial outage: success below "
                    (format!("{:.0}", PARTIAL_BELOW * 100.0))
                    "%, or only probes get through (every breaker open or half-open)" }
                li { (swatch("#d4a72c")) "Degraded performance: success below the route's success SLO ("
                    (format!("{:.0}", DEGRADED_BELOW * 100.0))
                    "% without one), its latency SLO missed, some targets' breakers open (requests fail over), or degraded by the SLO alert" }
                li { (swatch("#2da44e")) "Operational otherwise; " (swatch("#d0d7de"))
                    "no requests. A dark mark under a bar: an incident." }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::status::TargetStatus;

    #[test]
    fn durations_keep_three_digits() {
        assert_eq!(duration(0.4249), "0.42 ms");
        assert_eq!(duration(0.0), "0.00 ms");
        assert_eq!(duration(12.34), "12.3 ms");
        assert_eq!(duration(250.2), "250 ms");
        assert_eq!(duration(1_200.0), "1.20 s");
        assert_eq!(duration(12_345.0), "12.3 s");
        assert_eq!(duration(125_000.0), "125 s");
    }

    /// A report whose route, target, region and incident cause are all
    /// `name`, with a major outage so the name is in the banner too.
    fn report_named(name: &str) -> StatusReport {
        let target = TargetStatus {
            target: name.to_owned(),
            region: name.to_owned(),
            state: Health::MajorOutage,
            breaker: State::Open,
            attempts_1h: 3,
            success_ratio_1h: Some(0.0),
            latency_1h: None,
        };
        StatusReport {
            state: Health::MajorOutage,
            history: "request_log_off",
            routes: vec![RouteStatus {
                route: name.to_owned(),
                state: Health::MajorOutage,
                requests_1h: 3,
                success_ratio_1h: Some(0.0),
                latency_1h: None,
                slo: Vec::new(),
                degraded_by_slo: false,
                latency_slo_missed: false,
                uptime: None,
                targets: Some(vec![target]),
            }],
            incidents: vec![crate::routing::health::Incident {
                target: name.to_owned(),
                started: std::time::SystemTime::now(),
                ended: None,
                cause: name.to_owned(),
            }],
        }
    }

    #[test]
    fn names_from_config_arrive_escaped() {
        let name = r#"<script>alert('x')</script> & "q""#;
        let page = html(&report_named(name));
        // maud escapes &, <, > and "; it always double-quotes attribute
        // values, so a ' can neither end an attribute nor open a tag and
        // is left as it is.
        let escaped = "&lt;script&gt;alert('x')&lt;/script&gt; &amp; &quot;q&quot;";
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains(name));
        // Banner (route and target), route card, target name, region,
        // incident target and cause.
        assert_eq!(page.matches(escaped).count(), 7, "{page}");
        assert!(page.contains(&format!("Major outage: {escaped}, {escaped}")));
        assert!(page.contains(">open<") && page.contains("ongoing"));
    }
}
