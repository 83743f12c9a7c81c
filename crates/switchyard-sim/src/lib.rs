//! A fake LLM provider with fault injection.
//!
//! The simulator owns everything a test, demo or benchmark needs from an
//! upstream: an HTTP server speaking four providers' dialects, chosen by path
//! ([`SimEndpoint`]):
//! - OpenAI: `POST /v1/chat/completions`, `/v1/embeddings`, `/v1/responses`
//!   (the Responses API, with its event stream and `previous_response_id`),
//!   `/v1/completions` (legacy), `/v1/moderations`, `/v1/images/generations`,
//!   `/v1/audio/speech` (a binary MP3 body in several chunks) and
//!   `/v1/audio/transcriptions` / `translations` (multipart), plus the
//!   control-plane `GET /v1/models` and `GET /healthz`,
//! - Azure OpenAI: `POST /openai/deployments/{deployment}/chat/completions`,
//!   `.../embeddings`, `.../completions`, `.../images/generations`,
//!   `.../audio/speech|transcriptions|translations` and
//!   `POST /openai/responses`, all with `?api-version=` and an `api-key`
//!   header; the deployment is the model (Responses: the body's `model`),
//! - Anthropic Messages: `POST /v1/messages` with `x-api-key` and
//!   `anthropic-version` headers,
//! - Gemini: `POST /v1beta/models/{model}:generateContent` and
//!   `:streamGenerateContent?alt=sse`, keyed by `x-goog-api-key` or `?key=`;
//!
//! each with its provider's JSON and SSE bodies and error shapes; a
//! deterministic fault model (status errors, context-length errors, latency,
//! hangs, dropped, truncated or stalled streams, in-band error events) that
//! applies to every dialect alike; continuations of its deterministic answer
//! from a partial one (`continuation`); runtime control of that model (default behaviour,
//! timeline phases, a per-request script, per-request `x-sim-*` override
//! headers); an optional set of accepted API keys; and counters plus a
//! bounded request log that let tests prove what the gateway actually sent
//! upstream, with which key and in which dialect.
//!
//! It must not depend on the gateway's modules (config, providers, routing,
//! streaming, ...): it stands in for a third-party provider, and sharing code
//! with the gateway would let a gateway bug be mirrored by the sim and go
//! unnoticed. Only external crates are used here.
//!
//! Fault selection for each inference request, first match wins:
//! 1. `x-sim-*` request headers (see [`Simulator`]),
//! 2. the script queue ([`SimHandle::push_script`]), one entry per request,
//! 3. the timeline phase covering the elapsed time ([`SimHandle::set_timeline`]),
//! 4. the default [`Behavior`].
//!
//! Behaviours are sampled with an RNG seeded from `seed` and the request's
//! index, so a given seed yields the same fault sequence whatever the timing.

// No unwrap, expect, panic or unreachable outside tests (clippy.toml at the
// workspace root allows them in test code).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

mod anthropic;
mod behavior;
pub mod cli;
mod continuation;
mod dialect;
mod gemini;
mod media;
mod openai;
mod responses;
mod server;
mod stats;
mod stream;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::HeaderValue;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use stats::{BodyLog, RequestLog, Stats};

/// Static configuration of one simulated provider.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Appears in error messages and in the `x-sim-name` response header, so
    /// tests can tell which upstream answered.
    pub name: String,
    pub seed: u64,
    /// Requests for any other model get a 404 `model_not_found`.
    pub models: Vec<String>,
    pub behavior: Behavior,
    pub timeline: Vec<Phase>,
    /// When set, only these API keys are accepted, in every dialect
    /// (OpenAI's `Authorization: Bearer`, Azure's `api-key`, Anthropic's
    /// `x-api-key`, Gemini's `x-goog-api-key` or `key`); any other key, or
    /// none, gets the dialect's authentication error before fault selection.
    /// When unset, OpenAI requests need no key and the other dialects need
    /// one (any value).
    pub accepted_keys: Option<Vec<String>>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            name: "sim".to_owned(),
            seed: 1,
            models: vec![
                "gpt-4o-mini".to_owned(),
                "gpt-4o".to_owned(),
                "text-embedding-3-small".to_owned(),
                "claude-sonnet-4-5".to_owned(),
                "gemini-2.5-flash".to_owned(),
                "gpt-3.5-turbo-instruct".to_owned(),
                "omni-moderation-latest".to_owned(),
                "dall-e-3".to_owned(),
                "gpt-image-1".to_owned(),
                "tts-1".to_owned(),
                "whisper-1".to_owned(),
            ],
            behavior: Behavior::default(),
            timeline: Vec::new(),
            accepted_keys: None,
        }
    }
}

/// A behaviour in force while the elapsed time since start (or the last
/// [`SimHandle::reset_clock`]) is in `from..until`. The first matching phase
/// wins; outside all phases the default behaviour applies.
#[derive(Clone, Debug)]
pub struct Phase {
    pub from: Duration,
    pub until: Duration,
    pub behavior: Behavior,
}

/// A probabilistic fault model, sampled into a [`Fault`] per request.
#[derive(Clone, Debug, Default)]
pub struct Behavior {
    /// Probability of each error status, e.g. `[(429, 0.05), (500, 0.01)]`;
    /// rates are cumulative, so they should sum to at most 1.
    pub status_rates: Vec<(u16, f64)>,
    /// Sent as `Retry-After` (seconds, rounded up) and `retry-after-ms` on
    /// sampled 429 and 503 responses.
    pub retry_after: Option<Duration>,
    /// Delay before the response head (non-stream, and error responses) or
    /// before the first SSE event (successful streams).
    pub latency: Latency,
    /// Probability that a request is never answered.
    pub hang_rate: f64,
    /// `(n, probability)`: a stream aborts the connection after `n` content
    /// chunks.
    pub drop_after: Option<(u32, f64)>,
    /// `(n, probability)`: a stream goes silent after `n` content chunks
    /// with its connection open.
    pub stall_after: Option<(u32, f64)>,
    /// Probability that a stream's only event is an in-band error object.
    pub error_event_rate: f64,
    /// Streaming pace; 0 sends all chunks as fast as possible.
    pub tokens_per_sec: f64,
    /// Number of content tokens; 0 means 8.
    pub completion_tokens: u32,
    /// Probability of a context-length error (checked after the status
    /// rates, for streams and non-streams alike).
    pub context_length_rate: f64,
    /// Refuse a continuation by prefill (the last message is the
    /// assistant's partial answer) with a 400, as providers without
    /// assistant prefill do.
    pub reject_prefill: bool,
    /// An instructed continuation starts this many whole tokens before
    /// where the partial answer stops (a model repeating itself).
    pub continue_overlap: u32,
    /// Chat requests whose body asks for this `service_tier` (e.g.
    /// `"flex"`) are refused with OpenAI's 429 `resource_unavailable`,
    /// before any fault is drawn.
    pub refuse_service_tier: Option<String>,
    /// `(tier, delay)`: chat requests whose body asks for this
    /// `service_tier` get `delay` added before their response head (or a
    /// stream's first event): a tier slow to start, e.g. `flex` under load.
    pub slow_service_tier: Option<(String, Duration)>,
}

/// `delay = base + uniform(0..jitter) + (spike with probability spike_rate)`.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub base: Duration,
    pub jitter: Duration,
    pub spike_rate: f64,
    pub spike: Duration,
}

/// What happens to one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// Applied before the response head, or before the first SSE event of a
    /// successful stream.
    pub delay: Duration,
    pub action: FaultAction,
}

impl Fault {
    /// A plain successful answer after `delay`.
    pub fn ok(delay: Duration) -> Self {
        Self {
            delay,
            action: FaultAction::Ok,
        }
    }

    /// An immediate error status without retry hints.
    pub fn status(code: u16) -> Self {
        Self {
            delay: Duration::ZERO,
            action: FaultAction::Status {
                code,
                retry_after: None,
            },
        }
    }
}

impl From<FaultAction> for Fault {
    fn from(action: FaultAction) -> Self {
        Self {
            delay: Duration::ZERO,
            action,
        }
    }
}

/// Every action applies to every dialect, in that provider's own shapes.
///
/// The stream variants describe SSE responses. On non-stream requests they
/// map to the nearest plain-HTTP pathology: `DropAfter` sends the head and
/// half the body then aborts the connection, `TruncateAfter` sends the first
/// half of the JSON body with a clean end, and `ErrorEvent*` answer 200 with
/// the dialect's error object as the body.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultAction {
    Ok,
    /// An error response; `retry_after` is sent whatever the code.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// Never answer; the request ends only when the peer goes away.
    Hang,
    /// Abort the connection (no clean end) after `n` content chunks.
    DropAfter(u32),
    /// The first and only SSE event is an error object; then a clean end.
    ErrorEventFirst,
    /// After `n` content chunks an error event, then a clean end without
    /// `[DONE]`.
    ErrorEventAfter(u32),
    /// A clean end after `n` content chunks, without a finish_reason chunk
    /// and without `[DONE]` (or the dialect's equivalents).
    TruncateAfter(u32),
    /// After `n` content chunks the stream stalls: the connection stays
    /// open and nothing more is sent, until the peer goes away.
    StallAfter(u32),
    /// A 400 saying the prompt exceeds the model's context window, worded as
    /// the provider words it (OpenAI `context_length_exceeded`, Anthropic
    /// "prompt is too long", Gemini "input token count ... exceeds").
    ContextLength,
}

/// A snapshot of the counters.
///
/// Counted requests are those to the inference endpoints of every dialect
/// and to unknown routes; `/v1/models` and `/healthz` are control-plane calls
/// and are neither counted nor logged, so gateway health probes cannot
/// disturb attempt counts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimStats {
    pub requests: u64,
    /// 200 answers without a fault: non-stream when the body is sent,
    /// streams when the head is sent (see `streams_completed`).
    pub ok: u64,
    /// Injected error statuses only (validation errors are `bad_requests`);
    /// context-length errors count as 400.
    pub errors_by_status: BTreeMap<u16, u64>,
    pub hangs: u64,
    pub dropped: u64,
    pub error_events: u64,
    pub truncated: u64,
    /// The peer went away before the response or stream finished.
    pub cancelled: u64,
    /// Unreadable or invalid requests (400), unknown models and routes (404).
    pub bad_requests: u64,
    /// Streams that sent their dialect's last event (`data: [DONE]`,
    /// `message_stop`, Gemini's chunk with `finishReason`).
    pub streams_completed: u64,
    /// Requests refused for a missing or unaccepted API key.
    pub unauthorized: u64,
}

/// The endpoint a request hit, which is also the dialect it spoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimEndpoint {
    /// `POST /v1/chat/completions`
    OpenAiChat,
    /// `POST /v1/embeddings`
    OpenAiEmbeddings,
    /// `POST /openai/deployments/{deployment}/chat/completions`
    AzureChat,
    /// `POST /openai/deployments/{deployment}/embeddings`
    AzureEmbeddings,
    /// `POST /v1/responses`
    OpenAiResponses,
    /// `POST /openai/responses` (the model is the body's `model`)
    AzureResponses,
    /// `POST /v1/completions` (legacy text completions)
    OpenAiCompletions,
    /// `POST /openai/deployments/{deployment}/completions`
    AzureCompletions,
    /// `POST /v1/moderations`
    OpenAiModerations,
    /// `POST /v1/images/generations`
    OpenAiImages,
    /// `POST /openai/deployments/{deployment}/images/generations`
    AzureImages,
    /// `POST /v1/audio/speech`
    OpenAiSpeech,
    /// `POST /openai/deployments/{deployment}/audio/speech`
    AzureSpeech,
    /// `POST /v1/audio/transcriptions`
    OpenAiTranscriptions,
    /// `POST /openai/deployments/{deployment}/audio/transcriptions`
    AzureTranscriptions,
    /// `POST /v1/audio/translations`
    OpenAiTranslations,
    /// `POST /openai/deployments/{deployment}/audio/translations`
    AzureTranslations,
    /// `POST /v1/messages`
    AnthropicMessages,
    /// `POST /v1beta/models/{model}:generateContent`
    GeminiGenerateContent,
    /// `POST /v1beta/models/{model}:streamGenerateContent`
    GeminiStreamGenerateContent,
    /// Any other route (answered 404 in OpenAI's shape).
    Unknown,
}

/// One logged request.
///
/// `Debug` prints `api_key` as `present`, so a record in a log line or an
/// assertion message never shows a key.
#[derive(Clone)]
pub struct RequestRecord {
    /// Tokio's clock, so paused-time tests see consistent values.
    pub at: tokio::time::Instant,
    /// Without the query string.
    pub path: String,
    pub endpoint: SimEndpoint,
    /// The key the request presented in its dialect's credential header (or
    /// Gemini's `key` query parameter), whether accepted or not. The sim is
    /// test infrastructure with fake keys; this lets tests tell which
    /// upstream key a request used.
    pub api_key: Option<String>,
    /// For Gemini and Azure, the model (deployment) named in the path.
    pub model: Option<String>,
    /// Whether the answer is streamed: `stream: true` requests, Gemini's
    /// `streamGenerateContent`, and speech (its audio is always sent in
    /// chunks, so stream faults apply to it).
    pub stream: bool,
    /// `ok`, `status:<code>`, `context_length`, `hang`, `drop`,
    /// `error_event`, `truncate`, `unauthorized`, `bad_request` or
    /// `not_found` (unknown model, deployment or route, a Responses
    /// `previous_response_id` the sim does not hold, or Azure without
    /// `api-version`). Decided when the request arrives, before any delay.
    pub outcome: String,
    /// Lower-case names. `x-request-id`, `traceparent` and `tracestate` are
    /// kept verbatim; `authorization` and
    /// credential-like headers (`*key*`, `*token*`, `*secret*`, `cookie`) are
    /// recorded with the value `present`; nothing else is kept.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    /// For a request continuing a partial answer (see the sim's
    /// continuation rules): `prefill from tokN`, `instruct from tokN`
    /// (where the answer was picked up), or `prefill rejected`.
    pub continuation: Option<String>,
    /// The `service_tier` a chat request's body asked for.
    pub service_tier: Option<String>,
}

impl std::fmt::Debug for RequestRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestRecord")
            .field("at", &self.at)
            .field("path", &self.path)
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "present"))
            .field("model", &self.model)
            .field("stream", &self.stream)
            .field("outcome", &self.outcome)
            .field("headers", &self.headers)
            .field("body_len", &self.body_len)
            .field("continuation", &self.continuation)
            .field("service_tier", &self.service_tier)
            .finish()
    }
}

/// Starts simulated providers.
///
/// Per-request override headers, which win over the script and timeline:
/// `x-sim-status: 503` (with optional `x-sim-retry-after-ms: 1500`),
/// `x-sim-hang: 1`, `x-sim-context-length: 1`, `x-sim-drop-after: N`,
/// `x-sim-error-event: first|N`, `x-sim-truncate-after: N`,
/// `x-sim-stall-after: N`,
/// `x-sim-delay-ms: 200`. If any of these is
/// present the fault comes from the headers alone (missing action = ok,
/// missing delay = 0) and the script is not consumed. `x-sim-tokens: N` sets
/// the number of content tokens independently. Invalid values get a 400.
pub struct Simulator;

impl Simulator {
    /// Binds `listen` (port 0 picks a free port) and serves until
    /// [`SimHandle::shutdown`] or until the last handle is dropped.
    pub async fn start(config: SimConfig, listen: SocketAddr) -> std::io::Result<SimHandle> {
        let shared = Arc::new(Shared::new(config)?);
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, Arc::clone(&shared), stop_rx));
        Ok(SimHandle {
            inner: Arc::new(HandleInner {
                shared,
                addr,
                stop: stop_tx,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

/// Control handle of a running simulator; clones share the same server.
///
/// Dropping the last clone stops the server like [`SimHandle::shutdown`], so
/// keep it alive for as long as the sim is needed (`let _ = ...` would stop
/// it at once).
#[derive(Clone)]
pub struct SimHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://HOST:PORT/v1`; an unspecified listen address is replaced by
    /// loopback so the URL is always connectable.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.origin())
    }

    /// `http://HOST:PORT`, for dialects whose paths do not start with `/v1`
    /// (Gemini's `/v1beta/...`, Azure's `/openai/...`); loopback as in
    /// [`SimHandle::base_url`].
    pub fn origin(&self) -> String {
        let mut addr = self.inner.addr;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            _ => {}
        }
        format!("http://{addr}")
    }

    /// Replaces the default behaviour; requests already past fault selection
    /// are unaffected.
    pub fn set_behavior(&self, behavior: Behavior) {
        self.inner.shared.behavior.store(Arc::new(behavior));
    }

    pub fn set_timeline(&self, phases: Vec<Phase>) {
        self.inner.shared.timeline.store(Arc::new(phases));
    }

    /// Timeline elapsed time restarts from now.
    pub fn reset_clock(&self) {
        self.inner.shared.clock.reset();
    }

    /// Queues faults consumed one per inference request, in order, before
    /// the timeline and default behaviour are consulted.
    pub fn push_script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.inner.shared.script.push(faults);
    }

    pub fn stats(&self) -> SimStats {
        self.inner.shared.stats.snapshot()
    }

    /// The last [`REQUEST_LOG_CAPACITY`] requests, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.shared.log.snapshot()
    }

    /// The bodies of the last [`BODY_LOG_CAPACITY`] inference requests,
    /// oldest first, so tests can assert what a provider received.
    pub fn bodies(&self) -> Vec<ReceivedBody> {
        self.inner.shared.bodies.snapshot()
    }

    /// The last body received on `endpoint`, parsed as JSON (`None` if there
    /// is none or it is not JSON, e.g. a multipart upload).
    pub fn last_json(&self, endpoint: SimEndpoint) -> Option<serde_json::Value> {
        let bodies = self.bodies();
        let body = bodies.iter().rev().find(|b| b.endpoint == endpoint)?;
        serde_json::from_slice(&body.body).ok()
    }

    /// Clears counters and the request log; the request index that seeds
    /// sampling keeps counting, so determinism is unaffected.
    pub fn reset_stats(&self) {
        self.inner.shared.stats.reset();
        self.inner.shared.log.clear();
        self.inner.shared.bodies.clear();
    }

    /// Stops listening and closes every connection at once: in-flight
    /// requests are aborted (and counted as cancelled), as when a real
    /// provider goes down. Returns when the port is closed.
    pub async fn shutdown(self) {
        self.inner.stop.send_replace(true);
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            if let Err(err) = task.await {
                tracing::warn!(error = %err, "sim server task failed");
            }
        }
    }
}

/// How many [`RequestRecord`]s are kept.
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// How many request bodies are kept ([`SimHandle::bodies`]): few, since a
/// body can be large and tests only look at the last ones.
pub const BODY_LOG_CAPACITY: usize = 256;

/// Bytes kept of each logged body; the rest is cut off.
pub const BODY_LOG_MAX_BYTES: usize = 1024 * 1024;

/// One received request body (a copy, at most [`BODY_LOG_MAX_BYTES`]).
#[derive(Clone, Debug)]
pub struct ReceivedBody {
    pub at: tokio::time::Instant,
    /// Without the query string.
    pub path: String,
    pub endpoint: SimEndpoint,
    pub body: Bytes,
}

/// State shared by the handle and every request handler.
pub(crate) struct Shared {
    name: String,
    name_header: HeaderValue,
    seed: u64,
    models: Vec<String>,
    models_body: Bytes,
    /// OpenAI's in-band error event, identical for every stream of this sim.
    overload_event: Bytes,
    accepted_keys: Option<Vec<String>>,
    behavior: ArcSwap<Behavior>,
    timeline: ArcSwap<Vec<Phase>>,
    clock: Clock,
    script: Script,
    next_index: AtomicU64,
    stats: Stats,
    log: RequestLog,
    bodies: BodyLog,
    /// Ids of the Responses API answers this sim created, for
    /// `previous_response_id`.
    responses: responses::ResponseIds,
}

impl Shared {
    fn new(config: SimConfig) -> std::io::Result<Self> {
        let name_header = HeaderValue::from_str(&config.name).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "sim name must be a valid HTTP header value",
            )
        })?;
        Ok(Self {
            models_body: openai::models_body(&config.models, &config.name),
            overload_event: openai::overload_event(&config.name),
            accepted_keys: config.accepted_keys,
            name_header,
            seed: config.seed,
            models: config.models,
            name: config.name,
            behavior: ArcSwap::from_pointee(config.behavior),
            timeline: ArcSwap::from_pointee(config.timeline),
            clock: Clock::new(),
            script: Script::default(),
            next_index: AtomicU64::new(0),
            stats: Stats::new(),
            log: RequestLog::new(REQUEST_LOG_CAPACITY),
            bodies: BodyLog::new(BODY_LOG_CAPACITY),
            responses: responses::ResponseIds::new(responses::REMEMBERED_RESPONSES),
        })
    }
}

/// Timeline clock. An offset from a fixed origin keeps `reset` and reads
/// lock-free.
struct Clock {
    origin: tokio::time::Instant,
    offset_nanos: AtomicU64,
}

impl Clock {
    fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            offset_nanos: AtomicU64::new(0),
        }
    }

    fn reset(&self) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.store(nanos, Ordering::Relaxed);
    }

    fn elapsed(&self) -> Duration {
        let offset = Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(offset)
    }
}

/// The script queue. `len` lets the common no-script case skip the lock.
#[derive(Default)]
struct Script {
    queue: Mutex<VecDeque<Fault>>,
    len: AtomicUsize,
}

impl Script {
    fn push(&self, faults: impl IntoIterator<Item = Fault>) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.extend(faults);
        self.len.store(queue.len(), Ordering::Release);
    }

    fn pop(&self) -> Option<Fault> {
        if self.len.load(Ordering::Acquire) == 0 {
            return None;
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let fault = queue.pop_front();
        self.len.store(queue.len(), Ordering::Release);
        fault
    }
}
