//! The chaos suite: short outage drills (the CI scenarios under
//! `scenarios/ci/`) run in-process, plus SIGTERM and config reloads under
//! load. Every assertion is on counts (requests per phase and per upstream,
//! the simulators' own request logs, the gateway's counters), never on how
//! long something took, so a loaded machine slows the suite down without
//! failing it.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard::config::Config;
use switchyard::drill::live::View;
use switchyard::drill::report::{PhaseReport, Report};
use switchyard::drill::scenario::Scenario;
use switchyard::drill::SelfContained;
use switchyard::loadgen::{self, Live, LoadSpec};
use switchyard::sim::{Behavior, Latency};

fn scenario_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(relative)
}

async fn drill(relative: &str) -> (SelfContained, Report) {
    let scenario =
        Scenario::load(&scenario_path(relative)).unwrap_or_else(|e| panic!("{relative}:\n{e}"));
    let drill = SelfContained::start(scenario).await.expect("start drill");
    let report = drill.run(View::Quiet).await;
    (drill, report)
}

fn region(phase: &PhaseReport, name: &str) -> u64 {
    let upstream = phase.upstream.as_ref().expect("upstream figures");
    upstream.by_region.get(name).copied().unwrap_or(0)
}

fn table(report: &Report) -> String {
    switchyard::drill::report::table(report)
}

#[test]
fn every_shipped_scenario_is_valid_and_ci_variants_are_short() {
    let mut seen = 0;
    for dir in ["", "ci"] {
        let dir = scenario_path(dir);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let scenario =
                Scenario::load(&path).unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            assert!(
                scenario.gateway.is_some(),
                "{} has a gateway",
                path.display()
            );
            assert!(!scenario.phases().is_empty());
            if dir.ends_with("ci") {
                assert!(
                    scenario.load.duration <= Duration::from_secs(60),
                    "{} is a CI variant longer than 60 s",
                    path.display()
                );
            }
            seen += 1;
        }
    }
    assert!(seen >= 10, "only {seen} scenarios found");
    let soak = Scenario::load(&scenario_path("mixed-soak.toml")).unwrap();
    assert_eq!(soak.load.duration, Duration::from_secs(600));
    assert_eq!(soak.load.rate, Some(1000.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_outage_is_invisible_and_amplification_stays_within_the_retry_budget() {
    let (drill, report) = drill("ci/primary-outage.toml").await;
    let summary = table(&report);
    let client = &report.client;
    assert_eq!(client.requests, 1200, "{summary}");
    assert!(client.success_ratio.unwrap_or(0.0) >= 0.999, "{summary}");
    assert_eq!(client.streams_cut, 0, "{summary}");

    let upstream = report.upstream.as_ref().expect("upstream figures");
    let gw = upstream.gateway.expect("gateway counters");
    // Every attempt the gateway counted reached a simulator, and every
    // attempt beyond a request's first is a counted retry or failover.
    assert_eq!(upstream.requests, gw.attempts, "{summary}");
    assert_eq!(
        upstream.requests - client.requests,
        gw.retries + gw.failovers + gw.hedges,
        "{summary}"
    );
    // Same-target retries are what the budget limits: 20% of requests plus
    // 5 per second over the run and the budget's 10 s memory.
    let elapsed = report.elapsed_s.ceil() + 10.0;
    let budget = 0.2 * client.requests as f64 + 5.0 * elapsed;
    assert!(
        (gw.retries as f64) <= budget,
        "{} retries > {budget}\n{summary}",
        gw.retries
    );
    assert!(
        upstream.amplification.unwrap_or(f64::MAX) <= 1.3,
        "{summary}"
    );

    // While the primary is down its breaker keeps it from most requests.
    let outage = &report.phases[1];
    assert_eq!(outage.faults, ["primary: 503 × 100%"]);
    let by = &outage.upstream.as_ref().unwrap().by_upstream;
    assert!(by["primary"] * 10 < outage.client.requests, "{summary}");
    assert!(
        by["secondary"] >= outage.client.requests * 9 / 10,
        "{summary}"
    );
    assert_eq!(report.outages.len(), 1);
    assert!(report.outages[0].detected_after_s.is_some(), "{summary}");
    assert!(report.passed, "{summary}");
    drill.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_over_across_dialects_invisibly() {
    use switchyard::sim::SimEndpoint;
    let (drill, report) = drill("ci/provider-failover.toml").await;
    let summary = table(&report);
    let client = &report.client;
    assert_eq!(client.requests, 800, "{summary}");
    assert!(client.success_ratio.unwrap_or(0.0) >= 0.999, "{summary}");
    assert_eq!(client.streams_cut, 0, "{summary}");
    // Each simulator was spoken to in its own dialect, and while both the
    // OpenAI primary and Anthropic were down, Gemini carried the load.
    let endpoints = |name: &str| -> Vec<SimEndpoint> {
        drill.sims[name]
            .requests()
            .iter()
            .map(|r| r.endpoint)
            .collect()
    };
    assert!(endpoints("openai")
        .iter()
        .all(|e| matches!(e, SimEndpoint::OpenAiChat)));
    let claude = endpoints("claude");
    assert!(
        !claude.is_empty() && claude.iter().all(|e| *e == SimEndpoint::AnthropicMessages),
        "{summary}"
    );
    let gemini = endpoints("gemini");
    assert!(
        !gemini.is_empty()
            && gemini.iter().all(|e| matches!(
                e,
                SimEndpoint::GeminiGenerateContent | SimEndpoint::GeminiStreamGenerateContent
            )),
        "{summary}"
    );
    assert!(report.passed, "{summary}");
    drill.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regional_outage_shifts_traffic_to_the_other_region_and_back() {
    let (drill, report) = drill("ci/regional-outage.toml").await;
    let summary = table(&report);
    assert!(
        report.client.success_ratio.unwrap_or(0.0) >= 0.999,
        "{summary}"
    );
    let [before, during, after] = &report.phases[..] else {
        panic!("three phases expected:\n{summary}");
    };
    // Before: the gateway's own region (us-east) takes the traffic.
    assert!(
        region(before, "us-east") >= before.client.requests * 9 / 10,
        "{summary}"
    );
    assert!(
        region(before, "eu-west") * 10 <= before.client.requests,
        "{summary}"
    );
    // During: eu-west serves; us-east sees only what it takes to detect the
    // failure and probe for recovery.
    assert!(
        region(during, "eu-west") >= during.client.requests * 9 / 10,
        "{summary}"
    );
    assert!(
        region(during, "us-east") * 4 < region(during, "eu-west"),
        "{summary}"
    );
    // After: traffic returns to us-east.
    assert!(
        region(after, "us-east") > region(after, "eu-west"),
        "{summary}"
    );
    for outage in &report.outages {
        assert!(outage.detected_after_s.is_some(), "{summary}");
        assert!(outage.recovered_after_s.is_some(), "{summary}");
    }
    drill.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_reaches_a_rate_limited_target_before_its_retry_after() {
    let (drill, report) = drill("ci/rate-limit-storm.toml").await;
    let summary = table(&report);
    assert!(
        report.client.success_ratio.unwrap_or(0.0) >= 0.999,
        "{summary}"
    );
    let primary = &drill.sims["primary"];
    let limited = primary
        .stats()
        .errors_by_status
        .get(&429)
        .copied()
        .unwrap_or(0);
    // Each 429 cools the primary for every request (not only the one that
    // got it): without that, half of the ~600 requests of the storm would
    // have been refused.
    assert!((10..150).contains(&limited), "{limited} 429s\n{summary}");

    // The simulator's own log: for each request id, consecutive arrivals at
    // this simulator after a 429 must be at least the Retry-After apart.
    let retry_after = Duration::from_millis(300);
    let log = primary.requests();
    let mut by_id: HashMap<&str, Vec<&switchyard::sim::RequestRecord>> = HashMap::new();
    for record in &log {
        let id = record
            .headers
            .iter()
            .find(|(name, _)| name == "x-request-id")
            .map(|(_, v)| v.as_str())
            .expect("the gateway sends x-request-id upstream");
        by_id.entry(id).or_default().push(record);
    }
    let mut retried = 0;
    for records in by_id.values() {
        for pair in records.windows(2) {
            let [first, next] = pair else { continue };
            if first.outcome == "status:429" {
                let gap = next.at.saturating_duration_since(first.at);
                assert!(
                    gap >= retry_after,
                    "a retry came {gap:?} after a 429 asking for {retry_after:?}"
                );
                retried += 1;
            }
        }
    }
    assert!(retried > 5, "only {retried} retries after a 429\n{summary}");
    let gw = report.upstream.as_ref().unwrap().gateway.unwrap();
    assert!(gw.retries >= retried, "{summary}");
    drill.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_completes_every_accepted_request() {
    // Slow answers and slow streams: every request is still in flight when
    // the signal arrives.
    let upstream = sim_with(
        "slow",
        Behavior {
            latency: Latency {
                base: Duration::from_secs(2),
                ..Latency::default()
            },
            tokens_per_sec: 8.0,
            completion_tokens: 8,
            ..Behavior::default()
        },
    )
    .await;
    let dir = std::env::temp_dir().join(format!("switchyard-chaos-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    let text = config_text(
        &[&upstream.base_url()],
        "[server]\ndrain_timeout = \"30s\"\nwatch_config = false\n[defaults.timeouts]\nfirst_byte = \"20s\"\ntotal = \"40s\"\n",
    );
    std::fs::write(&path, &text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("SWITCHYARD_WORKER_THREADS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = line
        .split_whitespace()
        .last()
        .expect("listening line")
        .to_owned();

    const IN_FLIGHT: u64 = 40;
    let spec = LoadSpec {
        base_url: base,
        rate: None,
        concurrency: IN_FLIGHT as usize,
        max_requests: IN_FLIGHT,
        duration: Duration::from_secs(30),
        stream_share: 0.5,
        request_timeout: Duration::from_secs(40),
        ..LoadSpec::default()
    };
    let live = Arc::new(Live::default());
    let load = tokio::spawn(async move { loadgen::run(&spec, live).await });
    eventually("every request reached the upstream", || {
        upstream.stats().requests == IN_FLIGHT
    })
    .await;
    let status = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let report = load.await.unwrap();
    assert_eq!(report.sent, IN_FLIGHT);
    assert_eq!(
        report.ok, IN_FLIGHT,
        "accepted requests lost in the drain: by status {:?}, transport {}, streams cut {}",
        report.by_status, report.transport_errors, report.streams_cut
    );
    assert_eq!(report.transport_errors, 0);
    assert_eq!(report.streams_cut, 0);
    assert!(report.streams_ok > 0, "streams were part of the load");
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "clean exit after the drain: {exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

const RELOAD_SCENARIO: &str = r#"
[providers.a]
models = ["gpt-4o"]
latency = { base = "5ms", jitter = "5ms" }
tokens_per_sec = 800
[providers.b]
models = ["gpt-4o"]
latency = { base = "5ms", jitter = "5ms" }
tokens_per_sec = 800
[gateway]
config = '''
[providers.a]
base_url = "{sim.a}"
[providers.b]
base_url = "{sim.b}"
[routes.chat-default]
targets = [{ provider = "a", model = "gpt-4o" }, { provider = "b", model = "gpt-4o" }]
'''
[load]
rate = 200
duration = "4s"
stream_share = 0.3
[expect]
min_success_ratio = 1.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reloads_during_load_cause_zero_client_errors() {
    let scenario = Scenario::from_toml(RELOAD_SCENARIO, Path::new("."), "reload").unwrap();
    let drill = SelfContained::start(scenario).await.unwrap();
    let (a, b) = (drill.sims["a"].base_url(), drill.sims["b"].base_url());
    // Alternate the target order, the providers' names (so target health
    // keys change) and the retry policy on every reload.
    let done = AtomicBool::new(false);
    let run = async {
        let report = drill.run(View::Quiet).await;
        done.store(true, Ordering::SeqCst);
        report
    };
    let reload = async {
        let mut reloads = 0usize;
        while !done.load(Ordering::SeqCst) {
            let text = match reloads % 3 {
                0 => config_text(&[&a, &b], FAST),
                1 => config_text(&[&b, &a], ""),
                _ => config_text(&[&a, &b], "[defaults.retry]\nmax_attempts_per_target = 1\n"),
            };
            drill
                .gateway
                .reload(Config::from_toml(&text, |_| None).unwrap());
            reloads += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        reloads
    };
    let (report, reloads) = tokio::join!(run, reload);
    let summary = table(&report);
    assert!(reloads >= 10, "only {reloads} reloads\n{summary}");
    assert_eq!(report.client.requests, 800, "{summary}");
    assert_eq!(report.client.ok, report.client.requests, "{summary}");
    assert!(report.passed, "{summary}");
    let by = &report.upstream.as_ref().unwrap().by_upstream;
    assert!(
        by["a"] > 0 && by["b"] > 0,
        "both orders were used\n{summary}"
    );
    drill.shutdown().await.unwrap();
}

fn write_scenario(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn drill_command_exit_codes_json_and_html() {
    let dir = std::env::temp_dir().join(format!("switchyard-chaos-cli-{}", std::process::id()));
    let failing = write_scenario(
        &dir,
        "failing.toml",
        r#"
name = "always-503"
[providers.down]
models = ["gpt-4o"]
status = 503
[gateway]
config = '''
# The breaker never opens: every request gets the upstream's 503 at once.
[defaults.breaker]
consecutive_failures = 0
min_requests = 100000
[providers.down]
base_url = "{sim.down}"
[routes.chat-default]
targets = [{ provider = "down", model = "gpt-4o" }]
'''
[load]
rate = 20
duration = "1s"
[expect]
min_success_ratio = 0.99
max_streams_cut = 0
"#,
    );
    let html = dir.join("report.html");
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["drill", "--json", "--quiet", "--html"])
        .arg(&html)
        .arg(&failing)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["scenario"], "always-503");
    assert_eq!(report["mode"], "self_contained");
    assert_eq!(report["passed"], false);
    assert_eq!(report["client"]["requests"], 20);
    assert_eq!(report["client"]["errors_by_status"]["503"], 20);
    let expectations = report["expectations"].as_array().unwrap();
    assert_eq!(expectations[0]["name"], "min_success_ratio");
    assert_eq!(expectations[0]["passed"], false);
    assert_eq!(expectations[1]["name"], "max_streams_cut");
    assert_eq!(expectations[1]["passed"], true);
    for key in [
        "phases",
        "outages",
        "breaker_events",
        "timeseries",
        "upstream",
        "rss",
        "upstream_per_second",
        "breaker_bands",
    ] {
        assert!(!report[key].is_null(), "{key} missing");
    }
    assert!(
        !report["upstream_per_second"].as_array().unwrap().is_empty(),
        "where the traffic went, per second"
    );
    assert!(!report["breaker_bands"].as_array().unwrap().is_empty());
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(
        page.matches("<svg").count(),
        4,
        "success, latency, upstream traffic, breaker bands"
    );
    assert!(!page.contains("<script"));
    assert!(page.contains("min_success_ratio"));

    let invalid = write_scenario(
        &dir,
        "invalid.toml",
        "[load]\nrate = -1\nduration = \"1s\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["drill", "--quiet"])
        .arg(&invalid)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("load.rate: -1 is not within (0, 1000000]"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_against_a_running_gateway_reads_its_admin_endpoint() {
    let upstream = sim("upstream").await;
    let gw = gateway(&[&upstream], FAST).await;
    let dir = std::env::temp_dir().join(format!("switchyard-chaos-target-{}", std::process::id()));
    let path = write_scenario(
        &dir,
        "target.toml",
        "[load]\nrate = 40\nduration = \"1s\"\nstream_share = 0.5\n[expect]\nmin_success_ratio = 1.0\nmax_amplification = 1.0\n",
    );
    let base = gw.base_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["drill", "--json", "--quiet", "--target", &base])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "target");
    assert_eq!(report["client"]["requests"], 40);
    assert_eq!(report["upstream"]["requests"], 40);
    assert_eq!(report["upstream"]["by_upstream"]["p0/gpt-4o@r0"], 40);
    assert!(report["rss"].is_null(), "no in-process gateway to measure");
    assert_eq!(upstream.stats().requests, 40);
    let _ = std::fs::remove_dir_all(&dir);
}
