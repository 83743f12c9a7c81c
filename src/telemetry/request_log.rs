//! The request log: one row per client request (time, id, key, route, the
//! chain of failed attempts, served target, status, latency, first token,
//! tokens, cost; never prompt or completion content), handed to a
//! background task that writes batches to the store, so the request path
//! only pushes into a bounded queue. Rows older than the retention are
//! deleted in the background. A full queue drops rows (counted) rather than
//! slow requests down; the loss window on a crash is one batch interval.

use crate::store::{RequestRow, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const QUEUE: usize = 16_384;
const BATCH: usize = 512;
const FLUSH_EVERY: Duration = Duration::from_millis(500);
const RETENTION_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct RequestLogCounters {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failed_batches: AtomicU64,
}

#[allow(
    clippy::large_enum_variant,
    reason = "rows are nearly every message; boxing them would add an allocation per request to save bytes on the rare flush"
)]
enum Msg {
    Row(RequestRow),
    /// Write what is queued, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct RequestLog {
    tx: mpsc::Sender<Msg>,
    /// The store the rows go to, for readers of the log (the status page).
    store: Store,
    pub counters: Arc<RequestLogCounters>,
}

impl RequestLog {
    /// Starts the writer and the retention task on the current runtime.
    pub fn start(store: Store, retention: Duration) -> Self {
        let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
        let counters = Arc::new(RequestLogCounters::default());
        let c = counters.clone();
        let writer_store = store.clone();
        let reader = store.clone();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut flushed: Vec<tokio::sync::oneshot::Sender<()>> = Vec::new();
            loop {
                // Wait for a first message, then gather what else arrives soon.
                match rx.recv().await {
                    None => break,
                    Some(Msg::Row(row)) => batch.push(row),
                    Some(Msg::Flush(done)) => flushed.push(done),
                }
                let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
                while batch.len() < BATCH && flushed.is_empty() {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(Msg::Row(row))) => batch.push(row),
                        Ok(Some(Msg::Flush(done))) => flushed.push(done),
                        Ok(None) | Err(_) => break,
                    }
                }
                if batch.is_empty() {
                    for done in flushed.drain(..) {
                        let _ = done.send(());
                    }
                    continue;
                }
                match writer_store.insert_requests(&batch).await {
                    Ok(()) => {
                        c.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        c.failed_batches.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, rows = batch.len(), "request log batch not written");
                    }
                }
                batch.clear();
                for done in flushed.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        tokio::spawn(async move {
            loop {
                let cutoff = std::time::SystemTime::now()
                    .checked_sub(retention)
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64);
                match store.delete_requests_before(cutoff).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(rows = n, "request log retention: deleted old rows"),
                    Err(e) => tracing::warn!(error = %e, "request log retention failed"),
                }
                tokio::time::sleep(RETENTION_EVERY).await;
            }
        });
        RequestLog {
            tx,
            store: reader,
            counters,
        }
    }

    /// The store the log is written to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Queues a row; never waits.
    pub fn push(&self, row: RequestRow) {
        if self.tx.try_send(Msg::Row(row)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits until every row queued before the call is written (shutdown,
    /// tests).
    pub async fn flush(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
