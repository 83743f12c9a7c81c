//! A small HTTP load driver for the demo, the benchmark and outage drills:
//! open-loop (constant or Poisson arrivals at a fixed rate) or closed-loop
//! (fixed concurrency) chat completion requests, mixed streaming and
//! non-streaming, bounded in count and time. It records what a client sees:
//! status, latency, time to first byte of streams, whether a stream ended
//! cleanly, which target served. An [`Observer`] sees every request's
//! outcome as it completes (the drill buckets them by time and phase).
//!
//! Per request the driver does one task spawn, one HTTP exchange and one
//! short lock to record the outcome: at several thousand requests per second
//! on two cores shared with the gateway, anything heavier (allocating
//! histograms per request, a timer per arrival) shows up as lost rate.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `http://HOST:PORT/v1`.
    pub base_url: String,
    pub model: String,
    /// Requests per second (open loop); `None` = closed loop at `concurrency`.
    pub rate: Option<f64>,
    /// How open-loop arrivals are spaced.
    pub arrival: Arrival,
    /// Closed loop: number of workers. Open loop: cap on requests in flight
    /// (an arrival beyond the cap waits for a free slot).
    pub concurrency: usize,
    pub duration: Duration,
    pub max_requests: u64,
    /// Fraction of requests sent with `"stream": true`.
    pub stream_share: f64,
    pub seed: u64,
    /// Per-request timeout on the client side.
    pub request_timeout: Duration,
    /// A virtual key, sent as `Authorization: Bearer`.
    pub api_key: Option<String>,
    /// Which API the requests speak.
    pub api: LoadApi,
}

/// The API a load run speaks: the same short prompt either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadApi {
    #[default]
    ChatCompletions,
    /// `POST /responses`; streams are judged like chat's only for their
    /// status (they end with `response.completed`, not `[DONE]`), so use it
    /// for non-stream runs.
    Responses,
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            base_url: String::new(),
            model: "chat-default".into(),
            rate: None,
            arrival: Arrival::Constant,
            concurrency: 16,
            duration: Duration::from_secs(10),
            max_requests: u64::MAX,
            stream_share: 0.0,
            seed: 1,
            request_timeout: Duration::from_secs(60),
            api_key: None,
            api: LoadApi::ChatCompletions,
        }
    }
}

/// Spacing of open-loop arrivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arrival {
    /// Evenly spaced, `1 / rate` apart.
    #[default]
    Constant,
    /// Exponentially distributed gaps with mean `1 / rate` (a Poisson
    /// process): bursts and lulls like independent clients produce.
    Poisson,
}

/// Counters readable while the load runs (for progress lines).
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
}

/// How one request ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    /// 2xx, and for a stream a clean `[DONE]` without an error event.
    Ok,
    /// A non-2xx response.
    Status(u16),
    /// A 2xx stream that ended with an error event or without `[DONE]`.
    StreamCut,
    /// The connection could not be made: the request never reached a server.
    Refused,
    /// The connection failed after it was made (reset, closed early).
    Transport,
    /// No complete answer within `request_timeout`.
    Timeout,
}

/// One finished request, handed to the [`Observer`].
#[derive(Debug, Clone)]
pub struct RequestOutcome {
    /// When the request was issued (Tokio's clock).
    pub started: Instant,
    pub stream: bool,
    pub result: RequestResult,
    /// Until the body ended, or until the failure.
    pub latency: Duration,
    /// Until the first body byte of a 2xx response.
    pub ttfb: Option<Duration>,
    /// `x-switchyard-target` of the response.
    pub target: Option<HeaderValue>,
    /// `x-switchyard-attempts` of the response (1 when absent).
    pub attempts: u32,
}

/// Sees every request's outcome as it completes, on the task that ran it:
/// keep it short (a lock held for a few record calls is fine).
pub trait Observer: Send + Sync {
    fn observe(&self, outcome: &RequestOutcome);
}

#[derive(Debug, Clone)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    /// Non-2xx responses by status.
    pub by_status: BTreeMap<u16, u64>,
    /// Connection errors and client-side timeouts.
    pub transport_errors: u64,
    /// Of `transport_errors`: connections that could not be made at all.
    pub refused: u64,
    /// Of `transport_errors`: requests cut off by `request_timeout`.
    pub timeouts: u64,
    /// Streams that ended with an error event or without `[DONE]`.
    pub streams_cut: u64,
    pub streams_ok: u64,
    /// Microseconds, successful requests only.
    pub latency_us: Histogram<u64>,
    /// Microseconds to the first body byte, successful streams only.
    pub ttfb_us: Histogram<u64>,
    /// `x-switchyard-target` of successful responses.
    pub served_by: BTreeMap<String, u64>,
    /// Sum of `x-switchyard-attempts` over successful responses.
    pub gateway_attempts: u64,
    pub elapsed: Duration,
}

impl LoadReport {
    fn new() -> Self {
        LoadReport {
            sent: 0,
            ok: 0,
            by_status: BTreeMap::new(),
            transport_errors: 0,
            refused: 0,
            timeouts: 0,
            streams_cut: 0,
            streams_ok: 0,
            latency_us: new_histogram(),
            ttfb_us: new_histogram(),
            served_by: BTreeMap::new(),
            gateway_attempts: 0,
            elapsed: Duration::ZERO,
        }
    }

    pub fn success_ratio(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.ok as f64 / self.sent as f64
    }

    pub fn throughput(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn record(&mut self, outcome: &RequestOutcome) {
        self.sent += 1;
        match outcome.result {
            RequestResult::Ok => {}
            RequestResult::Status(status) => {
                *self.by_status.entry(status).or_default() += 1;
                return;
            }
            RequestResult::StreamCut => {
                self.streams_cut += 1;
                return;
            }
            RequestResult::Refused | RequestResult::Transport | RequestResult::Timeout => {
                self.transport_errors += 1;
                self.refused += u64::from(outcome.result == RequestResult::Refused);
                self.timeouts += u64::from(outcome.result == RequestResult::Timeout);
                return;
            }
        }
        self.ok += 1;
        if outcome.stream {
            self.streams_ok += 1;
            if let Some(ttfb) = outcome.ttfb {
                let _ = self.ttfb_us.record(micros(ttfb));
            }
        }
        let _ = self.latency_us.record(micros(outcome.latency));
        if let Some(target) = outcome.target.as_ref().and_then(|t| t.to_str().ok()) {
            match self.served_by.get_mut(target) {
                Some(n) => *n += 1,
                None => {
                    self.served_by.insert(target.to_owned(), 1);
                }
            }
        }
        self.gateway_attempts += u64::from(outcome.attempts);
    }
}

/// Whole microseconds, at least 1 (the histograms' lowest value).
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(h) => h,
        #[allow(clippy::unreachable, reason = "constant bounds hdrhistogram accepts")]
        Err(_) => unreachable!("constant bounds are valid"),
    }
}

pub type LoadClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> LoadClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector)
}

/// Runs the load and returns what the client saw.
pub async fn run(spec: &LoadSpec, live: Arc<Live>) -> LoadReport {
    run_observed(spec, live, None).await
}

/// What every request task shares.
struct Shared {
    client: LoadClient,
    url: http::Uri,
    bodies: RequestBodies,
    timeout: Duration,
    live: Arc<Live>,
    report: Mutex<LoadReport>,
    observer: Option<Arc<dyn Observer>>,
}

impl Shared {
    async fn request(&self, stream: bool) {
        let outcome = one_request(self, stream).await;
        if let Some(observer) = &self.observer {
            observer.observe(&outcome);
        }
        lock(&self.report).record(&outcome);
    }
}

/// Like [`run`], and `observer` sees each request as it completes.
pub async fn run_observed(
    spec: &LoadSpec,
    live: Arc<Live>,
    observer: Option<Arc<dyn Observer>>,
) -> LoadReport {
    let path = match spec.api {
        LoadApi::ChatCompletions => "chat/completions",
        LoadApi::Responses => "responses",
    };
    let url: http::Uri = match format!("{}/{path}", spec.base_url.trim_end_matches('/')).parse() {
        Ok(u) => u,
        Err(_) => return LoadReport::new(),
    };
    let shared = Arc::new(Shared {
        client: client(),
        url,
        bodies: RequestBodies::new(&spec.model, spec.api_key.as_deref(), spec.api),
        timeout: spec.request_timeout,
        live,
        report: Mutex::new(LoadReport::new()),
        observer,
    });
    let started = Instant::now();
    // A duration too large for the clock means "until max_requests".
    let end = started
        .checked_add(spec.duration)
        .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400));
    let stream_share = if spec.stream_share.is_nan() {
        0.0
    } else {
        spec.stream_share.clamp(0.0, 1.0)
    };
    match spec.rate {
        None => closed_loop(spec, &shared, end, stream_share).await,
        Some(rate) => open_loop(spec, &shared, rate, started, end, stream_share).await,
    }
    let mut report = lock(&shared.report).clone();
    report.elapsed = started.elapsed();
    report
}

async fn closed_loop(spec: &LoadSpec, shared: &Arc<Shared>, end: Instant, stream_share: f64) {
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..spec.concurrency.max(1) {
        let shared = shared.clone();
        let issued = issued.clone();
        let (seed, max_requests) = (spec.seed.wrapping_add(w as u64), spec.max_requests);
        workers.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed);
            while Instant::now() < end && issued.fetch_add(1, Ordering::Relaxed) < max_requests {
                shared.request(rng.random_bool(stream_share)).await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
}

/// Arrivals are issued by one scheduler that wakes at most once per timer
/// tick (1 ms) and sends every arrival that is due: a timer per arrival
/// would cost more than the request at high rates, and a late wake-up
/// catches up instead of lowering the rate.
async fn open_loop(
    spec: &LoadSpec,
    shared: &Arc<Shared>,
    rate: f64,
    started: Instant,
    end: Instant,
    stream_share: f64,
) {
    let cap = u32::try_from(spec.concurrency.max(1)).unwrap_or(u32::MAX);
    let permits = Arc::new(tokio::sync::Semaphore::new(cap as usize));
    let mut schedule = Schedule::new(rate, spec.arrival, spec.seed);
    let mut mix = SmallRng::seed_from_u64(spec.seed.wrapping_add(0x5EED));
    let mut issued = 0u64;
    while issued < spec.max_requests {
        let due = match started.checked_add(schedule.next_offset()) {
            Some(due) if due < end => due,
            _ => break,
        };
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        issued += 1;
        schedule.advance();
        let stream = mix.random_bool(stream_share);
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.request(stream).await;
            drop(permit);
        });
    }
    // Every slot free again means every request has finished.
    let _ = permits.acquire_many(cap).await;
}

/// Offsets of open-loop arrivals from the start.
struct Schedule {
    rate: f64,
    arrival: Arrival,
    rng: SmallRng,
    /// Offset of the next arrival, in seconds.
    next: f64,
    count: u64,
}

impl Schedule {
    fn new(rate: f64, arrival: Arrival, seed: u64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate.max(0.001)
        } else {
            0.001
        };
        let mut schedule = Schedule {
            rate,
            arrival,
            rng: SmallRng::seed_from_u64(seed),
            next: 0.0,
            count: 0,
        };
        if arrival == Arrival::Poisson {
            schedule.next = schedule.gap();
        }
        schedule
    }

    fn gap(&mut self) -> f64 {
        // 1 - U is in (0, 1], so the logarithm is finite.
        let u: f64 = self.rng.random();
        -(1.0 - u).ln() / self.rate
    }

    fn next_offset(&self) -> Duration {
        Duration::try_from_secs_f64(self.next).unwrap_or(Duration::MAX)
    }

    fn advance(&mut self) {
        self.count += 1;
        self.next = match self.arrival {
            // From the count, not by summing: no drift over millions of arrivals.
            Arrival::Constant => self.count as f64 / self.rate,
            Arrival::Poisson => self.next + self.gap(),
        };
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Clone)]
struct RequestBodies {
    plain: Bytes,
    stream: Bytes,
    authorization: Option<http::HeaderValue>,
}

impl RequestBodies {
    fn new(model: &str, api_key: Option<&str>, api: LoadApi) -> Self {
        let make = |stream: bool| {
            let body = match api {
                LoadApi::ChatCompletions => serde_json::json!({
                    "model": model,
                    "messages": [
                        {"role": "system", "content": "You are a concise assistant."},
                        {"role": "user", "content": "Say hello to the load test."}
                    ],
                    "max_tokens": 16,
                    "stream": stream
                }),
                LoadApi::Responses => serde_json::json!({
                    "model": model,
                    "instructions": "You are a concise assistant.",
                    "input": "Say hello to the load test.",
                    "max_output_tokens": 16,
                    "store": false,
                    "stream": stream
                }),
            };
            Bytes::from(body.to_string())
        };
        RequestBodies {
            plain: make(false),
            stream: make(true),
            authorization: api_key.and_then(|k| {
                let mut value = http::HeaderValue::try_from(format!("Bearer {k}")).ok()?;
                value.set_sensitive(true);
                Some(value)
            }),
        }
    }
}

async fn one_request(shared: &Shared, stream: bool) -> RequestOutcome {
    let live = &shared.live;
    live.sent.fetch_add(1, Ordering::Relaxed);
    live.in_flight.fetch_add(1, Ordering::Relaxed);
    let body = if stream {
        shared.bodies.stream.clone()
    } else {
        shared.bodies.plain.clone()
    };
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(shared.url.clone())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(authorization) = &shared.bodies.authorization {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let request = request.body(Full::new(body));
    let started = Instant::now();
    let exchanged = match request {
        Ok(request) => tokio::time::timeout(shared.timeout, exchange(&shared.client, request))
            .await
            .unwrap_or(Err(RequestResult::Timeout)),
        Err(_) => Err(RequestResult::Transport),
    };
    let latency = started.elapsed();
    live.in_flight.fetch_sub(1, Ordering::Relaxed);
    let mut outcome = RequestOutcome {
        started,
        stream,
        result: RequestResult::Ok,
        latency,
        ttfb: None,
        target: None,
        attempts: 1,
    };
    match exchanged {
        Err(result) => outcome.result = result,
        Ok(exchange) => {
            outcome.result = if !exchange.status.is_success() {
                RequestResult::Status(exchange.status.as_u16())
            } else if stream && !exchange.clean {
                RequestResult::StreamCut
            } else {
                RequestResult::Ok
            };
            outcome.ttfb = exchange.ttfb;
            outcome.target = exchange.target;
            outcome.attempts = exchange.attempts;
        }
    }
    let counter = if outcome.result == RequestResult::Ok {
        &live.ok
    } else {
        &live.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    outcome
}

struct Exchange {
    status: StatusCode,
    target: Option<HeaderValue>,
    attempts: u32,
    ttfb: Option<Duration>,
    /// A stream ended with `[DONE]` and no error event.
    clean: bool,
}

/// `[DONE]` plus its framing fits in this many trailing bytes.
const TAIL: usize = 64;

async fn exchange(
    client: &LoadClient,
    request: Request<Full<Bytes>>,
) -> Result<Exchange, RequestResult> {
    let started = Instant::now();
    let response = client.request(request).await.map_err(|e| {
        if e.is_connect() {
            RequestResult::Refused
        } else {
            RequestResult::Transport
        }
    })?;
    let (mut parts, mut body) = response.into_parts();
    let target = parts.headers.remove("x-switchyard-target");
    let attempts = parts
        .headers
        .get("x-switchyard-attempts")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut ttfb = None;
    let mut tail = [0u8; TAIL];
    let mut tail_len = 0;
    let mut saw_error = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| RequestResult::Transport)?;
        if let Ok(data) = frame.into_data() {
            ttfb.get_or_insert_with(|| started.elapsed());
            saw_error |= memchr::memmem::find(&data, b"\"error\"").is_some();
            tail_len = push_tail(&mut tail, tail_len, &data);
        }
    }
    let clean = !saw_error
        && tail
            .get(..tail_len)
            .is_some_and(|t| t.ends_with(b"data: [DONE]\n\n"));
    Ok(Exchange {
        status: parts.status,
        target,
        attempts,
        ttfb: parts
            .status
            .is_success()
            .then(|| ttfb.unwrap_or_else(|| started.elapsed())),
        clean,
    })
}

/// Keeps the last `TAIL` bytes seen in `tail` without allocating; returns
/// the new length.
fn push_tail(tail: &mut [u8; TAIL], len: usize, data: &[u8]) -> usize {
    if data.len() >= TAIL {
        tail.copy_from_slice(&data[data.len() - TAIL..]);
        return TAIL;
    }
    let keep = (TAIL - data.len()).min(len);
    tail.copy_within(len - keep..len, 0);
    tail[keep..keep + data.len()].copy_from_slice(data);
    keep + data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_across_chunks() {
        let mut tail = [0u8; TAIL];
        let mut len = 0;
        let mut all = Vec::new();
        for chunk in [
            &b"data: {\"a\":1}\n\n"[..],
            &[b'x'; 100],
            b"da",
            b"ta: [DONE]\n\n",
        ] {
            len = push_tail(&mut tail, len, chunk);
            all.extend_from_slice(chunk);
            let expected = &all[all.len().saturating_sub(TAIL)..];
            assert_eq!(&tail[..len], expected);
        }
        assert!(tail[..len].ends_with(b"data: [DONE]\n\n"));
    }

    #[test]
    fn constant_schedule_is_exact_and_poisson_keeps_the_mean_rate() {
        let mut constant = Schedule::new(1000.0, Arrival::Constant, 1);
        for _ in 0..5000 {
            constant.advance();
        }
        assert_eq!(constant.next_offset(), Duration::from_secs(5));

        let mut poisson = Schedule::new(1000.0, Arrival::Poisson, 1);
        let mut previous = poisson.next_offset();
        let mut gaps_differ = false;
        for _ in 0..10_000 {
            poisson.advance();
            let next = poisson.next_offset();
            assert!(next >= previous);
            gaps_differ |= next - previous != Duration::from_millis(1);
            previous = next;
        }
        // 10,000 arrivals at 1,000/s take about 10 s (σ ≈ 0.1 s).
        let secs = poisson.next_offset().as_secs_f64();
        assert!((9.5..10.5).contains(&secs), "{secs}");
        assert!(gaps_differ);
    }

    #[tokio::test]
    async fn refused_connections_are_told_apart_and_a_huge_duration_is_fine() {
        // Nothing listens on the discard port of loopback.
        let spec = LoadSpec {
            base_url: "http://127.0.0.1:9/v1".to_owned(),
            concurrency: 2,
            max_requests: 4,
            duration: Duration::MAX,
            ..LoadSpec::default()
        };
        let report = run(&spec, Arc::new(Live::default())).await;
        assert_eq!(report.sent, 4);
        assert_eq!(report.refused, 4);
        assert_eq!(report.transport_errors, 4);
        assert_eq!(report.ok, 0);
    }

    #[test]
    fn a_nonsense_rate_does_not_panic() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let mut s = Schedule::new(rate, Arrival::Poisson, 3);
            s.advance();
            let _ = s.next_offset();
        }
    }
}
