//! Conversation state for the Responses API: every response the gateway
//! served on `/v1/responses` (unless the request said `store: false` or
//! `[responses] store = false`), so `previous_response_id` keeps working
//! when the next turn fails over to another provider, and
//! `GET|DELETE /v1/responses/{id}` work whoever served it.
//!
//! A bounded in-memory window holds the latest responses, so a follow-up
//! sent the moment a response ends finds it on this node; a bounded queue
//! feeds one writer task that persists them to the store (SQLite or
//! PostgreSQL, shared by replicas), and a retention task deletes expired
//! rows. The store is connected on first use: a gateway that never serves
//! the Responses API opens no database for it. It owns no HTTP and no
//! protocol knowledge: rows in, rows out.

use crate::store::{ResponseRow, Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, OnceCell};

/// Responses kept in memory, newest first out of the window last.
const WINDOW_ENTRIES: usize = 1024;
/// And at most this many bytes of them.
const WINDOW_BYTES: usize = 64 << 20;
/// Responses waiting to be written; a full queue drops the write (counted,
/// the window still has it) rather than slow requests down.
const QUEUE: usize = 4096;
const RETENTION_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
pub struct ConversationCounters {
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    #[error("the response store is unavailable: {0}")]
    Store(#[from] StoreError),
}

pub struct Conversations {
    store_url: Arc<str>,
    /// `[store] timeout`: the store bounds every call, connecting included.
    store_timeout: Duration,
    retention: Duration,
    store: Arc<OnceCell<Store>>,
    window: Mutex<Window>,
    writes: mpsc::Sender<Write>,
    /// Taken by the writer task when the first response is saved.
    writer: Mutex<Option<mpsc::Receiver<Write>>>,
    pub counters: Arc<ConversationCounters>,
}

/// The writer's queue: a delete follows the put it may race with.
enum Write {
    Put(Arc<ResponseRow>),
    /// `done` hears when it was executed: a delete is acknowledged only
    /// after every put queued before it, so a read that follows the
    /// client's DELETE cannot meet the row again.
    Delete {
        id: String,
        owner: String,
        done: tokio::sync::oneshot::Sender<()>,
    },
}

#[derive(Default)]
struct Window {
    rows: HashMap<String, Arc<ResponseRow>>,
    order: VecDeque<String>,
    bytes: usize,
}

impl Window {
    fn insert(&mut self, row: Arc<ResponseRow>) {
        let size = row_size(&row);
        if let Some(old) = self.rows.insert(row.id.clone(), row.clone()) {
            self.bytes -= row_size(&old);
        } else {
            self.order.push_back(row.id.clone());
        }
        self.bytes += size;
        while self.rows.len() > WINDOW_ENTRIES || self.bytes > WINDOW_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(old) = self.rows.remove(&oldest) {
                self.bytes -= row_size(&old);
            }
        }
    }

    fn remove(&mut self, id: &str) -> bool {
        let Some(old) = self.rows.remove(id) else {
            return false;
        };
        self.bytes -= row_size(&old);
        self.order.retain(|k| k != id);
        true
    }
}

fn row_size(row: &ResponseRow) -> usize {
    row.id.len() + row.input_items.len() + row.conversation.len() + row.response.len() + 128
}

impl Conversations {
    /// `store` reuses a connection the gateway already has for the same URL.
    pub fn new(
        store_url: String,
        store_timeout: Duration,
        retention: Duration,
        store: Option<Store>,
    ) -> Self {
        let cell = OnceCell::new();
        if let Some(store) = store {
            let _ = cell.set(store);
        }
        let (writes, writer) = mpsc::channel(QUEUE);
        Conversations {
            store_url: store_url.into(),
            store_timeout,
            retention,
            store: Arc::new(cell),
            window: Mutex::default(),
            writes,
            writer: Mutex::new(Some(writer)),
            counters: Arc::default(),
        }
    }

    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Keeps `row`: visible on this node at once, persisted shortly after.
    /// Must be called on a Tokio runtime (the first call starts the writer).
    pub fn save(&self, row: ResponseRow) {
        let row = Arc::new(row);
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(row.clone());
        self.start_writer();
        if self.writes.try_send(Write::Put(row)).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("response store queue full; a stored response is kept in memory only");
        }
    }

    /// The response `id` of `owner`, from memory or the store.
    pub async fn load(
        &self,
        id: &str,
        owner: &str,
        now_ms: i64,
    ) -> Result<Option<Arc<ResponseRow>>, ConversationError> {
        let cached = self
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rows
            .get(id)
            .cloned();
        if let Some(row) = cached {
            let visible = row.owner == owner && row.expires_at_ms > now_ms;
            return Ok(visible.then_some(row));
        }
        let store = connected(&self.store, &self.store_url, self.store_timeout).await?;
        Ok(bounded(store.get_response(id, owner, now_ms))
            .await?
            .map(Arc::new))
    }

    /// Deletes the response `id` of `owner`; whether there was one.
    pub async fn delete(&self, id: &str, owner: &str) -> Result<bool, ConversationError> {
        let in_window = {
            let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            let mine = window.rows.get(id).is_some_and(|r| r.owner == owner);
            mine && window.remove(id)
        };
        let store = connected(&self.store, &self.store_url, self.store_timeout).await?;
        let in_store = bounded(store.delete_response(id, owner)).await?;
        // A put still queued would bring it back: delete after it too, and
        // answer once that is done (bounded like any store call).
        self.start_writer();
        let (done, executed) = tokio::sync::oneshot::channel();
        let queued = Write::Delete {
            id: id.to_owned(),
            owner: owner.to_owned(),
            done,
        };
        if self.writes.send(queued).await.is_ok() {
            let _ = tokio::time::timeout(self.store_timeout, executed).await;
        }
        Ok(in_window || in_store)
    }

    fn start_writer(&self) {
        let Some(rx) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let store = self.store.clone();
        let url = self.store_url.clone();
        let timeout = self.store_timeout;
        let counters = self.counters.clone();
        tokio::spawn(write_loop(rx, store, (url, timeout), counters));
    }
}

async fn connected<'a>(
    cell: &'a OnceCell<Store>,
    url: &str,
    timeout: Duration,
) -> Result<&'a Store, ConversationError> {
    bounded(cell.get_or_try_init(|| Store::connect(url, timeout))).await
}

/// A store call (bounded by the store's own timeout) as this module's error.
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, ConversationError> {
    call.await.map_err(ConversationError::from)
}

/// Writes queued puts and deletes in order; deletes expired rows now and then.
async fn write_loop(
    mut rx: mpsc::Receiver<Write>,
    store: Arc<OnceCell<Store>>,
    (url, timeout): (Arc<str>, Duration),
    counters: Arc<ConversationCounters>,
) {
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    loop {
        let write = tokio::select! {
            write = rx.recv() => match write {
                Some(write) => Some(write),
                None => return,
            },
            _ = retention.tick() => None,
        };
        let store = match connected(&store, &url, timeout).await {
            Ok(store) => store,
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "stored response not written");
                continue;
            }
        };
        let done = match write {
            Some(Write::Put(ref row)) => bounded(store.put_response(row)).await,
            Some(Write::Delete {
                ref id, ref owner, ..
            }) => bounded(store.delete_response(id, owner)).await.map(drop),
            None => {
                let now = crate::telemetry::request_log::now_ms();
                bounded(store.delete_expired_responses(now)).await.map(drop)
            }
        };
        match (done, &write) {
            (Ok(()), Some(Write::Put(_))) => {
                counters.written.fetch_add(1, Ordering::Relaxed);
            }
            (Ok(()), _) => {}
            (Err(e), _) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "response store write failed");
            }
        }
        if let Some(Write::Delete { done, .. }) = write {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, owner: &str, size: usize) -> ResponseRow {
        ResponseRow {
            id: id.into(),
            owner: owner.into(),
            created_at_ms: 1,
            expires_at_ms: 100,
            provider: "p".into(),
            upstream_holds: false,
            input_items: "[]".into(),
            conversation: "x".repeat(size),
            response: "{}".into(),
        }
    }

    #[test]
    fn the_window_is_bounded_by_entries_and_bytes() {
        let mut window = Window::default();
        for i in 0..WINDOW_ENTRIES + 10 {
            window.insert(Arc::new(row(&format!("r{i}"), "k", 10)));
        }
        assert_eq!(window.rows.len(), WINDOW_ENTRIES);
        assert!(!window.rows.contains_key("r0"), "oldest evicted first");
        window.insert(Arc::new(row("big", "k", WINDOW_BYTES)));
        assert!(window.bytes <= WINDOW_BYTES || window.rows.is_empty());
        assert!(window.remove("r5") || !window.rows.contains_key("r5"));
    }

    #[tokio::test]
    async fn responses_are_scoped_to_their_owner_and_expire() {
        let dir = std::env::temp_dir().join(format!("sy-conv-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", dir.display());
        let conversations =
            Conversations::new(url, Duration::from_secs(5), Duration::from_secs(60), None);
        conversations.save(row("resp_1", "7", 3));
        assert!(conversations
            .load("resp_1", "7", 50)
            .await
            .unwrap()
            .is_some());
        assert!(conversations
            .load("resp_1", "8", 50)
            .await
            .unwrap()
            .is_none());
        assert!(conversations
            .load("resp_1", "7", 100)
            .await
            .unwrap()
            .is_none());
        assert!(!conversations.delete("resp_1", "8").await.unwrap());
        assert!(conversations.delete("resp_1", "7").await.unwrap());
        assert!(conversations
            .load("resp_1", "7", 50)
            .await
            .unwrap()
            .is_none());
        let _ = std::fs::remove_file(&dir);
    }

    /// A DELETE that comes while the row's put is still queued: once it is
    /// answered, no read finds the row, on this node or in the store.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delete_is_not_undone_by_the_put_queued_before_it() {
        let dir = std::env::temp_dir().join(format!("sy-conv-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}", dir.display());
        let conversations =
            Conversations::new(url, Duration::from_secs(5), Duration::from_secs(60), None);
        for i in 0..50 {
            let id = format!("resp_{i}");
            conversations.save(row(&id, "7", 3));
            assert!(conversations.delete(&id, "7").await.unwrap());
            assert!(
                conversations.load(&id, "7", 50).await.unwrap().is_none(),
                "{id} came back after its delete was answered"
            );
        }
        let _ = std::fs::remove_file(&dir);
    }
}
