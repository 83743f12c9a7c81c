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
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(config)
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
        "[providers.openai]\nbase_url = \"http://127.0.0.1:1/v1\"\n[providers.backup]\nbase_url = \"http://127.0.0.1:2/v1\"\n[routes.chat-default]\ntargets = [{ provider = \"openai\", model = \"a\" }, { provider = \"opnai\", model = \"b\" }]\n[defaults.retry]\njitter = \"lots\"\n",
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
