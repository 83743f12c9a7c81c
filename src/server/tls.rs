//! TLS on the listeners (rustls with ring, no OpenSSL): the rustls server
//! config each TLS listener's connections are accepted with, ALPN (`h2`,
//! then `http/1.1`), mutual TLS on the admin listener when `[admin.tls]`
//! names a client CA, and reloading the certificate, key and client CAs
//! (SIGHUP, or a change of one of the files) without touching open
//! connections: a connection is accepted with the config current when it
//! arrived and keeps it; a file that cannot serve keeps the running config
//! and is logged with its key path. The whole rustls config is swapped
//! (not only the certificate, through a `ResolvesServerCert`), so a new
//! client CA reloads too. The session cache is shared across swaps, so a
//! reload does not end session resumption, except with client
//! certificates: a resumed session skips their verification, so there a
//! reload starts a new cache and every client is checked against the new CAs. Which files are read is
//! restart-only (`config::restart`). Knows nothing of HTTP beyond the ALPN
//! names; the handshake itself runs in `accept`.

use crate::config::tls::{TlsFileError, TlsMaterial};
use crate::config::TlsFiles;
use crate::telemetry::Counters;
use arc_swap::ArcSwap;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Sessions remembered for resumption per listener (rustls' default size).
const SESSION_CACHE: usize = 256;

/// What identifies a version of one file: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

/// The TLS of one listener: its files and the rustls config built from
/// them last.
pub(crate) struct ListenerTls {
    files: TlsFiles,
    current: ArcSwap<rustls::ServerConfig>,
    /// Resumable sessions, kept across reloads without client CAs.
    sessions: Arc<dyn StoresServerSessions>,
    /// The files' versions when they were last read.
    seen: Mutex<Vec<Stamp>>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Why a TLS listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] TlsFileError),
    #[error("{section}: {message}")]
    Setup {
        section: &'static str,
        message: String,
    },
}

impl ListenerTls {
    /// Reads `files` and builds the listener's first config.
    pub(crate) fn open(files: &TlsFiles) -> Result<Self, TlsError> {
        let seen = stamps(files);
        let sessions: Arc<dyn StoresServerSessions> = ServerSessionMemoryCache::new(SESSION_CACHE);
        let config = server_config(files, files.load()?, sessions.clone())?;
        Ok(ListenerTls {
            files: files.clone(),
            current: ArcSwap::from_pointee(config),
            sessions,
            seen: Mutex::new(seen),
        })
    }

    /// The config a connection accepted now is served with.
    pub(crate) fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again and swaps the new config in; a file that
    /// cannot serve changes nothing and is logged. Whether it swapped.
    pub(crate) fn reload(&self, counters: &Counters) -> bool {
        let seen = stamps(&self.files);
        if let Ok(mut last) = self.seen.lock() {
            *last = seen;
        }
        let sessions = match self.files.client_ca_file {
            None => self.sessions.clone(),
            Some(_) => ServerSessionMemoryCache::new(SESSION_CACHE),
        };
        let built = self
            .files
            .load()
            .map_err(TlsError::from)
            .and_then(|material| server_config(&self.files, material, sessions));
        match built {
            Ok(config) => {
                self.current.store(Arc::new(config));
                counters.tls_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(section = self.files.section, "TLS certificate reloaded");
                true
            }
            Err(e) => {
                counters.tls_reload_failures.fetch_add(1, Ordering::Relaxed);
                log_refusal(&e);
                false
            }
        }
    }

    /// Whether one of the files changed since it was last read.
    pub(crate) fn changed(&self) -> bool {
        let now = stamps(&self.files);
        self.seen.lock().map(|last| *last != now).unwrap_or(false)
    }
}

fn log_refusal(e: &TlsError) {
    match e {
        TlsError::File(e) => tracing::error!(
            path = %e.setting,
            file = %e.file,
            problem = %e.message,
            hint = e.hint,
            "TLS reload rejected: keeping the running certificate"
        ),
        TlsError::Setup { section, message } => tracing::error!(
            path = section,
            problem = %message,
            "TLS reload rejected: keeping the running certificate"
        ),
    }
}

fn stamps(files: &TlsFiles) -> Vec<Stamp> {
    let stamp = |path: &std::path::Path| -> Stamp {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let mut all = vec![stamp(&files.cert_file), stamp(&files.key_file)];
    if let Some(ca) = &files.client_ca_file {
        all.push(stamp(ca));
    }
    all
}

/// The rustls config of a listener: TLS 1.2 and 1.3 with ring's safe
/// defaults, ALPN `h2` before `http/1.1`, client certificates required
/// when there are client CAs.
fn server_config(
    files: &TlsFiles,
    material: TlsMaterial,
    sessions: Arc<dyn StoresServerSessions>,
) -> Result<rustls::ServerConfig, TlsError> {
    let setup = |message: String| TlsError::Setup {
        section: files.section,
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(e.to_string()))?;
    let builder = match material.client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| setup(format!("client_ca_file: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(material.key)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = sessions;
    Ok(config)
}

/// One certificate for every client (no SNI selection).
#[derive(Debug)]
struct Fixed(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Fixed {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The TLS listeners of a gateway, each set by `AppState::start_services`
/// when the config has its `[… .tls]`.
#[derive(Debug, Default)]
pub(crate) struct TlsListeners {
    pub(crate) main: std::sync::OnceLock<Arc<ListenerTls>>,
    pub(crate) admin: std::sync::OnceLock<Arc<ListenerTls>>,
}

impl TlsListeners {
    fn all(&self) -> impl Iterator<Item = &Arc<ListenerTls>> {
        self.main.get().into_iter().chain(self.admin.get())
    }

    /// Reads every listener's files again (SIGHUP).
    pub(crate) fn reload(&self, counters: &Counters) {
        for listener in self.all() {
            listener.reload(counters);
        }
    }

    /// Reads again the files of each listener whose files changed.
    pub(crate) fn reload_changed(&self, counters: &Counters) {
        for listener in self.all().filter(|l| l.changed()) {
            listener.reload(counters);
        }
    }
}
