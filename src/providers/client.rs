//! The pooled upstream HTTP client (hyper-util + rustls with the ring
//! provider; HTTP/1.1 and, over TLS via ALPN, HTTP/2).
//!
//! Connect timeouts are a connector setting, so there is one client per
//! distinct connect timeout in the config (in practice one or two), per thread.

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Idle pooled connections are closed before common load-balancer idle
/// timeouts (60-75 s) so we never send on a connection the peer just closed.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most an HTTP/1 upstream connection's read buffer holds (hyper's
/// default grows to ~400 KiB). A fast upstream in front of a client that
/// reads slowly fills it before backpressure stops the reads, and every
/// event handed on keeps its allocation alive: measured with 1,000 slow
/// readers, 650 KiB of RSS per stream at the default, 200 KiB with this
/// (BENCHMARKS.md). A read may take up to twice this (what the buffer has
/// spare besides the reserved size). It also bounds an upstream's response
/// head, which is never near this.
const UPSTREAM_READ_BUFFER: usize = 64 << 10;

pub fn build(connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Native roots honour a company CA bundle; fall back to the bundled
    // Mozilla roots where the system has none.
    let builder =
        match HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
            Ok(b) => b,
            Err(_) => match HttpsConnectorBuilder::new().with_provider_and_webpki_roots(provider) {
                Ok(b) => b,
                #[allow(
                    clippy::unreachable,
                    reason = "ring supports the default protocol versions"
                )]
                Err(_) => unreachable!("the ring provider supports the default protocol versions"),
            },
        };
    let https = builder
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(1024)
        .http1_max_buf_size(UPSTREAM_READ_BUFFER)
        .build(https)
}

thread_local! {
    /// Clients by connect timeout, one set per thread. The gateway runs one
    /// single-threaded runtime per core (see `server::run`), and a hyper
    /// client's connection tasks live on the runtime that opened them: a
    /// per-thread pool keeps a request, its connection and its wake-ups on
    /// one core, with no lock on the request path.
    static CLIENTS: RefCell<HashMap<Duration, HttpClient>> = RefCell::new(HashMap::new());
}

/// This thread's client for `connect_timeout` (created on first use).
pub fn for_connect_timeout(connect_timeout: Duration) -> HttpClient {
    CLIENTS.with(|clients| {
        clients
            .borrow_mut()
            .entry(connect_timeout)
            .or_insert_with(|| build(connect_timeout))
            .clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An upstream that has a whole megabyte in flight before the gateway
    /// reads any of it: the body comes out in pieces bounded by the read
    /// buffer's limit, so an event held for a slow client pins at most that
    /// much (hyper's default buffer grows to 256 KiB here, and on).
    #[tokio::test]
    async fn a_fast_upstream_is_read_in_bounded_pieces() {
        const BODY: usize = 1 << 20;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (written_tx, written_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 4096];
            let _ = tcp.read(&mut head).await.unwrap();
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n");
            tcp.write_all(head.as_bytes()).await.unwrap();
            // Loopback buffers take it all before anyone reads.
            let _ = tcp.set_nodelay(true);
            tcp.write_all(&vec![b'x'; BODY]).await.unwrap();
            let _ = written_tx.send(());
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest).await;
        });
        let client = build(Duration::from_secs(1));
        let request = http::Request::get(format!("http://{addr}/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let mut body = client.request(request).await.unwrap().into_body();
        written_rx.await.unwrap();
        let (mut total, mut largest) = (0, 0);
        while let Some(frame) = body.frame().await {
            let data = frame.unwrap().into_data().unwrap();
            total += data.len();
            largest = largest.max(data.len());
        }
        assert_eq!(total, BODY);
        // One read may fill what the buffer already had spare besides the
        // reserved read size: under twice the bound (the default: 256 KiB).
        assert!(
            largest < 2 * UPSTREAM_READ_BUFFER,
            "a piece of {largest} bytes: the read buffer is not bounded"
        );
    }
}
