//! An upstream attempt's span, recorded when OpenTelemetry export is on:
//! its span id (sent upstream in `traceparent`), start and end, and how it
//! ended. Recorded into the request's `telemetry::otlp::RequestTrace` when
//! dropped, so an attempt cancelled (a hedge that lost, a client gone)
//! is recorded too.

use super::{Served, Step};
use crate::api::Endpoint;
use crate::resilience::FailureCause;
use crate::telemetry::otlp::{AttemptKind, AttemptSpan, RequestTrace};
use http::HeaderValue;
use tokio::time::Instant;

pub(super) struct AttemptRecorder<'t> {
    trace: &'t RequestTrace,
    span: AttemptSpan,
    /// The `traceparent` the upstream receives.
    pub header: HeaderValue,
}

impl<'t> AttemptRecorder<'t> {
    pub fn start(
        trace: &'t RequestTrace,
        target: usize,
        kind: AttemptKind,
        endpoint: Endpoint,
    ) -> Self {
        let (span_id, header) = trace.new_attempt();
        let now = Instant::now();
        AttemptRecorder {
            trace,
            span: AttemptSpan {
                span_id,
                target,
                kind,
                endpoint,
                start: now,
                end: now,
                status: None,
                error: Some("cancelled"),
                streamed: false,
                response_model: None,
            },
            header,
        }
    }

    /// How the attempt ended.
    pub fn finish(&mut self, step: &Step) {
        let span = &mut self.span;
        (span.status, span.error) = match step {
            Step::Served(Served::Complete { status, body, .. }) => {
                if status.is_success() {
                    span.response_model = response_model(body);
                }
                (
                    Some(status.as_u16()),
                    (!status.is_success()).then_some("client_error"),
                )
            }
            Step::Served(Served::Binary { .. } | Served::Stream(_)) => {
                span.streamed = true;
                (Some(200), None)
            }
            Step::Failed(failure) => {
                let status = match &failure.cause {
                    FailureCause::Status(s) => Some(s.as_u16()),
                    _ => None,
                };
                (status, Some(failure.class.as_str()))
            }
            Step::DeadlineHit => (None, Some("deadline_exceeded")),
        };
    }
}

/// The `model` a complete JSON answer names (the upstream's own name for
/// what served, e.g. a dated snapshot), for `gen_ai.response.model`.
fn response_model(body: &[u8]) -> Option<Box<str>> {
    #[derive(serde::Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        model: Option<std::borrow::Cow<'a, str>>,
    }
    let peek: Peek<'_> = serde_json::from_slice(body).ok()?;
    peek.model
        .filter(|m| !m.is_empty() && m.len() <= 256)
        .map(|m| m.into())
}

impl Drop for AttemptRecorder<'_> {
    fn drop(&mut self) {
        let mut span = self.span.clone();
        span.end = Instant::now();
        self.trace.record(span);
    }
}
