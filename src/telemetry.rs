//! Telemetry: tracing setup, the one log line per request, and the gateway's
//! counters. It observes; it never changes what a request does. No field it
//! logs can hold a secret: keys live only in `config::ApiKey`.

use crate::routing::EngineCounters;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Logs go to stderr as JSON lines (`SWITCHYARD_LOG_FORMAT=text` for humans);
/// the level comes from `RUST_LOG` (default `info`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = if std::env::var("SWITCHYARD_LOG_FORMAT").as_deref() == Ok("text") {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
    // Already initialized (tests, embedding): keep the existing subscriber.
    drop(result);
}

#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub responses_2xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub streams_completed: AtomicU64,
    pub streams_cut: AtomicU64,
    pub client_disconnects: AtomicU64,
    pub engine: EngineCounters,
}

impl Counters {
    pub fn count_status(&self, status: u16) {
        let counter = match status {
            200..=299 => &self.responses_2xx,
            400..=499 => &self.responses_4xx,
            _ => &self.responses_5xx,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            requests: get(&self.requests),
            responses_2xx: get(&self.responses_2xx),
            responses_4xx: get(&self.responses_4xx),
            responses_5xx: get(&self.responses_5xx),
            streams_completed: get(&self.streams_completed),
            streams_cut: get(&self.streams_cut),
            client_disconnects: get(&self.client_disconnects),
            attempts: get(&self.engine.attempts),
            retries: get(&self.engine.retries),
            failovers: get(&self.engine.failovers),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CountersSnapshot {
    pub requests: u64,
    pub responses_2xx: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    pub streams_completed: u64,
    pub streams_cut: u64,
    pub client_disconnects: u64,
    pub attempts: u64,
    pub retries: u64,
    pub failovers: u64,
}

/// The fields of the per-request log line.
pub struct RequestLine<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub target: &'a str,
    pub attempts: u32,
    pub status: u16,
    pub stream: bool,
    pub outcome: &'a str,
    pub latency: Duration,
}

pub fn log_request(line: &RequestLine<'_>) {
    tracing::info!(
        target: "switchyard::request",
        request_id = line.request_id,
        route = line.route,
        target_served = line.target,
        attempts = line.attempts,
        status = line.status,
        stream = line.stream,
        outcome = line.outcome,
        latency_ms = line.latency.as_secs_f64() * 1000.0,
        "request"
    );
}
