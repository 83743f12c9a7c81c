//! OpenTelemetry export (`[telemetry.otlp]`): a trace per client request,
//! a span per upstream attempt, and the GenAI metrics, over OTLP/HTTP with
//! protobuf, named after the OpenTelemetry GenAI semantic conventions.
//!
//! What it owns: the per-request [`RequestTrace`] (trace id, the client's
//! parent, the attempts as they happen: span id, target, kind, times,
//! status, failure class), the bounded queue from the request path to one
//! background task, the task that builds the spans once the request is
//! finished (with the start and end times recorded on the way) and hands
//! them to the SDK's batch processor, the GenAI histograms, and the HTTP
//! transport of both exporters (the gateway's own hyper + rustls client,
//! every export within `timeout`).
//!
//! What it may not do: change what a request does, wait on the request path
//! (a full queue drops the request's telemetry, counted), or export prompt
//! or completion content (never, whatever the route's `log_content`).
//!
//! With no `[telemetry.otlp]` none of this exists: the request context has
//! no trace (one `Option` check at its start), no header is read or added.

use crate::api::{Endpoint, Usage};
use crate::config::{OtlpConfig, ProviderKind};
use crate::routing::table::LiveRoute;
use crate::telemetry::traceparent::{self, Parent};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry::metrics::{Histogram, MeterProvider as _};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Attempts recorded per request at most (a request makes a handful; the
/// bound only keeps a pathological config from growing one without limit).
const MAX_ATTEMPT_SPANS: usize = 64;
/// The largest collector answer read (it is only checked for its status).
const MAX_RESPONSE: usize = 64 << 10;
/// Spans the SDK's batch queue holds per request queued (a root span and
/// a few attempts).
const SPANS_PER_REQUEST: usize = 8;

/// Why an attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    First,
    /// The same target again (after a retryable failure, or at its
    /// fallback service tier).
    Retry,
    /// The next target after a failure.
    Failover,
    /// A parallel attempt because the first was slow.
    Hedge,
    /// A stream cut after content, continued on another target.
    Continuation,
}

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::First => "first",
            AttemptKind::Retry => "retry",
            AttemptKind::Failover => "failover",
            AttemptKind::Hedge => "hedge",
            AttemptKind::Continuation => "continuation",
        }
    }
}

/// One upstream attempt as recorded on the request path.
#[derive(Debug, Clone)]
pub struct AttemptSpan {
    pub span_id: [u8; 8],
    pub target: usize,
    pub kind: AttemptKind,
    pub endpoint: Endpoint,
    pub start: Instant,
    pub end: Instant,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// `error.type`: the failure class, `deadline_exceeded`, `cancelled`.
    pub error: Option<&'static str>,
    /// The attempt's answer is a stream (its span lasts until the next leg
    /// or the request's end).
    pub streamed: bool,
    /// The `model` of a complete answer (streams: not read).
    pub response_model: Option<Box<str>>,
}

/// The trace of one client request, created at its start when the exporter
/// is on; attempts are added as they end.
#[derive(Debug)]
pub struct RequestTrace {
    pub trace_id: [u8; 16],
    /// The gateway's server span: the parent of every attempt.
    pub span_id: [u8; 8],
    /// The client's span, from its `traceparent`.
    pub parent: Option<[u8; 8]>,
    pub flags: u8,
    pub tracestate: Option<HeaderValue>,
    started: Instant,
    started_wall: SystemTime,
    attempts: Mutex<Vec<AttemptSpan>>,
}

impl RequestTrace {
    /// The client's trace continued (a valid `traceparent`), or a new one,
    /// sampled.
    pub fn start(headers: &HeaderMap, started: Instant) -> Self {
        let parent = headers
            .get(traceparent::TRACEPARENT)
            .and_then(|v| traceparent::parse(v.as_bytes()));
        let tracestate = parent
            .and(headers.get(traceparent::TRACESTATE))
            .and_then(traceparent::tracestate);
        let (trace_id, parent_span, flags) = match parent {
            Some(Parent {
                trace_id,
                span_id,
                flags,
            }) => (trace_id, Some(span_id), flags),
            None => (new_trace_id(), None, 1),
        };
        let elapsed = started.elapsed();
        RequestTrace {
            trace_id,
            span_id: new_span_id(),
            parent: parent_span,
            flags,
            tracestate,
            started,
            started_wall: SystemTime::now()
                .checked_sub(elapsed)
                .unwrap_or_else(SystemTime::now),
            attempts: Mutex::new(Vec::new()),
        }
    }

    /// A new attempt's span id and the `traceparent` its upstream receives.
    pub fn new_attempt(&self) -> ([u8; 8], HeaderValue) {
        let span_id = new_span_id();
        let header = traceparent::format(&self.trace_id, &span_id, self.flags);
        (span_id, header)
    }

    pub fn record(&self, span: AttemptSpan) {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if attempts.len() < MAX_ATTEMPT_SPANS {
            attempts.push(span);
        }
    }

    pub fn trace_id_hex(&self) -> String {
        traceparent::hex(&self.trace_id)
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.started_wall + at.saturating_duration_since(self.started)
    }

    fn take_attempts(&self) -> Vec<AttemptSpan> {
        std::mem::take(&mut *self.attempts.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn new_trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A finished request, as the request context hands it over.
pub struct Finished {
    pub trace: Arc<RequestTrace>,
    pub live: Option<Arc<LiveRoute>>,
    pub served: Option<usize>,
    pub request_id: String,
    pub status: u16,
    /// `error.type` of the request when it failed (its outcome code).
    pub error: Option<&'static str>,
    pub usage: Option<Usage>,
    pub first_token: Option<Duration>,
    pub latency: Duration,
    pub ended: Instant,
}

#[derive(Debug, Default)]
pub struct OtlpCounters {
    /// Requests whose telemetry was dropped because the queue was full.
    pub dropped: AtomicU64,
    pub queued: AtomicU64,
}

/// Requests whose telemetry was dropped, process-wide (the
/// `switchyard_otlp_dropped_total` metric; the process has one exporter).
static DROPPED: AtomicU64 = AtomicU64::new(0);

pub fn requests_dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("telemetry.otlp: the {signal} exporter could not be built: {source}")]
    Build {
        signal: &'static str,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

enum Msg {
    Finished(Box<Finished>),
    /// Export what is queued and recorded now, then answer (shutdown, tests).
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The running exporter: the request path's end of the queue.
pub struct Otlp {
    tx: mpsc::Sender<Msg>,
    pub counters: Arc<OtlpCounters>,
}

impl Otlp {
    /// Builds both exporters and starts the background task on the current
    /// runtime (which must run as long as the gateway serves).
    pub fn start(config: &OtlpConfig) -> Result<Self, OtlpError> {
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let transport = Transport::new(config.timeout);
        let spans = span_processor(config, transport.clone(), &resource)?;
        let meters = meter_provider(config, transport, resource)?;
        let instruments = Instruments::new(&meters);
        let (tx, rx) = mpsc::channel(config.max_queue);
        let counters = Arc::new(OtlpCounters::default());
        let scope = InstrumentationScope::builder("switchyard")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        tokio::spawn(run(rx, Arc::new(spans), meters, instruments, scope));
        Ok(Otlp { tx, counters })
    }

    /// Queues a finished request's telemetry; never waits.
    pub fn submit(&self, finished: Finished) {
        match self.tx.try_send(Msg::Finished(Box::new(finished))) {
            Ok(()) => self.counters.queued.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                self.counters.dropped.fetch_add(1, Ordering::Relaxed)
            }
        };
    }

    /// Exports every span and metric recorded before the call (shutdown).
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

fn span_processor(
    config: &OtlpConfig,
    transport: Transport,
    resource: &Resource,
) -> Result<BatchSpanProcessor, OtlpError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(transport)
        .with_endpoint(config.signal_url("v1/traces"))
        .with_timeout(config.timeout)
        .with_headers(config.headers.clone())
        .build()
        .map_err(|source| OtlpError::Build {
            signal: "trace",
            source,
        })?;
    let queue = config.max_queue.saturating_mul(SPANS_PER_REQUEST);
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(queue)
        .with_max_export_batch_size(512.min(queue))
        .with_scheduled_delay(config.traces_interval)
        .build();
    let mut processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batch)
        .build();
    processor.set_resource(resource);
    Ok(processor)
}

fn meter_provider(
    config: &OtlpConfig,
    transport: Transport,
    resource: Resource,
) -> Result<SdkMeterProvider, OtlpError> {
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(transport)
        .with_endpoint(config.signal_url("v1/metrics"))
        .with_timeout(config.timeout)
        .with_headers(config.headers.clone())
        .build()
        .map_err(|source| OtlpError::Build {
            signal: "metrics",
            source,
        })?;
    let reader = PeriodicReader::builder(exporter)
        .with_interval(config.metrics_interval)
        .build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build())
}

/// The GenAI client and server histograms, with the bucket boundaries the
/// semantic conventions advise.
struct Instruments {
    tokens: Histogram<u64>,
    duration: Histogram<f64>,
    first_token: Histogram<f64>,
}

impl Instruments {
    fn new(meters: &SdkMeterProvider) -> Self {
        let meter = meters.meter("switchyard");
        let tokens = meter
            .u64_histogram("gen_ai.client.token.usage")
            .with_unit("{token}")
            .with_description("Number of input and output tokens used")
            .with_boundaries(
                [
                    1u32, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                ]
                .into_iter()
                .map(f64::from)
                .chain([16777216.0, 67108864.0])
                .collect(),
            )
            .build();
        let duration = meter
            .f64_histogram("gen_ai.server.request.duration")
            .with_unit("s")
            .with_description("Generative AI server request duration")
            .with_boundaries(vec![
                0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                81.92,
            ])
            .build();
        let first_token = meter
            .f64_histogram("gen_ai.server.time_to_first_token")
            .with_unit("s")
            .with_description("Time to generate first token for successful responses")
            .with_boundaries(vec![
                0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0,
            ])
            .build();
        Instruments {
            tokens,
            duration,
            first_token,
        }
    }

    /// The same numbers the Prometheus metrics get: the request's latency,
    /// its tokens by the target that served, its first token.
    fn record(
        &self,
        done: &Finished,
        operation: Option<&'static str>,
        response_model: Option<&str>,
    ) {
        let Some(live) = &done.live else { return };
        let mut attrs = vec![KeyValue::new(
            "gen_ai.request.model",
            live.route.name.clone(),
        )];
        if let Some(operation) = operation {
            attrs.push(KeyValue::new("gen_ai.operation.name", operation));
        }
        if let Some(target) = done.served.and_then(|i| live.route.targets.get(i)) {
            attrs.push(KeyValue::new(
                "gen_ai.provider.name",
                provider_name(target.provider.kind),
            ));
        }
        if let Some(model) = response_model {
            attrs.push(KeyValue::new("gen_ai.response.model", model.to_owned()));
        }
        let mut with_error = attrs.clone();
        if let Some(error) = done.error {
            with_error.push(KeyValue::new("error.type", error));
        }
        self.duration
            .record(done.latency.as_secs_f64(), &with_error);
        if let Some(first) = done.first_token {
            self.first_token.record(first.as_secs_f64(), &attrs);
        }
        if let (Some(usage), Some(_)) = (done.usage, done.served) {
            let mut input = attrs.clone();
            input.push(KeyValue::new("gen_ai.token.type", "input"));
            self.tokens.record(usage.prompt_tokens, &input);
            attrs.push(KeyValue::new("gen_ai.token.type", "output"));
            self.tokens.record(usage.completion_tokens, &attrs);
        }
    }
}

async fn run(
    mut rx: mpsc::Receiver<Msg>,
    spans: Arc<BatchSpanProcessor>,
    meters: SdkMeterProvider,
    instruments: Instruments,
    scope: InstrumentationScope,
) {
    while let Some(msg) = rx.recv().await {
        let done = match msg {
            Msg::Finished(done) => done,
            Msg::Flush(answer) => {
                // The SDK's flushes block their thread until the export ends
                // (each bounded by `timeout`); the export runs on this runtime.
                let (spans, meters) = (spans.clone(), meters.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = spans.force_flush();
                    let _ = meters.force_flush();
                })
                .await;
                let _ = answer.send(());
                continue;
            }
        };
        let attempts = done.trace.take_attempts();
        let operation = attempts.first().map(|a| operation_name(a.endpoint));
        instruments.record(&done, operation, served_model(&done, &attempts));
        if done.trace.flags & 1 == 0 {
            // The client's trace is not sampled: only the metrics count it.
            continue;
        }
        for span in build_spans(&done, attempts, &scope) {
            spans.on_end(span);
        }
    }
    let _ = tokio::task::spawn_blocking(move || {
        let _ = spans.shutdown();
        let _ = meters.shutdown();
    })
    .await;
}

/// The request's server span and one client span per attempt.
fn build_spans(
    done: &Finished,
    mut attempts: Vec<AttemptSpan>,
    scope: &InstrumentationScope,
) -> Vec<SpanData> {
    let trace = &done.trace;
    attempts.sort_by_key(|a| a.start);
    let operation = attempts.first().map(|a| operation_name(a.endpoint));
    let mut out = Vec::with_capacity(attempts.len() + 1);
    for (i, attempt) in attempts.iter().enumerate() {
        // A streamed leg lasts until the next leg began (a continuation)
        // or the request ended.
        let next = attempts[i + 1..]
            .iter()
            .find(|a| a.kind == AttemptKind::Continuation);
        // A leg another continued was cut; the last leg failed with the
        // request (a cut nobody continued, the client gone).
        let (end, error) = match (attempt.streamed, next) {
            (true, Some(next)) => (next.start, Some("cut_mid_stream")),
            (true, None) => (done.ended, done.error),
            (false, _) => (attempt.end, attempt.error),
        };
        let continued = attempt.streamed && next.is_some();
        let served = attempt.streamed || attempt.error.is_none();
        let usage = (served && !continued && done.served == Some(attempt.target))
            .then_some(done.usage)
            .flatten();
        let mut attrs = attempt_attributes(done, attempt, usage);
        if let Some(error) = error {
            attrs.push(KeyValue::new("error.type", error));
        }
        out.push(span(
            trace,
            attempt.span_id,
            trace.span_id,
            SpanKind::Client,
            span_name(operation, attempt_model(done, attempt)),
            (trace.wall(attempt.start), trace.wall(end)),
            attrs,
            error,
            scope,
        ));
    }
    let (mut attrs, name) = root_attributes(done, operation, attempts.len());
    if let Some(model) = served_model(done, &attempts) {
        attrs.push(KeyValue::new("gen_ai.response.model", model.to_owned()));
    }
    out.push(span(
        trace,
        trace.span_id,
        trace.parent.unwrap_or([0; 8]),
        SpanKind::Server,
        name,
        (trace.started_wall, trace.wall(done.ended)),
        attrs,
        done.error,
        scope,
    ));
    out
}

/// The response model of the attempt that served.
fn served_model<'a>(done: &Finished, attempts: &'a [AttemptSpan]) -> Option<&'a str> {
    let served = done.served?;
    attempts
        .iter()
        .rev()
        .find(|a| a.target == served && a.error.is_none())?
        .response_model
        .as_deref()
}

fn attempt_model<'a>(done: &'a Finished, attempt: &AttemptSpan) -> Option<&'a str> {
    let live = done.live.as_ref()?;
    Some(live.route.targets.get(attempt.target)?.model.as_str())
}

fn attempt_attributes(
    done: &Finished,
    attempt: &AttemptSpan,
    usage: Option<Usage>,
) -> Vec<KeyValue> {
    let mut attrs = vec![
        KeyValue::new("gen_ai.operation.name", operation_name(attempt.endpoint)),
        KeyValue::new("switchyard.attempt.kind", attempt.kind.as_str()),
    ];
    if let Some(target) = done
        .live
        .as_ref()
        .and_then(|l| l.route.targets.get(attempt.target))
    {
        attrs.push(KeyValue::new(
            "gen_ai.provider.name",
            provider_name(target.provider.kind),
        ));
        attrs.push(KeyValue::new("gen_ai.request.model", target.model.clone()));
        attrs.push(KeyValue::new(
            "switchyard.target",
            target.label().to_owned(),
        ));
        if let Some(host) = target.chat_url.host() {
            attrs.push(KeyValue::new("server.address", host.to_owned()));
        }
        if let Some(port) = target.chat_url.port_u16() {
            attrs.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    if let Some(status) = attempt.status {
        attrs.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
    }
    push_usage(&mut attrs, usage);
    attrs
}

fn root_attributes(
    done: &Finished,
    operation: Option<&'static str>,
    attempts: usize,
) -> (Vec<KeyValue>, String) {
    let mut attrs = vec![
        KeyValue::new("http.response.status_code", i64::from(done.status)),
        KeyValue::new("switchyard.request_id", done.request_id.clone()),
        KeyValue::new("switchyard.attempts", attempts as i64),
    ];
    if let Some(operation) = operation {
        attrs.push(KeyValue::new("gen_ai.operation.name", operation));
    }
    if let Some(error) = done.error {
        attrs.push(KeyValue::new("error.type", error));
    }
    let Some(live) = &done.live else {
        return (attrs, "switchyard".to_owned());
    };
    attrs.push(KeyValue::new(
        "gen_ai.request.model",
        live.route.name.clone(),
    ));
    attrs.push(KeyValue::new("switchyard.route", live.route.name.clone()));
    if let Some(target) = done.served.and_then(|i| live.route.targets.get(i)) {
        attrs.push(KeyValue::new(
            "gen_ai.provider.name",
            provider_name(target.provider.kind),
        ));
        attrs.push(KeyValue::new(
            "switchyard.target",
            target.label().to_owned(),
        ));
        push_usage(&mut attrs, done.usage);
    }
    (attrs, span_name(operation, Some(&live.route.name)))
}

fn push_usage(attrs: &mut Vec<KeyValue>, usage: Option<Usage>) {
    if let Some(usage) = usage {
        attrs.push(KeyValue::new(
            "gen_ai.usage.input_tokens",
            usage.prompt_tokens as i64,
        ));
        attrs.push(KeyValue::new(
            "gen_ai.usage.output_tokens",
            usage.completion_tokens as i64,
        ));
    }
}

/// `{operation} {model}`, as the conventions name GenAI spans.
fn span_name(operation: Option<&str>, model: Option<&str>) -> String {
    match (operation, model) {
        (Some(op), Some(model)) => format!("{op} {model}"),
        (Some(op), None) => op.to_owned(),
        (None, Some(model)) => model.to_owned(),
        (None, None) => "switchyard".to_owned(),
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one SpanData's fields, each from a different part of the finished request"
)]
fn span(
    trace: &RequestTrace,
    span_id: [u8; 8],
    parent: [u8; 8],
    kind: SpanKind,
    name: String,
    (start_time, end_time): (SystemTime, SystemTime),
    attributes: Vec<KeyValue>,
    error: Option<&'static str>,
    scope: &InstrumentationScope,
) -> SpanData {
    let state = trace
        .tracestate
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace.trace_id),
            SpanId::from_bytes(span_id),
            TraceFlags::new(trace.flags),
            false,
            state,
        ),
        parent_span_id: SpanId::from_bytes(parent),
        parent_span_is_remote: kind == SpanKind::Server && trace.parent.is_some(),
        span_kind: kind,
        name: name.into(),
        start_time,
        end_time: end_time.max(start_time),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match error {
            Some(e) => Status::error(e),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}

/// `gen_ai.operation.name` of an endpoint (the conventions' names where
/// they have one).
pub fn operation_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Responses => "chat",
        Endpoint::Embeddings => "embeddings",
        Endpoint::Completions => "text_completion",
        Endpoint::Moderations => "moderation",
        Endpoint::ImageGenerations => "image_generation",
        Endpoint::AudioSpeech => "speech",
        Endpoint::AudioTranscriptions => "transcription",
        Endpoint::AudioTranslations => "translation",
    }
}

/// `gen_ai.provider.name` of a provider kind.
pub fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::AzureOpenAi => "azure.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
    }
}

/// The exporters' HTTP client: the gateway's hyper + rustls (ring) client,
/// driven on the gateway's runtime (the SDK's batch threads only wait for
/// it), every export bounded by `timeout`.
#[derive(Clone)]
struct Transport {
    client: crate::providers::HttpClient,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Transport {
    fn new(timeout: Duration) -> Self {
        Transport {
            client: crate::providers::client::build(timeout),
            runtime: tokio::runtime::Handle::current(),
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Transport {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let client = self.client.clone();
        let exchange = async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
            Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
        };
        let timeout = self.timeout;
        let task = self
            .runtime
            .spawn(async move { tokio::time::timeout(timeout, exchange).await });
        let result = match task.await {
            Ok(Ok(Ok(response))) if !response.status().is_success() => {
                warn_export_failed(&format!("the collector answered {}", response.status()));
                Ok(response)
            }
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("OTLP export timed out".into()),
            // The runtime is gone: the process is exiting, after the
            // shutdown flush (the SDK's own shutdown exports once more).
            Err(e) if e.is_cancelled() => return Err(Box::new(e)),
            Err(e) => Err(Box::new(e) as opentelemetry_http::HttpError),
        };
        if let Err(e) = &result {
            warn_export_failed(&e.to_string());
        }
        result
    }
}

/// A failed export, logged at most once a minute (the collector's URL and
/// headers are never logged: they may carry credentials).
fn warn_export_failed(reason: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 60
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            reason,
            "OpenTelemetry export failed; telemetry is being lost (logged at most once a minute)"
        );
    }
}
