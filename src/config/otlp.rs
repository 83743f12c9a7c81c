//! `[telemetry.otlp]`: OpenTelemetry export, validated into [`OtlpConfig`].
//! Restart-only (`config::restart`): the exporters and their threads are
//! built once, at start.

use super::raw::RawOtlp;
use super::Issues;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

/// The most requests queued for export (`max_queue`).
const MAX_QUEUE: usize = 1 << 20;

#[derive(Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's base URL, without a trailing `/`; the signals are
    /// sent to `/v1/traces` and `/v1/metrics` under it.
    pub endpoint: String,
    /// Sent with every export (e.g. `authorization`); never shown by `Debug`.
    pub headers: HashMap<String, String>,
    pub service_name: String,
    /// Bound on each export (connect, send, answer).
    pub timeout: Duration,
    pub metrics_interval: Duration,
    /// How long finished spans wait to be sent together.
    pub traces_interval: Duration,
    /// Finished requests waiting for export at most; more are dropped.
    pub max_queue: usize,
}

impl OtlpConfig {
    pub fn signal_url(&self, path: &str) -> String {
        format!("{}/{path}", self.endpoint)
    }
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&String> = self.headers.keys().collect();
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("headers", &names)
            .field("service_name", &self.service_name)
            .field("timeout", &self.timeout)
            .field("metrics_interval", &self.metrics_interval)
            .field("traces_interval", &self.traces_interval)
            .field("max_queue", &self.max_queue)
            .finish()
    }
}

pub(super) fn validate(issues: &mut Issues, raw: Option<&RawOtlp>) -> Option<OtlpConfig> {
    let raw = raw?;
    let endpoint = endpoint(issues, raw.endpoint.as_deref());
    let headers = headers(issues, &raw.headers);
    let service_name = match raw.service_name.as_deref() {
        None => "switchyard".to_owned(),
        Some(name) if !name.is_empty() && name.len() <= 256 => name.to_owned(),
        Some(_) => {
            issues.push("telemetry.otlp.service_name", "must be 1 to 256 characters");
            "switchyard".to_owned()
        }
    };
    let timeout = issues.positive_duration(
        "telemetry.otlp.timeout".into(),
        raw.timeout.as_ref(),
        Duration::from_secs(10),
    );
    let metrics_interval = interval(
        issues,
        "metrics_interval",
        raw.metrics_interval.as_ref(),
        10,
    );
    let traces_interval = interval(issues, "traces_interval", raw.traces_interval.as_ref(), 5);
    let max_queue = match raw.max_queue {
        None => 2048,
        Some(n @ 1..=MAX_QUEUE) => n,
        Some(n) => {
            issues.push(
                "telemetry.otlp.max_queue",
                format!("{n} is outside 1..={MAX_QUEUE}"),
            );
            2048
        }
    };
    Some(OtlpConfig {
        endpoint: endpoint?,
        headers,
        service_name,
        timeout,
        metrics_interval,
        traces_interval,
        max_queue,
    })
}

fn endpoint(issues: &mut Issues, text: Option<&str>) -> Option<String> {
    let path = "telemetry.otlp.endpoint";
    let Some(text) = text else {
        issues.hint(
            path,
            "missing",
            "set the collector's OTLP/HTTP base URL, e.g. \"http://127.0.0.1:4318\"",
        );
        return None;
    };
    let uri: Option<http::Uri> = text.parse().ok();
    match uri {
        Some(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some()
                && u.query().is_none() =>
        {
            Some(text.trim_end_matches('/').to_owned())
        }
        // Not quoted back: a URL may carry credentials.
        _ => {
            issues.hint(
                path,
                "not an http or https URL",
                "the collector's base URL, e.g. \"http://127.0.0.1:4318\"; /v1/traces and /v1/metrics are added",
            );
            None
        }
    }
}

fn headers(
    issues: &mut Issues,
    raw: &std::collections::BTreeMap<String, String>,
) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (name, value) in raw {
        let path = format!("telemetry.otlp.headers.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            issues.push(path, "not a valid header name");
            continue;
        }
        // The value is never quoted back: it is usually a token.
        if http::HeaderValue::from_str(value).is_err() {
            issues.hint(
                path,
                "not a valid header value",
                "visible ASCII only, no line breaks",
            );
            continue;
        }
        out.insert(name.to_ascii_lowercase(), value.clone());
    }
    out
}

fn interval(issues: &mut Issues, key: &str, value: Option<&String>, default_secs: u64) -> Duration {
    let path = format!("telemetry.otlp.{key}");
    let d = issues.positive_duration(path.clone(), value, Duration::from_secs(default_secs));
    if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&d) {
        issues.hint(
            path,
            format!("{d:?} is outside 10ms..1h"),
            format!("the default is {default_secs}s"),
        );
        return Duration::from_secs(default_secs);
    }
    d
}
