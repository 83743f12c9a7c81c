//! Integration tests of the fake provider, over loopback HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use switchyard::sim::{
    Behavior, Fault, FaultAction, Phase, SimConfig, SimEndpoint, SimHandle, SimStats, Simulator,
};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn start(config: SimConfig) -> SimHandle {
    Simulator::start(config, loopback()).await.unwrap()
}

async fn start_with(behavior: Behavior) -> SimHandle {
    start(SimConfig {
        behavior,
        ..SimConfig::default()
    })
    .await
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn send(
    client: &HttpClient,
    method: Method,
    url: String,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut req = Request::builder().method(method).uri(url);
    for &(name, value) in headers {
        req = req.header(name, value);
    }
    let req = req
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    client.request(req).await.unwrap()
}

async fn chat(
    client: &HttpClient,
    sim: &SimHandle,
    body: Value,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let url = format!("{}/chat/completions", sim.base_url());
    send(client, Method::POST, url, body.to_string(), headers).await
}

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
    })
}

async fn text(resp: Response<Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn json_body(resp: Response<Incoming>) -> Value {
    serde_json::from_str(&text(resp).await).unwrap()
}

/// The `data:` payloads of an SSE body, in order.
fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .expect("every event is a data line")
                .to_owned()
        })
        .collect()
}

fn header<'a>(resp: &'a Response<Incoming>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

/// Waits for a condition the sim reaches asynchronously (e.g. noticing a
/// disconnect), bounded so a broken sim fails instead of hanging.
async fn wait_for_stats(sim: &SimHandle, what: &str, cond: impl Fn(&SimStats) -> bool) -> SimStats {
    for _ in 0..500 {
        let stats = sim.stats();
        if cond(&stats) {
            return stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}: {:?}", sim.stats());
}

#[tokio::test]
async fn non_stream_chat_has_openai_shape() {
    let sim = start(SimConfig {
        name: "alpha".into(),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let body = chat_body(false).to_string();
    let resp = send(
        &client,
        Method::POST,
        format!("{}/chat/completions", sim.base_url()),
        body.clone(),
        &[
            ("authorization", "Bearer sk-very-secret"),
            ("x-api-key", "sk-very-secret"),
            ("x-request-id", "req-42"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-sim-name"), Some("alpha"));
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    let v = json_body(resp).await;
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-sim-"));
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    assert_eq!(v["choices"][0]["index"], 0);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let prompt_tokens = body.len().div_ceil(4) as u64;
    assert_eq!(v["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 8);
    assert_eq!(v["usage"]["total_tokens"], prompt_tokens + 8);

    let stats = sim.stats();
    assert_eq!((stats.requests, stats.ok), (1, 1));
    let records = sim.requests();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.endpoint, SimEndpoint::OpenAiChat);
    assert_eq!(r.api_key.as_deref(), Some("sk-very-secret"));
    assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
    assert!(!r.stream);
    assert_eq!(r.outcome, "ok");
    assert_eq!(r.body_len, body.len());
    let mut headers = r.headers.clone();
    headers.sort();
    assert_eq!(
        headers,
        [
            ("authorization".to_owned(), "present".to_owned()),
            ("x-api-key".to_owned(), "present".to_owned()),
            ("x-request-id".to_owned(), "req-42".to_owned()),
        ]
    );
    assert!(!format!("{records:?}").contains("sk-very-secret"));
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_sends_role_content_finish_done() {
    let sim = start_with(Behavior {
        completion_tokens: 3,
        ..Behavior::default()
    })
    .await;
    let client = client();
    let resp = chat(&client, &sim, chat_body(true), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), Some("text/event-stream"));
    assert_eq!(header(&resp, "cache-control"), Some("no-cache"));
    assert_eq!(header(&resp, "x-sim-name"), Some("sim"));
    let events = sse_events(&text(resp).await);
    assert_eq!(events.len(), 6, "{events:?}");
    assert_eq!(events[5], "[DONE]");
    let chunks: Vec<Value> = events[..5]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-4o-mini");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert!(c.get("usage").is_none());
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    for (i, c) in chunks[1..4].iter().enumerate() {
        assert_eq!(c["choices"][0]["delta"]["content"], format!("tok{i} "));
        assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
    }
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");

    let stats = sim.stats();
    assert_eq!(
        (stats.ok, stats.streams_completed, stats.cancelled),
        (1, 1, 0)
    );
    assert!(sim.requests()[0].stream);
}

#[tokio::test]
async fn stream_include_usage_adds_usage_chunk() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = chat_body(true);
    body["stream_options"] = json!({"include_usage": true});
    let prompt_tokens = body.to_string().len().div_ceil(4) as u64;
    let resp = chat(&client, &sim, body, &[("x-sim-tokens", "2")]).await;
    let events = sse_events(&text(resp).await);
    assert_eq!(events.len(), 6, "{events:?}");
    assert!(events[3].contains("\"finish_reason\":\"stop\""));
    let usage: Value = serde_json::from_str(&events[4]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": prompt_tokens, "completion_tokens": 2, "total_tokens": prompt_tokens + 2})
    );
    assert_eq!(events[5], "[DONE]");
}

#[tokio::test]
async fn script_is_consumed_in_order_before_behavior() {
    let sim = start(SimConfig::default()).await;
    sim.push_script([Fault::status(503), Fault::ok(Duration::ZERO)]);
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let resp = chat(&client, &sim, chat_body(false), &[]).await;
        statuses.push(resp.status().as_u16());
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            let v = json_body(resp).await;
            assert_eq!(v["error"]["message"], "simulated 503 from sim");
            assert_eq!(v["error"]["type"], "overloaded_error");
        }
    }
    assert_eq!(statuses, [503, 200, 200]);
    let stats = sim.stats();
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.ok, 2);
    assert_eq!(
        stats.errors_by_status.into_iter().collect::<Vec<_>>(),
        [(503, 1)]
    );
    let outcomes: Vec<String> = sim.requests().into_iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, ["status:503", "ok", "ok"]);

    sim.reset_stats();
    assert_eq!(sim.stats(), SimStats::default());
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn retry_after_headers() {
    let sim = start_with(Behavior {
        status_rates: vec![(429, 1.0)],
        retry_after: Some(Duration::from_millis(1500)),
        ..Behavior::default()
    })
    .await;
    let client = client();
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after"), Some("2"));
    assert_eq!(header(&resp, "retry-after-ms"), Some("1500"));
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert_eq!(json_body(resp).await["error"]["type"], "rate_limit_error");

    // Only 429 and 503 carry the behaviour's retry hint.
    sim.set_behavior(Behavior {
        status_rates: vec![(500, 1.0)],
        retry_after: Some(Duration::from_secs(1)),
        ..Behavior::default()
    });
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&resp, "retry-after"), None);
    assert_eq!(json_body(resp).await["error"]["type"], "server_error");

    // An explicit fault sends its hint whatever the code.
    sim.push_script([Fault {
        delay: Duration::ZERO,
        action: FaultAction::Status {
            code: 502,
            retry_after: Some(Duration::from_secs(3)),
        },
    }]);
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(header(&resp, "retry-after"), Some("3"));
    assert_eq!(header(&resp, "retry-after-ms"), Some("3000"));
}

#[tokio::test]
async fn override_headers_win_over_script() {
    let sim = start(SimConfig::default()).await;
    sim.push_script([Fault::status(500)]);
    let client = client();
    let resp = chat(
        &client,
        &sim,
        chat_body(false),
        &[("x-sim-status", "503"), ("x-sim-retry-after-ms", "250")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&resp, "retry-after"), Some("1"));
    assert_eq!(header(&resp, "retry-after-ms"), Some("250"));
    // The script entry is still queued for the next request.
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let resp = chat(&client, &sim, chat_body(false), &[("x-sim-status", "nope")]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.stats().bad_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn timeline_phases_follow_the_clock() {
    let phase = |from: u64, until: u64, code: u16| Phase {
        from: Duration::from_secs(from),
        until: Duration::from_secs(until),
        behavior: Behavior {
            status_rates: vec![(code, 1.0)],
            ..Behavior::default()
        },
    };
    let sim = start(SimConfig::default()).await;
    sim.set_timeline(vec![phase(0, 10, 503), phase(10, 20, 429)]);
    let client = client();
    tokio::time::advance(Duration::from_secs(15)).await;
    sim.reset_clock();

    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    tokio::time::advance(Duration::from_secs(10)).await;
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    tokio::time::advance(Duration::from_secs(10)).await;
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn timeline_covering_all_time_overrides_default() {
    let sim = start(SimConfig {
        timeline: vec![Phase {
            from: Duration::ZERO,
            until: Duration::MAX,
            behavior: Behavior {
                status_rates: vec![(500, 1.0)],
                ..Behavior::default()
            },
        }],
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    sim.set_timeline(Vec::new());
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn delay_header_delays_the_answer() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let before = tokio::time::Instant::now();
    let resp = chat(
        &client,
        &sim,
        chat_body(false),
        &[("x-sim-delay-ms", "200")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(before.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn same_seed_same_fault_sequence() {
    let config = || SimConfig {
        seed: 42,
        behavior: Behavior {
            status_rates: vec![(503, 0.5)],
            ..Behavior::default()
        },
        ..SimConfig::default()
    };
    let client = client();
    let mut sequences = Vec::new();
    for _ in 0..2 {
        let sim = start(config()).await;
        let mut statuses = Vec::new();
        for _ in 0..50 {
            statuses.push(
                chat(&client, &sim, chat_body(false), &[])
                    .await
                    .status()
                    .as_u16(),
            );
        }
        sim.shutdown().await;
        sequences.push(statuses);
    }
    assert_eq!(sequences[0], sequences[1]);
    assert!(sequences[0].contains(&503) && sequences[0].contains(&200));
}

#[tokio::test]
async fn drop_after_aborts_the_body() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let resp = chat(&client, &sim, chat_body(true), &[("x-sim-drop-after", "2")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    let error = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().unwrap()),
            Some(Err(err)) => break err,
            None => panic!("stream ended cleanly instead of aborting"),
        }
    };
    let received = String::from_utf8(received).unwrap();
    assert!(received.contains("tok1 "), "{received}");
    assert!(!received.contains("tok2 "), "{received}");
    assert!(!received.contains("[DONE]"));
    drop(error);
    let stats = sim.stats();
    assert_eq!((stats.dropped, stats.streams_completed), (1, 0));
    assert_eq!(sim.requests()[0].outcome, "drop");
}

#[tokio::test]
async fn sampled_drop_after_applies_to_streams_only() {
    let sim = start_with(Behavior {
        drop_after: Some((0, 1.0)),
        ..Behavior::default()
    })
    .await;
    let client = client();
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(json_body(resp).await["object"], "chat.completion");
    let resp = chat(&client, &sim, chat_body(true), &[]).await;
    assert!(resp.into_body().collect().await.is_err());
}

#[tokio::test]
async fn truncate_after_ends_without_finish_or_done() {
    let sim = start(SimConfig::default()).await;
    sim.push_script([FaultAction::TruncateAfter(2).into()]);
    let client = client();
    let resp = chat(&client, &sim, chat_body(true), &[]).await;
    let events = sse_events(&text(resp).await);
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events[2].contains("tok1 "));
    assert!(events
        .iter()
        .all(|e| !e.contains("\"stop\"") && e != "[DONE]"));
    let stats = sim.stats();
    assert_eq!(
        (stats.truncated, stats.streams_completed, stats.cancelled),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn error_event_first_is_the_only_event() {
    let sim = start(SimConfig {
        name: "beta".into(),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let resp = chat(
        &client,
        &sim,
        chat_body(true),
        &[("x-sim-error-event", "first")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let events = sse_events(&text(resp).await);
    assert_eq!(events.len(), 1, "{events:?}");
    let event: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(
        event,
        json!({"error": {"message": "simulated overload from beta", "type": "overloaded_error", "code": "overloaded"}})
    );

    let resp = chat(
        &client,
        &sim,
        chat_body(true),
        &[("x-sim-error-event", "2")],
    )
    .await;
    let events = sse_events(&text(resp).await);
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events[2].contains("tok1 "));
    assert!(events[3].contains("overloaded_error"));
    let stats = sim.stats();
    assert_eq!((stats.error_events, stats.streams_completed), (2, 0));
}

#[tokio::test]
async fn invalid_requests_are_rejected_in_openai_shape() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let url = || format!("{}/chat/completions", sim.base_url());
    for body in ["not json", "[1,2]", r#"{"messages":[]}"#, r#"{"model":3}"#] {
        let resp = send(&client, Method::POST, url(), body, &[]).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let v = json_body(resp).await;
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
        assert!(v["error"]["message"].is_string());
    }
    let resp = chat(&client, &sim, json!({"model": "gpt-9"}), &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(resp).await["error"]["code"], "model_not_found");

    let resp = send(&client, Method::GET, url(), "", &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = send(
        &client,
        Method::POST,
        format!("{}/nope", sim.base_url()),
        "{}",
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let v = json_body(resp).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let stats = sim.stats();
    assert_eq!(stats.bad_requests, 7);
    assert_eq!(stats.requests, 7);
    assert_eq!(stats.ok, 0);
    assert!(stats.errors_by_status.is_empty());
    let outcomes: Vec<String> = sim.requests().into_iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes[0], "bad_request");
    assert_eq!(outcomes[4], "not_found");
}

#[tokio::test]
async fn hang_then_client_drop_counts_cancelled() {
    let sim = start_with(Behavior {
        hang_rate: 1.0,
        ..Behavior::default()
    })
    .await;
    let request = tokio::spawn({
        let sim = sim.clone();
        async move {
            let client = client();
            chat(&client, &sim, chat_body(false), &[]).await;
        }
    });
    wait_for_stats(&sim, "the hang", |s| s.hangs == 1).await;
    assert_eq!(sim.stats().cancelled, 0);
    request.abort();
    let stats = wait_for_stats(&sim, "the cancellation", |s| s.cancelled == 1).await;
    assert_eq!(stats.ok, 0);
    assert_eq!(sim.requests()[0].outcome, "hang");
}

#[tokio::test]
async fn stream_dropped_by_peer_counts_cancelled() {
    let sim = start_with(Behavior {
        completion_tokens: 1000,
        tokens_per_sec: 20.0,
        ..Behavior::default()
    })
    .await;
    let client = client();
    let resp = chat(&client, &sim, chat_body(true), &[]).await;
    let mut body = resp.into_body();
    let mut received = String::new();
    while !received.contains("tok0 ") {
        let frame = body.frame().await.unwrap().unwrap();
        received.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
    }
    drop(body);
    let stats = wait_for_stats(&sim, "the cancellation", |s| s.cancelled == 1).await;
    assert_eq!(stats.streams_completed, 0);
}

#[tokio::test]
async fn embeddings_shape_and_determinism() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let url = format!("{}/embeddings", sim.base_url());
    let body = json!({"model": "text-embedding-3-small", "input": ["hello", "world", [1, 2, 3]]});
    let v = json_body(send(&client, Method::POST, url.clone(), body.to_string(), &[]).await).await;
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"].as_array().unwrap().len(), 8);
    }
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    // "hello" (2) + "world" (2) + three token ids.
    assert_eq!(v["usage"], json!({"prompt_tokens": 7, "total_tokens": 7}));

    let single = json!({"model": "text-embedding-3-small", "input": "hello"});
    let v2 =
        json_body(send(&client, Method::POST, url.clone(), single.to_string(), &[]).await).await;
    assert_eq!(v2["data"][0]["embedding"], data[0]["embedding"]);

    let resp = send(
        &client,
        Method::POST,
        url.clone(),
        single.to_string(),
        &[("x-sim-status", "429")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let bad = json!({"model": "text-embedding-3-small", "input": 5});
    let resp = send(&client, Method::POST, url, bad.to_string(), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn models_and_healthz() {
    let sim = start(SimConfig {
        models: vec!["m1".into(), "m2".into()],
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let v = json_body(
        send(
            &client,
            Method::GET,
            format!("{}/models", sim.base_url()),
            "",
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m1", "m2"]);
    let health = format!("http://{}/healthz", sim.addr());
    let resp = send(&client, Method::GET, health, "", &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Control-plane calls do not disturb the counters.
    assert_eq!(sim.stats(), SimStats::default());
}

#[tokio::test]
async fn shutdown_closes_port_and_aborts_in_flight_requests() {
    let sim = start(SimConfig::default()).await;
    let observer = sim.clone();
    let addr = sim.addr();
    let request = tokio::spawn({
        let sim = sim.clone();
        async move {
            let client = client();
            let url = format!("{}/chat/completions", sim.base_url());
            let req = Request::post(url)
                .header("x-sim-hang", "1")
                .body(Full::new(Bytes::from(chat_body(false).to_string())))
                .unwrap();
            client.request(req).await
        }
    });
    wait_for_stats(&observer, "the hang", |s| s.hangs == 1).await;
    sim.shutdown().await;
    assert!(
        request.await.unwrap().is_err(),
        "in-flight request must fail"
    );
    assert_eq!(observer.stats().cancelled, 1);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn stream_faults_on_non_stream_requests() {
    let sim = start(SimConfig::default()).await;
    sim.push_script([
        FaultAction::DropAfter(1).into(),
        FaultAction::TruncateAfter(1).into(),
        FaultAction::ErrorEventFirst.into(),
    ]);
    let client = client();
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.into_body().collect().await.is_err());
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    let body = text(resp).await;
    assert!(serde_json::from_str::<Value>(&body).is_err(), "{body}");
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_body(resp).await["error"]["type"], "overloaded_error");
    let stats = sim.stats();
    assert_eq!(
        (stats.dropped, stats.truncated, stats.error_events, stats.ok),
        (1, 1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn stream_delay_and_pacing_use_tokio_time() {
    let sim = start_with(Behavior {
        tokens_per_sec: 10.0,
        completion_tokens: 5,
        ..Behavior::default()
    })
    .await;
    let client = client();
    let before = tokio::time::Instant::now();
    let resp = chat(&client, &sim, chat_body(true), &[("x-sim-delay-ms", "300")]).await;
    let events = sse_events(&text(resp).await);
    assert_eq!(events.len(), 8, "{events:?}");
    // 300 ms before the first event, then 100 ms between the five tokens.
    assert!(before.elapsed() >= Duration::from_millis(700));
}

#[tokio::test]
async fn http2_streams_and_drops() {
    let sim = start(SimConfig::default()).await;
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let resp = chat(&client, &sim, chat_body(true), &[]).await;
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let events = sse_events(&text(resp).await);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let resp = chat(&client, &sim, chat_body(true), &[("x-sim-drop-after", "1")]).await;
    assert!(resp.into_body().collect().await.is_err());
    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let stats = sim.stats();
    assert_eq!(
        (stats.ok, stats.dropped, stats.streams_completed),
        (2, 1, 1)
    );
}

// ---- Anthropic Messages, Gemini and Azure OpenAI dialects ----

const ANTHROPIC_KEY: &str = "sk-ant-test-1";
const GEMINI_KEY: &str = "AIza-test-1";
const AZURE_KEY: &str = "azure-test-1";

fn anthropic_body(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "hello there"}],
        "stream": stream,
    })
}

fn weather_tool() -> Value {
    json!({
        "name": "get_weather",
        "description": "Weather at a place",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
    })
}

/// `POST /v1/messages` with Anthropic's required headers plus `headers`.
async fn anthropic(
    client: &HttpClient,
    sim: &SimHandle,
    body: &Value,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut all = vec![
        ("x-api-key", ANTHROPIC_KEY),
        ("anthropic-version", "2023-06-01"),
    ];
    all.extend_from_slice(headers);
    let url = format!("{}/messages", sim.base_url());
    send(client, Method::POST, url, body.to_string(), &all).await
}

fn gemini_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]})
}

fn gemini_url(sim: &SimHandle, model: &str, stream: bool) -> String {
    if stream {
        format!(
            "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
            sim.origin()
        )
    } else {
        format!("{}/v1beta/models/{model}:generateContent", sim.origin())
    }
}

/// A Gemini call keyed by the `x-goog-api-key` header, plus `headers`.
async fn gemini(
    client: &HttpClient,
    sim: &SimHandle,
    stream: bool,
    body: &Value,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut all = vec![("x-goog-api-key", GEMINI_KEY)];
    all.extend_from_slice(headers);
    let url = gemini_url(sim, "gemini-2.5-flash", stream);
    send(client, Method::POST, url, body.to_string(), &all).await
}

fn azure_url(sim: &SimHandle, deployment: &str, operation: &str) -> String {
    format!(
        "{}/openai/deployments/{deployment}/{operation}?api-version=2024-10-21",
        sim.origin()
    )
}

/// Anthropic's SSE events as (event name, data), checking the framing.
fn named_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').expect("event and data lines");
            let name = name.strip_prefix("event: ").expect("event line");
            let data = data.strip_prefix("data: ").expect("data line");
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

/// Gemini's SSE events, framed as Gemini frames them (`\r\n\r\n`).
fn gemini_events(body: &str) -> Vec<Value> {
    assert!(body.ends_with("\r\n\r\n"), "{body:?}");
    body.split("\r\n\r\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e
                .strip_prefix("data: ")
                .expect("every event is a data line");
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// Reads a body that must end in an abort; returns what arrived first.
async fn until_abort(resp: Response<Incoming>) -> String {
    let mut body = resp.into_body();
    let mut received = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().unwrap()),
            Some(Err(_)) => break,
            None => panic!("body ended cleanly instead of aborting"),
        }
    }
    String::from_utf8(received).unwrap()
}

#[tokio::test]
async fn anthropic_non_stream_has_messages_shape() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let body = anthropic_body(false);
    let resp = anthropic(&client, &sim, &body, &[("x-request-id", "req-7")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert_eq!(header(&resp, "x-sim-name"), Some("sim"));
    let v = json_body(resp).await;
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"}])
    );
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    let prompt_tokens = body.to_string().len().div_ceil(4) as u64;
    assert_eq!(
        v["usage"],
        json!({"input_tokens": prompt_tokens, "output_tokens": 8})
    );

    let records = sim.requests();
    let r = &records[0];
    assert_eq!(r.endpoint, SimEndpoint::AnthropicMessages);
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.api_key.as_deref(), Some(ANTHROPIC_KEY));
    assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-5"));
    assert_eq!(r.outcome, "ok");
    assert!(r
        .headers
        .contains(&("x-api-key".to_owned(), "present".to_owned())));
    // The key is in the record for tests, never in its Debug output.
    assert!(!format!("{records:?}").contains(ANTHROPIC_KEY));
    assert_eq!((sim.stats().requests, sim.stats().ok), (1, 1));
}

#[tokio::test]
async fn anthropic_stream_sends_the_documented_event_sequence() {
    let sim = start_with(Behavior {
        completion_tokens: 3,
        ..Behavior::default()
    })
    .await;
    let client = client();
    let body = anthropic_body(true);
    let prompt_tokens = body.to_string().len().div_ceil(4) as u64;
    let resp = anthropic(&client, &sim, &body, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), Some("text/event-stream"));
    let events = named_events(&text(resp).await);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["type"], "message");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["model"], "claude-sonnet-4-5");
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], prompt_tokens);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    for (i, (_, delta)) in events[3..6].iter().enumerate() {
        assert_eq!(delta["index"], 0);
        assert_eq!(
            delta["delta"],
            json!({"type": "text_delta", "text": format!("tok{i} ")})
        );
    }
    assert_eq!(events[6].1["index"], 0);
    assert_eq!(
        events[7].1["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(events[7].1["usage"], json!({"output_tokens": 3}));
    let stats = sim.stats();
    assert_eq!((stats.ok, stats.streams_completed), (1, 1));
    assert!(sim.requests()[0].stream);
}

#[tokio::test]
async fn anthropic_tool_choice_answers_with_tool_use_until_a_result_comes_back() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = anthropic_body(false);
    body["tools"] = json!([weather_tool(), {"name": "lookup", "input_schema": {"type": "object"}}]);
    body["tool_choice"] = json!({"type": "any"});
    let v = json_body(anthropic(&client, &sim, &body, &[]).await).await;
    assert_eq!(v["stop_reason"], "tool_use");
    let block = &v["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    assert_eq!(block["name"], "get_weather");
    assert_eq!(
        block["input"],
        json!({"location": "Paris", "unit": "celsius"})
    );

    body["tool_choice"] = json!({"type": "tool", "name": "lookup"});
    let v = json_body(anthropic(&client, &sim, &body, &[]).await).await;
    assert_eq!(v["content"][0]["name"], "lookup");

    // `auto` calls the first tool until a tool result comes back, as the
    // OpenAI dialects do; `none` never calls.
    body["tool_choice"] = json!({"type": "auto"});
    let v = json_body(anthropic(&client, &sim, &body, &[]).await).await;
    assert_eq!(v["content"][0]["name"], "get_weather");
    let mut answered = body.clone();
    answered["messages"] = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]},
    ]);
    let v = json_body(anthropic(&client, &sim, &answered, &[]).await).await;
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["stop_reason"], "end_turn");
    body["tool_choice"] = json!({"type": "none"});
    let v = json_body(anthropic(&client, &sim, &body, &[]).await).await;
    assert_eq!(v["content"][0]["type"], "text");

    body["tool_choice"] = json!({"type": "any"});
    body["stream"] = json!(true);
    let events = named_events(&text(anthropic(&client, &sim, &body, &[]).await).await);
    let block = &events[1].1["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    let mut partial = String::new();
    for (name, data) in &events {
        if name == "content_block_delta" {
            assert_eq!(data["delta"]["type"], "input_json_delta");
            partial.push_str(data["delta"]["partial_json"].as_str().unwrap());
        }
    }
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"location": "Paris", "unit": "celsius"})
    );
    let (name, delta) = &events[events.len() - 2];
    assert_eq!(name, "message_delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(names(&events).last(), Some(&"message_stop"));
}

#[tokio::test]
async fn anthropic_errors_have_anthropic_shape_and_status() {
    let sim = start(SimConfig {
        name: "ant".into(),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let body = anthropic_body(false);
    for (code, kind) in [
        ("429", "rate_limit_error"),
        ("500", "api_error"),
        ("529", "overloaded_error"),
        ("503", "overloaded_error"),
        ("400", "invalid_request_error"),
        ("401", "authentication_error"),
    ] {
        let resp = anthropic(&client, &sim, &body, &[("x-sim-status", code)]).await;
        assert_eq!(resp.status().as_str(), code);
        assert_eq!(
            json_body(resp).await,
            json!({"type": "error", "error": {"type": kind, "message": format!("simulated {code} from ant")}})
        );
    }
    let resp = anthropic(
        &client,
        &sim,
        &body,
        &[("x-sim-status", "429"), ("x-sim-retry-after-ms", "1500")],
    )
    .await;
    assert_eq!(header(&resp, "retry-after"), Some("2"));
    assert_eq!(header(&resp, "retry-after-ms"), Some("1500"));

    // The protocol's own checks, before any fault.
    let url = format!("{}/messages", sim.base_url());
    let no_key = [("anthropic-version", "2023-06-01")];
    let resp = send(
        &client,
        Method::POST,
        url.clone(),
        body.to_string(),
        &no_key,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v = json_body(resp).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    let no_version = [("x-api-key", ANTHROPIC_KEY)];
    let resp = send(&client, Method::POST, url, body.to_string(), &no_version).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json_body(resp).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("anthropic-version"));

    let mut no_max_tokens = anthropic_body(false);
    no_max_tokens.as_object_mut().unwrap().remove("max_tokens");
    let resp = anthropic(&client, &sim, &no_max_tokens, &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_body(resp).await["error"]["message"],
        "max_tokens: Field required"
    );
    let mut unknown = anthropic_body(false);
    unknown["model"] = json!("claude-9");
    let resp = anthropic(&client, &sim, &unknown, &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(resp).await["error"]["type"], "not_found_error");

    let stats = sim.stats();
    assert_eq!(stats.errors_by_status.values().sum::<u64>(), 7);
    assert_eq!((stats.unauthorized, stats.bad_requests), (1, 3));
}

#[tokio::test]
async fn anthropic_stream_faults() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let body = anthropic_body(true);

    let resp = anthropic(&client, &sim, &body, &[("x-sim-error-event", "first")]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let events = named_events(&text(resp).await);
    assert_eq!(names(&events), ["error"]);
    assert_eq!(
        events[0].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "simulated overload from sim"}})
    );

    let resp = anthropic(&client, &sim, &body, &[("x-sim-error-event", "2")]).await;
    let events = named_events(&text(resp).await);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "error",
        ]
    );

    let resp = anthropic(&client, &sim, &body, &[("x-sim-drop-after", "2")]).await;
    let received = until_abort(resp).await;
    assert!(
        received.contains("tok1 ") && !received.contains("tok2 "),
        "{received}"
    );
    assert!(!received.contains("message_stop"));

    sim.push_script([FaultAction::TruncateAfter(1).into()]);
    let events = named_events(&text(anthropic(&client, &sim, &body, &[]).await).await);
    assert_eq!(names(&events).last(), Some(&"content_block_delta"));

    // On a non-stream request the error event is the whole 200 body.
    let resp = anthropic(
        &client,
        &sim,
        &anthropic_body(false),
        &[("x-sim-error-event", "first")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_body(resp).await["error"]["type"], "overloaded_error");

    let stats = sim.stats();
    assert_eq!(
        (
            stats.error_events,
            stats.dropped,
            stats.truncated,
            stats.streams_completed
        ),
        (3, 1, 1, 0)
    );
}

#[tokio::test]
async fn gemini_non_stream_has_generate_content_shape() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let body = gemini_body();
    let resp = gemini(&client, &sim, false, &body, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    let v = json_body(resp).await;
    let candidate = &v["candidates"][0];
    assert_eq!(
        candidate["content"],
        json!({"parts": [{"text": "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"}], "role": "model"})
    );
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(candidate["index"], 0);
    let prompt_tokens = body.to_string().len().div_ceil(4) as u64;
    assert_eq!(
        v["usageMetadata"],
        json!({"promptTokenCount": prompt_tokens, "candidatesTokenCount": 8, "totalTokenCount": prompt_tokens + 8})
    );
    assert_eq!(v["modelVersion"], "gemini-2.5-flash");
    assert!(!v["responseId"].as_str().unwrap().is_empty());

    // The key may also come as `?key=`.
    let url = format!(
        "{}?key=AIza-in-query",
        gemini_url(&sim, "gemini-2.5-flash", false)
    );
    let resp = send(&client, Method::POST, url, body.to_string(), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);

    let records = sim.requests();
    assert_eq!(records[0].endpoint, SimEndpoint::GeminiGenerateContent);
    assert_eq!(
        records[0].path,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(records[0].model.as_deref(), Some("gemini-2.5-flash"));
    assert_eq!(records[0].api_key.as_deref(), Some(GEMINI_KEY));
    assert_eq!(records[1].api_key.as_deref(), Some("AIza-in-query"));
    assert!(!records[1].stream);
}

#[tokio::test]
async fn gemini_stream_sends_chunks_then_ends_without_done() {
    let sim = start_with(Behavior {
        completion_tokens: 3,
        ..Behavior::default()
    })
    .await;
    let client = client();
    let body = gemini_body();
    let prompt_tokens = body.to_string().len().div_ceil(4) as u64;
    let resp = gemini(&client, &sim, true, &body, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), Some("text/event-stream"));
    let raw = text(resp).await;
    assert!(!raw.contains("[DONE]"));
    let events = gemini_events(&raw);
    assert_eq!(events.len(), 3, "{raw}");
    for (i, e) in events.iter().enumerate() {
        let candidate = &e["candidates"][0];
        assert_eq!(candidate["content"]["parts"][0]["text"], format!("tok{i} "));
        assert_eq!(candidate["content"]["role"], "model");
        assert_eq!(e["modelVersion"], "gemini-2.5-flash");
        assert_eq!(e["responseId"], events[0]["responseId"]);
        assert_eq!(e["usageMetadata"]["promptTokenCount"], prompt_tokens);
    }
    for e in &events[..2] {
        assert!(e["candidates"][0].get("finishReason").is_none());
        assert!(e["usageMetadata"].get("candidatesTokenCount").is_none());
    }
    assert_eq!(events[2]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(
        events[2]["usageMetadata"],
        json!({"promptTokenCount": prompt_tokens, "candidatesTokenCount": 3, "totalTokenCount": prompt_tokens + 3})
    );

    // No content at all still ends with a finished chunk.
    let resp = gemini(&client, &sim, true, &body, &[("x-sim-tokens", "0")]).await;
    let events = gemini_events(&text(resp).await);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["candidates"][0]["finishReason"], "STOP");
    assert_eq!(events[0]["usageMetadata"]["candidatesTokenCount"], 0);

    let stats = sim.stats();
    assert_eq!((stats.ok, stats.streams_completed), (2, 2));
    let r = &sim.requests()[0];
    assert_eq!(r.endpoint, SimEndpoint::GeminiStreamGenerateContent);
    assert!(r.stream);
}

#[tokio::test]
async fn gemini_function_calling_answers_with_function_call_until_a_response_comes_back() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = gemini_body();
    body["tools"] = json!([{"functionDeclarations": [
        {"name": "get_weather", "parameters": {"type": "object"}},
        {"name": "lookup"},
    ]}]);
    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY"}});
    let call = json!({"functionCall": {"name": "get_weather", "args": {"location": "Paris", "unit": "celsius"}}});
    let v = json_body(gemini(&client, &sim, false, &body, &[]).await).await;
    assert_eq!(v["candidates"][0]["content"]["parts"], json!([call]));
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");

    let events = gemini_events(&text(gemini(&client, &sim, true, &body, &[]).await).await);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0]["candidates"][0]["content"]["parts"],
        json!([call])
    );
    assert_eq!(events[0]["candidates"][0]["finishReason"], "STOP");

    // snake_case field names and allowed names work as at Gemini.
    let snake = json!({
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [{"function_declarations": [{"name": "get_weather"}, {"name": "lookup"}]}],
        "tool_config": {"function_calling_config": {"mode": "ANY", "allowed_function_names": ["lookup"]}},
    });
    let v = json_body(gemini(&client, &sim, false, &snake, &[]).await).await;
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "lookup"
    );

    // AUTO calls until a function response comes back; NONE never calls.
    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "AUTO"}});
    let v = json_body(gemini(&client, &sim, false, &body, &[]).await).await;
    assert_eq!(v["candidates"][0]["content"]["parts"], json!([call]));
    let mut answered = body.clone();
    answered["contents"] = json!([
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [call]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"sky": "sunny"}}}]},
    ]);
    let v = json_body(gemini(&client, &sim, false, &answered, &[]).await).await;
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());
    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    let v = json_body(gemini(&client, &sim, false, &body, &[]).await).await;
    assert!(v["candidates"][0]["content"]["parts"][0]["text"].is_string());
}

#[tokio::test]
async fn gemini_errors_have_gemini_shape_and_status() {
    let sim = start(SimConfig {
        name: "gem".into(),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    let body = gemini_body();
    for (code, status) in [
        (429, "RESOURCE_EXHAUSTED"),
        (503, "UNAVAILABLE"),
        (500, "INTERNAL"),
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
    ] {
        let code_text = code.to_string();
        let resp = gemini(&client, &sim, false, &body, &[("x-sim-status", &code_text)]).await;
        assert_eq!(resp.status().as_u16(), code);
        assert_eq!(
            json_body(resp).await,
            json!({"error": {"code": code, "message": format!("simulated {code} from gem"), "status": status}})
        );
    }
    let resp = gemini(
        &client,
        &sim,
        true,
        &body,
        &[("x-sim-status", "503"), ("x-sim-retry-after-ms", "2000")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&resp, "retry-after"), Some("2"));

    let url = gemini_url(&sim, "gemini-2.5-flash", false);
    let resp = send(&client, Method::POST, url, body.to_string(), &[]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let v = json_body(resp).await;
    assert_eq!(
        (v["error"]["code"].as_u64(), v["error"]["status"].as_str()),
        (Some(403), Some("PERMISSION_DENIED"))
    );

    let url = gemini_url(&sim, "gemini-9", false);
    let resp = send(
        &client,
        Method::POST,
        url,
        body.to_string(),
        &[("x-goog-api-key", GEMINI_KEY)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(resp).await["error"]["status"], "NOT_FOUND");

    let no_sse = format!(
        "{}/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        sim.origin()
    );
    let resp = send(
        &client,
        Method::POST,
        no_sse,
        body.to_string(),
        &[("x-goog-api-key", GEMINI_KEY)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(resp).await["error"]["status"], "INVALID_ARGUMENT");

    for bad in [json!({"contents": null}), json!({"contents": []})] {
        let resp = gemini(&client, &sim, false, &bad, &[]).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    let resp = gemini(&client, &sim, false, &json!([1]), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(resp).await["error"]["code"], 400);

    let stats = sim.stats();
    assert_eq!(stats.errors_by_status.values().sum::<u64>(), 7);
    assert_eq!((stats.unauthorized, stats.bad_requests), (1, 5));
}

#[tokio::test]
async fn gemini_stream_faults() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let body = gemini_body();
    let resp = gemini(
        &client,
        &sim,
        true,
        &body,
        &[("x-sim-error-event", "first")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let events = gemini_events(&text(resp).await);
    assert_eq!(
        events,
        [
            json!({"error": {"code": 503, "message": "simulated overload from sim", "status": "UNAVAILABLE"}})
        ]
    );

    let resp = gemini(&client, &sim, true, &body, &[("x-sim-error-event", "2")]).await;
    let events = gemini_events(&text(resp).await);
    assert_eq!(events.len(), 3);
    assert_eq!(
        events[1]["candidates"][0]["content"]["parts"][0]["text"],
        "tok1 "
    );
    assert!(events[1]["candidates"][0].get("finishReason").is_none());
    assert_eq!(events[2]["error"]["status"], "UNAVAILABLE");

    let resp = gemini(&client, &sim, true, &body, &[("x-sim-drop-after", "1")]).await;
    let received = until_abort(resp).await;
    assert!(
        received.contains("tok0 ") && !received.contains("STOP"),
        "{received}"
    );

    // Truncated after every chunk but the finish: no finishReason anywhere.
    let resp = gemini(&client, &sim, true, &body, &[("x-sim-truncate-after", "8")]).await;
    let events = gemini_events(&text(resp).await);
    assert_eq!(events.len(), 8);
    assert!(events
        .iter()
        .all(|e| e["candidates"][0].get("finishReason").is_none()));

    let stats = sim.stats();
    assert_eq!(
        (
            stats.error_events,
            stats.dropped,
            stats.truncated,
            stats.streams_completed
        ),
        (2, 1, 1, 0)
    );
}

#[tokio::test]
async fn azure_deployments_answer_like_openai() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let key = [("api-key", AZURE_KEY)];
    let body = json!({"messages": [{"role": "user", "content": "hi"}]});
    let resp = send(
        &client,
        Method::POST,
        azure_url(&sim, "gpt-4o", "chat/completions"),
        body.to_string(),
        &key,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let v = json_body(resp).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4o");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    );

    let stream = json!({"messages": [], "stream": true, "stream_options": {"include_usage": true}});
    let resp = send(
        &client,
        Method::POST,
        azure_url(&sim, "gpt-4o", "chat/completions"),
        stream.to_string(),
        &key,
    )
    .await;
    let events = sse_events(&text(resp).await);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events[events.len() - 2].contains("\"usage\""));

    let emb = json!({"input": "hello"});
    let resp = send(
        &client,
        Method::POST,
        azure_url(&sim, "text-embedding-3-small", "embeddings"),
        emb.to_string(),
        &key,
    )
    .await;
    let v = json_body(resp).await;
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);

    // Injected faults are OpenAI-shaped.
    let resp = send(
        &client,
        Method::POST,
        azure_url(&sim, "gpt-4o", "chat/completions"),
        body.to_string(),
        &[("api-key", AZURE_KEY), ("x-sim-status", "429")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json_body(resp).await["error"]["type"], "rate_limit_error");

    // Azure's own gateway errors.
    let no_version = format!(
        "{}/openai/deployments/gpt-4o/chat/completions",
        sim.origin()
    );
    let resp = send(&client, Method::POST, no_version, body.to_string(), &key).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_body(resp).await,
        json!({"error": {"code": "404", "message": "Resource not found"}})
    );
    let resp = send(
        &client,
        Method::POST,
        azure_url(&sim, "gpt-4o", "chat/completions"),
        body.to_string(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_body(resp).await["error"]["code"], "401");
    let resp = send(
        &client,
        Method::POST,
        azure_url(&sim, "nope", "chat/completions"),
        body.to_string(),
        &key,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(json_body(resp).await["error"]["code"], "DeploymentNotFound");

    let records = sim.requests();
    assert_eq!(records[0].endpoint, SimEndpoint::AzureChat);
    assert_eq!(
        records[0].path,
        "/openai/deployments/gpt-4o/chat/completions"
    );
    assert_eq!(records[0].model.as_deref(), Some("gpt-4o"));
    assert_eq!(records[0].api_key.as_deref(), Some(AZURE_KEY));
    assert!(records[1].stream);
    assert_eq!(records[2].endpoint, SimEndpoint::AzureEmbeddings);
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "ok",
            "ok",
            "ok",
            "status:429",
            "not_found",
            "unauthorized",
            "not_found"
        ]
    );
}

#[tokio::test]
async fn context_length_action_in_each_dialect() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let flag = [("x-sim-context-length", "1")];

    let resp = chat(&client, &sim, chat_body(false), &flag).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json_body(resp).await;
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("This model's maximum context length is"));

    // A scripted one on a stream request is a plain 400, not a stream.
    sim.push_script([FaultAction::ContextLength.into()]);
    let resp = anthropic(&client, &sim, &anthropic_body(true), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    assert_eq!(
        json_body(resp).await,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"}})
    );

    let resp = gemini(&client, &sim, true, &gemini_body(), &flag).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json_body(resp).await;
    assert_eq!(v["error"]["code"], 400);
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("exceeds the maximum number of tokens allowed (1048576)"));

    let key = ("api-key", AZURE_KEY);
    let resp = send(
        &client,
        Method::POST,
        azure_url(&sim, "text-embedding-3-small", "embeddings"),
        json!({"input": "x"}).to_string(),
        &[key, flag[0]],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json_body(resp).await;
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["param"].as_str()),
        (Some("context_length_exceeded"), Some("input"))
    );

    let stats = sim.stats();
    assert_eq!(
        stats.errors_by_status.into_iter().collect::<Vec<_>>(),
        [(400, 4)]
    );
    assert_eq!(stats.ok, 0);
    assert!(sim.requests().iter().all(|r| r.outcome == "context_length"));

    // Sampled from the behaviour as well.
    sim.set_behavior(Behavior {
        context_length_rate: 1.0,
        ..Behavior::default()
    });
    let resp = chat(&client, &sim, chat_body(true), &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn accepted_keys_refuse_other_keys_in_each_dialect() {
    let sim = start(SimConfig {
        accepted_keys: Some(vec!["good-key".into(), "other-good".into()]),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    // A refused request consumes no script entry.
    sim.push_script([Fault::status(503)]);
    let wrong = "sk-wrong-secret";

    let resp = chat(&client, &sim, chat_body(false), &[]).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {wrong}");
    let resp = chat(
        &client,
        &sim,
        chat_body(false),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body = text(resp).await;
    assert!(!body.contains(wrong), "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let resp = send(
        &client,
        Method::POST,
        format!("{}/messages", sim.base_url()),
        anthropic_body(false).to_string(),
        &[("x-api-key", wrong), ("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(resp).await["error"]["type"],
        "authentication_error"
    );

    let resp = send(
        &client,
        Method::POST,
        gemini_url(&sim, "gemini-2.5-flash", false),
        gemini_body().to_string(),
        &[("x-goog-api-key", wrong)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v = json_body(resp).await;
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(v["error"]["details"][0]["reason"], "API_KEY_INVALID");

    let resp = send(
        &client,
        Method::POST,
        azure_url(&sim, "gpt-4o", "chat/completions"),
        json!({"messages": []}).to_string(),
        &[("api-key", wrong)],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let stats = sim.stats();
    assert_eq!((stats.requests, stats.unauthorized, stats.ok), (5, 5, 0));
    assert!(stats.errors_by_status.is_empty());

    // An accepted key gets the queued fault, then success.
    let resp = chat(
        &client,
        &sim,
        chat_body(false),
        &[("authorization", "Bearer good-key")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let resp = send(
        &client,
        Method::POST,
        format!("{}/messages", sim.base_url()),
        anthropic_body(false).to_string(),
        &[
            ("x-api-key", "other-good"),
            ("anthropic-version", "2023-06-01"),
        ],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let records = sim.requests();
    let keys: Vec<(SimEndpoint, Option<&str>, &str)> = records
        .iter()
        .map(|r| (r.endpoint, r.api_key.as_deref(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (SimEndpoint::OpenAiChat, None, "unauthorized"),
            (SimEndpoint::OpenAiChat, Some(wrong), "unauthorized"),
            (SimEndpoint::AnthropicMessages, Some(wrong), "unauthorized"),
            (
                SimEndpoint::GeminiGenerateContent,
                Some(wrong),
                "unauthorized"
            ),
            (SimEndpoint::AzureChat, Some(wrong), "unauthorized"),
            (SimEndpoint::OpenAiChat, Some("good-key"), "status:503"),
            (SimEndpoint::AnthropicMessages, Some("other-good"), "ok"),
        ]
    );
    assert!(!format!("{records:?}").contains("good-key"));
}

// ---- The rest of OpenAI's API: Responses, legacy completions, moderations,
// images, speech and transcriptions.

async fn post(
    client: &HttpClient,
    sim: &SimHandle,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let url = format!("{}/{path}", sim.base_url());
    send(client, Method::POST, url, body.to_string(), headers).await
}

fn responses_body(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "input": "hello there", "stream": stream})
}

fn weather_function() -> Value {
    json!({
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    })
}

/// Checks that `sequence_number`s count from 0 and each event's `type` is
/// its `event:` name.
fn checked_response_events(body: &str) -> Vec<(String, Value)> {
    let events = named_events(body);
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str(), "{data}");
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    events
}

/// Reads a body that must end in an abort; returns the bytes that arrived.
async fn bytes_until_abort(resp: Response<Incoming>) -> Vec<u8> {
    let mut body = resp.into_body();
    let mut received = Vec::new();
    loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(frame.data_ref().unwrap()),
            Some(Err(_)) => return received,
            None => panic!("body ended cleanly instead of aborting"),
        }
    }
}

#[tokio::test]
async fn responses_non_stream_has_the_response_object_shape() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = responses_body(false);
    body["instructions"] = json!("be brief");
    body["metadata"] = json!({"k": "v"});
    let resp = post(&client, &sim, "responses", body, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), Some("application/json"));
    let v = json_body(resp).await;
    assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["created_at"].as_u64().unwrap() > 0);
    assert_eq!(v["instructions"], "be brief", "request fields are echoed");
    assert_eq!(v["metadata"], json!({"k": "v"}));
    assert_eq!(v["parallel_tool_calls"], true);
    assert_eq!(v["tool_choice"], "auto");
    assert_eq!(v["tools"], json!([]));
    assert_eq!(v["text"], json!({"format": {"type": "text"}}));
    let output = v["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    let message = &output[0];
    assert_eq!(message["type"], "message");
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(message["status"], "completed");
    assert_eq!(message["role"], "assistant");
    assert_eq!(
        message["content"],
        json!([{"type": "output_text", "text": "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7", "annotations": []}])
    );
    let usage = &v["usage"];
    assert_eq!(usage["output_tokens"], 8);
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(usage["input_tokens"].as_u64().unwrap() + 8)
    );
    assert_eq!(sim.requests()[0].endpoint, SimEndpoint::OpenAiResponses);
    let received = sim.last_json(SimEndpoint::OpenAiResponses).unwrap();
    assert_eq!(received["instructions"], "be brief", "the body is kept");
}

#[tokio::test]
async fn responses_stream_sends_the_documented_event_sequence() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let resp = post(
        &client,
        &sim,
        "responses",
        responses_body(true),
        &[("x-sim-tokens", "3")],
    )
    .await;
    assert_eq!(header(&resp, "content-type"), Some("text/event-stream"));
    let events = checked_response_events(&text(resp).await);
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    let item_id = events[2].1["item"]["id"].as_str().unwrap().to_owned();
    assert_eq!(events[4].1["delta"], "tok0 ");
    assert_eq!(events[6].1["item_id"], item_id.as_str());
    assert_eq!(events[7].1["text"], "tok0 tok1 tok2 ");
    assert_eq!(events[9].1["item"]["content"][0]["text"], "tok0 tok1 tok2 ");
    let done = &events[10].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["id"], events[0].1["response"]["id"]);
    assert_eq!(done["usage"]["output_tokens"], 3);
    assert_eq!(sim.stats().streams_completed, 1);
}

#[tokio::test]
async fn responses_call_function_tools_until_their_output_comes_back() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = responses_body(false);
    body["tools"] = json!([weather_function()]);
    let v = json_body(post(&client, &sim, "responses", body.clone(), &[]).await).await;
    let call = &v["output"][0];
    assert_eq!(call["type"], "function_call", "{v}");
    assert_eq!(call["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    let call_id = call["call_id"].as_str().unwrap().to_owned();
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["location"], "Paris");
    assert_eq!(v["tools"][0]["name"], "get_weather", "tools are echoed");

    // Streamed: the arguments arrive as deltas.
    body["stream"] = json!(true);
    let events = checked_response_events(
        &text(post(&client, &sim, "responses", body.clone(), &[]).await).await,
    );
    let kinds = names(&events);
    assert_eq!(kinds[2], "response.output_item.added");
    assert_eq!(events[2].1["item"]["type"], "function_call");
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    let done = events
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"].as_str().unwrap(), deltas);
    assert_eq!(kinds[kinds.len() - 2], "response.output_item.done");
    assert_eq!(kinds[kinds.len() - 1], "response.completed");

    // With the function's output in the input, the answer is text.
    body["stream"] = json!(false);
    body["input"] = json!([
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": call_id, "output": "sunny"},
    ]);
    let v = json_body(post(&client, &sim, "responses", body, &[]).await).await;
    assert_eq!(v["output"][0]["type"], "message", "{v}");
}

#[tokio::test]
async fn responses_json_schema_answers_valid_json() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = responses_body(false);
    body["text"] = json!({"format": {"type": "json_schema", "name": "w", "strict": true, "schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
        "required": ["city", "temp"],
        "additionalProperties": false,
    }}});
    let v = json_body(post(&client, &sim, "responses", body.clone(), &[]).await).await;
    let answer = v["output"][0]["content"][0]["text"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(answer).unwrap();
    assert_eq!(parsed, json!({"city": "sim", "temp": 0}));

    body["stream"] = json!(true);
    let events =
        checked_response_events(&text(post(&client, &sim, "responses", body, &[]).await).await);
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&deltas).unwrap(), parsed);
}

#[tokio::test]
async fn previous_response_id_must_name_a_stored_response() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let first = json_body(post(&client, &sim, "responses", responses_body(false), &[]).await).await;
    let id = first["id"].as_str().unwrap();

    let mut next = responses_body(false);
    next["previous_response_id"] = json!(id);
    let resp = post(&client, &sim, "responses", next.clone(), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_body(resp).await["previous_response_id"], id);

    next["previous_response_id"] = json!("resp_unknown");
    let resp = post(&client, &sim, "responses", next.clone(), &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        json_body(resp).await,
        json!({"error": {
            "message": "Previous response with id 'resp_unknown' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found",
        }})
    );
    assert_eq!(sim.requests().last().unwrap().outcome, "not_found");

    // Another sim never knows this one's ids; `store: false` is not kept.
    let other = start(SimConfig::default()).await;
    next["previous_response_id"] = json!(id);
    let resp = post(&client, &other, "responses", next.clone(), &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let mut unstored = responses_body(false);
    unstored["store"] = json!(false);
    let v = json_body(post(&client, &sim, "responses", unstored, &[]).await).await;
    next["previous_response_id"] = v["id"].clone();
    let resp = post(&client, &sim, "responses", next, &[]).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn responses_faults() {
    let sim = start(SimConfig {
        name: "gamma".into(),
        ..SimConfig::default()
    })
    .await;
    let client = client();
    sim.push_script([
        FaultAction::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(2)),
        }
        .into(),
        FaultAction::ErrorEventAfter(2).into(),
        FaultAction::ErrorEventFirst.into(),
        FaultAction::DropAfter(1).into(),
        FaultAction::TruncateAfter(1).into(),
    ]);
    let resp = post(&client, &sim, "responses", responses_body(true), &[]).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after"), Some("2"));
    assert_eq!(json_body(resp).await["error"]["type"], "rate_limit_error");

    let events = checked_response_events(
        &text(post(&client, &sim, "responses", responses_body(true), &[]).await).await,
    );
    let kinds = names(&events);
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["error", "response.failed"],
        "{kinds:?}"
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "response.output_text.delta")
            .count(),
        2
    );
    let (_, error) = &events[events.len() - 2];
    assert_eq!(error["message"], "simulated overload from gamma");
    let (_, failed) = &events[events.len() - 1];
    assert_eq!(failed["response"]["status"], "failed");
    assert_eq!(failed["response"]["error"]["code"], "server_error");

    let events = checked_response_events(
        &text(post(&client, &sim, "responses", responses_body(true), &[]).await).await,
    );
    assert_eq!(names(&events), ["error", "response.failed"]);

    let cut = String::from_utf8(
        bytes_until_abort(post(&client, &sim, "responses", responses_body(true), &[]).await).await,
    )
    .unwrap();
    assert!(
        cut.contains("tok0 ") && !cut.contains("tok1 ") && !cut.contains("response.completed"),
        "{cut}"
    );

    let truncated = text(post(&client, &sim, "responses", responses_body(true), &[]).await).await;
    assert!(!truncated.contains("response.completed"), "{truncated}");
    let stats = sim.stats();
    assert_eq!(
        (
            stats.error_events,
            stats.dropped,
            stats.truncated,
            stats.streams_completed
        ),
        (2, 1, 1, 0)
    );
}

#[tokio::test]
async fn azure_responses_and_deployments_of_the_new_endpoints() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let url = format!("{}/openai/responses?api-version=preview", sim.origin());
    let resp = send(
        &client,
        Method::POST,
        url,
        responses_body(false).to_string(),
        &[("api-key", "k")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(json_body(resp).await["object"], "response");
    let url = format!("{}/openai/responses", sim.origin());
    let resp = send(
        &client,
        Method::POST,
        url,
        responses_body(false).to_string(),
        &[("api-key", "k")],
    )
    .await;
    assert_eq!(
        resp.status(),
        StatusCode::NOT_FOUND,
        "api-version is required"
    );

    let url = azure_url(&sim, "gpt-3.5-turbo-instruct", "completions");
    let resp = send(
        &client,
        Method::POST,
        url,
        json!({"prompt": "x"}).to_string(),
        &[("api-key", "k")],
    )
    .await;
    let v = json_body(resp).await;
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "gpt-3.5-turbo-instruct");

    let url = azure_url(&sim, "tts-1", "audio/speech");
    let resp = send(
        &client,
        Method::POST,
        url,
        json!({"input": "hi", "voice": "alloy"}).to_string(),
        &[("api-key", "k")],
    )
    .await;
    assert_eq!(header(&resp, "content-type"), Some("audio/mpeg"));
    let endpoints: Vec<SimEndpoint> = sim.requests().iter().map(|r| r.endpoint).collect();
    assert_eq!(
        endpoints,
        [
            SimEndpoint::AzureResponses,
            SimEndpoint::AzureResponses,
            SimEndpoint::AzureCompletions,
            SimEndpoint::AzureSpeech
        ]
    );
}

#[tokio::test]
async fn legacy_completions_answer_text_completions() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let body = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"});
    let v = json_body(post(&client, &sim, "completions", body.clone(), &[]).await).await;
    assert_eq!(v["object"], "text_completion");
    assert_eq!(
        v["choices"][0]["text"],
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["completion_tokens"], 8);

    let mut stream = body.clone();
    stream["stream"] = json!(true);
    stream["stream_options"] = json!({"include_usage": true});
    let events = sse_events(
        &text(
            post(
                &client,
                &sim,
                "completions",
                stream.clone(),
                &[("x-sim-tokens", "2")],
            )
            .await,
        )
        .await,
    );
    assert_eq!(
        events.len(),
        5,
        "two tokens, finish, usage, [DONE]: {events:?}"
    );
    let chunks: Vec<Value> = events[..4]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    assert_eq!(chunks[0]["choices"][0]["text"], "tok0 ");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[3]["usage"]["completion_tokens"], 2);
    assert_eq!(events[4], "[DONE]");

    let cut = String::from_utf8(
        bytes_until_abort(
            post(
                &client,
                &sim,
                "completions",
                stream,
                &[("x-sim-drop-after", "1")],
            )
            .await,
        )
        .await,
    )
    .unwrap();
    assert!(cut.contains("tok0 ") && !cut.contains("[DONE]"), "{cut}");
}

#[tokio::test]
async fn moderations_and_images() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let body = json!({"model": "omni-moderation-latest", "input": ["hello", "I will kill it"]});
    let v = json_body(post(&client, &sim, "moderations", body, &[]).await).await;
    assert!(v["id"].as_str().unwrap().starts_with("modr-"));
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["flagged"], false);
    assert_eq!(results[1]["flagged"], true);
    assert_eq!(results[1]["categories"]["violence"], true);
    assert!(results[1]["category_scores"]["violence"].as_f64().unwrap() > 0.5);

    let resp = post(
        &client,
        &sim,
        "moderations",
        json!({"input": "x"}),
        &[("x-sim-status", "503")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let body = json!({"model": "dall-e-3", "prompt": "a cat", "n": 2});
    let v = json_body(post(&client, &sim, "images/generations", body, &[]).await).await;
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert!(data[0]["url"]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,"));
    let body = json!({"model": "dall-e-3", "prompt": "a cat", "response_format": "b64_json"});
    let v = json_body(post(&client, &sim, "images/generations", body, &[]).await).await;
    assert!(v["data"][0]["b64_json"]
        .as_str()
        .unwrap()
        .starts_with("iVBORw0KGgo"));
    let resp = post(
        &client,
        &sim,
        "images/generations",
        json!({"model": "dall-e-3", "prompt": "x", "n": 11}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = post(
        &client,
        &sim,
        "images/generations",
        json!({"model": "dall-e-3"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn speech_is_binary_in_chunks_and_can_be_cut() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let body = json!({"model": "tts-1", "input": "hello", "voice": "alloy"});
    let resp = post(&client, &sim, "audio/speech", body.clone(), &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), Some("audio/mpeg"));
    let mut frames = 0;
    let mut audio = Vec::new();
    let mut incoming = resp.into_body();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            frames += 1;
            audio.extend_from_slice(data);
        }
    }
    assert_eq!(audio.len(), 8 * 417, "eight MP3 frames");
    assert!(frames > 1, "sent in several chunks");
    assert_eq!(&audio[..2], &[0xFF, 0xFB]);
    assert_eq!(&audio[417..419], &[0xFF, 0xFB]);

    let cut = bytes_until_abort(
        post(
            &client,
            &sim,
            "audio/speech",
            body.clone(),
            &[("x-sim-drop-after", "3")],
        )
        .await,
    )
    .await;
    assert_eq!(cut.len(), 3 * 417, "dropped mid-body");
    let resp = post(
        &client,
        &sim,
        "audio/speech",
        body,
        &[("x-sim-status", "429"), ("x-sim-retry-after-ms", "1000")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&resp, "retry-after"), Some("1"));
    let resp = post(
        &client,
        &sim,
        "audio/speech",
        json!({"model": "tts-1", "voice": "alloy"}),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "input is required");
    let stats = sim.stats();
    assert_eq!((stats.streams_completed, stats.dropped), (1, 1));
}

/// A multipart form with the given text fields and, if `file`, a WAV file.
fn audio_form(fields: &[(&str, &str)], file: Option<&[u8]>) -> (String, Vec<u8>) {
    let boundary = "simboundary42";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    if let Some(file) = file {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes());
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A WAV header for 16 kHz mono 16-bit audio plus `samples` silent samples.
fn wav(samples: usize) -> Vec<u8> {
    let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
    wav.resize(28, 0);
    wav.extend_from_slice(&32000u32.to_le_bytes());
    wav.resize(44 + samples * 2, 0);
    wav
}

async fn upload(
    client: &HttpClient,
    sim: &SimHandle,
    path: &str,
    form: (String, Vec<u8>),
    headers: &[(&str, &str)],
) -> Response<Incoming> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("{}/{path}", sim.base_url()))
        .header("content-type", form.0);
    for &(name, value) in headers {
        req = req.header(name, value);
    }
    client
        .request(req.body(Full::new(Bytes::from(form.1))).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn transcriptions_and_translations_read_the_multipart_form() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let audio = wav(16000);
    let form = audio_form(&[("model", "whisper-1")], Some(&audio));
    let resp = upload(&client, &sim, "audio/transcriptions", form, &[]).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        json_body(resp).await,
        json!({"text": format!("simulated transcribe of {} bytes", audio.len())})
    );

    let form = audio_form(
        &[("model", "whisper-1"), ("response_format", "verbose_json")],
        Some(&audio),
    );
    let v = json_body(upload(&client, &sim, "audio/translations", form, &[]).await).await;
    assert_eq!(v["task"], "translate");
    assert_eq!(v["duration"], 1.0, "from the WAV header");
    assert_eq!(v["segments"][0]["end"], 1.0);

    let form = audio_form(
        &[("model", "whisper-1"), ("response_format", "text")],
        Some(&audio),
    );
    let resp = upload(&client, &sim, "audio/transcriptions", form, &[]).await;
    assert!(header(&resp, "content-type")
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(
        text(resp).await,
        format!("simulated transcribe of {} bytes\n", audio.len())
    );

    let form = audio_form(&[("model", "whisper-1")], None);
    let resp = upload(&client, &sim, "audio/transcriptions", form, &[]).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(json_body(resp).await["error"]["message"]
        .as_str()
        .unwrap()
        .contains("'file'"));

    let form = audio_form(&[("model", "whisper-1")], Some(&audio));
    let resp = upload(
        &client,
        &sim,
        "audio/transcriptions",
        form,
        &[("x-sim-status", "503")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let endpoints: Vec<SimEndpoint> = sim.requests().iter().map(|r| r.endpoint).collect();
    assert_eq!(endpoints[1], SimEndpoint::OpenAiTranslations);
}

#[tokio::test]
async fn body_log_is_bounded() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    for i in 0..(switchyard::sim::BODY_LOG_CAPACITY + 3) {
        let body = json!({"model": "gpt-4o-mini", "input": format!("n{i}")});
        let resp = post(&client, &sim, "responses", body, &[]).await;
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let bodies = sim.bodies();
    assert_eq!(bodies.len(), switchyard::sim::BODY_LOG_CAPACITY);
    let first: Value = serde_json::from_slice(&bodies[0].body).unwrap();
    assert_eq!(first["input"], "n3", "the oldest are evicted");
}

#[tokio::test]
async fn chat_calls_function_tools_until_their_result_comes_back() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = chat_body(false);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let v = json_body(chat(&client, &sim, body.clone(), &[]).await).await;
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["location"], "Paris");

    // Streamed: the call's head, then its argument fragments.
    body["stream"] = json!(true);
    let events = sse_events(&text(chat(&client, &sim, body.clone(), &[]).await).await);
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let arguments: String = calls
        .iter()
        .map(|c| c["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), args);
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    assert_eq!(events.last().unwrap(), "[DONE]");

    // With the tool's result in the conversation, or tool_choice none, the
    // answer is text.
    body["stream"] = json!(false);
    let mut answered = body.clone();
    answered["messages"] = json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
        {"role": "user", "content": "and tomorrow?"},
    ]);
    let v = json_body(chat(&client, &sim, answered, &[]).await).await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    body["tool_choice"] = json!("none");
    let v = json_body(chat(&client, &sim, body, &[]).await).await;
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    );
}

#[tokio::test]
async fn chat_response_format_json_schema_answers_valid_json() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = chat_body(false);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "w", "strict": true, "schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }}});
    let v = json_body(chat(&client, &sim, body.clone(), &[]).await).await;
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let expected = json!({"city": "sim", "days": 0});
    assert_eq!(serde_json::from_str::<Value>(content).unwrap(), expected);

    body["stream"] = json!(true);
    let events = sse_events(&text(chat(&client, &sim, body.clone(), &[]).await).await);
    let mut streamed = String::new();
    for event in events.iter().filter(|e| *e != "[DONE]") {
        let chunk: Value = serde_json::from_str(event).unwrap();
        if let Some(part) = chunk["choices"][0]["delta"]["content"].as_str() {
            streamed.push_str(part);
        }
    }
    assert_eq!(serde_json::from_str::<Value>(&streamed).unwrap(), expected);

    body["stream"] = json!(false);
    body["response_format"] = json!({"type": "json_object"});
    let v = json_body(chat(&client, &sim, body, &[]).await).await;
    assert_eq!(v["choices"][0]["message"]["content"], "{}");
}

#[tokio::test]
async fn gemini_response_schema_answers_valid_json() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = gemini_body();
    body["generationConfig"] = json!({"responseMimeType": "application/json", "responseJsonSchema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "ok": {"type": "boolean"}},
        "required": ["city", "ok"],
    }});
    let expected = json!({"city": "sim", "ok": false});
    let v = json_body(gemini(&client, &sim, false, &body, &[]).await).await;
    let answer = v["candidates"][0]["content"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(answer).unwrap(), expected);

    let events = gemini_events(&text(gemini(&client, &sim, true, &body, &[]).await).await);
    let streamed: String = events
        .iter()
        .map(|e| {
            e["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&streamed).unwrap(), expected);
    assert_eq!(
        events.last().unwrap()["candidates"][0]["finishReason"],
        "STOP"
    );

    // Gemini's own OpenAPI schema, types in capitals.
    body["generationConfig"] = json!({"responseMimeType": "application/json", "responseSchema": {
        "type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"],
    }});
    let v = json_body(gemini(&client, &sim, false, &body, &[]).await).await;
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        r#"{"n":0}"#
    );
}

#[tokio::test]
async fn responses_cut_to_max_output_tokens_are_incomplete() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = responses_body(false);
    body["max_output_tokens"] = json!(3);
    let v = json_body(post(&client, &sim, "responses", body.clone(), &[]).await).await;
    assert_eq!(v["status"], "incomplete");
    assert_eq!(
        v["incomplete_details"],
        json!({"reason": "max_output_tokens"})
    );
    assert_eq!(v["output"][0]["status"], "incomplete");
    assert_eq!(v["output"][0]["content"][0]["text"], "tok0 tok1 tok2");
    assert_eq!(v["usage"]["output_tokens"], 3);

    body["stream"] = json!(true);
    let events = checked_response_events(
        &text(post(&client, &sim, "responses", body.clone(), &[]).await).await,
    );
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "response.incomplete");
    assert_eq!(data["response"]["status"], "incomplete");
    let deltas = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .count();
    assert_eq!(deltas, 3);

    body["max_output_tokens"] = json!(100);
    let v = json_body(
        post(
            &client,
            &sim,
            "responses",
            {
                body["stream"] = json!(false);
                body
            },
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        v["status"], "completed",
        "a limit above the answer changes nothing"
    );
    assert_eq!(v["incomplete_details"], Value::Null);
}

#[tokio::test]
async fn anthropic_system_prompt_ending_in_a_schema_is_answered_with_json() {
    let sim = start(SimConfig::default()).await;
    let client = client();
    let mut body = anthropic_body(false);
    body["system"] = json!("Answer with JSON only. The object must conform to this JSON Schema:\n{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}");
    let v = json_body(anthropic(&client, &sim, &body, &[]).await).await;
    assert_eq!(v["content"][0]["text"], r#"{"city":"sim"}"#);

    body["stream"] = json!(true);
    let events = named_events(&text(anthropic(&client, &sim, &body, &[]).await).await);
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, r#"{"city":"sim"}"#);
    assert_eq!(names(&events).last(), Some(&"message_stop"));

    body["stream"] = json!(false);
    body["system"] = json!([{"type": "text", "text": "Be brief. Here is an example:\n{not json"}]);
    let v = json_body(anthropic(&client, &sim, &body, &[]).await).await;
    assert_eq!(
        v["content"][0]["text"],
        "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7"
    );
}
