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
    Behavior, Fault, FaultAction, Phase, SimConfig, SimHandle, SimStats, Simulator,
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
