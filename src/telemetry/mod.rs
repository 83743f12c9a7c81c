//! Telemetry: tracing setup, the one log line per request, and the gateway's
//! counters. It observes; it never changes what a request does. No field it
//! logs can hold a secret: keys live only in `config::ApiKey`.

pub mod alerts;
pub mod metrics;
pub mod otlp;
pub mod request_log;
pub mod sink;
pub mod slo;
pub mod stats;
pub mod status_line;
pub mod traceparent;

use crate::routing::EngineCounters;
use sink::BatchedStderr;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for collectors.
    Json,
    /// tracing's human-readable lines.
    Text,
}

/// `SWITCHYARD_LOG_FORMAT` (`json` or `text`) when set; otherwise text for
/// a person at a terminal and JSON for anything else (a pipe, a file, a
/// log collector).
pub fn log_format(setting: Option<&str>, stderr_is_terminal: bool) -> LogFormat {
    match setting {
        Some("json") => LogFormat::Json,
        Some("text") => LogFormat::Text,
        _ if stderr_is_terminal => LogFormat::Text,
        _ => LogFormat::Json,
    }
}

/// Logs go to stderr, as JSON lines unless stderr is a terminal (see
/// [`log_format`]); the level comes from `RUST_LOG`, else `default_level`.
/// Keep the returned guard alive until exit: dropping it flushes what is
/// buffered.
pub fn init_logging(default_level: &str) -> LogGuard {
    use std::io::IsTerminal;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let sink = BatchedStderr::start();
    let _ = SINK.set(sink.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sink.clone());
    let setting = std::env::var("SWITCHYARD_LOG_FORMAT").ok();
    let format = log_format(setting.as_deref(), std::io::stderr().is_terminal());
    let result = if format == LogFormat::Text {
        builder.try_init()
    } else {
        let installed = builder.json().flatten_event(true).try_init();
        if installed.is_ok() {
            let _ = JSON_REQUEST_SINK.set(sink.clone());
        }
        installed
    };
    // Already initialized (tests, embedding): keep the existing subscriber.
    drop(result);
    LogGuard(sink)
}

/// Flushes buffered log lines when dropped.
pub struct LogGuard(BatchedStderr);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// The process's sink, for [`finish_logging`].
static SINK: std::sync::OnceLock<BatchedStderr> = std::sync::OnceLock::new();

/// Writes out buffered log lines (waiting at most a second for a stalled
/// stderr), for an exit that skips destructors (`std::process::exit`).
pub fn finish_logging() {
    if let Some(sink) = SINK.get() {
        sink.finish();
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
    /// Certificate reloads of the TLS listeners that took effect / that
    /// were refused (a file that cannot serve; the running one stays).
    pub tls_reloads: AtomicU64,
    pub tls_reload_failures: AtomicU64,
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
            tls_reloads: get(&self.tls_reloads),
            tls_reload_failures: get(&self.tls_reload_failures),
            attempts: get(&self.engine.attempts),
            retries: get(&self.engine.retries),
            failovers: get(&self.engine.failovers),
            hedges: get(&self.engine.hedges),
            budget_refusals: get(&self.engine.budget_refusals),
            breaker_skips: get(&self.engine.breaker_skips),
            cooling_skips: get(&self.engine.cooling_skips),
            all_open: get(&self.engine.all_open),
            continuations: get(&self.engine.continuations),
            continuations_completed: get(&self.engine.continuations_completed),
            continuations_unavailable: get(&self.engine.continuations_unavailable),
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
    pub tls_reloads: u64,
    pub tls_reload_failures: u64,
    pub attempts: u64,
    pub retries: u64,
    pub failovers: u64,
    pub hedges: u64,
    pub budget_refusals: u64,
    pub breaker_skips: u64,
    /// Targets skipped while cooling after an upstream `Retry-After`.
    pub cooling_skips: u64,
    pub all_open: u64,
    pub continuations: u64,
    pub continuations_completed: u64,
    pub continuations_unavailable: u64,
}

/// The fields of the per-request log line.
pub struct RequestLine<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    pub target: &'a str,
    pub attempts: u32,
    /// The virtual key's name (`anonymous` without auth); never its secret.
    pub key: &'a str,
    pub status: u16,
    pub stream: bool,
    pub outcome: &'a str,
    pub latency: Duration,
    /// Tokens the upstream reported, or the gateway's estimate.
    pub usage: Option<crate::api::Usage>,
    /// `usage` is estimated: the upstream reported none (a cut stream, a
    /// client gone, an upstream that does not report usage).
    pub usage_estimated: bool,
    pub cost_usd: Option<f64>,
    /// A `tier = "degraded"` target served: `"slo"` when the route's SLO
    /// planned the request degraded-first, `"fallback"` when nothing
    /// better could serve.
    pub degraded: Option<&'static str>,
    /// The request's W3C trace id (hex), when OpenTelemetry export is on.
    pub trace_id: Option<String>,
}

/// Set when logs are JSON: request lines are then formatted here directly,
/// in the same shape tracing-subscriber's JSON layer writes. The generic
/// layer cost about 10 µs per request at p50 (BENCHMARKS.md); this path
/// costs about one.
static JSON_REQUEST_SINK: std::sync::OnceLock<BatchedStderr> = std::sync::OnceLock::new();

pub fn log_request(line: &RequestLine<'_>) {
    if !tracing::enabled!(target: "switchyard::request", tracing::Level::INFO) {
        return;
    }
    if let Some(sink) = JSON_REQUEST_SINK.get() {
        let mut out = Vec::with_capacity(320);
        write_json_line(&mut out, std::time::SystemTime::now(), line);
        let _ = sink.clone().write(&out);
        return;
    }
    tracing::info!(
        target: "switchyard::request",
        request_id = line.request_id,
        route = line.route,
        target_served = line.target,
        key = line.key,
        attempts = line.attempts,
        status = line.status,
        stream = line.stream,
        outcome = line.outcome,
        latency_ms = line.latency.as_secs_f64() * 1000.0,
        prompt_tokens = line.usage.map(|u| u.prompt_tokens),
        completion_tokens = line.usage.map(|u| u.completion_tokens),
        usage_estimated = line.usage_estimated,
        cost_usd = line.cost_usd,
        degraded = line.degraded,
        trace_id = line.trace_id.as_deref(),
        "request"
    );
}

/// One request as a JSON line, in the shape tracing-subscriber's JSON
/// layer writes:
/// `{"timestamp":..,"level":"INFO","message":"request","request_id":..,...}`.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    timestamp: Rfc3339,
    level: &'static str,
    message: &'static str,
    request_id: &'a str,
    route: &'a str,
    target_served: &'a str,
    key: &'a str,
    attempts: u32,
    status: u16,
    stream: bool,
    outcome: &'a str,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    usage_estimated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
    target: &'static str,
}

/// Rounded to `scale` decimals (1e3: microseconds of a millisecond).
fn rounded(value: f64, scale: f64) -> f64 {
    (value * scale).round() / scale
}

fn write_json_line(out: &mut Vec<u8>, now: std::time::SystemTime, line: &RequestLine<'_>) {
    let json = JsonLine {
        timestamp: Rfc3339(now),
        level: "INFO",
        message: "request",
        request_id: line.request_id,
        route: line.route,
        target_served: line.target,
        key: line.key,
        attempts: line.attempts,
        status: line.status,
        stream: line.stream,
        outcome: line.outcome,
        latency_ms: rounded(line.latency.as_secs_f64() * 1000.0, 1e3),
        prompt_tokens: line.usage.map(|u| u.prompt_tokens),
        completion_tokens: line.usage.map(|u| u.completion_tokens),
        usage_estimated: line.usage.is_some() && line.usage_estimated,
        cost_usd: line.cost_usd.map(|c| rounded(c, 1e8)),
        degraded: line.degraded,
        trace_id: line.trace_id.as_deref(),
        target: "switchyard::request",
    };
    // Serializing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &json);
    out.push(b'\n');
}

/// A log timestamp, serialized through [`write_rfc3339`].
struct Rfc3339(std::time::SystemTime);

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = Vec::with_capacity(27);
        write_rfc3339(&mut text, self.0);
        s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// `2026-11-25T13:48:40.646698Z` (UTC, microseconds).
fn write_rfc3339(out: &mut Vec<u8>, now: std::time::SystemTime) {
    use std::io::Write as _;
    let at = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    // The fields, not `strftime`: no format string to interpret per line.
    let t = jiff::tz::Offset::UTC.to_datetime(at);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.subsec_nanosecond() / 1_000
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_text_on_a_terminal_and_json_elsewhere_unless_told() {
        assert_eq!(log_format(None, true), LogFormat::Text);
        assert_eq!(log_format(None, false), LogFormat::Json);
        assert_eq!(log_format(Some("json"), true), LogFormat::Json);
        assert_eq!(log_format(Some("text"), false), LogFormat::Text);
        assert_eq!(log_format(Some("other"), false), LogFormat::Json);
    }

    #[test]
    fn json_request_line_is_valid_json_with_every_field() {
        let at = std::time::UNIX_EPOCH + Duration::from_micros(1_764_078_520_646_698);
        let mut out = Vec::new();
        write_json_line(
            &mut out,
            at,
            &RequestLine {
                request_id: "id-\"quoted\"\\",
                route: "chat-default",
                target: "openai/gpt-4o",
                attempts: 2,
                key: "billing-service",
                status: 200,
                stream: true,
                outcome: "completed",
                latency: Duration::from_micros(12_345),
                usage: Some(crate::api::Usage {
                    prompt_tokens: 10,
                    completion_tokens: 20,
                }),
                usage_estimated: false,
                cost_usd: Some(0.000225),
                degraded: Some("slo"),
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".to_owned()),
            },
        );
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2025-11-25T13:48:40.646698Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["request_id"], "id-\"quoted\"\\");
        assert_eq!(v["route"], "chat-default");
        assert_eq!(v["target_served"], "openai/gpt-4o");
        assert_eq!(v["key"], "billing-service");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["status"], 200);
        assert_eq!(v["stream"], true);
        assert_eq!(v["outcome"], "completed");
        assert_eq!(v["latency_ms"], 12.345);
        assert_eq!(v["prompt_tokens"], 10);
        assert_eq!(v["completion_tokens"], 20);
        assert_eq!(v["cost_usd"], 0.000225);
        assert_eq!(v["degraded"], "slo");
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn rfc3339_dates_across_leap_years_and_month_ends() {
        for (secs, want) in [
            (0u64, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (1_709_251_199, "2024-02-29T23:59:59.000000Z"),
            (4_102_444_800, "2100-01-01T00:00:00.000000Z"),
        ] {
            let mut out = Vec::new();
            write_rfc3339(&mut out, std::time::UNIX_EPOCH + Duration::from_secs(secs));
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }
}
