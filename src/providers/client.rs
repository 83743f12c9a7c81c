//! The pooled upstream HTTP client (hyper-util + rustls with the ring
//! provider; HTTP/1.1 and, over TLS via ALPN, HTTP/2).
//!
//! Connect timeouts are a connector setting, so there is one client per
//! distinct connect timeout in the config; in practice one or two.

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
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

/// Clients by connect timeout, reused across config reloads so pooled
/// connections survive a reload. Reads are lock-free (the request path);
/// a missing client is added copy-on-write (rare: at most once per distinct
/// timeout).
#[derive(Default)]
pub struct UpstreamClients {
    by_connect_timeout: ArcSwap<HashMap<Duration, HttpClient>>,
}

impl UpstreamClients {
    pub fn get(&self, connect_timeout: Duration) -> HttpClient {
        if let Some(client) = self.by_connect_timeout.load().get(&connect_timeout) {
            return client.clone();
        }
        let client = build(connect_timeout);
        self.by_connect_timeout.rcu(|map| {
            let mut map = HashMap::clone(map);
            map.entry(connect_timeout).or_insert_with(|| client.clone());
            map
        });
        self.by_connect_timeout
            .load()
            .get(&connect_timeout)
            .cloned()
            .unwrap_or(client)
    }
}
