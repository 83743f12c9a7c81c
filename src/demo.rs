//! `switchyard demo`: the whole story in under 30 seconds with no account and
//! no network. Starts three simulated providers (a primary with a scripted
//! 10-second outage and some 429s, a healthy secondary in another region, a
//! cheaper model), a gateway in front of them, drives mixed streaming and
//! non-streaming load, and prints what the client saw next to what the
//! upstreams saw.

use crate::config::Config;
use crate::loadgen::{self, Live, LoadSpec};
use crate::routing::health::HealthRegistry;
use crate::server::Gateway;
use crate::sim::{Behavior, Latency, Phase, SimConfig, Simulator};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub const DEMO_TOML: &str = include_str!("../examples/demo.toml");

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// How long to drive load.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Fraction of requests that stream.
    #[arg(long, default_value_t = 0.3)]
    pub stream_share: f64,
    /// Seed for the simulators' faults and the load mix.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// The primary's script: healthy with a few 429s, then 100% 503 from 25% to
/// 75% of the run (10 s of a 20 s run), then healthy again.
fn primary_behavior(duration: Duration) -> (Behavior, Vec<Phase>) {
    let healthy = Behavior {
        status_rates: vec![(429, 0.03)],
        retry_after: Some(Duration::from_millis(150)),
        latency: Latency {
            base: Duration::from_millis(15),
            jitter: Duration::from_millis(10),
            spike_rate: 0.0,
            spike: Duration::ZERO,
        },
        tokens_per_sec: 400.0,
        completion_tokens: 8,
        ..Behavior::default()
    };
    // A provider in an outage answers fast: its load balancer says 503.
    let outage = Behavior {
        status_rates: vec![(503, 1.0)],
        retry_after: None,
        latency: Latency {
            base: Duration::from_millis(1),
            jitter: Duration::from_millis(1),
            ..Latency::default()
        },
        ..healthy.clone()
    };
    let outage_len = (duration / 2).min(Duration::from_secs(10));
    let from = duration / 4;
    (
        healthy,
        vec![Phase {
            from,
            until: from + outage_len,
            behavior: outage,
        }],
    )
}

fn steady(base_ms: u64) -> Behavior {
    Behavior {
        latency: Latency {
            base: Duration::from_millis(base_ms),
            jitter: Duration::from_millis(base_ms / 2),
            spike_rate: 0.0,
            spike: Duration::ZERO,
        },
        tokens_per_sec: 400.0,
        completion_tokens: 8,
        ..Behavior::default()
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    // Per-request lines would drown the progress display; warnings still show.
    let _log_guard = crate::telemetry::init_logging("warn");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let (primary_default, primary_timeline) = primary_behavior(args.duration);
    let sim = |name: &str, seed: u64, models: &[&str], behavior: Behavior, timeline: Vec<Phase>| {
        SimConfig {
            name: name.to_owned(),
            seed,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            behavior,
            timeline,
            accepted_keys: None,
        }
    };
    let primary = Simulator::start(
        sim(
            "primary",
            args.seed,
            &["gpt-4o"],
            primary_default,
            primary_timeline,
        ),
        loopback,
    )
    .await?;
    let secondary = Simulator::start(
        sim("secondary", args.seed + 1, &["gpt-4o"], steady(40), vec![]),
        loopback,
    )
    .await?;
    let budget = Simulator::start(
        sim(
            "budget",
            args.seed + 2,
            &["gpt-4o-mini"],
            steady(10),
            vec![],
        ),
        loopback,
    )
    .await?;

    let config_text = DEMO_TOML
        .replace("{primary}", &primary.base_url())
        .replace("{secondary}", &secondary.base_url())
        .replace("{budget}", &budget.base_url());
    let config = Config::from_toml(&config_text, |_| None)
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let watched: Vec<Watched> = config
        .route("chat-default")
        .map(|route| {
            route
                .targets
                .iter()
                .map(|t| Watched {
                    label: t.label().to_owned(),
                    health_key: t.health_key(),
                })
                .collect()
        })
        .unwrap_or_default();
    let gateway = Gateway::start(config).await?;

    println!("== Switchyard demo ==========================================================");
    println!("The config in use (copy it; swap the base URLs for real providers):\n");
    println!("{}", config_text.trim());
    println!(
        "\nGateway: {}  (POST /chat/completions with model \"chat-default\")",
        gateway.base_url()
    );
    println!(
        "Load: {} req/s for {:?}, {:.0}% streaming. The primary fails with 503 for {:?} starting at {:?}, and answers 3% of requests with 429 + Retry-After.\n",
        args.rate,
        args.duration,
        args.stream_share * 100.0,
        (args.duration / 2).min(Duration::from_secs(10)),
        args.duration / 4,
    );

    primary.reset_clock();
    let spec = LoadSpec {
        base_url: gateway.base_url(),
        model: "chat-default".into(),
        rate: Some(args.rate),
        concurrency: 512,
        duration: args.duration,
        stream_share: args.stream_share,
        seed: args.seed,
        request_timeout: Duration::from_secs(15),
        ..LoadSpec::default()
    };
    let live = Arc::new(Live::default());
    let progress = tokio::spawn(progress_line(
        live.clone(),
        gateway.state().registry.clone(),
        watched,
        args.duration,
    ));
    let report = loadgen::run(&spec, live).await;
    progress.abort();
    let _ = progress.await;
    crate::telemetry::status_line::finish();
    println!();

    let counters = gateway.counters();
    let pct = |d: f64| report.latency_us.value_at_quantile(d) as f64 / 1000.0;
    println!("== What the client saw ======================================================");
    println!("requests            {:>8}", report.sent);
    println!(
        "success rate        {:>8.3}%   ({} ok, {} errors, {} streams cut)",
        report.success_ratio() * 100.0,
        report.ok,
        report.sent - report.ok,
        report.streams_cut
    );
    println!(
        "latency p50/p95/p99 {:>8.1} / {:.1} / {:.1} ms",
        pct(0.50),
        pct(0.95),
        pct(0.99)
    );
    if report.streams_ok > 0 {
        let t = |q: f64| report.ttfb_us.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "stream first byte   {:>8.1} / {:.1} / {:.1} ms (p50/p95/p99)",
            t(0.50),
            t(0.95),
            t(0.99)
        );
    }
    for (status, n) in &report.by_status {
        println!("  HTTP {status}: {n}");
    }
    println!("served by:");
    for (target, n) in &report.served_by {
        println!("  {target:<24} {n:>6}");
    }
    println!("\n== What the gateway did =====================================================");
    println!(
        "upstream attempts   {:>8}   ({:.2} per request)",
        counters.attempts,
        counters.attempts as f64 / report.sent.max(1) as f64
    );
    println!(
        "retries             {:>8}   (same target, after backoff or Retry-After)",
        counters.retries
    );
    println!(
        "failovers           {:>8}   (moved on to the next target)",
        counters.failovers
    );
    println!(
        "breaker skips       {:>8}   (requests that went straight past an open breaker)",
        counters.breaker_skips
    );
    println!(
        "budget refusals     {:>8}   (retries not made: the retry budget was spent)",
        counters.budget_refusals
    );
    println!("streams cut         {:>8}", counters.streams_cut);
    for health in gateway.state().registry.all() {
        let snap = health.snapshot(tokio::time::Instant::now());
        if snap.transitions > 0 {
            println!(
                "breaker {:<28} {} transitions, now {}",
                health.key,
                snap.transitions,
                snap.state.as_str()
            );
        }
    }
    println!("\n== What the upstreams saw ===================================================");
    println!(
        "{:<12} {:>9} {:>8} {:>8} {:>8}",
        "target", "attempts", "ok", "429", "503"
    );
    for (name, sim) in [
        ("primary", &primary),
        ("secondary", &secondary),
        ("budget", &budget),
    ] {
        let s = sim.stats();
        let status = |c: u16| s.errors_by_status.get(&c).copied().unwrap_or(0);
        println!(
            "{:<12} {:>9} {:>8} {:>8} {:>8}",
            name,
            s.requests,
            s.ok,
            status(429),
            status(503)
        );
    }

    gateway.join().await?;
    for s in [primary, secondary, budget] {
        s.shutdown().await;
    }
    if report.success_ratio() < 0.99 {
        anyhow::bail!(
            "client success rate {:.3}% is below 99%",
            report.success_ratio() * 100.0
        );
    }
    println!(
        "\nThe client saw one stable endpoint through a 10-second outage of its primary provider."
    );
    Ok(())
}

/// A target of the demo's route: its label and its key in the gateway's
/// health registry.
struct Watched {
    label: String,
    health_key: String,
}

/// What the live line shows at one tick.
struct Tick {
    elapsed: Duration,
    duration: Duration,
    sent: u64,
    ok: u64,
    failed: u64,
    in_flight: u64,
}

/// The live line: the load so far and each target's breaker as the gateway
/// itself has it (`closed`, `open`, `half_open`), in the route's order.
fn live_line(tick: &Tick, breakers: &[(&str, &str)]) -> String {
    let done = tick.ok + tick.failed;
    let ratio = if done == 0 {
        100.0
    } else {
        tick.ok as f64 * 100.0 / done as f64
    };
    let breakers: Vec<String> = breakers
        .iter()
        .map(|(label, state)| format!("{label} {state}"))
        .collect();
    format!(
        "[{:>5.1}s/{:.0}s] sent {:>6}  ok {:>6} ({:>7.3}%)  in flight {:>4}  breakers: {}",
        tick.elapsed.as_secs_f64(),
        tick.duration.as_secs_f64(),
        tick.sent,
        tick.ok,
        ratio,
        tick.in_flight,
        breakers.join(", ")
    )
}

/// Each watched target's breaker state, read from the health registry.
fn breaker_states(registry: &HealthRegistry, watched: &[Watched]) -> Vec<(String, &'static str)> {
    let now = tokio::time::Instant::now();
    let all = registry.all();
    watched
        .iter()
        .map(|w| {
            let state = all
                .iter()
                .find(|h| h.key == w.health_key)
                .map_or("unknown", |h| h.snapshot(now).state.as_str());
            (w.label.clone(), state)
        })
        .collect()
}

async fn progress_line(
    live: Arc<Live>,
    registry: Arc<HealthRegistry>,
    watched: Vec<Watched>,
    duration: Duration,
) {
    let tty = std::io::stdout().is_terminal();
    let started = tokio::time::Instant::now();
    let tick = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(2)
    };
    loop {
        tokio::time::sleep(tick).await;
        let states = breaker_states(&registry, &watched);
        let states: Vec<(&str, &str)> = states.iter().map(|(l, s)| (l.as_str(), *s)).collect();
        let line = live_line(
            &Tick {
                elapsed: started.elapsed(),
                duration,
                sent: live.sent.load(Ordering::Relaxed),
                ok: live.ok.load(Ordering::Relaxed),
                failed: live.failed.load(Ordering::Relaxed),
                in_flight: live.in_flight.load(Ordering::Relaxed),
            },
            &states,
        );
        if tty {
            // Log lines are written above it (telemetry::status_line).
            crate::telemetry::status_line::draw(&line);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_line_shows_each_breaker_as_the_gateway_has_it() {
        let tick = Tick {
            elapsed: Duration::from_millis(7_250),
            duration: Duration::from_secs(20),
            sent: 1450,
            ok: 1449,
            failed: 1,
            in_flight: 3,
        };
        let line = live_line(
            &tick,
            &[
                ("primary/gpt-4o", "open"),
                ("secondary/gpt-4o", "closed"),
                ("budget/gpt-4o-mini", "closed"),
            ],
        );
        assert_eq!(
            line,
            "[  7.2s/20s] sent   1450  ok   1449 ( 99.931%)  in flight    3  breakers: primary/gpt-4o open, secondary/gpt-4o closed, budget/gpt-4o-mini closed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_states_come_from_the_health_registry() {
        let registry = HealthRegistry::default();
        let policy = crate::resilience::breaker::BreakerPolicy {
            consecutive_failures: 1,
            ..Default::default()
        };
        let primary = registry.get_or_create("primary/gpt-4o@us-east", policy);
        let now = tokio::time::Instant::now();
        let attempt = primary
            .admit(now)
            .unwrap_or_else(|_| panic!("closed breaker refused"));
        attempt.failure(now, crate::resilience::FailureClass::Transient, None);
        let watched = [
            Watched {
                label: "primary/gpt-4o".into(),
                health_key: "primary/gpt-4o@us-east".into(),
            },
            Watched {
                label: "secondary/gpt-4o".into(),
                health_key: "secondary/gpt-4o@eu-west".into(),
            },
        ];
        assert_eq!(
            breaker_states(&registry, &watched),
            [
                ("primary/gpt-4o".to_owned(), "open"),
                ("secondary/gpt-4o".to_owned(), "unknown")
            ]
        );
    }
}
