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
