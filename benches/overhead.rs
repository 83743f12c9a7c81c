//! Gateway overhead benchmark: the same load sent straight to a zero-delay
//! simulator and through the gateway, interleaved in one run, so the
//! difference is what the gateway adds.
//!
//! Run: `cargo bench --bench overhead` (about 2 minutes). Both the simulator
//! and the gateway run as separate processes of the release binary; the load
//! driver runs here. Everything shares this machine's cores, so absolute
//! numbers include the driver's own cost; the *difference* is the gateway's.
//!
//! Environment knobs: BENCH_ROUND_SECS (default 5), BENCH_ROUNDS (default 3),
//! BENCH_GATEWAY_LOG (the gateway's RUST_LOG, default info).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use switchyard::loadgen::{self, Live, LoadReport, LoadSpec};

struct Proc {
    child: Child,
    base_url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `switchyard ARGS` and waits for its "listening on URL" line.
fn spawn(args: &[&str], log: bool) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .env(
            "RUST_LOG",
            if log {
                std::env::var("BENCH_GATEWAY_LOG").unwrap_or_else(|_| "info".into())
            } else {
                "warn".into()
            },
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn switchyard");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read listen line");
    let base_url = line.split_whitespace().last().expect("url").to_owned();
    assert!(
        base_url.starts_with("http://"),
        "unexpected first line: {line}"
    );
    Proc { child, base_url }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn drive(
    base_url: &str,
    model: &str,
    rate: Option<f64>,
    concurrency: usize,
    secs: u64,
    stream_share: f64,
) -> LoadReport {
    let spec = LoadSpec {
        base_url: base_url.to_owned(),
        model: model.to_owned(),
        rate,
        concurrency,
        duration: Duration::from_secs(secs),
        stream_share,
        request_timeout: Duration::from_secs(10),
        ..LoadSpec::default()
    };
    loadgen::run(&spec, Arc::new(Live::default())).await
}

fn merge(into: &mut Option<LoadReport>, r: LoadReport) {
    match into {
        None => *into = Some(r),
        Some(acc) => {
            acc.sent += r.sent;
            acc.ok += r.ok;
            acc.elapsed += r.elapsed;
            acc.latency_us.add(&r.latency_us).expect("same bounds");
            acc.ttfb_us.add(&r.ttfb_us).expect("same bounds");
        }
    }
}

struct Row {
    name: String,
    direct: LoadReport,
    gateway: LoadReport,
}

fn q(r: &LoadReport, quantile: f64, ttfb: bool) -> f64 {
    let h = if ttfb { &r.ttfb_us } else { &r.latency_us };
    h.value_at_quantile(quantile) as f64
}

fn main() {
    let round_secs = env_num("BENCH_ROUND_SECS", 5);
    let rounds = env_num("BENCH_ROUNDS", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let sim = spawn(
        &[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--models",
            "gpt-4o-mini",
            "--completion-tokens",
            "16",
        ],
        false,
    );
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n[providers.sim]\nbase_url = \"{}\"\n[routes.chat-default]\ntargets = [{{ provider = \"sim\", model = \"gpt-4o-mini\" }}]\n",
        sim.base_url
    );
    let config_path =
        std::env::temp_dir().join(format!("switchyard-bench-{}.toml", std::process::id()));
    std::fs::File::create(&config_path)
        .and_then(|mut f| f.write_all(config.as_bytes()))
        .expect("write config");
    // Logging at info, as in production: one JSON line per request (to /dev/null).
    let gateway = spawn(
        &[
            "serve",
            "--config",
            config_path.to_str().expect("utf-8 path"),
        ],
        true,
    );
    let gw_pid = gateway.child.id();
    let rss_start = rss_kib(gw_pid);

    let mut rows = Vec::new();
    runtime.block_on(async {
        // Warm up pools and caches on both paths.
        drive(&sim.base_url, "gpt-4o-mini", None, 16, 2, 0.0).await;
        drive(&gateway.base_url, "chat-default", None, 16, 2, 0.0).await;

        let scenarios: [(&str, Option<f64>, usize, f64); 3] = [
            ("1,000 req/s steady, non-stream", Some(1000.0), 256, 0.0),
            (
                "200 req/s steady, streaming (16 chunks)",
                Some(200.0),
                256,
                1.0,
            ),
            ("saturation, 32 concurrent, non-stream", None, 32, 0.0),
        ];
        for (name, rate, concurrency, stream_share) in scenarios {
            let (mut direct, mut through) = (None, None);
            for _ in 0..rounds {
                merge(
                    &mut direct,
                    drive(
                        &sim.base_url,
                        "gpt-4o-mini",
                        rate,
                        concurrency,
                        round_secs,
                        stream_share,
                    )
                    .await,
                );
                merge(
                    &mut through,
                    drive(
                        &gateway.base_url,
                        "chat-default",
                        rate,
                        concurrency,
                        round_secs,
                        stream_share,
                    )
                    .await,
                );
            }
            let (direct, gateway) = (direct.expect("rounds > 0"), through.expect("rounds > 0"));
            eprintln!("done: {name}");
            rows.push(Row {
                name: name.to_owned(),
                direct,
                gateway,
            });
        }
    });

    let gateway_requests: u64 = rows.iter().map(|r| r.gateway.sent).sum::<u64>();
    let rss_end = rss_kib(gw_pid);

    let mut out = String::new();
    out.push_str("| scenario | path | req/s | ok | p50 µs | p95 µs | p99 µs |\n|---|---|---:|---:|---:|---:|---:|\n");
    for row in &rows {
        let ttfb = row.name.contains("streaming");
        for (path, r) in [("direct", &row.direct), ("gateway", &row.gateway)] {
            out.push_str(&format!(
                "| {} | {}{} | {:.0} | {:.4}% | {:.0} | {:.0} | {:.0} |\n",
                row.name,
                path,
                if ttfb { " (first byte)" } else { "" },
                r.throughput(),
                r.success_ratio() * 100.0,
                q(r, 0.50, ttfb),
                q(r, 0.95, ttfb),
                q(r, 0.99, ttfb)
            ));
        }
    }
    out.push_str("\n| scenario | added p50 µs | added p95 µs | added p99 µs | throughput ratio (gateway/direct) |\n|---|---:|---:|---:|---:|\n");
    for row in &rows {
        let ttfb = row.name.contains("streaming");
        let add = |quantile| q(&row.gateway, quantile, ttfb) - q(&row.direct, quantile, ttfb);
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2} |\n",
            row.name,
            add(0.50),
            add(0.95),
            add(0.99),
            row.gateway.throughput() / row.direct.throughput().max(1e-9)
        ));
    }
    out.push_str(&format!(
        "\nGateway RSS: {:.1} MiB at start, {:.1} MiB after {} requests through it.\n",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        gateway_requests
    ));
    println!("{out}");
    let _ = std::fs::create_dir_all("target");
    let _ = std::fs::write("target/bench-overhead.md", &out);
    let _ = std::fs::remove_file(&config_path);
}
