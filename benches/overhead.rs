//! Gateway overhead benchmark: the same load sent straight to a zero-delay
//! simulator, through nginx as a plain reverse proxy (the floor a proxy
//! hop costs), and through the gateway, interleaved round by round in one
//! run, so the differences are what each hop adds.
//!
//! Besides those, it compares gateway configurations against each other: a
//! virtual key check, a Redis-shared rate limit, an Anthropic upstream
//! (request and response translated) against an OpenAI-format one, and the
//! Responses API native against translated. With `BENCH_BASELINE_BIN` it
//! also runs another build of the gateway (say, the previous release) on
//! the same rounds: a regression check in one run.
//!
//! Run: `cargo bench --bench overhead` (about 6 minutes; needs Redis on
//! 127.0.0.1:6379; the nginx path needs the `nginx` binary and is skipped
//! with a note without it). The simulator, nginx and the gateway run as
//! separate processes; the load driver runs here. Everything shares this
//! machine's cores, so absolute latencies include the driver's own cost;
//! the *differences* are the proxies'. CPU time per request is read from
//! each proxy's `/proc/<pid>/task/*/schedstat` (nanoseconds on a CPU),
//! the robust figure on shared cores.
//!
//! Environment knobs: BENCH_ROUND_SECS (default 5), BENCH_ROUNDS (default 3),
//! BENCH_GATEWAY_LOG (the gateway's RUST_LOG, default info),
//! BENCH_PIN_CPU (pin each proxy, one worker thread or process, to that
//! CPU: the figures then compare one core against one core),
//! BENCH_BASELINE_BIN (another switchyard binary to compare against).

mod common;

use common::{
    command, cpu_ns, create_key, env_num, process_tree, rss_kib, spawn, spawn_bin, write_config,
    Proc,
};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use switchyard::loadgen::{self, Live, LoadApi, LoadReport, LoadSpec};

/// nginx as a plain reverse proxy in front of `upstream`: one worker,
/// `proxy_buffering off`, keepalive to the upstream, no access log. `None`
/// (with a note) when the nginx binary is missing.
fn spawn_nginx(upstream: &str, dir: &std::path::Path, pin: Option<&str>) -> Option<Proc> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches("/v1");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).expect("nginx dir");
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {pid};\nerror_log {err} error;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n\
           fastcgi_temp_path {tmp}/fastcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n  scgi_temp_path {tmp}/scgi;\n\
           keepalive_requests 1000000;\n\
           upstream sim {{ server {upstream}; keepalive 256; keepalive_requests 1000000; }}\n\
           server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    location / {{\n\
               proxy_pass http://sim;\n      proxy_http_version 1.1;\n\
               proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
        pid = prefix.join("nginx.pid").display(),
        err = prefix.join("logs/error.log").display(),
        tmp = prefix.display(),
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx conf");
    let child = command(nginx, pin)
        .args(["-p", prefix.to_str()?, "-c", conf_path.to_str()?])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nginx");
    let addr = format!("127.0.0.1:{port}");
    // Owned at once, so it is killed and reaped on every path out.
    let proc = Proc {
        child,
        base_url: format!("http://{addr}/v1"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(&addr).is_ok() {
            return Some(proc);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nginx did not start listening on {addr}");
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

fn q(r: &LoadReport, quantile: f64, ttfb: bool) -> f64 {
    let h = if ttfb { &r.ttfb_us } else { &r.latency_us };
    h.value_at_quantile(quantile) as f64
}

/// One path the load can take: where it goes, as whom, and which
/// processes' CPU time it costs (empty: not metered).
#[derive(Clone)]
struct Endpoint {
    label: &'static str,
    base_url: String,
    model: &'static str,
    api_key: Option<String>,
    api: LoadApi,
    metered: Vec<u32>,
}

/// The same load over several paths, interleaved round by round; `compare`
/// lists (candidate, reference) indexes into `paths` for the "added" table.
struct Scenario {
    name: &'static str,
    paths: Vec<Endpoint>,
    rate: Option<f64>,
    concurrency: usize,
    stream_share: f64,
    compare: Vec<(usize, usize)>,
}

impl Scenario {
    fn streams(&self) -> bool {
        self.stream_share > 0.0
    }
}

/// What one path did over every round of its scenario.
struct Measured {
    report: LoadReport,
    cpu_ns: u64,
}

impl Measured {
    /// CPU µs per request, if the path is metered.
    fn cpu_per_request(&self, path: &Endpoint) -> Option<f64> {
        (!path.metered.is_empty() && self.report.sent > 0)
            .then(|| self.cpu_ns as f64 / 1000.0 / self.report.sent as f64)
    }
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

/// The paths every proxy-floor scenario compares: direct, nginx (if
/// present), the gateway, the baseline build (if given). Returns the paths
/// and the comparisons: each proxy vs direct, the gateway vs nginx and vs
/// the baseline.
fn floor_paths(
    direct: &Endpoint,
    nginx: Option<&Endpoint>,
    gateway: &Endpoint,
    baseline: Option<&Endpoint>,
) -> (Vec<Endpoint>, Vec<(usize, usize)>) {
    let mut paths = vec![direct.clone()];
    let mut compare = Vec::new();
    let nginx_at = nginx.map(|n| {
        paths.push(n.clone());
        compare.push((paths.len() - 1, 0));
        paths.len() - 1
    });
    paths.push(gateway.clone());
    let gateway_at = paths.len() - 1;
    compare.insert(0, (gateway_at, 0));
    if let Some(n) = nginx_at {
        compare.push((gateway_at, n));
    }
    if let Some(b) = baseline {
        paths.push(b.clone());
        compare.push((gateway_at, paths.len() - 1));
    }
    (paths, compare)
}

fn main() {
    let round_secs = env_num("BENCH_ROUND_SECS", 5);
    let rounds = env_num("BENCH_ROUNDS", 3);
    let pin = std::env::var("BENCH_PIN_CPU").ok();
    let pin = pin.as_deref();
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
    let chat_route = format!(
        "[providers.sim]\nbase_url = \"{}\"\n\
         [routes.chat-default]\ntargets = [{{ provider = \"sim\", model = \"gpt-4o-mini\" }}]\n",
        sim.base_url,
    );
    let routes = format!(
        "{chat_route}[providers.sim1k]\nbase_url = \"{}\"\n\
         [providers.claude1k]\nkind = \"anthropic\"\nbase_url = \"{}\"\napi_key_env = \"BENCH_UPSTREAM_KEY\"\n\
         [routes.chat-1k]\ntargets = [{{ provider = \"sim1k\", model = \"gpt-4o-mini\" }}]\n\
         [routes.chat-1k-anthropic]\ntargets = [{{ provider = \"claude1k\", model = \"claude-sonnet-4-5\" }}]\n\
         [providers.sim1kchat]\nbase_url = \"{}\"\nresponses = \"chat\"\n\
         [routes.resp-1k-native]\ntargets = [{{ provider = \"sim1k\", model = \"gpt-4o-mini\" }}]\n\
         [routes.resp-1k-chat]\ntargets = [{{ provider = \"sim1kchat\", model = \"gpt-4o-mini\" }}]\n",
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
    // Only settings every earlier build knows, for the baseline binary.
    let baseline_config = write_config(
        "baseline",
        &format!("[server]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n{chat_route}"),
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
    let key = create_key(&keyed_config, "bench", &[]);
    // A limit far above the load: every request pays the Redis round trip.
    let limited_key = create_key(&redis_config, "bench", &["--rpm", "100000000"]);
    let serve_args = |config: &std::path::Path| {
        vec![
            "serve".to_owned(),
            "--config".to_owned(),
            config.to_str().expect("utf-8 path").to_owned(),
        ]
    };
    let serve = |config: &std::path::Path| {
        let args = serve_args(config);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_bin(env!("CARGO_BIN_EXE_switchyard"), &args, true, pin)
    };
    // Logging at info, as in production: one JSON line per request (to /dev/null).
    let gateway = serve(&anon_config);
    let keyed = serve(&keyed_config);
    let redis = serve(&redis_config);
    let nginx = spawn_nginx(&sim.base_url, &dir, pin);
    if nginx.is_none() {
        eprintln!("note: nginx not found; the nginx reference path is skipped");
    }
    let baseline_bin = std::env::var("BENCH_BASELINE_BIN").ok();
    let baseline = baseline_bin.as_deref().map(|bin| {
        let args = serve_args(&baseline_config);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_bin(bin, &args, true, pin)
    });
    let gw_pid = gateway.child.id();
    let rss_start = rss_kib(gw_pid);

    let at = |label, proc: &Proc, model, api_key: Option<&String>| Endpoint {
        label,
        base_url: proc.base_url.clone(),
        model,
        api_key: api_key.cloned(),
        api: LoadApi::ChatCompletions,
        metered: vec![proc.child.id()],
    };
    let responses = |label, model| Endpoint {
        api: LoadApi::Responses,
        ..at(label, &gateway, model, None)
    };
    let direct = Endpoint {
        metered: Vec::new(),
        ..at("direct", &sim, "gpt-4o-mini", None)
    };
    let through = at("gateway", &gateway, "chat-default", None);
    let via_nginx = nginx.as_ref().map(|n| {
        // The master forks its worker right after binding: wait for it.
        let mut tree = process_tree(n.child.id());
        for _ in 0..100 {
            if tree.len() > 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            tree = process_tree(n.child.id());
        }
        Endpoint {
            metered: tree,
            ..at("nginx", n, "gpt-4o-mini", None)
        }
    });
    let via_baseline = baseline
        .as_ref()
        .map(|b| at("baseline build", b, "chat-default", None));
    let floor = |name, rate, concurrency, stream_share| {
        let (paths, compare) =
            floor_paths(&direct, via_nginx.as_ref(), &through, via_baseline.as_ref());
        Scenario {
            name,
            paths,
            rate,
            concurrency,
            stream_share,
            compare,
        }
    };
    let pair = |name, a: Endpoint, b: Endpoint| Scenario {
        name,
        paths: vec![a, b],
        rate: Some(1000.0),
        concurrency: 256,
        stream_share: 0.0,
        compare: vec![(1, 0)],
    };
    let scenarios = vec![
        floor("1,000 req/s steady, non-stream", Some(1000.0), 256, 0.0),
        floor(
            "200 req/s steady, streaming (16 chunks)",
            Some(200.0),
            256,
            1.0,
        ),
        floor("saturation, 32 concurrent, non-stream", None, 32, 0.0),
        floor("saturation, 128 concurrent, non-stream", None, 128, 0.0),
        floor(
            "saturation, 32 concurrent, streaming (16 chunks)",
            None,
            32,
            1.0,
        ),
        pair(
            "virtual key check (cached), 1,000 req/s",
            at("gateway, auth none", &gateway, "chat-default", None),
            at("gateway, virtual key", &keyed, "chat-default", Some(&key)),
        ),
        pair(
            "virtual key + Redis rate limit, 1,000 req/s",
            at("gateway, auth none", &gateway, "chat-default", None),
            at(
                "gateway, key + Redis limit",
                &redis,
                "chat-default",
                Some(&limited_key),
            ),
        ),
        pair(
            "Anthropic translation, ~1 KB answer, 1,000 req/s",
            at("gateway → OpenAI format", &gateway, "chat-1k", None),
            at(
                "gateway → Anthropic (translated)",
                &gateway,
                "chat-1k-anthropic",
                None,
            ),
        ),
        pair(
            "Responses API, ~1 KB answer, 1,000 req/s",
            responses("gateway → native Responses", "resp-1k-native"),
            responses("gateway → chat (translated)", "resp-1k-chat"),
        ),
    ];

    let measured = runtime.block_on(async {
        // Warm up pools and caches on every path.
        for scenario in &scenarios {
            for path in &scenario.paths {
                drive_at(path, None, 16, 2, scenario.stream_share).await;
            }
        }
        let mut all = Vec::with_capacity(scenarios.len());
        for scenario in &scenarios {
            let mut acc: Vec<(Option<LoadReport>, u64)> =
                scenario.paths.iter().map(|_| (None, 0)).collect();
            for _ in 0..rounds {
                for (path, (report, cpu)) in scenario.paths.iter().zip(acc.iter_mut()) {
                    let before = cpu_ns(&path.metered);
                    let r = drive_at(
                        path,
                        scenario.rate,
                        scenario.concurrency,
                        round_secs,
                        scenario.stream_share,
                    )
                    .await;
                    *cpu += cpu_ns(&path.metered).saturating_sub(before);
                    merge(report, r);
                }
            }
            eprintln!("done: {}", scenario.name);
            all.push(
                acc.into_iter()
                    .map(|(report, cpu_ns)| Measured {
                        report: report.expect("rounds > 0"),
                        cpu_ns,
                    })
                    .collect::<Vec<_>>(),
            );
        }
        all
    });

    let gateway_requests: u64 = scenarios
        .iter()
        .zip(&measured)
        .flat_map(|(s, m)| s.paths.iter().zip(m))
        .filter(|(p, _)| p.label == "gateway")
        .map(|(_, m)| m.report.sent)
        .sum();
    let rss_end = rss_kib(gw_pid);
    let rss_nginx = via_nginx
        .as_ref()
        .map(|n| n.metered.iter().map(|pid| rss_kib(*pid)).sum::<u64>());

    let mut out = String::new();
    out.push_str(&format!(
        "Proxies {}; {rounds} rounds of {round_secs} s per path, interleaved.\n\n",
        match pin {
            Some(cpu) => format!("pinned to CPU {cpu}, one worker each"),
            None => "unpinned (gateway: a thread per core; nginx: one worker)".to_owned(),
        }
    ));
    out.push_str("| scenario | path | req/s | ok | p50 µs | p95 µs | p99 µs | CPU µs/req |\n|---|---|---:|---:|---:|---:|---:|---:|\n");
    for (scenario, results) in scenarios.iter().zip(&measured) {
        let ttfb = scenario.streams();
        for (path, m) in scenario.paths.iter().zip(results) {
            let r = &m.report;
            out.push_str(&format!(
                "| {} | {}{} | {:.0} | {:.4}% | {:.0} | {:.0} | {:.0} | {} |\n",
                scenario.name,
                path.label,
                if ttfb { " (first byte)" } else { "" },
                r.throughput(),
                r.success_ratio() * 100.0,
                q(r, 0.50, ttfb),
                q(r, 0.95, ttfb),
                q(r, 0.99, ttfb),
                m.cpu_per_request(path)
                    .map_or("".to_owned(), |c| format!("{c:.1}")),
            ));
        }
    }
    out.push_str("\n| scenario | compared | added p50 µs | added p95 µs | added p99 µs | throughput ratio | CPU ratio |\n|---|---|---:|---:|---:|---:|---:|\n");
    for (scenario, results) in scenarios.iter().zip(&measured) {
        let ttfb = scenario.streams();
        for &(c, r) in &scenario.compare {
            let (cand, refr) = (&results[c], &results[r]);
            let add = |quantile| q(&cand.report, quantile, ttfb) - q(&refr.report, quantile, ttfb);
            let cpu = match (
                cand.cpu_per_request(&scenario.paths[c]),
                refr.cpu_per_request(&scenario.paths[r]),
            ) {
                (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                _ => String::new(),
            };
            out.push_str(&format!(
                "| {} | {} vs {} | {:.0} | {:.0} | {:.0} | {:.2} | {cpu} |\n",
                scenario.name,
                scenario.paths[c].label,
                scenario.paths[r].label,
                add(0.50),
                add(0.95),
                add(0.99),
                cand.report.throughput() / refr.report.throughput().max(1e-9),
            ));
        }
    }
    out.push_str(&format!(
        "\nGateway (auth none) RSS: {:.1} MiB at start, {:.1} MiB after {} requests on the proxy-floor scenarios and the baselines of the others.\n",
        rss_start as f64 / 1024.0,
        rss_end as f64 / 1024.0,
        gateway_requests
    ));
    if let Some(kib) = rss_nginx {
        out.push_str(&format!(
            "nginx RSS (master + worker): {:.1} MiB at the end.\n",
            kib as f64 / 1024.0
        ));
    }
    println!("{out}");
    let _ = std::fs::create_dir_all("target");
    let _ = std::fs::write("target/bench-overhead.md", &out);
    for path in [&anon_config, &keyed_config, &redis_config, &baseline_config] {
        let _ = std::fs::remove_file(path);
    }
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}
