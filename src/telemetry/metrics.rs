//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text
//! format. Labels are bounded: route, target (provider/model), region,
//! status class, error class, key name ("anonymous" until virtual keys
//! exist); never a secret, a request id or a model name a client typed.
//!
//! The request path touches only pre-resolved handles (`RouteMetrics`,
//! built with the route table), so recording is atomic adds and one
//! uncontended histogram lock: no label hashing, no allocation.

use crate::api::Usage;
use crate::config::Price;
use crate::resilience::breaker::State;
use crate::resilience::FailureClass;
use crate::routing::health::HealthRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub key: String,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    pub route: String,
    pub stream: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub route: String,
    pub target: String,
    pub region: String,
    pub outcome: &'static str,
    pub error_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorKindLabels {
    pub route: String,
    pub target: String,
    /// `FailureCause::kind`: a fixed, small set.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierFallbackLabels {
    pub route: String,
    pub target: String,
    /// `refused` (the tier's 429) or `first_byte` (`tier_first_byte` ran out).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteTargetLabels {
    pub route: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub route: String,
    pub target: String,
    pub key: String,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CostLabels {
    pub route: String,
    pub target: String,
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

fn latency_buckets() -> Histogram {
    // 1 ms .. ~65 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 17,
    ))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResumedLabels {
    pub route: String,
    /// The target whose stream broke.
    pub from: String,
    /// The target asked to continue, `none` when no target could.
    pub to: String,
    /// `completed`, `cut` (the continuation broke too), `client_gone`,
    /// `unavailable` (no target could continue).
    pub outcome: &'static str,
}

/// Continued streams of one route. Continuations are rare, so labels are
/// resolved when one happens (a hash lookup), not pre-built for every
/// pair of targets.
#[derive(Clone)]
pub struct ResumedStreams {
    route: String,
    family: Family<ResumedLabels, Counter>,
}

impl ResumedStreams {
    pub fn inc(&self, from: &str, to: &str, outcome: &'static str) {
        self.family
            .get_or_create(&ResumedLabels {
                route: self.route.clone(),
                from: from.to_owned(),
                to: to.to_owned(),
                outcome,
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub route: String,
    /// `hit`, `miss` or `bypass`.
    pub result: &'static str,
}

/// Response cache lookups of one route, resolved when counted (only
/// cached routes have them).
#[derive(Clone)]
pub struct CacheResults {
    route: String,
    family: Family<CacheLabels, Counter>,
}

impl CacheResults {
    pub fn inc(&self, result: &'static str) {
        self.family
            .get_or_create(&CacheLabels {
                route: self.route.clone(),
                result,
            })
            .inc();
    }
}

/// The response cache's size, kept current by the cache itself.
#[derive(Clone, Default)]
pub struct CacheGauges {
    pub bytes: Gauge,
    pub entries: Gauge,
    /// Entries dropped to make room (not expired ones).
    pub evictions: Counter,
}

/// Every metric family the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<DurationLabels>,
    attempts: Family<AttemptLabels, Counter>,
    upstream_errors: Family<ErrorKindLabels, Counter>,
    upstream_duration: HistogramFamily<RouteTargetLabels>,
    first_token: HistogramFamily<RouteTargetLabels>,
    retries: Family<RouteLabels, Counter>,
    failovers: Family<RouteLabels, Counter>,
    hedges: Family<RouteLabels, Counter>,
    budget_refusals: Family<RouteLabels, Counter>,
    breaker_skips: Family<RouteLabels, Counter>,
    cooling_skips: Family<RouteLabels, Counter>,
    streams_cut: Family<RouteLabels, Counter>,
    idempotent_replays: Family<RouteLabels, Counter>,
    cache_requests: Family<CacheLabels, Counter>,
    cache: CacheGauges,
    streams_resumed: Family<ResumedLabels, Counter>,
    tier_fallbacks: Family<TierFallbackLabels, Counter>,
    slo_degraded: Family<RouteLabels, Gauge>,
    slo_degrade_switches: Family<RouteLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<CostLabels, Counter<f64, AtomicU64>>,
    breaker_state: Family<TargetLabels, Gauge>,
    breaker_transitions: Family<TargetLabels, Counter>,
    target_inflight: Family<TargetLabels, Gauge>,
    inflight: Gauge,
    log_lines_dropped: Counter,
    otlp_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let m = Metrics {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_buckets),
            attempts: Family::default(),
            upstream_errors: Family::default(),
            upstream_duration: Family::new_with_constructor(latency_buckets),
            first_token: Family::new_with_constructor(latency_buckets),
            retries: Family::default(),
            failovers: Family::default(),
            hedges: Family::default(),
            budget_refusals: Family::default(),
            breaker_skips: Family::default(),
            cooling_skips: Family::default(),
            streams_cut: Family::default(),
            idempotent_replays: Family::default(),
            cache_requests: Family::default(),
            cache: CacheGauges::default(),
            streams_resumed: Family::default(),
            tier_fallbacks: Family::default(),
            slo_degraded: Family::default(),
            slo_degrade_switches: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            breaker_state: Family::default(),
            breaker_transitions: Family::default(),
            target_inflight: Family::default(),
            inflight: Gauge::default(),
            log_lines_dropped: Counter::default(),
            otlp_dropped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Client requests by route, key and response status class",
            m.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Client request duration, to the last byte of the response",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        registry.register(
            "upstream_attempts",
            "Upstream attempts by target, outcome and error class",
            m.attempts.clone(),
        );
        registry.register_with_unit(
            "upstream_duration",
            "Upstream attempt duration, to the response head or first content event",
            Unit::Seconds,
            m.upstream_duration.clone(),
        );
        registry.register_with_unit(
            "time_to_first_token",
            "Streams: time from the client request to the first content event",
            Unit::Seconds,
            m.first_token.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream attempts by cause: status, dns, connect_refused, tls, reset, timeout_first_byte, ...",
            m.upstream_errors.clone(),
        );
        registry.register("retries", "Same-target retries", m.retries.clone());
        registry.register(
            "failovers",
            "Moves to the next target after a failure",
            m.failovers.clone(),
        );
        registry.register(
            "hedges",
            "Parallel attempts started because the first was slow",
            m.hedges.clone(),
        );
        registry.register(
            "budget_refusals",
            "Retries or hedges not made because the retry budget was spent",
            m.budget_refusals.clone(),
        );
        registry.register(
            "breaker_skips",
            "Targets skipped because their circuit breaker was open",
            m.breaker_skips.clone(),
        );
        registry.register(
            "cooling_skips",
            "Targets skipped because they were cooling after an upstream Retry-After",
            m.cooling_skips.clone(),
        );
        registry.register(
            "streams_cut",
            "Streams ended with an error event after content had been sent",
            m.streams_cut.clone(),
        );
        registry.register(
            "idempotent_replays",
            "Requests answered from an earlier request with the same Idempotency-Key, without an upstream call",
            m.idempotent_replays.clone(),
        );
        registry.register(
            "cache_requests",
            "Requests to routes with a response cache, by result: hit (answered from the cache), miss, bypass (not cacheable or the client opted out)",
            m.cache_requests.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes of answers held by the response cache (this replica's memory)",
            m.cache.bytes.clone(),
        );
        registry.register(
            "cache_entries",
            "Answers held by the response cache (this replica's memory)",
            m.cache.entries.clone(),
        );
        registry.register(
            "cache_evictions",
            "Cached answers evicted (least recently used first) to stay within cache.max_bytes",
            m.cache.evictions.clone(),
        );
        registry.register(
            "streams_resumed",
            "Streams cut after content that the gateway asked another target to continue, by outcome",
            m.streams_resumed.clone(),
        );
        registry.register(
            "tier_fallbacks",
            "Same-target retries at tier_fallback after the service tier refused (refused) or stayed silent past tier_first_byte (first_byte)",
            m.tier_fallbacks.clone(),
        );
        registry.register(
            "route_slo_degraded",
            "1 while the route's SLO alert (degrade_on) sends requests to its degraded targets first",
            m.slo_degraded.clone(),
        );
        registry.register(
            "route_slo_degrade_switches",
            "Times the route entered or left SLO-driven degradation",
            m.slo_degrade_switches.clone(),
        );
        registry.register(
            "tokens",
            "Tokens reported by upstreams for served requests (gen_ai.client.token.usage)",
            m.tokens.clone(),
        );
        registry.register(
            "cost_usd",
            "Cost of served requests in USD, from the price table",
            m.cost.clone(),
        );
        registry.register(
            "breaker_state",
            "Circuit breaker state per target: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        registry.register(
            "breaker_transitions",
            "Circuit breaker state changes per target",
            m.breaker_transitions.clone(),
        );
        registry.register(
            "target_inflight_requests",
            "Upstream requests in flight per target",
            m.target_inflight.clone(),
        );
        registry.register(
            "inflight_requests",
            "Client requests in flight",
            m.inflight.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr did not keep up",
            m.log_lines_dropped.clone(),
        );
        registry.register(
            "otlp_dropped",
            "Finished requests whose OpenTelemetry export was dropped: its queue was full",
            m.otlp_dropped.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Handles for one route, resolved once per route table.
    pub fn route(&self, route: &str, targets: &[(String, String)]) -> RouteMetrics {
        let r = || RouteLabels {
            route: route.to_owned(),
        };
        let per_target = targets
            .iter()
            .map(|(target, region)| {
                let attempt = |outcome: &'static str, error_class: &'static str| {
                    self.attempts
                        .get_or_create(&AttemptLabels {
                            route: route.to_owned(),
                            target: target.clone(),
                            region: region.clone(),
                            outcome,
                            error_class,
                        })
                        .clone()
                };
                let rt = RouteTargetLabels {
                    route: route.to_owned(),
                    target: target.clone(),
                };
                let tokens = |direction: &'static str| {
                    self.tokens
                        .get_or_create(&TokenLabels {
                            route: route.to_owned(),
                            target: target.clone(),
                            key: "anonymous".to_owned(),
                            direction,
                        })
                        .clone()
                };
                TargetMetrics {
                    input_tokens: tokens("input"),
                    output_tokens: tokens("output"),
                    cost: self
                        .cost
                        .get_or_create(&CostLabels {
                            route: route.to_owned(),
                            target: target.clone(),
                            key: "anonymous".to_owned(),
                        })
                        .clone(),
                    success: attempt("success", "none"),
                    failures: [
                        attempt("failure", FailureClass::Transient.as_str()),
                        attempt("failure", FailureClass::RateLimited.as_str()),
                        attempt("failure", FailureClass::UpstreamAuth.as_str()),
                        attempt("failure", FailureClass::ClientError.as_str()),
                        attempt("failure", FailureClass::ContextLength.as_str()),
                        attempt("failure", FailureClass::BadResponse.as_str()),
                    ],
                    cancelled: attempt("cancelled", "none"),
                    errors: self.upstream_errors.clone(),
                    tier_fallbacks: self.tier_fallbacks.clone(),
                    labels: rt.clone(),
                    duration: self.upstream_duration.get_or_create(&rt).clone(),
                    first_token: self.first_token.get_or_create(&rt).clone(),
                }
            })
            .collect();
        let status = |class: &'static str| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_owned(),
                    key: "anonymous".to_owned(),
                    status_class: class,
                })
                .clone()
        };
        let duration = |stream: &'static str| {
            self.request_duration
                .get_or_create(&DurationLabels {
                    route: route.to_owned(),
                    stream,
                })
                .clone()
        };
        RouteMetrics {
            by_status: [status("2xx"), status("4xx"), status("5xx")],
            duration: [duration("false"), duration("true")],
            retries: self.retries.get_or_create(&r()).clone(),
            failovers: self.failovers.get_or_create(&r()).clone(),
            hedges: self.hedges.get_or_create(&r()).clone(),
            budget_refusals: self.budget_refusals.get_or_create(&r()).clone(),
            breaker_skips: self.breaker_skips.get_or_create(&r()).clone(),
            cooling_skips: self.cooling_skips.get_or_create(&r()).clone(),
            streams_cut: self.streams_cut.get_or_create(&r()).clone(),
            idempotent_replays: self.idempotent_replays.get_or_create(&r()).clone(),
            cache: CacheResults {
                route: route.to_owned(),
                family: self.cache_requests.clone(),
            },
            slo_degraded: self.slo_degraded.get_or_create(&r()).clone(),
            slo_degrade_switches: self.slo_degrade_switches.get_or_create(&r()).clone(),
            resumed: ResumedStreams {
                route: route.to_owned(),
                family: self.streams_resumed.clone(),
            },
            targets: per_target,
        }
    }

    /// The response cache's gauges, for the cache to keep current.
    pub fn cache_gauges(&self) -> CacheGauges {
        self.cache.clone()
    }

    /// Requests that never reached a route (bad input, unknown model).
    pub fn unrouted(&self, status: u16, key: &str) {
        self.keyed_request("-", key, status);
    }

    /// A request made with a virtual key, counted under the key's name. A
    /// label lookup per request; anonymous requests use the route's
    /// pre-resolved handles instead.
    pub fn keyed_request(&self, route: &str, key: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                key: key.to_owned(),
                status_class: status_class(status),
            })
            .inc();
    }

    /// Spend of a request made with a virtual key.
    pub fn keyed_cost(&self, route: &str, target: &str, key: &str, cost_usd: f64) {
        self.cost
            .get_or_create(&CostLabels {
                route: route.to_owned(),
                target: target.to_owned(),
                key: key.to_owned(),
            })
            .inc_by(cost_usd);
    }

    pub fn inflight(&self) -> &Gauge {
        &self.inflight
    }

    /// The exposition text, with breaker gauges refreshed from `health`.
    pub fn render(&self, health: &HealthRegistry) -> String {
        let now = Instant::now();
        for h in health.all() {
            let labels = TargetLabels {
                target: h.key.clone(),
            };
            let snap = h.snapshot(now);
            let state = match snap.state {
                State::Closed => 0,
                State::HalfOpen => 1,
                State::Open => 2,
            };
            self.breaker_state.get_or_create(&labels).set(state);
            self.target_inflight
                .get_or_create(&labels)
                .set(i64::from(h.inflight()));
            let transitions = self.breaker_transitions.get_or_create(&labels);
            let seen = transitions.get();
            if snap.transitions > seen {
                transitions.inc_by(snap.transitions - seen);
            }
        }
        let dropped = crate::telemetry::sink::lines_dropped();
        let seen = self.log_lines_dropped.get();
        if dropped > seen {
            self.log_lines_dropped.inc_by(dropped - seen);
        }
        let dropped = crate::telemetry::otlp::requests_dropped();
        let seen = self.otlp_dropped.get();
        if dropped > seen {
            self.otlp_dropped.inc_by(dropped - seen);
        }
        let mut out = String::with_capacity(16 << 10);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The Prometheus text format (0.0.4) from an OpenMetrics exposition, for
/// scrapers and tools (promtool) that do not negotiate OpenMetrics: counter
/// families are named with their `_total` suffix, and the OpenMetrics-only
/// `# UNIT` and `# EOF` lines are dropped.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|r| r.strip_suffix(" counter"))
        {
            counters.insert(name);
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Pre-resolved handles of one target within one route.
#[derive(Clone)]
pub struct TargetMetrics {
    input_tokens: Counter,
    output_tokens: Counter,
    cost: Counter<f64, AtomicU64>,
    success: Counter,
    /// Indexed like `FailureClass` order: transient, rate limited, auth,
    /// client, context, bad response.
    failures: [Counter; 6],
    cancelled: Counter,
    /// Failures by cause kind, created on first use (failures are rare).
    errors: Family<ErrorKindLabels, Counter>,
    /// Tier fallbacks by reason, created on first use.
    tier_fallbacks: Family<TierFallbackLabels, Counter>,
    labels: RouteTargetLabels,
    duration: Histogram,
    first_token: Histogram,
}

impl TargetMetrics {
    pub fn attempt_succeeded(&self, took: Duration) {
        self.success.inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts a failure's cause kind (see `FailureCause::kind`).
    pub fn failure_cause(&self, kind: &'static str) {
        self.errors
            .get_or_create(&ErrorKindLabels {
                route: self.labels.route.clone(),
                target: self.labels.target.clone(),
                kind,
            })
            .inc();
    }

    /// The same target is asked again at its `tier_fallback`, for `reason`
    /// (`refused` or `first_byte`).
    pub fn tier_fallback(&self, reason: &'static str) {
        self.tier_fallbacks
            .get_or_create(&TierFallbackLabels {
                route: self.labels.route.clone(),
                target: self.labels.target.clone(),
                reason,
            })
            .inc();
    }

    pub fn attempt_failed(&self, class: FailureClass, took: Duration) {
        let i = match class {
            FailureClass::Transient => 0,
            FailureClass::RateLimited => 1,
            FailureClass::UpstreamAuth => 2,
            FailureClass::ClientError => 3,
            FailureClass::ContextLength => 4,
            FailureClass::BadResponse => 5,
            // The gateway's own limit, not the target's: counted by cause only.
            FailureClass::LocalOverload => return,
        };
        self.failures[i].inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Usage of a served request, and its cost when the price is known
    /// (counted here for anonymous requests; see `Metrics::keyed_cost`).
    pub fn usage(&self, usage: Usage, price: Option<Price>, anonymous: bool) {
        self.input_tokens.inc_by(usage.prompt_tokens);
        self.output_tokens.inc_by(usage.completion_tokens);
        if let (Some(price), true) = (price, anonymous) {
            self.cost.inc_by(price.cost(usage));
        }
    }

    pub fn attempt_cancelled(&self) {
        self.cancelled.inc();
    }

    pub fn first_token(&self, since_request: Duration) {
        self.first_token.observe(since_request.as_secs_f64());
    }
}

/// Pre-resolved handles of one route.
#[derive(Clone)]
pub struct RouteMetrics {
    by_status: [Counter; 3],
    /// [non-stream, stream].
    duration: [Histogram; 2],
    pub retries: Counter,
    pub failovers: Counter,
    pub hedges: Counter,
    pub budget_refusals: Counter,
    pub breaker_skips: Counter,
    pub cooling_skips: Counter,
    pub streams_cut: Counter,
    pub idempotent_replays: Counter,
    pub cache: CacheResults,
    /// 1 while SLO-driven degradation is on (set by the SLO evaluation loop).
    pub slo_degraded: Gauge,
    pub slo_degrade_switches: Counter,
    pub resumed: ResumedStreams,
    /// Parallel to the route's targets.
    pub targets: Vec<TargetMetrics>,
}

impl RouteMetrics {
    /// An anonymous request's end (`auth = "none"`).
    pub fn request_done(&self, status: u16, stream: bool, took: Duration) {
        let i = match status {
            200..=299 => 0,
            400..=499 => 1,
            _ => 2,
        };
        self.by_status[i].inc();
        self.request_duration(stream, took);
    }

    pub fn request_duration(&self, stream: bool, took: Duration) {
        self.duration[usize::from(stream)].observe(took.as_secs_f64());
    }
}
