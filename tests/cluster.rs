//! A fleet as an operator runs one: three `switchyard serve` processes
//! sharing the machine's Redis (127.0.0.1:6379) and, for virtual keys,
//! PostgreSQL (127.0.0.1:5432) behind HAProxy (Debian's
//! package, which `.ci/run` installs; started here from a generated config
//! that health-checks `/readyz`), under steady load from the load driver.
//! Simulators run in this process. Each test uses Redis keys of its own.
//! Assertions are on what the clients and the simulators counted; waits
//! are bounded.

mod common;

use common::*;
use http::Method;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use switchyard::loadgen::{self, LoadReport, LoadSpec};
use switchyard::sim::{Behavior, SimHandle};

const ADMIN_ENV: &str = "SWITCHYARD_CLUSTER_TEST_ADMIN";
const ADMIN_KEY: &str = "cluster-test-admin-0123456789";

/// One replica process; killed when dropped.
struct Replica {
    child: Child,
    /// `http://127.0.0.1:PORT`
    origin: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Replica {
    fn port(&self) -> &str {
        self.origin.rsplit(':').next().unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    async fn targets(&self) -> serde_json::Value {
        let url = format!("{}/admin/targets", self.origin);
        call(&client(), Method::GET, &url, "", &[]).await.json()
    }

    /// The primary's (`p0`'s) entry in `/admin/targets`.
    async fn primary(&self) -> serde_json::Value {
        let targets = self.targets().await;
        targets["targets"]
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|t| t["target"].as_str().is_some_and(|k| k.starts_with("p0/")))
            })
            .cloned()
            .unwrap_or_else(|| panic!("no primary in {targets}"))
    }
}

struct Balancer {
    child: Child,
    port: u16,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchyard-cluster-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The replicas' shared config: two targets, shared health through Redis
/// under a prefix of this test's own, a drain that outlasts the balancer's
/// health checks.
fn fleet_config(sims: &[&SimHandle], breaker: &str) -> String {
    let prefix = format!("sy-cluster-{}", uuid::Uuid::new_v4().simple());
    let urls: Vec<String> = sims.iter().map(|s| s.base_url()).collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let extra = format!(
        r#"[server]
watch_config = false
drain_delay = "1s"
drain_timeout = "10s"
[defaults.retry]
max_attempts_per_target = 1
max_retry_after = "60s"
[defaults.timeouts]
first_byte = "5s"
total = "10s"
[defaults.breaker]
min_requests = 100000
{breaker}
[limits]
redis_url = "redis://127.0.0.1:6379"
key_prefix = "{prefix}"
[cluster]
sync_interval = "50ms"
"#
    );
    config_text(&refs, &extra)
}

fn start_replica(config: &Path, name: &str) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(config)
        .env("SWITCHYARD_WORKER_THREADS", "1")
        .env(ADMIN_ENV, ADMIN_KEY)
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn switchyard serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let base = line.split_whitespace().last().expect("listening line");
    let origin = base
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .to_owned();
    assert!(origin.starts_with("http://127.0.0.1:"), "{name}: {line}");
    Replica { child, origin }
}

/// Three replicas, each with its own `[cluster] replica` name.
fn start_fleet(dir: &Path, config: &str) -> Vec<Replica> {
    (0..3)
        .map(|i| {
            let path = dir.join(format!("replica-{i}.toml"));
            let text = config.replace("[cluster]\n", &format!("[cluster]\nreplica = \"r{i}\"\n"));
            std::fs::write(&path, text).unwrap();
            start_replica(&path, &format!("r{i}"))
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// HAProxy as a plain L7 balancer: round robin, `/readyz` checked every
/// 100 ms (down after two failures), and a request that found no server or
/// lost its connection before any answer re-sent to another replica.
fn haproxy_config(port: u16, replicas: &[Replica]) -> String {
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, r)| format!("  server r{i} 127.0.0.1:{} check\n", r.port()))
        .collect();
    format!(
        r"global
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
frontend fleet
  bind 127.0.0.1:{port}
  default_backend replicas
backend replicas
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 100ms fall 2 rise 1
{servers}"
    )
}

async fn start_balancer(dir: &Path, replicas: &[Replica]) -> Balancer {
    let Ok(haproxy) = which("haproxy") else {
        panic!("haproxy is not installed: `apt-get install haproxy` (.ci/run does)");
    };
    let port = free_port();
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, haproxy_config(port, replicas)).unwrap();
    let child = Command::new(haproxy)
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn haproxy");
    let balancer = Balancer { child, port };
    let url = format!("http://127.0.0.1:{port}/healthz");
    for _ in 0..200 {
        if let Ok(response) = try_get(&url).await {
            if response == http::StatusCode::OK {
                return balancer;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("haproxy did not start on port {port}");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .ok_or(())
}

async fn try_get(url: &str) -> Result<http::StatusCode, ()> {
    let request = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|_| ())?;
    let response = tokio::time::timeout(Duration::from_secs(1), client().request(request))
        .await
        .map_err(|_| ())?
        .map_err(|_| ())?;
    Ok(response.status())
}

fn load(balancer: &Balancer, rate: f64, duration: Duration) -> LoadSpec {
    LoadSpec {
        base_url: format!("http://127.0.0.1:{}/v1", balancer.port),
        rate: Some(rate),
        concurrency: 16,
        duration,
        max_requests: (rate * duration.as_secs_f64()) as u64 + 1,
        request_timeout: Duration::from_secs(10),
        ..LoadSpec::default()
    }
}

async fn run_load(spec: LoadSpec) -> LoadReport {
    loadgen::run(&spec, Arc::new(loadgen::Live::default())).await
}

fn failures(report: &LoadReport) -> String {
    format!(
        "{} of {} ok; by status {:?}, transport {}, refused {}, timeouts {}",
        report.ok,
        report.sent,
        report.by_status,
        report.transport_errors,
        report.refused,
        report.timeouts
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_or_drained_under_load_costs_the_clients_nothing() {
    let upstream = sim("upstream").await;
    let backup = sim("backup").await;
    let dir = scratch("loss");
    let fleet = start_fleet(&dir, &fleet_config(&[&upstream, &backup], ""));
    let balancer = start_balancer(&dir, &fleet).await;

    let spec = load(&balancer, 150.0, Duration::from_secs(4));
    let killed = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        fleet[0].signal("KILL");
    };
    let (report, ()) = tokio::join!(run_load(spec.clone()), killed);
    assert!(report.sent > 300, "{}", failures(&report));
    assert!(
        report.success_ratio() >= 0.999,
        "kill -9 of one replica: {}",
        failures(&report)
    );

    let drained = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        fleet[1].signal("TERM");
    };
    let (report, ()) = tokio::join!(run_load(spec), drained);
    assert_eq!(
        report.ok,
        report.sent,
        "SIGTERM of one replica: {}",
        failures(&report)
    );
    drop(balancer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_stops_sending_to_a_failing_primary_together() {
    let primary = sim("primary").await;
    let backup = sim("backup").await;
    let dir = scratch("health");
    let threshold = 5;
    let fleet = start_fleet(
        &dir,
        &fleet_config(
            &[&primary, &backup],
            &format!("consecutive_failures = {threshold}\nopen_base = \"60s\"\nopen_max = \"60s\""),
        ),
    );
    let balancer = start_balancer(&dir, &fleet).await;
    // Warm: every replica has served through the primary.
    let report = run_load(load(&balancer, 100.0, Duration::from_secs(1))).await;
    assert_eq!(report.ok, report.sent, "{}", failures(&report));

    primary.set_behavior(failing(500));
    primary.reset_stats();
    let spec = LoadSpec {
        concurrency: 4,
        ..load(&balancer, 60.0, Duration::from_secs(3))
    };
    let report = run_load(spec.clone()).await;
    assert_eq!(report.ok, report.sent, "failed over: {}", failures(&report));
    for replica in &fleet {
        let target = replica.primary().await;
        assert_eq!(target["state"], "open", "{target}");
    }
    let failed = primary.stats().requests;
    // Alone, each replica would need `threshold` failures of its own (15 in
    // all); shared, the fleet's streak trips them all: each other replica
    // trips on its next failure's count, plus what was in flight.
    let bound = threshold + (fleet.len() as u64 - 1) + spec.concurrency as u64;
    assert!(
        failed >= threshold && failed <= bound,
        "the failing primary got {failed} requests (at most {bound} expected)"
    );
    eprintln!("a failing primary cost the fleet {failed} failed attempts (consecutive_failures = {threshold})");
    // Each names the replica whose verdict it follows (several may have
    // tripped on the fleet's count at once).
    for replica in &fleet {
        let by = replica.primary().await["opened_by"]["replica"].clone();
        assert!(
            ["r0", "r1", "r2"].contains(&by.as_str().unwrap_or("")),
            "{by}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_seen_by_one_replica_stops_all_three() {
    let primary = sim("primary").await;
    let backup = sim("backup").await;
    let dir = scratch("retry-after");
    let fleet = start_fleet(
        &dir,
        &fleet_config(&[&primary, &backup], "consecutive_failures = 0"),
    );
    let balancer = start_balancer(&dir, &fleet).await;
    primary.set_behavior(Behavior {
        status_rates: vec![(429, 1.0)],
        retry_after: Some(Duration::from_secs(30)),
        ..Behavior::default()
    });
    // One request through one replica meets the 429.
    let reply = call(
        &client(),
        Method::POST,
        &format!("{}/v1/chat/completions", fleet[2].origin),
        chat_body(false).to_string(),
        &[],
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK, "failed over");
    assert_eq!(primary.stats().requests, 1);
    for replica in &fleet {
        let mut cooling = serde_json::Value::Null;
        for _ in 0..100 {
            cooling = replica.primary().await["cooling_for_seconds"].clone();
            if cooling.is_number() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(cooling.as_f64().is_some_and(|s| s > 20.0), "{cooling}");
    }
    let report = run_load(load(&balancer, 100.0, Duration::from_secs(1))).await;
    assert_eq!(report.ok, report.sent, "{}", failures(&report));
    assert_eq!(primary.stats().requests, 1, "no replica sent it another");
}

/// A virtual key created through `replica`'s admin API; its secret.
async fn create_key(replica: &Replica, body: &str) -> String {
    let created = call(
        &client(),
        Method::POST,
        &format!("{}/admin/keys", replica.origin),
        body.to_owned(),
        &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
    )
    .await;
    assert_eq!(
        created.status,
        http::StatusCode::CREATED,
        "{}",
        created.text()
    );
    created.json()["secret"].as_str().unwrap().to_owned()
}

async fn as_key(url: &str, secret: &str, headers: &[(&str, &str)]) -> Reply {
    let bearer = format!("Bearer {secret}");
    let mut all = vec![("authorization", bearer.as_str())];
    all.extend_from_slice(headers);
    call(
        &client(),
        Method::POST,
        url,
        chat_body(false).to_string(),
        &all,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_limits_and_idempotency_keys_hold_across_the_fleet() {
    let upstream = sim("upstream").await;
    let backup = sim("backup").await;
    let dir = scratch("keys");
    let store = fresh_postgres("switchyard_cluster_keys").await;
    let config = fleet_config(&[&upstream, &backup], "")
        .replace("auth = \"none\"", "auth = \"keys\"")
        + &format!(
            "[store]\nurl = \"{store}\"\n[admin]\nkey_env = \"{ADMIN_ENV}\"\n[keys]\ncache_ttl = \"1s\"\n\
             [prices.\"gpt-4o\"]\ninput_per_million = 400.0\noutput_per_million = 0.0\n"
        );
    let fleet = start_fleet(&dir, &config);
    let balancer = start_balancer(&dir, &fleet).await;
    let admin = format!("Bearer {ADMIN_KEY}");
    let secret = create_key(
        &fleet[0],
        r#"{"name":"fleet","service":"svc","requests_per_minute":20}"#,
    )
    .await;

    // Requests per minute are the fleet's: 20 in all, whichever replica.
    let through = format!("http://127.0.0.1:{}/v1/chat/completions", balancer.port);
    let mut ok = 0;
    for _ in 0..30 {
        let reply = as_key(&through, &secret, &[]).await;
        match reply.status {
            http::StatusCode::OK => ok += 1,
            http::StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}: {}", reply.text()),
        }
    }
    assert_eq!(ok, 20, "the key's 20 requests/min across three replicas");

    // A second key for the rest: the first is out of requests.
    let secret = create_key(&fleet[1], r#"{"name":"second","service":"svc"}"#).await;

    // One Idempotency-Key, two replicas: one upstream call.
    upstream.reset_stats();
    let headers = [("idempotency-key", "fleet-order-1")];
    let url = |r: &Replica| format!("{}/v1/chat/completions", r.origin);
    let first = as_key(&url(&fleet[1]), &secret, &headers).await;
    let second = as_key(&url(&fleet[2]), &secret, &headers).await;
    assert_eq!(first.status, http::StatusCode::OK, "{}", first.text());
    assert_eq!(second.status, http::StatusCode::OK, "{}", second.text());
    assert_eq!(second.body, first.body);
    assert_eq!(
        second.header("x-switchyard-idempotent-replay"),
        Some("true")
    );
    assert_eq!(upstream.stats().requests, 1);

    // Revoked through one replica, refused by the others within cache_ttl.
    for replica in &fleet[1..] {
        assert_eq!(
            as_key(&url(replica), &secret, &[]).await.status,
            http::StatusCode::OK
        );
    }
    let revoked = call(
        &client(),
        Method::POST,
        &format!("{}/admin/keys/second/revoke", fleet[0].origin),
        "",
        &[("authorization", admin.as_str())],
    )
    .await;
    assert!(revoked.status.is_success(), "{}", revoked.text());
    for replica in &fleet[1..] {
        let mut status = http::StatusCode::OK;
        for _ in 0..100 {
            status = as_key(&url(replica), &secret, &[]).await.status;
            if status == http::StatusCode::UNAUTHORIZED {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(status, http::StatusCode::UNAUTHORIZED);
    }

    // A daily budget of 5 requests' cost (25 prompt tokens at $400/M is
    // $0.01 each), spent across the fleet: every replica refuses next,
    // though none spent it alone.
    let secret = create_key(
        &fleet[2],
        r#"{"name":"budgeted","service":"svc","daily_budget_usd":0.05}"#,
    )
    .await;
    for i in 0..5 {
        let reply = as_key(&url(&fleet[i % 3]), &secret, &[]).await;
        assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.text());
    }
    for replica in &fleet {
        let mut last = None;
        for _ in 0..100 {
            let reply = as_key(&url(replica), &secret, &[]).await;
            if reply.status == http::StatusCode::TOO_MANY_REQUESTS {
                last = Some(reply);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = last.expect("the fleet's spend reaches every replica");
        assert_eq!(
            refused.openai_error().1,
            "insufficient_quota",
            "{}",
            refused.text()
        );
    }
    drop(fleet);
    drop_postgres(&store).await;
}
