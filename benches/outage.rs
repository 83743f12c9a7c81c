//! Outage benchmark: a primary that goes fully down for 30 s under steady
//! load, with one healthy secondary. Reports what the client saw and how the
//! breaker behaved: time to open, requests sent to the dead primary while
//! open (probes only), time from recovery until traffic returns, and
//! upstream amplification.
//!
//! Run: `cargo bench --bench outage` (about 50 s). Knobs: OUTAGE_SECS
//! (default 30), OUTAGE_RATE (req/s, default 200).

use std::sync::Arc;
use std::time::Duration;
use switchyard::config::Config;
use switchyard::loadgen::{self, Live, LoadSpec};
use switchyard::resilience::breaker::State;
use switchyard::server::Gateway;
use switchyard::sim::{Behavior, Latency, Phase, SimConfig, Simulator};
use tokio::time::Instant;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn healthy() -> Behavior {
    Behavior {
        latency: Latency {
            base: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            ..Latency::default()
        },
        tokens_per_sec: 500.0,
        completion_tokens: 8,
        ..Behavior::default()
    }
}

#[tokio::main]
async fn main() {
    let outage = Duration::from_secs(env_num("OUTAGE_SECS", 30));
    let rate = env_num("OUTAGE_RATE", 200) as f64;
    let before = Duration::from_secs(5);
    let after = Duration::from_secs(15);
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let down = Behavior {
        status_rates: vec![(503, 1.0)],
        latency: Latency {
            base: Duration::from_millis(1),
            ..Latency::default()
        },
        ..healthy()
    };
    let primary = Simulator::start(
        SimConfig {
            name: "primary".into(),
            models: vec!["gpt-4o".into()],
            behavior: healthy(),
            timeline: vec![Phase {
                from: before,
                until: before + outage,
                behavior: down,
            }],
            ..SimConfig::default()
        },
        loopback,
    )
    .await
    .expect("primary");
    let secondary = Simulator::start(
        SimConfig {
            name: "secondary".into(),
            models: vec!["gpt-4o".into()],
            behavior: healthy(),
            ..SimConfig::default()
        },
        loopback,
    )
    .await
    .expect("secondary");
    let config_text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
auth = "none"
[defaults.retry]
max_attempts_per_target = 2
base_backoff = "20ms"
max_backoff = "200ms"
[defaults.timeouts]
first_byte = "2s"
total = "10s"
[defaults.breaker]
failure_ratio = 0.5
min_requests = 20
window = "10s"
consecutive_failures = 5
open_base = "2s"
open_factor = 2.0
open_max = "8s"
close_after = 2
slow_start = "5s"
[providers.primary]
base_url = "{}"
[providers.secondary]
base_url = "{}"
[routes.chat-default]
targets = [{{ provider = "primary", model = "gpt-4o" }}, {{ provider = "secondary", model = "gpt-4o" }}]
"#,
        primary.base_url(),
        secondary.base_url()
    );
    let config = Config::from_toml(&config_text, |_| None).expect("config");
    let gateway = Gateway::start(config).await.expect("gateway");

    // Watch the primary's breaker every 5 ms.
    let t0 = Instant::now();
    primary.reset_clock();
    let state = gateway.state().clone();
    let changes = Arc::new(std::sync::Mutex::new(Vec::<(Duration, State)>::new()));
    let log = changes.clone();
    let watcher = tokio::spawn(async move {
        let mut last = State::Closed;
        loop {
            let health = state
                .registry
                .all()
                .into_iter()
                .find(|h| h.key.starts_with("primary/"));
            if let Some(h) = health {
                let s = h.state();
                if s != last {
                    log.lock().unwrap().push((t0.elapsed(), s));
                    last = s;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    let spec = LoadSpec {
        base_url: gateway.base_url(),
        model: "chat-default".into(),
        rate: Some(rate),
        concurrency: 512,
        duration: before + outage + after,
        stream_share: 0.3,
        request_timeout: Duration::from_secs(15),
        ..LoadSpec::default()
    };
    let report = loadgen::run(&spec, Arc::new(Live::default())).await;
    watcher.abort();
    let changes = changes.lock().unwrap().clone();

    let outage_start = before;
    let outage_end = before + outage;
    let opened = changes
        .iter()
        .find(|(t, s)| *t >= outage_start && *s == State::Open)
        .map(|(t, _)| *t);
    let closed = changes
        .iter()
        .find(|(t, s)| *t >= outage_end && *s == State::Closed)
        .map(|(t, _)| *t);
    let records = primary.requests();
    let at = |r: &switchyard::sim::RequestRecord| r.at.saturating_duration_since(t0);
    let while_open = opened.map_or(0, |o| {
        records
            .iter()
            .filter(|r| at(r) >= o && at(r) < outage_end)
            .count()
    });
    let first_ok_after = records
        .iter()
        .find(|r| at(r) >= outage_end && r.outcome == "ok")
        .map(|r| at(r) - outage_end);
    // "Traffic returned": the primary again takes at least half of a 1 s slice.
    let per_sec = |from: Duration| {
        records
            .iter()
            .filter(|r| r.outcome == "ok" && at(r) >= from && at(r) < from + Duration::from_secs(1))
            .count()
    };
    let mut returned = None;
    let mut probe = outage_end;
    while probe < before + outage + after {
        if per_sec(probe) as f64 >= rate * 0.5 {
            returned = Some(probe - outage_end);
            break;
        }
        probe += Duration::from_millis(250);
    }
    let upstream = primary.stats().requests + secondary.stats().requests;
    let ms = |d: Option<Duration>| {
        d.map_or("never".to_owned(), |d| {
            format!("{:.0} ms", d.as_secs_f64() * 1000.0)
        })
    };

    let mut out = String::new();
    out.push_str(&format!("Outage benchmark: {rate} req/s, 30% streaming; primary 100% 503 from {before:?} for {outage:?}; healthy secondary.\n\n"));
    out.push_str("| metric | value |\n|---|---:|\n");
    out.push_str(&format!("| client requests | {} |\n", report.sent));
    out.push_str(&format!(
        "| client success | {:.3}% ({} failed) |\n",
        report.success_ratio() * 100.0,
        report.sent - report.ok
    ));
    out.push_str(&format!(
        "| client latency p50 / p99 | {:.1} / {:.1} ms |\n",
        report.latency_us.value_at_quantile(0.5) as f64 / 1000.0,
        report.latency_us.value_at_quantile(0.99) as f64 / 1000.0
    ));
    out.push_str(&format!(
        "| outage start → breaker open | {} |\n",
        ms(opened.map(|o| o - outage_start))
    ));
    out.push_str(&format!(
        "| requests to the dead primary while open (probes) | {while_open} |\n"
    ));
    let primary_health = gateway
        .state()
        .registry
        .all()
        .into_iter()
        .find(|h| h.key.starts_with("primary/"));
    let transitions = primary_health.map_or(0, |h| h.snapshot(Instant::now()).transitions);
    out.push_str(&format!(
        "| breaker transitions (closed/open/half-open) | {transitions} |\n"
    ));
    out.push_str(&format!(
        "| recovery → first successful probe | {} |\n",
        ms(first_ok_after)
    ));
    out.push_str(&format!(
        "| recovery → breaker closed | {} |\n",
        ms(closed.map(|c| c - outage_end))
    ));
    out.push_str(&format!(
        "| recovery → primary back to ≥50% of traffic (slow start) | {} |\n",
        ms(returned)
    ));
    out.push_str(&format!(
        "| upstream amplification (upstream requests / client requests) | {:.3} |\n",
        upstream as f64 / report.sent.max(1) as f64
    ));
    let c = gateway.counters();
    out.push_str(&format!(
        "| retries / failovers / budget refusals / breaker skips | {} / {} / {} / {} |\n",
        c.retries, c.failovers, c.budget_refusals, c.breaker_skips
    ));
    println!("{out}");
    let _ = std::fs::create_dir_all("target");
    let _ = std::fs::write("target/bench-outage.md", &out);
}
