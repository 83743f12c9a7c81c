//! `Idempotency-Key` end to end (gateway and simulator on loopback): a
//! repeat is answered from the first request without reaching upstream
//! (sequential and concurrent), a different body under the same key is a
//! 422 in the inbound protocol's shape, keys are scoped per virtual key,
//! streams are not replayed (409), and retryable failures are not kept.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use switchyard::sim::{Behavior, Fault, Latency};

const KEY: &str = "idempotency-key";

async fn post(
    gw: &switchyard::server::Gateway,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let url = format!("{}{path}", gw.base_url());
    call(&client(), Method::POST, &url, body.to_owned(), headers).await
}

fn chat_text(stream: bool) -> String {
    chat_body(stream).to_string()
}

#[tokio::test]
async fn a_repeat_is_replayed_without_reaching_upstream() {
    let sim = sim("idem-seq").await;
    let dir = std::env::temp_dir().join(format!("switchyard-idem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let extra = format!("{FAST}\n[store]\nurl = \"{url}\"\n[request_log]\nenabled = true\n");
    let gw = gateway(&[&sim], &extra).await;
    let headers = [(KEY, "order-1")];
    let first = post(&gw, "/chat/completions", &chat_text(false), &headers).await;
    let second = post(&gw, "/chat/completions", &chat_text(false), &headers).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(first.body, second.body);
    assert_eq!(sim.stats().requests, 1, "the repeat reached upstream");
    assert_eq!(first.header("x-switchyard-idempotent-replay"), None);
    assert_eq!(
        second.header("x-switchyard-idempotent-replay"),
        Some("true")
    );
    assert_eq!(second.header("content-type"), first.header("content-type"));
    assert_eq!(
        second.header("x-switchyard-target"),
        first.header("x-switchyard-target")
    );
    assert_eq!(
        second.header("x-switchyard-original-request-id"),
        first.header("x-request-id")
    );
    assert_ne!(second.header("x-request-id"), first.header("x-request-id"));

    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains("switchyard_idempotent_replays_total{route=\"chat-default\"} 1"),
        "{metrics}"
    );
    let replay = logged_row(&gw, &url, "idempotent_replay").await;
    assert_eq!(replay.cost_usd.unwrap_or(0.0), 0.0);
    assert_eq!(replay.served_target, None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn concurrent_duplicates_reach_upstream_once() {
    let slow = Behavior {
        latency: Latency {
            base: Duration::from_millis(300),
            ..Latency::default()
        },
        ..Behavior::default()
    };
    let sim = sim_with("idem-concurrent", slow).await;
    let gw = gateway(&[&sim], FAST).await;
    let url = format!("{}/chat/completions", gw.base_url());
    let (a, b) = (spawn_call(&url, "same"), spawn_call(&url, "same"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(b.status, StatusCode::OK, "{}", b.text());
    assert_eq!(a.body, b.body);
    assert_eq!(sim.stats().requests, 1);
    let replays = [&a, &b]
        .iter()
        .filter(|r| r.header("x-switchyard-idempotent-replay") == Some("true"))
        .count();
    assert_eq!(replays, 1);
}

#[tokio::test]
async fn a_different_body_under_the_same_key_is_422_in_the_callers_shape() {
    let sim = sim("idem-reuse").await;
    let gw = gateway(&[&sim], FAST).await;
    let headers = [(KEY, "k")];
    let first = post(&gw, "/chat/completions", &chat_text(false), &headers).await;
    assert_eq!(first.status, StatusCode::OK);
    let other =
        json!({"model": "chat-default", "messages": [{"role": "user", "content": "other"}]});
    let reused = post(&gw, "/chat/completions", &other.to_string(), &headers).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let (message, kind, code) = reused.openai_error();
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("invalid_request_error", "idempotency_key_reused")
    );
    assert!(message.contains("different request body"), "{message}");

    let messages = |text: &str| {
        json!({"model": "chat-default", "max_tokens": 16,
               "messages": [{"role": "user", "content": text}]})
        .to_string()
    };
    let first = post(&gw, "/messages", &messages("one"), &headers).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let reused = post(&gw, "/messages", &messages("two"), &headers).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = reused.json();
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
    // Same key on another path is another request: both reached upstream.
    assert_eq!(sim.stats().requests, 2);

    let bad = post(&gw, "/chat/completions", &chat_text(false), &[(KEY, "")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.openai_error().2, "invalid_idempotency_key");
}

#[tokio::test]
async fn keys_are_scoped_per_virtual_key() {
    let sim = sim("idem-scope").await;
    let dir = std::env::temp_dir().join(format!("switchyard-idem-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let urls = [sim.base_url()];
    let text = config_text(
        &[urls[0].as_str()],
        &format!("{FAST}\n[store]\nurl = \"{url}\"\n"),
    )
    .replace("auth = \"none\"", "auth = \"keys\"");
    let gw = gateway_with_env(&text, |_| None).await;
    let keys = gw.state().keys.get().expect("keys on").clone();
    let mut bearers = Vec::new();
    for name in ["alice", "bob"] {
        let issued = keys
            .create(switchyard::keys::NewKey::new(name, "svc"))
            .await
            .unwrap();
        bearers.push(format!("Bearer {}", issued.secret.expose()));
    }
    for bearer in &bearers {
        let headers = [(KEY, "shared"), ("authorization", bearer.as_str())];
        let reply = post(&gw, "/chat/completions", &chat_text(false), &headers).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-switchyard-idempotent-replay"), None);
    }
    assert_eq!(sim.stats().requests, 2);
    let headers = [(KEY, "shared"), ("authorization", bearers[0].as_str())];
    let again = post(&gw, "/chat/completions", &chat_text(false), &headers).await;
    assert_eq!(again.header("x-switchyard-idempotent-replay"), Some("true"));
    assert_eq!(sim.stats().requests, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_stream_is_not_replayed() {
    let sim = sim("idem-stream").await;
    let gw = gateway(&[&sim], FAST).await;
    let headers = [(KEY, "s")];
    let first = post(&gw, "/chat/completions", &chat_text(true), &headers).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(!sse_data(&first.body).is_empty());
    let again = post(&gw, "/chat/completions", &chat_text(true), &headers).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    assert_eq!(again.openai_error().2, "idempotency_stream");
    assert_eq!(sim.stats().requests, 1);
}

#[tokio::test]
async fn a_retryable_failure_is_not_kept() {
    let sim = sim_with("idem-5xx", failing(500)).await;
    let gw = gateway(&[&sim], FAST).await;
    let headers = [(KEY, "retry-me")];
    let first = post(&gw, "/chat/completions", &chat_text(false), &headers).await;
    assert!(first.status.is_server_error(), "{}", first.status);
    let failed_attempts = sim.stats().requests;
    sim.set_behavior(Behavior::default());
    let second = post(&gw, "/chat/completions", &chat_text(false), &headers).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(second.header("x-switchyard-idempotent-replay"), None);
    assert_eq!(sim.stats().requests, failed_attempts + 1);
}

#[tokio::test]
async fn the_header_is_ignored_when_idempotency_is_off() {
    let sim = sim("idem-off").await;
    let gw = gateway(
        &[&sim],
        &format!("{FAST}\n[idempotency]\nenabled = false\n"),
    )
    .await;
    for _ in 0..2 {
        let reply = post(&gw, "/chat/completions", &chat_text(false), &[(KEY, "k")]).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(sim.stats().requests, 2);
}

/// A repeat waiting for a first request that then fails retryably is not
/// handed the failure: the key is released and the repeat goes upstream.
#[tokio::test]
async fn a_waiting_repeat_goes_upstream_when_the_first_fails() {
    let sim = sim("idem-wait-fail").await;
    let slow_failure = || Fault {
        delay: Duration::from_millis(200),
        ..Fault::status(500)
    };
    sim.push_script([slow_failure(), slow_failure()]);
    let gw = gateway(&[&sim], FAST).await;
    let url = format!("{}/chat/completions", gw.base_url());
    let first = spawn_call(&url, "w");
    eventually("the first request reaches upstream", || {
        sim.stats().requests >= 1
    })
    .await;
    let second = call(
        &client(),
        Method::POST,
        &url,
        chat_text(false),
        &[(KEY, "w")],
    )
    .await;
    let first = first.await.unwrap();
    assert!(first.status.is_server_error(), "{}", first.status);
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(second.header("x-switchyard-idempotent-replay"), None);
    assert_eq!(sim.stats().requests, 3);
}

/// A non-stream chat request under `Idempotency-Key: key`, in its own task.
fn spawn_call(url: &str, key: &'static str) -> tokio::task::JoinHandle<Reply> {
    let url = url.to_owned();
    tokio::spawn(async move {
        call(
            &client(),
            Method::POST,
            &url,
            chat_text(false),
            &[(KEY, key)],
        )
        .await
    })
}

use switchyard::server::Gateway;

/// Two gateways sharing the real Redis on 127.0.0.1:6379 under a prefix of
/// this test's own, as two replicas behind a load balancer.
async fn two_replicas(sim: &switchyard::sim::SimHandle) -> (Gateway, Gateway) {
    let prefix = format!("sy-idem-{}", uuid::Uuid::new_v4().simple());
    let extra = format!(
        "{FAST}\n[limits]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\n"
    );
    (gateway(&[sim], &extra).await, gateway(&[sim], &extra).await)
}

#[tokio::test]
async fn a_key_repeated_on_another_replica_reaches_the_upstream_once() {
    let sim = sim("idem-fleet").await;
    let (a, b) = two_replicas(&sim).await;
    let headers = [(KEY, "order-fleet")];
    let first = post(&a, "/chat/completions", &chat_text(false), &headers).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    // Its verdict may still be on its way to Redis: then this one waits.
    let second = post(&b, "/chat/completions", &chat_text(false), &headers).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.header("x-switchyard-idempotent-replay"),
        Some("true")
    );
    assert_eq!(sim.stats().requests, 1, "the other replica went upstream");

    let other_body = chat_body(false).to_string().replace("hello", "bonjour");
    assert_ne!(other_body, chat_text(false));
    let reused = post(&b, "/chat/completions", &other_body, &headers).await;
    assert_eq!(
        reused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reused.text()
    );
}

#[tokio::test]
async fn a_repeat_on_another_replica_waits_for_the_first_in_flight() {
    let slow = Behavior {
        latency: Latency {
            base: Duration::from_millis(300),
            ..Latency::default()
        },
        ..Behavior::default()
    };
    let sim = sim_with("idem-fleet-slow", slow).await;
    let (a, b) = two_replicas(&sim).await;
    let first = spawn_call(&format!("{}/chat/completions", a.base_url()), "fleet-wait");
    // The repeat starts once the first is upstream (its claim is in Redis).
    eventually("the first request reached upstream", || {
        sim.stats().requests == 1
    })
    .await;
    let second = spawn_call(&format!("{}/chat/completions", b.base_url()), "fleet-wait");
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(first.body, second.body);
    assert_eq!(
        second.header("x-switchyard-idempotent-replay"),
        Some("true")
    );
    assert_eq!(sim.stats().requests, 1);
}

#[tokio::test]
async fn with_redis_unreachable_a_replica_keeps_its_own_keys() {
    let sim = sim("idem-no-redis").await;
    let extra = format!("{FAST}\n[limits]\nredis_url = \"redis://127.0.0.1:1\"\n");
    let gw = gateway(&[&sim], &extra).await;
    let headers = [(KEY, "order-alone")];
    let first = post(&gw, "/chat/completions", &chat_text(false), &headers).await;
    let second = post(&gw, "/chat/completions", &chat_text(false), &headers).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(
        second.header("x-switchyard-idempotent-replay"),
        Some("true")
    );
    assert_eq!(sim.stats().requests, 1);
}
