//! `switchyard healthcheck`, the probe a container image without curl runs
//! as its HEALTHCHECK: exit 0 only for a 2xx within the timeout.

mod common;

use common::*;
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

fn healthcheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("healthcheck")
        .args(args)
        .output()
        .expect("run switchyard healthcheck")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_0_for_a_healthy_gateway_and_1_for_a_draining_one() {
    let upstream = sim("upstream").await;
    let gw = gateway(&[&upstream], "").await;
    let origin = format!("http://{}", gw.addr());

    let healthz = format!("{origin}/healthz");
    let readyz = format!("{origin}/readyz");
    let healthy = tokio::task::spawn_blocking(move || healthcheck(&["--url", &healthz]))
        .await
        .unwrap();
    assert!(healthy.status.success(), "{}", stderr(&healthy));
    assert!(String::from_utf8_lossy(&healthy.stdout).contains("200 OK"));

    gw.state().draining.store(true, Ordering::SeqCst);
    let draining = tokio::task::spawn_blocking(move || healthcheck(&["--url", &readyz]))
        .await
        .unwrap();
    assert_eq!(draining.status.code(), Some(1));
    assert!(stderr(&draining).contains("503"), "{}", stderr(&draining));
}

#[test]
fn exits_1_when_nothing_listens() {
    // Bind then drop: the port is free and refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let output = healthcheck(&["--url", &format!("http://127.0.0.1:{port}/healthz")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("refused"), "{}", stderr(&output));
}

#[test]
fn exits_1_when_the_server_never_answers() {
    // Accepts (the kernel's backlog does) but never reads or answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let output = healthcheck(&["--url", &url, "--timeout", "200ms"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no answer within 200ms"),
        "{}",
        stderr(&output)
    );
    drop(listener);
}

/// HTTPS probes are in tests/tls.rs.
#[test]
fn refuses_a_url_that_is_not_http_or_https() {
    let output = healthcheck(&["--url", "ftp://127.0.0.1:8080/healthz"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("expected http(s)://"),
        "{}",
        stderr(&output)
    );
}
