//! What a dead primary costs a fleet, with shared health on and off, in one
//! run: three `switchyard serve` replicas (this build) over the same two
//! simulators, each under its own constant load (a balancer's round robin,
//! without a balancer in the way), sharing Redis on 127.0.0.1:6379. After a
//! warm-up the primary answers 500 to everything. Per mode:
//! - the time until all three replicas report the primary's breaker open
//!   (`/admin/targets`, polled every 5 ms);
//! - the requests the failing primary got until then (failed attempts,
//!   each failed over, so clients saw none);
//! - the requests it got over the next `BENCH_FLEET_PROBE_SECS` (probes;
//!   `open_base = 2s` doubling up to `open_max = 8s`).
//!
//! `cargo bench --bench fleet`; `BENCH_FLEET_RATE` requests/s per replica
//! (default 100), `BENCH_FLEET_PROBE_SECS` (default 30).

mod common;

use common::{env_num, spawn, write_config, Proc};
use std::sync::Arc;
use std::time::Duration;
use switchyard::loadgen::{self, Live, LoadSpec};
use switchyard::sim::{Behavior, SimConfig, SimHandle, Simulator};
use tokio::time::Instant;

const REPLICAS: usize = 3;
const THRESHOLD: u32 = 5;

fn config(primary: &SimHandle, backup: &SimHandle, share: bool, replica: usize) -> String {
    let prefix = format!("sy-bench-fleet-{}-{share}", std::process::id());
    format!(
        r#"[server]
listen = "127.0.0.1:0"
auth = "none"
watch_config = false
[defaults.retry]
max_attempts_per_target = 1
[defaults.breaker]
consecutive_failures = {THRESHOLD}
min_requests = 100000
open_base = "2s"
open_factor = 2.0
open_max = "8s"
[limits]
redis_url = "redis://127.0.0.1:6379"
key_prefix = "{prefix}"
[cluster]
share_health = {share}
replica = "r{replica}"
sync_interval = "200ms"
[providers.primary]
base_url = "{}"
[providers.backup]
base_url = "{}"
[routes.chat-default]
targets = [{{ provider = "primary", model = "gpt-4o" }}, {{ provider = "backup", model = "gpt-4o" }}]
"#,
        primary.base_url(),
        backup.base_url()
    )
}

async fn sim(name: &str) -> SimHandle {
    let config = SimConfig {
        name: name.into(),
        ..SimConfig::default()
    };
    Simulator::start(config, ([127, 0, 0, 1], 0).into())
        .await
        .expect("simulator")
}

async fn primary_open(client: &loadgen::LoadClient, base: &str) -> bool {
    let url = format!("{}/admin/targets", base.trim_end_matches("/v1"));
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    let Ok(response) = client.get(uri).await else {
        return false;
    };
    let Ok(body) = http_body_util::BodyExt::collect(response.into_body()).await else {
        return false;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
        return false;
    };
    json["targets"].as_array().is_some_and(|all| {
        all.iter().any(|t| {
            t["target"]
                .as_str()
                .is_some_and(|k| k.starts_with("primary/"))
                && t["state"] == "open"
        })
    })
}

struct Figures {
    to_all_open: Duration,
    failed_attempts: u64,
    probes: u64,
    client_failures: u64,
}

async fn run_mode(share: bool, rate: f64, probe_window: Duration) -> Figures {
    let (primary, backup) = (sim("primary").await, sim("backup").await);
    let fleet: Vec<Proc> = (0..REPLICAS)
        .map(|i| {
            let path = write_config(
                &format!("fleet-{share}-{i}"),
                &config(&primary, &backup, share, i),
            );
            spawn(
                &["serve", "--config", path.to_str().unwrap_or_default()],
                false,
            )
        })
        .collect();
    let warm = Duration::from_secs(2);
    let trip_budget = Duration::from_secs(10);
    let total = warm + trip_budget + probe_window;
    let loads: Vec<_> = fleet
        .iter()
        .map(|p| {
            let spec = LoadSpec {
                base_url: p.base_url.clone(),
                rate: Some(rate),
                concurrency: 16,
                duration: total,
                max_requests: (rate * total.as_secs_f64()) as u64,
                ..LoadSpec::default()
            };
            tokio::spawn(async move { loadgen::run(&spec, Arc::new(Live::default())).await })
        })
        .collect();
    tokio::time::sleep(warm).await;
    primary.set_behavior(Behavior {
        status_rates: vec![(500, 1.0)],
        ..Behavior::default()
    });
    primary.reset_stats();
    let t0 = Instant::now();
    let client = loadgen::client();
    let mut to_all_open = trip_budget;
    while t0.elapsed() < trip_budget {
        let mut open = 0;
        for p in &fleet {
            open += usize::from(primary_open(&client, &p.base_url).await);
        }
        if open == REPLICAS {
            to_all_open = t0.elapsed();
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let failed_attempts = primary.stats().requests;
    tokio::time::sleep(probe_window).await;
    let probes = primary.stats().requests - failed_attempts;
    let mut client_failures = 0;
    for load in loads {
        let report = load.await.expect("load");
        client_failures += report.sent - report.ok;
    }
    drop(fleet);
    Figures {
        to_all_open,
        failed_attempts,
        probes,
        client_failures,
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rate = env_num("BENCH_FLEET_RATE", 100) as f64;
    let probe_window = Duration::from_secs(env_num("BENCH_FLEET_PROBE_SECS", 30));
    println!(
        "fleet of {REPLICAS}, {rate} req/s each, consecutive_failures = {THRESHOLD}, probes over {probe_window:?}"
    );
    println!("| shared health | all three open after | failed attempts on the primary | probes | client failures |");
    println!("|---|---|---|---|---|");
    for share in [false, true] {
        let f = run_mode(share, rate, probe_window).await;
        println!(
            "| {} | {:.0} ms | {} | {} | {} |",
            if share { "on" } else { "off" },
            f.to_all_open.as_secs_f64() * 1000.0,
            f.failed_attempts,
            f.probes,
            f.client_failures
        );
    }
}
