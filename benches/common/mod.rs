//! What the benches share: starting switchyard, the simulator and other
//! processes and stopping them cleanly, reading a process's CPU time and
//! memory from /proc, writing configs and creating virtual keys.
#![allow(dead_code, reason = "each bench uses its own subset")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Proc {
    pub child: Child,
    pub base_url: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master then stops its workers (a SIGKILL
        // would orphan them), switchyard drains its (idle) connections.
        let terminated = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if terminated {
            for _ in 0..100 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `switchyard ARGS` and waits for its "listening on URL" line.
pub fn spawn(args: &[&str], log: bool) -> Proc {
    spawn_bin(env!("CARGO_BIN_EXE_switchyard"), args, log, None)
}

/// A `Command` for `program`, under `taskset -c CPU` when pinned.
pub fn command(program: &str, pin: Option<&str>) -> Command {
    match pin {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu, program]);
            c
        }
        None => Command::new(program),
    }
}

/// [`spawn`] of any switchyard binary, optionally pinned (one worker thread).
pub fn spawn_bin(bin: &str, args: &[&str], log: bool, pin: Option<&str>) -> Proc {
    let mut cmd = command(bin, pin);
    if pin.is_some() {
        cmd.env("SWITCHYARD_WORKER_THREADS", "1");
    }
    let mut child = cmd
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

/// `pid` and its child processes (nginx's workers).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        // The field after the parenthesised name: state, then the parent.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// Nanoseconds every thread of `pids` has spent on a CPU.
pub fn cpu_ns(pids: &[u32]) -> u64 {
    let mut total = 0;
    for pid in pids {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            total += stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

pub fn rss_kib(pid: u32) -> u64 {
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

pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn write_config(name: &str, text: &str) -> std::path::PathBuf {
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
pub fn create_key(config: &std::path::Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "keys",
        "create",
        name,
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
