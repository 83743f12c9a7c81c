//! One attempt at one target: send, wait for the head (and, for streams, the
//! first content event), classify what came back. Every timeout that applies
//! to a single attempt is enforced here.

use super::forms::{RequestForms, TargetRequest};
use super::health::AttemptGuard;
use crate::api::Endpoint;
use crate::config::{Target, Timeouts};
use crate::providers::{self, HttpClient};
use crate::resilience::{
    retry_after, AttemptFailure, FailureCause, FailureClass, TimeoutKind, TransportKind,
};
use crate::streaming::events::{Dialect, UpstreamEvents};
use crate::streaming::sse::EventKind;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::SystemTime;
use tokio::time::{timeout_at, Instant};

/// Error bodies are read (so the connection returns to the pool) up to this
/// size and then discarded; only the status is kept.
const MAX_ERROR_BODY: usize = 64 << 10;

/// Preamble events (role chunks, pings) held before the first content event;
/// an upstream that sends more than this without content is misbehaving.
const MAX_HELD_BEFORE_CONTENT: usize = 1 << 20;

/// A response worth giving to the client.
pub enum Served {
    /// A whole body: a non-stream success, or a client error passed through.
    Complete {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    /// A stream that has produced its first content event.
    Stream(Box<StreamStart>),
    /// A successful binary answer (speech audio), passed through as it
    /// arrives. Held until its first bytes, like a stream until its first
    /// content: an upstream that dies before sending any audio fails over.
    Binary {
        content_type: Option<HeaderValue>,
        /// The first data frame, already read.
        first: Bytes,
        body: Incoming,
    },
}

pub struct StreamStart {
    pub content_type: HeaderValue,
    /// Events up to and including the first content event.
    pub held: Vec<Bytes>,
    /// Whether a finish reason was already seen among `held`.
    pub finished: bool,
    pub framer: UpstreamEvents,
    pub body: Incoming,
    /// The target's breaker hears how the stream ends (see `AttemptGuard::first_content`).
    pub guard: Option<AttemptGuard>,
}

pub struct AttemptContext<'a> {
    pub client: &'a HttpClient,
    pub request: &'a dyn RequestForms,
    pub request_id: &'a HeaderValue,
    pub timeouts: &'a Timeouts,
    pub max_response_body: usize,
    /// The longest wait an upstream hint may impose (the breaker's `open_max`).
    pub retry_after_cap: std::time::Duration,
    /// The request's trace (its `tracestate` goes upstream with each
    /// attempt's `traceparent`).
    pub trace: Option<&'a crate::telemetry::otlp::RequestTrace>,
}

/// `upstream` is the request in the target's format (see
/// [`RequestForms::for_target`]). A body at a tier with a `tier_first_byte`
/// shorter than the route's `first_byte` is held to it, and running out of
/// it is a tier refusal ([`FailureCause::TierFirstByte`]), not a timeout.
pub async fn attempt(
    ctx: &AttemptContext<'_>,
    target: &Target,
    upstream: TargetRequest,
    traceparent: Option<HeaderValue>,
) -> Result<Served, AttemptFailure> {
    let tier_limit = upstream
        .tier_first_byte
        .filter(|limit| *limit < ctx.timeouts.first_byte);
    let first_byte = tier_limit.unwrap_or(ctx.timeouts.first_byte);
    let due = Instant::now() + first_byte;
    let result = attempt_within(ctx, target, upstream, due, traceparent).await;
    match result {
        Err(failure)
            if tier_limit.is_some()
                && failure.cause == FailureCause::Timeout(TimeoutKind::FirstByte) =>
        {
            Err(AttemptFailure::transient(FailureCause::TierFirstByte))
        }
        other => other,
    }
}

/// W3C trace context for the upstream: this attempt's span as the parent,
/// the client's `tracestate` passed on.
fn add_trace_context<B>(
    request: &mut http::Request<B>,
    traceparent: HeaderValue,
    trace: Option<&crate::telemetry::otlp::RequestTrace>,
) {
    use crate::telemetry::traceparent::{TRACEPARENT, TRACESTATE};
    let headers = request.headers_mut();
    headers.insert(TRACEPARENT, traceparent);
    if let Some(state) = trace.and_then(|t| t.tracestate.clone()) {
        headers.insert(TRACESTATE, state);
    }
}

/// [`attempt`], with the head (and a stream's first content) due by
/// `first_byte_deadline`.
async fn attempt_within(
    ctx: &AttemptContext<'_>,
    target: &Target,
    upstream: TargetRequest,
    first_byte_deadline: Instant,
    traceparent: Option<HeaderValue>,
) -> Result<Served, AttemptFailure> {
    let adapter = providers::adapter(target.provider.kind);
    let stream = ctx.request.stream();
    let endpoint = upstream.endpoint;
    let Some(mut request) = providers::build_request(
        target,
        endpoint,
        stream,
        upstream.body,
        upstream.content_type,
        ctx.request_id,
    ) else {
        // `translate_request` refuses endpoints a provider lacks first.
        return Err(AttemptFailure::transient(FailureCause::Unreadable));
    };
    if let Some(traceparent) = traceparent {
        add_trace_context(&mut request, traceparent, ctx.trace);
    }
    let response = match timeout_at(first_byte_deadline, ctx.client.request(request)).await {
        Err(_) => {
            return Err(AttemptFailure::transient(FailureCause::Timeout(
                TimeoutKind::FirstByte,
            )))
        }
        Ok(Err(e)) => {
            return Err(AttemptFailure::transport(TransportKind::of(
                &e,
                e.is_connect(),
            )));
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    if let Some(status_class) = FailureClass::from_status(status) {
        let retry_after = if status_class == FailureClass::RateLimited {
            retry_after::parse_rate_limited(
                response.headers(),
                SystemTime::now(),
                ctx.retry_after_cap,
            )
        } else {
            retry_after::parse(response.headers(), SystemTime::now(), ctx.retry_after_cap)
        };
        let limit = if status_class == FailureClass::ClientError {
            ctx.max_response_body
        } else {
            MAX_ERROR_BODY
        };
        let Ok(body) = collect(response.into_body(), limit, ctx.timeouts).await else {
            return Err(AttemptFailure::status(status, status_class, retry_after));
        };
        let class = adapter
            .classify_error(status, &body)
            .unwrap_or(status_class);
        // Rebuilt from the upstream's fields, never verbatim, and without
        // the key this attempt sent, however the upstream quoted it.
        let rebuilt = |body: Bytes| match &target.key {
            Some(key) => providers::redact::known(
                adapter.error_to_openai(status, body),
                key.value.secret_bytes(),
            ),
            None => adapter.error_to_openai(status, body),
        };
        return match class {
            FailureClass::ClientError => Ok(Served::Complete {
                status,
                content_type: Some(HeaderValue::from_static("application/json")),
                body: rebuilt(body),
            }),
            FailureClass::ContextLength => Err(AttemptFailure {
                rejection: Some(rebuilt(body)),
                ..AttemptFailure::status(status, class, None)
            }),
            _ if adapter.speaks_openai() && providers::openai::is_tier_refusal(status, &body) => {
                Err(AttemptFailure {
                    cause: FailureCause::TierUnavailable,
                    ..AttemptFailure::status(status, class, retry_after)
                })
            }
            _ => Err(AttemptFailure::status(status, class, retry_after)),
        };
    }
    let is_sse = content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_sse {
        let content_type = content_type.unwrap_or(HeaderValue::from_static("text/event-stream"));
        let dialect = if endpoint == Endpoint::Responses {
            Dialect::Responses
        } else {
            Dialect::Chat
        };
        let events = UpstreamEvents::new(ctx.request.stream_translator(target), dialect);
        return first_content(
            response.into_body(),
            content_type,
            events,
            first_byte_deadline,
        )
        .await;
    }
    if endpoint.streams_binary() {
        let mut body = response.into_body();
        let first = first_bytes(&mut body, first_byte_deadline).await?;
        return Ok(Served::Binary {
            content_type,
            first,
            body,
        });
    }
    let body = collect(response.into_body(), ctx.max_response_body, ctx.timeouts)
        .await
        .map_err(|failure| match failure.cause {
            // The upstream did the work; asking again would pay for it twice.
            FailureCause::ResponseTooLarge => AttemptFailure::bad_response(failure.cause),
            _ => failure,
        })?;
    if adapter.speaks_openai() {
        return Ok(Served::Complete {
            status,
            content_type,
            body,
        });
    }
    match adapter.translate_response(target, body) {
        Some(body) => Ok(Served::Complete {
            status,
            content_type: Some(HeaderValue::from_static("application/json")),
            body,
        }),
        None => Err(AttemptFailure::bad_response(FailureCause::Unreadable)),
    }
}

/// The first non-empty data frame of a binary body, by `deadline`; a body
/// that fails or ends before it is a transient failure (nothing has reached
/// the client yet).
async fn first_bytes(body: &mut Incoming, deadline: Instant) -> Result<Bytes, AttemptFailure> {
    loop {
        let frame = match timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(AttemptFailure::transient(FailureCause::Timeout(
                    TimeoutKind::FirstByte,
                )))
            }
            Ok(None) => return Err(AttemptFailure::transient(FailureCause::EmptyStream)),
            Ok(Some(Err(e))) => return Err(body_error(&e)),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if !data.is_empty() {
                return Ok(data);
            }
        }
    }
}

/// Reads a whole body, bounded in size and in silence between frames.
async fn collect(
    mut body: Incoming,
    limit: usize,
    timeouts: &Timeouts,
) -> Result<Bytes, AttemptFailure> {
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout(timeouts.idle, body.frame()).await {
            Err(_) => {
                return Err(AttemptFailure::transient(FailureCause::Timeout(
                    TimeoutKind::Idle,
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(body_error(&e)),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let so_far = first.as_ref().map_or(0, Bytes::len) + rest.len();
        if so_far + data.len() > limit {
            return Err(AttemptFailure::transient(FailureCause::ResponseTooLarge));
        }
        // Most bodies arrive in one frame: keep it as is, copy only if more come.
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(f) = first.take() {
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// Holds a stream back until its first content event, so that anything that
/// goes wrong before then can still fail over invisibly.
async fn first_content(
    mut body: Incoming,
    content_type: HeaderValue,
    mut framer: UpstreamEvents,
    deadline: Instant,
) -> Result<Served, AttemptFailure> {
    let mut held = Vec::new();
    let mut held_bytes = 0usize;
    loop {
        while let Some(event) = framer.next_event() {
            match framer.classify(&event) {
                EventKind::Content { finished } => {
                    held.push(event);
                    return Ok(Served::Stream(Box::new(StreamStart {
                        content_type,
                        held,
                        finished,
                        framer,
                        body,
                        guard: None,
                    })));
                }
                EventKind::Error { kind, code, .. } => {
                    return Err(AttemptFailure {
                        class: FailureClass::from_error_object(&kind, &code),
                        cause: FailureCause::StreamError,
                        retry_after: None,
                        rejection: None,
                    });
                }
                EventKind::Done => {
                    return Err(AttemptFailure::transient(FailureCause::EmptyStream))
                }
                EventKind::Other => {
                    held_bytes += event.len();
                    if held_bytes > MAX_HELD_BEFORE_CONTENT {
                        return Err(AttemptFailure::transient(FailureCause::PreambleTooLarge));
                    }
                    held.push(event);
                }
            }
        }
        if framer.overflowed() {
            return Err(AttemptFailure::transient(FailureCause::EventTooLarge));
        }
        match timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(AttemptFailure::transient(FailureCause::Timeout(
                    TimeoutKind::FirstByte,
                )))
            }
            Ok(None) => return Err(AttemptFailure::transient(FailureCause::EmptyStream)),
            Ok(Some(Err(e))) => return Err(body_error(&e)),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    framer.push(data);
                }
            }
        }
    }
}

/// A body that broke off while being read.
fn body_error(e: &hyper::Error) -> AttemptFailure {
    AttemptFailure::transport(TransportKind::of(e, false))
}
