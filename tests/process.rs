//! The real binary as an operator runs it: `serve` with a config file,
//! SIGHUP reload (valid and invalid files), SIGTERM drain, `check-config`.

mod common;

use common::*;
use http::Method;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Served {
    child: Child,
    base: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &std::path::Path) -> Served {
    serve_with_env(config, &[])
}

fn serve_with_env(config: &std::path::Path, env: &[(&str, &str)]) -> Served {
    serve_under(Command::new(env!("CARGO_BIN_EXE_switchyard")), config, env)
}

/// `serve` run by `command` (the binary itself, or a wrapper that execs it).
fn serve_under(mut command: Command, config: &std::path::Path, env: &[(&str, &str)]) -> Served {
    let mut child = command
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .env("SWITCHYARD_WORKER_THREADS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .split_whitespace()
        .last()
        .expect("listening line")
        .to_owned();
    Served { child, base }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn model_ids(base: &str) -> Vec<String> {
    let v = call(&client(), Method::GET, &format!("{base}/models"), "", &[])
        .await
        .json();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_file_and_ignores_an_invalid_one_then_sigterm_exits() {
    let upstream = sim("upstream").await;
    let dir = std::env::temp_dir().join(format!("switchyard-process-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gw.toml");
    // The file watch is off, so only SIGHUP can reload.
    let text = config_text(&[&upstream.base_url()], "[server]\nwatch_config = false\n");
    std::fs::write(&path, &text).unwrap();
    let mut gw = serve(&path);
    assert_eq!(model_ids(&gw.base).await, ["chat-default", "embed"]);

    std::fs::write(
        &path,
        text.clone() + "[routes.added]\ntargets = [{ provider = \"p0\", model = \"gpt-4o\" }]\n",
    )
    .unwrap();
    signal(&gw.child, "HUP");
    let mut reloaded = false;
    for _ in 0..200 {
        if model_ids(&gw.base).await.len() == 3 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(reloaded, "SIGHUP reloaded the config");

    std::fs::write(
        &path,
        "[routes.broken]\ntargets = [{ provider = \"ghost\", model = \"x\" }]\n",
    )
    .unwrap();
    signal(&gw.child, "HUP");
    let mut refused = false;
    for _ in 0..200 {
        let admin = call(
            &client(),
            Method::GET,
            &gw.base.replace("/v1", "/admin/targets"),
            "",
            &[],
        )
        .await
        .json();
        if admin["counters"]["config_reload_failures"] == 1 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "the invalid file was read and refused");
    let reply = call(
        &client(),
        Method::POST,
        &format!("{}/chat/completions", gw.base),
        chat_body(false).to_string(),
        &[],
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(
        model_ids(&gw.base).await.len(),
        3,
        "an invalid file keeps the running config"
    );

    signal(&gw.child, "TERM");
    let status = tokio::task::spawn_blocking(move || gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_reports_every_error_with_its_path_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("switchyard-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[providers.openai]\nbase_url = \"http://127.0.0.1:1/v1\"\n[providers.backup]\nbase_url = \"http://127.0.0.1:2/v1\"\n[routes.chat-default]\ntargets = [{ provider = \"openai\", model = \"a\" }, { provider = \"opnai\", model = \"b\" }]\n[defaults.retry]\njitter = \"lots\"\nbase_backof = \"1s\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes.chat-default.targets[1].provider: unknown provider \"opnai\" (known: backup, openai)"), "{stderr}");
    assert!(stderr.contains("defaults.retry.jitter:"), "{stderr}");
    // The unknown field is reported with the rest, at its line, with the
    // nearest known name.
    assert!(
        stderr.contains("bad.toml:9: defaults.retry.base_backof: unknown field `base_backof` (hint: did you mean `base_backoff`?)"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `openai`?"), "{stderr}");
    assert!(stderr.contains("3 error(s)"), "{stderr}");
    let ok = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml"))
        .output()
        .unwrap();
    // The demo template has placeholders for URLs: it must fail, naming them.
    assert_eq!(ok.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&ok.stderr).contains("providers.primary.base_url"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for the process to exit, for at most a minute (a guard so that a
/// hang fails the test instead of stalling it; not a timing assertion).
async fn exited(child: &mut Child) -> Option<std::process::ExitStatus> {
    for _ in 0..1200 {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    None
}

fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn readyz(base: &str) -> http::StatusCode {
    call(
        &client(),
        Method::GET,
        &base.replace("/v1", "/readyz"),
        "",
        &[],
    )
    .await
    .status
}

/// SIGTERM: `/readyz` turns 503 at once while requests (on new connections
/// too) are still served for `drain_delay`; a second SIGTERM ends the
/// process at once, long before the ten-minute delay would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_behind_a_503_readyz_and_a_second_signal_exits_at_once() {
    let upstream = sim("upstream").await;
    let dir = scratch("drain");
    let path = dir.join("gw.toml");
    let text = config_text(
        &[&upstream.base_url()],
        "[server]\nwatch_config = false\ndrain_delay = \"10m\"\ndrain_timeout = \"10m\"\n",
    );
    std::fs::write(&path, &text).unwrap();
    let mut gw = serve(&path);
    assert_eq!(readyz(&gw.base).await, http::StatusCode::OK);
    signal(&gw.child, "TERM");
    let mut draining = false;
    for _ in 0..200 {
        if readyz(&gw.base).await == http::StatusCode::SERVICE_UNAVAILABLE {
            draining = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(draining, "/readyz answers 503 after SIGTERM");
    // A fresh client: a new connection is still accepted and served.
    let reply = call(
        &client(),
        Method::POST,
        &format!("{}/chat/completions", gw.base),
        chat_body(false).to_string(),
        &[],
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK, "{}", reply.text());
    assert!(gw.child.try_wait().unwrap().is_none(), "still serving");

    signal(&gw.child, "TERM");
    let status = exited(&mut gw.child)
        .await
        .expect("a second SIGTERM ends the process");
    assert!(
        !status.success(),
        "a forced exit is not a clean one: {status:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A database that stops answering (the request log's table locked by
/// another client) cannot hold SIGTERM: every store call times out, the
/// final flush is bounded, the process exits cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_while_the_database_is_stuck() {
    use sqlx::Executor;
    let upstream = sim("upstream").await;
    let url = fresh_postgres("switchyard_stuck").await;
    let dir = scratch("stuck");
    let path = dir.join("gw.toml");
    let text = config_text(
        &[&upstream.base_url()],
        &format!(
            "[server]\nwatch_config = false\n[store]\nurl = \"{url}\"\ntimeout = \"300ms\"\n\
             [request_log]\nenabled = true\n"
        ),
    );
    std::fs::write(&path, &text).unwrap();
    let mut gw = serve(&path);
    let chat_once = || async {
        call(
            &client(),
            Method::POST,
            &format!("{}/chat/completions", gw.base),
            chat_body(false).to_string(),
            &[],
        )
        .await
        .status
    };
    assert_eq!(chat_once().await, http::StatusCode::OK);
    // Another client takes the table and keeps it.
    let holder = sqlx::PgPool::connect(&url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    tx.execute("LOCK TABLE request_log IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            chat_once().await,
            http::StatusCode::OK,
            "serving does not wait on the log"
        );
    }
    signal(&gw.child, "TERM");
    let status = exited(&mut gw.child)
        .await
        .expect("SIGTERM ends the process although the database is stuck");
    assert!(status.success(), "{status:?}");
    tx.rollback().await.unwrap();
    holder.close().await;
    drop_postgres(&url).await;
    let _ = std::fs::remove_dir_all(&dir);
}

const ADMIN_KEY: &str = "process-admin-key-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The admin listener runs on the gateway's own accept loop: a client that
/// sends half a request head and stalls is disconnected after the header
/// read timeout, an oversized head gets 431. With `auth = "none"` the admin
/// views are served there behind the admin key, and not on the main port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_the_main_ports_head_limits_and_timeouts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = sim("upstream").await;
    let dir = scratch("admin-listener");
    let path = dir.join("gw.toml");
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let text = config_text(
        &[&upstream.base_url()],
        &format!(
            "[server]\nwatch_config = false\nheader_read_timeout = \"1s\"\nmax_header_bytes = \"4KiB\"\n\
             [admin]\nkey_env = \"SY_PROCESS_ADMIN_KEY\"\nlisten = \"{admin_addr}\"\n"
        ),
    );
    std::fs::write(&path, &text).unwrap();
    let gw = serve_with_env(&path, &[("SY_PROCESS_ADMIN_KEY", ADMIN_KEY)]);
    let admin = format!("http://{admin_addr}");
    let bearer = format!("Bearer {ADMIN_KEY}");
    let targets = format!("{admin}/admin/targets");
    assert_eq!(
        call(&client(), Method::GET, &targets, "", &[]).await.status,
        http::StatusCode::UNAUTHORIZED
    );
    let keyed = call(
        &client(),
        Method::GET,
        &targets,
        "",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(keyed.status, http::StatusCode::OK, "{}", keyed.text());
    let main = call(
        &client(),
        Method::GET,
        &gw.base.replace("/v1", "/admin/targets"),
        "",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(
        main.status,
        http::StatusCode::NOT_FOUND,
        "not on the main port"
    );

    // Slow-loris: half a head, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&admin_addr).await.unwrap();
    slow.write_all(b"GET /admin/targets HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        slow.read_to_end(&mut answer),
    )
    .await;
    assert!(ended.is_ok(), "the stalled client was disconnected");
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // An oversized head.
    let big = "a".repeat(8 << 10);
    let refused = call(
        &client(),
        Method::GET,
        &targets,
        "",
        &[("authorization", &bearer), ("x-filler", &big)],
    )
    .await;
    assert_eq!(
        refused.status,
        http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(refused.json()["error"]["code"], "request_header_too_large");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under an open-file limit of 300 (soft and hard), the gateway fits
/// `max_connections` to it: (300 - 256 reserved) / 2 = 22 connections, a
/// client and an upstream file each, shared by both accepting threads.
/// Connections past that get a clean 503 `overloaded`, instead of the
/// gateway running out of files mid-request and blaming the upstreams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_fits_the_open_file_limit_and_refuses_cleanly_past_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = sim("upstream").await;
    let dir = scratch("nofile");
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        config_text(&[&upstream.base_url()], "[server]\nwatch_config = false\n"),
    )
    .unwrap();
    let mut limited = Command::new("prlimit");
    limited.args(["--nofile=300:300", env!("CARGO_BIN_EXE_switchyard")]);
    let gw = serve_under(limited, &path, &[]);
    let addr = gw
        .base
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    let mut held = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..40 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
            .await
            .unwrap();
        let mut head = vec![0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(30), tcp.read(&mut head))
            .await
            .expect("an answer")
            .unwrap();
        let text = String::from_utf8_lossy(&head[..n]).into_owned();
        if text.starts_with("HTTP/1.1 200") {
            served += 1;
            // Kept open (keep-alive): it holds its slot.
            held.push(tcp);
        } else {
            assert!(text.starts_with("HTTP/1.1 503"), "{text}");
            assert!(text.contains("\"code\":\"overloaded\""), "{text}");
            refused += 1;
        }
    }
    assert_eq!(served, 22, "the open-file limit's capacity");
    assert_eq!(refused, 18);
    drop(held);
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `switchyard init` run with exactly the provider variables in `env`.
fn init(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.arg("init").args(args);
    for name in [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied()).output().unwrap()
}

#[test]
fn init_writes_a_valid_config_never_the_key_and_never_over_a_file() {
    let dir = scratch("init");
    let path = dir.join("switchyard.toml");
    let file = path.to_str().unwrap();
    let key = "sk-init-test-0123456789abcdef";
    let out = init(&["--output", file], &[("OPENAI_API_KEY", key)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(
        written.contains("api_key_env = \"OPENAI_API_KEY\""),
        "{written}"
    );
    assert!(
        !written.contains(key),
        "the key value was written:\n{written}"
    );
    let check = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check-config", file])
        .env("OPENAI_API_KEY", key)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // An existing file is kept unless --force.
    let again = init(&["--output", file], &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), written);
    let forced = init(&["--output", file, "--force"], &[]);
    assert!(forced.status.success());
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("[providers.sim]"));
    // `-`: standard output, no file.
    let stdout = init(&["--output", "-"], &[("ANTHROPIC_API_KEY", key)]);
    let text = String::from_utf8_lossy(&stdout.stdout);
    assert!(text.contains("[providers.anthropic]"), "{text}");
    assert!(!text.contains(key));
    let _ = std::fs::remove_dir_all(&dir);
}
