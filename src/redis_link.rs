//! One guarded connection to the fleet's Redis, for each feature that keeps
//! state there (the cluster's shared health, the response cache,
//! `Idempotency-Key` across replicas): every call bounded by a timeout;
//! after a failure Redis is left alone for [`COOLDOWN`], so a dead Redis
//! costs one timeout a second, not one per request; a warning naming the
//! feature at most every [`WARN_EVERY`], and a line when it answers again.
//! A `None` answer means "decide alone, as one node would".
//!
//! Owns no key and knows nothing of what the values mean. The rate
//! limiter keeps its own connection (`limits::shared`): its fallback
//! decides admission and is tuned with it.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisResult};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// After a failed call, no call for this long.
pub const COOLDOWN: Duration = Duration::from_secs(1);
/// At most one warning per feature per this interval.
pub const WARN_EVERY: Duration = Duration::from_secs(30);

pub struct RedisLink {
    conn: ConnectionManager,
    /// The feature, for the log lines ("response cache").
    what: &'static str,
    timeout: Duration,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not asked.
    retry_at: AtomicU64,
    /// Milliseconds since `started` of the last warning, plus one (0: none).
    warned_at: AtomicU64,
    failing: AtomicBool,
}

impl RedisLink {
    /// Lazy: a Redis that is down at start is a fallback, not an error;
    /// only an unusable URL is.
    pub fn connect(url: &str, what: &'static str, timeout: Duration) -> RedisResult<RedisLink> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        Ok(RedisLink {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            what,
            timeout,
            started: Instant::now(),
            retry_at: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        })
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.conn.clone();
        self.guarded(cmd.query_async(&mut conn)).await
    }

    pub async fn invoke<T: FromRedisValue>(&self, call: &redis::ScriptInvocation<'_>) -> Option<T> {
        let mut conn = self.conn.clone();
        self.guarded(call.invoke_async(&mut conn)).await
    }

    async fn guarded<T>(&self, call: impl Future<Output = RedisResult<T>>) -> Option<T> {
        if self.millis() < self.retry_at.load(Ordering::Relaxed) {
            return None;
        }
        let error = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(feature = self.what, "Redis answers again");
                }
                return Some(value);
            }
            // The kind only: a message could quote the URL's password.
            Ok(Err(e)) => format!("{:?}", e.kind()),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        self.failed(&error);
        None
    }

    fn failed(&self, error: &str) {
        self.failing.store(true, Ordering::Relaxed);
        let now = self.millis();
        self.retry_at
            .fetch_max(now.saturating_add(millis(COOLDOWN)), Ordering::Relaxed);
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || (now + 1).saturating_sub(last) >= millis(WARN_EVERY);
        if due
            && self
                .warned_at
                .compare_exchange(last, now + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                feature = self.what,
                error,
                "Redis unavailable: this replica decides alone until it answers"
            );
        }
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
