//! Route table and request handlers.

use super::AppState;
use crate::api::{anthropic, find_usage, Endpoint, InspectedBody, Usage};
use crate::error::GatewayError;
use crate::resilience::FailureClass;
use crate::routing::table::LiveRoute;
use crate::routing::{AttemptRecord, Dispatch, Served};
use crate::store::RequestRow;
use crate::streaming::relay::{CutReason, Relay, StreamEnd};
use crate::telemetry::request_log::now_ms;
use crate::telemetry::stats::Sample;
use crate::telemetry::{log_request, RequestLine};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

const X_REQUEST_ID: &str = "x-request-id";
const X_TARGET: &str = "x-switchyard-target";
const X_ATTEMPTS: &str = "x-switchyard-attempts";
/// Lets a client say where it is, overriding the node's configured region.
const X_REGION: &str = "x-switchyard-region";
/// `false` forbids serving this request from a `tier = "degraded"` target.
const X_ALLOW_DEGRADED: &str = "x-switchyard-allow-degraded";
const X_DEGRADED: &str = "x-switchyard-degraded";
const X_DEPRECATION: &str = "x-switchyard-deprecation";

/// The wire protocol a client speaks; routing always works in OpenAI's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    OpenAi,
    /// Anthropic's Messages API (`POST /v1/messages`), translated both ways.
    Anthropic,
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route(
            "/v1/chat/completions",
            post(chat_completions).fallback(method_not_allowed("POST")),
        )
        .route(
            "/v1/messages",
            post(messages).fallback(method_not_allowed("POST")),
        )
        .route(
            "/v1/embeddings",
            post(embeddings).fallback(method_not_allowed("POST")),
        )
        .route(
            "/v1/models",
            get(models).fallback(method_not_allowed("GET")),
        )
        .route("/healthz", get(healthz).fallback(method_not_allowed("GET")))
        .route("/readyz", get(readyz).fallback(method_not_allowed("GET")))
        .route("/metrics", get(metrics).fallback(method_not_allowed("GET")))
        .route(
            "/status",
            get(status_page).fallback(method_not_allowed("GET")),
        )
        .route(
            "/status.json",
            get(status_json).fallback(method_not_allowed("GET")),
        )
        .fallback(not_found)
        .with_state(state.clone());
    let config = state.table.load_full().config.clone();
    match admin_router(&state) {
        // The admin API has a listener of its own.
        Some(_) if config.admin.listen.is_some() => api,
        Some(admin) => api.merge(admin),
        // No admin key configured: the read-only views stay open, as
        // before virtual keys existed (bind the port privately).
        None => api.merge(operator_views(state)),
    }
}

/// Breaker and statistics views for operators.
fn operator_views(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/admin/stats",
            get(admin_stats).fallback(method_not_allowed("GET")),
        )
        .route(
            "/admin/targets",
            get(admin_targets).fallback(method_not_allowed("GET")),
        )
        .with_state(state)
}

/// The admin API (`/admin/keys`, `/admin/targets`, `/admin/stats`), all
/// behind the admin key; `None` unless an admin key is configured and
/// virtual keys are on.
pub fn admin_router(state: &Arc<AppState>) -> Option<Router> {
    let config = state.table.load_full().config.clone();
    let admin_key = config.admin.key.clone()?;
    let keys = state.keys.get()?.clone();
    let digest = crate::keys::admin::admin_digest(&admin_key);
    let views = operator_views(state.clone()).layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            let check = crate::keys::admin::admin_check(request.headers(), &digest);
            async move {
                match check {
                    Ok(()) => next.run(request).await,
                    Err(refused) => refused,
                }
            }
        },
    ));
    Some(crate::keys::admin::router(keys, &admin_key).merge(views))
}

fn method_not_allowed(
    allowed: &'static str,
) -> impl Fn(Method, Uri) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move |method: Method, uri: Uri| {
        std::future::ready(
            GatewayError::MethodNotAllowed {
                method: method.to_string(),
                path: uri.path().to_owned(),
                allowed,
            }
            .into_response(),
        )
    }
}

async fn not_found(uri: Uri) -> Response {
    GatewayError::NotFound {
        path: uri.path().to_owned(),
    }
    .into_response()
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "draining" })),
        )
            .into_response()
    } else {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Response {
    let table = state.table.load();
    let data: Vec<_> = table
        .config
        .route_names()
        .iter()
        .map(|name| serde_json::json!({ "id": name, "object": "model", "created": 0, "owned_by": "switchyard" }))
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

/// Rolling statistics (1 m / 1 h / 24 h) per route and target.
async fn admin_stats(State(state): State<Arc<AppState>>) -> Response {
    Json(super::status::stats(&state)).into_response()
}

async fn status_page(State(state): State<Arc<AppState>>) -> Response {
    let public = state.table.load().config.server.public_status;
    let html = super::status::html(&super::status::report(&state, public));
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn status_json(State(state): State<Arc<AppState>>) -> Response {
    let public = state.table.load().config.server.public_status;
    Json(super::status::report(&state, public)).into_response()
}

/// Prometheus scrape endpoint: OpenMetrics when the scraper asks for it
/// (Prometheus does), the classic text format otherwise.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let body = state.metrics.render(&state.registry);
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    } else {
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        let text = crate::telemetry::metrics::to_prometheus_text(&body);
        ([(header::CONTENT_TYPE, content_type)], text).into_response()
    }
}

/// Breaker state and recent health of every target.
async fn admin_targets(State(state): State<Arc<AppState>>) -> Response {
    let now = Instant::now();
    let secs = |d: std::time::Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    let targets: Vec<_> = state
        .registry
        .all()
        .iter()
        .map(|h| {
            let b = h.snapshot(now);
            serde_json::json!({
                "target": h.key,
                "state": b.state.as_str(),
                "failure_ratio": b.failure_ratio,
                "window_requests": b.window_requests,
                "consecutive_failures": b.consecutive_failures,
                "trips": b.trips,
                "transitions": b.transitions,
                "opened_seconds_ago": b.opened_at.map(|t| secs(now.saturating_duration_since(t))),
                "next_probe_in_seconds": b.next_probe.map(|t| secs(t.saturating_duration_since(now))),
                "latency_ewma_ms": (h.latency_micros() / 10.0).round() / 100.0,
                "first_byte_p95_ms": h.first_byte_quantile(0.95).map(|d| secs(d) * 1000.0),
                "inflight": h.inflight(),
                "disabled": h.is_disabled(),
                "cooling_for_seconds": h.cooled_until(now).map(|t| secs(t.saturating_duration_since(now))),
                "attempts": h.attempts.load(Ordering::Relaxed),
                "failures": h.failures.load(Ordering::Relaxed),
            })
        })
        .collect();
    Json(serde_json::json!({ "targets": targets, "counters": state.counters.snapshot() }))
        .into_response()
}

async fn chat_completions(State(state): State<Arc<AppState>>, request: Request) -> Response {
    proxy(state, Endpoint::ChatCompletions, Inbound::OpenAi, request).await
}

async fn embeddings(State(state): State<Arc<AppState>>, request: Request) -> Response {
    proxy(state, Endpoint::Embeddings, Inbound::OpenAi, request).await
}

async fn messages(State(state): State<Arc<AppState>>, request: Request) -> Response {
    proxy(
        state,
        Endpoint::ChatCompletions,
        Inbound::Anthropic,
        request,
    )
    .await
}

/// A gateway error in the client's protocol.
fn error_response(error: GatewayError, inbound: Inbound) -> Response {
    match inbound {
        Inbound::OpenAi => error.into_response(),
        Inbound::Anthropic => {
            let status = error.status();
            let mut response = error.into_response();
            let body = std::mem::take(response.body_mut());
            let openai = match futures_util::FutureExt::now_or_never(body.collect()) {
                Some(Ok(collected)) => collected.to_bytes(),
                _ => Bytes::new(),
            };
            *response.body_mut() =
                Body::from(anthropic::error_from_openai(status.as_u16(), &openai));
            response
        }
    }
}

/// An upstream's complete answer (already in OpenAI's format) in the
/// client's protocol, with the status to send it with.
fn complete_body(status: StatusCode, body: Bytes, inbound: Inbound) -> (StatusCode, Bytes) {
    match inbound {
        Inbound::OpenAi => (status, body),
        Inbound::Anthropic if status.is_success() => {
            match anthropic::response_from_openai(&body) {
                Ok(translated) => (status, Bytes::from(translated)),
                // The upstream's answer was not a chat completion.
                Err(e) => (
                    StatusCode::BAD_GATEWAY,
                    Bytes::from(anthropic::error_from_openai(
                        502,
                        &crate::api::error_body(
                            &e.message,
                            "upstream_error",
                            Some("untranslatable"),
                        ),
                    )),
                ),
            }
        }
        Inbound::Anthropic => (
            status,
            Bytes::from(anthropic::error_from_openai(status.as_u16(), &body)),
        ),
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

/// The body, refused with 413 past `limit` (at once if the declared length
/// says so) and with 408 if it has not all arrived within `timeout`: a client
/// trickling a body must not hold a connection and a handler forever.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| GatewayError::BodyTimeout { after: timeout })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(e) => Err(GatewayError::BodyRead(e.to_string())),
    }
}

async fn proxy(
    state: Arc<AppState>,
    endpoint: Endpoint,
    inbound: Inbound,
    request: Request,
) -> Response {
    let started = Instant::now();
    state.counters.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = request.into_parts();
    let request_id = request_id(&parts.headers);
    let table = state.table.load_full();
    let config = &table.config;

    let inflight = Inflight::start(&state);
    let mut live_route = None;
    let mut request_text = None;
    let mut stream = false;
    let mut key = None;
    let mut admission = None;
    let result = async {
        // Authenticate before reading the body: strangers cost no memory.
        if let Some(keys) = state.keys.get() {
            let presented = crate::keys::presented_secret(&parts.headers).unwrap_or_default();
            key = Some(keys.authenticate(presented).await?);
        }
        let mut bytes = read_body(
            body,
            &parts.headers,
            config.server.max_request_body,
            config.server.body_read_timeout,
        )
        .await?;
        if inbound == Inbound::Anthropic {
            bytes = Bytes::from(anthropic::request_to_openai(&bytes)?);
        }
        let inspected = InspectedBody::parse(bytes)?;
        stream = inspected.stream();
        let live = table
            .route(inspected.model())
            .ok_or_else(|| GatewayError::UnknownModel {
                model: inspected.model().to_owned(),
                known: config.route_names().join(", "),
            })?;
        let route = &live.route;
        live_route = Some(live.clone());
        if let (Some(key), Some(keys)) = (&key, state.keys.get()) {
            if !key.allows_route(&route.name) {
                return Err(GatewayError::RouteNotAllowed {
                    route: route.name.clone(),
                });
            }
            keys.check_budget(key)?;
            if let Some(limiter) = state.limiter.get() {
                let limits = crate::limits::Limits {
                    requests_per_minute: key.limits.requests_per_minute,
                    tokens_per_minute: key.limits.tokens_per_minute,
                    max_concurrent: key.limits.max_concurrent,
                };
                let estimate = if limits.tokens_per_minute.is_some() {
                    crate::limits::estimate_tokens(
                        inspected.bytes().len(),
                        requested_max_tokens(&inspected),
                    )
                } else {
                    0
                };
                admission = Some(limiter.admit(key.id, &limits, estimate).await?);
            }
        }
        if route.log_content && state.request_log.get().is_some() {
            request_text = Some(String::from_utf8_lossy(inspected.bytes()).into_owned());
        }
        let caller_region = parts
            .headers
            .get(X_REGION)
            .and_then(|v| v.to_str().ok())
            .filter(|r| !r.is_empty() && r.len() <= 64)
            .or(config.server.region.as_deref());
        let outcome = Dispatch {
            live,
            global_budget: &table.global_budget,
            caller_region,
            endpoint,
            body: &inspected,
            request_id: &request_id,
            max_response_body: config.server.max_response_body,
            counters: &state.counters.engine,
            allow_degraded: key.as_ref().is_none_or(|k| k.allow_degraded)
                && parts
                    .headers
                    .get(X_ALLOW_DEGRADED)
                    .is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"false")),
        }
        .run(started)
        .await?;
        Ok::<_, GatewayError>((outcome, route.timeouts, live.clone()))
    }
    .await;

    let (outcome, timeouts, live) = match result {
        Ok(ok) => ok,
        Err(error) => {
            let failures = match &error {
                GatewayError::Exhausted { attempts, .. }
                | GatewayError::DeadlineExceeded { attempts } => attempts.as_slice(),
                _ => &[],
            };
            let end = RequestEnd {
                request_id: request_id.clone(),
                live: live_route,
                served: None,
                first_token: None,
                attempts: failures.len() as u32,
                stream,
                started,
                failures: state.request_log.get().map(|_| failures_json(failures)),
                content: request_text.map(|r| (r, None)),
                inflight,
                key,
                admission: None,
            };
            end.write(error.status().as_u16(), error.code(), None);
            let mut response = error_response(error, inbound);
            response.headers_mut().insert(X_REQUEST_ID, request_id);
            return response;
        }
    };

    let target_label = outcome.target.label.clone();
    let degraded = outcome.target.degraded;
    let deprecation = outcome
        .target
        .deprecated_after
        .as_ref()
        .filter(|d| d.warning(std::time::SystemTime::now(), live.route.deprecation_warning))
        .and_then(|d| {
            HeaderValue::try_from(format!(
                "{} is deprecated after {}",
                outcome.target.label(),
                d.date
            ))
            .ok()
        });
    let model = live.route.name.clone();
    let rate_limit_headers: Vec<_> = admission.iter().flat_map(|a| a.headers()).collect();
    let attempts = outcome.attempts;
    let first_token = matches!(outcome.served, Served::Stream(_)).then(|| started.elapsed());
    if let Some(ttft) = first_token {
        live.metrics.targets[outcome.target_index].first_token(ttft);
    }
    let mut log = RequestEnd {
        request_id: request_id.clone(),
        served: Some((outcome.target_index, target_label.clone())),
        first_token,
        attempts,
        stream,
        started,
        failures: state
            .request_log
            .get()
            .map(|_| failures_json(&outcome.failures)),
        content: request_text.map(|r| (r, None)),
        key,
        admission: None,
        live: Some(live),
        inflight,
    };
    // Held until the response ends (streams included): the concurrency slot
    // stays taken and the token estimate is reconciled with real usage.
    log.admission = admission;
    let mut response = match outcome.served {
        Served::Complete {
            status,
            content_type,
            body,
        } => {
            if let Some((_, response)) = log.content.as_mut() {
                *response = Some(String::from_utf8_lossy(&body).into_owned());
            }
            let outcome = if status.is_success() {
                "ok"
            } else {
                "upstream_client_error"
            };
            let usage = if status.is_success() {
                find_usage(&body)
            } else {
                None
            };
            let (status, body) = complete_body(status, body, inbound);
            // Logged when hyper drops the body, i.e. after the last byte was
            // written: formatting the line stays off the latency path.
            let body = LoggedBody {
                inner: http_body_util::Full::new(body),
                on_end: Some(Box::new(move || log.write(status.as_u16(), outcome, usage))),
            };
            let mut response = Response::new(Body::new(body));
            *response.status_mut() = status;
            if let Some(ct) = content_type {
                response.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            response
        }
        Served::Stream(mut start) => {
            let content_type = start.content_type.clone();
            let guard = start.guard.take();
            let on_end = {
                let state = state.clone();
                Box::new(move |how: StreamEnd, usage: Option<Usage>| {
                    let counter = match how {
                        StreamEnd::Completed => &state.counters.streams_completed,
                        StreamEnd::Cut(_) => &state.counters.streams_cut,
                        StreamEnd::ClientGone => &state.counters.client_disconnects,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if let (StreamEnd::Cut(_), Some(live)) = (how, &log.live) {
                        live.metrics.streams_cut.inc();
                    }
                    if let Some(guard) = guard {
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
                    log.write(200, how.as_str(), usage);
                })
            };
            let relay = Relay::new(*start, timeouts.idle, started + timeouts.total, on_end);
            let body = match inbound {
                Inbound::OpenAi => Body::from_stream(relay.into_stream()),
                Inbound::Anthropic => {
                    let mut to_anthropic = anthropic::ToAnthropicStream::new(&model);
                    Body::from_stream(relay.into_stream().flat_map(move |event| {
                        let mut out = Vec::new();
                        let Ok(event) = event;
                        to_anthropic.translate(&event, &mut out);
                        futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
                    }))
                }
            };
            let mut response = Response::new(body);
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, content_type);
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
    };
    let headers = response.headers_mut();
    headers.insert(X_REQUEST_ID, request_id);
    headers.insert(X_TARGET, target_label);
    headers.insert(X_ATTEMPTS, HeaderValue::from(attempts));
    if degraded {
        headers.insert(X_DEGRADED, HeaderValue::from_static("true"));
    }
    if let Some(deprecation) = deprecation {
        headers.insert(X_DEPRECATION, deprecation);
    }
    for (name, value) in rate_limit_headers {
        headers.insert(name, value);
    }
    response
}

/// The completion budget a request asked for, for the token estimate.
fn requested_max_tokens(body: &InspectedBody) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Peek {
        max_tokens: Option<u32>,
        max_completion_tokens: Option<u32>,
    }
    serde_json::from_slice::<Peek>(body.bytes())
        .ok()
        .and_then(|p| p.max_completion_tokens.or(p.max_tokens))
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

/// Everything the request's end needs: the log line, the request log row,
/// metrics, statistics and SLO counts are all recorded in `write`, for
/// served responses and gateway errors alike.
struct RequestEnd {
    request_id: HeaderValue,
    /// `None` when the request never resolved a route (bad input, unknown model).
    live: Option<Arc<LiveRoute>>,
    /// Index and label of the target that served, if one did.
    served: Option<(usize, HeaderValue)>,
    first_token: Option<std::time::Duration>,
    attempts: u32,
    stream: bool,
    started: Instant,
    /// The failed attempts as JSON, when the request log is on.
    failures: Option<String>,
    /// Request and response bodies, for routes with `log_content`.
    content: Option<(String, Option<String>)>,
    inflight: Inflight,
    /// The virtual key the request was made with (`None` with `auth = "none"`).
    key: Option<Arc<crate::keys::KeyInfo>>,
    /// The rate limiter's grant, released when this is dropped.
    admission: Option<crate::limits::Admission>,
}

impl RequestEnd {
    fn write(mut self, status: u16, outcome: &'static str, usage: Option<Usage>) {
        let state = &self.inflight.0;
        let latency = self.started.elapsed();
        let now = Instant::now();
        state.counters.count_status(status);
        let price = match (&self.live, &self.served) {
            (Some(live), Some((i, _))) => live.route.targets[*i].price,
            _ => None,
        };
        let cost_usd = usage.zip(price).map(|(u, p)| p.cost(u));
        if let (Some(admission), Some(usage)) = (&self.admission, usage) {
            let tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
            admission.reconcile(u32::try_from(tokens).unwrap_or(u32::MAX));
        }
        let key_name = self.key.as_ref().map_or("anonymous", |k| k.name.as_str());
        if let (Some(key), Some(cost), Some(keys)) = (&self.key, cost_usd, state.keys.get()) {
            keys.record_spend(key, cost);
        }
        // A cut stream failed the client; a client error did not fail the gateway.
        let failed = status >= 500 || outcome == "cut";
        match &self.live {
            None => state.metrics.unrouted(status, key_name),
            Some(live) => {
                match &self.key {
                    None => live.metrics.request_done(status, self.stream, latency),
                    Some(key) => {
                        live.metrics.request_duration(self.stream, latency);
                        state
                            .metrics
                            .keyed_request(&live.route.name, &key.name, status);
                    }
                }
                if let (Some(usage), Some((i, _))) = (usage, &self.served) {
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
                        error: (failed || status >= 400).then_some(outcome),
                        latency,
                        first_token: self.first_token,
                        cost_usd: cost_usd.unwrap_or(0.0),
                    },
                );
            }
        }
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
            status,
            stream: self.stream,
            outcome,
            latency,
            usage,
            cost_usd,
        };
        log_request(&line);
        if let (Some(request_log), Some(failures)) = (state.request_log.get(), &self.failures) {
            request_log.push(request_row(
                &line,
                failures.clone(),
                self.first_token,
                self.content.take(),
            ));
        }
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
    first_token: Option<std::time::Duration>,
    content: Option<(String, Option<String>)>,
) -> RequestRow {
    let (request_body, response_body) = match content {
        Some((request, response)) => (Some(request), response),
        None => (None, None),
    };
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
        cost_usd: line.cost_usd,
        request_body,
        response_body,
    }
}

/// A response body that runs `on_end` when hyper is done with it.
struct LoggedBody<B> {
    inner: B,
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

impl<B: http_body::Body + Unpin> http_body::Body for LoggedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}
