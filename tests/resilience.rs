//! Circuit breakers, retry budgets, hedging, balancing, regions and hot
//! reload, end to end against simulators. Assertions are on counts the
//! simulators and the gateway record, never on elapsed time.

mod common;

use common::*;
use http::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use switchyard::sim::{Behavior, Fault};

const ONE_TRY: &str = r#"
[defaults.retry]
max_attempts_per_target = 1
base_backoff = "5ms"
max_backoff = "20ms"
[defaults.timeouts]
first_byte = "5s"
total = "20s"
"#;

fn with_breaker(base: &str, breaker: &str) -> String {
    format!("{base}\n[defaults.breaker]\n{breaker}\n")
}

async fn admin_targets(gw: &switchyard::server::Gateway) -> serde_json::Value {
    call(
        &client(),
        Method::GET,
        &format!("http://{}/admin/targets", gw.addr()),
        "",
        &[],
    )
    .await
    .json()
}

fn target_state<'a>(admin: &'a serde_json::Value, key_prefix: &str) -> &'a serde_json::Value {
    admin["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"].as_str().unwrap().starts_with(key_prefix))
        .unwrap_or_else(|| panic!("no target {key_prefix} in {admin}"))
}

#[tokio::test]
async fn open_breaker_stops_traffic_to_a_dead_target() {
    let primary = sim_with("primary", failing(503)).await;
    let secondary = sim("secondary").await;
    let gw = gateway(
        &[&primary, &secondary],
        &with_breaker(ONE_TRY, "consecutive_failures = 3\nopen_base = \"60s\""),
    )
    .await;
    let client = client();
    for _ in 0..20 {
        let reply = chat(&client, &gw, chat_body(false)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(
        primary.stats().requests,
        3,
        "after 3 failures the breaker keeps traffic away"
    );
    assert_eq!(secondary.stats().requests, 20);
    assert_eq!(gw.counters().breaker_skips, 17);
    let admin = admin_targets(&gw).await;
    let p0 = target_state(&admin, "p0/gpt-4o");
    assert_eq!(p0["state"], "open");
    assert_eq!(p0["trips"], 1);
    assert!(p0["next_probe_in_seconds"].as_f64().unwrap() > 30.0);
    assert_eq!(target_state(&admin, "p1/gpt-4o")["state"], "closed");
}

#[tokio::test]
async fn client_errors_never_trip_the_breaker() {
    let primary = sim_with("primary", failing(400)).await;
    let gw = gateway(
        &[&primary],
        &with_breaker(ONE_TRY, "consecutive_failures = 2"),
    )
    .await;
    let client = client();
    for _ in 0..5 {
        assert_eq!(
            chat(&client, &gw, chat_body(false)).await.status,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(primary.stats().requests, 5);
    assert_eq!(
        target_state(&admin_targets(&gw).await, "p0/gpt-4o")["state"],
        "closed"
    );
}

#[tokio::test]
async fn half_open_probe_closes_the_breaker_and_traffic_returns() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([Fault::status(503), Fault::status(503)]);
    let gw = gateway(
        &[&primary, &secondary],
        &with_breaker(
            ONE_TRY,
            "consecutive_failures = 2\nopen_base = \"200ms\"\nclose_after = 1\nslow_start = \"0s\"",
        ),
    )
    .await;
    let client = client();
    for _ in 0..2 {
        assert_eq!(
            chat(&client, &gw, chat_body(false))
                .await
                .header("x-switchyard-target"),
            Some("p1/gpt-4o")
        );
    }
    assert_eq!(
        target_state(&admin_targets(&gw).await, "p0/gpt-4o")["state"],
        "open"
    );
    // Keep sending until the primary serves again (bounded).
    let mut served_by_primary = false;
    for _ in 0..300 {
        let reply = chat(&client, &gw, chat_body(false)).await;
        assert_eq!(reply.status, StatusCode::OK);
        if reply.header("x-switchyard-target") == Some("p0/gpt-4o") {
            served_by_primary = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(served_by_primary, "traffic returned after the probe");
    assert_eq!(
        primary.stats().requests,
        3,
        "two failures, then exactly one probe while open"
    );
    let admin = admin_targets(&gw).await;
    assert_eq!(target_state(&admin, "p0/gpt-4o")["state"], "closed");
    assert_eq!(
        target_state(&admin, "p0/gpt-4o")["transitions"],
        3,
        "closed→open→half_open→closed"
    );
    let reply = chat(&client, &gw, chat_body(false)).await;
    assert_eq!(reply.header("x-switchyard-target"), Some("p0/gpt-4o"));
}

#[tokio::test]
async fn every_target_open_gives_503_naming_them_with_retry_after() {
    let primary = sim_with("primary", failing(500)).await;
    let gw = gateway(
        &[&primary],
        &with_breaker(ONE_TRY, "consecutive_failures = 2\nopen_base = \"60s\""),
    )
    .await;
    let client = client();
    for _ in 0..2 {
        assert_eq!(
            chat(&client, &gw, chat_body(false)).await.status,
            StatusCode::BAD_GATEWAY
        );
    }
    let reply = chat(&client, &gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let (message, _, code) = reply.openai_error();
    assert_eq!(code, "targets_unavailable");
    assert!(message.contains("p0/gpt-4o (next probe in"), "{message}");
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 50, "retry-after {retry_after}");
    assert_eq!(
        primary.stats().requests,
        2,
        "the open target was not called"
    );
    assert_eq!(gw.counters().all_open, 1);
}

#[tokio::test]
async fn every_target_open_waits_for_a_probe_that_fits_the_deadline() {
    let primary = sim_with("primary", failing(500)).await;
    let gw = gateway(
        &[&primary],
        &with_breaker(
            ONE_TRY,
            "consecutive_failures = 2\nopen_base = \"300ms\"\nclose_after = 1",
        ),
    )
    .await;
    let client = client();
    for _ in 0..2 {
        chat(&client, &gw, chat_body(false)).await;
    }
    primary.set_behavior(Behavior::default());
    let reply = chat(&client, &gw, chat_body(false)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "waited for the probe instead of failing: {}",
        reply.text()
    );
    assert_eq!(primary.stats().requests, 3);
    assert_eq!(gw.counters().all_open, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_amplification_on_a_failing_primary() {
    let primary = sim_with("primary", failing(503)).await;
    let secondary = sim("secondary").await;
    let extra = r#"
[defaults.retry]
max_attempts_per_target = 3
base_backoff = "1ms"
max_backoff = "2ms"
[defaults.breaker]
consecutive_failures = 0
min_requests = 1000000
[defaults.budget]
retry_ratio = 0.2
min_per_sec = 1
ttl = "10s"
"#;
    let gw = Arc::new(gateway(&[&primary, &secondary], extra).await);
    let requests = 200u64;
    let mut tasks = Vec::new();
    for w in 0..4 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let client = client();
            for _ in 0..requests / 4 {
                let reply = chat(&client, &gw, chat_body(false)).await;
                assert_eq!(reply.status, StatusCode::OK, "worker {w}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let primary_requests = primary.stats().requests;
    // Without a budget: 3 per request (600). With it: first attempts (200)
    // plus 20% of them plus the per-second floor over the ttl (≤ 10).
    assert!(
        primary_requests <= requests + requests / 5 + 10,
        "primary saw {primary_requests}"
    );
    assert!(primary_requests >= requests);
    assert_eq!(
        secondary.stats().requests,
        requests,
        "every request failed over once"
    );
    let counters = gw.counters();
    assert!(counters.budget_refusals > 0);
    assert_eq!(counters.failovers, requests);
}

#[tokio::test]
async fn slow_first_attempt_is_hedged_and_the_loser_cancelled() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    primary.push_script([Fault::ok(Duration::from_secs(10))]);
    let extra = format!("{ONE_TRY}\n");
    let text = config_text(&[&primary.base_url(), &secondary.base_url()], &extra).replace(
        "[routes.chat-default]\n",
        "[routes.chat-default]\nhedge_after = \"100ms\"\n",
    );
    let gw = gateway_from_text(&text).await;
    let reply = chat(&client(), &gw, chat_body(true)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    assert_eq!(reply.header("x-switchyard-attempts"), Some("2"));
    assert_eq!(
        sse_data(&reply.body).last().map(String::as_str),
        Some("[DONE]")
    );
    assert_eq!(gw.counters().hedges, 1);
    eventually("the losing attempt is cancelled upstream", || {
        primary.stats().cancelled == 1
    })
    .await;
}

#[tokio::test]
async fn fast_first_attempt_is_not_hedged() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    let text = config_text(&[&primary.base_url(), &secondary.base_url()], ONE_TRY).replace(
        "[routes.chat-default]\n",
        "[routes.chat-default]\nhedge_after = \"5s\"\n",
    );
    let gw = gateway_from_text(&text).await;
    for _ in 0..5 {
        assert_eq!(
            chat(&client(), &gw, chat_body(false))
                .await
                .header("x-switchyard-target"),
            Some("p0/gpt-4o")
        );
    }
    assert_eq!(secondary.stats().requests, 0);
    assert_eq!(gw.counters().hedges, 0);
}

fn two_target_route(a: &str, b: &str, route_extra: &str, ta: &str, tb: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{ONE_TRY}\n[providers.p0]\nbase_url = \"{a}\"\nregion = \"us\"\n[providers.p1]\nbase_url = \"{b}\"\nregion = \"eu\"\n[routes.chat-default]\n{route_extra}\ntargets = [{{ provider = \"p0\", model = \"gpt-4o\"{ta} }}, {{ provider = \"p1\", model = \"gpt-4o\"{tb} }}]\n"
    )
}

#[tokio::test]
async fn weighted_tier_shares_load_by_weight() {
    let a = sim("a").await;
    let b = sim("b").await;
    // Same region so only the weights decide.
    let text = two_target_route(
        &a.base_url(),
        &b.base_url(),
        "",
        ", priority = 0, weight = 3",
        ", priority = 0, weight = 1",
    )
    .replace("region = \"eu\"", "region = \"us\"");
    let gw = gateway_from_text(&text).await;
    let client = client();
    for _ in 0..40 {
        assert_eq!(
            chat(&client, &gw, chat_body(false)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!((a.stats().requests, b.stats().requests), (30, 10));
}

#[tokio::test]
async fn lower_priority_is_used_only_when_the_higher_tier_is_open() {
    let a = sim("a").await;
    let b = sim("b").await;
    let c = sim("c").await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[providers.pa]\nbase_url = \"{}\"\n[providers.pb]\nbase_url = \"{}\"\n[providers.pc]\nbase_url = \"{}\"\n[routes.chat-default]\nstrategy = \"least_inflight\"\ntargets = [{{ provider = \"pa\", model = \"gpt-4o\", priority = 0 }}, {{ provider = \"pb\", model = \"gpt-4o\", priority = 0 }}, {{ provider = \"pc\", model = \"gpt-4o\", priority = 1 }}]\n",
        with_breaker(ONE_TRY, "consecutive_failures = 1\nopen_base = \"60s\""),
        a.base_url(),
        b.base_url(),
        c.base_url()
    );
    let gw = gateway_from_text(&text).await;
    let client = client();
    for _ in 0..10 {
        chat(&client, &gw, chat_body(false)).await;
    }
    assert_eq!(c.stats().requests, 0);
    assert_eq!(a.stats().requests + b.stats().requests, 10);
    a.set_behavior(failing(503));
    b.set_behavior(failing(503));
    for _ in 0..10 {
        assert_eq!(
            chat(&client, &gw, chat_body(false)).await.status,
            StatusCode::OK
        );
    }
    assert!(
        c.stats().requests >= 8,
        "the lower tier took over: {}",
        c.stats().requests
    );
}

#[tokio::test]
async fn caller_region_first_and_regional_outage_shifts_traffic() {
    let us = sim("us").await;
    let eu = sim("eu").await;
    let text = two_target_route(
        &us.base_url(),
        &eu.base_url(),
        "",
        ", priority = 0",
        ", priority = 0",
    );
    let text = with_breaker(&text, "consecutive_failures = 2\nopen_base = \"60s\"")
        + "[alerts]\nevaluate_every = \"20ms\"\n";
    // The incident names the region: shown only on a private status page.
    let text = text.replacen("[server]\n", "[server]\npublic_status = false\n", 1);
    let gw = gateway_from_text(&text).await;
    let client = client();
    let url = format!("{}/chat/completions", gw.base_url());
    let body = chat_body(false).to_string();
    for (region, expected) in [
        ("eu", "p1/gpt-4o"),
        ("us", "p0/gpt-4o"),
        ("eu", "p1/gpt-4o"),
    ] {
        let reply = call(
            &client,
            Method::POST,
            &url,
            body.clone(),
            &[("x-switchyard-region", region)],
        )
        .await;
        assert_eq!(
            reply.header("x-switchyard-target"),
            Some(expected),
            "caller in {region}"
        );
    }
    // The EU region goes down: EU callers are served from the US, no errors.
    eu.set_behavior(failing(503));
    for _ in 0..10 {
        let reply = call(
            &client,
            Method::POST,
            &url,
            body.clone(),
            &[("x-switchyard-region", "eu")],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-switchyard-target"), Some("p0/gpt-4o"));
    }
    assert_eq!(
        eu.stats().errors_by_status.get(&503).copied(),
        Some(2),
        "only until the breaker opened"
    );
    // The regional outage is recorded as an incident on the status page.
    let status_url = format!("http://{}/status.json", gw.addr());
    let mut recorded = false;
    for _ in 0..200 {
        let status = call(&client, Method::GET, &status_url, "", &[])
            .await
            .json();
        if status["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["target"] == "region eu of route chat-default" && i["ended"].is_null())
        {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(recorded, "regional outage recorded as an ongoing incident");
}

#[tokio::test]
async fn reload_keeps_breaker_state_and_an_invalid_file_changes_nothing() {
    let primary = sim_with("primary", failing(503)).await;
    let secondary = sim("secondary").await;
    let extra = with_breaker(ONE_TRY, "consecutive_failures = 2\nopen_base = \"60s\"");
    let text = config_text(&[&primary.base_url(), &secondary.base_url()], &extra);
    let gw = gateway_from_text(&text).await;
    let client = client();
    for _ in 0..3 {
        chat(&client, &gw, chat_body(false)).await;
    }
    assert_eq!(primary.stats().requests, 2);

    // A valid reload adds a route; the open breaker survives.
    let dir = std::env::temp_dir().join(format!("switchyard-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    let reloaded =
        text.clone() + "[routes.extra]\ntargets = [{ provider = \"p1\", model = \"gpt-4o\" }]\n";
    std::fs::write(&path, &reloaded).unwrap();
    assert!(switchyard::server::reload::reload_from(&path, gw.state()));
    let models = call(
        &client,
        Method::GET,
        &format!("{}/models", gw.base_url()),
        "",
        &[],
    )
    .await
    .json();
    assert_eq!(models["data"].as_array().unwrap().len(), 3);
    for _ in 0..5 {
        assert_eq!(
            chat(&client, &gw, chat_body(false)).await.status,
            StatusCode::OK
        );
    }
    assert_eq!(primary.stats().requests, 2, "still open after the reload");
    assert_eq!(
        target_state(&admin_targets(&gw).await, "p0/gpt-4o")["state"],
        "open"
    );

    // An invalid file is refused and the running table stays.
    std::fs::write(
        &path,
        reloaded.replace(
            "provider = \"p1\", model = \"gpt-4o\" }]\n",
            "provider = \"nope\", model = \"gpt-4o\" }]\n",
        ),
    )
    .unwrap();
    assert!(!switchyard::server::reload::reload_from(&path, gw.state()));
    let models = call(
        &client,
        Method::GET,
        &format!("{}/models", gw.base_url()),
        "",
        &[],
    )
    .await
    .json();
    assert_eq!(models["data"].as_array().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_has_zero_client_errors() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    let text = config_text(&[&primary.base_url(), &secondary.base_url()], ONE_TRY);
    let gw = gateway_from_text(&text).await;
    let spec = switchyard::loadgen::LoadSpec {
        base_url: gw.base_url(),
        rate: Some(300.0),
        concurrency: 64,
        duration: Duration::from_secs(2),
        max_requests: 600,
        stream_share: 0.3,
        ..Default::default()
    };
    let live = Arc::new(switchyard::loadgen::Live::default());
    let load = tokio::spawn(async move { switchyard::loadgen::run(&spec, live).await });
    // Reload repeatedly while the load runs, alternating the target order.
    let swapped = config_text(&[&secondary.base_url(), &primary.base_url()], ONE_TRY);
    let mut reloads = 0;
    while !load.is_finished() && reloads < 200 {
        let next = if reloads % 2 == 0 { &swapped } else { &text };
        gw.reload(switchyard::config::Config::from_toml(next, |_| None).unwrap());
        reloads += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let report = load.await.unwrap();
    assert!(
        reloads >= 10,
        "only {reloads} reloads happened during the load"
    );
    assert_eq!(report.sent, 600);
    assert_eq!(
        report.ok, report.sent,
        "errors during reload: {:?} transport {}",
        report.by_status, report.transport_errors
    );
    assert!(
        primary.stats().requests > 0 && secondary.stats().requests > 0,
        "both orders were used"
    );
}

#[tokio::test]
async fn percentile_hedge_uses_the_targets_recent_first_byte_latency() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    let text = config_text(&[&primary.base_url(), &secondary.base_url()], ONE_TRY).replace(
        "[routes.chat-default]\n",
        "[routes.chat-default]\nhedge_after = \"p90\"\n",
    );
    let gw = gateway_from_text(&text).await;
    let client = client();
    // Until 16 samples exist there is no percentile, so no hedge: these 16
    // requests cannot hedge however slow the machine is, and leave exactly
    // enough samples for the next request to have one.
    for _ in 0..16 {
        assert_eq!(
            chat(&client, &gw, chat_body(false))
                .await
                .header("x-switchyard-target"),
            Some("p0/gpt-4o")
        );
    }
    assert_eq!(gw.counters().hedges, 0);
    primary.push_script([Fault::ok(Duration::from_secs(10))]);
    let reply = chat(&client, &gw, chat_body(false)).await;
    assert_eq!(reply.header("x-switchyard-target"), Some("p1/gpt-4o"));
    assert_eq!(gw.counters().hedges, 1);
}

#[tokio::test]
async fn latency_strategy_prefers_the_faster_target() {
    let slow = sim_with(
        "slow",
        Behavior {
            latency: switchyard::sim::Latency {
                base: Duration::from_millis(40),
                ..Default::default()
            },
            ..Behavior::default()
        },
    )
    .await;
    let fast = sim("fast").await;
    let text = two_target_route(
        &slow.base_url(),
        &fast.base_url(),
        "strategy = \"latency\"",
        ", priority = 0",
        ", priority = 0",
    )
    .replace("region = \"eu\"", "region = \"us\"");
    let gw = gateway_from_text(&text).await;
    let client = client();
    for _ in 0..50 {
        assert_eq!(
            chat(&client, &gw, chat_body(false)).await.status,
            StatusCode::OK
        );
    }
    assert!(
        fast.stats().requests >= 45,
        "fast {} slow {}",
        fast.stats().requests,
        slow.stats().requests
    );
}

#[tokio::test]
async fn streams_that_die_mid_way_trip_the_breaker() {
    let primary = sim_with(
        "primary",
        Behavior {
            drop_after: Some((2, 1.0)),
            ..Behavior::default()
        },
    )
    .await;
    let secondary = sim("secondary").await;
    let gw = gateway(
        &[&primary, &secondary],
        &with_breaker(ONE_TRY, "consecutive_failures = 3\nopen_base = \"60s\""),
    )
    .await;
    let client = client();
    for _ in 0..3 {
        let reply = chat(&client, &gw, chat_body(true)).await;
        // Continued on the secondary: the client's answer is whole, but the
        // primary's breaker still hears each break.
        let events = sse_data(&reply.body);
        assert!(!reply.text().contains("stream_cut"), "{events:?}");
        assert_eq!(
            sse_content(&events),
            "tok0 tok1 tok2 tok3 tok4 tok5 tok6 tok7 "
        );
    }
    assert_eq!(
        target_state(&admin_targets(&gw).await, "p0/gpt-4o")["state"],
        "open"
    );
    let reply = chat(&client, &gw, chat_body(true)).await;
    assert_eq!(
        reply.header("x-switchyard-target"),
        Some("p1/gpt-4o"),
        "the breaker now routes around it"
    );
    assert_eq!(
        sse_data(&reply.body).last().map(String::as_str),
        Some("[DONE]")
    );
}

/// A reload that changes a setting read only at start (here `server.auth`
/// from `none` to `keys`, which would otherwise leave the gateway open
/// while claiming success) is refused as a whole; `check-config --diff`
/// says the same before anyone sends SIGHUP.
#[tokio::test]
async fn a_reload_changing_a_restart_only_setting_is_refused() {
    let upstream = sim("upstream").await;
    let text = config_text(&[&upstream.base_url()], ONE_TRY);
    let gw = gateway_from_text(&text).await;
    let dir = std::env::temp_dir().join(format!("switchyard-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("old.toml");
    let new = dir.join("new.toml");
    std::fs::write(&old, &text).unwrap();
    let keys = text.replace("auth = \"none\"", "auth = \"keys\"")
        + "[routes.extra]\ntargets = [{ provider = \"p0\", model = \"gpt-4o\" }]\n";
    std::fs::write(&new, &keys).unwrap();
    assert!(!switchyard::server::reload::reload_from(&new, gw.state()));
    assert_eq!(gw.counters().config_reload_failures, 1);
    let models = call(
        &client(),
        Method::GET,
        &format!("{}/models", gw.base_url()),
        "",
        &[],
    )
    .await
    .json();
    assert_eq!(
        models["data"].as_array().unwrap().len(),
        2,
        "nothing of the refused file was applied"
    );

    let diff = |a: &std::path::Path, b: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["check-config", "--diff"])
            .arg(a)
            .arg(b)
            .output()
            .unwrap()
    };
    let refused = diff(&old, &new);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("server.auth: takes effect only on restart"),
        "{said}"
    );
    let same = diff(&old, &old);
    assert!(
        same.status.success(),
        "{}",
        String::from_utf8_lossy(&same.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
