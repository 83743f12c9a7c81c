//! The encode and finish phases for a served request: the protocol turns
//! the upstream's answer into its own format, the gateway adds its response
//! headers, and the request context is finished when hyper is done with the
//! body (after its last byte for complete bodies, at the end of a stream).

use super::body::LoggedBody;
use super::ctx::{Ending, RequestCtx, X_REQUEST_ID};
use crate::api::{find_usage, Usage};
use crate::config::Target;
use crate::routing::resume::{Legs, Resumer};
use crate::routing::table::LiveRoute;
use crate::routing::{AttemptRecord, Outcome, Served, StreamStart};
use crate::server::inbound::InboundRequest;
use crate::streaming::relay::{Relay, StreamEnd, Tally};
use axum::body::Body;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use std::sync::atomic::Ordering;

const X_TARGET: &str = "x-switchyard-target";
const X_ATTEMPTS: &str = "x-switchyard-attempts";
const X_DEGRADED: &str = "x-switchyard-degraded";
const X_DEPRECATION: &str = "x-switchyard-deprecation";
const X_SERVICE_TIER: &str = "x-switchyard-service-tier";

/// What a stream continuation needs beyond the request context.
pub struct ResumeInputs {
    pub placement: super::Placement,
    pub global_budget: std::sync::Arc<crate::routing::table::Budget>,
    pub max_response_body: usize,
    /// Set when the stream ends complete from its first target (not cut,
    /// not continued, the client still there): the cache keeps only those.
    pub clean_end: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

pub fn encode(
    mut ctx: RequestCtx,
    request: impl InboundRequest,
    outcome: Outcome<'_>,
    resume: ResumeInputs,
) -> Response {
    let target = outcome.target;
    ctx.served = Some((outcome.target_index, target.label.clone()));
    ctx.served_at_fallback_tier =
        outcome.service_tier.is_some() && outcome.service_tier == target.tier_fallback.as_deref();
    ctx.attempts = outcome.attempts;
    ctx.note_failures(&outcome.failures);
    let mut headers = gateway_headers(&ctx, target, outcome.attempts);
    // Config validation keeps tiers printable ASCII, so this always fits.
    if let Some(tier) = outcome
        .service_tier
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        headers.insert(X_SERVICE_TIER, tier);
    }
    let mut response = match outcome.served {
        Served::Complete {
            status,
            content_type,
            body,
        } => complete(ctx, request, target, status, content_type, body),
        Served::Stream(start) => {
            let served = (outcome.target_index, *start);
            stream(ctx, request, target, served, outcome.failures, resume)
        }
        Served::Binary {
            content_type,
            first,
            body,
        } => binary(ctx, content_type, first, body),
    };
    response.headers_mut().extend(headers);
    response
}

/// `x-request-id`, `x-switchyard-*` and the key's `x-ratelimit-*` headers.
fn gateway_headers(ctx: &RequestCtx, target: &Target, attempts: u32) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    headers.insert(X_TARGET, target.label.clone());
    headers.insert(X_ATTEMPTS, HeaderValue::from(attempts));
    if target.degraded {
        headers.insert(X_DEGRADED, HeaderValue::from_static("true"));
    }
    let warning = ctx.live.as_ref().map(|l| l.route.deprecation_warning);
    let deprecation = target
        .deprecated_after
        .as_ref()
        .zip(warning)
        .filter(|(d, window)| d.warning(std::time::SystemTime::now(), *window))
        .and_then(|(d, _)| {
            HeaderValue::try_from(format!("{} is deprecated after {}", target.label(), d.date)).ok()
        });
    if let Some(deprecation) = deprecation {
        headers.insert(X_DEPRECATION, deprecation);
    }
    for (name, value) in ctx.admission.iter().flat_map(|a| a.headers()) {
        headers.insert(name, value);
    }
    headers
}

fn complete(
    mut ctx: RequestCtx,
    mut request: impl InboundRequest,
    target: &Target,
    status: http::StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
) -> Response {
    if let Some((_, response)) = ctx.content.as_mut() {
        *response = Some(String::from_utf8_lossy(&body).into_owned());
    }
    let (outcome, usage) = if status.is_success() {
        ("ok", find_usage(&body))
    } else {
        ("upstream_client_error", None)
    };
    let (status, body) = request.encode_complete(target, status, body);
    // Finished when hyper drops the body, i.e. after the last byte was
    // written: formatting the log line stays off the latency path.
    let ending = Ending {
        status: status.as_u16(),
        outcome,
        usage,
        estimated: false,
    };
    let body = LoggedBody {
        inner: http_body_util::Full::new(body),
        on_end: Some(Box::new(move || ctx.finish(ending))),
    };
    let mut response = Response::new(Body::new(body));
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}

fn stream(
    mut ctx: RequestCtx,
    request: impl InboundRequest,
    target: &Target,
    (target_index, mut start): (usize, StreamStart),
    failures: Vec<AttemptRecord>,
    resume: ResumeInputs,
) -> Response {
    let ttft = ctx.started.elapsed();
    ctx.first_token = Some(ttft);
    let Some(live) = ctx.live.clone() else {
        // Unreachable in practice: a stream is always served by a route.
        return Response::new(Body::empty());
    };
    live.metrics.targets[target_index].first_token(ttft);
    let content_type = start.content_type.clone();
    let timeouts = live.route.timeouts;
    let deadline = ctx.started + timeouts.total;
    let resumer = live
        .route
        .resume
        .then(|| request.continuation_base())
        .flatten()
        .map(|base| Resumer {
            global_budget: resume.global_budget,
            counters: ctx.state.clone(),
            request_id: ctx.request_id.clone(),
            caller_region: resume.placement.caller_region,
            allow_degraded: resume.placement.allow_degraded,
            max_response_body: resume.max_response_body,
            deadline,
            base,
            tried: tried(&live, &failures),
            trace: ctx.trace.clone(),
        });
    let legs = Legs::new(live, target_index, start.guard.take(), resumer);
    let clean_end = resume.clean_end;
    let on_end = Box::new(move |how: StreamEnd, tally: Tally, mut legs: Legs| {
        legs.ended(how);
        let continued = legs.was_continued();
        if let Some(flag) = &clean_end {
            let clean = matches!(how, StreamEnd::Completed) && !continued;
            flag.store(clean, Ordering::Release);
        }
        if continued {
            note_continuation(&mut ctx, failures, &legs);
        }
        count_stream_end(&ctx, how);
        let (usage, estimated) = billed_usage(&ctx, tally);
        ctx.finish(Ending {
            status: 200,
            outcome: match how {
                StreamEnd::Completed if continued => "continued",
                _ => how.as_str(),
            },
            usage: Some(usage),
            estimated,
        });
    });
    let relay = Relay::new(
        start,
        legs,
        timeouts.idle,
        deadline,
        request.strip_stream_usage(),
        on_end,
    );
    // A client that reads nothing for `idle` is as gone as an upstream
    // that sends nothing for it.
    let (events, abandoned) = relay.into_driven_stream(timeouts.idle);
    let body = request.encode_stream(target, events.boxed());
    let body = crate::streaming::relay::coalesced(body.into_data_stream());
    let body = axum::body::Body::from_stream(abandoned.fail_at_end(body));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Targets the dispatch already used (a failed attempt), which a
/// continuation does not go back to.
fn tried(live: &LiveRoute, failures: &[AttemptRecord]) -> Vec<usize> {
    let targets = &live.route.targets;
    (0..targets.len())
        .filter(|&i| failures.iter().any(|f| f.target == targets[i].label()))
        .collect()
}

/// A continued stream's row names every leg: the dispatch's failed
/// attempts, each break and failed continuation attempt, and the target
/// that finished the answer.
fn note_continuation(ctx: &mut RequestCtx, mut failures: Vec<AttemptRecord>, legs: &Legs) {
    failures.extend(legs.failures.iter().cloned());
    ctx.attempts += legs.attempts;
    ctx.note_failures(&failures);
    if let Some(live) = &ctx.live {
        let serving = legs.serving();
        if ctx.served.as_ref().map(|(i, _)| *i) != Some(serving) {
            // A continuation is sent at the continuing target's own tier.
            ctx.served_at_fallback_tier = false;
        }
        ctx.served = Some((serving, live.route.targets[serving].label.clone()));
    }
}

/// The usage a stream is billed for: what the upstream reported, else the
/// gateway's estimate (a cut, a client gone, an upstream that reports none).
/// A continued stream is billed for every upstream call: the legs that
/// broke (estimated unless they reported usage) and the one that finished.
fn billed_usage(ctx: &RequestCtx, tally: Tally) -> (Usage, bool) {
    let (mut usage, mut estimated) = match tally.usage {
        Some(usage) => (usage, false),
        None => (ctx.estimated_usage(tally.content_events), true),
    };
    let earlier = tally.earlier;
    usage.prompt_tokens += earlier.reported.prompt_tokens;
    usage.completion_tokens += earlier.reported.completion_tokens;
    if earlier.unreported > 0 {
        let guessed = ctx.estimated_usage(earlier.unreported_events);
        usage.prompt_tokens += guessed.prompt_tokens * earlier.unreported;
        usage.completion_tokens += guessed.completion_tokens;
        estimated = true;
    }
    (usage, estimated)
}

fn count_stream_end(ctx: &RequestCtx, how: StreamEnd) {
    let counters = &ctx.state.counters;
    let counter = match how {
        StreamEnd::Completed => &counters.streams_completed,
        StreamEnd::Cut(_) => &counters.streams_cut,
        StreamEnd::ClientGone => &counters.client_disconnects,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if let (StreamEnd::Cut(_), Some(live)) = (how, &ctx.live) {
        live.metrics.streams_cut.inc();
    }
}

/// A binary answer (speech) streamed through as it arrives. An upstream
/// that breaks mid-body aborts the client's body too, so a cut can never
/// look like a complete file.
fn binary(
    ctx: RequestCtx,
    content_type: Option<HeaderValue>,
    first: Bytes,
    body: hyper::body::Incoming,
) -> Response {
    let ending = Ending {
        status: 200,
        outcome: "ok",
        usage: None,
        estimated: false,
    };
    let first = futures_util::stream::once(std::future::ready(Ok::<_, axum::Error>(first)));
    let rest = body.into_data_stream().map(|r| r.map_err(axum::Error::new));
    let body = LoggedBody {
        inner: Body::from_stream(first.chain(rest)),
        on_end: Some(Box::new(move || ctx.finish(ending))),
    };
    let mut response = Response::new(Body::new(body));
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}
