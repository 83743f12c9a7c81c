//! The status page's HTML: a banner with the worst component, per route
//! its state, last-hour numbers, SLOs, 24-hour and 90-day uptime bars with
//! incident marks, and its targets; recent incidents; the thresholds. No
//! JavaScript (a meta refresh), one column that fits a phone. Every text
//! from config or state goes through [`escape`].

use super::history::{Bar, Uptime};
use super::state::{Health, DEGRADED_BELOW, MAJOR_BELOW, PARTIAL_BELOW};
use super::{RouteStatus, StatusReport};
use crate::resilience::breaker::State;
use crate::telemetry::slo::Objective;
use crate::telemetry::stats::Percentiles;
use std::fmt::Write as _;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:56rem;padding:1rem;color:#1b1b1b;background:#fafafa}
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
.legend i{display:inline-block;width:.7rem;height:.7rem;border-radius:2px;margin:0 .25rem 0 .6rem;vertical-align:-1px}";

/// Text for HTML content and double- or single-quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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
    format!("{}: {}", report.state.label(), escape(&names.join(", ")))
}

pub fn html(report: &StatusReport) -> String {
    let mut out = String::with_capacity(32 << 10);
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="refresh" content="15"><title>Status: {label}</title><style>{STYLE}</style></head><body><h1>Switchyard status</h1><div class="banner b-{state}">{headline}</div>"#,
        label = report.state.label(),
        state = report.state.as_str(),
        headline = headline(report),
    );
    for r in &report.routes {
        route_card(&mut out, r, report.history);
    }
    incidents(&mut out, report);
    thresholds(&mut out);
    out.push_str("<p class=\"muted\">Refreshes every 15 s. Data: <a href=\"/status.json\">/status.json</a></p></body></html>");
    out
}

fn route_card(out: &mut String, r: &RouteStatus, history: &str) {
    let _ = write!(
        out,
        r#"<div class="card"><div class="head"><b>{}</b><span class="badge {}">{}</span></div><div class="muted">Last hour: {} requests, success {}, latency p50/p95/p99 {}</div>"#,
        escape(&r.route),
        r.state.as_str(),
        r.state.label(),
        r.requests_1h,
        pct(r.success_ratio_1h),
        lat(r.latency_1h)
    );
    if r.degraded_by_slo {
        out.push_str(r#"<div class="degraded_performance">degraded by SLO: requests go to the degraded tier first until the alert clears</div>"#);
    }
    if r.latency_slo_missed {
        out.push_str(r#"<div class="degraded_performance">latency objective missed over the last hour</div>"#);
    }
    slos(out, r);
    match (&r.uptime, history) {
        (Some(up), _) => uptime(out, up),
        (None, "unavailable") => out.push_str(
            r#"<p class="muted">Uptime history unavailable: the store did not answer.</p>"#,
        ),
        (None, _) => out.push_str(r#"<p class="muted">No uptime history: the request log is off (<code>[request_log] enabled = true</code> keeps it).</p>"#),
    }
    targets(out, r);
    out.push_str("</div>");
}

fn slos(out: &mut String, r: &RouteStatus) {
    for slo in &r.slo {
        let what = match slo.objective {
            Some(Objective::Latency) => "latency",
            _ => "success",
        };
        let budget = slo.error_budget_remaining;
        let class = if budget > 0.25 {
            "operational"
        } else if budget > 0.0 {
            "degraded_performance"
        } else {
            "major_outage"
        };
        let _ = write!(
            out,
            r#"<div class="muted">SLO {what} {}: compliance {}, <span class="{class}">error budget left {:.0}%</span></div>"#,
            pct(Some(slo.target)),
            pct(slo.compliance),
            budget.max(0.0) * 100.0
        );
    }
}

fn uptime(out: &mut String, up: &Uptime) {
    let _ = write!(
        out,
        r#"<div class="axis"><span>Last 24 hours</span><span>{} success</span></div>"#,
        pct(up.success_ratio_24h)
    );
    bars(out, &up.hours, "hours");
    out.push_str(r#"<div class="axis" style="margin-top:-.3rem"><span>24 h ago</span><span>now</span></div>"#);
    let _ = write!(
        out,
        r#"<div class="axis"><span>Last 90 days</span><span>{} success</span></div>"#,
        pct(up.success_ratio_90d)
    );
    bars(out, &up.days, "days");
    out.push_str(r#"<div class="axis" style="margin-top:-.3rem"><span>90 days ago</span><span>today</span></div>"#);
}

fn bars(out: &mut String, bars: &[Bar], kind: &str) {
    let _ = write!(out, r#"<div class="bars" data-bars="{kind}">"#);
    for b in bars {
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
        let _ = write!(
            out,
            r#"<i class="{class}{mark}" title="{at}: {what}{note}"></i>"#
        );
    }
    out.push_str("</div>");
}

/// One row per target that wraps on a narrow screen: name and state on
/// the first line, breaker, success and latency under them.
fn targets(out: &mut String, r: &RouteStatus) {
    let Some(targets) = &r.targets else {
        return;
    };
    out.push_str(r#"<div class="targets">"#);
    for t in targets {
        let class = match t.breaker {
            State::Closed => "operational",
            State::HalfOpen => "partial_outage",
            State::Open => "major_outage",
        };
        let _ = write!(
            out,
            r#"<div class="target"><div class="head"><span><b>{}</b> <span class="muted">{}</span></span><span class="badge {}">{}</span></div><div class="muted">breaker <span class="{class}">{}</span> · success (1 h) {} of {} attempts · p50/p95/p99 {}</div></div>"#,
            escape(&t.target),
            escape(&t.region),
            t.state.as_str(),
            t.state.label(),
            t.breaker.as_str(),
            pct(t.success_ratio_1h),
            t.attempts_1h,
            lat(t.latency_1h)
        );
    }
    out.push_str("</div>");
}

fn incidents(out: &mut String, report: &StatusReport) {
    out.push_str(r#"<div class="card"><b>Recent incidents</b> <span class="muted">(breaker openings, kept in memory since the last start; marked under the bars)</span>"#);
    if report.incidents.is_empty() {
        out.push_str("<p>No incidents recorded.</p></div>");
        return;
    }
    for i in &report.incidents {
        let _ = write!(
            out,
            r#"<div class="target"><b>{}</b> unavailable{}<div class="muted">started {} · {}</div></div>"#,
            escape(&i.target),
            if i.cause.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape(&i.cause))
            },
            ago(i.started),
            i.ended
                .map_or("ongoing".to_owned(), |t| format!("resolved {}", ago(t)))
        );
    }
    out.push_str("</div>");
}

fn thresholds(out: &mut String) {
    let _ = write!(
        out,
        r#"<div class="card legend"><b>How states are decided</b> <span class="muted">(last hour; bars: their hour or day)</span><ul class="muted">
<li><i style="background:#cf222e"></i>Major outage: every breaker open, or success below {major:.0}%</li>
<li><i style="background:#e16f24"></i>Partial outage: success below {partial:.0}%, or only probes get through (every breaker open or half-open)</li>
<li><i style="background:#d4a72c"></i>Degraded performance: success below the route's success SLO ({degraded:.0}% without one), its latency SLO missed, some targets' breakers open (requests fail over), or degraded by the SLO alert</li>
<li><i style="background:#2da44e"></i>Operational otherwise; <i style="background:#d0d7de"></i>no requests. A dark mark under a bar: an incident.</li></ul></div>"#,
        major = MAJOR_BELOW * 100.0,
        partial = PARTIAL_BELOW * 100.0,
        degraded = DEGRADED_BELOW * 100.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn escape_covers_both_quotes() {
        assert_eq!(
            escape(r#"<a href='x' title="y">&"#),
            "&lt;a href=&#39;x&#39; title=&quot;y&quot;&gt;&amp;"
        );
    }
}
