//! Integration tests of the core request path: one test per rule of the
//! failure-classification table, streaming, malformed input and shutdown.
//! Simulators and the gateway run in-process on loopback.

mod common;

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use std::time::Duration;
use switchyard::sim::{Fault, FaultAction, Latency};

fn status_with_retry_after(code: u16, after: Duration) -> Fault {
    Fault {
        delay: Duration::ZERO,
        action: FaultAction::Status {
            code,
            retry_after: Some(after),
        },
    }
}

#[tokio::test]
async fn success_path_rewrites_model_and_passes_body_through() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], FAST).await;
    let client = client();
    let reply = call(
        &client,
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        chat_body(false).to_string(),
        &[("x-request-id", "req-abc-123")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-request-id"), Some("req-abc-123"));
    assert_eq!(reply.header("x-switchyard-target"), Some("p0/gpt-4o"));
    assert_eq!(reply.header("x-switchyard-attempts"), Some("1"));
    let v = reply.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["model"], "gpt-4o",
        "the upstream saw the target's model name"
    );
    let records = primary.requests();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].model.as_deref(), Some("gpt-4o"));
    // Only `model` changed: the body length differs by exactly the name lengths.
    let sent = chat_body(false).to_string();
    assert_eq!(
        records[0].body_len,
        sent.len() - "chat-default".len() + "gpt-4o".len()
    );
    assert!(records[0]
        .headers
        .iter()
        .any(|(k, v)| k == "x-request-id" && v == "req-abc-123"));
}

#[tokio::test]
async fn generated_request_id_when_client_sends_none() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], FAST).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    let id = reply.header("x-request-id").expect("request id");
    assert_eq!(id.len(), 36, "uuid: {id}");
}

#[tokio::test]
async fn transient_error_is_retried_on_the_same_target() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([Fault::status(503)]);
    let gw = gateway(&[&primary, &secondary], FAST).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p0/gpt-4o"));
    assert_eq!(reply.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(primary.stats().requests, 2);
    assert_eq!(secondary.stats().requests, 0);
    assert_eq!(gw.counters().retries, 1);
    assert_eq!(gw.counters().failovers, 0);
}

#[tokio::test]
async fn transient_errors_exhaust_the_target_then_fail_over() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([Fault::status(500), Fault::status(502)]);
    let gw = gateway(&[&primary, &secondary], FAST).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    assert_eq!(reply.header("x-switchyard-attempts"), Some("3"));
    assert_eq!(primary.stats().requests, 2);
    assert_eq!(secondary.stats().requests, 1);
    assert_eq!(gw.counters().failovers, 1);
}

#[tokio::test]
async fn retry_after_within_cap_is_honoured_on_the_same_target() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([status_with_retry_after(429, Duration::from_millis(300))]);
    let gw = gateway(&[&primary, &secondary], FAST).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p0/gpt-4o"));
    assert_eq!(secondary.stats().requests, 0);
    let records = primary.requests();
    assert_eq!(records.len(), 2);
    // The retry may not come before the upstream said it could.
    let gap = records[1].at - records[0].at;
    assert!(
        gap >= Duration::from_millis(300),
        "retried after {gap:?}, before Retry-After"
    );
}

#[tokio::test]
async fn retry_after_beyond_cap_fails_over_at_once() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([status_with_retry_after(429, Duration::from_secs(30))]);
    let gw = gateway(&[&primary, &secondary], FAST).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    assert_eq!(
        primary.stats().requests,
        1,
        "no retry on a target that asked for 30 s"
    );
    assert_eq!(secondary.stats().requests, 1);
}

/// FAST, but an upstream wait of more than 1 s is not waited for.
const SHORT_RETRY_AFTER: &str = r#"
[defaults.retry]
max_attempts_per_target = 2
base_backoff = "5ms"
max_backoff = "20ms"
max_retry_after = "1s"
[defaults.timeouts]
first_byte = "5s"
total = "20s"
"#;

#[tokio::test]
async fn a_retry_after_cools_the_target_for_the_next_request_too() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([status_with_retry_after(429, Duration::from_secs(2))]);
    let gw = gateway(&[&primary, &secondary], SHORT_RETRY_AFTER).await;
    let client = client();
    for n in 0..3 {
        let reply = chat(&client, &gw, chat_body(false)).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.header("x-switchyard-target"),
            Some("p1/gpt-4o"),
            "request {n}"
        );
    }
    assert_eq!(
        primary.stats().requests,
        1,
        "the requests after the 429 went straight to the fallback"
    );
    assert_eq!(gw.counters().cooling_skips, 2);
}

#[tokio::test]
async fn a_concurrent_request_skips_a_target_another_request_is_waiting_out() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([status_with_retry_after(429, Duration::from_secs(2))]);
    // max_retry_after 2 s (FAST): the first request waits for the primary.
    let gw = gateway(&[&primary, &secondary], FAST).await;
    let waiting = spawn_chat(&gw);
    eventually("the primary answered 429", || primary.stats().requests == 1).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    assert_eq!(
        primary.stats().requests,
        1,
        "the cooling primary was skipped"
    );
    let first = waiting.await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-switchyard-target"), Some("p0/gpt-4o"));
    assert_eq!(primary.stats().requests, 2);
}

#[tokio::test]
async fn a_cooling_single_target_is_waited_for_within_max_retry_after() {
    let primary = sim("primary").await;
    primary.push_script([status_with_retry_after(429, Duration::from_secs(1))]);
    // max_retry_after 2 s (FAST): a 1 s cooldown is worth waiting for.
    let gw = gateway(&[&primary], FAST).await;
    let client = client();
    let waiting = spawn_chat(&gw);
    eventually("the primary answered 429", || primary.stats().requests == 1).await;
    let reply = chat(&client, &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(waiting.await.unwrap().status, StatusCode::OK);
    let records = primary.requests();
    assert_eq!(records.len(), 3);
    for later in &records[1..] {
        let gap = later.at - records[0].at;
        assert!(
            gap >= Duration::from_secs(1),
            "a request reached the cooling target {gap:?} after its 429"
        );
    }

    // A cooldown beyond max_retry_after: the next request is refused at
    // once, with the wait, without reaching the upstream.
    primary.push_script([status_with_retry_after(429, Duration::from_secs(30))]);
    let reply = chat(&client, &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(primary.stats().requests, 4);
    let reply = chat(&client, &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, _, code) = reply.openai_error();
    assert_eq!(code, "targets_unavailable");
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after > 2, "retry-after {retry_after}");
    assert_eq!(primary.stats().requests, 4);
}

#[tokio::test]
async fn upstream_auth_error_fails_over_without_retry() {
    for code in [401, 403, 404] {
        let primary = sim("primary").await;
        let secondary = sim("secondary").await;
        primary.push_script([Fault::status(code)]);
        let gw = gateway(
            &[&primary, &secondary],
            &FAST.replace("max_attempts_per_target = 2", "max_attempts_per_target = 3"),
        )
        .await;
        let reply = chat(&client(), &gw, chat_body(false)).await;
        assert_eq!(reply.status, StatusCode::OK, "status {code}");
        assert_eq!(
            primary.stats().requests,
            1,
            "status {code} must not be retried"
        );
        assert_eq!(secondary.stats().requests, 1);
        assert_eq!(reply.header("x-switchyard-attempts"), Some("2"));
    }
}

#[tokio::test]
async fn client_error_is_returned_without_retry_or_failover() {
    for code in [400, 413, 422] {
        let primary = sim("primary").await;
        let secondary = sim("secondary").await;
        primary.push_script([Fault::status(code)]);
        let gw = gateway(&[&primary, &secondary], FAST).await;
        let reply = chat(&client(), &gw, chat_body(false)).await;
        assert_eq!(reply.status.as_u16(), code);
        let (message, _, _) = reply.openai_error();
        assert!(
            message.contains("simulated"),
            "the upstream's own error is passed through: {message}"
        );
        assert_eq!(
            primary.stats().requests,
            1,
            "exactly one upstream request for {code}"
        );
        assert_eq!(secondary.stats().requests, 0);
    }
}

#[tokio::test]
async fn every_target_failing_gives_an_openai_error_listing_attempts_without_secrets() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([Fault::status(500), Fault::status(500)]);
    secondary.push_script([Fault::status(401)]);
    let text = config_text(&[&primary.base_url(), &secondary.base_url()], FAST).replace(
        "region = \"r0\"",
        "region = \"r0\"\napi_key_env = \"P0_KEY\"",
    );
    let config = switchyard::config::Config::from_toml(&text, |name| {
        (name == "P0_KEY").then(|| "sk-very-secret-0123".to_owned())
    })
    .unwrap();
    let gw = switchyard::server::Gateway::start(config).await.unwrap();
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    let (message, kind, code) = reply.openai_error();
    assert_eq!(kind, "upstream_error");
    assert_eq!(code, "upstream_unavailable");
    assert!(message.contains("3 attempts"), "{message}");
    assert!(
        message.contains("p0/gpt-4o: transient (status 500)"),
        "{message}"
    );
    assert!(
        message.contains("p1/gpt-4o: upstream_auth (status 401)"),
        "{message}"
    );
    assert!(
        !reply.text().contains("sk-very-secret"),
        "secret leaked: {}",
        reply.text()
    );
    // The key did reach the upstream that needs it (recorded only as "present").
    assert!(primary.requests()[0]
        .headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == "present"));
    assert!(!secondary.requests()[0]
        .headers
        .iter()
        .any(|(k, _)| k == "authorization"));
}

#[tokio::test]
async fn all_overloaded_gives_503_with_retry_after() {
    let primary = sim("primary").await;
    primary.push_script([Fault::status(503), Fault::status(503)]);
    let gw = gateway(&[&primary], FAST).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reply.header("retry-after").is_some());
    reply.openai_error();
}

#[tokio::test]
async fn total_deadline_bounds_the_request() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([FaultAction::Hang.into()]);
    // The attempt's first-byte timeout ends no earlier than the request's
    // deadline (the attempt starts later), and no attempt starts once the
    // deadline has passed: the secondary is never tried, whatever the load.
    let gw = gateway(
        &[&primary, &secondary],
        &FAST
            .replace("total = \"20s\"", "total = \"300ms\"")
            .replace("first_byte = \"5s\"", "first_byte = \"300ms\""),
    )
    .await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    let (message, _, code) = reply.openai_error();
    assert_eq!(code, "deadline_exceeded");
    assert!(message.contains("p0/gpt-4o"), "{message}");
    assert_eq!(
        secondary.stats().requests,
        0,
        "no time was left for the secondary"
    );
}

#[tokio::test]
async fn hang_hits_first_byte_timeout_and_fails_over() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([FaultAction::Hang.into()]);
    let extra = FAST
        .replace("first_byte = \"5s\"", "first_byte = \"150ms\"")
        .replace("max_attempts_per_target = 2", "max_attempts_per_target = 1");
    let gw = gateway(&[&primary, &secondary], &extra).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    // The abandoned attempt's connection was closed, so the sim saw it go.
    eventually("primary sees the hung request cancelled", || {
        primary.stats().cancelled == 1
    })
    .await;
}

/// Three attempts per target and a short first-byte timeout.
fn hanging_primary_policy(on_timeout: Option<&str>) -> String {
    let mut extra = FAST
        .replace("first_byte = \"5s\"", "first_byte = \"200ms\"")
        .replace("max_attempts_per_target = 2", "max_attempts_per_target = 3");
    if let Some(on_timeout) = on_timeout {
        extra = extra.replace(
            "[defaults.retry]\n",
            &format!("[defaults.retry]\non_timeout = \"{on_timeout}\"\n"),
        );
    }
    extra
}

/// An upstream that never answers.
fn hanging() -> switchyard::sim::Behavior {
    switchyard::sim::Behavior {
        hang_rate: 1.0,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_silent_primary_is_failed_over_at_once_and_sees_one_request() {
    for stream in [false, true] {
        let primary = sim_with("primary", hanging()).await;
        let secondary = sim("secondary").await;
        let gw = gateway(&[&primary, &secondary], &hanging_primary_policy(None)).await;
        let reply = chat(&client(), &gw, chat_body(stream)).await;
        assert_eq!(reply.status, StatusCode::OK, "stream {stream}");
        assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
        assert_eq!(reply.header("x-switchyard-attempts"), Some("2"));
        assert_eq!(
            primary.stats().requests,
            1,
            "stream {stream}: no same-target retry after a timeout"
        );
    }
}

#[tokio::test]
async fn on_timeout_same_target_keeps_the_retries() {
    let primary = sim_with("primary", hanging()).await;
    let secondary = sim("secondary").await;
    let gw = gateway(
        &[&primary, &secondary],
        &hanging_primary_policy(Some("same_target")),
    )
    .await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    assert_eq!(primary.stats().requests, 3);
}

#[tokio::test]
async fn on_timeout_stop_never_resends() {
    let primary = sim_with("primary", hanging()).await;
    let secondary = sim("secondary").await;
    let gw = gateway(
        &[&primary, &secondary],
        &hanging_primary_policy(Some("stop")),
    )
    .await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert_eq!(primary.stats().requests, 1);
    assert_eq!(secondary.stats().requests, 0);
}

#[tokio::test]
async fn stream_is_passed_through_with_done() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], FAST).await;
    let reply = chat(&client(), &gw, chat_body(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    assert_eq!(reply.header("x-switchyard-target"), Some("p0/gpt-4o"));
    let events = sse_data(&reply.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(
        sse_content(&events),
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
    );
    assert!(!reply.text().contains("\"error\""));
    assert_eq!(gw.counters().streams_completed, 1);
}

#[tokio::test]
async fn error_event_before_content_fails_over_invisibly() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([FaultAction::ErrorEventFirst.into()]);
    let gw = gateway(
        &[&primary, &secondary],
        &FAST.replace("max_attempts_per_target = 2", "max_attempts_per_target = 1"),
    )
    .await;
    let reply = chat(&client(), &gw, chat_body(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    let events = sse_data(&reply.body);
    assert!(!reply.text().contains("error"), "{}", reply.text());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(primary.stats().error_events, 1);
}

#[tokio::test]
async fn failure_before_first_content_fails_over() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([FaultAction::DropAfter(0).into()]);
    let gw = gateway(
        &[&primary, &secondary],
        &FAST.replace("max_attempts_per_target = 2", "max_attempts_per_target = 1"),
    )
    .await;
    let reply = chat(&client(), &gw, chat_body(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    let events = sse_data(&reply.body);
    assert_eq!(
        sse_content(&events),
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn slow_first_token_fails_over() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([Fault::ok(Duration::from_secs(10))]);
    let extra = FAST
        .replace("first_byte = \"5s\"", "first_byte = \"150ms\"")
        .replace("max_attempts_per_target = 2", "max_attempts_per_target = 1");
    let gw = gateway(&[&primary, &secondary], &extra).await;
    let reply = chat(&client(), &gw, chat_body(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
}

/// Reads a stream to the end and returns its `data:` payloads.
async fn stream_events(reply: &Reply) -> Vec<String> {
    sse_data(&reply.body)
}

async fn assert_cut_stream(fault: FaultAction, content_before_cut: &str) {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([fault.clone().into()]);
    let gw = gateway_resume_off(&[&primary, &secondary], FAST).await;
    let reply = chat(&client(), &gw, chat_body(true)).await;
    assert_eq!(reply.status, StatusCode::OK, "{fault:?}");
    let events = stream_events(&reply).await;
    assert_eq!(sse_content(&events), content_before_cut, "{fault:?}");
    let last: serde_json::Value =
        serde_json::from_str(events.last().unwrap()).expect("last event is JSON");
    assert_eq!(last["error"]["code"], "stream_cut", "{fault:?}: {last}");
    assert_eq!(last["error"]["type"], "upstream_error");
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "a cut stream must not end cleanly: {fault:?}"
    );
    assert_eq!(
        secondary.stats().requests,
        0,
        "no failover after content reached the client"
    );
    assert_eq!(gw.counters().streams_cut, 1);
}

#[tokio::test]
async fn mid_stream_drop_ends_with_an_error_event() {
    assert_cut_stream(FaultAction::DropAfter(3), "tok0 tok1 tok2 ").await;
}

#[tokio::test]
async fn in_stream_error_after_content_ends_with_an_error_event() {
    assert_cut_stream(FaultAction::ErrorEventAfter(2), "tok0 tok1 ").await;
}

#[tokio::test]
async fn missing_done_ends_with_an_error_event() {
    assert_cut_stream(FaultAction::TruncateAfter(4), "tok0 tok1 tok2 tok3 ").await;
}

#[tokio::test]
async fn idle_stream_is_cut_with_an_error_event() {
    let primary = sim_with(
        "primary",
        switchyard::sim::Behavior {
            tokens_per_sec: 2.0,
            completion_tokens: 4,
            ..Default::default()
        },
    )
    .await;
    let gw = gateway(
        &[&primary],
        &FAST.replace("idle = \"5s\"", "idle = \"100ms\""),
    )
    .await;
    let reply = chat(&client(), &gw, chat_body(true)).await;
    let events = sse_data(&reply.body);
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_cut");
    assert!(
        last["error"]["message"].as_str().unwrap().contains("idle"),
        "{last}"
    );
}

/// An upstream the test drives by hand: it sends exactly the SSE events the
/// test feeds it, when the test feeds them.
mod manual_upstream {
    use axum::body::Body;
    use axum::routing::post;
    use bytes::Bytes;
    use tokio::sync::mpsc;

    pub async fn start() -> (String, mpsc::Receiver<mpsc::Sender<Bytes>>) {
        let (streams_tx, streams_rx) = mpsc::channel::<mpsc::Sender<Bytes>>(4);
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            post(move || {
                let streams_tx = streams_tx.clone();
                async move {
                    let (tx, rx) = mpsc::channel::<Bytes>(16);
                    let _ = streams_tx.send(tx).await;
                    let body = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv()
                            .await
                            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
                    });
                    axum::response::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(Body::from_stream(body))
                        .unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, streams_rx)
    }
}

fn chunk(content: &str) -> Bytes {
    Bytes::from(format!(
        "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":null}}]}}\n\n"
    ))
}

#[tokio::test]
async fn stream_chunks_reach_the_client_before_the_upstream_sends_the_next() {
    let (url, mut streams) = manual_upstream::start().await;
    let gw = gateway_from_text(&config_text(&[&url], FAST)).await;
    let client = client();
    let request = tokio::spawn({
        let url = format!("{}/chat/completions", gw.base_url());
        async move {
            send(
                &client,
                Method::POST,
                &url,
                chat_body(true).to_string(),
                &[],
            )
            .await
        }
    });
    let upstream = streams.recv().await.expect("gateway called upstream");
    upstream
        .send(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        ))
        .await
        .unwrap();
    upstream.send(chunk("first")).await.unwrap();
    let response = request.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = String::new();
    // The upstream has sent nothing after "first": the client must already have it.
    while !received.contains("first") {
        let frame = body.frame().await.expect("stream ended early").unwrap();
        received.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    assert!(!received.contains("second"));
    upstream.send(chunk("second")).await.unwrap();
    while !received.contains("second") {
        let frame = body.frame().await.expect("stream ended early").unwrap();
        received.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    upstream
        .send(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        ))
        .await
        .unwrap();
    drop(upstream);
    let rest = body.collect().await.unwrap().to_bytes();
    received.push_str(&String::from_utf8_lossy(&rest));
    assert!(received.ends_with("data: [DONE]\n\n"), "{received}");
}

/// A line of `len` bytes that never ends, sent in 64 KiB chunks.
async fn send_endless_line(upstream: &tokio::sync::mpsc::Sender<Bytes>, len: usize) {
    upstream.send(Bytes::from_static(b"data: ")).await.unwrap();
    let piece = Bytes::from(vec![b'x'; 64 << 10]);
    for _ in 0..len.div_ceil(piece.len()) {
        if upstream.send(piece.clone()).await.is_err() {
            return; // the gateway dropped the stream
        }
    }
}

const ONE_TRY_LONG_WAITS: &str = r#"
[defaults.retry]
max_attempts_per_target = 1
[defaults.timeouts]
first_byte = "60s"
idle = "60s"
total = "120s"
"#;

#[tokio::test]
async fn an_endless_line_before_content_fails_the_attempt_as_too_large() {
    let (url, mut streams) = manual_upstream::start().await;
    let gw = gateway_from_text(&config_text(&[&url], ONE_TRY_LONG_WAITS)).await;
    let request = spawn_chat_request(&gw, true);
    let upstream = streams.recv().await.expect("gateway called upstream");
    send_endless_line(&upstream, 3 << 20).await;
    let reply = request.await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let (message, _, _) = reply.openai_error();
    assert!(message.contains("stream event too large"), "{message}");
}

#[tokio::test]
async fn an_endless_line_after_content_cuts_the_stream() {
    let (url, mut streams) = manual_upstream::start().await;
    let gw = gateway_from_text(&config_text(&[&url], ONE_TRY_LONG_WAITS)).await;
    let request = spawn_chat_request(&gw, true);
    let upstream = streams.recv().await.expect("gateway called upstream");
    upstream.send(chunk("first")).await.unwrap();
    send_endless_line(&upstream, 3 << 20).await;
    let reply = request.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let events = sse_data(&reply.body);
    assert_eq!(sse_content(&events), "first");
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_cut");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 1 MiB"),
        "{last}"
    );
}

#[tokio::test]
async fn a_response_too_large_is_a_502_never_sent_again() {
    let primary = sim_with(
        "primary",
        switchyard::sim::Behavior {
            completion_tokens: 4000,
            ..Default::default()
        },
    )
    .await;
    let secondary = sim("secondary").await;
    let extra = format!("[server]\nmax_response_body = \"4KiB\"\n{FAST}");
    let gw = gateway(&[&primary, &secondary], &extra).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let (message, _, _) = reply.openai_error();
    assert!(message.contains("response too large"), "{message}");
    assert_eq!(
        primary.stats().requests,
        1,
        "the upstream did the work once"
    );
    assert_eq!(secondary.stats().requests, 0, "and nobody does it again");
}

/// The message of a one-target, one-attempt request to `base_url`, and the
/// gateway's metrics afterwards.
async fn failure_against(base_url: &str) -> (String, String) {
    let gw = gateway_from_text(&config_text(&[base_url], ONE_TRY_LONG_WAITS)).await;
    let client = client();
    let reply = chat(&client, &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let (message, _, _) = reply.openai_error();
    let metrics = metrics_text(&gw).await;
    (message, metrics)
}

#[tokio::test]
async fn transport_failures_keep_their_kind() {
    // Connection refused: a port nobody listens on any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let (message, metrics) = failure_against(&format!("http://{addr}/v1")).await;
    assert!(message.contains("connection refused"), "{message}");
    assert!(metrics.contains("kind=\"connect_refused\""), "{metrics}");

    // TLS: https to a server that speaks plain HTTP.
    let plain = sim("plain").await;
    let (message, metrics) = failure_against(&format!("https://{}/v1", plain.addr())).await;
    assert!(message.contains("TLS error"), "{message}");
    assert!(metrics.contains("kind=\"tls\""), "{metrics}");

    // Reset: a server that reads the request and closes the connection.
    let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = rude.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut socket, _)) = rude.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            drop(socket);
        }
    });
    let (message, metrics) = failure_against(&format!("http://{addr}/v1")).await;
    assert!(message.contains("connection reset"), "{message}");
    assert!(metrics.contains("kind=\"reset\""), "{metrics}");
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let primary = sim_with(
        "primary",
        switchyard::sim::Behavior {
            tokens_per_sec: 20.0,
            completion_tokens: 200,
            ..Default::default()
        },
    )
    .await;
    let gw = gateway(&[&primary], FAST).await;
    let client = client();
    let response = send(
        &client,
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        chat_body(true).to_string(),
        &[],
    )
    .await;
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(body);
    drop(client);
    eventually("upstream stream cancelled", || {
        primary.stats().cancelled == 1
    })
    .await;
    eventually("gateway counted the disconnect", || {
        gw.counters().client_disconnects == 1
    })
    .await;
    assert_eq!(primary.stats().streams_completed, 0);
}

#[tokio::test]
async fn malformed_requests_get_openai_errors_and_never_reach_upstream() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], &format!("{FAST}\n")).await;
    let client = client();
    let url = format!("{}/chat/completions", gw.base_url());
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("invalid json", "{\"model\": ".into(), 400, "invalid_json"),
        ("not an object", "[1,2]".into(), 400, "invalid_json"),
        ("empty body", "".into(), 400, "invalid_json"),
        (
            "missing model",
            "{\"messages\":[]}".into(),
            400,
            "missing_model",
        ),
        (
            "model not a string",
            "{\"model\":42}".into(),
            400,
            "invalid_type",
        ),
        (
            "stream not a bool",
            "{\"model\":\"chat-default\",\"stream\":\"yes\"}".into(),
            400,
            "invalid_type",
        ),
        (
            "invalid utf-8",
            String::from_utf8_lossy(b"{\"model\":\"\xff\"}")
                .into_owned()
                .replace('\u{fffd}', "\\ud800"),
            400,
            "invalid_json",
        ),
        (
            "unknown model",
            "{\"model\":\"gpt-5-turbo\"}".into(),
            404,
            "model_not_found",
        ),
    ];
    for (name, body, status, code) in cases {
        let reply = call(&client, Method::POST, &url, body, &[]).await;
        assert_eq!(reply.status.as_u16(), status, "{name}: {}", reply.text());
        let (message, kind, got_code) = reply.openai_error();
        assert_eq!(got_code, code, "{name}: {message}");
        assert_eq!(kind, "invalid_request_error", "{name}");
        if name == "unknown model" {
            assert!(
                message.contains("chat-default") && message.contains("embed"),
                "lists known routes: {message}"
            );
        }
    }
    let reply = call(&client, Method::GET, &url, "", &[]).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.openai_error().2, "method_not_allowed");
    assert_eq!(reply.header("allow"), Some("POST"));
    let reply = call(
        &client,
        Method::POST,
        &format!("{}/nope", gw.base_url()),
        "{}",
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.openai_error().2, "unknown_url");
    assert_eq!(
        primary.stats().requests,
        0,
        "no malformed request reached the upstream"
    );
}

#[tokio::test]
async fn raw_invalid_utf8_is_rejected() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], FAST).await;
    let reply = call(
        &client(),
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        Bytes::from_static(b"{\"model\":\"\xff\xfe\"}"),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.openai_error().2, "invalid_json");
}

#[tokio::test]
async fn oversized_bodies_get_413_whether_declared_or_streamed() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], "[server]\nmax_request_body = \"1KiB\"").await;
    let url = format!("{}/chat/completions", gw.base_url());
    let big = format!(
        "{{\"model\":\"chat-default\",\"pad\":\"{}\"}}",
        "x".repeat(4096)
    );
    let reply = call(&client(), Method::POST, &url, big.clone(), &[]).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.openai_error().2, "request_too_large");
    // Chunked, without a Content-Length, the limit still holds.
    let chunks = futures_util::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| {
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::copy_from_slice(
                    c,
                )))
            })
            .collect::<Vec<_>>(),
    );
    let body = http_body_util::StreamBody::new(chunks);
    let chunked_client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let response = chunked_client
        .request(
            http::Request::post(&url)
                .header("content-type", "application/json")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(primary.stats().requests, 0);
}

#[tokio::test]
async fn models_health_and_ready() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], FAST).await;
    let client = client();
    let models = call(
        &client,
        Method::GET,
        &format!("{}/models", gw.base_url()),
        "",
        &[],
    )
    .await
    .json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["chat-default", "embed"]);
    let base = format!("http://{}", gw.addr());
    assert_eq!(
        call(&client, Method::GET, &format!("{base}/healthz"), "", &[])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        call(&client, Method::GET, &format!("{base}/readyz"), "", &[])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn embeddings_are_routed_and_failed_over() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([Fault::status(503), Fault::status(503)]);
    let gw = gateway(&[&primary, &secondary], FAST).await;
    let reply = call(
        &client(),
        Method::POST,
        &format!("{}/embeddings", gw.base_url()),
        serde_json::json!({"model": "embed", "input": ["a", "b"]}).to_string(),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("p1/text-embedding-3-small")
    );
    assert_eq!(reply.json()["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_then_stops_accepting() {
    let primary = sim_with(
        "primary",
        switchyard::sim::Behavior {
            latency: Latency {
                base: Duration::from_millis(400),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let mut gw = gateway(&[&primary], FAST).await;
    let addr = gw.addr();
    let in_flight = spawn_chat(&gw);
    eventually("request reached the upstream", || {
        primary.stats().requests == 1
    })
    .await;
    gw.begin_shutdown();
    let state = gw.state().clone();
    eventually("gateway is draining", || {
        state.draining.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request finished during the drain"
    );
    gw.join().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn client_disconnect_before_the_response_cancels_the_upstream_request() {
    let primary = sim("primary").await;
    primary.push_script([Fault::ok(Duration::from_secs(30))]);
    let gw = gateway(
        &[&primary],
        FAST.replace("first_byte = \"5s\"", "first_byte = \"15s\"")
            .as_str(),
    )
    .await;
    let request = spawn_chat(&gw);
    eventually("request reached the upstream", || {
        primary.stats().requests == 1
    })
    .await;
    request.abort();
    eventually("upstream request cancelled after the client left", || {
        primary.stats().cancelled == 1
    })
    .await;
}
