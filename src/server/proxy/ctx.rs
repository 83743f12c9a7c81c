//! The per-request context: created when a request arrives, filled by the
//! phases as they learn things (the key, the route, the target that served),
//! and finished exactly once, for gateway errors and served responses alike:
//! the log line, the request log row, metrics, statistics, SLO counts, the
//! key's spend and the rate limiter's reconciliation all happen in
//! [`RequestCtx::finish`].

use crate::api::Usage;
use crate::routing::table::LiveRoute;
use crate::routing::AttemptRecord;
use crate::server::AppState;
use crate::store::RequestRow;
use crate::telemetry::otlp::{Finished, RequestTrace};
use crate::telemetry::request_log::now_ms;
use crate::telemetry::stats::Sample;
use crate::telemetry::{log_request, RequestLine};
use axum::http::{HeaderMap, HeaderValue};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub const X_REQUEST_ID: &str = "x-request-id";

/// How a request ended, for the log and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Ending {
    pub status: u16,
    /// Low-cardinality outcome (`ok`, an error code, `cut`, `client_gone`).
    pub outcome: &'static str,
    pub usage: Option<Usage>,
    /// `usage` is the gateway's estimate: the upstream reported none.
    pub estimated: bool,
}

pub struct RequestCtx {
    pub state: Arc<AppState>,
    pub request_id: HeaderValue,
    pub started: Instant,
    _inflight: Inflight,
    /// The virtual key (`None` with `auth = "none"` or before authentication).
    pub key: Option<Arc<crate::keys::KeyInfo>>,
    /// `None` until a route is resolved.
    pub live: Option<Arc<LiveRoute>>,
    pub stream: bool,
    /// Index and label of the target that served, if one did.
    pub served: Option<(usize, HeaderValue)>,
    /// The served target answered at its `tier_fallback` (priced at its
    /// `fallback_price`).
    pub served_at_fallback_tier: bool,
    /// The route's SLO planned this request degraded-first (`degrade_on`).
    pub slo_degraded_first: bool,
    pub first_token: Option<Duration>,
    pub attempts: u32,
    /// The failed attempts as JSON, when the request log is on.
    pub failures: Option<String>,
    /// Request and response bodies, for routes with `log_content`.
    pub content: Option<(String, Option<String>)>,
    /// The client body's size, for the token estimate of unreported usage.
    pub request_bytes: usize,
    /// The rate limiter's grant, released when this is dropped.
    pub admission: Option<crate::limits::Admission>,
    /// This request's trace, when OpenTelemetry export is on.
    pub trace: Option<Arc<RequestTrace>>,
}

impl RequestCtx {
    pub fn start(state: Arc<AppState>, headers: &HeaderMap) -> Self {
        state
            .counters
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let trace = state
            .otlp
            .get()
            .map(|_| Arc::new(RequestTrace::start(headers, started)));
        RequestCtx {
            request_id: request_id(headers),
            started,
            trace,
            _inflight: Inflight::start(&state),
            state,
            key: None,
            live: None,
            stream: false,
            served: None,
            served_at_fallback_tier: false,
            slo_degraded_first: false,
            first_token: None,
            attempts: 0,
            failures: None,
            content: None,
            request_bytes: 0,
            admission: None,
        }
    }

    /// Records the failed attempts (for the request log, when it is on).
    pub fn note_failures(&mut self, failures: &[AttemptRecord]) {
        if self.state.request_log.get().is_some() {
            self.failures = Some(failures_json(failures));
        }
    }

    /// Usage for a stream whose upstream reported none: the prompt from the
    /// request's size (4 bytes a token, as admission estimates it) and one
    /// token per content event forwarded (upstreams send about one each).
    pub fn estimated_usage(&self, content_events: u64) -> Usage {
        Usage {
            prompt_tokens: self.request_bytes.div_ceil(4) as u64,
            completion_tokens: content_events,
        }
    }

    pub fn finish(mut self, ending: Ending) {
        let state = self.state.clone();
        let latency = self.started.elapsed();
        let now = Instant::now();
        state.counters.count_status(ending.status);
        let price = match (&self.live, &self.served) {
            (Some(live), Some((i, _))) if self.served_at_fallback_tier => {
                live.route.targets[*i].fallback_price
            }
            (Some(live), Some((i, _))) => live.route.targets[*i].price,
            _ => None,
        };
        let usage = ending.usage;
        let cost_usd = usage.zip(price).map(|(u, p)| p.cost(u));
        if let (Some(admission), Some(usage)) = (&self.admission, usage) {
            let tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
            admission.reconcile(u32::try_from(tokens).unwrap_or(u32::MAX));
        }
        let key_name = self.key.as_ref().map_or("anonymous", |k| k.name.as_str());
        if let (Some(key), Some(cost), Some(keys)) = (&self.key, cost_usd, state.keys.get()) {
            keys.record_spend(key, cost);
        }
        self.record_metrics(&state, ending, latency, now, price, cost_usd, key_name);
        let line = RequestLine {
            request_id: self.request_id.to_str().unwrap_or("-"),
            route: self.live.as_ref().map_or("-", |l| l.route.name.as_str()),
            target: self
                .served
                .as_ref()
                .and_then(|(_, t)| t.to_str().ok())
                .unwrap_or("-"),
            attempts: self.attempts,
            key: key_name,
            status: ending.status,
            stream: self.stream,
            outcome: ending.outcome,
            latency,
            usage,
            usage_estimated: ending.estimated,
            cost_usd,
            degraded: self.degraded(),
            trace_id: self.trace.as_ref().map(|t| t.trace_id_hex()),
        };
        log_request(&line);
        if let (Some(otlp), Some(trace)) = (state.otlp.get(), self.trace.take()) {
            otlp.submit(self.finished(trace, &line, ending.outcome, now));
        }
        if let Some(request_log) = state.request_log.get() {
            let failures = self.failures.clone().unwrap_or_else(|| "[]".to_owned());
            let mut row = request_row(&line, failures, self.first_token);
            if let Some((request, response)) = self.content {
                row.request_body = Some(request);
                row.response_body = response;
            }
            request_log.push(row);
        }
    }

    /// What the OpenTelemetry exporter builds the request's spans and
    /// metrics from.
    fn finished(
        &self,
        trace: Arc<RequestTrace>,
        line: &RequestLine<'_>,
        outcome: &'static str,
        ended: Instant,
    ) -> Finished {
        let failed = line.status >= 400 || outcome == "cut";
        Finished {
            trace,
            live: self.live.clone(),
            served: self.served.as_ref().map(|(i, _)| *i),
            request_id: line.request_id.to_owned(),
            status: line.status,
            error: failed.then_some(outcome),
            usage: line.usage,
            first_token: self.first_token,
            latency: line.latency,
            ended,
        }
    }

    /// How a degraded-tier target came to serve, if one did.
    fn degraded(&self) -> Option<&'static str> {
        let (live, (i, _)) = (self.live.as_ref()?, self.served.as_ref()?);
        if !live.route.targets.get(*i)?.degraded {
            return None;
        }
        Some(if self.slo_degraded_first {
            "slo"
        } else {
            "fallback"
        })
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the finished request's parts, each recorded once"
    )]
    fn record_metrics(
        &self,
        state: &AppState,
        ending: Ending,
        latency: Duration,
        now: Instant,
        price: Option<crate::config::Price>,
        cost_usd: Option<f64>,
        key_name: &str,
    ) {
        let status = ending.status;
        // A cut stream failed the client; a client error did not fail the gateway.
        let failed = status >= 500 || ending.outcome == "cut";
        let Some(live) = &self.live else {
            state.metrics.unrouted(status, key_name);
            return;
        };
        match &self.key {
            None => live.metrics.request_done(status, self.stream, latency),
            Some(key) => {
                live.metrics.request_duration(self.stream, latency);
                state
                    .metrics
                    .keyed_request(&live.route.name, &key.name, status);
            }
        }
        if let (Some(usage), Some((i, _))) = (ending.usage, &self.served) {
            live.metrics.targets[*i].usage(usage, price, self.key.is_none());
            if let (Some(key), Some(cost)) = (&self.key, cost_usd) {
                let target = live.route.targets[*i].label();
                state
                    .metrics
                    .keyed_cost(&live.route.name, target, &key.name, cost);
            }
        }
        if let Some(slo) = &live.slo {
            slo.record(now, !failed, latency);
        }
        live.stats.record(
            now,
            Sample {
                success: !failed,
                error: (failed || status >= 400).then_some(ending.outcome),
                latency,
                first_token: self.first_token,
                cost_usd: cost_usd.unwrap_or(0.0),
            },
        );
    }
}

/// A client-supplied id is echoed if it is a sane token; otherwise a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(X_REQUEST_ID)
        .filter(|v| {
            !v.is_empty() && v.len() <= 128 && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4();
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
                .unwrap_or(HeaderValue::from_static("unknown"))
        })
}

/// Counts a client request in flight (the `inflight_requests` gauge) until dropped.
struct Inflight(Arc<AppState>);

impl Inflight {
    fn start(state: &Arc<AppState>) -> Self {
        state.metrics.inflight().inc();
        Inflight(state.clone())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.metrics.inflight().dec();
    }
}

fn failures_json(failures: &[AttemptRecord]) -> String {
    let list: Vec<_> = failures
        .iter()
        .map(|f| serde_json::json!({ "target": f.target, "class": f.class.as_str(), "cause": f.cause.to_string() }))
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn request_row(
    line: &RequestLine<'_>,
    failures: String,
    first_token: Option<Duration>,
) -> RequestRow {
    RequestRow {
        at_ms: now_ms(),
        request_id: line.request_id.to_owned(),
        key_name: line.key.to_owned(),
        route: line.route.to_owned(),
        stream: line.stream,
        attempts: failures,
        served_target: (line.target != "-").then(|| line.target.to_owned()),
        status: i32::from(line.status),
        outcome: line.outcome.to_owned(),
        latency_ms: line.latency.as_secs_f64() * 1000.0,
        first_token_ms: first_token.map(|d| d.as_secs_f64() * 1000.0),
        prompt_tokens: line.usage.map(|u| u.prompt_tokens as i64),
        completion_tokens: line.usage.map(|u| u.completion_tokens as i64),
        usage_estimated: line.usage_estimated,
        cost_usd: line.cost_usd,
        degraded: line.degraded.map(str::to_owned),
        trace_id: line.trace_id.clone(),
        request_body: None,
        response_body: None,
    }
}
