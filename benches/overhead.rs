//! Gateway overhead benchmark: the same load sent straight to a zero-delay
//! simulator and through the gateway, interleaved in one run, so the
//! difference is what the gateway adds.
//!
//! Besides gateway vs direct, it compares gateway configurations against
//! each other: a virtual key check, a Redis-shared rate limit, and an
//! Anthropic upstream (request and response translated) against an
//! OpenAI-format one.
//!
//! Run: `cargo bench --bench overhead` (about 4 minutes; needs Redis on
//! 127.0.0.1:6379). Both the simulator
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
use switchyard::loadgen::{self, Live, LoadApi, LoadReport, LoadSpec};

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
        .env("BENCH_UPSTREAM_KEY", "bench-upstream-key")
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

/// Two ways of serving the same load; the difference is what `candidate` adds.
struct Row {
    name: String,
    labels: (&'static str, &'static str),
    base: LoadReport,
    candidate: LoadReport,
}

fn q(r: &LoadReport, quantile: f64, ttfb: bool) -> f64 {
    let h = if ttfb { &r.ttfb_us } else { &r.latency_us };
    h.value_at_quantile(quantile) as f64
}

/// A name, baseline and candidate, and the load: rate (None: closed loop),
/// concurrency, share of streaming requests.
type Comparison = (&'static str, Endpoint, Endpoint, Option<f64>, usize, f64);

/// One side of a comparison: where the load goes and as whom.
#[derive(Clone)]
struct Endpoint {
    label: &'static str,
    base_url: String,
    model: &'static str,
    api_key: Option<String>,
    api: LoadApi,
}

async fn drive_at(
    to: &Endpoint,
    rate: Option<f64>,
    concurrency: usize,
    secs: u64,
    stream_share: f64,
) -> LoadReport {
    let spec = LoadSpec {
        base_url: to.base_url.clone(),
        model: to.model.to_owned(),
        rate,
        concurrency,
        duration: Duration::from_secs(secs),
        stream_share,
        request_timeout: Duration::from_secs(10),
        api_key: to.api_key.clone(),
        api: to.api,
        ..LoadSpec::default()
    };
    loadgen::run(&spec, Arc::new(Live::default())).await
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "switchyard-bench-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("write config");
    path
}

/// `keys create` with the bench's config; returns the secret.
fn create_key(config: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec![
        "keys",
        "create",
        "bench",
        "--service",
        "bench",
        "--json",
        "--config",
    ];
    args.push(config.to_str().expect("utf-8 path"));
    args.extend_from_slice(extra);
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(&args)
        .env("BENCH_UPSTREAM_KEY", "bench-upstream-key")
        .output()
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["secret"].as_str().expect("secret").to_owned()
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
    // About 1 KB of answer (160 tokens), for the translation comparison.
    let sim_1k = spawn(
        &[
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--models",
            "gpt-4o-mini,claude-sonnet-4-5",
            "--completion-tokens",
            "160",
        ],
        false,
    );
    let routes = format!(
        "[providers.sim]\nbase_url = \"{}\"\n\
         [providers.sim1k]\nbase_url = \"{}\"\n\
         [providers.claude1k]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"BENCH_UPSTREAM_KEY\"\n\
         [routes.chat-default]\ntargets = [{{ provider = \"sim\", model = \"gpt-4o-mini\" }}]\n\
         [routes.chat-1k]\ntargets = [{{ provider = \"sim1k\", model = \"gpt-4o-mini\" }}]\n\
         [routes.chat-1k-anthropic]\ntargets = [{{ provider = \"claude1k\", model = \"claude-sonnet-4-5\" }}]\n\
         [providers.sim1kchat]\nbase_url = \"{}\"\nresponses = \"chat\"\n\
         [routes.resp-1k-native]\ntargets = [{{ provider = \"sim1k\", model = \"gpt-4o-mini\" }}]\n\
         [routes.resp-1k-chat]\ntargets = [{{ provider = \"sim1kchat\", model = \"gpt-4o-mini\" }}]\n",
        sim.base_url,
        sim_1k.base_url,
        sim_1k.base_url.trim_end_matches("/v1"),
        sim_1k.base_url,
    );
    let dir = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = |name: &str| format!("[store]\nurl = \"sqlite://{}\"\n", dir.join(name).display());
    let anon_config = write_config(
        "anon",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n{routes}"),
    );
    let keyed_config = write_config(
        "keyed",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}{routes}",
            store("keyed.db")
        ),
    );
    let redis_config = write_config(
        "redis",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}[limits]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"switchyard-bench-{}\"\n{routes}",
            store("redis.db"),
            std::process::id()
        ),
    );
    let key = create_key(&keyed_config, &[]);
    // A limit far above the load: every request pays the Redis round trip.
    let limited_key = create_key(&redis_config, &["--rpm", "100000000"]);
    let serve = |config: &std::path::Path| {
        spawn(
            &["serve", "--config", config.to_str().expect("utf-8 path")],
            true,
        )
    };
    // Logging at info, as in production: one JSON line per request (to /dev/null).
    let gateway = serve(&anon_config);
    let keyed = serve(&keyed_config);
    let redis = serve(&redis_config);
    let gw_pid = gateway.child.id();
    let rss_start = rss_kib(gw_pid);

    let at = |label, base_url: &str, model, api_key: Option<&String>| Endpoint {
        label,
        base_url: base_url.to_owned(),
        model,
        api_key: api_key.cloned(),
        api: LoadApi::ChatCompletions,
    };
    let responses = |label, model| Endpoint {
        api: LoadApi::Responses,
        ..at(label, &gateway.base_url, model, None)
    };
    let direct = at("direct", &sim.base_url, "gpt-4o-mini", None);
    let through = at("gateway", &gateway.base_url, "chat-default", None);
    let comparisons: Vec<Comparison> = vec![
        (
            "1,000 req/s steady, non-stream",
            direct.clone(),
            through.clone(),
            Some(1000.0),
            256,
            0.0,
        ),
        (
            "200 req/s steady, streaming (16 chunks)",
            direct.clone(),
            through.clone(),
            Some(200.0),
            256,
            1.0,
        ),
        (
            "saturation, 32 concurrent, non-stream",
            direct,
            through.clone(),
            None,
            32,
            0.0,
        ),
        (
            "virtual key check (cached), 1,000 req/s",
            at(
                "gateway, auth none",
                &gateway.base_url,
                "chat-default",
                None,
            ),
            at(
                "gateway, virtual key",
                &keyed.base_url,
                "chat-default",
                Some(&key),
            ),
            Some(1000.0),
            256,
            0.0,
        ),
        (
            "virtual key + Redis rate limit, 1,000 req/s",
            at(
                "gateway, auth none",
                &gateway.base_url,
                "chat-default",
                None,
            ),
            at(
                "gateway, key + Redis limit",
                &redis.base_url,
                "chat-default",
                Some(&limited_key),
            ),
            Some(1000.0),
            256,
            0.0,
        ),
        (
            "Anthropic translation, ~1 KB answer, 1,000 req/s",
            at(
                "gateway → OpenAI format",
                &gateway.base_url,
                "chat-1k",
                None,
            ),
            at(
                "gateway → Anthropic (translated)",
                &gateway.base_url,
                "chat-1k-anthropic",
                None,
            ),
            Some(1000.0),
            256,
            0.0,
        ),
        (
            "Responses API, ~1 KB answer, 1,000 req/s",
            responses("gateway → native Responses", "resp-1k-native"),
            responses("gateway → chat (translated)", "resp-1k-chat"),
            Some(1000.0),
            256,
            0.0,
        ),
    ];

    let mut rows = Vec::new();
    runtime.block_on(async {
        // Warm up pools and caches on every path.
        for (_, base, candidate, ..) in &comparisons {
            drive_at(base, None, 16, 2, 0.0).await;
            drive_at(candidate, None, 16, 2, 0.0).await;
        }
        for (name, base, candidate, rate, concurrency, stream_share) in comparisons {
            let (mut a, mut b) = (None, None);
            for _ in 0..rounds {
                merge(
                    &mut a,
                    drive_at(&base, rate, concurrency, round_secs, stream_share).await,
                );
                merge(
                    &mut b,
                    drive_at(&candidate, rate, concurrency, round_secs, stream_share).await,
                );
            }
            eprintln!("done: {name}");
            rows.push(Row {
                name: name.to_owned(),
                labels: (base.label, candidate.label),
                base: a.expect("rounds > 0"),
                candidate: b.expect("rounds > 0"),
            });
        }
    });

    let gateway_requests: u64 = rows
        .iter()
        .filter(|r| r.labels.1 == "gateway")
        .map(|r| r.candidate.sent)
        .sum::<u64>();
    let rss_end = rss_kib(gw_pid);

    let mut out = String::new();
    out.push_str("| scenario | path | req/s | ok | p50 µs | p95 µs | p99 µs |\n|---|---|---:|---:|---:|---:|---:|\n");
    for row in &rows {
        let ttfb = row.name.contains("streaming");
        for (path, r) in [(row.labels.0, &row.base), (row.labels.1, &row.candidate)] {
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
    out.push_str("\n| scenario | compared | added p50 µs | added p95 µs | added p99 µs | throughput ratio |\n|---|---|---:|---:|---:|---:|\n");
    for row in &rows {
        let ttfb = row.name.contains("streaming");
        let add = |quantile| q(&row.candidate, quantile, ttfb) - q(&row.base, quantile, ttfb);
        out.push_str(&format!(
            "| {} | {} vs {} | {:.0} | {:.0} | {:.0} | {:.2} |\n",
            row.name,
            row.labels.1,
            row.labels.0,
            add(0.50),
            add(0.95),
            add(0.99),
            row.candidate.throughput() / row.base.throughput().max(1e-9)
        ));
    }
    out.push_str(&format!(
        "\nGateway (auth none) RSS: {:.1} MiB at start, {:.1} MiB after {} direct-comparison requests and the baselines of the others.\n",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        gateway_requests
    ));
    println!("{out}");
    let _ = std::fs::create_dir_all("target");
    let _ = std::fs::write("target/bench-overhead.md", &out);
    for path in [&anon_config, &keyed_config, &redis_config] {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
