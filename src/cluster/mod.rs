//! Target health shared by the replicas of one fleet through Redis
//! (`[cluster]`, or `[limits] redis_url` alone): a breaker that opens on one
//! replica opens on all, a `Retry-After` seen by one is honoured by all,
//! failures in a row are counted across the fleet, and one replica at a
//! time probes an open target (a lease) while the others wait for its
//! verdict.
//!
//! Owns the Redis keys under `PREFIX:health:` and the one background task
//! that writes this replica's verdicts (from `routing::health`'s bounded
//! queue) and reads the fleet's every `sync_interval` (one `MGET` for all
//! targets): the bound on how late a replica follows another. Redis state
//! is the source of truth, each key with a TTL, so a lost write or a
//! restarted replica heals at the next read.
//!
//! May not sit on the request path: requests read only their replica's own
//! `routing::health` state, which this task updates. Redis slow or down
//! changes nothing for them: each replica then decides alone, exactly as
//! without sharing, and a warning is logged at most every 30 s.

pub mod verdict;

use crate::config::ClusterSettings;
use crate::redis_link::RedisLink;
use crate::routing::health::{HealthEvent, HealthRegistry, LocalView, OpenedBy, TargetHealth};
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;
use verdict::{Action, Local};

/// Longest wait for one Redis call (after a failure Redis is left alone
/// for a second: events meanwhile are dropped, and each replica decides
/// alone, as without sharing).
const TIMEOUT: Duration = Duration::from_millis(200);
/// Verdicts waiting to be written; a full queue drops new ones.
const QUEUE: usize = 1024;
/// How long before its probe time a replica asks for the probe lease,
/// beyond two sync intervals (milliseconds).
const LEASE_LEAD: u64 = 250;
/// A closed marker lives at least this long, so every replica reads it.
const MIN_CLOSED_TTL: Duration = Duration::from_secs(5);

/// Keeps the later of two openings, and frees the writer's probe lease.
static SET_OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local cur = redis.call('GET', KEYS[1])
if cur then
  local u = string.match(cur, '^open|(%d+)|')
  if u and tonumber(u) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('DEL', KEYS[2]) end
return 1",
    )
});
static SET_CLOSED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[3])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end
return 1",
    )
});
static SET_COOLING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local cur = redis.call('GET', KEYS[1])
if cur then
  local u = string.match(cur, '^(%d+)|')
  if u and tonumber(u) >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1",
    )
});
static ADD_FAILURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n",
    )
});
/// -1: the lease is ours; otherwise the holder's milliseconds left.
static TAKE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return -1 end
return redis.call('PTTL', KEYS[1])",
    )
});

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.redis_url is not a usable Redis URL ({reason})")]
    RedisUrl { reason: String },
}

/// Starts sharing `registry`'s verdicts; returns this replica's name.
/// Redis down at start is not an error: the task keeps trying.
pub fn start(
    settings: &ClusterSettings,
    registry: Arc<HealthRegistry>,
) -> Result<Arc<str>, ClusterError> {
    let redis =
        RedisLink::connect(&settings.redis_url.0, "cluster health", TIMEOUT).map_err(|e| {
            ClusterError::RedisUrl {
                reason: format!("{:?}", e.kind()),
            }
        })?;
    let replica: Arc<str> = settings
        .replica
        .clone()
        .unwrap_or_else(default_replica_name)
        .into();
    let (events, queue) = mpsc::channel(QUEUE);
    registry.link_cluster(crate::routing::health::ClusterLink {
        events,
        replica: replica.clone(),
    });
    let sync = Sync {
        redis,
        prefix: format!("{}:health", settings.key_prefix),
        me: replica.clone(),
        registry,
        interval: settings.sync_interval,
        probe_lease: settings.probe_lease,
        lease_tried: HashMap::new(),
    };
    tokio::spawn(sync.run(queue));
    tracing::info!(replica = &*replica, "target health shared through Redis");
    Ok(replica)
}

/// `HOST-PID`: distinct for every process, readable in `/admin/targets`.
fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect();
    let host = if host.is_empty() { "replica" } else { &host };
    format!("{host}-{}", std::process::id())
}

struct Sync {
    redis: RedisLink,
    prefix: String,
    me: Arc<str>,
    registry: Arc<HealthRegistry>,
    interval: Duration,
    probe_lease: Duration,
    /// Per target, the probe time a lease was last asked for (bounded by
    /// the targets in the config: pruned at every read).
    lease_tried: HashMap<String, u64>,
}

/// A moment in both clocks: `Instant` for the breaker, Unix milliseconds
/// for the fleet.
#[derive(Clone, Copy)]
struct Now {
    instant: Instant,
    unix_ms: u64,
}

impl Now {
    fn read() -> Now {
        Now {
            instant: Instant::now(),
            unix_ms: unix_ms(SystemTime::now()),
        }
    }

    fn to_ms(self, t: Instant) -> u64 {
        let ahead = t.saturating_duration_since(self.instant).as_millis();
        self.unix_ms
            .saturating_add(u64::try_from(ahead).unwrap_or(u64::MAX))
    }

    fn to_instant(self, unix_ms: u64) -> Instant {
        self.instant + Duration::from_millis(unix_ms.saturating_sub(self.unix_ms))
    }

    fn local(self, view: LocalView) -> Local {
        Local {
            state: view.state,
            next_probe_ms: view.next_probe.map(|t| self.to_ms(t)),
            opened_at_ms: view.opened_at.map(unix_ms),
            opened_here: view.opened_here,
            cooled_until_ms: view.cooled_until.map(|t| self.to_ms(t)),
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl Sync {
    async fn run(mut self, mut queue: mpsc::Receiver<HealthEvent>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.read_fleet().await,
                event = queue.recv() => match event {
                    Some(event) => self.write(event).await,
                    // The registry is gone: the gateway stopped.
                    None => return,
                },
            }
        }
    }

    fn key(&self, kind: &str, target: &str) -> String {
        format!("{}:{kind}:{target}", self.prefix)
    }

    /// One verdict of this replica into Redis.
    async fn write(&mut self, event: HealthEvent) {
        let now = Now::read();
        match event {
            HealthEvent::Opened {
                key,
                probe_at,
                cause,
            } => {
                let until = now.to_ms(probe_at);
                let value = verdict::open_value(until, now.unix_ms, &self.me, &cause);
                let ttl = until.saturating_sub(now.unix_ms) + millis(self.probe_lease);
                let mut call = SET_OPEN.prepare_invoke();
                call.key(self.key("open", &key))
                    .key(self.key("probe", &key))
                    .arg(until)
                    .arg(value)
                    .arg(ttl)
                    .arg(&*self.me);
                self.redis.invoke::<i64>(&call).await;
            }
            HealthEvent::Closed { key } => {
                let ttl = millis(self.probe_lease.max(MIN_CLOSED_TTL));
                let mut call = SET_CLOSED.prepare_invoke();
                call.key(self.key("open", &key))
                    .key(self.key("probe", &key))
                    .key(self.key("streak", &key))
                    .arg(verdict::closed_value(now.unix_ms, &self.me))
                    .arg(ttl)
                    .arg(&*self.me);
                self.redis.invoke::<i64>(&call).await;
            }
            HealthEvent::Cooled { key, until } => {
                let until = now.to_ms(until);
                let mut call = SET_COOLING.prepare_invoke();
                call.key(self.key("cool", &key))
                    .arg(until)
                    .arg(verdict::cooling_value(until, &self.me))
                    .arg(until.saturating_sub(now.unix_ms).max(1));
                self.redis.invoke::<i64>(&call).await;
            }
            HealthEvent::Failed {
                key,
                threshold,
                window,
            } => {
                let mut call = ADD_FAILURE.prepare_invoke();
                call.key(self.key("streak", &key)).arg(millis(window));
                let streak = self.redis.invoke::<u64>(&call).await;
                if let (Some(streak), Some(target)) = (streak, self.registry.find(&key)) {
                    if streak >= u64::from(threshold) {
                        target.trip_by_fleet(streak);
                    }
                }
            }
            HealthEvent::Recovered { key } => {
                let mut del = redis::cmd("DEL");
                del.arg(self.key("streak", &key));
                self.redis.query::<i64>(&del).await;
            }
        }
    }

    /// The fleet's verdicts on every target, applied here; then the probe
    /// leases that are due.
    async fn read_fleet(&mut self) {
        let targets = self.registry.all();
        self.lease_tried
            .retain(|key, _| targets.iter().any(|t| &t.key == key));
        if targets.is_empty() {
            return;
        }
        let keys: Vec<String> = targets
            .iter()
            .flat_map(|t| {
                ["open", "cool", "streak"]
                    .into_iter()
                    .map(|kind| self.key(kind, &t.key))
            })
            .collect();
        let mut mget = redis::cmd("MGET");
        mget.arg(&keys);
        let Some(values) = self.redis.query::<Vec<Option<String>>>(&mget).await else {
            return;
        };
        let now = Now::read();
        let mut lost = Vec::new();
        for (target, fleet) in targets.iter().zip(values.chunks_exact(3)) {
            lost.extend(self.apply_fleet(target, now, fleet));
        }
        for event in lost {
            self.write(event).await;
        }
        for target in &targets {
            self.take_lease_if_due(target).await;
        }
    }

    /// Applies the fleet's view of `target`; returns this replica's own
    /// verdicts the fleet lacks (a lost write), to be written again.
    fn apply_fleet(
        &self,
        target: &TargetHealth,
        now: Now,
        fleet: &[Option<String>],
    ) -> Vec<HealthEvent> {
        let local = now.local(target.local_view(now.instant));
        let breaker = fleet[0].as_deref().and_then(verdict::parse_breaker);
        let cooling = fleet[1].as_deref().and_then(verdict::parse_cooling);
        let mut lost = Vec::new();
        if verdict::opening_lost(now.unix_ms, local, breaker.as_ref()) {
            let view = target.local_view(now.instant);
            lost.extend(view.next_probe.map(|probe_at| HealthEvent::Opened {
                key: target.key.clone(),
                probe_at,
                cause: target.opened_by().map(|o| o.cause).unwrap_or_default(),
            }));
        }
        if verdict::cooling_lost(now.unix_ms, local, cooling.as_ref()) {
            lost.extend(local.cooled_until_ms.map(|until| HealthEvent::Cooled {
                key: target.key.clone(),
                until: now.to_instant(until),
            }));
        }
        let actions = [
            breaker.and_then(|b| verdict::breaker_action(&self.me, now.unix_ms, local, b)),
            cooling.and_then(|c| verdict::cooling_action(&self.me, now.unix_ms, local, c)),
        ];
        for action in actions.into_iter().flatten() {
            apply(target, now, action);
        }
        let streak = fleet[2].as_deref().and_then(|s| s.parse::<u64>().ok());
        target.note_shared_streak(streak.is_some_and(|n| n > 0));
        lost
    }

    /// Shortly before an open breaker here would probe, asks for the lease;
    /// if another replica holds it, waits for that replica's verdict.
    async fn take_lease_if_due(&mut self, target: &TargetHealth) {
        let now = Now::read();
        let local = now.local(target.local_view(now.instant));
        // Early enough that a read falls in the window on a busy machine;
        // an early lease costs nothing (it outlasts the wait).
        let lead = millis(self.interval) * 2 + LEASE_LEAD;
        let tried = self.lease_tried.get(&target.key).copied();
        if !verdict::lease_due(local, now.unix_ms, lead, tried) {
            return;
        }
        let Some(probe_ms) = local.next_probe_ms else {
            return;
        };
        self.lease_tried.insert(target.key.clone(), probe_ms);
        let mut call = TAKE_LEASE.prepare_invoke();
        call.key(self.key("probe", &target.key))
            .arg(&*self.me)
            .arg(millis(self.probe_lease));
        match self.redis.invoke::<i64>(&call).await {
            Some(left) if left > 0 => {
                let left = Duration::from_millis(left.unsigned_abs());
                target.hold_for_probe(Instant::now() + left);
            }
            // Ours; or Redis failed: probe as a lone replica would.
            _ => {}
        }
    }
}

fn apply(target: &TargetHealth, now: Now, action: Action) {
    match action {
        Action::HoldOpen {
            until_ms,
            at_ms,
            replica,
            cause,
        } => target.apply_remote_open(
            now.to_instant(until_ms),
            OpenedBy {
                replica: replica.into(),
                at: UNIX_EPOCH + Duration::from_millis(at_ms),
                cause,
            },
        ),
        Action::Close { replica } => target.apply_remote_close(&replica.into()),
        Action::Cool { until_ms } => target.apply_remote_cooling(now.to_instant(until_ms)),
    }
}
