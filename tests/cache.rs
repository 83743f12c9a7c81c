//! The response cache end to end (gateway and simulator on loopback): a
//! repeat of a cacheable request is answered from the cache without an
//! upstream call (chat, legacy completions, embeddings, Responses with
//! `store: false`, Anthropic Messages), streams are replayed as SSE,
//! non-deterministic requests and opted-out clients bypass it, errors are
//! not kept, services do not share entries, hits are logged at no cost,
//! and two gateways sharing Redis share answers.

mod common;

use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use switchyard::sim::{Behavior, Fault, FaultAction};

const X_CACHE: &str = "x-switchyard-cache";

/// `extra` config, with `chat-default` and `embed` cached for 10 minutes.
fn cached(text: String) -> String {
    text.replace(
        "[routes.chat-default]\n",
        "[routes.chat-default]\ncache = { ttl = \"10m\" }\n",
    )
    .replace(
        "[routes.embed]\n",
        "[routes.embed]\ncache = { ttl = \"10m\" }\n",
    )
}

async fn cached_gateway(
    sim: &switchyard::sim::SimHandle,
    extra: &str,
) -> switchyard::server::Gateway {
    let url = sim.base_url();
    gateway_from_text(&cached(config_text(&[url.as_str()], extra))).await
}

async fn post(
    gw: &switchyard::server::Gateway,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let url = format!("{}{path}", gw.base_url());
    call(&client(), Method::POST, &url, body.to_string(), headers).await
}

fn chat(stream: bool, temperature: f64) -> Value {
    json!({
        "model": "chat-default",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
        "temperature": temperature
    })
}

/// Sends `body` twice: the first is a miss, the second a hit with the same
/// body, and only the first reached upstream.
async fn miss_then_hit(
    gw: &switchyard::server::Gateway,
    sim: &switchyard::sim::SimHandle,
    path: &str,
    body: &Value,
) -> (Reply, Reply) {
    let before = sim.stats().requests;
    let first = post(gw, path, body, &[]).await;
    assert_eq!(first.status, StatusCode::OK, "{path}: {}", first.text());
    assert_eq!(first.header(X_CACHE), Some("miss"), "{path}");
    let second = post(gw, path, body, &[]).await;
    assert_eq!(second.status, StatusCode::OK, "{path}: {}", second.text());
    assert_eq!(second.header(X_CACHE), Some("hit"), "{path}");
    assert_eq!(first.body, second.body, "{path}");
    assert_eq!(second.header("content-type"), first.header("content-type"));
    assert_ne!(second.header("x-request-id"), first.header("x-request-id"));
    assert_eq!(
        sim.stats().requests,
        before + 1,
        "{path}: the hit reached upstream"
    );
    (first, second)
}

#[tokio::test]
async fn a_repeat_is_a_hit_without_an_upstream_call_and_is_logged_at_no_cost() {
    let sim = sim("cache-hit").await;
    let dir = std::env::temp_dir().join(format!("switchyard-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("log.db").display());
    let extra = format!("{FAST}\n[store]\nurl = \"{url}\"\n[request_log]\nenabled = true\n");
    let gw = cached_gateway(&sim, &extra).await;
    // Field order does not matter: the key is the normalised body.
    let body = chat(false, 0.0);
    let first = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(first.header(X_CACHE), Some("miss"));
    let reordered = json!({"temperature": 0.0, "stream": false, "messages": [{"content": "hello", "role": "user"}], "model": "chat-default"});
    let second = post(&gw, "/chat/completions", &reordered, &[]).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    assert_eq!(second.header(X_CACHE), Some("hit"));
    assert_eq!(first.body, second.body);
    assert_eq!(sim.requests().len(), 1, "the simulator saw one call");
    assert_eq!(
        second.header("x-switchyard-original-request-id"),
        first.header("x-request-id")
    );

    let metrics = metrics_text(&gw).await;
    for line in [
        "switchyard_cache_requests_total{route=\"chat-default\",result=\"hit\"} 1",
        "switchyard_cache_requests_total{route=\"chat-default\",result=\"miss\"} 1",
        "switchyard_cache_entries 1",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_cache_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cache_bytes in\n{metrics}"));
    assert!(bytes >= first.body.len() as u64, "{bytes}");

    let hit = logged_row(&gw, &url, "cache_hit").await;
    assert_eq!(hit.cost_usd.unwrap_or(0.0), 0.0);
    assert_eq!(hit.served_target, None);
    assert_eq!(hit.prompt_tokens.unwrap_or(0), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn every_cached_endpoint_hits_in_its_own_protocol() {
    let sim = sim("cache-endpoints").await;
    let gw = cached_gateway(&sim, FAST).await;
    let completions = json!({"model": "chat-default", "prompt": "say hi", "temperature": 0});
    miss_then_hit(&gw, &sim, "/completions", &completions).await;
    let embeddings = json!({"model": "embed", "input": "hello"});
    miss_then_hit(&gw, &sim, "/embeddings", &embeddings).await;
    let responses =
        json!({"model": "chat-default", "input": "hello", "temperature": 0, "store": false});
    miss_then_hit(&gw, &sim, "/responses", &responses).await;
    let messages = json!({"model": "chat-default", "max_tokens": 16, "temperature": 0,
                          "messages": [{"role": "user", "content": "hello"}]});
    let (_, hit) = miss_then_hit(&gw, &sim, "/messages", &messages).await;
    assert_eq!(hit.json()["type"], "message", "{}", hit.text());

    // A Responses request the gateway keeps is never cached.
    let stored = json!({"model": "chat-default", "input": "hello", "temperature": 0});
    for _ in 0..2 {
        let reply = post(&gw, "/responses", &stored, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header(X_CACHE), Some("bypass"));
    }
}

#[tokio::test]
async fn a_stream_is_replayed_as_sse_from_the_cache() {
    let sim = sim("cache-stream").await;
    let gw = cached_gateway(&sim, FAST).await;
    let body = chat(true, 0.0);
    let first = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header(X_CACHE), Some("miss"));
    let second = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(second.header(X_CACHE), Some("hit"), "{}", second.text());
    assert_eq!(sim.stats().requests, 1);
    assert!(
        second
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("text/event-stream")),
        "{:?}",
        second.header("content-type")
    );
    let (a, b) = (sse_data(&first.body), sse_data(&second.body));
    assert!(a.len() > 2, "{a:?}");
    assert_eq!(a, b);
    assert_eq!(b.last().map(String::as_str), Some("[DONE]"));
    assert!(!sse_content(&b).is_empty());
    // A complete request is another entry: it goes upstream.
    let complete = post(&gw, "/chat/completions", &chat(false, 0.0), &[]).await;
    assert_eq!(complete.header(X_CACHE), Some("miss"));
    assert_eq!(sim.stats().requests, 2);

    // Anthropic inbound streams replay their own events.
    let messages = json!({"model": "chat-default", "max_tokens": 16, "temperature": 0, "stream": true,
                          "messages": [{"role": "user", "content": "hello"}]});
    let first = post(&gw, "/messages", &messages, &[]).await;
    let second = post(&gw, "/messages", &messages, &[]).await;
    assert_eq!(second.header(X_CACHE), Some("hit"), "{}", second.text());
    assert_eq!(first.body, second.body);
    assert!(String::from_utf8_lossy(&second.body).contains("event: message_stop"));
    assert_eq!(sim.stats().requests, 3);
}

#[tokio::test]
async fn a_cut_stream_is_not_kept() {
    let sim = sim("cache-cut").await;
    sim.push_script([Fault::from(FaultAction::DropAfter(2))]);
    let url = sim.base_url();
    let text = cached(config_text(&[url.as_str()], FAST)).replace(
        "[routes.chat-default]\n",
        "[routes.chat-default]\nresume = \"off\"\n",
    );
    let gw = gateway_from_text(&text).await;
    let body = chat(true, 0.0);
    let cut = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(cut.header(X_CACHE), Some("miss"));
    assert!(
        String::from_utf8_lossy(&cut.body).contains("stream_cut"),
        "{}",
        cut.text()
    );
    let again = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(
        again.header(X_CACHE),
        Some("miss"),
        "the cut stream was kept"
    );
    assert_eq!(sim.stats().requests, 2);
    assert!(gw.state().cache.len() <= 1);
}

#[tokio::test]
async fn non_deterministic_requests_bypass_unless_the_route_says_so() {
    let sim = sim("cache-bypass").await;
    let gw = cached_gateway(&sim, FAST).await;
    let warm = chat(false, 0.7);
    let unset =
        json!({"model": "chat-default", "messages": [{"role": "user", "content": "hello"}]});
    let several = json!({"model": "chat-default", "temperature": 0, "n": 2,
                         "messages": [{"role": "user", "content": "hello"}]});
    for body in [&warm, &unset, &several] {
        for _ in 0..2 {
            let reply = post(&gw, "/chat/completions", body, &[]).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            assert_eq!(reply.header(X_CACHE), Some("bypass"), "{body}");
        }
    }
    assert_eq!(sim.stats().requests, 6);
    assert!(gw.state().cache.is_empty());
    // A route without a cache says nothing.
    let url = sim.base_url();
    let plain = gateway_from_text(&config_text(&[url.as_str()], FAST)).await;
    let reply = post(&plain, "/chat/completions", &chat(false, 0.0), &[]).await;
    assert_eq!(reply.header(X_CACHE), None);

    // The table form, after the route's other keys.
    let text = config_text(&[url.as_str()], FAST)
        + "[routes.chat-default.cache]\nttl = \"1m\"\nnondeterministic = true\n";
    let anything = gateway_from_text(&text).await;
    let before = sim.stats().requests;
    let first = post(&anything, "/chat/completions", &warm, &[]).await;
    let second = post(&anything, "/chat/completions", &warm, &[]).await;
    assert_eq!(
        (first.header(X_CACHE), second.header(X_CACHE)),
        (Some("miss"), Some("hit"))
    );
    assert_eq!(sim.stats().requests, before + 1);
}

#[tokio::test]
async fn no_cache_skips_the_lookup_and_no_store_neither_reads_nor_writes() {
    let sim = sim("cache-directives").await;
    let gw = cached_gateway(&sim, FAST).await;
    let body = chat(false, 0.0);
    let no_store = [("cache-control", "no-store")];
    let opted_out = post(&gw, "/chat/completions", &body, &no_store).await;
    assert_eq!(opted_out.header(X_CACHE), Some("bypass"));
    assert!(gw.state().cache.is_empty(), "no-store wrote an entry");
    let first = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(first.header(X_CACHE), Some("miss"));
    let again = post(&gw, "/chat/completions", &body, &no_store).await;
    assert_eq!(again.header(X_CACHE), Some("bypass"));
    assert_ne!(
        again.body, first.body,
        "no-store was served the cached answer"
    );
    let fresh = post(
        &gw,
        "/chat/completions",
        &body,
        &[("cache-control", "no-cache")],
    )
    .await;
    assert_eq!(fresh.header(X_CACHE), Some("miss"));
    assert_ne!(
        fresh.body, first.body,
        "no-cache was served the cached answer"
    );
    assert_eq!(sim.stats().requests, 4);
    // The fresh answer replaced the entry.
    let hit = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(hit.header(X_CACHE), Some("hit"));
    assert_eq!(hit.body, fresh.body);
    assert_eq!(sim.stats().requests, 4);
}

#[tokio::test]
async fn errors_are_not_cached() {
    let sim = sim("cache-errors").await;
    sim.push_script([Fault::status(400)]);
    let gw = cached_gateway(&sim, FAST).await;
    let body = chat(false, 0.0);
    let refused = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refused.text()
    );
    assert_eq!(refused.header(X_CACHE), Some("miss"));
    sim.set_behavior(failing(500));
    let failed = post(&gw, "/chat/completions", &body, &[]).await;
    assert!(failed.status.is_server_error(), "{}", failed.status);
    assert_eq!(failed.header(X_CACHE), Some("miss"));
    assert!(gw.state().cache.is_empty());
    sim.set_behavior(Behavior::default());
    let ok = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header(X_CACHE), Some("miss"));
    let hit = post(&gw, "/chat/completions", &body, &[]).await;
    assert_eq!(hit.header(X_CACHE), Some("hit"));
    assert_eq!(hit.body, ok.body);
}

#[tokio::test]
async fn keys_of_different_services_do_not_share_entries() {
    let sim = sim("cache-scope").await;
    let dir = std::env::temp_dir().join(format!("switchyard-cache-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let sim_url = sim.base_url();
    let text = cached(config_text(
        &[sim_url.as_str()],
        &format!("{FAST}\n[store]\nurl = \"{url}\"\n"),
    ))
    .replace("auth = \"none\"", "auth = \"keys\"");
    let gw = gateway_with_env(&text, |_| None).await;
    let keys = gw.state().keys.get().expect("keys on").clone();
    let mut bearers = Vec::new();
    for (name, service) in [
        ("alice", "billing"),
        ("bob", "search"),
        ("carol", "billing"),
    ] {
        let mut new = switchyard::keys::NewKey::new(name, service);
        if name == "carol" {
            new.limits.requests_per_minute = Some(1);
        }
        let issued = keys.create(new).await.unwrap();
        bearers.push(format!("Bearer {}", issued.secret.expose()));
    }
    let body = chat(false, 0.0);
    let as_key = |i: usize| {
        let (gw, body, bearer) = (&gw, &body, bearers[i].clone());
        async move {
            let headers = [("authorization", bearer.as_str())];
            post(gw, "/chat/completions", body, &headers).await
        }
    };
    let mut results = Vec::new();
    for i in [0, 1, 2] {
        let reply = as_key(i).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        results.push(reply.header(X_CACHE).map(str::to_owned));
    }
    let expected = ["miss", "miss", "hit"].map(|s| Some(s.to_owned()));
    assert_eq!(
        results, expected,
        "alice, bob (another service), carol (alice's service)"
    );
    assert_eq!(sim.stats().requests, 2);
    // A hit is still a request: carol's one request a minute is spent.
    let limited = as_key(2).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.text()
    );
    assert_eq!(limited.openai_error().2, "rate_limit_exceeded");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two gateways with the same `[limits] redis_url`: the second one's
/// first request is answered from what the first one stored.
#[tokio::test]
async fn two_gateways_sharing_redis_share_answers() {
    let sim = sim("cache-redis").await;
    let prefix = format!("switchyard-test-cache-{}", uuid::Uuid::new_v4().simple());
    let extra = format!(
        "{FAST}\n[limits]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\n"
    );
    let a = cached_gateway(&sim, &extra).await;
    let b = cached_gateway(&sim, &extra).await;
    let body = chat(false, 0.0);
    let first = post(&a, "/chat/completions", &body, &[]).await;
    assert_eq!(first.header(X_CACHE), Some("miss"));
    let other = post(&b, "/chat/completions", &body, &[]).await;
    assert_eq!(other.status, StatusCode::OK, "{}", other.text());
    assert_eq!(
        other.header(X_CACHE),
        Some("hit"),
        "the second gateway missed"
    );
    assert_eq!(other.body, first.body);
    assert_eq!(sim.stats().requests, 1);
    // Found in Redis, the answer is kept in the second gateway's memory too.
    assert_eq!(b.state().cache.len(), 1);

    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:cache:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 600_000, "{ttl}");
    // A stream's answer is written to Redis just after its end.
    let stream = chat(true, 0.0);
    let first = post(&a, "/chat/completions", &stream, &[]).await;
    assert_eq!(first.header(X_CACHE), Some("miss"));
    let pattern = format!("{prefix}:cache:*");
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..500 {
        keys = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        if keys.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        keys.len(),
        2,
        "the stream was not written to Redis: {keys:?}"
    );
    let replayed = post(&b, "/chat/completions", &stream, &[]).await;
    assert_eq!(replayed.header(X_CACHE), Some("hit"));
    assert_eq!(sse_data(&replayed.body), sse_data(&first.body));
    assert_eq!(sim.stats().requests, 2);
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// A Redis that cannot be reached makes the cache memory-only; no request fails.
#[tokio::test]
async fn an_unreachable_redis_leaves_the_cache_in_memory() {
    let sim = sim("cache-redis-down").await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let extra = format!("{FAST}\n[limits]\nredis_url = \"redis://127.0.0.1:{port}\"\n");
    let gw = cached_gateway(&sim, &extra).await;
    miss_then_hit(&gw, &sim, "/chat/completions", &chat(false, 0.0)).await;
}
