//! Hostile traffic against the gateway (issue #12): what a healthy client
//! sees (success, latency) and what the gateway holds (RSS, open files)
//! with nothing else going on and then during each attack, in one run:
//!
//! - **key spray**: well-formed random `sy-` keys, each with a fresh lookup
//!   prefix, from 253 loopback addresses at once, while the healthy client
//!   keeps its (cached) key and fresh, never-seen legitimate keys are used
//!   for the first time in the middle of it;
//! - **slow readers**: clients that start long streams and never read
//!   (receive buffer 4 KiB), until the gateway drops them;
//! - **huge SSE line**: a primary upstream that answers every stream with
//!   one endless line and no newline (the gateway must cut it at 1 MiB and
//!   fail over, not grow a buffer);
//! - **10,000 concurrent streams** against healthy upstreams with the
//!   gateway's open-file limit at 4,096: the connections beyond capacity
//!   are refused with a 503, the rest complete, no breaker opens; then the
//!   same load with the machine's limit, for the memory per stream.
//!
//! Run: `cargo bench --bench hostile` (about 2 minutes). The simulator and
//! the gateway are separate processes; the load and the attacks run here,
//! on the same two cores: absolute latencies include that, so the figure
//! that matters is the healthy client's latency during an attack against
//! its latency in the quiet phase of the same run.
//!
//! Environment knobs: BENCH_PHASE_SECS (default 10), BENCH_STREAMS
//! (default 10000), BENCH_NOFILE (the constrained limit, default 4096),
//! BENCH_SPRAY_RATE (sprayed keys a second, default 2000).

mod common;

use common::{create_key, env_num, rss_kib, spawn, spawn_bin, write_config, Proc};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard::loadgen::{self, Live, LoadReport, LoadSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a response read by [`exchange`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Status(u16),
    /// A 200 stream that ended with `[DONE]`.
    StreamDone,
    /// A 200 stream without `[DONE]` (cut or closed early).
    StreamIncomplete,
    ConnectFailed,
    Broken,
}

/// Bytes of a response read at most (a stream of 16 tokens is ~4 KiB).
const READ_LIMIT: usize = 1 << 20;

/// One HTTP/1.1 request on its own connection (`Connection: close`), from
/// `source` when given; the answer is read to its end within `within`.
async fn exchange(
    to: SocketAddr,
    source: Option<Ipv4Addr>,
    request: &[u8],
    within: Duration,
) -> Answer {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(ip) = source {
        if socket.bind(SocketAddr::from((ip, 0))).is_err() {
            return Answer::ConnectFailed;
        }
    }
    let Ok(Ok(mut tcp)) = tokio::time::timeout(within, socket.connect(to)).await else {
        return Answer::ConnectFailed;
    };
    let read = async {
        tcp.write_all(request).await.ok()?;
        let mut answer = Vec::with_capacity(4096);
        let mut chunk = [0u8; 16 << 10];
        while answer.len() < READ_LIMIT {
            match tcp.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(_) if !answer.is_empty() => break,
                Err(_) => return None,
            }
        }
        Some(answer)
    };
    let Ok(Some(answer)) = tokio::time::timeout(within, read).await else {
        return Answer::Broken;
    };
    let status = answer
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(200) if memchr::memmem::find(&answer, b"text/event-stream").is_some() => {
            if memchr::memmem::find(&answer, b"data: [DONE]").is_some() {
                Answer::StreamDone
            } else {
                Answer::StreamIncomplete
            }
        }
        Some(code) => Answer::Status(code),
        None => Answer::Broken,
    }
}

fn chat_request(host: SocketAddr, model: &str, key: Option<&str>, stream: bool) -> Vec<u8> {
    let body = format!(
        "{{\"model\":\"{model}\",\"stream\":{stream},\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}"
    );
    let auth = key.map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n{auth}content-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The gateway's peak RSS and open files while a phase runs.
#[derive(Default)]
struct Held {
    rss_kib_max: AtomicU64,
    fds_max: AtomicU64,
}

fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Samples `pid` every 100 ms until `stop`.
fn watch(pid: u32, held: Arc<Held>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            held.rss_kib_max.fetch_max(rss_kib(pid), Ordering::Relaxed);
            held.fds_max.fetch_max(open_files(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The healthy client: 200 req/s of non-stream chat with a cached key.
async fn healthy(base_url: &str, key: &str, secs: u64) -> LoadReport {
    let spec = LoadSpec {
        base_url: base_url.to_owned(),
        model: "chat".to_owned(),
        rate: Some(200.0),
        concurrency: 16,
        duration: Duration::from_secs(secs),
        request_timeout: Duration::from_secs(10),
        api_key: Some(key.to_owned()),
        ..LoadSpec::default()
    };
    loadgen::run(&spec, Arc::new(Live::default())).await
}

/// One phase's row: the healthy client's figures, the gateway's peaks and
/// what the attack got back.
struct Row {
    phase: &'static str,
    healthy: LoadReport,
    rss_kib_max: u64,
    fds_max: u64,
    /// Open files once the phase is over: what the gateway let go of.
    fds_after: u64,
    attack: String,
}

fn print_rows(rows: &[Row]) {
    println!("\n| phase | healthy ok | healthy p50 µs | p99 µs | max µs | gateway RSS max MiB | open files max → after | the attack got |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let h = &r.healthy;
        println!(
            "| {} | {}/{} | {} | {} | {} | {:.1} | {} → {} | {} |",
            r.phase,
            h.ok,
            h.sent,
            h.latency_us.value_at_quantile(0.5),
            h.latency_us.value_at_quantile(0.99),
            h.latency_us.max(),
            r.rss_kib_max as f64 / 1024.0,
            r.fds_max,
            r.fds_after,
            r.attack
        );
    }
}

fn tally(answers: &BTreeMap<Answer, u64>) -> String {
    answers
        .iter()
        .map(|(a, n)| match a {
            Answer::Status(code) => format!("{code}: {n}"),
            other => format!("{other:?}: {n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `attack` beside the healthy client for `secs` and measures both.
async fn phase<F>(name: &'static str, gateway: &Proc, key: &str, secs: u64, attack: F) -> Row
where
    F: std::future::Future<Output = String> + Send + 'static,
{
    let pid = gateway.child.id();
    let held = Arc::new(Held::default());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(pid, held.clone(), stop.clone());
    let attack = tokio::spawn(attack);
    let healthy = healthy(&gateway.base_url, key, secs).await;
    let attack = attack.await.expect("attack task");
    stop.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    Row {
        phase: name,
        healthy,
        rss_kib_max: held.rss_kib_max.load(Ordering::Relaxed),
        fds_max: held.fds_max.load(Ordering::Relaxed),
        fds_after: open_files(pid),
        attack,
    }
}

fn addr_of(base_url: &str) -> SocketAddr {
    base_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .parse()
        .expect("gateway address")
}

/// Random well-formed keys from 127.0.0.2–254 at `rate` a second (64
/// clients), for `secs`; `fresh` legitimate keys are each used once, spread
/// over the phase.
async fn key_spray(gateway: SocketAddr, rate: u64, secs: u64, fresh: Vec<String>) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    let answers = Arc::new(std::sync::Mutex::new(BTreeMap::<Answer, u64>::new()));
    let mut workers = Vec::new();
    for worker in 0..64u32 {
        let answers = answers.clone();
        let mut pace = tokio::time::interval(Duration::from_secs(64) / rate as u32);
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        workers.push(tokio::spawn(async move {
            let mut n = worker;
            while Instant::now() < until {
                pace.tick().await;
                let source = Ipv4Addr::new(127, 0, 0, 2 + (n % 253) as u8);
                n += 64;
                let key = switchyard::keys::secret::Secret::generate();
                let request = chat_request(gateway, "chat", Some(key.expose()), false);
                let answer =
                    exchange(gateway, Some(source), &request, Duration::from_secs(5)).await;
                *answers.lock().unwrap().entry(answer).or_default() += 1;
            }
        }));
    }
    let gap = Duration::from_secs(secs) / (fresh.len() as u32 + 1);
    let mut fresh_ok = 0;
    let mut fresh_worst = Duration::ZERO;
    for key in &fresh {
        tokio::time::sleep(gap).await;
        let started = Instant::now();
        let request = chat_request(gateway, "chat", Some(key), false);
        if exchange(gateway, None, &request, Duration::from_secs(10)).await == Answer::Status(200) {
            fresh_ok += 1;
        }
        fresh_worst = fresh_worst.max(started.elapsed());
    }
    for w in workers {
        w.await.expect("spray worker");
    }
    let answers = answers.lock().unwrap();
    let sprayed: u64 = answers.values().sum();
    format!(
        "{sprayed} sprayed keys ({:.0}/s: {}); fresh legitimate keys {fresh_ok}/{} served, slowest {} ms",
        sprayed as f64 / secs as f64,
        tally(&answers),
        fresh.len(),
        fresh_worst.as_millis()
    )
}

/// `count` clients start a long stream each and never read; held for `secs`.
async fn slow_readers(
    gateway: SocketAddr,
    pid: u32,
    key: String,
    count: usize,
    secs: u64,
) -> String {
    let mut held = Vec::with_capacity(count);
    let request = chat_request(gateway, "long", Some(&key), true);
    for _ in 0..count {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let Ok(mut tcp) = socket.connect(gateway).await else {
            continue;
        };
        if tcp.write_all(&request).await.is_ok() {
            held.push(tcp);
        }
    }
    let opened = held.len();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    // Still open on this side: the gateway's open files now say whether
    // it dropped them (after `idle` without a read).
    let gateway_files = open_files(pid);
    drop(held);
    format!("{opened} streams started and never read; with all still open here, the gateway held {gateway_files} files")
}

/// 32 clients at a time ask the route whose primary sends one endless line.
async fn huge_lines(gateway: SocketAddr, key: String, secs: u64, sent: Arc<AtomicU64>) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    let answers = Arc::new(std::sync::Mutex::new(BTreeMap::<Answer, u64>::new()));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let answers = answers.clone();
        let request = chat_request(gateway, "huge", Some(&key), true);
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let answer = exchange(gateway, None, &request, Duration::from_secs(10)).await;
                *answers.lock().unwrap().entry(answer).or_default() += 1;
            }
        }));
    }
    for w in workers {
        w.await.expect("huge-line worker");
    }
    let answers = answers.lock().unwrap();
    let requests: u64 = answers.values().sum::<u64>().max(1);
    format!(
        "{} ({:.1} MiB written by the endless upstream per request, loopback socket buffers included)",
        tally(&answers),
        sent.load(Ordering::Relaxed) as f64 / requests as f64 / (1 << 20) as f64
    )
}

/// An upstream whose every answer is a 200 event stream of one line that
/// never ends: `data: {"choices":[{"delta":{"content":"xxxx…`, written as
/// fast as the gateway reads it, up to 64 MiB a connection.
async fn endless_line_upstream(sent: Arc<AtomicU64>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 16 << 10];
                let mut seen = Vec::new();
                while memchr::memmem::find(&seen, b"\r\n\r\n").is_none() && seen.len() < 1 << 20 {
                    match tcp.read(&mut head).await {
                        Ok(n) if n > 0 => seen.extend_from_slice(&head[..n]),
                        _ => return,
                    }
                }
                let start = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\ndata: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"";
                if tcp.write_all(start).await.is_err() {
                    return;
                }
                let filler = vec![b'x'; 64 << 10];
                for _ in 0..1024 {
                    if tcp.write_all(&filler).await.is_err() {
                        return;
                    }
                    sent.fetch_add(filler.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    addr
}

/// How many of `count` streams, opened at `per_sec`, completed, were
/// refused, or failed, against a gateway; its peak RSS and open files.
async fn many_streams(
    gateway: &Proc,
    count: usize,
    per_sec: u64,
) -> (BTreeMap<Answer, u64>, u64, u64) {
    let to = addr_of(&gateway.base_url);
    let pid = gateway.child.id();
    let held = Arc::new(Held::default());
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(pid, held.clone(), stop.clone());
    let request = Arc::new(chat_request(to, "paced", None, true));
    let gap = Duration::from_secs(1) / per_sec as u32;
    let mut streams = Vec::with_capacity(count);
    let mut tick = tokio::time::interval(gap);
    for _ in 0..count {
        tick.tick().await;
        let request = request.clone();
        streams.push(tokio::spawn(async move {
            exchange(to, None, &request, Duration::from_secs(60)).await
        }));
    }
    let mut answers = BTreeMap::new();
    for s in streams {
        *answers.entry(s.await.expect("stream task")).or_default() += 1;
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher");
    (
        answers,
        held.rss_kib_max.load(Ordering::Relaxed),
        held.fds_max.load(Ordering::Relaxed),
    )
}

/// The breaker transitions and open breakers `/metrics` reports.
async fn breaker_figures(gateway: SocketAddr) -> (u64, u64) {
    let request = format!("GET /metrics HTTP/1.1\r\nhost: {gateway}\r\nconnection: close\r\n\r\n");
    let mut tcp = tokio::net::TcpStream::connect(gateway)
        .await
        .expect("metrics");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.expect("read");
    let sum = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    };
    let open = text
        .lines()
        .filter(|l| l.starts_with("switchyard_breaker_state{"))
        .filter(|l| l.ends_with(" 2"))
        .count() as u64;
    (sum("switchyard_breaker_transitions_total"), open)
}

fn main() {
    let secs = env_num("BENCH_PHASE_SECS", 10);
    let stream_count = env_num("BENCH_STREAMS", 10_000) as usize;
    let nofile = env_num("BENCH_NOFILE", 4096);
    let spray_rate = env_num("BENCH_SPRAY_RATE", 2000);
    // The 10,000 streams need that many sockets here too.
    let limit = rlimit::increase_nofile_limit(u64::MAX).expect("raise the open-file limit");
    println!("bench process open-file limit: {limit}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let sim = spawn_sim(&["--completion-tokens", "16"]);
    // Answers far longer than any slow reader takes.
    let long_sim = spawn_sim(&["--completion-tokens", "200000"]);
    // 10 tokens at 1 per second: a stream lasts 10 s, so they pile up.
    let paced_sim = spawn_sim(&["--completion-tokens", "10", "--tokens-per-sec", "1"]);
    let endless_sent = Arc::new(AtomicU64::new(0));
    let endless = runtime.block_on(endless_line_upstream(endless_sent.clone()));

    let dir = std::env::temp_dir().join(format!("switchyard-bench-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = write_config(
        "hostile",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nwrite_timeout = \"3s\"\n\
             [store]\nurl = \"sqlite://{db}\"\n\
             [defaults.timeouts]\nidle = \"3s\"\n\
             [providers.sim]\nbase_url = \"{sim}\"\n\
             [providers.long]\nbase_url = \"{long}\"\n\
             [providers.endless]\nbase_url = \"http://{endless}/v1\"\n\
             [routes.chat]\ntargets = [{{ provider = \"sim\", model = \"gpt-4o-mini\" }}]\n\
             [routes.long]\ntargets = [{{ provider = \"long\", model = \"gpt-4o-mini\" }}]\n\
             [routes.huge]\ntargets = [{{ provider = \"endless\", model = \"gpt-4o-mini\" }}, {{ provider = \"sim\", model = \"gpt-4o-mini\" }}]\n\
             # Keep sending to the endless line: the point is the framer's bound.\n\
             breaker = {{ consecutive_failures = 1000000, min_requests = 1000000 }}\n\
             budget = {{ retry_ratio = 1.0 }}\n",
            db = dir.join("keys.db").display(),
            sim = sim.base_url,
            long = long_sim.base_url,
        ),
    );
    let key = create_key(&config, "healthy", &[]);
    let attacker = create_key(&config, "attacker", &[]);
    let fresh: Vec<String> = (0..20)
        .map(|i| create_key(&config, &format!("fresh-{i}"), &[]))
        .collect();
    // The slow readers and the huge-line clients hold a valid key without
    // limits: a key's own limits would stop them before the gateway's do.
    let gateway = spawn(
        &["serve", "--config", config.to_str().expect("utf-8")],
        false,
    );
    let to = addr_of(&gateway.base_url);

    let mut rows = Vec::new();
    runtime.block_on(async {
        // Warm the key cache and the upstream pool.
        let _ = healthy(&gateway.base_url, &key, 1).await;
        rows.push(phase("quiet", &gateway, &key, secs, async { String::from("—") }).await);
        let spray = if spray_rate >= 100_000 {
            "key spray (flat out)"
        } else {
            "key spray"
        };
        rows.push(
            phase(
                spray,
                &gateway,
                &key,
                secs,
                key_spray(to, spray_rate, secs, fresh),
            )
            .await,
        );
        rows.push(
            phase(
                "slow readers (1,000)",
                &gateway,
                &key,
                secs,
                slow_readers(to, gateway.child.id(), attacker.clone(), 1000, secs),
            )
            .await,
        );
        let sent = endless_sent.clone();
        rows.push(
            phase(
                "huge SSE line (32 at a time)",
                &gateway,
                &key,
                secs,
                huge_lines(to, attacker.clone(), secs, sent),
            )
            .await,
        );
        rows.push(
            phase("quiet again", &gateway, &key, secs, async {
                String::from("—")
            })
            .await,
        );
    });
    println!("\n## Hostile clients and upstreams: a healthy client beside each attack ({secs} s per phase)");
    print_rows(&rows);
    drop(gateway);

    // Past the key spray the routes below need no keys.
    let streams_config = write_config(
        "streams",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n\
             [providers.paced]\nbase_url = \"{}\"\n\
             [routes.paced]\ntargets = [{{ provider = \"paced\", model = \"gpt-4o-mini\" }}]\n",
            paced_sim.base_url
        ),
    );
    println!("\n## {stream_count} concurrent streams (10 s each, opened at 2,000/s)");
    println!("| gateway open-file limit | completed | refused (503 overloaded) | other | breaker transitions | open breakers | RSS max MiB | open files max |");
    println!("|---|---:|---:|---|---:|---:|---:|---:|");
    for nofile in [Some(nofile), None] {
        let gateway = match nofile {
            Some(n) => spawn_limited(&streams_config, n),
            None => spawn(
                &["serve", "--config", streams_config.to_str().expect("utf-8")],
                false,
            ),
        };
        let (answers, rss, fds) = runtime.block_on(many_streams(&gateway, stream_count, 2000));
        let (transitions, open) = runtime.block_on(breaker_figures(addr_of(&gateway.base_url)));
        let done = answers.get(&Answer::StreamDone).copied().unwrap_or(0);
        let refused = answers.get(&Answer::Status(503)).copied().unwrap_or(0);
        let other: BTreeMap<Answer, u64> = answers
            .into_iter()
            .filter(|(a, _)| !matches!(a, Answer::StreamDone | Answer::Status(503)))
            .collect();
        println!(
            "| {} | {done} | {refused} | {} | {transitions} | {open} | {:.1} | {fds} |",
            nofile.map_or(format!("{limit} (this machine's)"), |n| n.to_string()),
            if other.is_empty() {
                "0".to_owned()
            } else {
                tally(&other)
            },
            rss as f64 / 1024.0,
        );
    }
}

/// A simulator serving `gpt-4o-mini` with `flags` besides.
fn spawn_sim(flags: &[&str]) -> Proc {
    let mut args = vec!["sim", "--listen", "127.0.0.1:0", "--models", "gpt-4o-mini"];
    args.extend_from_slice(flags);
    spawn(&args, false)
}

/// The gateway under `prlimit --nofile=N:N`: it sizes `max_connections`
/// from that limit at start.
fn spawn_limited(config: &std::path::Path, nofile: u64) -> Proc {
    let limit = format!("--nofile={nofile}:{nofile}");
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let ok = Command::new("prlimit").arg("--version").output().is_ok();
    assert!(ok, "prlimit (util-linux) is needed for the constrained run");
    spawn_bin(
        "prlimit",
        &[
            &limit,
            bin,
            "serve",
            "--config",
            config.to_str().expect("utf-8"),
        ],
        false,
        None,
    )
}
