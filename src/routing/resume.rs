//! The legs of a stream after its head went out: the target serving it
//! hears the verdict on its part (its breaker sees a break as the failure
//! it is, whatever happens next), and when a leg breaks after content the
//! route's remaining targets are asked, in plan order, to continue the
//! answer (`resume = "continue"`). A continuation is one attempt per
//! target, charged to the retry budget like a failover and bounded by the
//! request's total deadline; a target that refuses the continuation
//! request (a 4xx: prefill not supported) is a capability miss and the next
//! one is asked.

use super::attempt::{Served, StreamStart};
use super::table::{Budget, LiveRoute};
use super::{one, record, AttemptRecord, ContextFallback, Dispatch, EngineCounters, Step};
use super::{RequestForms, TargetRequest, UpstreamBodies};
use crate::api::{Endpoint, InspectedBody};
use crate::config::Target;
use crate::providers::{self, StreamTranslator, Unsupported};
use crate::resilience::{AttemptFailure, FailureCause, FailureClass, TimeoutKind};
use crate::streaming::relay::{CutReason, StreamEnd};
use bytes::Bytes;
use http::HeaderValue;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

/// How the SSE comment marking a seam begins (clients ignore comments;
/// the Responses protocol reads it to know a native upstream no longer
/// holds the whole answer).
pub const SEAM_COMMENT: &str = ": switchyard continued from ";

/// What a continuation needs from the request that outlives the dispatch:
/// the client's chat body and where and how it was routed.
pub struct Resumer {
    pub global_budget: Arc<Budget>,
    pub counters: Arc<dyn AsRef<EngineCounters> + Send + Sync>,
    pub request_id: HeaderValue,
    pub caller_region: Option<String>,
    pub allow_degraded: bool,
    pub max_response_body: usize,
    pub deadline: Instant,
    /// The chat body as the first target's form was built from.
    pub base: InspectedBody,
    /// Targets this request already used (failed, or served and broke).
    pub tried: Vec<usize>,
    /// The request's trace, when OpenTelemetry export is on.
    pub trace: Option<Arc<crate::telemetry::otlp::RequestTrace>>,
}

/// The stream's upstream legs, as the relay drives them.
pub struct Legs {
    live: Arc<LiveRoute>,
    serving: usize,
    guard: Option<super::health::AttemptGuard>,
    resumer: Option<Resumer>,
    /// The continuation being relayed (from, to), for its metric.
    continued: Option<(usize, usize)>,
    /// Continuation attempts made.
    pub attempts: u32,
    /// The breaks and the failed continuation attempts, for the request log.
    pub failures: Vec<AttemptRecord>,
}

/// A continuation that produced its first content.
pub struct NextLeg {
    pub start: StreamStart,
    /// An SSE comment marking the seam (clients ignore comments).
    pub comment: Bytes,
}

impl Legs {
    pub fn new(
        live: Arc<LiveRoute>,
        serving: usize,
        guard: Option<super::health::AttemptGuard>,
        resumer: Option<Resumer>,
    ) -> Self {
        Legs {
            live,
            serving,
            guard,
            resumer,
            continued: None,
            attempts: 0,
            failures: Vec::new(),
        }
    }

    /// Whether a break may be continued at all (the route allows it and the
    /// request has a chat body to continue from: chat, `/v1/messages`,
    /// `/v1/responses`).
    pub fn can_continue(&self) -> bool {
        self.resumer.is_some()
    }

    /// The index of the target serving the current leg.
    pub fn serving(&self) -> usize {
        self.serving
    }

    /// Whether any leg was continued on another target.
    pub fn was_continued(&self) -> bool {
        self.failures
            .iter()
            .any(|f| matches!(f.cause, FailureCause::CutMidStream(_)))
    }

    /// The current leg broke for `reason` after the client received `sent`
    /// (about `sent_tokens` tokens): its breaker hears the failure, and the
    /// next eligible target is asked to continue. `None` when none can.
    pub async fn broke(
        &mut self,
        reason: CutReason,
        sent: &str,
        sent_tokens: u64,
    ) -> Option<NextLeg> {
        let now = Instant::now();
        if let Some(guard) = self.guard.take() {
            guard.failure(now, FailureClass::Transient, None);
        }
        self.close_continued("cut");
        let route = &self.live.route;
        let from = self.serving;
        self.failures.push(AttemptRecord {
            target: route.targets[from].label().to_owned(),
            class: FailureClass::Transient,
            cause: FailureCause::CutMidStream(reason.as_str()),
            retry_after: None,
        });
        let resumer = self.resumer.as_mut()?;
        resumer.tried.push(from);
        let forms = ContinuationForms {
            base: &resumer.base,
            partial: sent,
            sent_tokens,
        };
        let counters: &EngineCounters = (*resumer.counters).as_ref();
        let dispatch = Dispatch {
            live: &self.live,
            global_budget: &resumer.global_budget,
            request: &forms,
            request_id: &resumer.request_id,
            caller_region: resumer.caller_region.as_deref(),
            max_response_body: resumer.max_response_body,
            counters,
            allow_degraded: resumer.allow_degraded,
            // A continuation keeps the answer's own plan rules; the SLO
            // switch decides only where a request starts.
            degraded_first: false,
            trace: resumer.trace.as_deref(),
        };
        let found = dispatch
            .continuation(&resumer.tried, resumer.deadline)
            .await;
        self.attempts += found.attempts;
        self.failures.extend(found.failures);
        let from_label = route.targets[from].label();
        let Some((to, mut start)) = found.served else {
            counters
                .continuations_unavailable
                .fetch_add(1, Ordering::Relaxed);
            self.live
                .metrics
                .resumed
                .inc(from_label, "none", "unavailable");
            tracing::info!(
                route = %route.name,
                from = from_label,
                reason = reason.as_str(),
                "no target could continue a cut stream"
            );
            return None;
        };
        counters.continuations.fetch_add(1, Ordering::Relaxed);
        let to_label = route.targets[to].label();
        tracing::info!(
            route = %route.name,
            from = from_label,
            to = to_label,
            reason = reason.as_str(),
            "continued a cut stream on another target"
        );
        let comment = Bytes::from(format!("{SEAM_COMMENT}{from_label} to {to_label}\n\n"));
        self.guard = start.guard.take();
        self.serving = to;
        self.continued = Some((from, to));
        Some(NextLeg { start, comment })
    }

    /// The stream ended: the current leg's verdict for its breaker.
    pub fn ended(&mut self, how: StreamEnd) {
        if let Some(guard) = self.guard.take() {
            match how {
                StreamEnd::Completed => guard.success(Instant::now()),
                // The upstream broke the stream: a failure for its breaker.
                StreamEnd::Cut(reason) if reason != CutReason::Deadline => {
                    guard.failure(Instant::now(), FailureClass::Transient, None)
                }
                // Out of time or the client left: no verdict on the upstream.
                _ => drop(guard),
            }
        }
        self.close_continued(match how {
            StreamEnd::Completed => "completed",
            StreamEnd::Cut(_) => "cut",
            StreamEnd::ClientGone => "client_gone",
        });
    }

    fn close_continued(&mut self, outcome: &'static str) {
        if let Some((from, to)) = self.continued.take() {
            let targets = &self.live.route.targets;
            self.live
                .metrics
                .resumed
                .inc(targets[from].label(), targets[to].label(), outcome);
            if let (Some(resumer), "completed") = (&self.resumer, outcome) {
                let counters: &EngineCounters = (*resumer.counters).as_ref();
                counters
                    .continuations_completed
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What the continuation attempts came to.
#[derive(Default)]
pub(super) struct Continued {
    pub served: Option<(usize, StreamStart)>,
    pub attempts: u32,
    pub failures: Vec<AttemptRecord>,
}

impl Dispatch<'_, '_> {
    /// One attempt at each target of the plan not in `tried`, with the
    /// failover rules of health (breaker open, cooling) and eligibility,
    /// until one streams its first content.
    pub(super) async fn continuation(&self, tried: &[usize], deadline: Instant) -> Continued {
        let route = &*self.live.route;
        let client = providers::client::for_connect_timeout(route.timeouts.connect);
        let ctx = self.attempt_context(&client);
        let mut bodies = UpstreamBodies::default();
        let context = ContextFallback::default();
        let mut out = Continued::default();
        for index in self.live.plan(self.caller_region, Instant::now()) {
            if tried.contains(&index) || !self.eligible(index, &context) {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let target = &route.targets[index];
            let health = &self.live.health[index];
            if health.cooled_until(now).is_some() {
                continue;
            }
            let Ok(body) = bodies.get(target, self.request) else {
                continue;
            };
            // No tier fallback for a continuation: its tier's first-byte
            // limit would only turn a slow answer into a failure.
            let body = super::TargetRequest {
                tier_first_byte: None,
                ..body
            };
            let Ok(guard) = health.admit(now) else {
                continue;
            };
            // Charged like a failover and, like one, never refused: it
            // does not load the target that broke.
            let _ = self.withdraw();
            out.attempts += 1;
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let kind = crate::telemetry::otlp::AttemptKind::Continuation;
            match one(&ctx, self.live, index, guard, body, deadline, kind).await {
                Step::Served(Served::Stream(start)) => {
                    out.served = Some((index, *start));
                    return out;
                }
                // A refused continuation (prefill not supported): a
                // capability miss, not the client's error.
                Step::Served(Served::Complete { status, .. }) => out.failures.push(AttemptRecord {
                    target: target.label().to_owned(),
                    class: FailureClass::ClientError,
                    cause: FailureCause::Status(status),
                    retry_after: None,
                }),
                Step::Served(Served::Binary { .. }) => out.failures.push(record(
                    target,
                    &AttemptFailure::bad_response(FailureCause::Unreadable),
                )),
                Step::Failed(failure) => out.failures.push(record(target, &failure)),
                Step::DeadlineHit => {
                    let failure =
                        AttemptFailure::transient(FailureCause::Timeout(TimeoutKind::Total));
                    out.failures.push(record(target, &failure));
                    break;
                }
            }
        }
        out
    }
}

/// The continuation request in each target's form: the client's chat body
/// with the partial answer, as the target's continuation mode takes it.
struct ContinuationForms<'a> {
    base: &'a InspectedBody,
    partial: &'a str,
    sent_tokens: u64,
}

impl RequestForms for ContinuationForms<'_> {
    fn stream(&self) -> bool {
        true
    }

    fn for_target(&self, target: &Target) -> Result<TargetRequest, Unsupported> {
        let kind = target.provider.kind;
        let unsupported = |reason: String| Unsupported {
            provider: kind.as_str(),
            field: "messages".to_owned(),
            reason,
        };
        let body = providers::continuation::request(
            self.base,
            self.partial,
            self.sent_tokens,
            target.continuation,
            kind,
        )
        .ok_or_else(|| unsupported("cannot continue an answer (continuation = \"none\")".into()))?
        .map_err(|e| unsupported(e.to_string()))?;
        let translated =
            providers::adapter(kind).translate_request(target, Endpoint::ChatCompletions, &body)?;
        Ok(TargetRequest {
            endpoint: Endpoint::ChatCompletions,
            body: translated,
            content_type: super::forms::JSON,
            tier_first_byte: None,
        })
    }

    fn stream_translator(&self, target: &Target) -> Option<Box<dyn StreamTranslator>> {
        providers::adapter(target.provider.kind).stream_translator(target, self.base)
    }
}
