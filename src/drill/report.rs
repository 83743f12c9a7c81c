//! What a drill measured and how it is shown: the [`Recorder`] that buckets
//! every client request by start time (1-second buckets for the plots, and
//! the scenario's phases), the [`Report`] built from it and from the
//! gateway and simulator samples, the expectation verdicts, and three
//! renderings: a terminal table, JSON (stable field names, documented in
//! `scenarios/README.md`) and a self-contained HTML page with SVG plots
//! (a `maud::html!` template: escaping by maud).
//!
//! Nothing here starts or drives anything; it only records and renders.

use super::scenario::{show, Expectations, FaultWindow, PhaseWindow, Scenario};
use crate::loadgen::{micros, RequestOutcome, RequestResult};
use hdrhistogram::Histogram;
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// Width of a time-series bucket.
pub const BUCKET: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 1 µs .. 10 min at 3 significant digits: for the few phase windows.
fn fine_histogram() -> Histogram<u64> {
    crate::loadgen::new_histogram()
}

/// 2 significant digits and 32-bit counts (about 12 KiB): one per second of
/// the run, so a 10-minute soak keeps its buckets in a few MiB.
fn coarse_histogram() -> Histogram<u32> {
    match Histogram::new_with_bounds(1, 600_000_000, 2) {
        Ok(h) => h,
        #[allow(clippy::unreachable, reason = "constant bounds hdrhistogram accepts")]
        Err(_) => unreachable!("constant bounds are valid"),
    }
}

/// Client-side counts of one stretch of time.
#[derive(Debug, Clone)]
pub struct Window {
    pub sent: u64,
    pub ok: u64,
    pub by_status: BTreeMap<u16, u64>,
    pub refused: u64,
    pub transport: u64,
    pub timeouts: u64,
    pub streams: u64,
    pub streams_cut: u64,
    /// Successful requests, µs.
    pub latency: Histogram<u64>,
    /// Successful streams, µs to the first body byte.
    pub ttft: Histogram<u64>,
}

impl Window {
    fn new() -> Self {
        Window {
            sent: 0,
            ok: 0,
            by_status: BTreeMap::new(),
            refused: 0,
            transport: 0,
            timeouts: 0,
            streams: 0,
            streams_cut: 0,
            latency: fine_histogram(),
            ttft: fine_histogram(),
        }
    }

    fn record(&mut self, o: &RequestOutcome) {
        self.sent += 1;
        self.streams += u64::from(o.stream);
        match o.result {
            RequestResult::Ok => {
                self.ok += 1;
                let _ = self.latency.record(micros(o.latency));
                if let (true, Some(ttft)) = (o.stream, o.ttfb) {
                    let _ = self.ttft.record(micros(ttft));
                }
            }
            RequestResult::Status(code) => *self.by_status.entry(code).or_default() += 1,
            RequestResult::StreamCut => self.streams_cut += 1,
            RequestResult::Refused => self.refused += 1,
            RequestResult::Transport => self.transport += 1,
            RequestResult::Timeout => self.timeouts += 1,
        }
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    sent: u64,
    ok: u64,
    latency: Histogram<u32>,
}

struct Recorded {
    buckets: Vec<Bucket>,
    phases: Vec<Window>,
    total: Window,
}

/// Sees every request's outcome (as the load driver's observer) and files it
/// under the second and the phase in which it was sent.
pub struct Recorder {
    t0: Instant,
    /// Start of every phase but the first, ascending.
    cuts: Vec<Duration>,
    recorded: Mutex<Recorded>,
}

impl Recorder {
    pub fn new(t0: Instant, phases: &[PhaseWindow]) -> Self {
        Recorder {
            t0,
            cuts: phases.iter().skip(1).map(|p| p.from).collect(),
            recorded: Mutex::new(Recorded {
                buckets: Vec::new(),
                phases: phases.iter().map(|_| Window::new()).collect(),
                total: Window::new(),
            }),
        }
    }

    /// p99 of the successful requests sent in bucket `index`, if any.
    pub fn bucket_p99(&self, index: usize) -> Option<Duration> {
        let recorded = lock(&self.recorded);
        let bucket = recorded.buckets.get(index)?;
        (bucket.ok > 0).then(|| Duration::from_micros(bucket.latency.value_at_quantile(0.99)))
    }

    fn snapshot(&self) -> (Vec<Bucket>, Vec<Window>, Window) {
        let r = lock(&self.recorded);
        (r.buckets.clone(), r.phases.clone(), r.total.clone())
    }
}

impl crate::loadgen::Observer for Recorder {
    fn observe(&self, o: &RequestOutcome) {
        let offset = o.started.saturating_duration_since(self.t0);
        let second = usize::try_from(offset.as_secs()).unwrap_or(usize::MAX);
        let phase = self.cuts.partition_point(|&cut| cut <= offset);
        let mut r = lock(&self.recorded);
        // Requests are sent only during the run, so this grows to about its
        // length in seconds; the cap guards against a clock gone wrong.
        if second < 100_000 {
            while r.buckets.len() <= second {
                r.buckets.push(Bucket {
                    sent: 0,
                    ok: 0,
                    latency: coarse_histogram(),
                });
            }
            if let Some(bucket) = r.buckets.get_mut(second) {
                bucket.sent += 1;
                if o.result == RequestResult::Ok {
                    bucket.ok += 1;
                    let _ = bucket.latency.record(micros(o.latency));
                }
            }
        }
        if let Some(window) = r.phases.get_mut(phase) {
            window.record(o);
        }
        r.total.record(o);
    }
}

/// The gateway's own counters (`/admin/targets` → `counters`), as far as
/// the drill uses them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GatewayCounters {
    pub attempts: u64,
    pub retries: u64,
    pub failovers: u64,
    pub hedges: u64,
    pub budget_refusals: u64,
    pub breaker_skips: u64,
    pub streams_cut: u64,
    /// Streams broken after content and continued on another target.
    pub continuations: u64,
    /// Continued streams that then completed.
    pub continuations_completed: u64,
    /// Streams broken after content that no target could continue.
    pub continuations_unavailable: u64,
}

impl GatewayCounters {
    fn minus(&self, earlier: &GatewayCounters) -> GatewayCounters {
        GatewayCounters {
            attempts: self.attempts.saturating_sub(earlier.attempts),
            retries: self.retries.saturating_sub(earlier.retries),
            failovers: self.failovers.saturating_sub(earlier.failovers),
            hedges: self.hedges.saturating_sub(earlier.hedges),
            budget_refusals: self.budget_refusals.saturating_sub(earlier.budget_refusals),
            breaker_skips: self.breaker_skips.saturating_sub(earlier.breaker_skips),
            streams_cut: self.streams_cut.saturating_sub(earlier.streams_cut),
            continuations: self.continuations.saturating_sub(earlier.continuations),
            continuations_completed: self
                .continuations_completed
                .saturating_sub(earlier.continuations_completed),
            continuations_unavailable: self
                .continuations_unavailable
                .saturating_sub(earlier.continuations_unavailable),
        }
    }
}

/// What the gateway and the upstreams had counted at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub at: Duration,
    /// `None` when the gateway's admin endpoint could not be read.
    pub counters: Option<GatewayCounters>,
    /// Requests each upstream received: by simulator name (self-contained)
    /// or attempts by target key (from `/admin/targets`).
    pub upstream: BTreeMap<String, u64>,
}

/// A breaker changing state, as seen by polling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerEvent {
    pub at_s: f64,
    pub target: String,
    /// The scenario provider the target belongs to, when known.
    pub provider: Option<String>,
    /// `open`, `half_open` or `closed`.
    pub state: &'static str,
}

/// What the watchers collected over the run.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub samples: Vec<Sample>,
    pub breaker_events: Vec<BreakerEvent>,
    /// Whether `upstream` counts requests the simulators received (true) or
    /// the gateway's attempts per target (false).
    pub upstream_is_sims: bool,
    /// The same cumulative upstream counts, read once a second (the first
    /// reading at or after each whole second).
    pub upstream_ticks: Vec<super::traffic::Tick>,
    /// Every target key the watcher saw.
    pub targets: Vec<String>,
}

impl Observed {
    /// The first sample taken at or after `t` (else the last one): the
    /// watcher wakes at each phase boundary, so this is the boundary's.
    fn at(&self, t: Duration) -> Option<&Sample> {
        self.samples
            .iter()
            .find(|s| s.at >= t)
            .or_else(|| self.samples.last())
    }

    fn between(&self, from: Duration, to: Duration, last: bool) -> Option<(&Sample, &Sample)> {
        let start = self.at(from)?;
        let end = if last {
            self.samples.last()?
        } else {
            self.at(to)?
        };
        Some((start, end))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

fn percentiles_ms(h: &Histogram<u64>) -> Option<Percentiles> {
    let ms = |v: u64| (v as f64 / 10.0).round() / 100.0;
    (!h.is_empty()).then(|| Percentiles {
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    })
}

/// What the client saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientFigures {
    pub requests: u64,
    pub ok: u64,
    /// `ok / requests`; `null` without requests.
    pub success_ratio: Option<f64>,
    /// Non-2xx responses by status code.
    pub errors_by_status: BTreeMap<String, u64>,
    /// Connections that could not be made.
    pub refused: u64,
    /// Connections that failed after they were made (reset, closed early).
    pub transport_errors: u64,
    pub timeouts: u64,
    pub streams: u64,
    /// 2xx streams that ended without `[DONE]` or with an error event.
    pub streams_cut: u64,
    /// Successful requests, milliseconds.
    pub latency_ms: Option<Percentiles>,
    /// Successful streams: time to the first body byte, milliseconds.
    pub ttft_ms: Option<Percentiles>,
}

impl ClientFigures {
    fn from_window(w: &Window) -> Self {
        ClientFigures {
            requests: w.sent,
            ok: w.ok,
            success_ratio: (w.sent > 0).then(|| w.ok as f64 / w.sent as f64),
            errors_by_status: w
                .by_status
                .iter()
                .map(|(code, n)| (code.to_string(), *n))
                .collect(),
            refused: w.refused,
            transport_errors: w.transport,
            timeouts: w.timeouts,
            streams: w.streams,
            streams_cut: w.streams_cut,
            latency_ms: percentiles_ms(&w.latency),
            ttft_ms: percentiles_ms(&w.ttft),
        }
    }
}

/// What the gateway did and what reached the upstreams.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamFigures {
    /// Upstream requests: counted by the simulators in self-contained mode,
    /// else the gateway's attempts.
    pub requests: u64,
    /// `requests / client requests`.
    pub amplification: Option<f64>,
    /// By simulator name (self-contained) or target key (`--target`).
    pub by_upstream: BTreeMap<String, u64>,
    /// By the scenario providers' `region`, when they have one.
    pub by_region: BTreeMap<String, u64>,
    /// The gateway's counters over the same stretch; `null` when its admin
    /// endpoint was not reachable.
    pub gateway: Option<GatewayCounters>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    pub index: usize,
    pub from_s: f64,
    pub to_s: f64,
    /// `provider: what` for each fault in force; empty for a quiet phase.
    pub faults: Vec<String>,
    pub client: ClientFigures,
    pub upstream: Option<UpstreamFigures>,
    pub breaker_events: Vec<BreakerEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutageReport {
    pub provider: String,
    pub from_s: f64,
    pub to_s: f64,
    /// From the fault's start to the first breaker of the provider opening
    /// (before the fault ended); `null` if none opened.
    pub detected_after_s: Option<f64>,
    /// From the fault's end until every breaker of the provider was closed
    /// again; `null` if never detected or not recovered by the end.
    pub recovered_after_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SecondPoint {
    pub t_s: u64,
    pub requests: u64,
    pub ok: u64,
    pub success_ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rss {
    pub start_kib: u64,
    pub end_kib: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpectationResult {
    pub name: &'static str,
    pub limit: String,
    pub actual: String,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSummary {
    pub model: String,
    /// Requests per second; `null` for a closed loop.
    pub rate: Option<f64>,
    /// `constant`, `poisson` or `closed`.
    pub arrival: &'static str,
    pub concurrency: usize,
    pub stream_share: f64,
    pub duration_s: f64,
}

/// Everything a drill found; serialized as the `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    /// `self_contained` or `target`.
    pub mode: &'static str,
    /// The gateway's base URL.
    pub gateway: String,
    pub load: LoadSummary,
    pub elapsed_s: f64,
    /// Client requests sent per second of the load's duration.
    pub achieved_rps: f64,
    pub client: ClientFigures,
    pub upstream: Option<UpstreamFigures>,
    pub phases: Vec<PhaseReport>,
    pub outages: Vec<OutageReport>,
    pub breaker_events: Vec<BreakerEvent>,
    pub timeseries: Vec<SecondPoint>,
    /// Upstream requests per second, by upstream (simulator name, or target
    /// key with `--target`).
    pub upstream_per_second: Vec<super::traffic::UpstreamSecond>,
    /// Each target's breaker states over the run.
    pub breaker_bands: Vec<super::traffic::Band>,
    /// Resident memory of the drill process (which hosts the gateway) in
    /// self-contained mode.
    pub rss: Option<Rss>,
    pub expectations: Vec<ExpectationResult>,
    pub passed: bool,
}

/// Everything [`build`] needs besides the recorder.
pub struct Inputs<'a> {
    pub scenario: &'a Scenario,
    pub mode: &'static str,
    pub gateway: String,
    pub elapsed: Duration,
    pub observed: Observed,
    pub rss: Option<Rss>,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub fn build(recorder: &Recorder, inputs: Inputs<'_>) -> Report {
    let Inputs {
        scenario,
        mode,
        gateway,
        elapsed,
        observed,
        rss,
    } = inputs;
    let (buckets, phase_windows, total) = recorder.snapshot();
    let windows = scenario.phases();
    let regions: BTreeMap<&str, &str> = scenario
        .providers
        .iter()
        .filter_map(|p| p.region.as_deref().map(|r| (p.name.as_str(), r)))
        .collect();
    let upstream = |from: Duration, to: Duration, last: bool, client_requests: u64| {
        let (start, end) = observed.between(from, to, last)?;
        let by_upstream: BTreeMap<String, u64> = end
            .upstream
            .iter()
            .map(|(k, v)| {
                let before = start.upstream.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(before))
            })
            .collect();
        let gateway = match (end.counters, start.counters) {
            (Some(e), Some(s)) => Some(e.minus(&s)),
            _ => None,
        };
        let requests = if observed.upstream_is_sims {
            by_upstream.values().sum()
        } else {
            gateway.map(|g| g.attempts)?
        };
        let mut by_region: BTreeMap<String, u64> = BTreeMap::new();
        if observed.upstream_is_sims {
            for (name, n) in &by_upstream {
                if let Some(region) = regions.get(name.as_str()) {
                    *by_region.entry((*region).to_owned()).or_default() += n;
                }
            }
        }
        Some(UpstreamFigures {
            requests,
            amplification: (client_requests > 0).then(|| requests as f64 / client_requests as f64),
            by_upstream,
            by_region,
            gateway,
        })
    };

    let phases: Vec<PhaseReport> = windows
        .iter()
        .zip(&phase_windows)
        .enumerate()
        .map(|(index, (w, client))| {
            let last = index + 1 == windows.len();
            PhaseReport {
                index: index + 1,
                from_s: secs(w.from),
                to_s: secs(w.to),
                faults: w.faults.clone(),
                client: ClientFigures::from_window(client),
                upstream: upstream(w.from, w.to, last, client.sent),
                breaker_events: observed
                    .breaker_events
                    .iter()
                    .filter(|e| {
                        e.at_s >= w.from.as_secs_f64() && (last || e.at_s < w.to.as_secs_f64())
                    })
                    .cloned()
                    .collect(),
            }
        })
        .collect();
    let outages = scenario
        .fault_windows()
        .iter()
        .map(|w| outage(w, &observed.breaker_events))
        .collect();
    let timeseries = buckets
        .iter()
        .enumerate()
        .map(|(t, b)| {
            let ms = |q: f64| {
                (b.ok > 0).then(|| (b.latency.value_at_quantile(q) as f64 / 10.0).round() / 100.0)
            };
            SecondPoint {
                t_s: t as u64,
                requests: b.sent,
                ok: b.ok,
                success_ratio: (b.sent > 0).then(|| b.ok as f64 / b.sent as f64),
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
            }
        })
        .collect();
    let load = &scenario.load;
    let mut report = Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        mode,
        gateway,
        load: LoadSummary {
            model: load.model.clone(),
            rate: load.rate,
            arrival: match (load.rate, load.arrival) {
                (None, _) => "closed",
                (Some(_), crate::loadgen::Arrival::Constant) => "constant",
                (Some(_), crate::loadgen::Arrival::Poisson) => "poisson",
            },
            concurrency: load.concurrency,
            stream_share: load.stream_share,
            duration_s: secs(load.duration),
        },
        elapsed_s: secs(elapsed),
        achieved_rps: total.sent as f64 / load.duration.as_secs_f64().max(1e-9),
        client: ClientFigures::from_window(&total),
        upstream: upstream(Duration::ZERO, elapsed, true, total.sent),
        phases,
        outages,
        breaker_events: observed.breaker_events.clone(),
        timeseries,
        upstream_per_second: super::traffic::per_second(&observed.upstream_ticks),
        breaker_bands: super::traffic::bands(
            &observed.targets,
            &observed.breaker_events,
            secs(elapsed),
        ),
        rss,
        expectations: Vec::new(),
        passed: true,
    };
    report.expectations = evaluate(&scenario.expect, &report, &total);
    report.passed = report.expectations.iter().all(|e| e.passed);
    report
}

fn outage(w: &FaultWindow, events: &[BreakerEvent]) -> OutageReport {
    let (from, to) = (w.from.as_secs_f64(), w.to.as_secs_f64());
    let ours = |e: &&BreakerEvent| e.provider.as_deref() == Some(w.provider.as_str());
    let detected = events
        .iter()
        .filter(ours)
        .find(|e| e.state == "open" && e.at_s >= from && e.at_s < to)
        .map(|e| e.at_s);
    // Replay the provider's breaker states: states hold from one event to
    // the next, so the first stretch after the fault's end with every
    // breaker closed starts at an event (or at the end of the fault).
    let all_closed = |states: &BTreeMap<&str, &str>| states.values().all(|s| *s == "closed");
    let recovered = detected.and_then(|_| {
        let mut states: BTreeMap<&str, &str> = BTreeMap::new();
        let mut since = 0.0_f64;
        for e in events.iter().filter(ours) {
            if e.at_s > to && all_closed(&states) {
                return Some(since.max(to));
            }
            states.insert(&e.target, e.state);
            since = e.at_s;
        }
        all_closed(&states).then_some(since.max(to))
    });
    let round = |s: f64| (s * 1000.0).round() / 1000.0;
    OutageReport {
        provider: w.provider.clone(),
        from_s: round(from),
        to_s: round(to),
        detected_after_s: detected.map(|t| round(t - from)),
        recovered_after_s: recovered.map(|t| round((t - to).max(0.0))),
    }
}

fn evaluate(expect: &Expectations, report: &Report, total: &Window) -> Vec<ExpectationResult> {
    let mut results = Vec::new();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    if let Some(min) = expect.min_success_ratio {
        let actual = report.client.success_ratio.unwrap_or(0.0);
        results.push(ExpectationResult {
            name: "min_success_ratio",
            limit: format!("≥ {:.3}%", min * 100.0),
            actual: format!(
                "{:.3}% ({} of {} failed)",
                actual * 100.0,
                total.sent - total.ok,
                total.sent
            ),
            passed: total.sent > 0 && actual >= min,
        });
    }
    if let Some(max) = expect.max_amplification {
        let amp = report.upstream.as_ref().and_then(|u| u.amplification);
        results.push(ExpectationResult {
            name: "max_amplification",
            limit: format!("≤ {max:.2}"),
            actual: amp.map_or(
                "not measured (gateway admin endpoint unreachable)".to_owned(),
                |a| format!("{a:.3}"),
            ),
            passed: amp.is_some_and(|a| a <= max),
        });
    }
    if let Some(max) = expect.max_p99 {
        let p99 = report.client.latency_ms.map(|p| p.p99);
        results.push(ExpectationResult {
            name: "max_p99",
            limit: format!("≤ {}", ms(max)),
            actual: p99.map_or("no successful request".to_owned(), |p| format!("{p:.0} ms")),
            passed: p99.is_some_and(|p| p <= max.as_secs_f64() * 1000.0),
        });
    }
    if let Some(max) = expect.max_phase_p99 {
        let limit = max.as_secs_f64() * 1000.0;
        let worst = report
            .phases
            .iter()
            .filter_map(|p| p.client.latency_ms.map(|l| (p.index, l.p99)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        results.push(ExpectationResult {
            name: "max_phase_p99",
            limit: format!("≤ {} in every phase", ms(max)),
            actual: worst.map_or("no successful request".to_owned(), |(i, p)| {
                format!("worst: phase {i} at {p:.0} ms")
            }),
            passed: worst.is_some_and(|(_, p)| p <= limit),
        });
    }
    if let Some(max) = expect.max_detect {
        let limit = max.as_secs_f64();
        let worst = report
            .outages
            .iter()
            .map(|o| (o, o.detected_after_s))
            .max_by(|a, b| {
                // An undetected outage is the worst case.
                a.1.unwrap_or(f64::INFINITY)
                    .total_cmp(&b.1.unwrap_or(f64::INFINITY))
            });
        results.push(ExpectationResult {
            name: "max_detect",
            limit: format!("≤ {}", show(max)),
            actual: match worst {
                None => "no outage in the scenario".to_owned(),
                Some((o, None)) => format!("{} at {}s: never detected", o.provider, o.from_s),
                Some((o, Some(d))) => format!("worst: {} after {d:.1}s", o.provider),
            },
            passed: worst.is_some_and(|(_, d)| d.is_some_and(|d| d <= limit)),
        });
    }
    if let Some(max) = expect.max_recover {
        let limit = max.as_secs_f64();
        let detected: Vec<&OutageReport> = report
            .outages
            .iter()
            .filter(|o| o.detected_after_s.is_some())
            .collect();
        let worst = detected.iter().max_by(|a, b| {
            a.recovered_after_s
                .unwrap_or(f64::INFINITY)
                .total_cmp(&b.recovered_after_s.unwrap_or(f64::INFINITY))
        });
        results.push(ExpectationResult {
            name: "max_recover",
            limit: format!("≤ {}", show(max)),
            actual: match worst {
                None => "no detected outage to recover from".to_owned(),
                Some(o) => match o.recovered_after_s {
                    None => format!(
                        "{} (fault ended at {}s): not recovered by the end",
                        o.provider, o.to_s
                    ),
                    Some(r) => format!("worst: {} after {r:.1}s", o.provider),
                },
            },
            passed: worst.is_some_and(|o| o.recovered_after_s.is_some_and(|r| r <= limit)),
        });
    }
    if let Some(max) = expect.max_streams_cut {
        results.push(ExpectationResult {
            name: "max_streams_cut",
            limit: format!("≤ {max}"),
            actual: report.client.streams_cut.to_string(),
            passed: report.client.streams_cut <= max,
        });
    }
    results
}

fn pct(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{:.3}%", r * 100.0))
}

fn lat(p: Option<Percentiles>) -> String {
    p.map_or("–".to_owned(), |p| {
        format!("{:.0}/{:.0}/{:.0}", p.p50, p.p95, p.p99)
    })
}

/// The report as a terminal table (plain text, no escape codes).
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let load = match r.load.rate {
        Some(rate) => format!("{rate} req/s {}", r.load.arrival),
        None => format!("{} workers (closed loop)", r.load.concurrency),
    };
    let _ = writeln!(
        out,
        "Drill {} ({}) against {}: {load} for {}s, {:.0}% streams; {:.0} req/s achieved",
        r.scenario,
        r.mode.replace('_', "-"),
        r.gateway,
        r.load.duration_s,
        r.load.stream_share * 100.0,
        r.achieved_rps
    );
    if !r.description.is_empty() {
        let _ = writeln!(out, "{}", r.description);
    }
    let _ = writeln!(
        out,
        "\n{:<5} {:<13} {:>8} {:>9} {:>17} {:>9} {:>8} {:>5} {:>6} {:>6} {:>7} {:>5} {:>5}",
        "phase",
        "window",
        "requests",
        "success",
        "p50/p95/p99 ms",
        "ttft p50",
        "upstream",
        "amp",
        "failov",
        "hedges",
        "refusal",
        "cont",
        "cut"
    );
    struct Row<'a> {
        name: String,
        window: String,
        client: &'a ClientFigures,
        upstream: &'a Option<UpstreamFigures>,
        faults: &'a [String],
        events: &'a [BreakerEvent],
    }
    let rows = r
        .phases
        .iter()
        .map(|p| Row {
            name: p.index.to_string(),
            window: format!("{}–{}s", p.from_s, p.to_s),
            client: &p.client,
            upstream: &p.upstream,
            faults: &p.faults,
            events: &p.breaker_events,
        })
        .chain(std::iter::once(Row {
            name: "all".to_owned(),
            window: format!("0–{}s", r.elapsed_s),
            client: &r.client,
            upstream: &r.upstream,
            faults: &[],
            events: &[],
        }));
    for Row {
        name,
        window,
        client,
        upstream,
        faults,
        events,
    } in rows
    {
        let gw = upstream.as_ref().and_then(|u| u.gateway);
        let opt = |v: Option<u64>| v.map_or("–".to_owned(), |v| v.to_string());
        let _ = writeln!(
            out,
            "{:<5} {:<13} {:>8} {:>9} {:>17} {:>9} {:>8} {:>5} {:>6} {:>6} {:>7} {:>5} {:>5}",
            name,
            window,
            client.requests,
            pct(client.success_ratio),
            lat(client.latency_ms),
            client
                .ttft_ms
                .map_or("–".to_owned(), |t| format!("{:.0} ms", t.p50)),
            opt(upstream.as_ref().map(|u| u.requests)),
            upstream
                .as_ref()
                .and_then(|u| u.amplification)
                .map_or("–".to_owned(), |a| format!("{a:.2}")),
            opt(gw.map(|g| g.failovers)),
            opt(gw.map(|g| g.hedges)),
            opt(gw.map(|g| g.budget_refusals)),
            opt(gw.map(|g| g.continuations)),
            client.streams_cut,
        );
        if !faults.is_empty() {
            let _ = writeln!(out, "      faults: {}", faults.join("; "));
        }
        let errors: Vec<String> = client
            .errors_by_status
            .iter()
            .map(|(code, n)| format!("{n}×{code}"))
            .chain((client.refused > 0).then(|| format!("{} refused", client.refused)))
            .chain(
                (client.transport_errors > 0)
                    .then(|| format!("{} transport", client.transport_errors)),
            )
            .chain((client.timeouts > 0).then(|| format!("{} timeouts", client.timeouts)))
            .collect();
        if !errors.is_empty() {
            let _ = writeln!(out, "      client errors: {}", errors.join(", "));
        }
        if let Some(u) = upstream {
            let by: Vec<String> = u
                .by_upstream
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            if !by.is_empty() && name != "all" {
                let _ = writeln!(out, "      upstream: {}", by.join(", "));
            }
        }
        for e in events {
            let _ = writeln!(
                out,
                "      {:>7.1}s breaker {} {}",
                e.at_s, e.target, e.state
            );
        }
    }
    if !r.outages.is_empty() {
        let _ = writeln!(out, "\nOutages:");
        for o in &r.outages {
            let detected = o
                .detected_after_s
                .map_or("never detected (no breaker opened)".to_owned(), |d| {
                    format!("detected after {d:.1}s")
                });
            let recovered = match (o.detected_after_s, o.recovered_after_s) {
                (None, _) => String::new(),
                (Some(_), None) => ", not recovered by the end".to_owned(),
                (Some(_), Some(r)) => format!(", breakers closed {r:.1}s after the fault ended"),
            };
            let _ = writeln!(
                out,
                "  {} {}–{}s: {detected}{recovered}",
                o.provider, o.from_s, o.to_s
            );
        }
    }
    if let Some(rss) = r.rss {
        let _ = writeln!(
            out,
            "\nRSS (drill process incl. gateway): {:.1} MiB at start, {:.1} MiB at end",
            rss.start_kib as f64 / 1024.0,
            rss.end_kib as f64 / 1024.0
        );
    }
    if !r.expectations.is_empty() {
        let _ = writeln!(out, "\nExpectations:");
        for e in &r.expectations {
            let _ = writeln!(
                out,
                "  {} {:<18} {:<24} actual {}",
                if e.passed { "PASS" } else { "FAIL" },
                e.name,
                e.limit,
                e.actual
            );
        }
    }
    let verdict = if r.passed { "PASSED" } else { "FAILED" };
    let failed = r.expectations.iter().filter(|e| !e.passed).count();
    let _ = if failed > 0 {
        writeln!(out, "\nDrill {verdict}: {failed} expectation(s) not met.")
    } else {
        writeln!(out, "\nDrill {verdict}.")
    };
    out
}

pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The report page's CSS, inserted as it is (no escaping: it is ours).
const STYLE: PreEscaped<&str> = PreEscaped(
    "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:64rem;padding:1rem;color:#1b1b1b;background:#fafafa}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:1.5rem} .card{background:#fff;border:1px solid #ddd;border-radius:.5rem;padding:.8rem 1rem;margin:.8rem 0;overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.85rem} td,th{text-align:right;padding:.25rem .4rem;border-top:1px solid #eee} td:first-child,th:first-child,.l{text-align:left}
.pass{color:#137333;font-weight:600} .fail{color:#c5221f;font-weight:600} .muted{color:#666;font-size:.85rem} svg{max-width:100%;height:auto}",
);

/// A self-contained page: inline CSS, inline SVG, no script, no external
/// asset. Escaping by maud: every text from the scenario or the gateway is
/// escaped by the `html!` template; only the CSS and the SVG plots (built
/// by `plotters`, which escapes its own text) go in as [`PreEscaped`].
pub fn html(r: &Report) -> String {
    let verdict = if r.passed { "passed" } else { "failed" };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Drill " (r.scenario) ": " (verdict) }
                style { (STYLE) }
            }
            body {
                h1 {
                    "Drill " code { (r.scenario) } ": "
                    span class=(if r.passed { "pass" } else { "fail" }) { (verdict) }
                }
                p { (r.description) }
                (summary(r))
                (expectations(r))
                (plots(r))
                (phases(r))
                (outages(r))
                (breaker_changes(r))
                @if let Some(rss) = r.rss {
                    p.muted {
                        "Resident memory of the drill process (gateway in-process): "
                        (mib(rss.start_kib)) " MiB at start, " (mib(rss.end_kib)) " MiB at end."
                    }
                }
            }
        }
    }
    .into_string()
        + "\n"
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn summary(r: &Report) -> Markup {
    let load = match r.load.rate {
        Some(rate) => format!("{rate} req/s {}", r.load.arrival),
        None => format!("{} workers", r.load.concurrency),
    };
    html! {
        p.muted {
            (r.mode.replace('_', "-")) " against " (r.gateway) "; " (load) ", "
            (format!("{:.0}", r.load.stream_share * 100.0)) "% streams; "
            (format!("{:.0}", r.achieved_rps)) " req/s achieved over " (r.elapsed_s) "s."
        }
    }
}

fn expectations(r: &Report) -> Markup {
    if r.expectations.is_empty() {
        return html! {};
    }
    html! {
        div.card {
            h2 { "Expectations" }
            table {
                tr { th { "expectation" } th.l { "limit" } th.l { "actual" } th { "verdict" } }
                @for e in &r.expectations {
                    tr {
                        td { (e.name) } td.l { (e.limit) } td.l { (e.actual) }
                        td class=(if e.passed { "pass" } else { "fail" }) {
                            (if e.passed { "PASS" } else { "FAIL" })
                        }
                    }
                }
            }
        }
    }
}

/// The four SVG plots, as `drill::plot` drew them.
fn plots(r: &Report) -> Markup {
    html! {
        div.card {
            h2 { "Success ratio per second" }
            (PreEscaped(super::plot::success_svg(r)))
            h2 { "Latency per second (successful requests)" }
            (PreEscaped(super::plot::latency_svg(r)))
            h2 { "Upstream requests per second, by upstream" }
            (PreEscaped(super::plot::traffic_svg(r)))
            h2 { "Breaker state per target" }
            (PreEscaped(super::plot::breakers_svg(r)))
            p.muted {
                "Dashed lines: phase boundaries (P1, P2, … as in the table below). Red ticks at the top: a breaker opened; green: one closed. Client requests are placed by the second they were sent, upstream requests by the second the watcher counted them. Breaker bands: green closed, amber half-open, red open (as polled)."
            }
        }
    }
}

const PHASE_COLUMNS: [&str; 14] = [
    "window",
    "faults",
    "requests",
    "success",
    "p50/p95/p99 ms",
    "ttft p50/p95/p99 ms",
    "upstream",
    "amp.",
    "retries",
    "failovers",
    "hedges",
    "budget refusals",
    "continued",
    "streams cut",
];

fn phase_row(p: &PhaseReport) -> Markup {
    let gw = p.upstream.as_ref().and_then(|u| u.gateway);
    let opt = |v: Option<u64>| v.map_or("–".to_owned(), |v| v.to_string());
    let faults = if p.faults.is_empty() {
        "–".to_owned()
    } else {
        p.faults.join("; ")
    };
    let amp = p.upstream.as_ref().and_then(|u| u.amplification);
    html! {
        tr {
            td { (p.index) }
            td.l { (p.from_s) "–" (p.to_s) " s" }
            td.l { (faults) }
            td { (p.client.requests) }
            td { (pct(p.client.success_ratio)) }
            td { (lat(p.client.latency_ms)) }
            td { (lat(p.client.ttft_ms)) }
            td { (opt(p.upstream.as_ref().map(|u| u.requests))) }
            td { (amp.map_or("–".to_owned(), |a| format!("{a:.2}"))) }
            td { (opt(gw.map(|g| g.retries))) }
            td { (opt(gw.map(|g| g.failovers))) }
            td { (opt(gw.map(|g| g.hedges))) }
            td { (opt(gw.map(|g| g.budget_refusals))) }
            td { (opt(gw.map(|g| g.continuations))) }
            td { (p.client.streams_cut) }
        }
    }
}

fn phases(r: &Report) -> Markup {
    html! {
        div.card {
            h2 { "Phases" }
            table {
                tr {
                    th { "phase" }
                    @for (i, name) in PHASE_COLUMNS.iter().enumerate() {
                        th class=[(i < 2).then_some("l")] { (name) }
                    }
                }
                @for p in &r.phases { (phase_row(p)) }
            }
            @for p in &r.phases {
                @if let Some(u) = p.upstream.as_ref().filter(|u| !u.by_upstream.is_empty()) {
                    @let by: Vec<String> = u.by_upstream.iter().map(|(k, v)| format!("{k} {v}")).collect();
                    p.muted { "Phase " (p.index) ": upstream " (by.join(", ")) }
                }
            }
        }
    }
}

fn outages(r: &Report) -> Markup {
    if r.outages.is_empty() {
        return html! {};
    }
    let secs = |d: Option<f64>, none: &str| d.map_or(none.to_owned(), |d| format!("{d:.1} s"));
    html! {
        div.card {
            h2 { "Outages" }
            table {
                tr { th { "provider" } th.l { "fault" } th { "detected after" } th { "recovered after" } }
                @for o in &r.outages {
                    tr {
                        td { (o.provider) }
                        td.l { (o.from_s) "–" (o.to_s) " s" }
                        td { (secs(o.detected_after_s, "never")) }
                        td { (secs(o.recovered_after_s, "–")) }
                    }
                }
            }
        }
    }
}

fn breaker_changes(r: &Report) -> Markup {
    if r.breaker_events.is_empty() {
        return html! {};
    }
    html! {
        div.card {
            h2 { "Breaker changes" }
            table {
                tr { th { "at" } th.l { "target" } th.l { "state" } }
                @for e in &r.breaker_events {
                    tr {
                        td { (format!("{:.1}", e.at_s)) " s" }
                        td.l { (e.target) }
                        td.l { (e.state) }
                    }
                }
            }
        }
    }
}

/// `VmRSS` of this process in KiB (Linux), from `/proc/self/status`.
pub fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}
