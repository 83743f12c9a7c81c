//! SLO-driven degradation (`degrade_on`, `degrade_share`): while a route's
//! burn-rate alert of the chosen severity fires, its requests try the
//! `tier = "degraded"` targets first, the primary ones staying behind them
//! as fallback. It owns the per-route switch (one atomic, read lock-free on
//! the request path and kept across reloads by `HealthRegistry`) and the
//! small pure decisions around it. The SLO evaluation loop flips the
//! switch; this module may not evaluate SLOs, do I/O or reorder anything
//! but the plan it is handed.

use crate::config::{SloDegrade, Target};
use crate::telemetry::slo::Severity;
use std::sync::atomic::{AtomicBool, Ordering};

/// A route's state that outlives a config: whether its SLO currently
/// sends requests to the degraded tier first.
#[derive(Debug, Default)]
pub struct RouteHealth {
    slo_degraded: AtomicBool,
}

impl RouteHealth {
    /// Whether the route is degraded by its SLO right now.
    pub fn slo_degraded(&self) -> bool {
        self.slo_degraded.load(Ordering::Relaxed)
    }

    /// Sets the switch; `true` when this changed it.
    pub fn set_slo_degraded(&self, on: bool) -> bool {
        self.slo_degraded.swap(on, Ordering::Relaxed) != on
    }
}

/// Whether an alert firing at these severities puts a route with
/// `degrade_on = on` into degradation: `page` needs the page alert,
/// `ticket` either (a page is the worse burn).
pub fn triggered(on: Severity, page_firing: bool, ticket_firing: bool) -> bool {
    match on {
        Severity::Page => page_firing,
        Severity::Ticket => page_firing || ticket_firing,
    }
}

/// Whether one request is planned degraded-first: the switch is on, the
/// request may be served degraded at all (header, key), and its draw in
/// `0.0..1.0` falls within the configured share.
pub fn degraded_first(
    policy: Option<&SloDegrade>,
    switched_on: bool,
    allow_degraded: bool,
    draw: f64,
) -> bool {
    policy.is_some_and(|p| switched_on && allow_degraded && draw < p.share)
}

/// Moves the degraded targets ahead of the primary ones, each group keeping
/// its planned order (priority, region, balancing).
pub fn put_degraded_first(order: &mut [usize], targets: &[Target]) {
    order.sort_by_key(|&i| !targets.get(i).is_some_and(|t| t.degraded));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: Severity, share: f64) -> SloDegrade {
        SloDegrade { on, share }
    }

    #[test]
    fn page_needs_the_page_alert_and_ticket_takes_either() {
        assert!(triggered(Severity::Page, true, false));
        assert!(triggered(Severity::Page, true, true));
        assert!(!triggered(Severity::Page, false, true));
        assert!(!triggered(Severity::Page, false, false));
        assert!(triggered(Severity::Ticket, false, true));
        assert!(triggered(Severity::Ticket, true, false));
        assert!(!triggered(Severity::Ticket, false, false));
    }

    #[test]
    fn a_request_goes_degraded_first_only_when_switched_allowed_and_drawn() {
        let full = policy(Severity::Page, 1.0);
        assert!(degraded_first(Some(&full), true, true, 0.999));
        assert!(!degraded_first(Some(&full), false, true, 0.0), "switch off");
        assert!(
            !degraded_first(Some(&full), true, false, 0.0),
            "the client or key forbids degradation"
        );
        assert!(!degraded_first(None, true, true, 0.0), "no degrade_on");
        let half = policy(Severity::Page, 0.5);
        assert!(degraded_first(Some(&half), true, true, 0.49));
        assert!(!degraded_first(Some(&half), true, true, 0.5));
        let none = policy(Severity::Page, 0.0);
        assert!(!degraded_first(Some(&none), true, true, 0.0));
    }

    #[test]
    fn degraded_targets_move_ahead_keeping_each_groups_order() {
        let text = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [\
            { provider = \"p\", model = \"a\" }, { provider = \"p\", model = \"b\" },\
            { provider = \"p\", model = \"small\", tier = \"degraded\" },\
            { provider = \"p\", model = \"tiny\", tier = \"degraded\" }]\n";
        let config = crate::config::Config::from_toml(text, |_| None).unwrap();
        let targets = &config.route("r").unwrap().targets;
        let mut order = vec![1, 0, 3, 2];
        put_degraded_first(&mut order, targets);
        assert_eq!(order, [3, 2, 1, 0]);
        let mut order = vec![0, 1];
        put_degraded_first(&mut order, targets);
        assert_eq!(order, [0, 1], "no degraded target planned: unchanged");
    }

    #[test]
    fn the_switch_reports_changes_only() {
        let health = RouteHealth::default();
        assert!(!health.slo_degraded());
        assert!(health.set_slo_degraded(true));
        assert!(!health.set_slo_degraded(true));
        assert!(health.slo_degraded());
        assert!(health.set_slo_degraded(false));
        assert!(!health.slo_degraded());
    }
}
