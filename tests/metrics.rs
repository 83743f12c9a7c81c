//! `GET /metrics` after scripted simulator scenarios: the counters say
//! exactly what happened, labels are bounded, and no secret appears.

mod common;

use common::*;
use http::{Method, StatusCode};
use std::collections::HashMap;
use switchyard::sim::{Fault, FaultAction};

const OPENMETRICS: (&str, &str) = ("accept", "application/openmetrics-text; version=1.0.0");

/// The OpenMetrics exposition, as Prometheus scrapes it.
async fn scrape(client: &TestClient, gw: &switchyard::server::Gateway) -> String {
    call(
        client,
        Method::GET,
        &format!("http://{}/metrics", gw.addr()),
        "",
        &[OPENMETRICS],
    )
    .await
    .text()
}

/// Parses the OpenMetrics text exposition into `name{labels}` → value,
/// checking every line's syntax as it goes.
fn parse(text: &str) -> HashMap<String, f64> {
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            let mut parts = line.splitn(4, ' ');
            assert_eq!(parts.next(), Some("#"));
            let kind = parts.next().unwrap();
            assert!(
                ["HELP", "TYPE", "UNIT", "EOF"].contains(&kind),
                "bad comment line: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in: {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unterminated labels: {line}");
        }
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn get(samples: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(series, _)| {
            (series.as_str() == name || series.starts_with(&format!("{name}{{")))
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .collect();
    assert!(!matching.is_empty(), "no series {name} with {labels:?}");
    matching.iter().sum()
}

#[tokio::test]
async fn counters_match_a_scripted_scenario() {
    let primary = sim("primary").await;
    let secondary = sim("secondary").await;
    // Three requests fail over (503 twice each), then one succeeds after a retry,
    // then one stream is cut mid-way, then one bad request.
    let mut script = Vec::new();
    for _ in 0..3 {
        script.extend([Fault::status(503), Fault::status(503)]);
    }
    script.extend([Fault::status(500), Fault::ok(Default::default())]);
    script.push(FaultAction::DropAfter(2).into());
    primary.push_script(script);
    // No breaker in the way: this test counts retries and failovers.
    let extra =
        format!("{FAST}\n[defaults.breaker]\nconsecutive_failures = 0\nmin_requests = 1000\n");
    let gw = gateway_resume_off(&[&primary, &secondary], &extra).await;
    let client = client();
    for _ in 0..4 {
        assert_eq!(
            chat(&client, &gw, chat_body(false)).await.status,
            StatusCode::OK
        );
    }
    let cut = chat(&client, &gw, chat_body(true)).await;
    assert!(cut.text().contains("stream_cut"));
    let bad = call(
        &client,
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        "{",
        &[],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let reply = call(
        &client,
        Method::GET,
        &format!("http://{}/metrics", gw.addr()),
        "",
        &[OPENMETRICS],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = reply.text();
    let m = parse(&text);
    let route = [("route", "chat-default")];
    assert_eq!(get(&m, "switchyard_failovers_total", &route), 3.0);
    assert_eq!(get(&m, "switchyard_retries_total", &route), 4.0);
    assert_eq!(get(&m, "switchyard_streams_cut_total", &route), 1.0);
    assert_eq!(
        get(
            &m,
            "switchyard_requests_total",
            &[
                ("route", "chat-default"),
                ("status_class", "2xx"),
                ("key", "anonymous")
            ]
        ),
        5.0
    );
    assert_eq!(
        get(
            &m,
            "switchyard_requests_total",
            &[("route", "-"), ("status_class", "4xx")]
        ),
        1.0
    );
    let p0 = [("route", "chat-default"), ("target", "p0/gpt-4o")];
    assert_eq!(
        get(
            &m,
            "switchyard_upstream_attempts_total",
            &[
                p0[0],
                p0[1],
                ("outcome", "failure"),
                ("error_class", "transient")
            ]
        ),
        7.0
    );
    assert_eq!(
        get(
            &m,
            "switchyard_upstream_attempts_total",
            &[p0[0], p0[1], ("outcome", "success")]
        ),
        2.0
    );
    assert_eq!(
        get(
            &m,
            "switchyard_upstream_attempts_total",
            &[("target", "p1/gpt-4o"), ("outcome", "success")]
        ),
        3.0
    );
    assert_eq!(
        get(&m, "switchyard_request_duration_seconds_count", &route),
        6.0 - 1.0
    );
    assert_eq!(
        get(&m, "switchyard_time_to_first_token_seconds_count", &p0),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "switchyard_breaker_state",
            &[("target", "p0/gpt-4o@r0")]
        ),
        0.0
    );
    assert_eq!(
        get(&m, "switchyard_inflight_requests", &[]),
        0.0,
        "every request has ended"
    );
    // Tokens as the upstream reported them (the sim sends 8 completion
    // tokens), and cost from the shipped gpt-4o price (2.50 / 10.00 USD per 1M).
    let p1 = [("route", "chat-default"), ("target", "p1/gpt-4o")];
    assert_eq!(
        get(
            &m,
            "switchyard_tokens_total",
            &[p1[0], p1[1], ("direction", "output")]
        ),
        24.0
    );
    assert_eq!(
        get(
            &m,
            "switchyard_tokens_total",
            &[p0[0], p0[1], ("direction", "output")]
        ),
        8.0 + 2.0,
        "the cut stream reported no usage: it is charged its estimate, one token per content event it forwarded (2)"
    );
    let input = get(
        &m,
        "switchyard_tokens_total",
        &[p1[0], p1[1], ("direction", "input")],
    );
    assert!(input > 0.0);
    let cost = get(&m, "switchyard_cost_usd_total", &p1);
    assert!(
        (cost - (input * 2.5 + 24.0 * 10.0) / 1e6).abs() < 1e-12,
        "cost {cost}"
    );
    // Bounded labels: nothing a client typed, no request ids.
    assert!(!text.contains("x-request-id") && !text.contains("\"{\""));
}

#[tokio::test]
async fn breaker_state_and_transitions_are_exported() {
    let primary = sim_with("primary", failing(503)).await;
    let secondary = sim("secondary").await;
    let extra =
        format!("{FAST}\n[defaults.breaker]\nconsecutive_failures = 2\nopen_base = \"60s\"\n")
            .replace("max_attempts_per_target = 2", "max_attempts_per_target = 1");
    let gw = gateway(&[&primary, &secondary], &extra).await;
    let client = client();
    for _ in 0..5 {
        chat(&client, &gw, chat_body(false)).await;
    }
    let text = scrape(&client, &gw).await;
    let m = parse(&text);
    assert_eq!(
        get(
            &m,
            "switchyard_breaker_state",
            &[("target", "p0/gpt-4o@r0")]
        ),
        2.0
    );
    assert_eq!(
        get(
            &m,
            "switchyard_breaker_transitions_total",
            &[("target", "p0/gpt-4o@r0")]
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "switchyard_breaker_skips_total",
            &[("route", "chat-default")]
        ),
        3.0
    );
}

#[tokio::test]
async fn stream_usage_is_counted_when_the_client_asks_for_it() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], FAST).await;
    let client = client();
    let mut body = chat_body(true);
    body["stream_options"] = serde_json::json!({ "include_usage": true });
    let reply = chat(&client, &gw, body).await;
    assert_eq!(
        sse_data(&reply.body).last().map(String::as_str),
        Some("[DONE]")
    );
    let text = scrape(&client, &gw).await;
    let m = parse(&text);
    assert_eq!(
        get(
            &m,
            "switchyard_tokens_total",
            &[("target", "p0/gpt-4o"), ("direction", "output")]
        ),
        8.0
    );
    assert!(get(&m, "switchyard_cost_usd_total", &[("target", "p0/gpt-4o")]) > 0.0);
}

/// Every metric the shipped Grafana dashboard and Prometheus alert rules
/// query exists in the exposition, so the two cannot drift apart.
#[tokio::test]
async fn dashboard_and_alert_rules_only_use_exported_metrics() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], FAST).await;
    let client = client();
    let mut body = chat_body(true);
    body["stream_options"] = serde_json::json!({ "include_usage": true });
    chat(&client, &gw, body).await;
    let text = scrape(&client, &gw).await;
    let exported: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| &l[..l.find(['{', ' ']).unwrap_or(l.len())])
        .collect();
    for file in [
        "deploy/grafana-dashboard.json",
        "deploy/prometheus-alerts.yml",
    ] {
        let content =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mut checked = 0;
        let mut rest = content.as_str();
        while let Some(at) = rest.find("switchyard_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            assert!(
                exported.contains(name.as_str()),
                "{file} queries {name}, which /metrics does not export"
            );
            checked += 1;
        }
        assert!(
            checked > 5,
            "{file}: only {checked} metric references found"
        );
    }
}

/// Without OpenMetrics in `Accept`, the classic text format: counters named
/// with `_total` in HELP/TYPE, no `# UNIT`/`# EOF` (what promtool checks).
#[tokio::test]
async fn classic_text_format_for_plain_scrapers() {
    let primary = sim("primary").await;
    let gw = gateway(&[&primary], FAST).await;
    let client = client();
    chat(&client, &gw, chat_body(false)).await;
    let reply = call(
        &client,
        Method::GET,
        &format!("http://{}/metrics", gw.addr()),
        "",
        &[],
    )
    .await;
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = reply.text();
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    assert!(
        text.contains("# TYPE switchyard_requests_total counter"),
        "{text}"
    );
    assert!(text.contains("# HELP switchyard_requests_total "));
    assert!(text.contains("# TYPE switchyard_request_duration_seconds histogram"));
    for line in text
        .lines()
        .filter(|l| l.starts_with("switchyard_requests_total{"))
    {
        assert!(line.ends_with(" 1") || line.ends_with(" 0"), "{line}");
    }
}

/// With an admin key set, `/metrics` (key names, spend per key) needs it,
/// unless `[admin] metrics_public = true`.
#[tokio::test]
async fn metrics_are_behind_the_admin_key_when_one_is_set() {
    const ADMIN: &str = "admin-secret-0123456789abcdef";
    let primary = sim("primary").await;
    let env = |name: &str| (name == "ADMIN_KEY").then(|| ADMIN.to_owned());
    let scrape_with = |gw: &switchyard::server::Gateway, auth: Option<&str>| {
        let url = format!("http://{}/metrics", gw.addr());
        let header = auth.map(|a| format!("Bearer {a}"));
        async move {
            let headers: Vec<(&str, &str)> = header
                .as_deref()
                .map(|h| vec![("authorization", h)])
                .unwrap_or_default();
            call(&client(), Method::GET, &url, "", &headers).await
        }
    };
    let guarded = gateway_with_env(
        &config_text(
            &[&primary.base_url()],
            &format!("[admin]\nkey_env = \"ADMIN_KEY\"\n{FAST}"),
        ),
        env,
    )
    .await;
    let refused = scrape_with(&guarded, None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    refused.openai_error();
    assert_eq!(
        scrape_with(&guarded, Some("wrong-key-0123456789"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let allowed = scrape_with(&guarded, Some(ADMIN)).await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert!(allowed.text().contains("switchyard_requests"));

    let public = gateway_with_env(
        &config_text(
            &[&primary.base_url()],
            &format!("[admin]\nkey_env = \"ADMIN_KEY\"\nmetrics_public = true\n{FAST}"),
        ),
        env,
    )
    .await;
    assert_eq!(scrape_with(&public, None).await.status, StatusCode::OK);
}
