//! TLS on the listeners, through the real binary: HTTP/1.1 and HTTP/2 by
//! ALPN, certificate rotation on SIGHUP and on file change (new connections
//! see the new certificate, open ones keep working, a broken file keeps
//! the running one), mutual TLS on the admin listener, and a bad
//! certificate file as a config error naming its setting. Certificates
//! come from a test CA made with rcgen in a scratch directory; the client
//! is rustls trusting only that CA.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// A CA that signs server and client certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate with its key, as PEM for the gateway and DER for a client.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `localhost` and 127.0.0.1 named `name` (its subject CN).
    fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the key first: a watcher that looks between the two writes sees
/// a new key with the old certificate, refuses it and looks again.
fn install(leaf: &Leaf, cert: &Path, key: &Path) {
    std::fs::write(key, &leaf.key_pem).unwrap();
    std::fs::write(cert, &leaf.cert_pem).unwrap();
}

fn tls_table(section: &str, dir: &Path) -> String {
    format!(
        "[{section}]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    )
}

struct Served {
    child: Child,
    /// `host:port` of the main listener.
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(config: &Path, env: &[(&str, &str)]) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
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
    let url = line.split_whitespace().last().expect("listening line");
    let addr = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("an https listener: {line}"))
        .trim_end_matches("/v1")
        .to_owned();
    Served { child, addr }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args(["-s", name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A rustls client trusting `ca_pem` only, offering `alpn`, presenting
/// `identity` when given.
fn client_config(
    ca_pem: &str,
    alpn: &[&[u8]],
    identity: Option<&Leaf>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
            builder
                .with_client_auth_cert(vec![leaf.der.clone()], key)
                .unwrap()
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Each connection a full handshake: a resumed session reports the
    // certificate of the session it resumes, not the one served now.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

use rustls::pki_types::pem::PemObject;

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One TLS connection to the gateway, on the protocol ALPN chose.
struct Conn {
    sender: Sender,
    alpn: Option<Vec<u8>>,
    /// The certificate the gateway presented on this connection.
    leaf: CertificateDer<'static>,
}

async fn connect(addr: &str, config: Arc<rustls::ClientConfig>) -> std::io::Result<Conn> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let leaf = session.peer_certificates().expect("a server certificate")[0].clone();
    let io = TokioIo::new(tls);
    let sender = if alpn.as_deref() == Some(b"h2") {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Sender::H1(sender)
    };
    Ok(Conn { sender, alpn, leaf })
}

impl Conn {
    /// Sends one request on this connection: its status and body.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, Bytes), hyper::Error> {
        let uri = match self.sender {
            Sender::H1(_) => path.to_owned(),
            Sender::H2(_) => format!("https://localhost{path}"),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if matches!(self.sender, Sender::H1(_)) {
            request = request.header("host", "localhost");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = match &mut self.sender {
            Sender::H1(s) => s.send_request(request).await?,
            Sender::H2(s) => s.send_request(request).await?,
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    async fn chat(&mut self) -> StatusCode {
        let body = chat_body(false).to_string();
        let (status, _) = self
            .send("POST", "/v1/chat/completions", &body, &[])
            .await
            .expect("an answer on this connection");
        status
    }
}

/// New connections until one is served with `wanted` (a reload in
/// progress), at most `attempts`.
async fn until_served_with(addr: &str, config: &Arc<rustls::ClientConfig>, wanted: &Leaf) {
    for _ in 0..500 {
        let conn = connect(addr, config.clone()).await.unwrap();
        if conn.leaf == wanted.der {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no new connection was served with the new certificate");
}

async fn counters(addr: &str, config: &Arc<rustls::ClientConfig>) -> serde_json::Value {
    let mut conn = connect(addr, config.clone()).await.unwrap();
    let (status, body) = conn.send("GET", "/admin/targets", "", &[]).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["counters"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_speaks_http1_and_http2_by_alpn_and_sighup_rotates_the_certificate_without_dropping_connections(
) {
    let upstream = sim("upstream").await;
    let dir = scratch("sighup");
    let ca = Ca::new("switchyard test CA");
    let (first, second) = (ca.leaf("gateway-1"), ca.leaf("gateway-2"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    install(&first, &cert, &key);
    let path = dir.join("gw.toml");
    // The file watch is off: only SIGHUP reloads.
    let extra = format!(
        "[server]\nwatch_config = false\n{}",
        tls_table("server.tls", &dir)
    );
    std::fs::write(&path, config_text(&[&upstream.base_url()], &extra)).unwrap();
    let gw = serve(&path, &[]);

    let h2 = client_config(&ca.pem(), &[b"h2", b"http/1.1"], None);
    let h1 = client_config(&ca.pem(), &[b"http/1.1"], None);
    let mut old_h2 = connect(&gw.addr, h2.clone()).await.unwrap();
    assert_eq!(old_h2.alpn.as_deref(), Some(&b"h2"[..]), "h2 preferred");
    assert_eq!(old_h2.leaf, first.der);
    assert_eq!(old_h2.chat().await, StatusCode::OK);
    let mut old_h1 = connect(&gw.addr, h1.clone()).await.unwrap();
    assert_eq!(old_h1.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(old_h1.chat().await, StatusCode::OK);
    let no_alpn = client_config(&ca.pem(), &[], None);
    let mut plain = connect(&gw.addr, no_alpn).await.unwrap();
    assert_eq!(plain.alpn, None);
    assert_eq!(plain.chat().await, StatusCode::OK, "HTTP/1.1 without ALPN");

    install(&second, &cert, &key);
    signal(&gw.child, "HUP");
    until_served_with(&gw.addr, &h2, &second).await;
    assert_eq!(
        old_h2.chat().await,
        StatusCode::OK,
        "an HTTP/2 connection opened before the rotation goes on"
    );
    assert_eq!(
        old_h1.chat().await,
        StatusCode::OK,
        "so does a kept-alive HTTP/1.1 one"
    );
    assert_eq!(
        old_h2.leaf, first.der,
        "with the certificate it was opened with"
    );
    let counted = counters(&gw.addr, &h1).await;
    assert_eq!(counted["tls_reloads"], 1);

    // A broken certificate keeps the running one.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    signal(&gw.child, "HUP");
    for _ in 0..500 {
        if counters(&gw.addr, &h1).await["tls_reload_failures"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counted = counters(&gw.addr, &h1).await;
    assert_eq!(counted["tls_reload_failures"], 1, "{counted}");
    let mut after = connect(&gw.addr, h2.clone()).await.unwrap();
    assert_eq!(after.leaf, second.der, "the running certificate stays");
    assert_eq!(after.chat().await, StatusCode::OK);

    // Plain HTTP on the TLS port gets no HTTP answer.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut raw = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    raw.write_all(b"GET /v1/models HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(60), raw.read_to_end(&mut answer)).await;
    assert!(ended.is_ok(), "the connection is closed");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_changed_on_disk_is_picked_up_without_a_signal() {
    let upstream = sim("upstream").await;
    let dir = scratch("watch");
    let ca = Ca::new("switchyard test CA");
    let (first, second) = (ca.leaf("gateway-1"), ca.leaf("gateway-2"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    install(&first, &cert, &key);
    let path = dir.join("gw.toml");
    let extra = format!("[server]\n{}", tls_table("server.tls", &dir));
    std::fs::write(&path, config_text(&[&upstream.base_url()], &extra)).unwrap();
    let gw = serve(&path, &[]);
    let config = client_config(&ca.pem(), &[b"h2"], None);
    let mut old = connect(&gw.addr, config.clone()).await.unwrap();
    assert_eq!(old.leaf, first.der);

    install(&second, &cert, &key);
    until_served_with(&gw.addr, &config, &second).await;
    assert_eq!(old.chat().await, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

const ADMIN_KEY: &str = "tls-admin-key-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_with_a_client_ca_serves_only_clients_with_a_certificate_it_signed() {
    let upstream = sim("upstream").await;
    let dir = scratch("mtls");
    let ca = Ca::new("switchyard test CA");
    let server = ca.leaf("gateway-admin");
    install(&server, &dir.join("cert.pem"), &dir.join("key.pem"));
    let clients = Ca::new("operators CA");
    std::fs::write(dir.join("clients.pem"), clients.pem()).unwrap();
    let admin_addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "{}[admin]\nkey_env = \"SY_TLS_ADMIN_KEY\"\nlisten = \"{admin_addr}\"\n{}client_ca_file = \"{}\"\n",
        tls_table("server.tls", &dir),
        tls_table("admin.tls", &dir),
        dir.join("clients.pem").display()
    );
    let path = dir.join("gw.toml");
    std::fs::write(&path, config_text(&[&upstream.base_url()], &extra)).unwrap();
    let gw = serve(&path, &[("SY_TLS_ADMIN_KEY", ADMIN_KEY)]);

    let operator = clients.leaf("operator");
    let with_cert = client_config(&ca.pem(), &[b"h2", b"http/1.1"], Some(&operator));
    let conn = connect(&admin_addr, with_cert).await.unwrap();
    assert_eq!(targets(conn).await.unwrap(), StatusCode::OK);

    let anonymous = client_config(&ca.pem(), &[b"h2", b"http/1.1"], None);
    let refused = match connect(&admin_addr, anonymous).await {
        // TLS 1.3: the client's handshake ends before the server checks.
        Ok(conn) => targets(conn).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate gets no answer");

    let stranger = Ca::new("some other CA").leaf("operator");
    let foreign = client_config(&ca.pem(), &[b"http/1.1"], Some(&stranger));
    let refused = match connect(&admin_addr, foreign).await {
        Ok(conn) => targets(conn).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a certificate from another CA is refused");

    // The main listener asks no client certificate.
    let mut main = connect(&gw.addr, client_config(&ca.pem(), &[b"h2"], None))
        .await
        .unwrap();
    assert_eq!(main.chat().await, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /admin/targets` with the admin key on `conn`.
async fn targets(mut conn: Conn) -> Result<StatusCode, hyper::Error> {
    let bearer = format!("Bearer {ADMIN_KEY}");
    conn.send("GET", "/admin/targets", "", &[("authorization", &bearer)])
        .await
        .map(|(status, _)| status)
}

fn check_config(path: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("check-config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_certificate_file_that_cannot_serve_is_a_config_error_naming_its_setting() {
    let dir = scratch("check");
    let ca = Ca::new("switchyard test CA");
    let (leaf, other) = (ca.leaf("gateway"), ca.leaf("other"));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let path = dir.join("gw.toml");
    let text = config_text(&["http://127.0.0.1:9/v1"], &tls_table("server.tls", &dir));
    std::fs::write(&path, &text).unwrap();

    install(&leaf, &cert, &key);
    let (ok, stderr) = check_config(&path);
    assert!(ok, "{stderr}");

    std::fs::write(&cert, "this is not a certificate\n").unwrap();
    let (ok, stderr) = check_config(&path);
    assert!(!ok);
    assert!(stderr.contains("server.tls.cert_file"), "{stderr}");
    assert!(stderr.contains("no PEM certificate"), "{stderr}");
    // The line of the setting, as compilers print it.
    assert!(stderr.contains("gw.toml:"), "{stderr}");

    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let (ok, stderr) = check_config(&path);
    assert!(!ok);
    assert!(stderr.contains("server.tls.key_file"), "{stderr}");
    assert!(stderr.contains("does not belong"), "{stderr}");

    std::fs::remove_file(&key).unwrap();
    let (ok, stderr) = check_config(&path);
    assert!(!ok);
    assert!(stderr.contains("server.tls.key_file"), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");

    // `serve` refuses to start on it too.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.tls.key_file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The plain port's protections hold on the TLS one: a client that opens a
/// connection and never finishes its handshake, and one that completes the
/// handshake and sends half a request head, are both disconnected after
/// the header-read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_in_the_handshake_or_the_head_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = sim("upstream").await;
    let dir = scratch("stall");
    let ca = Ca::new("switchyard test CA");
    install(
        &ca.leaf("gateway"),
        &dir.join("cert.pem"),
        &dir.join("key.pem"),
    );
    let extra = format!(
        "[server]\nheader_read_timeout = \"1s\"\n{}",
        tls_table("server.tls", &dir)
    );
    let path = dir.join("gw.toml");
    std::fs::write(&path, config_text(&[&upstream.base_url()], &extra)).unwrap();
    let gw = serve(&path, &[]);

    let mut silent = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    let mut answer = Vec::new();
    let ended =
        tokio::time::timeout(Duration::from_secs(60), silent.read_to_end(&mut answer)).await;
    assert!(ended.is_ok(), "a silent client is disconnected");

    // The first bytes of a ClientHello, then nothing.
    let mut partial = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let ended =
        tokio::time::timeout(Duration::from_secs(60), partial.read_to_end(&mut answer)).await;
    assert!(ended.is_ok(), "a stalled handshake is cut");

    let config = client_config(&ca.pem(), &[b"http/1.1"], None);
    let tcp = tokio::net::TcpStream::connect(&gw.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /v1/models HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(60), tls.read_to_end(&mut answer)).await;
    assert!(ended.is_ok(), "half a head over TLS is cut");
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `switchyard healthcheck` probes an HTTPS listener: verified against a
/// given CA, refused against the public roots the test CA is not in, and
/// with `--insecure` whatever the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_probes_an_https_listener() {
    let upstream = sim("upstream").await;
    let dir = scratch("healthcheck");
    let ca = Ca::new("switchyard test CA");
    install(
        &ca.leaf("gateway"),
        &dir.join("cert.pem"),
        &dir.join("key.pem"),
    );
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let path = dir.join("gw.toml");
    let text = config_text(&[&upstream.base_url()], &tls_table("server.tls", &dir));
    std::fs::write(&path, text).unwrap();
    let gw = serve(&path, &[]);
    let url = format!("https://{}/healthz", gw.addr);
    let ca_file = dir.join("ca.pem").display().to_string();
    let probe = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_switchyard"))
                .arg("healthcheck")
                .args(&args)
                .output()
                .unwrap()
        })
    };
    let trusted = probe(vec![
        "--url".into(),
        url.clone(),
        "--ca-file".into(),
        ca_file,
    ])
    .await
    .unwrap();
    assert!(
        trusted.status.success(),
        "{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    let public_roots = probe(vec!["--url".into(), url.clone()]).await.unwrap();
    assert_eq!(
        public_roots.status.code(),
        Some(1),
        "the test CA is not public"
    );
    let insecure = probe(vec!["--url".into(), url, "--insecure".into()])
        .await
        .unwrap();
    assert!(insecure.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
