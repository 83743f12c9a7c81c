//! The status page, its JSON, and the rolling statistics.

mod common;

use common::*;
use http::{Method, StatusCode};

fn breaker(extra: &str) -> String {
    format!("{FAST}\n[defaults.breaker]\nconsecutive_failures = 2\nopen_base = \"60s\"\n{extra}")
        .replace("max_attempts_per_target = 2", "max_attempts_per_target = 1")
}

#[tokio::test]
async fn open_breaker_shows_as_degraded_with_an_ongoing_incident() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    let gw = gateway(
        &[&primary, &secondary],
        &breaker("[server]\npublic_status = false\n"),
    )
    .await;
    let client = client();
    let base = format!("http://{}", gw.addr());
    for _ in 0..5 {
        chat(&client, &gw, chat_body(false)).await;
    }
    let status = call(
        &client,
        Method::GET,
        &format!("{base}/status.json"),
        "",
        &[],
    )
    .await
    .json();
    assert_eq!(status["state"], "operational");
    assert_eq!(status["incidents"].as_array().unwrap().len(), 0);

    primary.set_behavior(failing(503));
    for _ in 0..5 {
        assert_eq!(
            chat(&client, &gw, chat_body(false)).await.status,
            StatusCode::OK
        );
    }
    let status = call(
        &client,
        Method::GET,
        &format!("{base}/status.json"),
        "",
        &[],
    )
    .await
    .json();
    assert_eq!(status["state"], "degraded");
    let route = &status["routes"][0];
    assert_eq!(route["route"], "chat-default");
    assert_eq!(route["state"], "degraded");
    assert_eq!(route["requests_1h"], 10);
    assert_eq!(route["success_ratio_1h"], 1.0, "the client saw no failure");
    assert_eq!(route["targets"][0]["breaker"], "open");
    assert_eq!(
        route["targets"][0]["attempts_1h"], 7,
        "five served, then two failures tripped the breaker"
    );
    let p0_success = route["targets"][0]["success_ratio_1h"].as_f64().unwrap();
    assert!((p0_success - 5.0 / 7.0).abs() < 1e-9);
    let incidents = status["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0]["target"], "p0/gpt-4o@r0");
    assert!(incidents[0]["ended"].is_null());

    let page = call(&client, Method::GET, &format!("{base}/status"), "", &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = page.text();
    assert!(html.contains("Some routes are degraded"));
    assert!(html.contains("p0/gpt-4o") && html.contains(">open<"));
    assert!(html.contains("ongoing"));
    assert!(!html.contains("<script"), "no JavaScript");

    let stats = call(
        &client,
        Method::GET,
        &format!("{base}/admin/stats"),
        "",
        &[],
    )
    .await
    .json();
    let minute = &stats["routes"][0]["windows"][0];
    assert_eq!(minute["window"], "1m");
    assert_eq!(minute["requests"], 10);
    assert_eq!(minute["successes"], 10);
    assert!(minute["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(
        minute["cost_per_success_usd"].as_f64().unwrap() > 0.0,
        "gpt-4o has a shipped price"
    );
    assert_eq!(
        stats["routes"][0]["targets"][1]["windows"][0]["requests"],
        5
    );
}

#[tokio::test]
async fn public_status_hides_targets() {
    let primary = sim_with("primary", failing(503)).await;
    let secondary = sim("secondary").await;
    let gw = gateway(
        &[&primary, &secondary],
        // The default.
        &breaker(""),
    )
    .await;
    let client = client();
    for _ in 0..3 {
        chat(&client, &gw, chat_body(false)).await;
    }
    let base = format!("http://{}", gw.addr());
    let json = call(
        &client,
        Method::GET,
        &format!("{base}/status.json"),
        "",
        &[],
    )
    .await;
    let text = json.text();
    assert!(!text.contains("p0/") && !text.contains("p1/"), "{text}");
    assert_eq!(json.json()["state"], "degraded");
    let html = call(&client, Method::GET, &format!("{base}/status"), "", &[])
        .await
        .text();
    assert!(!html.contains("p0/gpt-4o"));
    assert!(html.contains("an upstream provider"));
}
