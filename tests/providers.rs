//! Provider adapters and graceful degradation, end to end through the
//! gateway against the simulator: degraded tiers, deprecation dates, and
//! requests a provider cannot express failing over to one that can.

mod common;

use common::*;
use http::{Method, StatusCode};
use switchyard::sim::{Fault, FaultAction, SimEndpoint, SimHandle};

/// Today plus `days`, as `YYYY-MM-DD` (UTC).
fn date_in(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let z = now / 86_400 + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A simulator's address without the OpenAI `/v1` prefix (Anthropic and
/// Gemini URLs carry their own version path).
fn root(sim: &SimHandle) -> String {
    sim.base_url().trim_end_matches("/v1").to_owned()
}

fn two_providers(primary: &str, secondary: &str, route: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n\
         [providers.main]\nbase_url = \"{primary}\"\n\
         [providers.cheap]\nbase_url = \"{secondary}\"\n{route}"
    )
}

#[tokio::test]
async fn a_degraded_target_serves_only_when_allowed_and_says_so() {
    let primary = sim_with("primary", failing(503)).await;
    let fallback = sim("fallback").await;
    let gw = gateway_from_text(&two_providers(
        &primary.base_url(),
        &fallback.base_url(),
        r#"[routes.chat]
targets = [
  { provider = "main", model = "gpt-4o" },
  { provider = "cheap", model = "gpt-4o-mini", tier = "degraded" },
]"#,
    ))
    .await;
    let client = client();
    let url = format!("{}/chat/completions", gw.base_url());
    let body =
        serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
            .to_string();

    let reply = call(&client, Method::POST, &url, body.clone(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-switchyard-degraded"), Some("true"));
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("cheap/gpt-4o-mini")
    );
    assert_eq!(reply.json()["model"], "gpt-4o-mini");

    let served_before = fallback.stats().requests;
    let reply = call(
        &client,
        Method::POST,
        &url,
        body,
        &[("x-switchyard-allow-degraded", "false")],
    )
    .await;
    assert!(reply.status.is_server_error(), "{}", reply.text());
    let (message, _, _) = reply.openai_error();
    assert!(message.contains("main/gpt-4o"), "{message}");
    assert_eq!(
        fallback.stats().requests,
        served_before,
        "the degraded target was not tried"
    );
}

#[tokio::test]
async fn a_healthy_primary_is_not_flagged_as_degraded() {
    let primary = sim("primary").await;
    let fallback = sim("fallback").await;
    let gw = gateway_from_text(&two_providers(
        &primary.base_url(),
        &fallback.base_url(),
        r#"[routes.chat]
targets = [
  { provider = "main", model = "gpt-4o" },
  { provider = "cheap", model = "gpt-4o-mini", tier = "degraded" },
]"#,
    ))
    .await;
    let reply = chat(
        &client(),
        &gw,
        serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-degraded"), None);
    assert_eq!(reply.header("x-switchyard-target"), Some("main/gpt-4o"));
}

#[tokio::test]
async fn deprecated_targets_warn_then_are_skipped() {
    let old = sim("old").await;
    let new = sim("new").await;
    let route = format!(
        r#"[routes.expired]
targets = [
  {{ provider = "main", model = "gpt-4o", deprecated_after = "{past}" }},
  {{ provider = "cheap", model = "gpt-4o-mini" }},
]
[routes.soon]
deprecation_warning = "30d"
targets = [{{ provider = "main", model = "gpt-4o", deprecated_after = "{soon}" }}]
[routes.later]
deprecation_warning = "30d"
targets = [{{ provider = "main", model = "gpt-4o", deprecated_after = "{later}" }}]
"#,
        past = date_in(-1),
        soon = date_in(5),
        later = date_in(90),
    );
    let gw = gateway_from_text(&two_providers(&old.base_url(), &new.base_url(), &route)).await;
    let client = client();
    let ask = |model: &str| serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});

    let reply = chat(&client, &gw, ask("expired")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("cheap/gpt-4o-mini")
    );
    assert_eq!(old.stats().requests, 0, "the expired target was skipped");

    let reply = chat(&client, &gw, ask("soon")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let warning = reply.header("x-switchyard-deprecation").unwrap_or_default();
    assert!(
        warning.contains("main/gpt-4o") && warning.contains(&date_in(5)),
        "{warning:?}"
    );

    let reply = chat(&client, &gw, ask("later")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-deprecation"), None);
}

#[tokio::test]
async fn a_route_whose_only_target_is_past_its_date_says_why() {
    let old = sim("old").await;
    let other = sim("other").await;
    let route = format!(
        "[routes.chat]\ntargets = [{{ provider = \"main\", model = \"m\", deprecated_after = \"{}\" }}]\n",
        date_in(-3)
    );
    let gw = gateway_from_text(&two_providers(&old.base_url(), &other.base_url(), &route)).await;
    let reply = chat(
        &client(),
        &gw,
        serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let (message, _, code) = reply.openai_error();
    assert_eq!(code, "no_eligible_target");
    assert!(message.contains("deprecation"), "{message}");
    assert_eq!(old.stats().requests, 0);
}

#[tokio::test]
async fn embeddings_skip_providers_without_them_and_otherwise_name_the_gap() {
    let anthropic_sim = sim("anthropic").await;
    let openai_sim = sim("openai").await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{a}\"\n\
         [providers.oai]\nbase_url = \"{o}\"\n\
         [routes.embed]\ntargets = [{{ provider = \"claude\", model = \"claude-x\" }}, {{ provider = \"oai\", model = \"text-embedding-3-small\" }}]\n\
         [routes.embed-claude-only]\ntargets = [{{ provider = \"claude\", model = \"claude-x\" }}]\n",
        a = root(&anthropic_sim),
        o = openai_sim.base_url(),
    );
    let gw = gateway_from_text(&text).await;
    let client = client();
    let url = format!("{}/embeddings", gw.base_url());
    let body = |model: &str| serde_json::json!({"model": model, "input": "hello"}).to_string();

    let reply = call(&client, Method::POST, &url, body("embed"), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("oai/text-embedding-3-small")
    );
    assert_eq!(reply.header("x-switchyard-attempts"), Some("1"));

    let reply = call(&client, Method::POST, &url, body("embed-claude-only"), &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let (message, kind, code) = reply.openai_error();
    assert_eq!(
        (kind.as_str(), code.as_str()),
        ("invalid_request_error", "unsupported_parameter")
    );
    assert!(
        message.contains("anthropic") && message.contains("/v1/embeddings"),
        "{message}"
    );
    assert_eq!(
        anthropic_sim.stats().requests,
        0,
        "nothing was sent upstream"
    );
}

/// One provider per dialect, all simulated, and a route over them in the
/// given order (`oai`, `claude`, `gem` name the providers).
fn dialects(oai: &SimHandle, claude: &SimHandle, gem: &SimHandle, routes: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n\
         [providers.oai]\nbase_url = \"{}\"\napi_key_env = \"OAI_KEY\"\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"CLAUDE_KEY\"\n\
         [providers.gem]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key_env = \"GEM_KEY\"\n{routes}",
        oai.base_url(),
        claude.origin(),
        gem.origin(),
    )
}

fn fake_keys(name: &str) -> Option<String> {
    Some(format!("test-{}", name.to_lowercase()))
}

const CANNED: &str = "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7";

fn ask(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
    })
}

const ALL_THREE: &str = r#"[routes.chat]
targets = [
  { provider = "oai", model = "gpt-4o" },
  { provider = "claude", model = "claude-sonnet-4-5" },
  { provider = "gem", model = "gemini-2.5-flash" },
]
"#;

#[tokio::test]
async fn one_route_fails_over_openai_to_anthropic_to_gemini() {
    let oai = sim_with("oai", failing(503)).await;
    let claude = sim_with("claude", failing(529)).await;
    let gem = sim("gem").await;
    let gw = gateway_with_env(&dialects(&oai, &claude, &gem, ALL_THREE), fake_keys).await;
    let client = client();

    let reply = chat(&client, &gw, ask("chat", false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("gem/gemini-2.5-flash")
    );
    let v = reply.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], CANNED);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");
    // Each upstream was spoken to in its own dialect, with its own key.
    let last = |s: &SimHandle| s.requests().last().cloned().expect("a request");
    assert_eq!(last(&oai).endpoint, SimEndpoint::OpenAiChat);
    assert_eq!(last(&claude).endpoint, SimEndpoint::AnthropicMessages);
    assert_eq!(last(&claude).api_key.as_deref(), Some("test-claude_key"));
    assert_eq!(last(&gem).endpoint, SimEndpoint::GeminiGenerateContent);
    assert_eq!(last(&gem).api_key.as_deref(), Some("test-gem_key"));

    let reply = chat(&client, &gw, ask("chat", true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let events = sse_data(&reply.body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(sse_content(&events).trim_end(), CANNED);
    assert_eq!(
        last(&gem).endpoint,
        SimEndpoint::GeminiStreamGenerateContent
    );
}

#[tokio::test]
async fn anthropic_upstreams_are_translated_both_ways_including_streams() {
    let oai = sim_with("oai", failing(503)).await;
    let claude = sim("claude").await;
    let gem = sim("gem").await;
    let route = r#"[routes.chat]
targets = [{ provider = "claude", model = "claude-sonnet-4-5" }]
"#;
    let gw = gateway_with_env(&dialects(&oai, &claude, &gem, route), fake_keys).await;
    let client = client();

    let reply = chat(&client, &gw, ask("chat", false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let v = reply.json();
    assert_eq!(v["choices"][0]["message"]["content"], CANNED);
    assert_eq!(v["model"], "claude-sonnet-4-5");

    let reply = chat(&client, &gw, ask("chat", true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let events = sse_data(&reply.body);
    assert_eq!(sse_content(&events).trim_end(), CANNED);
    let usage: Vec<serde_json::Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter(|v| v["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1, "one usage chunk, as include_usage asked");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    // A stream the upstream cuts ends with the gateway's typed error event.
    claude.push_script([FaultAction::DropAfter(2).into()]);
    let reply = chat(&client, &gw, ask("chat", true)).await;
    let events = sse_data(&reply.body);
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_cut", "{events:?}");
}

#[tokio::test]
async fn each_providers_errors_map_to_the_same_classes() {
    // 429 from Gemini is rate limiting: retried on the same target after
    // its Retry-After, not failed over.
    let oai = sim("oai").await;
    let claude = sim("claude").await;
    let gem = sim("gem").await;
    gem.push_script([FaultAction::Status {
        code: 429,
        retry_after: Some(std::time::Duration::from_millis(50)),
    }
    .into()]);
    let route = r#"[routes.gem-first]
targets = [{ provider = "gem", model = "gemini-2.5-flash" }, { provider = "oai", model = "gpt-4o" }]
[routes.claude-first]
targets = [{ provider = "claude", model = "claude-sonnet-4-5" }, { provider = "oai", model = "gpt-4o" }]
"#;
    let gw = gateway_with_env(&dialects(&oai, &claude, &gem, route), fake_keys).await;
    let client = client();
    let reply = chat(&client, &gw, ask("gem-first", false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("gem/gemini-2.5-flash")
    );
    assert_eq!(reply.header("x-switchyard-attempts"), Some("2"));

    // Anthropic's 529 overloaded is transient: retried, then failed over.
    claude.push_script([Fault::status(529), Fault::status(529)]);
    let reply = chat(&client, &gw, ask("claude-first", false)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("oai/gpt-4o"));
    assert_eq!(reply.header("x-switchyard-attempts"), Some("3"));

    // Anthropic's 400 is the client's fault: not retried, not failed over,
    // and the client reads it in OpenAI's shape.
    claude.push_script([Fault::status(400)]);
    let before = oai.stats().requests;
    let reply = chat(&client, &gw, ask("claude-first", false)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let (message, kind, _) = reply.openai_error();
    assert_eq!(kind, "invalid_request_error");
    assert!(message.starts_with("anthropic: "), "{message}");
    assert_eq!(oai.stats().requests, before);
}

#[tokio::test]
async fn context_length_errors_move_to_a_larger_window_only() {
    let oai = sim("oai").await;
    let claude = sim("claude").await;
    let gem = sim("gem").await;
    let route = r#"[routes.chat]
targets = [
  { provider = "oai", model = "gpt-4o", context_window = 128000 },
  { provider = "claude", model = "claude-sonnet-4-5", context_window = 100000 },
  { provider = "gem", model = "gemini-2.5-flash", context_window = 1048576 },
]
[routes.no-fallback]
context_fallback = false
targets = [
  { provider = "claude", model = "claude-sonnet-4-5", context_window = 200000 },
  { provider = "gem", model = "gemini-2.5-flash", context_window = 1048576 },
]
"#;
    let gw = gateway_with_env(&dialects(&oai, &claude, &gem, route), fake_keys).await;
    let client = client();

    oai.push_script([FaultAction::ContextLength.into()]);
    let reply = chat(&client, &gw, ask("chat", false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("gem/gemini-2.5-flash")
    );
    assert_eq!(reply.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(oai.stats().requests, 1, "not retried on the same target");
    assert_eq!(claude.stats().requests, 0, "the smaller window was skipped");

    // The largest target too small: the client gets the context error, in
    // OpenAI's shape, whoever said it.
    oai.push_script([FaultAction::ContextLength.into()]);
    gem.push_script([FaultAction::ContextLength.into()]);
    let reply = chat(&client, &gw, ask("chat", false)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    let (message, _, code) = reply.openai_error();
    assert_eq!(code, "context_length_exceeded");
    assert!(message.starts_with("gemini: "), "{message}");

    claude.push_script([FaultAction::ContextLength.into()]);
    let before = gem.stats().requests;
    let reply = chat(&client, &gw, ask("no-fallback", false)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.openai_error().2, "context_length_exceeded");
    assert_eq!(gem.stats().requests, before, "context_fallback = false");
}

#[tokio::test]
async fn fields_a_provider_cannot_express_fail_over_or_are_named() {
    let oai = sim("oai").await;
    let claude = sim("claude").await;
    let gem = sim("gem").await;
    let route = r#"[routes.chat]
targets = [{ provider = "claude", model = "claude-sonnet-4-5" }, { provider = "oai", model = "gpt-4o" }]
[routes.claude-only]
targets = [{ provider = "claude", model = "claude-sonnet-4-5" }]
"#;
    let gw = gateway_with_env(&dialects(&oai, &claude, &gem, route), fake_keys).await;
    let client = client();
    let mut body = ask("chat", false);
    body["logit_bias"] = serde_json::json!({"50256": -100});
    let reply = chat(&client, &gw, body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-switchyard-target"), Some("oai/gpt-4o"));
    assert_eq!(reply.header("x-switchyard-attempts"), Some("1"));

    body["model"] = "claude-only".into();
    let reply = chat(&client, &gw, body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let (message, _, code) = reply.openai_error();
    assert_eq!(code, "unsupported_parameter");
    assert!(
        message.contains("anthropic") && message.contains("logit_bias"),
        "{message}"
    );
    assert_eq!(claude.stats().requests, 0);
}

#[tokio::test]
async fn a_key_pool_rotates_on_429_and_drops_a_refused_key() {
    let upstream = sim_accepting("pool", &["key-a", "key-b"]).await;
    let backup = sim("backup").await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n\
         [providers.pooled]\nbase_url = \"{}\"\nkeys = [{{ name = \"a\", env = \"KEY_A\" }}, {{ name = \"b\", env = \"KEY_B\" }}, {{ name = \"revoked\", env = \"KEY_C\" }}]\n\
         [providers.backup]\nbase_url = \"{}\"\n\
         [routes.chat]\ntargets = [{{ provider = \"pooled\", model = \"gpt-4o\" }}, {{ provider = \"backup\", model = \"gpt-4o\" }}]\n",
        upstream.base_url(),
        backup.base_url()
    );
    let env = |name: &str| match name {
        "KEY_A" => Some("key-a".to_owned()),
        "KEY_B" => Some("key-b".to_owned()),
        "KEY_C" => Some("key-c".to_owned()),
        _ => None,
    };
    let gw = gateway_with_env(&text, env).await;
    let client = client();

    // A 429 on whichever key goes first: the next attempt uses another key
    // of the pool, not the backup provider.
    upstream.push_script([FaultAction::Status {
        code: 429,
        retry_after: Some(std::time::Duration::from_secs(30)),
    }
    .into()]);
    let reply = chat(&client, &gw, ask("chat", false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(backup.stats().requests, 0, "stayed within the pool");
    let keys: Vec<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.api_key.clone())
        .collect();
    assert!(keys.len() >= 2, "{keys:?}");
    assert_ne!(keys[0], keys[keys.len() - 1], "another key after the 429");
    let cooled = keys[0].clone();

    // Until its Retry-After ends, the rate-limited key is not used; the
    // revoked key is tried at most once, then disabled.
    for _ in 0..12 {
        let reply = chat(&client, &gw, ask("chat", false)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }
    let later: Vec<String> = upstream.requests()[keys.len()..]
        .iter()
        .filter_map(|r| r.api_key.clone())
        .collect();
    assert!(!later.contains(&cooled), "{later:?}");
    let all_keys: Vec<String> = upstream
        .requests()
        .iter()
        .filter_map(|r| r.api_key.clone())
        .collect();
    assert_eq!(
        all_keys.iter().filter(|k| *k == "key-c").count(),
        1,
        "the refused key was tried once, then never again: {all_keys:?}"
    );

    let targets = call(
        &client,
        Method::GET,
        &format!("{}/admin/targets", gw.base_url().trim_end_matches("/v1")),
        "",
        &[],
    )
    .await
    .json();
    let subjects: Vec<&str> = targets["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["target"].as_str())
        .collect();
    for key in ["#a", "#b", "#revoked"] {
        assert!(subjects.iter().any(|s| s.ends_with(key)), "{subjects:?}");
    }
    let subject = |suffix: &str| {
        targets["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"].as_str().unwrap_or_default().ends_with(suffix))
            .cloned()
            .unwrap()
    };
    assert_eq!(subject("#revoked")["disabled"], true);
    assert_eq!(subject("#b")["disabled"], false);
    let text = targets.to_string();
    assert!(
        !text.contains("key-a") && !text.contains("key-c"),
        "no key values: {text}"
    );
}

/// A route per pass-through endpoint over an Anthropic target only, plus
/// `speech` over two OpenAI sims.
fn pass_through_config(
    anthropic: &SimHandle,
    primary: &SimHandle,
    secondary: &SimHandle,
) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{a}\"\n\
         [providers.main]\nbase_url = \"{p}\"\n\
         [providers.backup]\nbase_url = \"{s}\"\n\
         [routes.claude-only]\ntargets = [{{ provider = \"claude\", model = \"claude-sonnet-4-5\" }}]\n\
         [routes.speech]\ntargets = [{{ provider = \"main\", model = \"tts-1\" }}, {{ provider = \"backup\", model = \"tts-1\" }}]\n",
        a = root(anthropic),
        p = primary.base_url(),
        s = secondary.base_url(),
    )
}

#[tokio::test]
async fn endpoints_a_route_cannot_serve_are_a_400_naming_them_and_unknown_paths_a_404() {
    let anthropic = sim("anthropic").await;
    let (primary, secondary) = (sim("primary").await, sim("secondary").await);
    let gw = gateway_from_text(&pass_through_config(&anthropic, &primary, &secondary)).await;
    let client = client();
    let bodies = [
        ("moderations", r#"{"model":"claude-only","input":"hi"}"#),
        ("completions", r#"{"model":"claude-only","prompt":"hi"}"#),
        (
            "images/generations",
            r#"{"model":"claude-only","prompt":"a cat"}"#,
        ),
        (
            "audio/speech",
            r#"{"model":"claude-only","input":"hi","voice":"alloy"}"#,
        ),
    ];
    for (path, body) in bodies {
        let url = format!("{}/{path}", gw.base_url());
        let reply = call(&client, Method::POST, &url, body, &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.text()
        );
        let (message, kind, _) = reply.openai_error();
        assert_eq!(kind, "invalid_request_error", "{path}");
        assert!(
            message.contains(&format!("/v1/{path}")),
            "{path}: {message}"
        );
    }
    assert_eq!(anthropic.stats().requests, 0, "nothing was sent upstream");

    let reply = call(
        &client,
        Method::POST,
        &format!("{}/foo", gw.base_url()),
        "{}",
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let (message, _, code) = reply.openai_error();
    assert_eq!(code, "unknown_url");
    for served in [
        "/v1/responses",
        "/v1/moderations",
        "/v1/audio/speech",
        "/v1/completions",
    ] {
        assert!(message.contains(served), "{message}");
    }
}

#[tokio::test]
async fn speech_cut_before_any_audio_fails_over_and_after_it_reaches_the_client_cut() {
    let anthropic = sim("anthropic").await;
    let (primary, secondary) = (sim("primary").await, sim("secondary").await);
    let gw = gateway_from_text(&pass_through_config(&anthropic, &primary, &secondary)).await;
    let client = client();
    let url = format!("{}/audio/speech", gw.base_url());
    let body = r#"{"model":"speech","input":"hello","voice":"alloy"}"#;

    primary.push_script([
        FaultAction::DropAfter(0).into(),
        FaultAction::DropAfter(0).into(),
    ]);
    let reply = call(&client, Method::POST, &url, body, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("backup/tts-1"));
    assert_eq!(reply.header("content-type"), Some("audio/mpeg"));
    assert_eq!(reply.body.len(), 8 * 417, "the whole audio");
    assert!(primary.stats().dropped >= 1);

    // Once audio has gone out, a cut reaches the client as a cut.
    primary.reset_stats();
    primary.push_script([FaultAction::DropAfter(2).into()]);
    let response = send(&client, Method::POST, &url, body, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut incoming = response.into_body();
    let mut received = 0;
    let ended_with_error = loop {
        match http_body_util::BodyExt::frame(&mut incoming).await {
            Some(Ok(frame)) => received += frame.data_ref().map_or(0, |d| d.len()),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(ended_with_error, "a cut body must not end cleanly");
    assert_eq!(received, 2 * 417);
    assert_eq!(
        secondary.stats().requests,
        1,
        "no failover after audio went out"
    );
}

#[tokio::test]
async fn azure_targets_serve_the_pass_through_endpoints_at_azure_urls() {
    let azure = sim("azure").await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n\
         [providers.az]\nkind = \"azure_openai\"\nbase_url = \"{}\"\napi_key_env = \"AZ_KEY\"\napi_version = \"2025-04-01-preview\"\n\
         [routes.instruct]\ntargets = [{{ provider = \"az\", model = \"gpt-3.5-turbo-instruct\" }}]\n\
         [routes.image]\ntargets = [{{ provider = \"az\", model = \"dall-e-3\" }}]\n\
         [routes.tts]\ntargets = [{{ provider = \"az\", model = \"tts-1\" }}]\n",
        azure.origin()
    );
    let gw = gateway_with_env(&text, |name| {
        (name == "AZ_KEY").then(|| "az-key".to_owned())
    })
    .await;
    let client = client();
    let post = |path: &str, body: serde_json::Value| {
        let url = format!("{}/{path}", gw.base_url());
        let client = client.clone();
        async move { call(&client, Method::POST, &url, body.to_string(), &[]).await }
    };
    let reply = post(
        "completions",
        serde_json::json!({"model": "instruct", "prompt": "hi"}),
    )
    .await;
    assert_eq!(
        reply.json()["object"],
        "text_completion",
        "{}",
        reply.text()
    );
    let reply = post(
        "images/generations",
        serde_json::json!({"model": "image", "prompt": "a cat"}),
    )
    .await;
    assert!(
        reply.json()["data"][0]["url"].is_string(),
        "{}",
        reply.text()
    );
    let reply = post(
        "audio/speech",
        serde_json::json!({"model": "tts", "input": "hi", "voice": "alloy"}),
    )
    .await;
    assert_eq!(reply.body.len(), 8 * 417);

    let records = azure.requests();
    let seen: Vec<(SimEndpoint, Option<&str>)> = records
        .iter()
        .map(|r| (r.endpoint, r.model.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                SimEndpoint::AzureCompletions,
                Some("gpt-3.5-turbo-instruct")
            ),
            (SimEndpoint::AzureImages, Some("dall-e-3")),
            (SimEndpoint::AzureSpeech, Some("tts-1")),
        ]
    );
    assert!(records
        .iter()
        .all(|r| r.api_key.as_deref() == Some("az-key")));
    assert_eq!(
        azure.last_json(SimEndpoint::AzureCompletions).unwrap()["model"],
        "gpt-3.5-turbo-instruct",
        "the body's model is rewritten too"
    );
}

#[tokio::test]
async fn structured_output_through_anthropic_and_gemini_targets_comes_back_as_json() {
    for (kind, model) in [
        ("anthropic", "claude-sonnet-4-5"),
        ("gemini", "gemini-2.5-flash"),
    ] {
        structured_output_through(kind, model).await;
    }
}

async fn structured_output_through(kind: &str, model: &str) {
    let upstream = sim(kind).await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n\
         [providers.up]\nkind = \"{kind}\"\nbase_url = \"{}\"\napi_key_env = \"K\"\n\
         [routes.chat]\ntargets = [{{ provider = \"up\", model = \"{model}\" }}]\n",
        root(&upstream)
    );
    let gw = gateway_with_env(&text, |_| Some("k".to_owned())).await;
    let body = serde_json::json!({
        "model": "chat",
        "messages": [{"role": "user", "content": "weather?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {
            "type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
            "required": ["city", "temp"],
        }}},
    });
    let url = format!("{}/chat/completions", gw.base_url());
    let reply = call(&client(), Method::POST, &url, body.to_string(), &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{kind}: {}", reply.text());
    let content = reply.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let parsed: serde_json::Value = serde_json::from_str(&content).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!({"city": "sim", "temp": 0}),
        "{kind}"
    );
}

#[tokio::test]
async fn legacy_completion_streams_carry_usage_only_when_asked() {
    let upstream = sim("upstream").await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{FAST}\n\
         [providers.oai]\nbase_url = \"{}\"\n\
         [routes.instruct]\ntargets = [{{ provider = \"oai\", model = \"gpt-3.5-turbo-instruct\" }}]\n",
        upstream.base_url()
    );
    let gw = gateway_from_text(&text).await;
    let url = format!("{}/completions", gw.base_url());
    let client = client();
    for asked in [false, true] {
        let mut body = serde_json::json!({"model": "instruct", "prompt": "hi", "stream": true});
        if asked {
            body["stream_options"] = serde_json::json!({"include_usage": true});
        }
        let reply = call(&client, Method::POST, &url, body.to_string(), &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let events = sse_data(&reply.body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect();
        assert_eq!(text, "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 ");
        let usage = chunks.iter().filter(|c| c["usage"].is_object()).count();
        assert_eq!(
            usage,
            usize::from(asked),
            "asked for usage: {asked}: {events:?}"
        );
        let received = upstream.last_json(SimEndpoint::OpenAiCompletions).unwrap();
        assert_eq!(
            received["stream_options"]["include_usage"], true,
            "the upstream is always asked for usage"
        );
    }
}
