//! Watching the gateway and the upstreams while a drill runs: breaker
//! changes (polled, so their times are as precise as the poll period, and a
//! breaker that goes half-open and back to open between two polls is seen
//! as staying open), and samples of the gateway's counters and of the
//! requests each upstream received, taken at the start, at every phase
//! boundary (the watcher wakes for them) and at the end, from which the
//! report takes per-phase differences.
//!
//! In self-contained mode the gateway's state and the simulators' counters
//! are read in-process; with `--target` the gateway's `/admin/targets` is
//! polled over HTTP (and the figures are left out if it cannot be read).

use super::report::{BreakerEvent, GatewayCounters, Observed, Sample};
use crate::resilience::breaker::State;
use crate::server::AppState;
use crate::sim::SimHandle;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// In-process reads are a few atomic loads and short locks.
const LOCAL_POLL: Duration = Duration::from_millis(50);
/// An HTTP request per poll to a gateway that is also serving the load.
const REMOTE_POLL: Duration = Duration::from_millis(500);
const REMOTE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the figures come from.
pub enum Source {
    InProcess {
        state: Arc<AppState>,
        sims: Vec<(String, SimHandle)>,
    },
    Remote {
        admin_targets: http::Uri,
    },
}

/// Breakers not closed right now, for the live view.
pub type OpenBreakers = Arc<Mutex<Vec<(String, &'static str)>>>;

/// Names the scenario provider a target key (`provider/model@region`)
/// belongs to.
pub type ProviderOf = BTreeMap<String, String>;

pub struct Watch {
    stop: watch::Sender<bool>,
    task: JoinHandle<Observed>,
    open: OpenBreakers,
}

struct Reading {
    counters: Option<GatewayCounters>,
    /// Target key, breaker state, attempts.
    targets: Vec<(String, State, u64)>,
    upstream: BTreeMap<String, u64>,
}

impl Watch {
    /// Takes the first sample before returning, so it is the baseline of
    /// everything the drill then sends.
    pub async fn start(
        source: Source,
        t0: Instant,
        provider_of: ProviderOf,
        cuts: Vec<Duration>,
    ) -> Watch {
        let client = crate::loadgen::client();
        let open: OpenBreakers = Arc::default();
        let (stop, mut stopped) = watch::channel(false);
        let mut tracker = Tracker {
            t0,
            provider_of,
            last: BTreeMap::new(),
            observed: Observed {
                upstream_is_sims: matches!(source, Source::InProcess { .. }),
                ..Observed::default()
            },
            open: open.clone(),
        };
        let first = read(&source, &client).await;
        tracker.take(first, true);
        let period = match source {
            Source::InProcess { .. } => LOCAL_POLL,
            Source::Remote { .. } => REMOTE_POLL,
        };
        let task = tokio::spawn(async move {
            let mut cuts = cuts.into_iter().peekable();
            loop {
                let poll = Instant::now() + period;
                let wake = cuts
                    .peek()
                    .and_then(|cut| t0.checked_add(*cut))
                    .map_or(poll, |cut| cut.min(poll));
                let finishing = tokio::select! {
                    _ = tokio::time::sleep_until(wake) => false,
                    _ = stopped.wait_for(|s| *s) => true,
                };
                let at_cut = cuts.next_if(|cut| t0.elapsed() >= *cut).is_some();
                let reading = read(&source, &client).await;
                tracker.take(reading, finishing || at_cut);
                if finishing {
                    tracker.observed.targets = tracker.last.keys().cloned().collect();
                    return tracker.observed;
                }
            }
        });
        Watch { stop, task, open }
    }

    pub fn open_breakers(&self) -> OpenBreakers {
        self.open.clone()
    }

    /// Takes a last sample and returns everything observed.
    pub async fn finish(self) -> Observed {
        self.stop.send_replace(true);
        self.task.await.unwrap_or_default()
    }
}

struct Tracker {
    t0: Instant,
    provider_of: ProviderOf,
    last: BTreeMap<String, State>,
    observed: Observed,
    open: OpenBreakers,
}

impl Tracker {
    /// Records breaker changes, and a counter sample if `sample`.
    fn take(&mut self, reading: Reading, sample: bool) {
        let at = self.t0.elapsed();
        let mut open = Vec::new();
        for (key, state, _) in &reading.targets {
            let previous = self.last.insert(key.clone(), *state);
            // A target first seen closed is the normal start, not a change.
            let changed = match previous {
                None => *state != State::Closed,
                Some(p) => p != *state,
            };
            if changed {
                self.observed.breaker_events.push(BreakerEvent {
                    at_s: (at.as_secs_f64() * 1000.0).round() / 1000.0,
                    target: key.clone(),
                    provider: key
                        .split('/')
                        .next()
                        .and_then(|p| self.provider_of.get(p))
                        .cloned(),
                    state: state.as_str(),
                });
            }
            if *state != State::Closed {
                open.push((key.clone(), state.as_str()));
            }
        }
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = open;
        let upstream: BTreeMap<String, u64> = if self.observed.upstream_is_sims {
            reading.upstream
        } else {
            reading
                .targets
                .into_iter()
                .map(|(key, _, attempts)| (key, attempts))
                .collect()
        };
        // Once a second (the readings between are 50 or 500 ms apart).
        let ticks = &mut self.observed.upstream_ticks;
        if ticks.last().is_none_or(|(t, _)| at.as_secs() > t.as_secs()) {
            ticks.push((at, upstream.clone()));
        }
        if sample {
            self.observed.samples.push(Sample {
                at,
                counters: reading.counters,
                upstream,
            });
        }
    }
}

async fn read(source: &Source, client: &crate::loadgen::LoadClient) -> Reading {
    match source {
        Source::InProcess { state, sims } => {
            let c = state.counters.snapshot();
            Reading {
                counters: Some(GatewayCounters {
                    attempts: c.attempts,
                    retries: c.retries,
                    failovers: c.failovers,
                    hedges: c.hedges,
                    budget_refusals: c.budget_refusals,
                    breaker_skips: c.breaker_skips,
                    streams_cut: c.streams_cut,
                    continuations: c.continuations,
                    continuations_completed: c.continuations_completed,
                    continuations_unavailable: c.continuations_unavailable,
                }),
                targets: state
                    .registry
                    .all()
                    .iter()
                    .map(|h| {
                        let attempts = h.attempts.load(std::sync::atomic::Ordering::Relaxed);
                        (h.key.clone(), h.state(), attempts)
                    })
                    .collect(),
                upstream: sims
                    .iter()
                    .map(|(name, sim)| (name.clone(), sim.stats().requests))
                    .collect(),
            }
        }
        Source::Remote { admin_targets } => {
            let admin = tokio::time::timeout(REMOTE_TIMEOUT, fetch(client, admin_targets))
                .await
                .ok()
                .flatten();
            match admin {
                Some(admin) => Reading {
                    counters: Some(admin.counters),
                    targets: admin
                        .targets
                        .into_iter()
                        .filter_map(|t| Some((t.target, parse_state(&t.state)?, t.attempts)))
                        .collect(),
                    upstream: BTreeMap::new(),
                },
                None => Reading {
                    counters: None,
                    targets: Vec::new(),
                    upstream: BTreeMap::new(),
                },
            }
        }
    }
}

/// The parts of `/admin/targets` the drill reads.
#[derive(serde::Deserialize)]
struct AdminTargets {
    targets: Vec<AdminTarget>,
    counters: GatewayCounters,
}

#[derive(serde::Deserialize)]
struct AdminTarget {
    target: String,
    state: String,
    #[serde(default)]
    attempts: u64,
}

fn parse_state(text: &str) -> Option<State> {
    match text {
        "closed" => Some(State::Closed),
        "open" => Some(State::Open),
        "half_open" => Some(State::HalfOpen),
        _ => None,
    }
}

async fn fetch(client: &crate::loadgen::LoadClient, uri: &http::Uri) -> Option<AdminTargets> {
    let request = http::Request::get(uri.clone())
        .body(Full::new(Bytes::new()))
        .ok()?;
    let response = client.request(request).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_targets_shape_is_read_and_unknown_states_skipped() {
        let body = br#"{"targets":[{"target":"p/m@r","state":"open","attempts":7,"extra":1},{"target":"q/m@r","state":"weird"}],"counters":{"attempts":9,"failovers":2,"requests":11}}"#;
        let admin: AdminTargets = serde_json::from_slice(body).unwrap();
        assert_eq!(admin.counters.attempts, 9);
        assert_eq!(admin.counters.failovers, 2);
        assert_eq!(admin.targets[0].attempts, 7);
        assert_eq!(parse_state(&admin.targets[0].state), Some(State::Open));
        assert_eq!(parse_state(&admin.targets[1].state), None);
    }

    #[test]
    fn tracker_records_changes_not_the_normal_start() {
        let mut tracker = Tracker {
            t0: Instant::now(),
            provider_of: [("primary".to_owned(), "primary-sim".to_owned())].into(),
            last: BTreeMap::new(),
            observed: Observed::default(),
            open: Arc::default(),
        };
        let reading = |state| Reading {
            counters: None,
            targets: vec![("primary/gpt-4o@east".to_owned(), state, 0)],
            upstream: BTreeMap::new(),
        };
        tracker.take(reading(State::Closed), true);
        tracker.take(reading(State::Closed), false);
        tracker.take(reading(State::Open), true);
        tracker.take(reading(State::Open), true);
        tracker.take(reading(State::Closed), true);
        let states: Vec<&str> = tracker
            .observed
            .breaker_events
            .iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(states, ["open", "closed"]);
        assert_eq!(
            tracker.observed.breaker_events[0].provider.as_deref(),
            Some("primary-sim")
        );
        assert_eq!(tracker.observed.samples.len(), 4);
    }
}
