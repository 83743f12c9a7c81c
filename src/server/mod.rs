//! The HTTP surface: the OpenAI-compatible endpoints, health checks, request
//! ids and response headers, body limits, and graceful drain on shutdown.
//! It turns a client request into a `routing::Dispatch` and its outcome into
//! a response; it never decides about retries and never talks to upstreams
//! itself.

mod accept;
pub mod cache;
mod head_limit;
pub mod idempotency;
mod inbound;
mod operator;
mod proxy;
pub mod reload;
pub mod router;
pub mod shared_idempotency;
pub mod status;
pub mod stored;
mod tls;

use crate::config::{AuthMode, Config};
use crate::routing::health::HealthRegistry;
use crate::routing::table::RouteTable;
use crate::telemetry::alerts::{AlertCounters, Notifier};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::request_log::RequestLog;
use crate::telemetry::slo::SloRegistry;
use crate::telemetry::stats::StatsRegistry;
use crate::telemetry::{Counters, CountersSnapshot};
use arc_swap::ArcSwap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Everything a request needs, shared by all connections. The route table
/// (config + health + budgets) is swapped atomically, so a request sees one
/// whole table from start to end.
pub struct AppState {
    pub table: ArcSwap<RouteTable>,
    pub registry: Arc<HealthRegistry>,
    pub metrics: Metrics,
    pub stats: StatsRegistry,
    pub slos: SloRegistry,
    pub alert_counters: Arc<AlertCounters>,
    /// Set by `start_services` when the config enables it.
    pub request_log: std::sync::OnceLock<RequestLog>,
    /// Virtual keys; set by `start_services` unless `auth = "none"`.
    pub keys: std::sync::OnceLock<crate::keys::Keys>,
    /// Per-key rate limits; set by `start_services`.
    pub limiter: std::sync::OnceLock<crate::limits::Limiter>,
    /// Stored Responses API answers; set by `start_services` unless
    /// `[responses] store = false`.
    pub conversations: std::sync::OnceLock<Arc<crate::conversations::Conversations>>,
    /// OpenTelemetry export; set by `start_services` with `[telemetry.otlp]`.
    pub otlp: std::sync::OnceLock<crate::telemetry::otlp::Otlp>,
    pub counters: Counters,
    /// Answers kept for repeats of an `Idempotency-Key` (`[idempotency]`).
    pub idempotency: idempotency::IdempotencyStore,
    /// Answers of routes with `[routes.NAME.cache]`.
    pub cache: Arc<cache::ResponseCache>,
    pub draining: AtomicBool,
    /// The status page's uptime history, read from the request log at most
    /// once a minute.
    pub status_history: status::HistoryCache,
    /// The main port's connection slots (`server.max_connections`), shared
    /// by every accepting thread.
    pub(crate) connection_slots: accept::ConnectionSlots,
    /// The TLS of the main and admin listeners; set by `start_services`.
    pub(crate) tls: tls::TlsListeners,
}

/// What a stream continuation, which outlives the request's dispatch,
/// counts its attempts in.
impl AsRef<crate::routing::EngineCounters> for AppState {
    fn as_ref(&self) -> &crate::routing::EngineCounters {
        &self.counters.engine
    }
}

impl AppState {
    /// Connects the store (once, if anything needs it) and starts, on the
    /// current runtime, what outlives single requests: the request log
    /// writer, the virtual-key cache and spend writer, the rate limiter.
    /// The runtime must run for as long as the gateway serves.
    pub async fn start_services(&self) -> Result<(), StartError> {
        let config = self.table.load_full().config.clone();
        let needs_keys = config.server.auth == AuthMode::Keys;
        let store = if config.request_log.is_some() || needs_keys {
            Some(crate::store::Store::connect(&config.store_url.0, config.store_timeout).await?)
        } else {
            None
        };
        if let (Some(retention), Some(store)) = (config.request_log, &store) {
            let _ = self
                .request_log
                .set(RequestLog::start(store.clone(), retention));
        }
        if let Some(retention) = config.responses_store {
            let conversations = crate::conversations::Conversations::new(
                config.store_url.0.clone(),
                config.store_timeout,
                retention,
                store.clone(),
            );
            let _ = self.conversations.set(Arc::new(conversations));
        }
        if let (true, Some(store)) = (needs_keys, store) {
            let keys =
                crate::keys::Keys::open(store, crate::keys::KeySettings::from_config(&config))
                    .await?;
            let _ = self.keys.set(keys);
        } else {
            tracing::warn!(
                "auth = \"none\": anyone who can reach this port may use every route; use virtual keys outside demos and trusted networks"
            );
        }
        // The fleet's Redis: `[cluster]`'s, else `[limits]`'s.
        let shared_redis = config.cluster.as_ref().map(|c| &c.redis_url);
        if let Some(url) = shared_redis.or(config.limits.redis_url.as_ref()) {
            if let Err(e) = self.cache.connect_redis(&url.0, &config.limits.key_prefix) {
                tracing::warn!(error = ?e.kind(), "response cache: Redis URL refused, caching in memory only");
            }
            if let Err(e) = self
                .idempotency
                .connect_shared(&url.0, &config.limits.key_prefix)
            {
                tracing::warn!(error = ?e.kind(), "idempotency: Redis URL refused, keys kept in memory only");
            }
        }
        if let Some(otlp) = &config.otlp {
            let _ = self.otlp.set(crate::telemetry::otlp::Otlp::start(otlp)?);
        }
        let limiter = crate::limits::Limiter::new(&config.limits).await?;
        let _ = self.limiter.set(limiter);
        if let Some(cluster) = &config.cluster {
            crate::cluster::start(cluster, self.registry.clone())?;
        }
        if let Some(files) = &config.server.tls {
            let _ = self.tls.main.set(Arc::new(tls::ListenerTls::open(files)?));
        }
        if let Some(files) = &config.admin.tls {
            let _ = self.tls.admin.set(Arc::new(tls::ListenerTls::open(files)?));
        }
        Ok(())
    }

    /// Writes what is buffered (request log rows, key spend, queued shared
    /// limit releases) before the process exits.
    pub async fn flush(&self) {
        if let Some(log) = self.request_log.get() {
            log.flush().await;
        }
        if let Some(keys) = self.keys.get() {
            keys.flush().await;
        }
        if let Some(limiter) = self.limiter.get() {
            limiter.flush().await;
        }
        if let Some(otlp) = self.otlp.get() {
            otlp.flush().await;
        }
    }

    /// Swaps in a new config; health and unchanged budgets carry over.
    pub fn reload(&self, config: Config) {
        let previous = self.table.load_full();
        let table = RouteTable::build(
            config,
            self.registry.clone(),
            &self.metrics,
            &self.stats,
            &self.slos,
            Some(&previous),
        );
        self.table.store(Arc::new(table));
    }

    pub fn new(config: Config) -> Arc<Self> {
        let max_connections = config.server.max_connections;
        let registry = Arc::new(HealthRegistry::default());
        let metrics = Metrics::new();
        let cache = Arc::new(cache::ResponseCache::new(metrics.cache_gauges()));
        let stats = StatsRegistry::default();
        let slos = SloRegistry::default();
        Arc::new(AppState {
            table: ArcSwap::from_pointee(RouteTable::build(
                config,
                registry.clone(),
                &metrics,
                &stats,
                &slos,
                None,
            )),
            registry,
            metrics,
            stats,
            slos,
            alert_counters: Arc::default(),
            request_log: std::sync::OnceLock::new(),
            keys: std::sync::OnceLock::new(),
            limiter: std::sync::OnceLock::new(),
            conversations: std::sync::OnceLock::new(),
            otlp: std::sync::OnceLock::new(),
            counters: Counters::default(),
            idempotency: idempotency::IdempotencyStore::default(),
            cache,
            draining: AtomicBool::new(false),
            status_history: status::HistoryCache::default(),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(max_connections as usize)),
            tls: tls::TlsListeners::default(),
        })
    }
}

/// What can stop the gateway from starting its services.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("virtual keys: {0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error("rate limiter: {0}")]
    Limits(#[from] crate::limits::LimitError),
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Otlp(#[from] crate::telemetry::otlp::OtlpError),
}

/// Serves until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish for up to the drain timeout, and returns.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = state.table.load().config.server.clone();
    let slots = state.connection_slots.clone();
    serve_router(
        listener,
        router::router(state.clone()),
        &settings,
        slots,
        state.tls.main.get().cloned(),
        shutdown,
    )
    .await;
    state.draining.store(true, Ordering::SeqCst);
    Ok(())
}

/// One listener on the gateway's own accept loop (`accept`): the head
/// limit, header and body read timeouts and `max_connections` of
/// `settings`; until `shutdown`, then a drain bounded by `drain_timeout`.
/// The main listeners and the admin listener both run here.
async fn serve_router(
    listener: TcpListener,
    app: axum::Router,
    settings: &crate::config::ServerSettings,
    slots: accept::ConnectionSlots,
    tls: Option<Arc<tls::ListenerTls>>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = accept::ConnLimits {
        header_read_timeout: settings.header_read_timeout,
        write_timeout: settings.write_timeout,
        send_buffer: settings.send_buffer,
        max_head_buffer: head_limit::transport_ceiling(settings.max_header_bytes),
        max_connections: settings.max_connections,
    };
    let app = head_limit::apply(app, settings.max_header_bytes);
    let connections = accept::accept_until(listener, app, limits, slots, tls, shutdown).await;
    if tokio::time::timeout(settings.drain_timeout, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout reached; closing the remaining connections");
    }
}

/// The last flush of buffered rows (request log, key spend, shared limit
/// releases) at shutdown gets at most this long: each store call is bounded
/// by `[store] timeout` already, and a stuck database must not hold SIGTERM.
pub const SHUTDOWN_FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the gateway until SIGINT/SIGTERM, then drains. One single-threaded
/// runtime per thread, each accepting on its own `SO_REUSEPORT` listener of
/// the same address (the kernel spreads connections), so a request, its
/// upstream connection and their wake-ups stay on one core. Measured against
/// one multi-threaded runtime on 2 cores: about 30% more requests per second
/// at saturation (BENCHMARKS.md). `on_listening` gets the bound address.
pub fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    threads: usize,
    on_listening: impl FnOnce(SocketAddr),
) -> std::io::Result<()> {
    let threads = threads.max(1);
    // Handlers first: a SIGHUP or SIGTERM that arrives right after the
    // listening line must be handled, not take the default (fatal) action.
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut handlers = signals.block_on(async { Signals::install() })?;
    let mut addr = config.server.listen;
    let state = AppState::new(config);
    fit_connections_to_open_files(&state);
    // The request log writer lives on this runtime, which runs for as long
    // as the process serves (the signal loop below).
    signals
        .block_on(state.start_services())
        .map_err(std::io::Error::other)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_server = start_admin_listener(&signals, &state, stop_rx.clone())?;
    let mut handles = Vec::with_capacity(threads);
    for index in 0..threads {
        // The first listener resolves port 0; the others bind the same port.
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        let state = state.clone();
        let mut stop_rx = stop_rx.clone();
        let handle = std::thread::Builder::new()
            .name(format!("switchyard-{index}"))
            .spawn(move || -> std::io::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let listener = match reuseport_listener(addr) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ =
                                bound_tx.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                            return Err(e);
                        }
                    };
                    let _ = bound_tx.send(listener.local_addr());
                    serve(listener, state, async move {
                        let _ = stop_rx.wait_for(|stop| *stop).await;
                    })
                    .await
                })
            })?;
        addr = bound_rx
            .recv()
            .map_err(|_| std::io::Error::other("listener thread exited before binding"))??;
        handles.push(handle);
    }
    on_listening(addr);
    let evaluator = signals.spawn(evaluate_alerts(state.clone()));
    signals.block_on(until_shutdown(&state, &mut handlers, config_path));
    evaluator.abort();
    let shutdown = shut_down(state, stop_tx, handles, admin_server);
    let finished = signals.block_on(async {
        tokio::select! {
            result = shutdown => Some(result),
            () = handlers.next_shutdown() => None,
        }
    });
    match finished {
        Some(result) => {
            tracing::info!("stopped");
            result
        }
        None => {
            tracing::warn!(
                "second shutdown signal: exiting at once; in-flight requests are cut and unflushed rows lost"
            );
            crate::telemetry::finish_logging();
            std::process::exit(1);
        }
    }
}

/// Reloads the config and the TLS files on SIGHUP (and, with
/// `watch_config`, each when its file changes) until the first
/// SIGTERM/SIGINT.
async fn until_shutdown(
    state: &AppState,
    handlers: &mut Signals,
    config_path: Option<std::path::PathBuf>,
) {
    let mut file = config_path.map(reload::ConfigFile::new);
    let mut tick = tokio::time::interval(reload::ConfigFile::POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            signal = handlers.next() => {
                match (signal, file.as_mut()) {
                    (Signal::Shutdown, _) => return,
                    (Signal::Hangup, Some(f)) => {
                        tracing::info!("SIGHUP: reloading config");
                        f.reload(state);
                    }
                    (Signal::Hangup, None) => tracing::warn!("SIGHUP: no config file to reload"),
                }
                state.tls.reload(&state.counters);
            }
            _ = tick.tick() => {
                if !state.table.load().config.server.watch_config {
                    continue;
                }
                if let Some(f) = file.as_mut() {
                    if f.changed() {
                        f.reload(state);
                    }
                }
                state.tls.reload_changed(&state.counters);
            }
        }
    }
}

/// The admin API on `[admin] listen`, on the same accept loop (and so the
/// same head limit, read timeouts and connection cap) as the main port;
/// it stops with `stop` and drains like the main listeners.
fn start_admin_listener(
    runtime: &tokio::runtime::Runtime,
    state: &Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    let config = state.table.load_full().config.clone();
    let (Some(addr), Some(admin)) = (config.admin.listen, router::admin_router(state)) else {
        return Ok(None);
    };
    let listener = runtime.block_on(TcpListener::bind(addr))?;
    tracing::info!(addr = %addr, "admin API listening");
    let settings = config.server.clone();
    let tls = state.tls.admin.get().cloned();
    Ok(Some(runtime.spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(
            settings.max_connections as usize,
        ));
        serve_router(listener, admin, &settings, slots, tls, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
    })))
}

/// After the first SIGTERM/SIGINT: `/readyz` answers 503 at once while the
/// gateway keeps accepting and serving for `drain_delay` (a load balancer
/// stops sending meanwhile), then accepting stops and in-flight requests
/// drain (`drain_timeout` per listener), then buffered rows are flushed
/// (at most [`SHUTDOWN_FLUSH_LIMIT`]).
async fn shut_down(
    state: Arc<AppState>,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    admin: Option<JoinHandle<()>>,
) -> std::io::Result<()> {
    let settings = state.table.load().config.server.clone();
    state.draining.store(true, Ordering::SeqCst);
    tracing::info!(
        drain_delay_ms = settings.drain_delay.as_millis() as u64,
        "shutdown signal: /readyz answers 503; serving on for drain_delay, then draining (a second signal exits at once)"
    );
    tokio::time::sleep(settings.drain_delay).await;
    tracing::info!(
        drain_timeout_ms = settings.drain_timeout.as_millis() as u64,
        "shutting down: no new connections; draining in-flight requests"
    );
    let _ = stop.send(true);
    let joined = tokio::task::spawn_blocking(move || {
        let mut result = Ok(());
        for handle in threads {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(std::io::Error::other("a server thread panicked")),
            }
        }
        result
    });
    let result = joined
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    if tokio::time::timeout(SHUTDOWN_FLUSH_LIMIT, state.flush())
        .await
        .is_err()
    {
        tracing::warn!(
            limit_s = SHUTDOWN_FLUSH_LIMIT.as_secs(),
            "shutdown flush did not finish in time; buffered rows are lost"
        );
    }
    result
}

/// Open files kept back from connections: listeners, the store, logs,
/// Redis, the admin port.
const RESERVED_FILES: u64 = 256;

/// Raises the soft open-file limit to the hard one (logging both), then
/// makes sure `max_connections` fits in it: each client connection may
/// need an upstream connection too. Running out of files mid-request would
/// fail requests one by one; refusing connections past capacity at accept
/// is the clean answer (503 `overloaded`). A default that does not fit is
/// lowered quietly; a configured value that does not fit is lowered with a
/// warning.
fn fit_connections_to_open_files(state: &AppState) {
    let (before, hard) = rlimit::Resource::NOFILE.get().unwrap_or((0, 0));
    let soft = match rlimit::increase_nofile_limit(hard) {
        Ok(soft) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            before
        }
    };
    let capacity = u32::try_from(soft.saturating_sub(RESERVED_FILES) / 2).unwrap_or(u32::MAX);
    let configured = state.table.load().config.server.max_connections;
    tracing::info!(
        soft_before = before,
        soft,
        hard,
        connection_capacity = capacity,
        "open-file limit"
    );
    if soft == 0 || configured <= capacity {
        return;
    }
    let excess = (configured - capacity.max(1)) as usize;
    state.connection_slots.forget_permits(excess);
    if configured == crate::config::DEFAULT_MAX_CONNECTIONS {
        tracing::info!(
            max_connections = capacity.max(1),
            "server.max_connections lowered to what the open-file limit allows"
        );
    } else {
        tracing::warn!(
            configured,
            max_connections = capacity.max(1),
            "server.max_connections is above what the open-file limit allows (a client and an upstream connection each); serving at most the lower number"
        );
    }
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// On the configured interval: evaluates every route's SLO burn rates and
/// delivers alert changes, and records regional outages (every target of a
/// region in a route open) as incidents. Runs until the task is dropped.
pub async fn evaluate_alerts(state: Arc<AppState>) {
    let notifier = Notifier::start(state.alert_counters.clone());
    let mut cost_firing: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let every = state.table.load().config.alerts.evaluate_every;
        tokio::time::sleep(every).await;
        let table = state.table.load();
        let now = tokio::time::Instant::now();
        for tracker in state.slos.all() {
            for change in tracker.evaluate(now) {
                notifier.notify(&change, &table.config.alerts.webhooks);
            }
        }
        switch_slo_degradation(&table, &notifier);
        record_regional_outages(&table, &state.registry.incidents);
        if let Some(ratio) = table.config.alerts.cost_regression_ratio {
            for name in table.config.route_names() {
                let Some(live) = table.route(name) else {
                    continue;
                };
                let [Some(today), Some(before)] = live.stats.cost_per_success_by_day(now) else {
                    continue;
                };
                let firing = today >= before * ratio;
                if firing != cost_firing.contains(name) {
                    if firing {
                        cost_firing.insert(name.clone());
                    } else {
                        cost_firing.remove(name);
                    }
                    notifier.notify_cost(
                        name,
                        firing,
                        today,
                        before,
                        &table.config.alerts.webhooks,
                    );
                }
            }
        }
    }
}

/// After an evaluation: turns each route's SLO degradation on while its
/// `degrade_on` alert fires and off when it clears (or the route no longer
/// degrades), announcing each switch.
fn switch_slo_degradation(table: &RouteTable, notifier: &Notifier) {
    use crate::routing::degrade::triggered;
    use crate::telemetry::slo::Severity;
    for name in table.config.route_names() {
        let Some(live) = table.route(name) else {
            continue;
        };
        let policy = live.route.slo_degrade;
        let wanted = match (&policy, &live.slo) {
            (Some(p), Some(slo)) => triggered(
                p.on,
                slo.is_firing(Severity::Page),
                slo.is_firing(Severity::Ticket),
            ),
            _ => false,
        };
        live.metrics.slo_degraded.set(i64::from(wanted));
        if !live.route_health.set_slo_degraded(wanted) {
            continue;
        }
        live.metrics.slo_degrade_switches.inc();
        let (on, share) = policy.map_or((Severity::Page, 1.0), |p| (p.on, p.share));
        notifier.notify_degradation(name, wanted, on, share, &table.config.alerts.webhooks);
    }
}

fn record_regional_outages(table: &RouteTable, incidents: &crate::routing::health::Incidents) {
    use crate::resilience::breaker::State;
    use std::collections::BTreeMap;
    for name in table.config.route_names() {
        let Some(live) = table.route(name) else {
            continue;
        };
        let mut regions: BTreeMap<&str, bool> = BTreeMap::new();
        for (target, health) in live.route.targets.iter().zip(&live.health) {
            let all_open = regions.entry(target.region()).or_insert(true);
            *all_open &= health.state() == State::Open;
        }
        // A route with a single region is covered by its targets' incidents.
        if regions.len() < 2 {
            continue;
        }
        for (region, all_open) in regions {
            let key = format!("region {region} of route {name}");
            if all_open {
                incidents.opened(
                    &key,
                    "every target in the region is open; traffic shifted to other regions",
                );
            } else {
                incidents.closed(&key);
            }
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
        state
            .start_services()
            .await
            .map_err(std::io::Error::other)?;
        let state_for_server = state.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let evaluator = tokio::spawn(evaluate_alerts(state.clone()));
        let task = tokio::spawn(async move {
            let result = serve(listener, state_for_server, async move {
                let _ = rx.await;
            })
            .await;
            evaluator.abort();
            result
        });
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

    /// `http://ADDR/v1` (`https://` with `[server.tls]`), what an OpenAI
    /// SDK takes as its base URL.
    pub fn base_url(&self) -> String {
        let scheme = if self.state.tls.main.get().is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/v1", self.addr)
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Validates and swaps in a new config, keeping target health. In-flight
    /// requests finish on the table they started with.
    pub fn reload(&self, config: Config) {
        self.state.reload(config);
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Shutdown,
    Hangup,
}

/// The process's signal handlers, installed at once by `install`.
pub struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Must run inside a runtime.
    pub fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
                hangup: signal(SignalKind::hangup())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next SIGINT or SIGTERM (SIGHUP is ignored meanwhile).
    pub async fn next_shutdown(&mut self) {
        while self.next().await != Signal::Shutdown {}
    }

    /// The next signal: SIGINT or SIGTERM mean shut down, SIGHUP reload.
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        tokio::select! {
            _ = self.terminate.recv() => Signal::Shutdown,
            _ = self.interrupt.recv() => Signal::Shutdown,
            _ = self.hangup.recv() => Signal::Hangup,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Shutdown
        }
    }
}
