//! Target health shared by replicas through the real Redis on
//! 127.0.0.1:6379 (`[cluster]`): two gateways in this process, each with its
//! own breakers, over the same simulators. Every test uses a key prefix of
//! its own. Assertions are on states and the simulators' counts, never on
//! elapsed time; waits for the other replica are bounded (`eventually`).

mod common;

use common::*;
use http::{Method, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use switchyard::resilience::breaker::{BreakerPolicy, State};
use switchyard::routing::health::{HealthRegistry, TargetHealth};
use switchyard::server::Gateway;
use switchyard::sim::{Behavior, SimHandle};

const REDIS: &str = "redis://127.0.0.1:6379";

fn prefix() -> String {
    format!("sy-test-{}", uuid::Uuid::new_v4().simple())
}

/// Policy for two replicas `a` and `b` sharing `prefix`: one attempt per
/// target, then the next target; breakers that stay open for the test.
fn replica_config(prefix: &str, replica: &str, breaker: &str) -> String {
    format!(
        r#"
[defaults.retry]
max_attempts_per_target = 1
base_backoff = "5ms"
max_backoff = "20ms"
max_retry_after = "60s"
[defaults.timeouts]
first_byte = "5s"
total = "20s"
[defaults.breaker]
min_requests = 1000
open_base = "60s"
{breaker}
[limits]
key_prefix = "{prefix}"
[cluster]
redis_url = "{REDIS}"
replica = "{replica}"
sync_interval = "20ms"
"#
    )
}

async fn two_replicas(sims: &[&SimHandle], breaker: &str) -> (Gateway, Gateway) {
    let prefix = prefix();
    let a = gateway(sims, &replica_config(&prefix, "a", breaker)).await;
    let b = gateway(sims, &replica_config(&prefix, "b", breaker)).await;
    (a, b)
}

/// The first target's (`p0`, the primary's) health on `gw`.
fn primary(gw: &Gateway) -> Arc<TargetHealth> {
    gw.state()
        .registry
        .all()
        .into_iter()
        .find(|t| t.key.starts_with("p0/"))
        .expect("the primary's health")
}

async fn served(gw: &Gateway) {
    let reply = chat(&client(), gw, chat_body(false)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn a_breaker_opened_by_one_replica_keeps_the_other_away_and_says_who() {
    let dead = sim_with("primary", failing(503)).await;
    let backup = sim("backup").await;
    let (a, b) = two_replicas(&[&dead, &backup], "consecutive_failures = 3").await;
    for _ in 0..3 {
        served(&a).await;
    }
    assert_eq!(primary(&a).state(), State::Open);
    let on_b = primary(&b);
    eventually("b follows a's breaker", || on_b.state() == State::Open).await;

    dead.reset_stats();
    for _ in 0..5 {
        served(&b).await;
    }
    assert_eq!(dead.stats().requests, 0, "b never tried the dead primary");

    let admin = call(
        &client(),
        Method::GET,
        &format!("http://{}/admin/targets", b.addr()),
        "",
        &[],
    )
    .await
    .json();
    let target = admin["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"].as_str().unwrap().starts_with("p0/"))
        .unwrap()
        .clone();
    assert_eq!(target["state"], "open", "{target}");
    assert_eq!(target["opened_by"]["replica"], "a", "{target}");
    assert!(target["opened_by"]["at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn failures_in_a_row_are_counted_across_replicas() {
    let dead = sim_with("primary", failing(500)).await;
    let backup = sim("backup").await;
    let (a, b) = two_replicas(&[&dead, &backup], "consecutive_failures = 4").await;
    // Two failures each: below the limit on either replica alone.
    for gw in [&a, &b, &a, &b] {
        served(gw).await;
    }
    let (on_a, on_b) = (primary(&a), primary(&b));
    eventually("the fleet's fourth failure opens both", || {
        on_a.state() == State::Open && on_b.state() == State::Open
    })
    .await;
    assert_eq!(dead.stats().requests, 4);
    assert_eq!(
        on_a.snapshot(tokio::time::Instant::now())
            .consecutive_failures,
        0
    );
}

#[tokio::test]
async fn a_retry_after_seen_by_one_replica_is_honoured_by_the_other() {
    let limited = sim_with(
        "primary",
        Behavior {
            status_rates: vec![(429, 1.0)],
            retry_after: Some(Duration::from_secs(30)),
            ..Behavior::default()
        },
    )
    .await;
    let backup = sim("backup").await;
    let (a, b) = two_replicas(&[&limited, &backup], "consecutive_failures = 0").await;
    served(&a).await;
    let now = tokio::time::Instant::now();
    assert!(
        primary(&a).cooled_until(now).is_some(),
        "a cools the primary"
    );
    let on_b = primary(&b);
    eventually("b cools it too", || {
        on_b.cooled_until(tokio::time::Instant::now()).is_some()
    })
    .await;
    let left = on_b.cooled_until(tokio::time::Instant::now()).unwrap() - now;
    assert!(left > Duration::from_secs(20), "b waits as long: {left:?}");

    limited.reset_stats();
    for _ in 0..5 {
        served(&b).await;
    }
    assert_eq!(
        limited.stats().requests,
        0,
        "b never tried the limited primary"
    );
}

fn probing_policy() -> BreakerPolicy {
    BreakerPolicy {
        consecutive_failures: 1,
        min_requests: 1000,
        open_base: Duration::from_millis(300),
        half_open_probes: 1,
        close_after: 1,
        ..BreakerPolicy::default()
    }
}

fn sharing_registry(prefix: &str, replica: &str) -> Arc<HealthRegistry> {
    let registry = Arc::new(HealthRegistry::default());
    let settings = switchyard::config::ClusterSettings {
        redis_url: switchyard::config::RedisUrl(REDIS.into()),
        key_prefix: prefix.into(),
        replica: Some(replica.into()),
        sync_interval: Duration::from_millis(20),
        probe_lease: Duration::from_secs(10),
    };
    switchyard::cluster::start(&settings, registry.clone()).expect("start sharing");
    registry
}

#[tokio::test]
async fn one_replica_probes_an_open_target_and_the_other_takes_its_verdict() {
    let prefix = prefix();
    let (ra, rb) = (
        sharing_registry(&prefix, "a"),
        sharing_registry(&prefix, "b"),
    );
    let (ta, tb) = (
        ra.get_or_create("t", probing_policy()),
        rb.get_or_create("t", probing_policy()),
    );
    let now = tokio::time::Instant::now();
    let attempt = ta.admit(now).expect("closed");
    attempt.failure(now, switchyard::resilience::FailureClass::Transient, None);
    assert_eq!(ta.state(), State::Open);
    eventually("b follows", || tb.state() == State::Open).await;

    // Both become due for a probe together; the lease lets one through.
    let mut probe = None;
    for _ in 0..500 {
        let now = tokio::time::Instant::now();
        for (name, t) in [("a", &ta), ("b", &tb)] {
            if let Ok(guard) = t.admit(now) {
                assert!(probe.is_none(), "a second probe, by {name}");
                probe = Some((name, guard));
            }
        }
        if probe.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (prober, guard) = probe.expect("one replica probes");
    let other = if prober == "a" { &tb } else { &ta };
    assert!(
        other.admit(tokio::time::Instant::now()).is_err(),
        "the other waits while the probe is out"
    );
    guard.success(tokio::time::Instant::now());
    eventually("the other closes on the prober's verdict", || {
        other.state() == State::Closed
    })
    .await;
    assert_eq!(
        other.snapshot(tokio::time::Instant::now()).transitions,
        2,
        "open then closed, never half-open: it did not probe"
    );
}

#[tokio::test]
async fn with_redis_unreachable_each_replica_decides_alone() {
    let dead = sim_with("primary", failing(503)).await;
    let backup = sim("backup").await;
    let text = replica_config(&prefix(), "a", "consecutive_failures = 3")
        .replace(REDIS, "redis://127.0.0.1:1");
    let gw = gateway(&[&dead, &backup], &text).await;
    for _ in 0..3 {
        served(&gw).await;
    }
    assert_eq!(
        primary(&gw).state(),
        State::Open,
        "the local breaker still trips"
    );
    dead.reset_stats();
    served(&gw).await;
    assert_eq!(dead.stats().requests, 0);
}

#[tokio::test]
async fn an_opening_lost_from_redis_is_written_again_and_a_late_replica_follows_it() {
    let prefix = prefix();
    let ra = sharing_registry(&prefix, "a");
    let ta = ra.get_or_create(
        "t",
        BreakerPolicy {
            open_base: Duration::from_secs(60),
            ..probing_policy()
        },
    );
    let now = tokio::time::Instant::now();
    let attempt = ta.admit(now).expect("closed");
    attempt.failure(now, switchyard::resilience::FailureClass::Transient, None);
    assert_eq!(ta.state(), State::Open);

    let client = redis::Client::open(REDIS).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{prefix}:health:open:t");
    let read = |mut redis: redis::aio::MultiplexedConnection, key: String| async move {
        redis::cmd("GET")
            .arg(&key)
            .query_async::<Option<String>>(&mut redis)
            .await
            .unwrap()
    };
    let mut written = None;
    for _ in 0..200 {
        written = read(redis.clone(), key.clone()).await;
        if written.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        written.is_some_and(|v| v.starts_with("open|")),
        "a's opening in Redis"
    );
    // Lost: as after a Redis restart without persistence.
    let _: i64 = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut again = None;
    for _ in 0..200 {
        again = read(redis.clone(), key.clone()).await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(again.is_some_and(|v| v.contains("|a|")), "a wrote it again");

    let rb = sharing_registry(&prefix, "b");
    let tb = rb.get_or_create("t", probing_policy());
    eventually("a replica started later follows", || {
        tb.state() == State::Open
    })
    .await;
    assert_eq!(
        tb.opened_by().map(|o| o.replica.to_string()).as_deref(),
        Some("a")
    );
}
