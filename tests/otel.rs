//! OpenTelemetry export, against an OTLP/HTTP receiver inside the test that
//! decodes the protobuf (`opentelemetry-proto` + prost): one trace per
//! request with a span per upstream attempt and the GenAI attributes, the
//! client's `traceparent` kept and passed upstream with each attempt's span
//! as parent, the trace id in the request log, the GenAI metrics with the
//! numbers Prometheus has; and with the exporter off, no trace context at all.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::*;
use http::{Method, StatusCode};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, Metric};
use opentelemetry_proto::tonic::trace::v1::{span, Span};
use prost::Message as _;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard::config::Config;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// What the collector received, decoded.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    metrics: Vec<Metric>,
    service_names: HashSet<String>,
    authorization: Vec<String>,
}

#[derive(Clone)]
struct Collector(Arc<Mutex<Received>>);

impl Collector {
    async fn start() -> (Collector, String) {
        let collector = Collector(Arc::default());
        let app = axum::Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(collector.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (collector, url)
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap().spans.clone()
    }

    /// The latest export of the metric `name` (cumulative).
    fn metric(&self, name: &str) -> Option<Metric> {
        let got = self.0.lock().unwrap();
        got.metrics.iter().rev().find(|m| m.name == name).cloned()
    }
}

async fn traces(State(c): State<Collector>, headers: http::HeaderMap, body: Bytes) -> StatusCode {
    let request = ExportTraceServiceRequest::decode(body).expect("OTLP trace protobuf");
    let mut got = c.0.lock().unwrap();
    note_headers(&mut got, &headers);
    for resource in request.resource_spans {
        if let Some(r) = &resource.resource {
            got.service_names
                .extend(string_attr(&r.attributes, "service.name"));
        }
        for scope in resource.scope_spans {
            got.spans.extend(scope.spans);
        }
    }
    StatusCode::OK
}

async fn metrics(State(c): State<Collector>, headers: http::HeaderMap, body: Bytes) -> StatusCode {
    let request = ExportMetricsServiceRequest::decode(body).expect("OTLP metrics protobuf");
    let mut got = c.0.lock().unwrap();
    note_headers(&mut got, &headers);
    for resource in request.resource_metrics {
        for scope in resource.scope_metrics {
            got.metrics.extend(scope.metrics);
        }
    }
    StatusCode::OK
}

fn note_headers(got: &mut Received, headers: &http::HeaderMap) {
    if let Some(v) = headers.get("authorization") {
        got.authorization.push(v.to_str().unwrap().to_owned());
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        any_value::Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn otlp_config(collector: &str) -> String {
    otlp_config_every(collector, "50ms", "100ms")
}

fn otlp_config_every(collector: &str, traces: &str, metrics: &str) -> String {
    format!(
        "[telemetry.otlp]\nendpoint = \"{collector}\"\nservice_name = \"gateway-under-test\"\n\
         headers = {{ authorization = \"Bearer otlp-secret\" }}\n\
         traces_interval = \"{traces}\"\nmetrics_interval = \"{metrics}\"\ntimeout = \"2s\"\n"
    )
}

/// Waits (bounded) until the collector holds `n` spans of the trace.
async fn spans_of(collector: &Collector, trace: &str, n: usize) -> Vec<Span> {
    for _ in 0..500 {
        let spans: Vec<Span> = collector
            .spans()
            .into_iter()
            .filter(|s| hex(&s.trace_id) == trace)
            .collect();
        if spans.len() >= n {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {n} spans of trace {trace} arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_primary_then_a_backup_is_one_trace_with_a_span_per_attempt() {
    let (collector, collector_url) = Collector::start().await;
    let primary = sim_with("otel-primary", failing(500)).await;
    let backup = sim("otel-backup").await;
    let dir = std::env::temp_dir().join(format!("switchyard-otel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("log.db");
    let _ = std::fs::remove_file(&db);
    let url = format!("sqlite://{}", db.display());
    let extra = format!(
        "{FAST}\n[store]\nurl = \"{url}\"\n[request_log]\nenabled = true\n{}",
        otlp_config(&collector_url)
    );
    let gw = gateway(&[&primary, &backup], &extra).await;

    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = traced_chat(
        &gw,
        false,
        &[
            ("traceparent", &traceparent),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let usage = reply.json()["usage"].clone();
    let (input, output) = (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    );

    // Two tries at the primary (a retry), then the backup: three attempt
    // spans under the gateway's server span, all in the client's trace.
    let spans = spans_of(&collector, CLIENT_TRACE, 4).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let root = spans
        .iter()
        .find(|s| s.kind == span::SpanKind::Server as i32)
        .expect("a server span");
    assert_eq!(
        hex(&root.parent_span_id),
        CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(root.name, "chat chat-default");
    let a = &root.attributes;
    assert_eq!(
        string_attr(a, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        string_attr(a, "gen_ai.request.model").as_deref(),
        Some("chat-default")
    );
    assert_eq!(
        string_attr(a, "gen_ai.response.model").as_deref(),
        Some("gpt-4o")
    );
    assert_eq!(
        string_attr(a, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(int_attr(a, "http.response.status_code"), Some(200));
    assert_eq!(int_attr(a, "gen_ai.usage.input_tokens"), Some(input));
    assert_eq!(int_attr(a, "gen_ai.usage.output_tokens"), Some(output));
    assert_eq!(string_attr(a, "error.type"), None);
    assert_eq!(
        string_attr(a, "switchyard.request_id").as_deref(),
        reply.header("x-request-id")
    );
    assert_eq!(root.trace_state, "congo=t61rcWkgMzE");

    let (attempts, kinds) = attempt_spans(&spans);
    assert_eq!(kinds, ["first", "retry", "failover"]);
    let primary_port = i64::from(url_port(&primary.base_url()));
    for failed in &attempts[..2] {
        let a = &failed.attributes;
        assert_eq!(failed.parent_span_id, root.span_id);
        assert_eq!(failed.name, "chat gpt-4o");
        assert_eq!(string_attr(a, "error.type").as_deref(), Some("transient"));
        assert_eq!(int_attr(a, "http.response.status_code"), Some(500));
        assert_eq!(
            string_attr(a, "switchyard.target").as_deref(),
            Some("p0/gpt-4o")
        );
        assert_eq!(
            string_attr(a, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(int_attr(a, "server.port"), Some(primary_port));
        assert_eq!(int_attr(a, "gen_ai.usage.input_tokens"), None);
        assert_eq!(
            failed.status.as_ref().map(|s| s.code),
            Some(opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32)
        );
        assert!(failed.end_time_unix_nano >= failed.start_time_unix_nano);
    }
    let served = attempts[2];
    let a = &served.attributes;
    assert_eq!(
        string_attr(a, "switchyard.target").as_deref(),
        Some("p1/gpt-4o")
    );
    assert_eq!(string_attr(a, "error.type"), None);
    assert_eq!(int_attr(a, "http.response.status_code"), Some(200));
    assert_eq!(
        string_attr(a, "gen_ai.request.model").as_deref(),
        Some("gpt-4o")
    );
    assert_eq!(int_attr(a, "gen_ai.usage.input_tokens"), Some(input));
    assert_eq!(int_attr(a, "gen_ai.usage.output_tokens"), Some(output));
    assert!(root.start_time_unix_nano <= attempts[0].start_time_unix_nano);
    assert!(root.end_time_unix_nano >= served.end_time_unix_nano);

    // Each upstream request carried its own attempt span as the parent.
    let sent: Vec<(String, Option<String>)> = primary
        .requests()
        .iter()
        .chain(backup.requests().iter())
        .map(|r| {
            let header = |n: &str| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
            };
            (
                header("traceparent").expect("traceparent sent upstream"),
                header("tracestate"),
            )
        })
        .collect();
    assert_eq!(sent.len(), 3);
    for ((traceparent, tracestate), attempt) in sent.iter().zip(&attempts) {
        assert_eq!(
            traceparent,
            &format!("00-{CLIENT_TRACE}-{}-01", hex(&attempt.span_id))
        );
        assert_eq!(tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
    }

    // The request log row and the collector's resource.
    gw.state().request_log.get().expect("on").flush().await;
    let store = switchyard::store::Store::connect(&url, Duration::from_secs(5))
        .await
        .unwrap();
    let rows = store
        .query_requests(&switchyard::store::RequestQuery::newest(1))
        .await
        .unwrap();
    assert_eq!(rows[0].trace_id.as_deref(), Some(CLIENT_TRACE));
    {
        let got = collector.0.lock().unwrap();
        assert!(got.service_names.contains("gateway-under-test"));
        assert!(got.authorization.iter().all(|v| v == "Bearer otlp-secret"));
        assert!(!got.authorization.is_empty());
    }

    // The GenAI metrics carry the same token numbers as Prometheus.
    let tokens = wait_for_metric(&collector, "gen_ai.client.token.usage", |m| {
        histogram_sums(m, "gen_ai.token.type").len() == 2
    })
    .await;
    let sums = histogram_sums(&tokens, "gen_ai.token.type");
    assert_eq!(sums.get("input"), Some(&(input as f64)), "{sums:?}");
    assert_eq!(sums.get("output"), Some(&(output as f64)), "{sums:?}");
    let prometheus = metrics_text(&gw).await;
    assert_eq!(
        prometheus_tokens(&prometheus, "input"),
        input as f64,
        "{prometheus}"
    );
    assert_eq!(prometheus_tokens(&prometheus, "output"), output as f64);
    let duration = wait_for_metric(&collector, "gen_ai.server.request.duration", |_| true).await;
    assert_eq!(duration.unit, "s");
    assert_eq!(histogram_count(&duration), 1);
}

/// Exported at the flush (as at shutdown), not on a timer: the intervals
/// here are an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_traceparent_starts_a_trace_and_reports_its_first_token() {
    let (collector, collector_url) = Collector::start().await;
    let upstream = sim("otel-stream").await;
    let otlp = otlp_config_every(&collector_url, "1h", "1h");
    let gw = gateway(&[&upstream], &format!("{FAST}\n{otlp}")).await;
    let reply = call(
        &client(),
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        chat_body(true).to_string(),
        // Malformed: ignored, the request starts its own trace.
        &[("traceparent", "00-not-a-trace-01")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let sent = upstream.requests()[0]
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
        .expect("traceparent sent upstream");
    let trace = sent[3..35].to_owned();
    assert_ne!(trace, "0".repeat(32));
    // The request is finished once its body has been read; the flush
    // exports what was queued before it.
    eventually("the request finished", || {
        gw.state()
            .otlp
            .get()
            .unwrap()
            .counters
            .queued
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    gw.state().flush().await;
    let spans: Vec<Span> = collector
        .spans()
        .into_iter()
        .filter(|s| hex(&s.trace_id) == trace)
        .collect();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let root = spans
        .iter()
        .find(|s| s.kind == span::SpanKind::Server as i32)
        .unwrap();
    assert!(root.parent_span_id.is_empty(), "a trace of its own");
    let attempt = spans
        .iter()
        .find(|s| s.kind == span::SpanKind::Client as i32)
        .unwrap();
    assert_eq!(sent, format!("00-{trace}-{}-01", hex(&attempt.span_id)));
    // A streamed attempt's span lasts until the stream ended.
    assert_eq!(attempt.end_time_unix_nano, root.end_time_unix_nano);
    assert!(int_attr(&root.attributes, "gen_ai.usage.output_tokens").unwrap() > 0);
    let ttft = collector
        .metric("gen_ai.server.time_to_first_token")
        .expect("exported at the flush");
    assert_eq!(histogram_count(&ttft), 1);
    assert_eq!(ttft.unit, "s");
}

/// A stream cut mid-answer and continued on the next target: the first
/// leg's span ends where the continuation began, marked `cut_mid_stream`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continued_stream_has_a_span_for_each_leg() {
    let (collector, collector_url) = Collector::start().await;
    let primary = sim60("otel-cut", |_| {}).await;
    primary.push_script([switchyard::sim::FaultAction::DropAfter(20).into()]);
    let backup = sim60("otel-continues", |_| {}).await;
    let gw = gateway(
        &[&primary, &backup],
        &format!("{FAST}\n{}", otlp_config(&collector_url)),
    )
    .await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = traced_chat(&gw, true, &[("traceparent", &traceparent)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(sse_content(&sse_data(&reply.body)), answer(TOKENS));
    let spans = spans_of(&collector, CLIENT_TRACE, 3).await;
    let (legs, kinds) = attempt_spans(&spans);
    assert_eq!(kinds, ["first", "continuation"]);
    assert_eq!(
        string_attr(&legs[0].attributes, "error.type").as_deref(),
        Some("cut_mid_stream")
    );
    assert_eq!(legs[0].end_time_unix_nano, legs[1].start_time_unix_nano);
    assert_eq!(string_attr(&legs[1].attributes, "error.type"), None);
    assert_eq!(
        string_attr(&legs[1].attributes, "switchyard.target").as_deref(),
        Some("p1/gpt-4o")
    );
    // The continuation request carried its own span as the parent.
    let sent = backup.requests()[0]
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone());
    assert_eq!(
        sent,
        Some(format!("00-{CLIENT_TRACE}-{}-01", hex(&legs[1].span_id)))
    );
}

/// A slow first attempt hedged: the hedge serves, the first attempt's span
/// ends `cancelled` when it is dropped, both under the same server span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedged_request_has_the_losing_attempt_cancelled() {
    let (collector, collector_url) = Collector::start().await;
    let slow = sim("otel-slow").await;
    slow.push_script([switchyard::sim::Fault::ok(Duration::from_secs(10))]);
    let fast = sim("otel-fast").await;
    let extra = format!("{FAST}\n{}", otlp_config(&collector_url));
    let text = config_text(&[&slow.base_url(), &fast.base_url()], &extra).replace(
        "[routes.chat-default]\n",
        "[routes.chat-default]\nhedge_after = \"100ms\"\n",
    );
    let gw = gateway_from_text(&text).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = traced_chat(&gw, false, &[("traceparent", &traceparent)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    let spans = spans_of(&collector, CLIENT_TRACE, 3).await;
    let (attempts, kinds) = attempt_spans(&spans);
    assert_eq!(kinds, ["first", "hedge"]);
    let first = &attempts[0].attributes;
    assert_eq!(
        string_attr(first, "error.type").as_deref(),
        Some("cancelled")
    );
    assert_eq!(
        string_attr(first, "switchyard.target").as_deref(),
        Some("p0/gpt-4o")
    );
    assert_eq!(int_attr(first, "http.response.status_code"), None);
    let hedge = &attempts[1].attributes;
    assert_eq!(string_attr(hedge, "error.type"), None);
    assert!(int_attr(hedge, "gen_ai.usage.output_tokens").is_some());
}

/// A collector that is down costs telemetry, never a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_fails_no_request() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let upstream = sim("otel-collector-down").await;
    let gw = gateway(
        &[&upstream],
        &format!("{FAST}\n{}", otlp_config(&collector_url)),
    )
    .await;
    for _ in 0..3 {
        let reply = chat(&client(), &gw, chat_body(false)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    // The flush returns (the exports fail, each within its timeout).
    tokio::time::timeout(Duration::from_secs(10), gw.state().flush())
        .await
        .expect("the flush ends although the collector is down");
    assert_eq!(upstream.requests().len(), 3);
}

#[tokio::test]
async fn without_the_exporter_no_trace_context_is_read_or_sent() {
    let upstream = sim("otel-off").await;
    let gw = gateway(&[&upstream], FAST).await;
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let reply = traced_chat(&gw, false, &[("traceparent", &traceparent)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(gw.state().otlp.get().is_none());
    let headers = &upstream.requests()[0].headers;
    assert!(
        !headers
            .iter()
            .any(|(k, _)| k == "traceparent" || k == "tracestate"),
        "{headers:?}"
    );
}

#[test]
fn the_otlp_section_is_validated_with_key_paths_and_never_shows_its_headers() {
    let base = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    let bad = format!(
        "{base}[telemetry.otlp]\nendpoint = \"grpc://collector:4317\"\n\
         headers = {{ \"bad header\" = \"x\", authorization = \"Bearer secret\\n\" }}\n\
         metrics_interval = \"0s\"\ntraces_interval = \"2h\"\nmax_queue = 0\nservice_name = \"\"\n"
    );
    let errors = Config::from_toml(&bad, |_| None).unwrap_err().to_string();
    for path in [
        "telemetry.otlp.endpoint",
        "telemetry.otlp.headers.bad header",
        "telemetry.otlp.headers.authorization",
        "telemetry.otlp.metrics_interval",
        "telemetry.otlp.traces_interval",
        "telemetry.otlp.max_queue",
        "telemetry.otlp.service_name",
    ] {
        assert!(errors.contains(path), "{path} missing in:\n{errors}");
    }
    assert!(!errors.contains("secret"), "{errors}");
    let typo = format!("{base}[telemetry.otlp]\nendpont = \"http://127.0.0.1:4318\"\n");
    let errors = Config::from_toml(&typo, |_| None).unwrap_err().to_string();
    assert!(errors.contains("endpont"), "{errors}");
    assert!(errors.contains("telemetry.otlp.endpoint"), "{errors}");

    let good = format!(
        "{base}[telemetry.otlp]\nendpoint = \"https://collector.example:4318/\"\n\
         headers = {{ authorization = \"Bearer secret\" }}\n"
    );
    let config = Config::from_toml(&good, |_| None).unwrap();
    let otlp = config.otlp.as_ref().unwrap();
    assert_eq!(
        otlp.signal_url("v1/traces"),
        "https://collector.example:4318/v1/traces"
    );
    assert_eq!(otlp.service_name, "switchyard");
    assert_eq!(otlp.metrics_interval, Duration::from_secs(10));
    assert!(!format!("{config:?}").contains("secret"));
    let restarted = Config::from_toml(base, |_| None).unwrap();
    assert!(config
        .restart_only_changes(&restarted)
        .contains(&"telemetry.otlp"));
}

/// The client spans in start order, and their `switchyard.attempt.kind`s.
fn attempt_spans(spans: &[Span]) -> (Vec<&Span>, Vec<String>) {
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == span::SpanKind::Client as i32)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    let kinds = attempts
        .iter()
        .map(|s| string_attr(&s.attributes, "switchyard.attempt.kind").unwrap())
        .collect();
    (attempts, kinds)
}

/// A chat request with trace context headers.
async fn traced_chat(
    gw: &switchyard::server::Gateway,
    stream: bool,
    headers: &[(&str, &str)],
) -> Reply {
    call(
        &client(),
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        chat_body(stream).to_string(),
        headers,
    )
    .await
}

fn url_port(url: &str) -> u16 {
    let uri: http::Uri = url.parse().unwrap();
    uri.port_u16().unwrap()
}

async fn wait_for_metric(
    collector: &Collector,
    name: &str,
    ready: impl Fn(&Metric) -> bool,
) -> Metric {
    for _ in 0..500 {
        if let Some(m) = collector.metric(name).filter(|m| ready(m)) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("metric {name} did not arrive");
}

/// A histogram's sum per value of the attribute `by`.
fn histogram_sums(m: &Metric, by: &str) -> std::collections::HashMap<String, f64> {
    let Some(metric::Data::Histogram(h)) = &m.data else {
        panic!("{} is not a histogram", m.name)
    };
    h.data_points
        .iter()
        .filter_map(|p| Some((string_attr(&p.attributes, by)?, p.sum?)))
        .collect()
}

fn histogram_count(m: &Metric) -> u64 {
    let Some(metric::Data::Histogram(h)) = &m.data else {
        panic!("{} is not a histogram", m.name)
    };
    h.data_points.iter().map(|p| p.count).sum()
}

fn prometheus_tokens(text: &str, direction: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("switchyard_tokens_total{")
                && l.contains(&format!("direction=\"{direction}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
