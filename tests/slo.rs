//! SLO burn-rate alerts end to end: failing traffic fires page and ticket
//! alerts, delivered to a local webhook receiver (retried after a failure).

mod common;

use axum::routing::post;
use common::*;
use http::{Method, StatusCode};
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn burning_error_budget_fires_alerts_to_webhooks_with_retry() {
    // A webhook receiver that fails its first delivery.
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let app = axum::Router::new().route(
        "/hook",
        post({
            let received = received.clone();
            let calls = calls.clone();
            move |body: axum::body::Bytes| async move {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                received
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let primary = sim_with("primary", failing(500)).await;
    let extra = format!(
        "{FAST}\n[alerts]\nwebhooks = [\"{hook}\"]\nevaluate_every = \"50ms\"\n[defaults.breaker]\nconsecutive_failures = 0\nmin_requests = 100000\n"
    );
    let text = config_text(&[&primary.base_url()], &extra).replace(
        "[routes.chat-default]\n",
        "[routes.chat-default]\nslo = { success = 0.999 }\n",
    );
    let gw = gateway_from_text(&text).await;
    let client = client();
    for _ in 0..20 {
        assert_eq!(
            chat(&client, &gw, chat_body(false)).await.status,
            StatusCode::BAD_GATEWAY
        );
    }
    eventually("both alerts delivered", || {
        received.lock().unwrap().len() == 2
    })
    .await;
    let bodies = received.lock().unwrap().clone();
    let mut severities: Vec<&str> = bodies
        .iter()
        .map(|b| b["severity"].as_str().unwrap())
        .collect();
    severities.sort();
    assert_eq!(severities, ["page", "ticket"]);
    for b in &bodies {
        assert_eq!(b["version"], 1);
        assert_eq!(b["kind"], "slo_burn_rate");
        assert_eq!(b["state"], "firing");
        assert_eq!(b["route"], "chat-default");
        assert_eq!(b["objective"], "success");
        let burn = b["burn_rate_short"].as_f64().unwrap();
        assert!(
            (burn - 1000.0).abs() < 1e-6,
            "100% errors against a 0.1% budget: {burn}"
        );
        assert!(b["error_budget_remaining"].as_f64().unwrap() < 0.0);
    }
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the first delivery was retried"
    );
    let status = call(
        &client,
        Method::GET,
        &format!("http://{}/status.json", gw.addr()),
        "",
        &[],
    )
    .await
    .json();
    assert_eq!(status["routes"][0]["slo"][0]["target"], 0.999);
    assert_eq!(status["routes"][0]["slo"][0]["compliance"], 0.0);
}

/// Cost per successful request doubling against the previous day fires a
/// cost-regression alert (paused clock: two days pass in no time).
#[tokio::test(start_paused = true)]
async fn cost_regression_against_the_previous_day_alerts() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use switchyard::telemetry::stats::Sample;
    let text = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.chat-default]\ntargets = [{ provider = \"p\", model = \"gpt-4o\" }]\n[alerts]\nevaluate_every = \"1s\"\ncost_regression_ratio = 1.5\n";
    let state = switchyard::server::AppState::new(
        switchyard::config::Config::from_toml(text, |_| None).unwrap(),
    );
    let live = state.table.load().route("chat-default").unwrap().clone();
    let sample = |cost_usd: f64| Sample {
        success: true,
        error: None,
        latency: Duration::from_millis(10),
        first_token: None,
        cost_usd,
    };
    for _ in 0..10 {
        live.stats
            .record(tokio::time::Instant::now(), sample(0.001));
    }
    tokio::time::advance(Duration::from_secs(25 * 3600)).await;
    for _ in 0..10 {
        live.stats
            .record(tokio::time::Instant::now(), sample(0.0014));
    }
    let evaluator = tokio::spawn(switchyard::server::evaluate_alerts(state.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        state.alert_counters.changes.load(Ordering::SeqCst),
        0,
        "1.4x is under the 1.5x threshold"
    );
    for _ in 0..10 {
        live.stats
            .record(tokio::time::Instant::now(), sample(0.004));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        state.alert_counters.changes.load(Ordering::SeqCst),
        1,
        "(10*0.0014+10*0.004)/20 = 2.7x the previous day"
    );
    evaluator.abort();
}

/// The route `chat-default` over a primary (`p0`) and a degraded target
/// (`p1`), with a success SLO and `settings` (e.g. `degrade_on`).
fn degrading_config(primary: &str, degraded: &str, settings: &str, extra: &str) -> String {
    let extra = format!(
        "{FAST}\n[defaults.breaker]\nconsecutive_failures = 0\nmin_requests = 100000\n{extra}"
    );
    config_text(&[primary, degraded], &extra)
        .replace(
            r#"{ provider = "p1", model = "gpt-4o" }"#,
            r#"{ provider = "p1", model = "gpt-4o", tier = "degraded" }"#,
        )
        .replace(
            "[routes.chat-default]\n",
            &format!("[routes.chat-default]\nslo = {{ success = 0.999 }}\n{settings}\n"),
        )
}

const STRICT: (&str, &str) = ("x-switchyard-allow-degraded", "false");

async fn chat_with(gw: &switchyard::server::Gateway, headers: &[(&str, &str)]) -> Reply {
    call(
        &client(),
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        chat_body(false).to_string(),
        headers,
    )
    .await
}

async fn status_json(gw: &switchyard::server::Gateway) -> serde_json::Value {
    call(
        &client(),
        Method::GET,
        &format!("http://{}/status.json", gw.addr()),
        "",
        &[],
    )
    .await
    .json()
}

/// `degrade_on = "page"` on paused time, through the SLO engine and the
/// evaluation loop: primary first while the SLO holds; once failures reach
/// clients (requests that forbid degradation cannot fail over) the page
/// alert fires and other requests try the degraded target first; a request
/// that forbids degradation still goes to the primary only; after the
/// primary recovers and the alert clears, the primary is first again.
#[tokio::test(start_paused = true)]
async fn a_burning_slo_sends_requests_to_the_degraded_tier_first_until_it_clears() {
    use std::time::Duration;
    let primary = sim_with("primary", failing(500)).await;
    let small = sim("small").await;
    let text = degrading_config(
        &primary.base_url(),
        &small.base_url(),
        "degrade_on = \"page\"",
        "[alerts]\nevaluate_every = \"1s\"\n",
    );
    let gw = gateway_from_text(&text).await;
    let counts = || (primary.requests().len(), small.requests().len());

    // The SLO holds: the primary is tried first (twice), the degraded
    // target serves as the last resort.
    let reply = chat_with(&gw, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-degraded"), Some("true"));
    assert_eq!(reply.header("x-switchyard-attempts"), Some("3"));
    assert_eq!(counts(), (2, 1));

    // Clients that forbid degradation get the primary's failures: the
    // error budget burns and the page alert fires at the next evaluation.
    for _ in 0..20 {
        assert_eq!(
            chat_with(&gw, &[STRICT]).await.status,
            StatusCode::BAD_GATEWAY
        );
    }
    assert_eq!(counts(), (42, 1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains("switchyard_route_slo_degraded{route=\"chat-default\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_route_slo_degrade_switches_total{route=\"chat-default\"} 1"),
        "{metrics}"
    );
    let status = status_json(&gw).await;
    assert_eq!(status["routes"][0]["degraded_by_slo"], true);
    // The page saw clients fail before the switch: the hour's success is
    // below 50%, which outranks "degraded by SLO".
    assert!(status["routes"][0]["success_ratio_1h"].as_f64().unwrap() < 0.5);
    assert_eq!(status["routes"][0]["state"], "major_outage");
    let page = call(
        &client(),
        Method::GET,
        &format!("http://{}/status", gw.addr()),
        "",
        &[],
    )
    .await
    .text();
    assert!(page.contains("degraded by SLO"), "{page}");

    // Degraded first: one attempt, the primary is not asked.
    for _ in 0..3 {
        let reply = chat_with(&gw, &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-switchyard-degraded"), Some("true"));
        assert_eq!(reply.header("x-switchyard-attempts"), Some("1"));
    }
    assert_eq!(counts(), (42, 4));
    // A request that forbids degradation is never switched.
    assert_eq!(
        chat_with(&gw, &[STRICT]).await.status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(counts(), (44, 4));

    // The primary recovers; with no more bad minutes the 5-minute window
    // stops burning and the page clears: the primary is first again.
    primary.set_behavior(switchyard::sim::Behavior::default());
    tokio::time::sleep(Duration::from_secs(6 * 60)).await;
    let status = status_json(&gw).await;
    assert_eq!(status["routes"][0]["degraded_by_slo"], false);
    let reply = chat_with(&gw, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-degraded"), None);
    assert_eq!(counts(), (45, 4));
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains("switchyard_route_slo_degraded{route=\"chat-default\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_route_slo_degrade_switches_total{route=\"chat-default\"} 2"),
        "{metrics}"
    );
}

/// A receiver of webhook bodies on loopback: (its URL, what it got).
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        post({
            let received = received.clone();
            move |body: axum::body::Bytes| async move {
                received
                    .lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (hook, received)
}

/// With virtual keys and the request log: the switch is announced to the
/// webhooks (`"kind":"slo_degradation"`), a request served degraded-first
/// is logged with `degraded = "slo"` (a last-resort one with `"fallback"`),
/// and a key that forbids degradation is never switched.
#[tokio::test]
async fn slo_degradation_is_announced_logged_and_spares_keys_that_forbid_it() {
    use switchyard::keys::NewKey;
    use switchyard::store::{RequestQuery, Store};
    let (hook, received) = webhook_receiver().await;
    let primary = sim_with("primary", failing(500)).await;
    let small = sim("small").await;
    let dir = std::env::temp_dir().join(format!("switchyard-slo-degrade-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("gw.db").display());
    let text = degrading_config(
        &primary.base_url(),
        &small.base_url(),
        "degrade_on = \"ticket\"",
        &format!(
            "[alerts]\nwebhooks = [\"{hook}\"]\nevaluate_every = \"50ms\"\n[store]\nurl = \"{url}\"\n[request_log]\nenabled = true\n"
        ),
    )
    .replace("auth = \"none\"", "auth = \"keys\"");
    let config = switchyard::config::Config::from_toml(&text, |_| None).unwrap();
    let gw = switchyard::server::Gateway::start(config).await.unwrap();
    let keys = gw.state().keys.get().expect("keys on").clone();
    let secret = |created: switchyard::keys::Issued| created.secret.expose().to_owned();
    let app = secret(keys.create(NewKey::new("app", "web")).await.unwrap());
    let mut strict = NewKey::new("strict", "batch");
    strict.allow_degraded = false;
    let strict = secret(keys.create(strict).await.unwrap());
    let app = format!("Bearer {app}");
    let strict = format!("Bearer {strict}");
    let counts = || (primary.requests().len(), small.requests().len());

    let reply = chat_with(&gw, &[("authorization", &app)]).await;
    assert_eq!(reply.header("x-switchyard-attempts"), Some("3"));
    for _ in 0..20 {
        let reply = chat_with(&gw, &[("authorization", &strict)]).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    }
    eventually("the degradation announced", || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["kind"] == "slo_degradation")
    })
    .await;
    let event = received
        .lock()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "slo_degradation")
        .cloned()
        .unwrap();
    assert_eq!(event["version"], 1);
    assert_eq!(event["state"], "degraded");
    assert_eq!(event["route"], "chat-default");
    assert_eq!(event["degrade_on"], "ticket");
    assert_eq!(event["degrade_share"], 1.0);

    let before = counts();
    let reply = chat_with(&gw, &[("authorization", &app)]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-degraded"), Some("true"));
    assert_eq!(reply.header("x-switchyard-attempts"), Some("1"));
    assert_eq!(counts(), (before.0, before.1 + 1));
    let reply = chat_with(&gw, &[("authorization", &strict)]).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        counts(),
        (before.0 + 2, before.1 + 1),
        "the key forbids degradation"
    );

    gw.state()
        .request_log
        .get()
        .expect("request log on")
        .flush()
        .await;
    let store = Store::connect(&url, std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let rows = store
        .query_requests(&RequestQuery::newest(30))
        .await
        .unwrap();
    assert_eq!(rows.len(), 23);
    assert_eq!(
        (rows[0].key_name.as_str(), rows[0].degraded.as_deref()),
        ("strict", None)
    );
    assert_eq!(rows[1].key_name, "app");
    assert_eq!(rows[1].served_target.as_deref(), Some("p1/gpt-4o"));
    assert_eq!(rows[1].degraded.as_deref(), Some("slo"));
    assert_eq!(rows[22].degraded.as_deref(), Some("fallback"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The switch lives with the route's state that outlives a config: a
/// reload keeps it on, and the request path reads it from the new table.
#[test]
fn the_slo_switch_survives_a_reload() {
    let text = degrading_config(
        "http://127.0.0.1:9/v1",
        "http://127.0.0.1:9/v1",
        "degrade_on = \"page\"",
        "",
    );
    let load = || switchyard::config::Config::from_toml(&text, |_| None).unwrap();
    let state = switchyard::server::AppState::new(load());
    let live = state.table.load().route("chat-default").unwrap().clone();
    assert!(!live.slo_degraded_first(true));
    assert!(live.route_health.set_slo_degraded(true));
    assert!(live.slo_degraded_first(true));
    assert!(!live.slo_degraded_first(false), "forbidden by the caller");
    state.reload(load());
    let reloaded = state.table.load().route("chat-default").unwrap().clone();
    assert!(!Arc::ptr_eq(&live, &reloaded), "a new table");
    assert!(reloaded.route_health.slo_degraded());
    assert!(reloaded.slo_degraded_first(true));
    // Without degrade_on the request path ignores a switch not yet cleared.
    state.reload(
        switchyard::config::Config::from_toml(&text.replace("degrade_on = \"page\"", ""), |_| None)
            .unwrap(),
    );
    let plain = state.table.load().route("chat-default").unwrap().clone();
    assert!(!plain.slo_degraded_first(true));
}
