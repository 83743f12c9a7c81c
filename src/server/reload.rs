//! Hot reload: SIGHUP, or a change of the config file's modification time
//! (checked every 2 s), loads and fully validates the file, then swaps the
//! route table atomically. An invalid file changes nothing and every problem
//! is logged with its key path. Target health survives (see
//! `routing::table`); in-flight requests finish on the table they started.

use super::AppState;
use crate::config::Config;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const POLL_EVERY: Duration = Duration::from_secs(2);

/// Loads `path` and swaps it in. Returns whether the running config changed.
pub fn reload_from(path: &Path, state: &AppState) -> bool {
    match Config::load(path) {
        Ok(config) => {
            let running = state.table.load().config.server.listen;
            if config.server.listen != running {
                tracing::warn!(
                    old = %running,
                    new = %config.server.listen,
                    "server.listen changed: takes effect on restart; everything else reloaded"
                );
            }
            let routes = config.route_names().join(",");
            state.reload(config);
            tracing::info!(path = %path.display(), routes, "config reloaded");
            true
        }
        Err(errors) => {
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

/// Reloads on SIGHUP and, if enabled in the config, on file changes. Runs
/// until the task is dropped.
pub async fn watch(path: PathBuf, state: Arc<AppState>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut last_seen = modified(&path);
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        tokio::select! {
            () = sighup => {
                tracing::info!("SIGHUP: reloading config");
                last_seen = modified(&path);
                reload_from(&path, &state);
            }
            _ = tick.tick() => {
                if !state.table.load().config.server.watch_config {
                    continue;
                }
                let now = modified(&path);
                if now.is_some() && now != last_seen {
                    last_seen = now;
                    reload_from(&path, &state);
                }
            }
        }
    }
}
