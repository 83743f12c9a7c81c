//! Service-tier fallback end to end: a target with `service_tier = "flex"`
//! and `tier_fallback = "default"` that refuses flex (429
//! `resource_unavailable`) or stays silent past `tier_first_byte` is asked
//! again at `default` before any other target; the response says which tier served, and the simulators' logs
//! show the tier each request carried.

mod common;

use common::*;
use http::StatusCode;
use switchyard::sim::{Behavior, SimHandle};

const PLAIN_P0: &str = r#"{ provider = "p0", model = "gpt-4o" }"#;
const FLEX_P0: &str =
    r#"{ provider = "p0", model = "gpt-4o", service_tier = "flex", tier_fallback = "default" }"#;

/// `chat-default` over `sims`, the first target at flex with a default
/// fallback; `extra` as in [`config_text`].
async fn flex_gateway(sims: &[&SimHandle], extra: &str) -> switchyard::server::Gateway {
    let urls: Vec<String> = sims.iter().map(|s| s.base_url()).collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let text = config_text(&refs, extra).replacen(PLAIN_P0, FLEX_P0, 1);
    assert!(text.contains(FLEX_P0));
    gateway_from_text(&text).await
}

fn refusing_flex() -> Behavior {
    Behavior {
        refuse_service_tier: Some("flex".into()),
        ..Behavior::default()
    }
}

fn tiers(sim: &SimHandle) -> Vec<Option<String>> {
    sim.requests().into_iter().map(|r| r.service_tier).collect()
}

#[tokio::test]
async fn a_refused_flex_request_is_retried_at_default_on_the_same_target() {
    for stream in [false, true] {
        let first = sim_with("flex", refusing_flex()).await;
        let second = sim("second").await;
        let gw = flex_gateway(&[&first, &second], FAST).await;
        let reply = chat(&client(), &gw, chat_body(stream)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-switchyard-service-tier"), Some("default"));
        assert_eq!(reply.header("x-switchyard-target"), Some("p0/gpt-4o"));
        assert_eq!(reply.header("x-switchyard-attempts"), Some("2"));
        assert_eq!(
            tiers(&first),
            vec![Some("flex".to_owned()), Some("default".to_owned())],
            "stream: {stream}"
        );
        let outcomes: Vec<String> = first.requests().into_iter().map(|r| r.outcome).collect();
        assert_eq!(outcomes, ["resource_unavailable", "ok"]);
        assert!(
            second.requests().is_empty(),
            "no failover to the second target"
        );
        drop(gw);
    }
}

#[tokio::test]
async fn a_served_flex_request_says_flex_and_the_targets_tier_wins() {
    let first = sim("flex").await;
    let gw = flex_gateway(&[&first], FAST).await;
    let mut body = chat_body(false);
    body["service_tier"] = "priority".into();
    let reply = chat(&client(), &gw, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-switchyard-service-tier"), Some("flex"));
    assert_eq!(reply.header("x-switchyard-attempts"), Some("1"));
    assert_eq!(tiers(&first), vec![Some("flex".to_owned())]);
    drop(gw);
}

#[tokio::test]
async fn an_ordinary_rate_limit_on_a_flex_target_fails_over_as_before() {
    let first = sim_with("flex", failing(429)).await;
    let second = sim("second").await;
    let gw = flex_gateway(&[&first, &second], FAST).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    // The second target sets no tier, so the gateway names none.
    assert_eq!(reply.header("x-switchyard-service-tier"), None);
    // Retried at flex (the usual same-target retry), never at default.
    assert!(!tiers(&first).is_empty());
    assert!(
        tiers(&first).iter().all(|t| t.as_deref() == Some("flex")),
        "{:?}",
        tiers(&first)
    );
    assert_eq!(second.requests().len(), 1);
    drop(gw);
}

#[tokio::test]
async fn a_refusal_at_the_fallback_tier_fails_over() {
    let first = sim_with(
        "flex",
        Behavior {
            refuse_service_tier: Some("flex".into()),
            status_rates: vec![(503, 1.0)],
            ..Behavior::default()
        },
    )
    .await;
    let second = sim("second").await;
    let gw = flex_gateway(&[&first, &second], FAST).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    // flex refused, then default (503) and its one retry, still at default.
    assert_eq!(
        tiers(&first),
        vec![
            Some("flex".to_owned()),
            Some("default".to_owned()),
            Some("default".to_owned())
        ]
    );
    drop(gw);
}

/// The sum of `name`'s series for target `p0/gpt-4o` in `/metrics`.
async fn p0_metric(gw: &switchyard::server::Gateway, name: &str) -> f64 {
    let text = metrics_text(gw).await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains("target=\"p0/gpt-4o\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `[prices]` with a cheap flex tier: the cost per token says which
/// price applied.
const PRICES: &str = r#"
[prices."gpt-4o"]
input_per_million = 1000.0
output_per_million = 1000.0
tiers.flex = { input_per_million = 1.0, output_per_million = 1.0 }
"#;

#[tokio::test]
async fn cost_uses_the_price_of_the_tier_that_served() {
    for (behavior, per_million) in [(Behavior::default(), 1.0), (refusing_flex(), 1000.0)] {
        let first = sim_with("flex", behavior).await;
        let gw = flex_gateway(&[&first], &format!("{FAST}{PRICES}")).await;
        let reply = chat(&client(), &gw, chat_body(false)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        // The request is accounted when hyper is done with the body, which
        // may be just after the client read its last byte.
        let mut tokens = 0.0;
        for _ in 0..500 {
            tokens = p0_metric(&gw, "switchyard_tokens_total").await;
            if tokens > 0.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(tokens > 0.0, "the request was never accounted");
        let cost = p0_metric(&gw, "switchyard_cost_usd_total").await;
        assert!(
            (cost - tokens * per_million / 1e6).abs() < 1e-9,
            "cost {cost} for {tokens} tokens, expected {per_million} per million"
        );
        drop(gw);
    }
}

/// `tier_first_byte`: flex that stays silent past it counts as a tier
/// refusal, so the same target is asked again at once at default; the
/// breaker (tripping on one failure here) never hears of it. Paused time:
/// the flex answer would take a minute.
#[tokio::test(start_paused = true)]
async fn a_silent_flex_request_falls_back_to_default_after_tier_first_byte() {
    let slow_flex = Behavior {
        slow_service_tier: Some(("flex".into(), std::time::Duration::from_secs(60))),
        ..Behavior::default()
    };
    let first = sim_with("flex", slow_flex).await;
    let second = sim("second").await;
    let urls = [first.base_url(), second.base_url()];
    let extra = format!("{FAST}\n[defaults.breaker]\nconsecutive_failures = 1\n");
    let text = config_text(&[&urls[0], &urls[1]], &extra).replacen(
        PLAIN_P0,
        r#"{ provider = "p0", model = "gpt-4o", service_tier = "flex", tier_fallback = "default", tier_first_byte = "2s" }"#,
        1,
    );
    let gw = gateway_from_text(&text).await;
    for stream in [false, true] {
        let started = tokio::time::Instant::now();
        let reply = chat(&client(), &gw, chat_body(stream)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.header("x-switchyard-service-tier"), Some("default"));
        assert_eq!(reply.header("x-switchyard-target"), Some("p0/gpt-4o"));
        assert_eq!(reply.header("x-switchyard-attempts"), Some("2"));
        let waited = started.elapsed();
        assert!(
            waited >= std::time::Duration::from_secs(2)
                && waited < std::time::Duration::from_secs(5),
            "fell back after tier_first_byte, before first_byte: {waited:?}"
        );
    }
    // Both requests were tried at flex first: the breaker stayed closed.
    assert_eq!(
        tiers(&first),
        ["flex", "default", "flex", "default"].map(|t| Some(t.to_owned()))
    );
    assert!(second.requests().is_empty(), "no failover");
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains(
            "switchyard_tier_fallbacks_total{route=\"chat-default\",target=\"p0/gpt-4o\",reason=\"first_byte\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_breaker_state{target=\"p0/gpt-4o@r0\"} 0"),
        "{metrics}"
    );
    assert_eq!(
        p0_metric(&gw, "switchyard_upstream_errors_total").await,
        2.0
    );
    drop(gw);
}

#[tokio::test]
async fn a_refused_flex_request_counts_a_refused_tier_fallback() {
    let first = sim_with("flex", refusing_flex()).await;
    let gw = flex_gateway(&[&first], FAST).await;
    let reply = chat(&client(), &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains(
            "switchyard_tier_fallbacks_total{route=\"chat-default\",target=\"p0/gpt-4o\",reason=\"refused\"} 1"
        ),
        "{metrics}"
    );
    drop(gw);
}
