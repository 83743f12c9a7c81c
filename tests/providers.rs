//! Provider adapters and graceful degradation, end to end through the
//! gateway against the simulator: degraded tiers, deprecation dates, and
//! requests a provider cannot express failing over to one that can.

mod common;

use common::*;
use http::{Method, StatusCode};

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
fn root(sim: &switchyard::sim::SimHandle) -> String {
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
