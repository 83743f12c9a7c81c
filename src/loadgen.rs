//! A small HTTP load driver for the demo, the benchmark and outage drills:
//! open-loop (fixed arrival rate) or closed-loop (fixed concurrency) chat
//! completion requests, mixed streaming and non-streaming, bounded in count
//! and time. It records what a client sees: status, latency, time to first
//! byte of streams, whether a stream ended cleanly, which target served.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
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
    /// Closed loop: number of workers. Open loop: cap on requests in flight.
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
}

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            base_url: String::new(),
            model: "chat-default".into(),
            rate: None,
            concurrency: 16,
            duration: Duration::from_secs(10),
            max_requests: u64::MAX,
            stream_share: 0.0,
            seed: 1,
            request_timeout: Duration::from_secs(60),
            api_key: None,
        }
    }
}

/// Counters readable while the load runs (for progress lines).
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    /// Non-2xx responses by status.
    pub by_status: BTreeMap<u16, u64>,
    /// Connection errors and client-side timeouts.
    pub transport_errors: u64,
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

    fn merge(&mut self, other: &LoadReport) {
        self.sent += other.sent;
        self.ok += other.ok;
        for (k, v) in &other.by_status {
            *self.by_status.entry(*k).or_default() += v;
        }
        self.transport_errors += other.transport_errors;
        self.streams_cut += other.streams_cut;
        self.streams_ok += other.streams_ok;
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.ttfb_us.add(&other.ttfb_us);
        for (k, v) in &other.served_by {
            *self.served_by.entry(k.clone()).or_default() += v;
        }
        self.gateway_attempts += other.gateway_attempts;
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(h) => h,
        Err(_) => unreachable!("constant bounds are valid"),
    }
}

type LoadClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> LoadClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector)
}

/// Runs the load and returns what the client saw.
pub async fn run(spec: &LoadSpec, live: Arc<Live>) -> LoadReport {
    let client = client();
    let url: http::Uri =
        match format!("{}/chat/completions", spec.base_url.trim_end_matches('/')).parse() {
            Ok(u) => u,
            Err(_) => return LoadReport::new(),
        };
    let bodies = RequestBodies::new(&spec.model, spec.api_key.as_deref());
    let started = Instant::now();
    let end = started + spec.duration;
    let report = Arc::new(Mutex::new(LoadReport::new()));
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    match spec.rate {
        None => {
            for w in 0..spec.concurrency.max(1) {
                let (client, url, bodies, live, report, issued) = (
                    client.clone(),
                    url.clone(),
                    bodies.clone(),
                    live.clone(),
                    report.clone(),
                    issued.clone(),
                );
                let spec = spec.clone();
                workers.push(tokio::spawn(async move {
                    let mut rng =
                        rand::rngs::SmallRng::seed_from_u64(spec.seed.wrapping_add(w as u64));
                    let mut local = LoadReport::new();
                    while Instant::now() < end
                        && issued.fetch_add(1, Ordering::Relaxed) < spec.max_requests
                    {
                        let stream = rng.random_bool(spec.stream_share.clamp(0.0, 1.0));
                        one_request(
                            &client,
                            &url,
                            &bodies,
                            stream,
                            spec.request_timeout,
                            &live,
                            &mut local,
                        )
                        .await;
                    }
                    lock(&report).merge(&local);
                }));
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let permits = Arc::new(tokio::sync::Semaphore::new(spec.concurrency.max(1)));
            let mut rng = rand::rngs::SmallRng::seed_from_u64(spec.seed);
            let mut next = started;
            let mut n = 0u64;
            while next < end && n < spec.max_requests {
                tokio::time::sleep_until(next).await;
                next += interval;
                n += 1;
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let stream = rng.random_bool(spec.stream_share.clamp(0.0, 1.0));
                let (client, url, bodies, live, report) = (
                    client.clone(),
                    url.clone(),
                    bodies.clone(),
                    live.clone(),
                    report.clone(),
                );
                let timeout = spec.request_timeout;
                workers.push(tokio::spawn(async move {
                    let mut local = LoadReport::new();
                    one_request(&client, &url, &bodies, stream, timeout, &live, &mut local).await;
                    lock(&report).merge(&local);
                    drop(permit);
                }));
                // Reap finished handles now and then so memory stays bounded.
                if workers.len() > 4096 {
                    workers.retain(|h| !h.is_finished());
                }
            }
        }
    }
    for w in workers {
        let _ = w.await;
    }
    let mut report = match Arc::try_unwrap(report) {
        Ok(m) => m.into_inner().unwrap_or_else(|p| p.into_inner()),
        Err(shared) => lock(&shared).clone(),
    };
    report.elapsed = started.elapsed();
    report
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
    fn new(model: &str, api_key: Option<&str>) -> Self {
        let make = |stream: bool| {
            Bytes::from(
                serde_json::json!({
                    "model": model,
                    "messages": [
                        {"role": "system", "content": "You are a concise assistant."},
                        {"role": "user", "content": "Say hello to the load test."}
                    ],
                    "max_tokens": 16,
                    "stream": stream
                })
                .to_string(),
            )
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

async fn one_request(
    client: &LoadClient,
    url: &http::Uri,
    bodies: &RequestBodies,
    stream: bool,
    timeout: Duration,
    live: &Live,
    report: &mut LoadReport,
) {
    live.sent.fetch_add(1, Ordering::Relaxed);
    live.in_flight.fetch_add(1, Ordering::Relaxed);
    report.sent += 1;
    let body = if stream {
        bodies.stream.clone()
    } else {
        bodies.plain.clone()
    };
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(url.clone())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(authorization) = &bodies.authorization {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let request = request.body(Full::new(body));
    let started = Instant::now();
    let outcome = match request {
        Ok(request) => tokio::time::timeout(timeout, exchange(client, request))
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    live.in_flight.fetch_sub(1, Ordering::Relaxed);
    let Some(Exchange {
        status,
        target,
        attempts,
        ttfb,
        clean,
    }) = outcome
    else {
        report.transport_errors += 1;
        live.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    if !status.is_success() {
        *report.by_status.entry(status.as_u16()).or_default() += 1;
        live.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if stream && !clean {
        report.streams_cut += 1;
        live.failed.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if stream {
        report.streams_ok += 1;
        let _ = report.ttfb_us.record(ttfb.as_micros().max(1) as u64);
    }
    report.ok += 1;
    live.ok.fetch_add(1, Ordering::Relaxed);
    let _ = report
        .latency_us
        .record(started.elapsed().as_micros().max(1) as u64);
    if let Some(t) = target {
        match report.served_by.get_mut(&t) {
            Some(n) => *n += 1,
            None => {
                report.served_by.insert(t, 1);
            }
        }
    }
    report.gateway_attempts += u64::from(attempts);
}

struct Exchange {
    status: StatusCode,
    target: Option<String>,
    attempts: u32,
    ttfb: Duration,
    /// A stream ended with `[DONE]` and no error event.
    clean: bool,
}

async fn exchange(client: &LoadClient, request: Request<Full<Bytes>>) -> Option<Exchange> {
    let started = Instant::now();
    let response = client.request(request).await.ok()?;
    let status = response.status();
    let headers = response.headers();
    let target = headers
        .get("x-switchyard-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let attempts = headers
        .get("x-switchyard-attempts")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut body = response.into_body();
    let mut ttfb = None;
    let mut tail: Vec<u8> = Vec::new();
    let mut saw_error = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Ok(data) = frame.into_data() {
            ttfb.get_or_insert_with(|| started.elapsed());
            saw_error |= memchr::memmem::find(&data, b"\"error\"").is_some();
            tail.extend_from_slice(&data);
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
        }
    }
    let clean = !saw_error && tail.ends_with(b"data: [DONE]\n\n");
    Some(Exchange {
        status,
        target,
        attempts,
        ttfb: ttfb.unwrap_or_else(|| started.elapsed()),
        clean,
    })
}
