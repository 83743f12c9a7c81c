//! The live view while a drill runs: an indicatif progress bar with the
//! current request rate, success ratio, p99 and breakers not closed, redrawn
//! four times a second on a terminal; on anything else (a pipe, a CI log)
//! a plain line every five seconds, without escape codes.

use super::report::Recorder;
use super::watch::OpenBreakers;
use crate::loadgen::Live;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TTY_TICK: Duration = Duration::from_millis(250);
const PLAIN_TICK: Duration = Duration::from_secs(5);

/// Where the live view goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Nothing (`--quiet`).
    Quiet,
    /// Standard output (the report follows there).
    Stdout,
    /// Standard error, when standard output carries JSON.
    Stderr,
}

/// What the view reads each tick.
pub struct Feeds {
    pub live: Arc<Live>,
    pub recorder: Arc<Recorder>,
    pub open: OpenBreakers,
    pub t0: Instant,
    pub duration: Duration,
}

pub struct LiveView {
    task: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl LiveView {
    pub fn start(view: View, feeds: Feeds) -> Option<LiveView> {
        let tty = match view {
            View::Quiet => return None,
            View::Stdout => std::io::stdout().is_terminal(),
            View::Stderr => std::io::stderr().is_terminal(),
        };
        let bar = tty.then(|| {
            let target = if view == View::Stdout {
                ProgressDrawTarget::stdout()
            } else {
                ProgressDrawTarget::stderr()
            };
            let millis = u64::try_from(feeds.duration.as_millis()).unwrap_or(u64::MAX);
            let bar = ProgressBar::with_draw_target(Some(millis), target);
            if let Ok(style) = ProgressStyle::with_template("{elapsed:>4} [{bar:24}] {msg}") {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        let task = tokio::spawn(run(view, feeds, bar.clone()));
        Some(LiveView { task, bar })
    }

    pub async fn finish(self) {
        self.task.abort();
        let _ = self.task.await;
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

async fn run(view: View, feeds: Feeds, bar: Option<ProgressBar>) {
    let tick = if bar.is_some() { TTY_TICK } else { PLAIN_TICK };
    let mut last = (0u64, 0u64, 0u64);
    let mut last_at = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        let sent = feeds.live.sent.load(Ordering::Relaxed);
        let ok = feeds.live.ok.load(Ordering::Relaxed);
        let failed = feeds.live.failed.load(Ordering::Relaxed);
        let span = now
            .saturating_duration_since(last_at)
            .as_secs_f64()
            .max(1e-3);
        let rps = sent.saturating_sub(last.0) as f64 / span;
        let (done_ok, done_failed) = (ok.saturating_sub(last.1), failed.saturating_sub(last.2));
        let ratio = if done_ok + done_failed == 0 {
            "–".to_owned()
        } else {
            format!(
                "{:.2}%",
                done_ok as f64 * 100.0 / (done_ok + done_failed) as f64
            )
        };
        last = (sent, ok, failed);
        last_at = now;
        let elapsed = now.saturating_duration_since(feeds.t0);
        // The last whole second: the current one is still filling up.
        let p99 = elapsed
            .as_secs()
            .checked_sub(1)
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| feeds.recorder.bucket_p99(s))
            .map_or("–".to_owned(), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1000.0)
            });
        let open = feeds.open.lock().map(|o| o.clone()).unwrap_or_default();
        let breakers = if open.is_empty() {
            "breakers: all closed".to_owned()
        } else {
            let list: Vec<String> = open.iter().map(|(k, s)| format!("{k} {s}")).collect();
            format!("breakers: {}", list.join(", "))
        };
        let line = format!(
            "{rps:>6.0} req/s  ok {ratio:>8}  p99 {p99:>7}  in flight {:>4}  {breakers}",
            feeds.live.in_flight.load(Ordering::Relaxed)
        );
        match &bar {
            Some(bar) => {
                bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
                bar.set_message(line);
            }
            None => {
                let line = format!(
                    "[{:>4.0}s/{:.0}s] {line}",
                    elapsed.as_secs_f64(),
                    feeds.duration.as_secs_f64()
                );
                let _ = if view == View::Stdout {
                    writeln!(std::io::stdout().lock(), "{line}")
                } else {
                    writeln!(std::io::stderr().lock(), "{line}")
                };
            }
        }
    }
}
