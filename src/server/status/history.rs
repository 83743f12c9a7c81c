//! Uptime history for the status page: the request log summed per route
//! and hour (one bounded store query, cached for a minute so page views do
//! not scan the log), turned into 24 hourly and 90 daily bars per route
//! with the incidents that touched each bar. Reads the store only through
//! [`Store::request_buckets`].

use super::state::{bucket_health, Health};
use crate::store::{BucketRow, Store};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;
/// Hourly bars (the last 24 hours, the current one included).
pub const HOURS: i64 = 24;
/// Daily bars (UTC days, today included).
pub const DAYS: i64 = 90;
/// How long one load of the history serves page views.
pub const CACHE_FOR: Duration = Duration::from_secs(60);
/// Bound on the rows one load reads: 90 days of hours for ~45 routes.
const ROW_LIMIT: i64 = 100_000;

/// The request log summed per route and hour, as last read.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub now_ms: i64,
    pub rows: Vec<BucketRow>,
    /// The store did not answer; no bars until the next load.
    pub failed: bool,
}

/// The last load and when it was made; one load at a time.
#[derive(Default)]
pub struct HistoryCache(tokio::sync::Mutex<Option<(std::time::Instant, Arc<Loaded>)>>);

impl HistoryCache {
    /// The cached history, or a fresh load if it is older than
    /// [`CACHE_FOR`]. A failed load is cached too, so a slow store is asked
    /// at most once a minute (each ask bounded by the store timeout).
    pub async fn get(&self, store: &Store) -> Arc<Loaded> {
        let mut cached = self.0.lock().await;
        if let Some((at, loaded)) = cached.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return loaded.clone();
            }
        }
        let now_ms = crate::telemetry::request_log::now_ms();
        let since = (now_ms.div_euclid(DAY_MS) - (DAYS - 1)) * DAY_MS;
        let loaded = match store.request_buckets(since, HOUR_MS, ROW_LIMIT).await {
            Ok(rows) => Loaded {
                now_ms,
                rows,
                failed: false,
            },
            Err(e) => {
                tracing::warn!(error = %e, "status page: uptime history not read");
                Loaded {
                    now_ms,
                    rows: Vec::new(),
                    failed: true,
                }
            }
        };
        let loaded = Arc::new(loaded);
        *cached = Some((std::time::Instant::now(), loaded.clone()));
        loaded
    }
}

/// One uptime bar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bar {
    /// Start of the bar's hour or day, Unix seconds.
    pub start: i64,
    pub requests: i64,
    pub successes: i64,
    pub success_ratio: Option<f64>,
    /// `None`: no requests in the bar.
    pub state: Option<Health>,
    /// Incidents (breaker openings of the route's targets) that were
    /// ongoing at some point of the bar.
    pub incidents: usize,
}

/// A route's uptime bars.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Uptime {
    pub hours: Vec<Bar>,
    pub days: Vec<Bar>,
    pub success_ratio_24h: Option<f64>,
    pub success_ratio_90d: Option<f64>,
}

/// An incident's span in Unix milliseconds (`end`: `None` while ongoing).
pub type Span = (i64, Option<i64>);

pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The bars of `route` from `loaded`, coloured against `objective` (the
/// route's success SLO), marked with the `incidents` that overlap them.
pub fn uptime(loaded: &Loaded, route: &str, objective: Option<f64>, incidents: &[Span]) -> Uptime {
    let mine: Vec<&BucketRow> = loaded.rows.iter().filter(|r| r.route == route).collect();
    let now_hour = loaded.now_ms.div_euclid(HOUR_MS);
    let now_day = loaded.now_ms.div_euclid(DAY_MS);
    let bars = |first: i64, n: i64, width: i64, bucket_of: &dyn Fn(i64) -> i64| -> Vec<Bar> {
        (first..first + n)
            .map(|b| {
                let (requests, successes) = mine
                    .iter()
                    .filter(|r| bucket_of(r.bucket) == b)
                    .fold((0, 0), |(n, s), r| (n + r.requests, s + r.successes));
                let (start, end) = (b * width, (b + 1) * width);
                let success_ratio = ratio(successes, requests);
                Bar {
                    start: start / 1000,
                    requests,
                    successes,
                    success_ratio,
                    state: success_ratio.map(|r| bucket_health(Some(r), objective)),
                    incidents: incidents
                        .iter()
                        .filter(|(s, e)| *s < end && e.unwrap_or(loaded.now_ms) >= start)
                        .count(),
                }
            })
            .collect()
    };
    let hours = bars(now_hour - (HOURS - 1), HOURS, HOUR_MS, &|h| h);
    let days = bars(now_day - (DAYS - 1), DAYS, DAY_MS, &|h| {
        (h * HOUR_MS).div_euclid(DAY_MS)
    });
    Uptime {
        success_ratio_24h: total(&hours),
        success_ratio_90d: total(&days),
        hours,
        days,
    }
}

fn ratio(successes: i64, requests: i64) -> Option<f64> {
    (requests > 0).then(|| successes as f64 / requests as f64)
}

fn total(bars: &[Bar]) -> Option<f64> {
    let (n, s) = bars
        .iter()
        .fold((0, 0), |(n, s), b| (n + b.requests, s + b.successes));
    ratio(s, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(route: &str, hour: i64, requests: i64, successes: i64) -> BucketRow {
        BucketRow {
            route: route.into(),
            bucket: hour,
            requests,
            successes,
        }
    }

    #[test]
    fn bars_sum_hours_into_days_and_mark_incidents() {
        // Some day, 10:30 UTC.
        let now_ms = 20_429 * DAY_MS + 10 * HOUR_MS + 30 * 60_000;
        let now_hour = now_ms / HOUR_MS;
        let loaded = Loaded {
            now_ms,
            rows: vec![
                row("a", now_hour, 100, 71),
                row("a", now_hour - 1, 10, 10),
                row("a", now_hour - 30, 50, 50), // yesterday, not in the 24 h
                row("b", now_hour, 5, 0),
            ],
            failed: false,
        };
        let incident = [(
            (now_hour - 1) * HOUR_MS + 5,
            Some((now_hour - 1) * HOUR_MS + 9),
        )];
        let up = uptime(&loaded, "a", None, &incident);
        assert_eq!(up.hours.len(), 24);
        assert_eq!(up.days.len(), 90);
        let last = up.hours.last().unwrap();
        assert_eq!((last.requests, last.successes), (100, 71));
        assert_eq!(last.state, Some(Health::PartialOutage));
        assert_eq!(last.start, now_hour * 3600);
        assert_eq!(up.hours[22].state, Some(Health::Operational));
        assert_eq!(up.hours[22].incidents, 1);
        assert_eq!(last.incidents, 0);
        assert_eq!(up.hours[0].state, None, "no requests: no state");
        assert_eq!(up.success_ratio_24h, Some(81.0 / 110.0));
        let today = up.days.last().unwrap();
        assert_eq!(today.requests, 110);
        assert_eq!(today.incidents, 1);
        assert_eq!(up.days[88].requests, 50);
        assert_eq!(up.success_ratio_90d, Some(131.0 / 160.0));
    }
}
