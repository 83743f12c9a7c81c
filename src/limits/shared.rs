//! Limits shared by every replica through Redis: one script call decides a
//! whole admission (`shared.lua`); releases and reconciliations go through a
//! queue to a background task so the request path never waits for them.
//! Errors are reported to the caller, which falls back to the local limiter.

use super::local::CONCURRENCY_RETRY;
use super::{Admission, Hold, LimitError, LimitKind, Limits, Refusal, Window};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

const FUNCTIONS: &str = include_str!("shared.lua");

static ADMIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{FUNCTIONS}\nreturn admit(server_now())\n")));
static RECONCILE: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{FUNCTIONS}\nreturn reconcile(server_now())\n")));

/// Longest wait for Redis on the request path before deciding locally.
const TIMEOUT: Duration = Duration::from_millis(200);
/// After a failure, Redis is left alone this long.
const COOLDOWN: Duration = Duration::from_secs(1);
/// At most one warning about Redis per this interval.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Releases and reconciliations waiting for the background task.
const QUEUE: usize = 4096;

pub(super) struct Shared {
    conn: ConnectionManager,
    prefix: Box<str>,
    /// Makes lease ids unique across replicas.
    replica: Box<str>,
    leases: AtomicU64,
    lease: Duration,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not asked.
    retry_at: AtomicU64,
    /// Milliseconds since `started` of the last warning, plus one (0: none yet).
    warned_at: AtomicU64,
    suppressed: AtomicU64,
    queue: mpsc::Sender<Deferred>,
}

/// Work that may happen after the request: a lost one costs accuracy only.
enum Deferred {
    Release {
        key: Box<str>,
        lease: Box<str>,
    },
    Reconcile {
        key: Box<str>,
        limit: u32,
        delta: i64,
    },
    /// Answered once everything queued before it is done.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum SharedError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {TIMEOUT:?}")]
    Timeout,
    #[error("unexpected answer from the limits script")]
    Malformed,
    #[error("the queue of releases and reconciliations is full")]
    QueueFull,
}

impl Shared {
    pub async fn connect(
        url: &str,
        prefix: &str,
        lease: Duration,
    ) -> Result<Arc<Shared>, LimitError> {
        let client = redis::Client::open(url).map_err(|e| LimitError::RedisUrl {
            reason: format!("{:?}", e.kind()),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        // Lazy: a Redis that is down at startup is a fallback, not a failure.
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            LimitError::RedisUrl {
                reason: format!("{:?}", e.kind()),
            }
        })?;
        let (queue, deferred) = mpsc::channel(QUEUE);
        let shared = Arc::new(Shared {
            conn,
            prefix: prefix.into(),
            replica: uuid::Uuid::new_v4().simple().to_string().into(),
            leases: AtomicU64::new(0),
            lease,
            started: Instant::now(),
            retry_at: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            queue,
        });
        tokio::spawn(run_deferred(shared.conn.clone(), deferred));
        let mut conn = shared.conn.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(TIMEOUT, ping.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => shared.failed(&SharedError::Redis(e)),
            Err(_) => shared.failed(&SharedError::Timeout),
        }
        Ok(shared)
    }

    /// False while cooling down after a failure.
    pub fn available(&self) -> bool {
        self.millis() >= self.retry_at.load(Ordering::Relaxed)
    }

    /// Records a failure: Redis is skipped for [`COOLDOWN`], and a warning is
    /// logged unless one was within [`WARN_EVERY`].
    pub fn failed(&self, error: &SharedError) {
        let now = self.millis();
        self.retry_at
            .fetch_max(now.saturating_add(millis(COOLDOWN)), Ordering::Relaxed);
        let last = self.warned_at.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_add(1).saturating_sub(last) >= millis(WARN_EVERY);
        if due
            && self
                .warned_at
                .compare_exchange(
                    last,
                    now.saturating_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            // Redis errors name the failure, never the URL or its password.
            tracing::warn!(
                %error,
                suppressed,
                "rate limits: Redis failed; each replica enforces the limits alone until it answers"
            );
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub async fn admit(
        self: &Arc<Self>,
        key_id: i64,
        limits: &Limits,
        estimated_tokens: u32,
    ) -> Result<Result<Admission, Refusal>, SharedError> {
        let base = self.key_base(key_id);
        let lease = limits.max_concurrent.map(|_| {
            let n = self.leases.fetch_add(1, Ordering::Relaxed);
            format!("{}:{n}", self.replica).into_boxed_str()
        });
        let mut call = ADMIT.prepare_invoke();
        call.key(format!("{base}:rpm"))
            .key(format!("{base}:tpm"))
            .key(format!("{base}:conc"));
        args(
            &mut call,
            limits,
            estimated_tokens,
            lease.as_deref(),
            self.lease,
        );
        let mut conn = self.conn.clone();
        let answer: Vec<i64> = tokio::time::timeout(TIMEOUT, call.invoke_async(&mut conn))
            .await
            .map_err(|_| SharedError::Timeout)??;
        let decision = Decision::parse(&answer, limits)?;
        let charged = limits
            .tokens_per_minute
            .map_or(0, |limit| estimated_tokens.min(limit));
        Ok(decision.into_result(
            || {
                Hold::Shared(SharedHold {
                    shared: self.clone(),
                    key: base,
                    lease,
                    tokens_limit: limits.tokens_per_minute,
                })
            },
            charged,
        ))
    }

    /// `{prefix}:{id}`: the braces make every key of one id a Redis Cluster
    /// hash tag, so the script's keys share a slot.
    fn key_base(&self, key_id: i64) -> Box<str> {
        format!("{}:{{{key_id}}}", self.prefix).into_boxed_str()
    }

    fn millis(&self) -> u64 {
        millis(self.started.elapsed())
    }

    pub async fn flush(&self) {
        let (done, finished) = oneshot::channel();
        if self.queue.send(Deferred::Flush(done)).await.is_ok() {
            // An error means the task is gone, with nothing left to wait for.
            let _ = finished.await;
        }
    }

    fn defer(&self, work: Deferred) {
        if self.queue.try_send(work).is_err() {
            // Redis is not keeping up: a lease then expires by itself, a
            // reconciliation is lost, and admissions go local for a while.
            self.failed(&SharedError::QueueFull);
        }
    }
}

fn args(
    call: &mut redis::ScriptInvocation<'_>,
    limits: &Limits,
    estimated_tokens: u32,
    lease: Option<&str>,
    lease_length: Duration,
) {
    call.arg(limits.requests_per_minute.unwrap_or(0))
        .arg(limits.tokens_per_minute.unwrap_or(0))
        .arg(estimated_tokens)
        .arg(limits.max_concurrent.unwrap_or(0))
        .arg(lease.unwrap_or(""))
        .arg(millis(lease_length).max(1));
}

/// The script's answer, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Decision {
    refused_by: Option<LimitKind>,
    wait: Duration,
    requests: Option<Window>,
    tokens: Option<Window>,
}

impl Decision {
    fn parse(answer: &[i64], limits: &Limits) -> Result<Decision, SharedError> {
        let &[refused_by, wait, r_rem, r_reset, t_rem, t_reset] = answer else {
            return Err(SharedError::Malformed);
        };
        let refused_by = match refused_by {
            0 => None,
            1 => Some(LimitKind::Requests),
            2 => Some(LimitKind::Tokens),
            3 => Some(LimitKind::Concurrency),
            _ => return Err(SharedError::Malformed),
        };
        let window = |limit: Option<u32>, remaining: i64, reset: i64| {
            let limit = limit?;
            (remaining >= 0).then(|| Window {
                limit,
                remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                reset: Duration::from_millis(u64::try_from(reset).unwrap_or(0)),
            })
        };
        Ok(Decision {
            refused_by,
            wait: Duration::from_millis(u64::try_from(wait).unwrap_or(0)),
            requests: window(limits.requests_per_minute, r_rem, r_reset),
            tokens: window(limits.tokens_per_minute, t_rem, t_reset),
        })
    }

    fn into_result(self, hold: impl FnOnce() -> Hold, charged: u32) -> Result<Admission, Refusal> {
        match self.refused_by {
            None => Ok(Admission {
                requests: self.requests,
                tokens: self.tokens,
                charged: AtomicU32::new(charged),
                hold: hold(),
            }),
            Some(which) => Err(Refusal {
                which,
                retry_after: if which == LimitKind::Concurrency {
                    CONCURRENCY_RETRY
                } else {
                    self.wait
                },
                requests: self.requests,
                tokens: self.tokens,
            }),
        }
    }
}

pub(super) struct SharedHold {
    shared: Arc<Shared>,
    key: Box<str>,
    lease: Option<Box<str>>,
    tokens_limit: Option<u32>,
}

impl SharedHold {
    pub fn adjust_tokens(&self, delta: i64) {
        if let Some(limit) = self.tokens_limit {
            self.shared.defer(Deferred::Reconcile {
                key: format!("{}:tpm", self.key).into_boxed_str(),
                limit,
                delta,
            });
        }
    }

    pub fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.shared.defer(Deferred::Release {
                key: format!("{}:conc", self.key).into_boxed_str(),
                lease,
            });
        }
    }
}

/// Runs deferred work in order until every sender (the limiter and its
/// admissions) is gone. A failure is not retried: leases expire anyway.
async fn run_deferred(mut conn: ConnectionManager, mut queue: mpsc::Receiver<Deferred>) {
    while let Some(work) = queue.recv().await {
        let done = match work {
            Deferred::Release { key, lease } => {
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(&*key).arg(&*lease);
                tokio::time::timeout(TIMEOUT, zrem.query_async::<()>(&mut conn)).await
            }
            Deferred::Reconcile { key, limit, delta } => {
                let mut call = RECONCILE.prepare_invoke();
                call.key(&*key).arg(limit).arg(delta);
                tokio::time::timeout(TIMEOUT, call.invoke_async::<()>(&mut conn)).await
            }
            Deferred::Flush(done) => {
                // The asker may have given up; nothing to do then.
                let _ = done.send(());
                continue;
            }
        };
        if !matches!(done, Ok(Ok(()))) {
            tracing::debug!(
                "rate limits: a release or reconciliation did not reach Redis (a lease then expires by itself)"
            );
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    //! The script's GCRA math against the machine's Redis, at chosen times.

    use super::*;

    static ADMIT_AT: LazyLock<Script> =
        LazyLock::new(|| Script::new(&format!("{FUNCTIONS}\nreturn admit(tonumber(ARGV[7]))\n")));
    static RECONCILE_AT: LazyLock<Script> = LazyLock::new(|| {
        Script::new(&format!(
            "{FUNCTIONS}\nreturn reconcile(tonumber(ARGV[3]))\n"
        ))
    });

    const SEC: i64 = 1_000_000;

    struct Lua {
        conn: redis::aio::MultiplexedConnection,
        base: String,
    }

    impl Lua {
        async fn new(test: &str) -> Lua {
            let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
            let conn = client.get_multiplexed_async_connection().await.unwrap();
            let base = format!(
                "switchyard-test-lua-{test}-{}:{{1}}",
                uuid::Uuid::new_v4().simple()
            );
            Lua { conn, base }
        }

        async fn admit(&mut self, limits: Limits, tokens: u32, lease: &str, now: i64) -> Decision {
            let mut call = ADMIT_AT.prepare_invoke();
            call.key(format!("{}:rpm", self.base))
                .key(format!("{}:tpm", self.base))
                .key(format!("{}:conc", self.base));
            args(
                &mut call,
                &limits,
                tokens,
                Some(lease),
                Duration::from_secs(10),
            );
            call.arg(now);
            let answer: Vec<i64> = call.invoke_async(&mut self.conn).await.unwrap();
            Decision::parse(&answer, &limits).unwrap()
        }

        async fn reconcile(&mut self, limit: u32, delta: i64, now: i64) {
            let mut call = RECONCILE_AT.prepare_invoke();
            call.key(format!("{}:tpm", self.base))
                .arg(limit)
                .arg(delta)
                .arg(now);
            call.invoke_async::<()>(&mut self.conn).await.unwrap();
        }

        async fn clean(mut self) {
            let keys = ["rpm", "tpm", "conc"].map(|k| format!("{}:{k}", self.base));
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut self.conn)
                .await
                .unwrap();
        }
    }

    fn limits(rpm: Option<u32>, tpm: Option<u32>, concurrent: Option<u32>) -> Limits {
        Limits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            max_concurrent: concurrent,
        }
    }

    // Far from 0 and beyond f64's 15 significant digits of `%.14g`, so a TAT
    // stored with lost precision would show.
    const T0: i64 = 1_700_000_000 * SEC + 123_457;

    #[tokio::test]
    async fn requests_burst_then_one_per_interval() {
        let mut lua = Lua::new("rpm").await;
        let l = limits(Some(6), None, None);
        for i in 0..6 {
            let d = lua.admit(l, 0, "", T0).await;
            assert_eq!(d.refused_by, None, "request {i}");
            assert_eq!(d.requests.map(|w| w.remaining), Some(5 - i));
        }
        let d = lua.admit(l, 0, "", T0).await;
        assert_eq!(d.refused_by, Some(LimitKind::Requests));
        assert_eq!(d.wait, Duration::from_secs(10));
        assert_eq!(d.requests.map(|w| w.reset), Some(Duration::from_secs(60)));
        let d = lua.admit(l, 0, "", T0 + 10 * SEC - 1).await;
        assert_eq!(d.refused_by, Some(LimitKind::Requests), "1 µs early");
        assert_eq!(d.wait, Duration::from_millis(1), "rounded up to a whole ms");
        assert_eq!(lua.admit(l, 0, "", T0 + 10 * SEC).await.refused_by, None);
        lua.clean().await;
    }

    #[tokio::test]
    async fn tokens_are_weighted_all_or_nothing_and_reconciled() {
        let mut lua = Lua::new("tpm").await;
        let l = limits(Some(100), Some(1000), None);
        let d = lua.admit(l, 600, "", T0).await;
        assert_eq!(d.tokens.map(|w| w.remaining), Some(400));
        let d = lua.admit(l, 500, "", T0).await;
        assert_eq!(d.refused_by, Some(LimitKind::Tokens));
        assert_eq!(d.wait, Duration::from_secs(6));
        assert_eq!(
            d.requests.map(|w| w.remaining),
            Some(99),
            "the refused request was not counted"
        );
        // Used 100 of the 600 estimated: 500 come back.
        lua.reconcile(1000, -500, T0).await;
        let d = lua.admit(l, 0, "", T0).await;
        assert_eq!(d.tokens.map(|w| w.remaining), Some(900));
        // A late charge of 2000 is debt: two minutes of nothing.
        lua.reconcile(1000, 2000, T0).await;
        let d = lua.admit(l, 0, "", T0).await;
        assert_eq!(d.refused_by, Some(LimitKind::Tokens));
        assert_eq!(d.wait, Duration::from_secs(66));
        // Oversized: charged as the whole limit, once the bucket is full.
        let late = T0 + 10 * 60 * SEC;
        let d = lua.admit(l, 50_000, "", late).await;
        assert_eq!(d.refused_by, None);
        assert_eq!(d.tokens.map(|w| w.remaining), Some(0));
        lua.clean().await;
    }

    #[tokio::test]
    async fn concurrency_leases_expire_and_can_be_released() {
        let mut lua = Lua::new("conc").await;
        let l = limits(None, None, Some(2));
        assert_eq!(lua.admit(l, 0, "a", T0).await.refused_by, None);
        assert_eq!(lua.admit(l, 0, "b", T0).await.refused_by, None);
        assert_eq!(
            lua.admit(l, 0, "c", T0).await.refused_by,
            Some(LimitKind::Concurrency)
        );
        redis::cmd("ZREM")
            .arg(format!("{}:conc", lua.base))
            .arg("a")
            .query_async::<()>(&mut lua.conn)
            .await
            .unwrap();
        assert_eq!(lua.admit(l, 0, "c", T0).await.refused_by, None);
        assert_eq!(
            lua.admit(l, 0, "d", T0 + 9 * SEC).await.refused_by,
            Some(LimitKind::Concurrency)
        );
        // The 10 s leases of "b" and "c" lapse, as a crashed replica's would.
        assert_eq!(lua.admit(l, 0, "d", T0 + 10 * SEC).await.refused_by, None);
        assert_eq!(lua.admit(l, 0, "e", T0 + 10 * SEC).await.refused_by, None);
        lua.clean().await;
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let l = limits(Some(1), None, None);
        assert!(Decision::parse(&[], &l).is_err());
        assert!(Decision::parse(&[9, 0, 0, 0, 0, 0], &l).is_err());
        let d = Decision::parse(&[0, -5, -1, -7, 3, 0], &l).unwrap();
        assert_eq!(d.wait, Duration::ZERO);
        assert_eq!(d.requests, None, "remaining -1: no such window");
        assert_eq!(d.tokens, None, "no token limit configured");
    }
}
