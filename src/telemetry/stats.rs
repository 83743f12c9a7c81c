//! Live statistics over rolling windows (1 minute, 1 hour, 24 hours): per
//! series (a route, or a route's target) request count, success ratio,
//! latency and time-to-first-token percentiles from HDR histograms, error
//! mix and cost. Memory is bounded: each window is a fixed ring of slots
//! (6 × 10 s, 12 × 5 min, 24 × 1 h) and each slot's histograms have a fixed
//! size (1 µs .. 10 min, 2 significant digits... rounded to one for space: see
//! `new_histogram`). Served by `/admin/stats`, read by the status page.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// 1 µs .. 10 min with one significant digit (≈ 6% precision): about 1 KiB
/// per histogram, so a series (2 histograms × 42 slots) stays under 100 KiB.
fn new_histogram() -> Histogram<u32> {
    match Histogram::new_with_bounds(1, 600_000_000, 1) {
        Ok(h) => h,
        #[allow(clippy::unreachable, reason = "constant bounds hdrhistogram accepts")]
        Err(_) => unreachable!("constant bounds are valid"),
    }
}

#[derive(Clone)]
struct Slot {
    requests: u64,
    successes: u64,
    errors: BTreeMap<&'static str, u64>,
    cost_usd: f64,
    latency: Histogram<u32>,
    first_token: Histogram<u32>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            requests: 0,
            successes: 0,
            errors: BTreeMap::new(),
            cost_usd: 0.0,
            latency: new_histogram(),
            first_token: new_histogram(),
        }
    }

    fn clear(&mut self) {
        self.requests = 0;
        self.successes = 0;
        self.errors.clear();
        self.cost_usd = 0.0;
        self.latency.reset();
        self.first_token.reset();
    }
}

struct Ring {
    slot_len: Duration,
    slots: Vec<Slot>,
    head: usize,
    head_start: Instant,
}

impl Ring {
    fn new(slot_len: Duration, slots: usize, now: Instant) -> Self {
        Ring {
            slot_len,
            slots: vec![Slot::new(); slots],
            head: 0,
            head_start: now,
        }
    }

    fn advance(&mut self, now: Instant) {
        let steps = (now.saturating_duration_since(self.head_start).as_nanos()
            / self.slot_len.as_nanos()) as usize;
        if steps == 0 {
            return;
        }
        for _ in 0..steps.min(self.slots.len()) {
            self.head = (self.head + 1) % self.slots.len();
            self.slots[self.head].clear();
        }
        self.head_start += self.slot_len * steps.min(u32::MAX as usize) as u32;
    }
}

/// One finished request, as the stats see it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub success: bool,
    /// Low-cardinality error kind (e.g. an error code or a status class).
    pub error: Option<&'static str>,
    pub latency: Duration,
    pub first_token: Option<Duration>,
    pub cost_usd: f64,
}

/// Cost and successes per hour over the last 48 hours, to compare the last
/// day with the one before (cost regression alerts).
struct HourlyCost {
    slots: [(f64, u64); 48],
    head: usize,
    head_start: Instant,
}

impl HourlyCost {
    fn advance(&mut self, now: Instant) {
        let steps = (now.saturating_duration_since(self.head_start).as_secs() / 3600) as usize;
        for _ in 0..steps.min(48) {
            self.head = (self.head + 1) % 48;
            self.slots[self.head] = (0.0, 0);
        }
        if steps > 0 {
            self.head_start += Duration::from_secs(3600) * steps.min(u32::MAX as usize) as u32;
        }
    }

    /// (cost, successes) of the newest 24 slots and of the 24 before.
    fn days(&mut self, now: Instant) -> [(f64, u64); 2] {
        self.advance(now);
        let mut out = [(0.0, 0); 2];
        for i in 0..48 {
            let (cost, ok) = self.slots[(self.head + 48 - i) % 48];
            out[i / 24].0 += cost;
            out[i / 24].1 += ok;
        }
        out
    }
}

/// The three windows of one series.
pub struct Series {
    rings: Mutex<[Ring; 3]>,
    hourly_cost: Mutex<HourlyCost>,
}

pub const WINDOWS: [&str; 3] = ["1m", "1h", "24h"];

impl Series {
    pub fn new(now: Instant) -> Self {
        Series {
            rings: Mutex::new([
                Ring::new(Duration::from_secs(10), 6, now),
                Ring::new(Duration::from_secs(300), 12, now),
                Ring::new(Duration::from_secs(3600), 24, now),
            ]),
            hourly_cost: Mutex::new(HourlyCost {
                slots: [(0.0, 0); 48],
                head: 0,
                head_start: now,
            }),
        }
    }

    pub fn record(&self, now: Instant, sample: Sample) {
        if sample.success {
            let mut hourly = self.hourly_cost.lock().unwrap_or_else(|p| p.into_inner());
            hourly.advance(now);
            let head = hourly.head;
            hourly.slots[head].0 += sample.cost_usd;
            hourly.slots[head].1 += 1;
        }
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let micros = |d: Duration| (d.as_micros() as u64).clamp(1, 600_000_000);
        for ring in rings.iter_mut() {
            ring.advance(now);
            let slot = &mut ring.slots[ring.head];
            slot.requests += 1;
            if sample.success {
                slot.successes += 1;
            }
            if let Some(e) = sample.error {
                *slot.errors.entry(e).or_default() += 1;
            }
            slot.cost_usd += sample.cost_usd;
            let _ = slot.latency.record(micros(sample.latency));
            if let Some(t) = sample.first_token {
                let _ = slot.first_token.record(micros(t));
            }
        }
    }

    /// Cost per successful request over the last 24 hours and over the 24
    /// hours before (None where there was no success or no cost).
    pub fn cost_per_success_by_day(&self, now: Instant) -> [Option<f64>; 2] {
        let days = self
            .hourly_cost
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .days(now);
        days.map(|(cost, ok)| (ok > 0 && cost > 0.0).then(|| cost / ok as f64))
    }

    /// Summaries of the three windows, in `WINDOWS` order.
    pub fn summaries(&self, now: Instant) -> [WindowSummary; 3] {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: [WindowSummary; 3] = Default::default();
        for (i, ring) in rings.iter_mut().enumerate() {
            ring.advance(now);
            let mut total = Slot::new();
            for slot in &ring.slots {
                total.requests += slot.requests;
                total.successes += slot.successes;
                for (k, v) in &slot.errors {
                    *total.errors.entry(k).or_default() += v;
                }
                total.cost_usd += slot.cost_usd;
                let _ = total.latency.add(&slot.latency);
                let _ = total.first_token.add(&slot.first_token);
            }
            out[i] = WindowSummary::from_slot(WINDOWS[i], &total);
        }
        out
    }
}

fn percentiles(h: &Histogram<u32>) -> Option<Percentiles> {
    (!h.is_empty()).then(|| {
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        }
    })
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WindowSummary {
    pub window: &'static str,
    pub requests: u64,
    pub successes: u64,
    /// None when there were no requests.
    pub success_ratio: Option<f64>,
    pub latency: Option<Percentiles>,
    pub first_token: Option<Percentiles>,
    pub errors: BTreeMap<&'static str, u64>,
    pub cost_usd: f64,
    pub cost_per_success_usd: Option<f64>,
}

impl WindowSummary {
    fn from_slot(window: &'static str, s: &Slot) -> Self {
        WindowSummary {
            window,
            requests: s.requests,
            successes: s.successes,
            success_ratio: (s.requests > 0).then(|| s.successes as f64 / s.requests as f64),
            latency: percentiles(&s.latency),
            first_token: percentiles(&s.first_token),
            errors: s.errors.clone(),
            cost_usd: s.cost_usd,
            cost_per_success_usd: (s.successes > 0).then(|| s.cost_usd / s.successes as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64) -> Sample {
        Sample {
            success: true,
            error: None,
            latency: Duration::from_millis(ms),
            first_token: None,
            cost_usd: 0.001,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn windows_roll_and_percentiles_hold() {
        let t0 = Instant::now();
        let s = Series::new(t0);
        for ms in 1..=100 {
            s.record(t0, ok(ms));
        }
        s.record(
            t0,
            Sample {
                success: false,
                error: Some("upstream_unavailable"),
                latency: Duration::from_millis(5),
                first_token: None,
                cost_usd: 0.0,
            },
        );
        let [m1, h1, d1] = s.summaries(t0);
        assert_eq!(m1.requests, 101);
        assert_eq!(m1.successes, 100);
        assert_eq!(m1.errors.get("upstream_unavailable"), Some(&1));
        let p = m1.latency.unwrap();
        // One significant digit: within ~6% of the exact value.
        assert!((p.p50_ms - 50.0).abs() <= 4.0, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() <= 7.0, "{p:?}");
        assert!((m1.cost_per_success_usd.unwrap() - 0.001).abs() < 1e-12);
        assert_eq!(h1.requests, 101);
        assert_eq!(d1.requests, 101);

        // Two minutes later the 1-minute window is empty, the others are not.
        let t1 = t0 + Duration::from_secs(120);
        let [m1, h1, _] = s.summaries(t1);
        assert_eq!(m1.requests, 0);
        assert_eq!(m1.success_ratio, None);
        assert_eq!(h1.requests, 101);
        // Cost per success moves from "today" to "the day before".
        let close = |v: Option<f64>| v.is_some_and(|v| (v - 0.001).abs() < 1e-12);
        let [today, before] = s.cost_per_success_by_day(t0);
        assert!(close(today) && before.is_none());
        let [today, before] = s.cost_per_success_by_day(t0 + Duration::from_secs(25 * 3600));
        assert!(today.is_none() && close(before));
        // After 25 hours everything has aged out.
        let [_, h1, d1] = s.summaries(t0 + Duration::from_secs(25 * 3600));
        assert_eq!((h1.requests, d1.requests), (0, 0));
    }
}

/// Every series, by name (`route` or `route target`), shared by successive
/// route tables so a reload keeps the statistics.
#[derive(Default)]
pub struct StatsRegistry {
    series: Mutex<std::collections::HashMap<String, std::sync::Arc<Series>>>,
}

impl StatsRegistry {
    pub fn get_or_create(&self, name: &str) -> std::sync::Arc<Series> {
        let mut map = self.series.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(name.to_owned())
            .or_insert_with(|| std::sync::Arc::new(Series::new(Instant::now())))
            .clone()
    }

    /// Forgets series no longer in the config.
    pub fn retain(&self, names: &std::collections::HashSet<String>) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| names.contains(k));
    }
}
