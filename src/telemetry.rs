//! Telemetry: tracing setup, the one log line per request, and the gateway's
//! counters. It observes; it never changes what a request does. No field it
//! logs can hold a secret: keys live only in `config::ApiKey`.

use crate::routing::EngineCounters;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// Logs go to stderr as JSON lines (`SWITCHYARD_LOG_FORMAT=text` for humans);
/// the level comes from `RUST_LOG`, else `default_level`. Keep the returned
/// guard alive until exit: dropping it flushes what is buffered.
pub fn init_logging(default_level: &str) -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let sink = BatchedStderr::start();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink.clone());
    let result = if std::env::var("SWITCHYARD_LOG_FORMAT").as_deref() == Ok("text") {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
    // Already initialized (tests, embedding): keep the existing subscriber.
    drop(result);
    LogGuard(sink)
}

/// A stderr writer that batches lines: a request appends its line to a shared
/// buffer (one short lock), and a background thread writes the buffer out
/// every 50 ms or as soon as it passes 64 KiB. One `write` per request (and
/// the wake-ups of a per-line log thread) measured at about a third of the
/// gateway's syscall time under load; batching removes it. A crash can lose
/// at most the last 50 ms of log lines; a normal exit flushes them.
#[derive(Clone)]
pub struct BatchedStderr(Arc<BatchState>);

struct BatchState {
    buffer: Mutex<Vec<u8>>,
    wake: Condvar,
    stopped: AtomicBool,
}

const LOG_FLUSH_EVERY: Duration = Duration::from_millis(50);
const LOG_FLUSH_BYTES: usize = 64 << 10;

impl BatchedStderr {
    fn start() -> Self {
        let sink = BatchedStderr(Arc::new(BatchState {
            buffer: Mutex::new(Vec::with_capacity(LOG_FLUSH_BYTES * 2)),
            wake: Condvar::new(),
            stopped: AtomicBool::new(false),
        }));
        let state = sink.0.clone();
        let spawned = std::thread::Builder::new()
            .name("switchyard-log".into())
            .spawn(move || loop {
                let pending = {
                    let guard = state.buffer.lock().unwrap_or_else(|p| p.into_inner());
                    let (mut guard, _) = state
                        .wake
                        .wait_timeout_while(guard, LOG_FLUSH_EVERY, |b| {
                            b.len() < LOG_FLUSH_BYTES && !state.stopped.load(Ordering::Relaxed)
                        })
                        .unwrap_or_else(|p| p.into_inner());
                    std::mem::replace(&mut *guard, Vec::with_capacity(LOG_FLUSH_BYTES * 2))
                };
                if !pending.is_empty() {
                    let _ = std::io::stderr().lock().write_all(&pending);
                }
                if state.stopped.load(Ordering::Relaxed) {
                    return;
                }
            });
        if spawned.is_err() {
            // No thread: write through (flush() below writes everything).
            sink.0.stopped.store(true, Ordering::Relaxed);
        }
        sink
    }

    fn flush_now(&self) {
        let pending = std::mem::take(&mut *self.0.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        if !pending.is_empty() {
            let _ = std::io::stderr().lock().write_all(&pending);
        }
    }
}

impl Write for BatchedStderr {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let len = {
            let mut buffer = self.0.buffer.lock().unwrap_or_else(|p| p.into_inner());
            buffer.extend_from_slice(bytes);
            buffer.len()
        };
        if self.0.stopped.load(Ordering::Relaxed) {
            self.flush_now();
        } else if len >= LOG_FLUSH_BYTES {
            self.0.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStderr {
    type Writer = BatchedStderr;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Flushes buffered log lines when dropped.
pub struct LogGuard(BatchedStderr);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0 .0.stopped.store(true, Ordering::Relaxed);
        self.0 .0.wake.notify_one();
        self.0.flush_now();
    }
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
    pub config_reloads: AtomicU64,
    pub config_reload_failures: AtomicU64,
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
            config_reloads: get(&self.config_reloads),
            config_reload_failures: get(&self.config_reload_failures),
            attempts: get(&self.engine.attempts),
            retries: get(&self.engine.retries),
            failovers: get(&self.engine.failovers),
            hedges: get(&self.engine.hedges),
            budget_refusals: get(&self.engine.budget_refusals),
            breaker_skips: get(&self.engine.breaker_skips),
            all_open: get(&self.engine.all_open),
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
    pub config_reloads: u64,
    pub config_reload_failures: u64,
    pub attempts: u64,
    pub retries: u64,
    pub failovers: u64,
    pub hedges: u64,
    pub budget_refusals: u64,
    pub breaker_skips: u64,
    pub all_open: u64,
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
