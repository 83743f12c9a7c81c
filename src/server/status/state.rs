//! The status page's component states: one pure function from what a route
//! or target did over the last hour (success ratio, latency SLO, breakers)
//! to operational / degraded performance / partial outage / major outage.
//! Knows nothing about the route table or HTML.

use serde::Serialize;

/// A component's state, worst last (`max` of several is the worst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Operational,
    DegradedPerformance,
    PartialOutage,
    MajorOutage,
}

impl Health {
    /// The CSS class and the JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Operational => "operational",
            Health::DegradedPerformance => "degraded_performance",
            Health::PartialOutage => "partial_outage",
            Health::MajorOutage => "major_outage",
        }
    }

    /// The words on the page.
    pub fn label(self) -> &'static str {
        match self {
            Health::Operational => "Operational",
            Health::DegradedPerformance => "Degraded performance",
            Health::PartialOutage => "Partial outage",
            Health::MajorOutage => "Major outage",
        }
    }
}

/// Below this success ratio a component is in major outage.
pub const MAJOR_BELOW: f64 = 0.50;
/// Below this success ratio a component is in partial outage.
pub const PARTIAL_BELOW: f64 = 0.95;
/// Below this success ratio (or the route's success SLO, if it has one) a
/// component shows degraded performance.
pub const DEGRADED_BELOW: f64 = 0.99;

/// What one component did over the window it is judged on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signals {
    /// Good share of its requests (attempts, for a target); `None` without
    /// traffic.
    pub success_ratio: Option<f64>,
    /// The route's success objective (e.g. 0.999), if it has an SLO.
    pub success_objective: Option<f64>,
    /// The route's latency objective was missed (its percentile at the
    /// objective's ratio was above the threshold).
    pub latency_missed: bool,
    /// Breakers of the component: how many, how many open, how many
    /// half-open. A target has one; a route has one per target.
    pub breakers: usize,
    pub open: usize,
    pub half_open: usize,
    /// The route's SLO alert sends its requests to the degraded tier first.
    pub degraded_by_slo: bool,
}

/// The state of a component, worst rule first:
/// - major outage: every breaker open, or success below 50%;
/// - partial outage: success below 95%, or every breaker open or half-open
///   (only probes get through);
/// - degraded performance: success below the success SLO (99% without
///   one), the latency SLO missed, some breakers open or half-open while
///   others serve (requests fail over), or degraded by the SLO alert;
/// - operational otherwise (no traffic counts as operational).
pub fn health(s: &Signals) -> Health {
    let ratio = s.success_ratio.unwrap_or(1.0);
    let tripped = s.open + s.half_open;
    if (s.breakers > 0 && s.open == s.breakers) || ratio < MAJOR_BELOW {
        return Health::MajorOutage;
    }
    if ratio < PARTIAL_BELOW || (s.breakers > 0 && tripped == s.breakers) {
        return Health::PartialOutage;
    }
    let objective = s.success_objective.unwrap_or(DEGRADED_BELOW);
    if ratio < objective || s.latency_missed || tripped > 0 || s.degraded_by_slo {
        return Health::DegradedPerformance;
    }
    Health::Operational
}

/// The state of one uptime bar: success ratio only (`None`: no requests).
pub fn bucket_health(success_ratio: Option<f64>, success_objective: Option<f64>) -> Health {
    health(&Signals {
        success_ratio,
        success_objective,
        ..Signals::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(r: f64) -> Signals {
        Signals {
            success_ratio: Some(r),
            ..Signals::default()
        }
    }

    #[test]
    fn success_ratio_boundaries() {
        assert_eq!(
            health(&Signals::default()),
            Health::Operational,
            "no traffic"
        );
        assert_eq!(health(&ratio(1.0)), Health::Operational);
        assert_eq!(health(&ratio(0.99)), Health::Operational);
        assert_eq!(health(&ratio(0.9899)), Health::DegradedPerformance);
        assert_eq!(health(&ratio(0.95)), Health::DegradedPerformance);
        assert_eq!(health(&ratio(0.9499)), Health::PartialOutage);
        assert_eq!(
            health(&ratio(0.71)),
            Health::PartialOutage,
            "the issue's primary"
        );
        assert_eq!(health(&ratio(0.50)), Health::PartialOutage);
        assert_eq!(health(&ratio(0.4999)), Health::MajorOutage);
        assert_eq!(health(&ratio(0.0)), Health::MajorOutage);
    }

    #[test]
    fn the_success_objective_moves_the_degraded_line_only() {
        let slo = |r, o| Signals {
            success_objective: Some(o),
            ..ratio(r)
        };
        assert_eq!(health(&slo(0.999, 0.999)), Health::Operational);
        assert_eq!(health(&slo(0.998, 0.999)), Health::DegradedPerformance);
        assert_eq!(
            health(&slo(0.97, 0.96)),
            Health::Operational,
            "looser than 99%"
        );
        assert_eq!(health(&slo(0.955, 0.96)), Health::DegradedPerformance);
        assert_eq!(
            health(&slo(0.94, 0.90)),
            Health::PartialOutage,
            "95% still holds"
        );
    }

    #[test]
    fn latency_and_slo_degradation_are_degraded_performance() {
        let missed = Signals {
            latency_missed: true,
            ..ratio(1.0)
        };
        assert_eq!(health(&missed), Health::DegradedPerformance);
        let by_slo = Signals {
            degraded_by_slo: true,
            ..Signals::default()
        };
        assert_eq!(health(&by_slo), Health::DegradedPerformance);
        let missed_and_failing = Signals {
            latency_missed: true,
            ..ratio(0.9)
        };
        assert_eq!(health(&missed_and_failing), Health::PartialOutage);
    }

    #[test]
    fn breaker_boundaries() {
        let breakers = |n, open, half_open| Signals {
            breakers: n,
            open,
            half_open,
            ..ratio(1.0)
        };
        assert_eq!(health(&breakers(1, 0, 0)), Health::Operational);
        assert_eq!(
            health(&breakers(1, 1, 0)),
            Health::MajorOutage,
            "a target open"
        );
        assert_eq!(health(&breakers(1, 0, 1)), Health::PartialOutage, "probing");
        assert_eq!(
            health(&breakers(2, 1, 0)),
            Health::DegradedPerformance,
            "failing over"
        );
        assert_eq!(health(&breakers(2, 1, 1)), Health::PartialOutage);
        assert_eq!(health(&breakers(2, 2, 0)), Health::MajorOutage);
        assert_eq!(health(&breakers(3, 1, 1)), Health::DegradedPerformance);
    }

    #[test]
    fn a_closed_breaker_does_not_hide_a_failing_target() {
        let primary = Signals {
            breakers: 1,
            ..ratio(0.71)
        };
        assert_eq!(health(&primary), Health::PartialOutage);
    }

    #[test]
    fn worst_is_max() {
        let all = [
            Health::DegradedPerformance,
            Health::MajorOutage,
            Health::Operational,
        ];
        assert_eq!(all.iter().max(), Some(&Health::MajorOutage));
    }
}
