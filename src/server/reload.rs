//! Hot reload: SIGHUP, or a change of the config file's modification time
//! (checked every 2 s), loads and fully validates the file, then swaps the
//! route table atomically. An invalid file changes nothing and every problem
//! is logged with its key path. A file that changes a setting read only at
//! start (`Config::restart_only_changes`) is refused too, naming each, so
//! the running gateway never silently differs from its file. Target health
//! survives (see `routing::table`); in-flight requests finish on the table
//! they started.

use super::AppState;
use crate::config::Config;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

/// Loads `path` and swaps it in. Returns whether the running config changed.
pub fn reload_from(path: &Path, state: &AppState) -> bool {
    match Config::load(path) {
        Ok(config) => {
            let restart_only = state.table.load().config.restart_only_changes(&config);
            if !restart_only.is_empty() {
                state
                    .counters
                    .config_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                for path in &restart_only {
                    tracing::error!(
                        path,
                        "config reload rejected: this setting takes effect only on restart"
                    );
                }
                tracing::error!(
                    file = %path.display(),
                    changed = restart_only.join(","),
                    "config reload refused: restart to apply these settings, or revert them; keeping the running config"
                );
                return false;
            }
            let routes = config.route_names().join(",");
            state.reload(config);
            state
                .counters
                .config_reloads
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(path = %path.display(), routes, "config reloaded");
            true
        }
        Err(errors) => {
            state
                .counters
                .config_reload_failures
                .fetch_add(1, Ordering::Relaxed);
            for issue in &errors.0 {
                tracing::error!(path = %issue.path, problem = %issue.message, hint = issue.hint.as_deref().unwrap_or(""), "config reload rejected");
            }
            tracing::error!(file = %path.display(), errors = errors.0.len(), "invalid config: keeping the running one");
            false
        }
    }
}

fn modified(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The config file, watched by modification time and size.
pub struct ConfigFile {
    pub path: PathBuf,
    last_seen: Option<(SystemTime, u64)>,
}

impl ConfigFile {
    pub const POLL_EVERY: Duration = Duration::from_secs(2);

    pub fn new(path: PathBuf) -> Self {
        let last_seen = modified(&path);
        ConfigFile { path, last_seen }
    }

    /// Whether the file changed since the last call (or since `new`).
    pub fn changed(&mut self) -> bool {
        let now = modified(&self.path);
        if now.is_some() && now != self.last_seen {
            self.last_seen = now;
            return true;
        }
        false
    }

    /// Reloads now and remembers the file's current version.
    pub fn reload(&mut self, state: &AppState) -> bool {
        self.last_seen = modified(&self.path);
        reload_from(&self.path, state)
    }
}
