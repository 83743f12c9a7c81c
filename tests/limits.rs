//! Per-key rate limits through the public API: local limits, the headers a
//! client gets, and limits shared by two limiters (two replicas) through the
//! machine's real Redis (127.0.0.1:6379), each test under its own key prefix,
//! deleted after it. Assertions are on counts, never on elapsed time.

use std::sync::Arc;
use std::time::Duration;
use switchyard::config::RedisUrl;
use switchyard::limits::{Admission, LimitKind, LimitSettings, Limiter, Limits, Refusal};

const REDIS: &str = "redis://127.0.0.1:6379";

fn limits(rpm: Option<u32>, tpm: Option<u32>, concurrent: Option<u32>) -> Limits {
    Limits {
        requests_per_minute: rpm,
        tokens_per_minute: tpm,
        max_concurrent: concurrent,
    }
}

async fn local() -> Limiter {
    Limiter::new(&LimitSettings::default()).await.unwrap()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn collect(
    headers: impl Iterator<Item = (http::HeaderName, http::HeaderValue)>,
) -> Vec<(String, String)> {
    headers
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn local_requests_per_minute() {
    let limiter = local().await;
    let l = limits(Some(5), None, None);
    let mut admitted = Vec::new();
    let mut refusals = Vec::new();
    for _ in 0..20 {
        match limiter.admit(7, &l, 0).await {
            Ok(a) => admitted.push(a),
            Err(r) => refusals.push(r),
        }
    }
    assert_eq!(admitted.len(), 5);
    let remaining: Vec<u32> = admitted
        .iter()
        .filter_map(|a| a.requests().map(|w| w.remaining))
        .collect();
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    assert!(refusals.iter().all(|r| r.which == LimitKind::Requests));
    // One request comes back every 12 s.
    let r = &refusals[0];
    assert!(r.retry_after > Duration::ZERO && r.retry_after <= Duration::from_secs(12));
    // Other keys are not affected.
    assert!(limiter.admit(8, &l, 0).await.is_ok());
    // Admissions hold nothing: dropping them gives no request back.
    drop(admitted);
    assert!(limiter.admit(7, &l, 0).await.is_err());
}

#[tokio::test]
async fn local_tokens_per_minute_with_reconciliation() {
    let limiter = local().await;
    let l = limits(None, Some(1000), None);
    let first = limiter.admit(1, &l, 400).await.unwrap();
    let second = limiter.admit(1, &l, 400).await.unwrap();
    let refused = limiter.admit(1, &l, 400).await.unwrap_err();
    assert_eq!(refused.which, LimitKind::Tokens);
    // 200 are left; 200 more take 12 s to come back.
    assert!(refused.retry_after > Duration::from_secs(11));
    assert!(refused.retry_after <= Duration::from_secs(12));
    // The first request really used 100: 300 come back, so 400 fit again.
    first.reconcile(100);
    first.reconcile(100); // again: no change
    let third = limiter.admit(1, &l, 400).await.unwrap();
    // The second used 1400: 1000 more than estimated, so the key is in debt
    // and even a request estimated at nothing waits.
    second.reconcile(1400);
    let in_debt = limiter.admit(1, &l, 0).await.unwrap_err();
    assert_eq!(in_debt.which, LimitKind::Tokens);
    assert!(in_debt.retry_after > Duration::from_secs(30));
    // Refunding the debt (a request that turned out to be cached, say) reopens the key.
    second.reconcile(0);
    third.reconcile(0);
    assert!(limiter.admit(1, &l, 400).await.is_ok());
}

/// Admission runs before the body is read, on its declared length; the
/// estimate is raised once the body and `max_tokens` are known, never
/// lowered by that, and capped at the minute's limit.
#[tokio::test]
async fn a_raised_estimate_charges_the_difference_capped_at_the_limit() {
    let limiter = local().await;
    let l = limits(None, Some(1000), None);
    let admitted = limiter.admit(1, &l, 100).await.unwrap();
    admitted.raise_estimate(50); // lower: no change
    let fits = limiter.admit(1, &l, 900).await.unwrap();
    drop(fits);
    let second = limiter.admit(2, &l, 100).await.unwrap();
    second.raise_estimate(1_000_000);
    // Charged as the whole minute (1000), not a million: the next token
    // waits, but for a fraction of a minute, not for hours.
    let full = limiter.admit(2, &l, 1).await.unwrap_err();
    assert_eq!(full.which, LimitKind::Tokens);
    assert!(full.retry_after <= Duration::from_secs(1), "{full:?}");
    // Reconciling to what the upstream reported refunds the raise.
    second.reconcile(10);
    assert!(limiter.admit(2, &l, 900).await.is_ok());
}

#[tokio::test]
async fn local_concurrency_slots_come_back_on_drop() {
    let limiter = Arc::new(local().await);
    let l = limits(None, None, Some(2));
    let a = limiter.admit(1, &l, 0).await.unwrap();
    let _b = limiter.admit(1, &l, 0).await.unwrap();
    let refused = limiter.admit(1, &l, 0).await.unwrap_err();
    assert_eq!(refused.which, LimitKind::Concurrency);
    assert_eq!(refused.retry_after, Duration::from_secs(1));
    drop(a);
    let c = limiter.admit(1, &l, 0).await.unwrap();
    assert!(limiter.admit(1, &l, 0).await.is_err());
    drop(c);

    // A request whose future is dropped mid-flight (client gone) gives its slot back.
    let (admitted, is_admitted) = tokio::sync::oneshot::channel();
    let task = tokio::spawn({
        let limiter = limiter.clone();
        async move {
            let _slot = limiter.admit(1, &l, 0).await.unwrap();
            let _ = admitted.send(());
            std::future::pending::<()>().await;
        }
    });
    is_admitted.await.unwrap();
    assert!(limiter.admit(1, &l, 0).await.is_err(), "both slots taken");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert!(limiter.admit(1, &l, 0).await.is_ok());
}

#[tokio::test]
async fn headers_on_success_and_refusal() {
    let limiter = local().await;
    let l = limits(Some(2), Some(100), None);
    let ok = limiter.admit(1, &l, 30).await.unwrap();
    let headers = collect(ok.headers());
    assert_eq!(header(&headers, "x-ratelimit-limit-requests"), Some("2"));
    assert_eq!(
        header(&headers, "x-ratelimit-remaining-requests"),
        Some("1")
    );
    assert_eq!(header(&headers, "x-ratelimit-limit-tokens"), Some("100"));
    assert_eq!(header(&headers, "x-ratelimit-remaining-tokens"), Some("70"));
    // 30 tokens at 100/min replenish in 18 s; one request at 2/min in 30 s.
    assert_eq!(header(&headers, "x-ratelimit-reset-tokens"), Some("18s"));
    assert_eq!(header(&headers, "x-ratelimit-reset-requests"), Some("30s"));
    assert_eq!(header(&headers, "retry-after"), None);
    assert_eq!(headers.len(), 6);

    let _second = limiter.admit(1, &l, 0).await.unwrap();
    let refusal: Refusal = limiter.admit(1, &l, 0).await.unwrap_err();
    assert_eq!(refusal.which, LimitKind::Requests);
    let headers = collect(refusal.headers());
    let retry: u64 = header(&headers, "retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let retry_ms: u64 = header(&headers, "retry-after-ms").unwrap().parse().unwrap();
    assert!(retry_ms <= retry * 1000 && retry_ms > (retry - 1) * 1000);
    assert_eq!(
        header(&headers, "x-ratelimit-remaining-requests"),
        Some("0")
    );
    let reset = header(&headers, "x-ratelimit-reset-requests").unwrap();
    assert!(reset.ends_with('s') && reset != "0s", "{reset}");
    assert!(refusal.to_string().contains("requests per minute"));

    // A key without limits gets no headers and is never refused.
    let free = limiter
        .admit(2, &Limits::default(), u32::MAX)
        .await
        .unwrap();
    assert_eq!(free.headers().count(), 0);
}

#[tokio::test]
async fn zero_limit_admits_nothing() {
    let limiter = local().await;
    let refusal = limiter
        .admit(1, &limits(None, None, Some(0)), 0)
        .await
        .unwrap_err();
    assert_eq!(refusal.which, LimitKind::Concurrency);
}

/// A unique key prefix for one test, and the keys under it deleted at the end.
struct RedisScope {
    prefix: String,
}

impl RedisScope {
    fn new(test: &str) -> RedisScope {
        RedisScope {
            prefix: format!("switchyard-test-{test}-{}", uuid::Uuid::new_v4().simple()),
        }
    }

    fn settings(&self) -> LimitSettings {
        LimitSettings {
            redis_url: Some(RedisUrl(REDIS.to_owned())),
            key_prefix: self.prefix.clone(),
        }
    }

    async fn replica(&self) -> Arc<Limiter> {
        Arc::new(Limiter::new(&self.settings()).await.unwrap())
    }

    async fn keys(&self) -> Vec<String> {
        let client = redis::Client::open(REDIS).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("KEYS")
            .arg(format!("{}:*", self.prefix))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    async fn clean(self, replicas: &[Arc<Limiter>]) {
        for r in replicas {
            r.flush().await;
        }
        let keys = self.keys().await;
        if keys.is_empty() {
            return;
        }
        let client = redis::Client::open(REDIS).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("DEL")
            .arg(&keys)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
}

/// `n` admissions at once, alternating between replicas; the admitted ones are kept.
async fn hammer(
    replicas: &[Arc<Limiter>],
    key: i64,
    l: Limits,
    tokens: u32,
    n: usize,
) -> Vec<Admission> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let limiter = replicas[i % replicas.len()].clone();
            tokio::spawn(async move { limiter.admit(key, &l, tokens).await })
        })
        .collect();
    let mut admitted = Vec::new();
    for t in tasks {
        if let Ok(a) = t.await.unwrap() {
            admitted.push(a);
        }
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_replicas_share_requests_per_minute() {
    let scope = RedisScope::new("rpm");
    let replicas = [scope.replica().await, scope.replica().await];
    let l = limits(Some(10), None, None);
    let admitted = hammer(&replicas, 1, l, 0, 100).await;
    // 10 per minute is one every 6 s: nothing comes back during the test.
    assert!(!admitted.is_empty());
    assert!(admitted.len() <= 10, "{} admitted", admitted.len());
    assert!(admitted.iter().all(Admission::is_shared), "Redis decided");
    // Another key has its own limit.
    assert_eq!(hammer(&replicas, 2, l, 0, 5).await.len(), 5);
    scope.clean(&replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_replicas_share_tokens_and_reconciliation() {
    let scope = RedisScope::new("tpm");
    let replicas = [scope.replica().await, scope.replica().await];
    let l = limits(None, Some(1000), None);
    let admitted = hammer(&replicas, 1, l, 300, 40).await;
    assert!(!admitted.is_empty());
    assert!(admitted.len() <= 3, "{} admitted", admitted.len());
    // Refunds reach Redis: every admitted request really used nothing.
    for a in &admitted {
        a.reconcile(0);
    }
    replicas[0].flush().await;
    replicas[1].flush().await;
    let again = hammer(&replicas, 1, l, 300, 40).await;
    assert!(!again.is_empty());
    assert!(again.len() <= 3, "{} admitted", again.len());
    // A late charge reaches the other replica as debt.
    again[0].reconcile(5000);
    replicas[0].flush().await;
    replicas[1].flush().await;
    let refused = replicas[1].admit(1, &l, 0).await.unwrap_err();
    assert_eq!(refused.which, LimitKind::Tokens);
    assert!(refused.retry_after > Duration::from_secs(60));
    scope.clean(&replicas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_replicas_share_concurrency() {
    let scope = RedisScope::new("conc");
    let replicas = [scope.replica().await, scope.replica().await];
    let l = limits(None, None, Some(3));
    let held = hammer(&replicas, 1, l, 0, 30).await;
    assert!(!held.is_empty());
    assert!(held.len() <= 3, "{} in flight", held.len());
    let refused = replicas[0].admit(1, &l, 0).await.unwrap_err();
    assert_eq!(refused.which, LimitKind::Concurrency);
    // Releases travel through each replica's queue; flushing waits for them.
    drop(held);
    replicas[0].flush().await;
    replicas[1].flush().await;
    let again = hammer(&replicas, 1, l, 0, 30).await;
    assert!(!again.is_empty() && again.len() <= 3, "{}", again.len());
    drop(again);
    replicas[0].flush().await;
    replicas[1].flush().await;
    // Every lease was given back, so Redis dropped the emptied set.
    assert_eq!(scope.keys().await, Vec::<String>::new());
    scope.clean(&replicas).await;
}

#[tokio::test]
async fn redis_unreachable_falls_back_to_each_replica_alone() {
    let settings = LimitSettings {
        // Nothing listens on port 1.
        redis_url: Some(RedisUrl("redis://127.0.0.1:1".to_owned())),
        key_prefix: "switchyard-test-down".to_owned(),
    };
    let a = Limiter::new(&settings)
        .await
        .expect("a Redis that is down is not a startup error");
    let b = Limiter::new(&settings).await.unwrap();
    let l = limits(Some(3), None, None);
    let mut admitted = Vec::new();
    for _ in 0..10 {
        admitted.extend(a.admit(1, &l, 0).await.ok());
        admitted.extend(b.admit(1, &l, 0).await.ok());
    }
    // Fail open to local limits: each replica enforces the full limit alone.
    assert_eq!(admitted.len(), 6);
    assert!(admitted.iter().all(|a| !a.is_shared()));
    // Flushing with Redis down does not hang (the release queue fails fast).
    a.flush().await;
}

#[tokio::test]
async fn invalid_redis_url_is_a_startup_error_without_the_url() {
    let settings = LimitSettings {
        redis_url: Some(RedisUrl("redis://:hunter2@[::1".to_owned())),
        key_prefix: "switchyard".to_owned(),
    };
    let err = Limiter::new(&settings).await.unwrap_err().to_string();
    assert!(err.contains("limits.redis_url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
