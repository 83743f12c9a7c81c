//! Routing and failover: for one client request, plan the order of the
//! route's targets (priority, region, load balancing, breaker state), retry
//! transient failures on the same target with backoff (or the upstream's
//! `Retry-After`) within the retry budget, hedge a slow first attempt, fail
//! over on the rest, and stop at the total deadline. It decides *which*
//! attempt comes next using `resilience`'s rules; it never builds HTTP
//! responses for the client (the server does).

mod attempt;
pub mod degrade;
pub mod forms;
pub mod health;
pub mod resume;
pub mod table;
pub mod tier;
mod traced;

pub use attempt::{Served, StreamStart};
pub use forms::{OpenAiForm, RequestForms, TargetRequest};

use crate::api::error_body;
use crate::config::{Hedge, OnTimeout, Target};
use crate::error::GatewayError;
use crate::providers::Unsupported;
use crate::resilience::{AttemptFailure, FailureCause, FailureClass, TimeoutKind};
use crate::telemetry::metrics::TargetMetrics;
use crate::telemetry::otlp::{AttemptKind, RequestTrace};
use crate::telemetry::stats::Sample;
use attempt::{attempt, AttemptContext};
use bytes::Bytes;
use health::AttemptGuard;
use http::{HeaderValue, StatusCode};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use table::{Budget, LiveRoute};
use tokio::time::{sleep_until, timeout_at, Instant};
use tower::retry::budget::Budget as _;

/// A failed attempt, as reported to the client and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub target: String,
    pub class: FailureClass,
    pub cause: FailureCause,
    pub retry_after: Option<Duration>,
}

/// The response that will be served, and how it was obtained.
pub struct Outcome<'r> {
    pub served: Served,
    pub target: &'r Target,
    /// Position of `target` in the route's targets.
    pub target_index: usize,
    /// Upstream attempts made, the successful one included.
    pub attempts: u32,
    pub failures: Vec<AttemptRecord>,
    /// The service tier the gateway set on the request that served (the
    /// target's `service_tier`, or its `tier_fallback`); `None` when the
    /// target sets none.
    pub service_tier: Option<&'r str>,
}

/// Gateway-wide counters of the failover engine.
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub attempts: AtomicU64,
    /// Attempts after the first on the same target.
    pub retries: AtomicU64,
    /// Moves from one target to the next after a failure.
    pub failovers: AtomicU64,
    /// Parallel attempts started because the first one was slow.
    pub hedges: AtomicU64,
    /// Same-target retries or hedges not made because the budget was empty.
    pub budget_refusals: AtomicU64,
    /// Targets skipped because their breaker was open.
    pub breaker_skips: AtomicU64,
    /// Targets skipped because they were cooling after a `Retry-After`.
    pub cooling_skips: AtomicU64,
    /// Requests that found every target's breaker open.
    pub all_open: AtomicU64,
    /// Streams broken after content that another target went on with.
    pub continuations: AtomicU64,
    /// Continued streams that then completed.
    pub continuations_completed: AtomicU64,
    /// Streams broken after content that no target could go on with.
    pub continuations_unavailable: AtomicU64,
}

pub struct Dispatch<'r, 'a> {
    pub live: &'r LiveRoute,
    pub global_budget: &'a Budget,
    pub request: &'a dyn RequestForms,
    pub request_id: &'a HeaderValue,
    pub caller_region: Option<&'a str>,
    pub max_response_body: usize,
    pub counters: &'a EngineCounters,
    /// Whether targets marked `tier = "degraded"` may serve this request.
    pub allow_degraded: bool,
    /// The route's SLO is burning (`degrade_on`): degraded targets are
    /// planned ahead of the primary ones.
    pub degraded_first: bool,
    /// The request's trace, when OpenTelemetry export is on: every attempt
    /// is recorded in it and sends its `traceparent` upstream.
    pub trace: Option<&'a RequestTrace>,
}

#[derive(Clone, Copy)]
enum Event {
    Retry,
    Failover,
    Hedge,
    BudgetRefusal,
    BreakerSkip,
    CoolingSkip,
}

enum Step {
    Served(Served),
    Failed(AttemptFailure),
    DeadlineHit,
}

/// A target passed over for this request, and until when.
/// The total deadline ran out during an attempt at `target`: the 504
/// lists it with the attempts before.
fn deadline_hit(target: &Target, mut failures: Vec<AttemptRecord>) -> GatewayError {
    let cut = AttemptFailure::transient(FailureCause::Timeout(TimeoutKind::Total));
    failures.push(record(target, &cut));
    GatewayError::DeadlineExceeded { attempts: failures }
}

/// How long to wait before asking the same target again after `failure`
/// on try `try_index`, or `None` to move to the next target: a failure that
/// does not retry the same target, a silent upstream under the default
/// `on_timeout = "next_target"`, the last try, a hedge's other target, or
/// a `Retry-After` longer than `max_retry_after` (fail over now).
fn same_target_retry(
    policy: &crate::config::RetryPolicy,
    failure: &AttemptFailure,
    try_index: u32,
    same_target: bool,
) -> Option<Duration> {
    let timed_out = failure.cause.is_silence();
    if !same_target
        || !failure.class.retries_same_target()
        || (timed_out && policy.on_timeout == OnTimeout::NextTarget)
        || try_index + 1 == policy.max_attempts_per_target
    {
        return None;
    }
    match failure.retry_after {
        Some(wait) if wait <= policy.max_retry_after => Some(wait),
        Some(_) => None,
        None => Some(policy.backoff.delay(try_index, &mut rand::rng())),
    }
}

struct Skipped {
    index: usize,
    until: Instant,
    /// Cooling after a `Retry-After` (else: breaker open).
    cooling: bool,
}

/// How many times a request whose targets are all open waits for a probe.
const MAX_OPEN_WAITS: u32 = 3;

impl<'r, 'a> Dispatch<'r, 'a> {
    /// What every attempt of this request shares, over `client`.
    pub(super) fn attempt_context<'c>(
        &'c self,
        client: &'c crate::providers::HttpClient,
    ) -> AttemptContext<'c>
    where
        'r: 'c,
        'a: 'c,
    {
        let route = &*self.live.route;
        AttemptContext {
            client,
            request: self.request,
            request_id: self.request_id,
            timeouts: &route.timeouts,
            max_response_body: self.max_response_body,
            retry_after_cap: route.breaker.open_max,
            trace: self.trace,
        }
    }
}

impl<'r> Dispatch<'r, '_> {
    /// This round's target order: the route's plan, with the degraded
    /// tier first while the route's SLO switch is on.
    fn plan(&self) -> Vec<usize> {
        let mut order = self.live.plan(self.caller_region, Instant::now());
        if self.degraded_first {
            degrade::put_degraded_first(&mut order, &self.live.route.targets);
        }
        order
    }

    pub async fn run(self, started: Instant) -> Result<Outcome<'r>, GatewayError> {
        let live = self.live;
        let route = &*live.route;
        let deadline = started + route.timeouts.total;
        let client = crate::providers::client::for_connect_timeout(route.timeouts.connect);
        let ctx = self.attempt_context(&client);
        live.budget.tokens.deposit();
        self.global_budget.tokens.deposit();
        let policy = &route.retry;
        let mut failures: Vec<AttemptRecord> = Vec::new();
        let mut attempts = 0u32;
        let mut open_waits = 0;
        let mut bodies = UpstreamBodies::default();
        let mut context = ContextFallback::default();
        loop {
            let mut order = self.plan();
            let mut skipped: Vec<Skipped> = Vec::new();
            let mut pos = 0;
            while pos < order.len() {
                let index = order[pos];
                pos += 1;
                let target = &route.targets[index];
                if !self.eligible(index, &context) {
                    continue;
                }
                let mut upstream_body = match bodies.get(target, self.request) {
                    Ok(body) => body,
                    Err(()) => continue,
                };
                let mut tier = target.service_tier.as_deref();
                // Set after a tier refusal: the next attempt is the same
                // target at its fallback tier, charged like a retry, not
                // counted against `max_attempts_per_target`.
                let mut tier_retry = false;
                let mut try_index = 0;
                while try_index < policy.max_attempts_per_target {
                    if Instant::now() >= deadline {
                        return Err(GatewayError::DeadlineExceeded { attempts: failures });
                    }
                    let Some(guard) = self.admit(index, try_index == 0, &mut skipped) else {
                        break;
                    };
                    // A tier retry is charged like a same-target retry.
                    let retry = std::mem::take(&mut tier_retry) || try_index > 0;
                    if !self.charge(retry, attempts > 0) {
                        break;
                    }
                    let kind = match (retry, attempts > 0) {
                        (true, _) => AttemptKind::Retry,
                        (false, true) => AttemptKind::Failover,
                        (false, false) => AttemptKind::First,
                    };
                    attempts += 1;
                    self.counters.attempts.fetch_add(1, Ordering::Relaxed);

                    let hedge = if attempts == 1 { route.hedge } else { None };
                    let (served_by, step) = match hedge {
                        Some(hedge) => {
                            self.hedged(
                                &ctx,
                                hedge,
                                (index, guard, upstream_body.clone()),
                                &order,
                                &mut pos,
                                &mut bodies,
                                &context,
                                deadline,
                                &mut attempts,
                                &mut failures,
                            )
                            .await
                        }
                        None => (
                            index,
                            one(
                                &ctx,
                                live,
                                index,
                                guard,
                                upstream_body.clone(),
                                deadline,
                                kind,
                            )
                            .await,
                        ),
                    };
                    // A hedge's target was asked at its own first tier.
                    let served_tier = if served_by == index {
                        tier
                    } else {
                        route.targets[served_by].service_tier.as_deref()
                    };
                    let failure = match step {
                        Step::Served(served) => {
                            return Ok(Outcome {
                                served,
                                target: &route.targets[served_by],
                                target_index: served_by,
                                attempts,
                                failures,
                                service_tier: served_tier,
                            })
                        }
                        Step::DeadlineHit => {
                            return Err(deadline_hit(&route.targets[served_by], failures))
                        }
                        Step::Failed(failure) => failure,
                    };
                    let failed_target = &route.targets[served_by];
                    failures.push(record(failed_target, &failure));
                    if served_by == index {
                        if let Some(fallback) = tier::fallback_after(target, tier, &failure) {
                            live.metrics.targets[index].tier_fallback(tier::reason(&failure));
                            tier = Some(fallback);
                            upstream_body = tier::with_tier(upstream_body, tier, None);
                            tier_retry = true;
                            continue;
                        }
                    }
                    match failure.class {
                        FailureClass::ClientError => {
                            // Only an in-stream error event gets here (client-error
                            // statuses are passed through as served responses).
                            return Ok(Outcome {
                                served: rejected_in_stream(),
                                target: failed_target,
                                target_index: served_by,
                                attempts,
                                failures,
                                service_tier: served_tier,
                            });
                        }
                        FailureClass::BadResponse => return Err(exhausted(failures)),
                        FailureClass::LocalOverload => {
                            return Err(GatewayError::LocalOverload { attempts: failures })
                        }
                        FailureClass::ContextLength => {
                            context.rejected(failed_target, failure.rejection.clone());
                            if !route.context_fallback
                                || !self.larger_remains(&order[pos..], &context)
                            {
                                return Ok(Outcome {
                                    served: context.into_served(),
                                    target: failed_target,
                                    target_index: served_by,
                                    attempts,
                                    failures,
                                    service_tier: served_tier,
                                });
                            }
                            break;
                        }
                        FailureClass::RateLimited if failed_target.pooled => {
                            // Cool this key and try its siblings before
                            // anyone else: another key of the same account
                            // is the cheapest way around a per-key limit.
                            let wait = failure.retry_after.unwrap_or(POOLED_KEY_COOLDOWN);
                            live.health[served_by].cool_until(Instant::now() + wait);
                            siblings_first(&route.targets, served_by, &mut order[pos..]);
                            break;
                        }
                        FailureClass::UpstreamAuth if failed_target.pooled => {
                            if let FailureCause::Status(status) = failure.cause {
                                if matches!(status.as_u16(), 401 | 403) {
                                    live.health[served_by].disable(status.as_str());
                                    siblings_first(&route.targets, served_by, &mut order[pos..]);
                                }
                            }
                            break;
                        }
                        _ => {}
                    }
                    if failure.cause.is_silence() && policy.on_timeout == OnTimeout::Stop {
                        return Err(exhausted(failures));
                    }
                    let same_target = served_by == index;
                    let Some(wait) = same_target_retry(policy, &failure, try_index, same_target)
                    else {
                        break;
                    };
                    if Instant::now() + wait >= deadline {
                        break;
                    }
                    tokio::time::sleep(wait).await;
                    try_index += 1;
                }
            }
            if attempts == 0 && !skipped.is_empty() {
                self.counters.all_open.fetch_add(1, Ordering::Relaxed);
                let wait = (open_waits < MAX_OPEN_WAITS)
                    .then(|| self.probe_worth_waiting_for(&skipped, deadline))
                    .flatten();
                if let Some(until) = wait {
                    open_waits += 1;
                    sleep_until(until).await;
                    continue;
                }
                return Err(self.all_open(&skipped, deadline));
            }
            break;
        }
        if attempts == 0 {
            if let Some(unsupported) = bodies.unsupported {
                return Err(GatewayError::Unsupported(unsupported));
            }
            return Err(GatewayError::NoEligibleTarget {
                route: route.name.clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(GatewayError::DeadlineExceeded { attempts: failures });
        }
        Err(exhausted(failures))
    }

    /// Whether the target at `index` may be tried for this request at all:
    /// not degraded against the client's wish, not past its deprecation
    /// date, and large enough after a context-length error.
    /// Charges an attempt to the retry budget: a retry of the same target
    /// only when the budget allows it (`false`: refused), a failover to
    /// another target always (it does not load the failing one); a first
    /// attempt costs nothing.
    fn charge(&self, retry: bool, failover: bool) -> bool {
        if retry {
            if !self.withdraw() {
                self.note(Event::BudgetRefusal);
                return false;
            }
            self.note(Event::Retry);
        } else if failover {
            let _ = self.withdraw();
            self.note(Event::Failover);
        }
        true
    }

    /// The attempt guard of target `index`, or `None` when it is cooling
    /// after a `Retry-After` or its breaker is open; on a first try, the
    /// skip is recorded so the request can wait for it or say when it opens.
    fn admit(
        &self,
        index: usize,
        first_try: bool,
        skipped: &mut Vec<Skipped>,
    ) -> Option<health::AttemptGuard> {
        let health = &self.live.health[index];
        // An upstream's Retry-After holds for every request: the target is
        // skipped (or waited for) while it cools.
        let (until, cooling) = match health.cooled_until(Instant::now()) {
            Some(until) => (until, true),
            None => match health.admit(Instant::now()) {
                Ok(guard) => return Some(guard),
                Err(until) => (until, false),
            },
        };
        if first_try && !health.is_disabled() {
            skipped.push(Skipped {
                index,
                until,
                cooling,
            });
            self.note(if cooling {
                Event::CoolingSkip
            } else {
                Event::BreakerSkip
            });
        }
        None
    }

    /// When every target was skipped: the first probe, or the first
    /// cooldown that ends within `max_retry_after`, if waiting for it still
    /// leaves time for the attempt.
    fn probe_worth_waiting_for(&self, skipped: &[Skipped], deadline: Instant) -> Option<Instant> {
        let route = &self.live.route;
        let now = Instant::now();
        skipped
            .iter()
            .filter(|s| !s.cooling || s.until <= now + route.retry.max_retry_after)
            .map(|s| s.until)
            .min()
            .filter(|&until| {
                until + route.timeouts.first_byte.min(Duration::from_secs(1)) < deadline
            })
    }

    /// The 503 for a request whose every target is open or cooling: which,
    /// and when the first of them may be tried.
    fn all_open(&self, skipped: &[Skipped], deadline: Instant) -> GatewayError {
        let now = Instant::now();
        let earliest = skipped.iter().map(|s| s.until).min().unwrap_or(deadline);
        let open = skipped
            .iter()
            .map(|s| {
                (
                    self.live.route.targets[s.index].label().to_owned(),
                    s.until.saturating_duration_since(now),
                )
            })
            .collect();
        GatewayError::AllTargetsOpen {
            open,
            retry_after: earliest.saturating_duration_since(now),
        }
    }

    fn eligible(&self, index: usize, context: &ContextFallback) -> bool {
        let target = &self.live.route.targets[index];
        if target.degraded && !self.allow_degraded {
            return false;
        }
        if let Some(deprecation) = &target.deprecated_after {
            if deprecation.expired(std::time::SystemTime::now()) {
                let health = &self.live.health[index];
                if !health.deprecation_logged.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        route = %self.live.route.name,
                        target = target.label(),
                        deprecated_after = %deprecation.date,
                        "skipping a target past its deprecation date; remove it from the config"
                    );
                }
                return false;
            }
        }
        context.admits(target)
    }

    /// After a context-length error: is any target left with a larger window?
    fn larger_remains(&self, rest: &[usize], context: &ContextFallback) -> bool {
        rest.iter().any(|&i| {
            let target = &self.live.route.targets[i];
            context.admits(target) && (!target.degraded || self.allow_degraded)
        })
    }

    /// Counts an engine event gateway-wide and in the route's metrics.
    fn note(&self, event: Event) {
        let (counter, metric) = match event {
            Event::Retry => (&self.counters.retries, &self.live.metrics.retries),
            Event::Failover => (&self.counters.failovers, &self.live.metrics.failovers),
            Event::Hedge => (&self.counters.hedges, &self.live.metrics.hedges),
            Event::BudgetRefusal => (
                &self.counters.budget_refusals,
                &self.live.metrics.budget_refusals,
            ),
            Event::BreakerSkip => (
                &self.counters.breaker_skips,
                &self.live.metrics.breaker_skips,
            ),
            Event::CoolingSkip => (
                &self.counters.cooling_skips,
                &self.live.metrics.cooling_skips,
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metric.inc();
    }

    /// Takes one retry token from the route's and the global budget.
    fn withdraw(&self) -> bool {
        self.live.budget.tokens.withdraw() && self.global_budget.tokens.withdraw()
    }

    /// The first attempt, with a hedge: if it has not produced its first
    /// content after the hedge delay, the next admissible target starts in
    /// parallel; the first to succeed wins and the other is dropped at once
    /// (its connection closed). Returns the index of the target whose
    /// result is returned.
    #[allow(
        clippy::too_many_arguments,
        reason = "both attempts' state, borrowed from the loop that owns it"
    )]
    async fn hedged(
        &self,
        ctx: &AttemptContext<'_>,
        hedge: Hedge,
        (index, guard, upstream_body): (usize, AttemptGuard, TargetRequest),
        order: &[usize],
        pos: &mut usize,
        bodies: &mut UpstreamBodies,
        context: &ContextFallback,
        deadline: Instant,
        attempts: &mut u32,
        failures: &mut Vec<AttemptRecord>,
    ) -> (usize, Step) {
        let route = &*self.live.route;
        let delay = match hedge {
            Hedge::After(d) => Some(d),
            Hedge::Percentile(q) => self.live.health[index].first_byte_quantile(q),
        };
        let mut first = pin!(one(
            ctx,
            self.live,
            index,
            guard,
            upstream_body,
            deadline,
            AttemptKind::First
        ));
        let Some(delay) = delay else {
            return (index, first.await);
        };
        tokio::select! {
            step = &mut first => return (index, step),
            () = tokio::time::sleep(delay) => {}
        }
        // Find the next target that can take the request and admits one.
        let mut second_index = None;
        while *pos < order.len() {
            let candidate = order[*pos];
            *pos += 1;
            if !self.eligible(candidate, context) {
                continue;
            }
            let target = &route.targets[candidate];
            let Ok(body) = bodies.get(target, self.request) else {
                continue;
            };
            // A hedge's target gets no tier fallback: its tier's
            // first-byte limit would only turn a slow answer into a failure.
            let body = TargetRequest {
                tier_first_byte: None,
                ..body
            };
            if let Ok(g) = self.live.health[candidate].admit(Instant::now()) {
                second_index = Some((candidate, g, body));
                break;
            }
        }
        let Some((second, second_guard, second_body)) = second_index else {
            return (index, first.await);
        };
        if !self.withdraw() {
            self.note(Event::BudgetRefusal);
            drop(second_guard);
            *pos -= 1;
            return (index, first.await);
        }
        self.note(Event::Hedge);
        self.counters.attempts.fetch_add(1, Ordering::Relaxed);
        *attempts += 1;
        let mut hedge_attempt = pin!(one(
            ctx,
            self.live,
            second,
            second_guard,
            second_body,
            deadline,
            AttemptKind::Hedge
        ));
        tokio::select! {
            step = &mut first => match step {
                Step::Failed(f) => {
                    failures.push(record(&route.targets[index], &f));
                    (second, hedge_attempt.await)
                }
                other => (index, other),
            },
            step = &mut hedge_attempt => match step {
                Step::Failed(f) => {
                    failures.push(record(&route.targets[second], &f));
                    (index, first.await)
                }
                other => (second, other),
            },
        }
    }
}

/// How long a pooled key rests after a 429 that gave no Retry-After.
const POOLED_KEY_COOLDOWN: Duration = Duration::from_secs(1);

/// Moves the other keys of `failed`'s pool to the front of `rest`, keeping
/// everyone's relative order.
fn siblings_first(targets: &[Target], failed: usize, rest: &mut [usize]) {
    let failed = &targets[failed];
    rest.sort_by_key(|&i| !targets[i].is_sibling_of(failed));
}

/// Request bodies in each target's format, translated once per configured
/// target (the keys of a pool share one), and the first reason a provider
/// gave for not being able to express the request.
#[derive(Default)]
struct UpstreamBodies {
    last: Option<(usize, TargetRequest)>,
    unsupported: Option<Unsupported>,
}

impl UpstreamBodies {
    fn get(&mut self, target: &Target, request: &dyn RequestForms) -> Result<TargetRequest, ()> {
        if let Some((group, ready)) = &self.last {
            if *group == target.group {
                return Ok(ready.clone());
            }
        }
        match request.for_target(target) {
            Ok(ready) => {
                let ready = tier::with_tier(
                    ready,
                    target.service_tier.as_deref(),
                    target.tier_first_byte,
                );
                self.last = Some((target.group, ready.clone()));
                Ok(ready)
            }
            Err(unsupported) => {
                tracing::debug!(target = target.label(), %unsupported, "target cannot serve the request");
                self.unsupported.get_or_insert(unsupported);
                Err(())
            }
        }
    }
}

/// After a target said the prompt exceeds its context window, only targets
/// with a larger configured `context_window` are worth trying.
#[derive(Default)]
struct ContextFallback {
    /// The largest window known to be too small (0 when the failing target
    /// has none configured).
    too_small: Option<u32>,
    /// The upstream's error, for the client if no larger target succeeds.
    rejection: Option<Bytes>,
}

impl ContextFallback {
    fn rejected(&mut self, target: &Target, rejection: Option<Bytes>) {
        let window = target.context_window.unwrap_or(0);
        self.too_small = Some(self.too_small.map_or(window, |w| w.max(window)));
        if rejection.is_some() {
            self.rejection = rejection;
        }
    }

    fn admits(&self, target: &Target) -> bool {
        match self.too_small {
            None => true,
            Some(too_small) => target.context_window.is_some_and(|w| w > too_small),
        }
    }

    fn into_served(self) -> Served {
        Served::Complete {
            status: StatusCode::BAD_REQUEST,
            content_type: Some(HeaderValue::from_static("application/json")),
            body: self.rejection.unwrap_or_else(|| {
                error_body(
                    "the prompt exceeds the context window of every target of this route",
                    "invalid_request_error",
                    Some("context_length_exceeded"),
                )
            }),
        }
    }
}

/// One attempt at one target, its outcome reported to the target's health
/// and metrics, and recorded in the request's trace when there is one.
/// Dropped unfinished (a hedge lost, the client left) it counts as
/// cancelled.
async fn one(
    ctx: &AttemptContext<'_>,
    live: &LiveRoute,
    index: usize,
    guard: AttemptGuard,
    upstream_body: TargetRequest,
    deadline: Instant,
    kind: AttemptKind,
) -> Step {
    let Some(trace) = ctx.trace else {
        return untraced(ctx, live, index, guard, upstream_body, deadline, None).await;
    };
    let mut span = traced::AttemptRecorder::start(trace, index, kind, upstream_body.endpoint);
    let header = Some(span.header.clone());
    let step = untraced(ctx, live, index, guard, upstream_body, deadline, header).await;
    span.finish(&step);
    step
}

/// [`one`], with `traceparent` sent upstream if given.
async fn untraced(
    ctx: &AttemptContext<'_>,
    live: &LiveRoute,
    index: usize,
    guard: AttemptGuard,
    upstream_body: TargetRequest,
    deadline: Instant,
    traceparent: Option<HeaderValue>,
) -> Step {
    let target = &live.route.targets[index];
    let metrics = &live.metrics.targets[index];
    let stats = &live.target_stats[index];
    struct Cancelled<'m>(Option<&'m TargetMetrics>);
    impl Drop for Cancelled<'_> {
        fn drop(&mut self) {
            if let Some(m) = self.0 {
                m.attempt_cancelled();
            }
        }
    }
    let mut cancelled = Cancelled(Some(metrics));
    let started = Instant::now();
    let step = match timeout_at(deadline, attempt(ctx, target, upstream_body, traceparent)).await {
        // The guard, dropped unreported, frees its probe slot.
        Err(_) => return Step::DeadlineHit,
        Ok(Ok(mut served)) => {
            let now = Instant::now();
            match &mut served {
                Served::Complete { status, .. } if !status.is_success() => {
                    guard.failure(now, FailureClass::ClientError, None);
                    metrics.attempt_failed(FailureClass::ClientError, now - started);
                }
                Served::Complete { .. } | Served::Binary { .. } => {
                    guard.success(now);
                    metrics.attempt_succeeded(now - started);
                    stats.record(now, attempt_sample(true, None, now - started));
                }
                Served::Stream(start) => {
                    // The breaker hears the outcome when the stream ends.
                    let mut guard = guard;
                    guard.first_content(now);
                    start.guard = Some(guard);
                    metrics.attempt_succeeded(now - started);
                    stats.record(now, attempt_sample(true, None, now - started));
                }
            }
            Step::Served(served)
        }
        Ok(Err(failure)) if failure.class == FailureClass::LocalOverload => {
            // Not the target's fault: the guard goes unreported and the
            // breaker, balancer and statistics never hear of it.
            metrics.failure_cause(failure.cause.kind());
            tracing::warn!(
                target = target.label(),
                cause = %failure.cause,
                "gateway out of local resources; raise the open-file limit or lower server.max_connections"
            );
            Step::Failed(failure)
        }
        Ok(Err(failure)) if failure.cause.is_tier_refusal() => {
            // A tier without capacity says nothing of the target at other
            // tiers: no breaker failure, no cooling (the guard goes
            // unreported), only the metrics hear of it.
            let now = Instant::now();
            metrics.attempt_failed(failure.class, now - started);
            metrics.failure_cause(failure.cause.kind());
            Step::Failed(failure)
        }
        Ok(Err(failure)) => {
            let now = Instant::now();
            if let Some(wait) = failure.retry_after {
                // The upstream asked the whole client to wait, not one request.
                live.health[index].cool_until(now + wait);
            }
            guard.failure(now, failure.class, failure.retry_after);
            metrics.attempt_failed(failure.class, now - started);
            metrics.failure_cause(failure.cause.kind());
            tracing::debug!(
                target = target.label(),
                class = failure.class.as_str(),
                cause = %failure.cause,
                "upstream attempt failed"
            );
            stats.record(
                now,
                attempt_sample(false, Some(failure.class.as_str()), now - started),
            );
            Step::Failed(failure)
        }
    };
    cancelled.0 = None;
    step
}

/// A target's statistics count its attempts: success, failure class and
/// time to the response head (or first content event, for streams).
fn attempt_sample(success: bool, error: Option<&'static str>, took: Duration) -> Sample {
    Sample {
        success,
        error,
        latency: took,
        first_token: None,
        cost_usd: 0.0,
    }
}

fn record(target: &Target, failure: &AttemptFailure) -> AttemptRecord {
    AttemptRecord {
        target: target.label().to_owned(),
        class: failure.class,
        cause: failure.cause.clone(),
        retry_after: failure.retry_after,
    }
}

fn rejected_in_stream() -> Served {
    Served::Complete {
        status: StatusCode::BAD_REQUEST,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: error_body(
            "the upstream rejected the request in its stream",
            "invalid_request_error",
            Some("upstream_rejected"),
        ),
    }
}

/// 504 when every failure was a timeout, 503 when every upstream said it was
/// overloaded or rate limited (with the shortest Retry-After seen), else 502.
fn exhausted(failures: Vec<AttemptRecord>) -> GatewayError {
    let all =
        |pred: &dyn Fn(&AttemptRecord) -> bool| !failures.is_empty() && failures.iter().all(pred);
    if all(&|f| matches!(f.cause, FailureCause::Timeout(_))) {
        return GatewayError::DeadlineExceeded { attempts: failures };
    }
    let unavailable = all(&|f| {
        f.class == FailureClass::RateLimited
            || f.cause == FailureCause::Status(StatusCode::SERVICE_UNAVAILABLE)
    });
    let status = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    let retry_after = if unavailable {
        failures
            .iter()
            .filter_map(|f| f.retry_after)
            .min()
            .or(Some(Duration::from_secs(1)))
    } else {
        None
    };
    GatewayError::Exhausted {
        attempts: failures,
        status,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryPolicy;
    use crate::resilience::backoff::Backoff;

    fn policy(on_timeout: OnTimeout) -> RetryPolicy {
        RetryPolicy {
            max_attempts_per_target: 2,
            backoff: Backoff::DEFAULT,
            max_retry_after: Duration::from_secs(5),
            on_timeout,
        }
    }

    fn failure(cause: FailureCause, retry_after: Option<Duration>) -> AttemptFailure {
        let mut failure = AttemptFailure::transient(cause);
        failure.retry_after = retry_after;
        failure
    }

    #[test]
    fn the_same_target_is_retried_only_when_the_policy_says_so() {
        let status = FailureCause::Status(http::StatusCode::BAD_GATEWAY);
        let next = policy(OnTimeout::NextTarget);
        let five_hundred = failure(status.clone(), None);
        assert!(same_target_retry(&next, &five_hundred, 0, true).is_some());
        assert_eq!(
            same_target_retry(&next, &five_hundred, 1, true),
            None,
            "last try"
        );
        assert_eq!(
            same_target_retry(&next, &five_hundred, 0, false),
            None,
            "a hedge's target"
        );
        let asks_1s = failure(status.clone(), Some(Duration::from_secs(1)));
        assert_eq!(
            same_target_retry(&next, &asks_1s, 0, true),
            Some(Duration::from_secs(1))
        );
        let asks_1m = failure(status, Some(Duration::from_secs(60)));
        assert_eq!(
            same_target_retry(&next, &asks_1m, 0, true),
            None,
            "fail over now"
        );
        let silent = failure(FailureCause::Timeout(TimeoutKind::FirstByte), None);
        assert_eq!(same_target_retry(&next, &silent, 0, true), None);
        assert!(same_target_retry(&policy(OnTimeout::SameTarget), &silent, 0, true).is_some());
    }
}
