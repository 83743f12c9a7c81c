//! The real binary with virtual keys: no secret (virtual key, admin key,
//! upstream key) appears in anything the gateway writes, and a key's rate
//! limit holds across two gateway processes sharing one Redis.

mod common;

use common::*;
use http::{Method, StatusCode};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const ADMIN_KEY: &str = "admin-secret-7f3a9c1e5b2d4f60";
const UPSTREAM_KEY: &str = "sk-upstream-secret-9d8c7b6a5f4e";

struct Process {
    child: Child,
    base: String,
    stderr: std::thread::JoinHandle<String>,
}

impl Process {
    /// SIGTERM, then everything it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.stderr.join().unwrap_or_default()
    }
}

fn switchyard(args: &[&str], config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env("SWITCHYARD_ADMIN_KEY", ADMIN_KEY)
        .env("UPSTREAM_KEY", UPSTREAM_KEY)
        .env("SWITCHYARD_WORKER_THREADS", "1")
        .env("RUST_LOG", "debug");
    command
}

fn serve(config: &Path) -> Process {
    let mut child = switchyard(&["serve"], config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .last()
        .expect("listening line")
        .to_owned();
    Process {
        child,
        base,
        stderr,
    }
}

/// `keys create` through the CLI; returns the printed secret.
fn create_key(config: &Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["keys", "create", name, "--service", "test", "--json"];
    args.extend_from_slice(extra);
    let out = switchyard(&args, config).output().expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["secret"].as_str().expect("secret").to_owned()
}

fn workdir(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("switchyard-security-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config_file(dir: &Path, upstream: &str, extra: &str) -> PathBuf {
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nauth = \"keys\"\n{FAST}\n\
             [admin]\nkey_env = \"SWITCHYARD_ADMIN_KEY\"\n\
             [store]\nurl = \"sqlite://{}\"\n\
             [request_log]\nenabled = true\n\
             [providers.p0]\nbase_url = \"{upstream}\"\napi_key_env = \"UPSTREAM_KEY\"\n\
             [routes.chat-default]\ntargets = [{{ provider = \"p0\", model = \"gpt-4o\" }}]\n{extra}",
            dir.join("store.db").display()
        ),
    )
    .unwrap();
    path
}

async fn chat_with(base: &str, bearer: &str) -> Reply {
    let auth = format!("Bearer {bearer}");
    call(
        &client(),
        Method::POST,
        &format!("{base}/chat/completions"),
        chat_body(false).to_string(),
        &[("authorization", &auth)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_logs_metrics_errors_or_the_store() {
    let upstream = sim_accepting("upstream", &[UPSTREAM_KEY]).await;
    let dir = workdir("scan");
    let config = config_file(&dir, &upstream.base_url(), "");
    let secret = create_key(&config, "scanned", &[]);
    let revoked = create_key(&config, "revoked", &[]);
    let status = switchyard(&["keys", "revoke", "revoked"], &config)
        .status()
        .unwrap();
    assert!(status.success());
    let gw = serve(&config);
    let root = gw.base.trim_end_matches("/v1").to_owned();
    let wrong = format!("{}X", &secret[..secret.len() - 1]);
    let mut written = String::new();

    let reply = chat_with(&gw.base, &secret).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    for (key, status) in [
        (wrong.as_str(), StatusCode::UNAUTHORIZED),
        (revoked.as_str(), StatusCode::UNAUTHORIZED),
        (ADMIN_KEY, StatusCode::UNAUTHORIZED),
    ] {
        let reply = chat_with(&gw.base, key).await;
        assert_eq!(reply.status, status);
        written += &reply.text();
    }
    // The upstream refusing our key, as an error body the client sees.
    upstream.push_script([switchyard::sim::Fault::status(401)]);
    written += &chat_with(&gw.base, &secret).await.text();
    let admin = format!("Bearer {ADMIN_KEY}");
    for path in [
        "/metrics",
        "/admin/targets",
        "/admin/stats",
        "/admin/keys",
        "/status.json",
    ] {
        let reply = call(
            &client(),
            Method::GET,
            &format!("{root}{path}"),
            "",
            &[("authorization", &admin)],
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        written += &reply.text();
    }
    let list = switchyard(&["keys", "list"], &config).output().unwrap();
    written += &String::from_utf8_lossy(&list.stdout);
    written += &gw.stop();
    for file in ["store.db", "store.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(file)) {
            written += &String::from_utf8_lossy(&bytes);
        }
    }
    assert!(
        written.contains("scanned"),
        "the scan saw the key's name: {}",
        written.len()
    );
    assert!(
        written.contains("\"request\""),
        "the scan saw request log lines"
    );
    for (what, value) in [
        ("virtual key", secret.as_str()),
        ("wrong key", wrong.as_str()),
        ("revoked key", revoked.as_str()),
        ("admin key", ADMIN_KEY),
        ("upstream key", UPSTREAM_KEY),
    ] {
        assert!(!written.contains(value), "the {what} leaked");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An upstream that answers every request with a 400 in the dialect its
/// path speaks, quoting the key it was sent (whole, and half-masked the way
/// OpenAI does), as some providers do in their error messages.
async fn key_echoing_upstream() -> String {
    use axum::http::{HeaderMap, Uri};
    async fn refuse(uri: Uri, headers: HeaderMap) -> axum::response::Response {
        let key = ["authorization", "api-key", "x-api-key", "x-goog-api-key"]
            .iter()
            .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
            .unwrap_or("none")
            .trim_start_matches("Bearer ")
            .to_owned();
        let half = format!("{}****{}", &key[..7], &key[key.len() - 4..]);
        let said = format!("Incorrect API key provided: {key} ({half}). Check https://x/{key}");
        let path = uri.path();
        let body = if path.ends_with("/v1/messages") {
            serde_json::json!({"type": "error", "error": {"type": "invalid_request_error", "message": said}})
        } else if path.contains(":generateContent") || path.contains(":streamGenerateContent") {
            serde_json::json!({"error": {"code": 400, "message": said, "status": "INVALID_ARGUMENT",
                "details": [{"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": key}]}})
        } else {
            serde_json::json!({"error": {"message": said, "type": "invalid_request_error",
                "param": key, "code": key, "echo": key}})
        };
        axum::response::Response::builder()
            .status(400)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap()
    }
    let app = axum::Router::new().fallback(refuse);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    origin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_bodies_that_echo_the_key_are_rebuilt_without_it() {
    let upstream = sim_accepting("upstream", &[UPSTREAM_KEY]).await;
    let echo = key_echoing_upstream().await;
    let dir = workdir("echo");
    let providers = format!(
        "[providers.oai]\nbase_url = \"{echo}/v1\"\napi_key_env = \"UPSTREAM_KEY\"\n\
         [providers.az]\nkind = \"azure_openai\"\nbase_url = \"{echo}\"\napi_version = \"2024-10-21\"\napi_key_env = \"UPSTREAM_KEY\"\n\
         [providers.claude]\nkind = \"anthropic\"\nbase_url = \"{echo}\"\napi_key_env = \"UPSTREAM_KEY\"\n\
         [providers.gem]\nkind = \"gemini\"\nbase_url = \"{echo}\"\napi_key_env = \"UPSTREAM_KEY\"\n\
         [routes.r-openai]\ntargets = [{{ provider = \"oai\", model = \"gpt-4o\" }}]\n\
         [routes.r-azure]\ntargets = [{{ provider = \"az\", model = \"gpt-4o\" }}]\n\
         [routes.r-anthropic]\ntargets = [{{ provider = \"claude\", model = \"claude-sonnet-4-5\" }}]\n\
         [routes.r-gemini]\ntargets = [{{ provider = \"gem\", model = \"gemini-2.5-flash\" }}]\n"
    );
    let config = config_file(&dir, &upstream.base_url(), &providers);
    let secret = create_key(&config, "echoed", &[]);
    let gw = serve(&config);
    let mut written = String::new();
    for route in ["r-openai", "r-azure", "r-anthropic", "r-gemini"] {
        for stream in [false, true] {
            let mut body = chat_body(stream);
            body["model"] = route.into();
            let reply = call(
                &client(),
                Method::POST,
                &format!("{}/chat/completions", gw.base),
                body.to_string(),
                &[("authorization", &format!("Bearer {secret}"))],
            )
            .await;
            assert_eq!(
                reply.status,
                StatusCode::BAD_REQUEST,
                "{route}: {}",
                reply.text()
            );
            let (message, kind, _) = reply.openai_error();
            assert!(
                message.contains("Incorrect API key provided"),
                "{route}: {message}"
            );
            assert_eq!(kind, "invalid_request_error", "{route}");
            assert!(
                reply.json()["error"].get("echo").is_none(),
                "{route}: rebuilt, not verbatim"
            );
            written += &reply.text();
        }
    }
    written += &gw.stop();
    for file in ["store.db", "store.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.join(file)) {
            written += &String::from_utf8_lossy(&bytes);
        }
    }
    assert!(
        written.contains("Incorrect API key provided"),
        "the scan saw the errors"
    );
    assert!(
        !written.contains(UPSTREAM_KEY),
        "the upstream key leaked: {written}"
    );
    assert!(
        !written.contains("sk-upst"),
        "a masked form of the key leaked: {written}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_limit_holds_across_two_gateways_sharing_redis() {
    let upstream = sim_accepting("upstream", &[UPSTREAM_KEY]).await;
    let dir = workdir("redis");
    let prefix = format!("switchyard-test-{}", std::process::id());
    let config = config_file(
        &dir,
        &upstream.base_url(),
        &format!("[limits]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\n"),
    );
    const LIMIT: usize = 10;
    let secret = create_key(&config, "shared", &["--rpm", "10"]);
    let a = serve(&config);
    let b = serve(&config);
    let started = std::time::Instant::now();
    let mut admitted = 0;
    let mut refused = 0;
    for i in 0..40 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        match chat_with(base, &secret).await.status {
            StatusCode::OK => admitted += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // GCRA refills one request every 60 s / LIMIT: however slowly this ran,
    // at most that many more could be admitted on top of the burst.
    let refilled = (started.elapsed().as_secs_f64() / (60.0 / LIMIT as f64)).ceil() as usize;
    assert!(admitted >= LIMIT.min(40), "{admitted} admitted");
    assert!(
        admitted <= LIMIT + refilled,
        "{admitted} admitted across both gateways, limit {LIMIT} (+{refilled} refilled)"
    );
    assert_eq!(admitted + refused, 40);
    a.stop();
    b.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
