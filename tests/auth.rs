//! Virtual keys on the request path: every refusal has its status and code,
//! limits and budgets answer 429 with the right headers, the admin API
//! wants the admin key, and no secret ever leaves the gateway.

mod common;

use common::*;
use http::{Method, StatusCode};
use std::time::Duration;
use switchyard::config::Config;
use switchyard::keys::{Expiry, KeyBudget, KeyLimits, Keys, NewKey};
use switchyard::server::Gateway;

const ADMIN_KEY: &str = "admin-key-0123456789-abcdef";

struct Keyed {
    gw: Gateway,
    keys: Keys,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway with virtual keys on, its store a fresh SQLite file.
async fn keyed_gateway(test: &str, upstream: &switchyard::sim::SimHandle) -> Keyed {
    keyed_gateway_with(test, upstream, "").await
}

/// [`keyed_gateway`] with `extra` config sections appended.
async fn keyed_gateway_with(
    test: &str,
    upstream: &switchyard::sim::SimHandle,
    extra: &str,
) -> Keyed {
    let dir = std::env::temp_dir().join(format!("switchyard-auth-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nauth = \"keys\"\n{FAST}\n\
         [admin]\nkey_env = \"ADMIN_KEY\"\n\
         [store]\nurl = \"sqlite://{}\"\n\
         [providers.p0]\nbase_url = \"{}\"\n\
         [routes.chat-default]\ntargets = [{{ provider = \"p0\", model = \"gpt-4o\" }}]\n\
         [routes.other]\ntargets = [{{ provider = \"p0\", model = \"gpt-4o-mini\" }}]\n{extra}",
        dir.join("store.db").display(),
        upstream.base_url(),
    );
    let config = Config::from_toml(&text, |name| {
        (name == "ADMIN_KEY").then(|| ADMIN_KEY.to_owned())
    })
    .unwrap();
    let gw = Gateway::start(config).await.expect("start");
    let keys = gw.state().keys.get().expect("keys on").clone();
    Keyed {
        gw,
        keys,
        _dir: TempDir(dir),
    }
}

async fn create(keys: &Keys, new: NewKey) -> String {
    keys.create(new)
        .await
        .expect("create")
        .secret
        .expose()
        .to_owned()
}

/// A key of service "batch" limited to `rpm` requests per minute.
async fn with_rpm(keys: &Keys, name: &str, rpm: u32) -> String {
    let limits = KeyLimits {
        requests_per_minute: Some(rpm),
        ..KeyLimits::default()
    };
    create(
        keys,
        NewKey {
            limits,
            ..NewKey::new(name, "batch")
        },
    )
    .await
}

async fn chat_as(gw: &Gateway, key: Option<&str>, model: &str) -> Reply {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    call(
        &client(),
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        &headers,
    )
    .await
}

#[tokio::test]
async fn every_refusal_has_its_status_and_code() {
    let upstream = sim("upstream").await;
    let k = keyed_gateway("refusals", &upstream).await;
    let good = create(&k.keys, NewKey::new("good", "billing")).await;
    let scoped = create(
        &k.keys,
        NewKey {
            allowed_routes: Some(vec!["other".into()]),
            ..NewKey::new("scoped", "search")
        },
    )
    .await;
    let revoked = create(&k.keys, NewKey::new("gone", "x")).await;
    k.keys.revoke("gone").await.unwrap();
    let rotated_out = create(&k.keys, NewKey::new("rotated", "x")).await;
    let fresh = k.keys.rotate("rotated", Duration::ZERO).await.unwrap();
    let expired = create(
        &k.keys,
        NewKey {
            expires: Some(Expiry::After(Duration::from_millis(1))),
            ..NewKey::new("short-lived", "x")
        },
    )
    .await;

    let reply = chat_as(&k.gw, Some(&good), "chat-default").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let cases: Vec<(Option<&str>, &str, StatusCode, &str)> = vec![
        (
            None,
            "chat-default",
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
        ),
        (
            Some("not-a-key"),
            "chat-default",
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        ),
        (
            Some("sy-0000000000000000000000000000000000000000000"),
            "chat-default",
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
        ),
        (
            Some(&revoked),
            "chat-default",
            StatusCode::UNAUTHORIZED,
            "revoked_api_key",
        ),
        (
            Some(&rotated_out),
            "chat-default",
            StatusCode::UNAUTHORIZED,
            "expired_api_key",
        ),
        (
            Some(&scoped),
            "chat-default",
            StatusCode::FORBIDDEN,
            "model_not_allowed",
        ),
    ];
    for (key, model, status, code) in cases {
        let reply = chat_as(&k.gw, key, model).await;
        assert_eq!(reply.status, status, "{key:?}: {}", reply.text());
        let (message, _, got) = reply.openai_error();
        assert_eq!(got, code, "{key:?}: {message}");
        if let Some(key) = key {
            assert!(
                !message.contains(key),
                "the secret is not echoed: {message}"
            );
        }
    }
    let reply = chat_as(&k.gw, Some(&scoped), "chat-default").await;
    assert!(
        reply.openai_error().0.contains("chat-default"),
        "names the route"
    );
    assert_eq!(
        chat_as(&k.gw, Some(&scoped), "other").await.status,
        StatusCode::OK
    );
    assert_eq!(
        chat_as(&k.gw, Some(fresh.secret.expose()), "chat-default")
            .await
            .status,
        StatusCode::OK
    );
    // The expiry is in the past by the time this runs (1 ms after creation).
    let reply = chat_as(&k.gw, Some(&expired), "chat-default").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.openai_error().2, "expired_api_key");
    assert_eq!(
        upstream.stats().requests,
        3,
        "refused requests never reach an upstream"
    );
}

#[tokio::test]
async fn limits_and_budgets_answer_429_with_their_headers() {
    let upstream = sim("upstream").await;
    let k = keyed_gateway("limits", &upstream).await;
    let limited = with_rpm(&k.keys, "limited", 2).await;
    let ok = chat_as(&k.gw, Some(&limited), "chat-default").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.header("x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(ok.header("x-ratelimit-remaining-requests"), Some("1"));
    assert_eq!(
        chat_as(&k.gw, Some(&limited), "chat-default").await.status,
        StatusCode::OK
    );
    let refused = chat_as(&k.gw, Some(&limited), "chat-default").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text()
    );
    assert_eq!(refused.openai_error().2, "rate_limit_exceeded");
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    assert!(refused.header("x-ratelimit-reset-requests").is_some());

    let budgeted = create(
        &k.keys,
        NewKey {
            budget: KeyBudget {
                daily_usd: Some(0.000001),
                monthly_usd: None,
            },
            ..NewKey::new("budgeted", "batch")
        },
    )
    .await;
    // gpt-4o has a price: the first answer's cost exceeds the tiny budget.
    assert_eq!(
        chat_as(&k.gw, Some(&budgeted), "chat-default").await.status,
        StatusCode::OK
    );
    let over = chat_as(&k.gw, Some(&budgeted), "chat-default").await;
    assert_eq!(
        over.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        over.text()
    );
    assert_eq!(over.openai_error().2, "budget_exceeded");
    assert!(over.header("retry-after").is_some());
}

/// A key at its concurrency limit is refused before its body is read: the
/// gateway answers 429 to a request head that announces a large body and
/// sends none, instead of waiting (and buffering) for it.
#[tokio::test]
async fn a_key_at_its_limits_is_refused_before_its_body_is_read() {
    let upstream = sim("upstream").await;
    let k = keyed_gateway("before-body", &upstream).await;
    let limited = with_rpm(&k.keys, "one-a-minute", 1).await;
    assert_eq!(
        chat_as(&k.gw, Some(&limited), "chat-default").await.status,
        StatusCode::OK
    );
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer {limited}\r\n\
         content-type: application/json\r\ncontent-length: 4000000\r\n\r\n"
    );
    let addr = k.gw.addr();
    let response = tokio::time::timeout(Duration::from_secs(30), async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    })
    .await
    .expect("the gateway answers without the body");
    assert!(
        response.starts_with("HTTP/1.1 429"),
        "refused by its limit, not by a body timeout: {response}"
    );
}

/// A chat request with `key` sent from the loopback address `from`.
async fn chat_from(gw: &Gateway, from: [u8; 4], key: &str) -> Reply {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_local_address(Some(std::net::IpAddr::from(from)));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let bearer = format!("Bearer {key}");
    call(
        &client,
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        serde_json::json!({"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]})
            .to_string(),
        &[("authorization", bearer.as_str())],
    )
    .await
}

/// A client spraying random well-formed keys: past `failed_auth_per_minute`
/// its failures answer 429 and it may start no store lookup, while a warm
/// key from the same address and a cold key from another address are
/// served throughout.
#[tokio::test]
async fn key_spraying_is_throttled_per_address_while_real_keys_keep_working() {
    let upstream = sim("upstream").await;
    let k = keyed_gateway_with("spray", &upstream, "[keys]\nfailed_auth_per_minute = 10\n").await;
    let warm = create(&k.keys, NewKey::new("warm", "web")).await;
    let cold = create(&k.keys, NewKey::new("cold", "web")).await;
    let sprayer = [127, 0, 0, 1];
    assert_eq!(
        chat_from(&k.gw, sprayer, &warm).await.status,
        StatusCode::OK
    );
    let mut codes = Vec::new();
    for i in 0..40u32 {
        // Distinct prefixes, so the negative cache does not absorb them.
        let random = format!("sy-{:08}{}", i, "A".repeat(35));
        let reply = chat_from(&k.gw, sprayer, &random).await;
        let (_, _, code) = reply.openai_error();
        codes.push((reply.status, code));
        if i % 10 == 9 {
            let ok = chat_from(&k.gw, sprayer, &warm).await;
            assert_eq!(ok.status, StatusCode::OK, "warm key during the spray");
        }
    }
    let invalid = codes
        .iter()
        .filter(|(s, c)| *s == StatusCode::UNAUTHORIZED && c == "invalid_api_key")
        .count();
    let throttled = codes
        .iter()
        .filter(|(s, c)| *s == StatusCode::TOO_MANY_REQUESTS && c == "too_many_invalid_keys")
        .count();
    // 9 fit in the minute's burst (a few more if the run is slow enough
    // for the bucket to drain a little); every other one is throttled.
    assert!((9..=12).contains(&invalid), "plain 401s first: {codes:?}");
    assert_eq!(invalid + throttled, codes.len(), "then 429s: {codes:?}");
    let again = chat_from(&k.gw, sprayer, &format!("sy-zzzzzzzz{}", "B".repeat(35))).await;
    assert!(again.header("retry-after").is_some());
    let other_address = chat_from(&k.gw, [127, 0, 0, 2], &cold).await;
    assert_eq!(
        other_address.status,
        StatusCode::OK,
        "{}",
        other_address.text()
    );
}

#[tokio::test]
async fn anthropic_clients_authenticate_with_x_api_key() {
    let upstream = sim("upstream").await;
    let k = keyed_gateway("x-api-key", &upstream).await;
    let secret = create(&k.keys, NewKey::new("claude-code", "dev-tools")).await;
    let url = format!("{}/messages", k.gw.base_url());
    let body = serde_json::json!({"model": "chat-default", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let reply = call(
        &client(),
        Method::POST,
        &url,
        body.clone(),
        &[("x-api-key", &secret)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["type"], "message");
    let reply = call(&client(), Method::POST, &url, body, &[]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json()["error"]["type"],
        "authentication_error",
        "Anthropic's shape"
    );
}

#[tokio::test]
async fn the_admin_api_wants_the_admin_key_and_nothing_else() {
    let upstream = sim("upstream").await;
    let k = keyed_gateway("admin", &upstream).await;
    let virtual_key = create(&k.keys, NewKey::new("app", "web")).await;
    let root = k.gw.base_url().trim_end_matches("/v1").to_owned();
    for path in ["/admin/keys", "/admin/targets", "/admin/stats"] {
        let url = format!("{root}{path}");
        for auth in [
            None,
            Some(virtual_key.as_str()),
            Some("wrong-admin-key-0000000"),
        ] {
            let bearer = auth.map(|a| format!("Bearer {a}"));
            let headers: Vec<(&str, &str)> = bearer
                .as_deref()
                .map(|b| vec![("authorization", b)])
                .unwrap_or_default();
            let reply = call(&client(), Method::GET, &url, "", &headers).await;
            assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
        }
        let bearer = format!("Bearer {ADMIN_KEY}");
        let reply = call(
            &client(),
            Method::GET,
            &url,
            "",
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text());
    }
    let bearer = format!("Bearer {ADMIN_KEY}");
    let created = call(
        &client(),
        Method::POST,
        &format!("{root}/admin/keys"),
        serde_json::json!({"name": "via-api", "service": "ops"}).to_string(),
        &[("authorization", &bearer)],
    )
    .await;
    assert!(created.status.is_success(), "{}", created.text());
    let secret = created.json()["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        chat_as(&k.gw, Some(&secret), "chat-default").await.status,
        StatusCode::OK
    );
}

/// `auth = "none"` with an admin key: the operator views on the main port
/// want the admin key (they used to be served open, the key ignored);
/// `/admin/keys` does not exist without virtual keys.
#[tokio::test]
async fn with_auth_none_an_admin_key_still_guards_the_admin_views() {
    let upstream = sim("upstream").await;
    let text = config_text(
        &[&upstream.base_url()],
        "[admin]\nkey_env = \"ADMIN_KEY\"\n",
    );
    let gw = gateway_with_env(&text, |name| {
        (name == "ADMIN_KEY").then(|| ADMIN_KEY.to_owned())
    })
    .await;
    let root = gw.base_url().trim_end_matches("/v1").to_owned();
    let bearer = format!("Bearer {ADMIN_KEY}");
    for path in ["/admin/targets", "/admin/stats"] {
        let url = format!("{root}{path}");
        let open = call(&client(), Method::GET, &url, "", &[]).await;
        assert_eq!(open.status, StatusCode::UNAUTHORIZED, "{path}");
        let keyed = call(
            &client(),
            Method::GET,
            &url,
            "",
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(keyed.status, StatusCode::OK, "{path}: {}", keyed.text());
    }
    let keys = call(
        &client(),
        Method::GET,
        &format!("{root}/admin/keys"),
        "",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(keys.status, StatusCode::NOT_FOUND);
    // The API itself stays open, as `auth = "none"` says.
    assert_eq!(
        chat(&client(), &gw, chat_body(false)).await.status,
        StatusCode::OK
    );
}

/// `auth = "keys"` while the key service is not running (its state built
/// but `start_services` never ran, as after a swap that skipped it): every
/// API request is refused in OpenAI's shape, never served open.
#[tokio::test]
async fn auth_keys_without_the_key_service_refuses_every_request() {
    use tower::ServiceExt;
    let upstream = sim("upstream").await;
    let text =
        config_text(&[&upstream.base_url()], "").replace("auth = \"none\"", "auth = \"keys\"");
    let config = Config::from_toml(&text, |_| None).unwrap();
    let state = switchyard::server::AppState::new(config);
    let app = switchyard::server::router::router(state);
    let requests = [
        ("/v1/chat/completions", chat_body(false).to_string()),
        ("/v1/chat/completions", chat_body(true).to_string()),
        (
            "/v1/responses",
            serde_json::json!({"model": "chat-default", "input": "hi"}).to_string(),
        ),
    ];
    for (path, body) in requests {
        let request = http::Request::post(path)
            .header("content-type", "application/json")
            .header("authorization", "Bearer sy-anything")
            .body(axum::body::Body::from(body))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["error"]["code"], "auth_unavailable", "{path}: {v}");
        assert_eq!(v["error"]["type"], "service_unavailable");
    }
    let stored = http::Request::get("/v1/responses/resp_1")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(stored).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        upstream.requests().is_empty(),
        "nothing reached the upstream"
    );
}
