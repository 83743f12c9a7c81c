//! Shared harness for the gateway's integration tests: simulators and a
//! gateway in-process on loopback with ephemeral ports, and a raw HTTP client
//! that can read a response frame by frame.
#![allow(
    dead_code,
    reason = "a harness shared by test crates, each using a subset"
)]

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use switchyard::config::Config;
use switchyard::server::Gateway;
use switchyard::sim::{Behavior, SimConfig, SimHandle, Simulator};

pub const LOOPBACK: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

/// A behaviour that answers every request with `code`.
pub fn failing(code: u16) -> Behavior {
    Behavior {
        status_rates: vec![(code, 1.0)],
        ..Behavior::default()
    }
}

/// Sends a non-stream chat request in the background.
pub fn spawn_chat(gw: &Gateway) -> tokio::task::JoinHandle<Reply> {
    spawn_chat_request(gw, false)
}

/// Sends a chat request (streamed or not) in the background; the reply is
/// read whole.
pub fn spawn_chat_request(gw: &Gateway, stream: bool) -> tokio::task::JoinHandle<Reply> {
    let url = format!("{}/chat/completions", gw.base_url());
    tokio::spawn(async move {
        call(
            &client(),
            Method::POST,
            &url,
            chat_body(stream).to_string(),
            &[],
        )
        .await
    })
}

pub async fn sim(name: &str) -> SimHandle {
    sim_with(name, Behavior::default()).await
}

pub async fn sim_with(name: &str, behavior: Behavior) -> SimHandle {
    Simulator::start(
        SimConfig {
            name: name.to_owned(),
            behavior,
            ..SimConfig::default()
        },
        SocketAddr::from(LOOPBACK),
    )
    .await
    .expect("start simulator")
}

/// Config text for a route `chat-default` over the given upstream base URLs
/// (providers p0, p1, ... each serving model `gpt-4o`), plus `extra` TOML
/// appended verbatim (policy overrides).
pub fn config_text(upstreams: &[&str], extra: &str) -> String {
    let listen = "[server]\nlisten = \"127.0.0.1:0\"\nauth = \"none\"\n";
    let mut text = String::new();
    if extra.contains("[server]\n") {
        text.push_str(&extra.replace("[server]\n", listen));
    } else {
        text.push_str(listen);
        text.push_str(extra);
    }
    text.push('\n');
    for (i, url) in upstreams.iter().enumerate() {
        text.push_str(&format!(
            "[providers.p{i}]\nbase_url = \"{url}\"\nregion = \"r{i}\"\n"
        ));
    }
    let targets: Vec<String> = (0..upstreams.len())
        .map(|i| format!("{{ provider = \"p{i}\", model = \"gpt-4o\" }}"))
        .collect();
    text.push_str(&format!(
        "[routes.chat-default]\ntargets = [{}]\n",
        targets.join(", ")
    ));
    let emb: Vec<String> = (0..upstreams.len())
        .map(|i| format!("{{ provider = \"p{i}\", model = \"text-embedding-3-small\" }}"))
        .collect();
    text.push_str(&format!("[routes.embed]\ntargets = [{}]\n", emb.join(", ")));
    text
}

/// Fast policy for tests: small backoffs so retries do not slow the suite.
pub const FAST: &str = r#"
[defaults.retry]
max_attempts_per_target = 2
base_backoff = "5ms"
max_backoff = "20ms"
max_retry_after = "2s"
[defaults.timeouts]
connect = "1s"
first_byte = "5s"
idle = "5s"
total = "20s"
"#;

pub async fn gateway(upstreams: &[&SimHandle], extra: &str) -> Gateway {
    let urls: Vec<String> = upstreams.iter().map(|s| s.base_url()).collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    gateway_from_text(&config_text(&refs, extra)).await
}

/// [`gateway`] with stream continuation off on `chat-default`: for tests
/// about the cut itself on a route with more than one target.
pub async fn gateway_resume_off(upstreams: &[&SimHandle], extra: &str) -> Gateway {
    let urls: Vec<String> = upstreams.iter().map(|s| s.base_url()).collect();
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let text = config_text(&refs, extra).replace(
        "[routes.chat-default]\n",
        "[routes.chat-default]\nresume = \"off\"\n",
    );
    gateway_from_text(&text).await
}

pub async fn gateway_from_text(text: &str) -> Gateway {
    gateway_with_env(text, |_| None).await
}

/// Tests run without virtual keys unless their config asks for them.
pub fn without_auth_unless_set(text: &str) -> String {
    if text.contains("\nauth = ") {
        text.to_owned()
    } else if text.contains("[server]\n") {
        text.replacen("[server]\n", "[server]\nauth = \"none\"\n", 1)
    } else {
        format!("[server]\nauth = \"none\"\n{text}")
    }
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the OpenAI error shape and returns (message, type, code).
    pub fn openai_error(&self) -> (String, String, String) {
        let v = self.json();
        let e = &v["error"];
        assert!(e.is_object(), "not an OpenAI error: {v}");
        let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
        assert!(!s("message").is_empty(), "error without message: {v}");
        (s("message"), s("type"), s("code"))
    }
}

pub async fn send(
    client: &TestClient,
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> http::Response<Incoming> {
    let mut builder = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    client
        .request(builder.body(Full::new(body.into())).unwrap())
        .await
        .expect("request failed")
}

pub async fn call(
    client: &TestClient,
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Reply {
    let response = send(client, method, url, body, headers).await;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("read body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The gateway's `/metrics` text (no admin key: tests leave it unset).
pub async fn metrics_text(gw: &Gateway) -> String {
    call(
        &client(),
        Method::GET,
        &format!("http://{}/metrics", gw.addr()),
        "",
        &[],
    )
    .await
    .text()
}

pub async fn chat(client: &TestClient, gw: &Gateway, body: serde_json::Value) -> Reply {
    call(
        client,
        Method::POST,
        &format!("{}/chat/completions", gw.base_url()),
        body.to_string(),
        &[],
    )
    .await
}

pub fn chat_body(stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "chat-default",
        "messages": [{"role": "user", "content": "hello"}],
        "stream": stream,
        "temperature": 0.25
    })
}

/// Splits an SSE body into the `data:` payloads of its events.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .collect()
}

/// Concatenated `delta.content` of an SSE chat stream.
pub fn sse_content(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

/// Waits (bounded) for a condition that another task will make true.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Python with the official `openai`, `openai-agents` and `anthropic` SDKs: `SWITCHYARD_PYTHON`
/// (set by `.ci/run`), or `.venv`, created here on first use.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_PYTHON") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join(".venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import openai, anthropic, agents"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let ok = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "-r"])
                .arg(root.join("tests/python/requirements.txt"))
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "could not install the official SDKs into {}",
            venv.display()
        );
    }
    python
}

/// A gateway whose config resolves `api_key_env` / pool `env` names with `env`.
pub async fn gateway_with_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Gateway {
    let text = &without_auth_unless_set(text);
    let config = Config::from_toml(text, env).unwrap_or_else(|e| panic!("config:\n{e}\n{text}"));
    Gateway::start(config).await.expect("start gateway")
}

/// A simulator that accepts only `keys` as upstream API keys.
pub async fn sim_accepting(name: &str, keys: &[&str]) -> SimHandle {
    Simulator::start(
        SimConfig {
            name: name.to_owned(),
            accepted_keys: Some(keys.iter().map(|k| (*k).to_owned()).collect()),
            ..SimConfig::default()
        },
        SocketAddr::from(LOOPBACK),
    )
    .await
    .expect("start simulator")
}

/// Runs `tests/python/NAME.py BASE_URL` (an official SDK driving the
/// gateway), asserts it succeeded, and returns the JSON it printed.
pub async fn run_python_client(name: &str, base_url: String) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/python/{name}.py"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python()).arg(script).arg(base_url).output()
    })
    .await
    .expect("python task")
    .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("python printed JSON")
}

/// Completion tokens of the continuation tests' simulators.
pub const TOKENS: u32 = 60;

/// `tok0 tok1 … tok{n-1} `: the simulator's deterministic answer.
pub fn answer(n: u32) -> String {
    (0..n).map(|i| format!("tok{i} ")).collect()
}

/// A simulator answering [`TOKENS`] tokens, with `tweak` applied.
pub async fn sim60(name: &str, tweak: impl FnOnce(&mut Behavior)) -> SimHandle {
    let mut behavior = Behavior {
        completion_tokens: TOKENS,
        ..Behavior::default()
    };
    tweak(&mut behavior);
    sim_with(name, behavior).await
}

/// Where each request a simulator received picked up a partial answer.
pub fn continuation_of(sim: &SimHandle) -> Vec<Option<String>> {
    sim.requests().into_iter().map(|r| r.continuation).collect()
}

const PG_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Runs statements as the server's admin, on a plain pool (`Store::connect`
/// would create tables in `postgres`).
async fn postgres_admin(statements: &[String]) {
    let admin = sqlx::PgPool::connect(&format!("{PG_SERVER}/postgres"))
        .await
        .expect("PostgreSQL must run on 127.0.0.1:5432 (see .ci/run)");
    for statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .execute(&admin)
            .await
            .expect("an admin statement");
    }
}

/// A new, empty PostgreSQL database `NAME_PID` on 127.0.0.1:5432 (trust
/// auth; `.ci/run` starts the server), dropped first if a run left it;
/// returns its URL.
pub async fn fresh_postgres(name: &str) -> String {
    let database = format!("{name}_{}", std::process::id());
    postgres_admin(&[
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        format!("CREATE DATABASE {database}"),
    ])
    .await;
    format!("{PG_SERVER}/{database}")
}

/// Drops a database [`fresh_postgres`] made, cutting its connections.
pub async fn drop_postgres(url: &str) {
    let database = url.rsplit('/').next().unwrap_or_default();
    postgres_admin(&[format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")]).await;
}

/// The newest request-log row with `outcome`, after flushing `gw`'s log
/// into the store at `url`.
pub async fn logged_row(gw: &Gateway, url: &str, outcome: &str) -> switchyard::store::RequestRow {
    gw.state()
        .request_log
        .get()
        .expect("the request log is on")
        .flush()
        .await;
    let store = switchyard::store::Store::connect(url, Duration::from_secs(5))
        .await
        .expect("the store");
    let rows = store
        .query_requests(&switchyard::store::RequestQuery::newest(2))
        .await
        .expect("query the request log");
    rows.into_iter()
        .find(|r| r.outcome == outcome)
        .unwrap_or_else(|| panic!("no {outcome} row in the request log"))
}
