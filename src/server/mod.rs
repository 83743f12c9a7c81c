//! The HTTP surface: the OpenAI-compatible endpoints, health checks, request
//! ids and response headers, body limits, and graceful drain on shutdown.
//! It turns a client request into a `routing::Dispatch` and its outcome into
//! a response; it never decides about retries and never talks to upstreams
//! itself.

mod handlers;

use crate::config::Config;
use crate::providers::UpstreamClients;
use crate::telemetry::{Counters, CountersSnapshot};
use arc_swap::ArcSwap;
use axum::serve::ListenerExt;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Everything a request needs, shared by all connections. The config is
/// swapped atomically, so a request sees one whole config from start to end.
pub struct AppState {
    pub config: ArcSwap<Config>,
    pub clients: UpstreamClients,
    pub counters: Counters,
    pub draining: AtomicBool,
}

impl AppState {
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(AppState {
            config: ArcSwap::from_pointee(config),
            clients: UpstreamClients::default(),
            counters: Counters::default(),
            draining: AtomicBool::new(false),
        })
    }
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish for up to the drain timeout, and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let drain_timeout = state.config.load().server.drain_timeout;
    let (drain_tx, mut drain_rx) = watch::channel(false);
    let listener = listener.tap_io(|tcp| {
        // Small SSE events must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
    });
    let app = handlers::router(state.clone());
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = drain_rx.wait_for(|draining| *draining).await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => return result,
        () = shutdown => {}
    }
    state.draining.store(true, Ordering::SeqCst);
    tracing::info!(
        drain_timeout_ms = drain_timeout.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    let _ = drain_tx.send(true);
    match tokio::time::timeout(drain_timeout, server).await {
        Ok(result) => {
            tracing::info!("drained; exiting");
            result
        }
        Err(_) => {
            tracing::warn!("drain timeout reached; closing the remaining connections");
            Ok(())
        }
    }
}

/// A gateway running in the background: for tests, the demo and benchmarks.
pub struct Gateway {
    addr: SocketAddr,
    state: Arc<AppState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    /// Binds `config.server.listen` (port 0 picks a free port) and serves.
    pub async fn start(config: Config) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind(config.server.listen).await?;
        let addr = listener.local_addr()?;
        let state = AppState::new(config);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Ok(Gateway {
            addr,
            state,
            shutdown: Some(tx),
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/v1`, what an OpenAI SDK takes as its base URL.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    pub fn counters(&self) -> CountersSnapshot {
        self.state.counters.snapshot()
    }

    /// Starts the graceful drain; `join` waits for it to finish.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn join(mut self) -> std::io::Result<()> {
        self.begin_shutdown();
        match (&mut self.task).await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}
