//! Spend per key per UTC day and month. Counted in memory on the request
//! path (one uncontended mutex per key, no I/O), written to the store in
//! batches by a background task (`+=` upserts) and on `flush`. A key's
//! current totals are loaded from the store the first time it is used, and
//! re-read after every flush so that gateways sharing a store converge on
//! the same totals. A crash loses at most the spend recorded since the last
//! flush (one flush interval, 1 s by default).

use super::{BudgetExceeded, BudgetPeriod, KeyBudget};
use crate::store::{Store, StoreError, UsageDelta};
use jiff::civil::Date;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a Unix time in milliseconds.
pub(crate) fn day_of(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(DAY_MS)
}

const EPOCH: Date = Date::constant(1970, 1, 1);

/// The civil date of a day number (clamped to the years jiff knows,
/// -9999..=9999: far beyond any key's life).
pub(crate) fn date_of_day(day: i64) -> Date {
    let days = day.clamp(-4_371_587, 2_932_896);
    EPOCH
        .checked_add(jiff::Span::new().days(days))
        .unwrap_or(if day < 0 { Date::MIN } else { Date::MAX })
}

/// The day number of a civil date.
fn day_of_date(date: Date) -> i64 {
    date.since(EPOCH)
        .map_or(0, |span| i64::from(span.get_days()))
}

/// Months since year 0: `year * 12 + month - 1`.
fn month_of_day(day: i64) -> i64 {
    let date = date_of_day(day);
    i64::from(date.year()) * 12 + i64::from(date.month()) - 1
}

fn first_day_of_month(month_index: i64) -> i64 {
    let year = i16::try_from(month_index.div_euclid(12)).unwrap_or(i16::MAX);
    let month = month_index.rem_euclid(12) as i8 + 1;
    Date::new(year, month, 1).map_or(i64::MAX / DAY_MS, day_of_date)
}

/// A budget period as stored: `d:2026-11-25` or `m:2026-11`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Day(i64),
    Month(i64),
}

impl Period {
    fn label(self) -> String {
        match self {
            Period::Day(day) => date_of_day(day).strftime("d:%Y-%m-%d").to_string(),
            Period::Month(month) => format!(
                "m:{:04}-{:02}",
                month.div_euclid(12),
                month.rem_euclid(12) + 1
            ),
        }
    }
}

/// The labels of the day and month containing `now_ms`.
pub(crate) fn period_labels(now_ms: i64) -> (String, String) {
    let day = day_of(now_ms);
    (
        Period::Day(day).label(),
        Period::Month(month_of_day(day)).label(),
    )
}

#[derive(Debug)]
struct Pending {
    period: Period,
    cost_usd: f64,
    requests: i64,
}

#[derive(Debug)]
struct Spend {
    day: i64,
    month: i64,
    day_usd: f64,
    month_usd: f64,
    day_requests: i64,
    month_requests: i64,
    /// Not yet written to the store; usually one day and one month entry.
    pending: Vec<Pending>,
}

impl Spend {
    /// Moves the totals to the period containing `now_ms`. Only forward: a
    /// clock stepped back over midnight does not reset anything.
    fn roll(&mut self, now_ms: i64) {
        let day = day_of(now_ms);
        if day <= self.day {
            return;
        }
        self.day = day;
        self.day_usd = 0.0;
        self.day_requests = 0;
        let month = month_of_day(day);
        if month > self.month {
            self.month = month;
            self.month_usd = 0.0;
            self.month_requests = 0;
        }
    }

    fn add_pending(&mut self, period: Period, cost_usd: f64, requests: i64) {
        match self.pending.iter_mut().find(|p| p.period == period) {
            Some(p) => {
                p.cost_usd += cost_usd;
                p.requests += requests;
            }
            None => self.pending.push(Pending {
                period,
                cost_usd,
                requests,
            }),
        }
    }

    fn pending_of(&self, period: Period) -> (f64, i64) {
        self.pending
            .iter()
            .filter(|p| p.period == period)
            .fold((0.0, 0), |(c, r), p| (c + p.cost_usd, r + p.requests))
    }
}

/// One key's spend, shared by every cached `KeyInfo` of that key.
#[derive(Debug)]
pub(crate) struct SpendCell {
    key_id: i64,
    state: Mutex<Spend>,
}

/// Current totals: (day USD, month USD, day requests, month requests).
pub(crate) type Totals = (f64, f64, i64, i64);

impl SpendCell {
    fn lock(&self) -> std::sync::MutexGuard<'_, Spend> {
        // A panic while holding this lock cannot leave the numbers torn
        // (plain field writes); keep counting rather than fail requests.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record(&self, now_ms: i64, cost_usd: f64) {
        let cost_usd = if cost_usd.is_finite() && cost_usd > 0.0 {
            cost_usd
        } else {
            0.0
        };
        let mut s = self.lock();
        s.roll(now_ms);
        s.day_usd += cost_usd;
        s.month_usd += cost_usd;
        s.day_requests += 1;
        s.month_requests += 1;
        let (day, month) = (s.day, s.month);
        s.add_pending(Period::Day(day), cost_usd, 1);
        s.add_pending(Period::Month(month), cost_usd, 1);
    }

    pub(crate) fn totals(&self, now_ms: i64) -> Totals {
        let mut s = self.lock();
        s.roll(now_ms);
        (s.day_usd, s.month_usd, s.day_requests, s.month_requests)
    }

    pub(crate) fn check(&self, now_ms: i64, budget: &KeyBudget) -> Result<(), BudgetExceeded> {
        if budget.daily_usd.is_none() && budget.monthly_usd.is_none() {
            return Ok(());
        }
        let (day_usd, month_usd, ..) = self.totals(now_ms);
        let day = day_of(now_ms);
        let until = |boundary_day: i64| {
            Duration::from_millis((boundary_day * DAY_MS - now_ms).max(1_000) as u64)
        };
        // The month is checked first: when both are spent, the later reset
        // is the useful Retry-After.
        if let Some(limit) = budget.monthly_usd.filter(|l| month_usd >= *l) {
            return Err(BudgetExceeded {
                period: BudgetPeriod::Monthly,
                limit_usd: limit,
                spent_usd: month_usd,
                retry_after: until(first_day_of_month(month_of_day(day) + 1)),
            });
        }
        if let Some(limit) = budget.daily_usd.filter(|l| day_usd >= *l) {
            return Err(BudgetExceeded {
                period: BudgetPeriod::Daily,
                limit_usd: limit,
                spent_usd: day_usd,
                retry_after: until(day + 1),
            });
        }
        Ok(())
    }
}

/// Every key's spend cell, and the writer that persists them.
#[derive(Debug, Default)]
pub(crate) struct BudgetTracker {
    cells: Mutex<HashMap<i64, Arc<SpendCell>>>,
    /// One flush at a time, so a re-read never races a write.
    flushing: tokio::sync::Mutex<()>,
}

impl BudgetTracker {
    fn cells(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<SpendCell>>> {
        self.cells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn existing(&self, key_id: i64) -> Option<Arc<SpendCell>> {
        self.cells().get(&key_id).cloned()
    }

    /// The key's cell, loading today's and this month's totals from the
    /// store the first time.
    pub(crate) async fn cell(
        &self,
        store: &Store,
        key_id: i64,
        now_ms: i64,
    ) -> Result<Arc<SpendCell>, StoreError> {
        if let Some(cell) = self.existing(key_id) {
            return Ok(cell);
        }
        let (day_label, month_label) = period_labels(now_ms);
        let rows = store
            .key_usage(Some(key_id), &day_label, &month_label)
            .await?;
        let day = day_of(now_ms);
        let mut spend = Spend {
            day,
            month: month_of_day(day),
            day_usd: 0.0,
            month_usd: 0.0,
            day_requests: 0,
            month_requests: 0,
            pending: Vec::new(),
        };
        for row in rows {
            if row.period == day_label {
                spend.day_usd = row.cost_usd;
                spend.day_requests = row.requests;
            } else if row.period == month_label {
                spend.month_usd = row.cost_usd;
                spend.month_requests = row.requests;
            }
        }
        let cell = Arc::new(SpendCell {
            key_id,
            state: Mutex::new(spend),
        });
        // Two first uses racing: the first cell in wins, both see it.
        Ok(self.cells().entry(key_id).or_insert(cell).clone())
    }

    /// Writes pending spend as one batch, then re-reads the current
    /// totals (this node's and every other node's writes). A failed write
    /// keeps the spend pending for the next flush.
    pub(crate) async fn flush(&self, store: &Store, now_ms: i64) -> Result<(), StoreError> {
        let _one_at_a_time = self.flushing.lock().await;
        let cells: Vec<Arc<SpendCell>> = self.cells().values().cloned().collect();
        if cells.is_empty() {
            return Ok(());
        }
        let mut taken: Vec<(Arc<SpendCell>, Pending)> = Vec::new();
        for cell in &cells {
            let mut s = cell.lock();
            taken.extend(s.pending.drain(..).map(|p| (cell.clone(), p)));
        }
        if !taken.is_empty() {
            let deltas: Vec<UsageDelta> = taken
                .iter()
                .map(|(cell, p)| UsageDelta {
                    key_id: cell.key_id,
                    period: p.period.label(),
                    cost_usd: p.cost_usd,
                    requests: p.requests,
                })
                .collect();
            if let Err(e) = store.add_key_usage(&deltas).await {
                for (cell, p) in taken {
                    cell.lock().add_pending(p.period, p.cost_usd, p.requests);
                }
                return Err(e);
            }
        }
        let (day_label, month_label) = period_labels(now_ms);
        let rows = store.key_usage(None, &day_label, &month_label).await?;
        let day = day_of(now_ms);
        let month = month_of_day(day);
        for row in rows {
            let Some(cell) = self.existing(row.key_id) else {
                continue;
            };
            let mut s = cell.lock();
            s.roll(now_ms);
            if row.period == day_label && s.day == day {
                let (cost, requests) = s.pending_of(Period::Day(day));
                s.day_usd = row.cost_usd + cost;
                s.day_requests = row.requests + requests;
            } else if row.period == month_label && s.month == month {
                let (cost, requests) = s.pending_of(Period::Month(month));
                s.month_usd = row.cost_usd + cost;
                s.month_requests = row.requests + requests;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix_ms(date: &str) -> i64 {
        humantime::parse_rfc3339(date)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    #[test]
    fn calendar_matches_rfc3339_formatting() {
        for day in (-800..30_000).step_by(7).chain([0, 11_016, 20_147]) {
            let formatted = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs((day.max(0) * 86_400) as u64),
            )
            .to_string();
            let date = date_of_day(day.max(0));
            assert_eq!(formatted[..10], date.to_string());
            assert_eq!(day_of_date(date), day.max(0));
            assert_eq!(day_of_date(date_of_day(day)), day);
        }
        assert_eq!(first_day_of_month(2026 * 12 + 1), 20_485, "2026-02-01");
        let (day, month) = period_labels(unix_ms("2026-11-25T23:59:59Z"));
        assert_eq!(
            (day.as_str(), month.as_str()),
            ("d:2026-11-25", "m:2026-11")
        );
        let (day, month) = period_labels(unix_ms("2028-02-29T00:00:00Z"));
        assert_eq!(
            (day.as_str(), month.as_str()),
            ("d:2028-02-29", "m:2028-02")
        );
    }

    fn cell(now_ms: i64) -> SpendCell {
        let day = day_of(now_ms);
        SpendCell {
            key_id: 1,
            state: Mutex::new(Spend {
                day,
                month: month_of_day(day),
                day_usd: 0.0,
                month_usd: 0.0,
                day_requests: 0,
                month_requests: 0,
                pending: Vec::new(),
            }),
        }
    }

    #[test]
    fn days_and_months_roll_over_and_retry_after_points_at_the_reset() {
        let now = unix_ms("2026-11-30T23:00:00Z");
        let c = cell(now);
        let budget = KeyBudget {
            daily_usd: Some(1.0),
            monthly_usd: Some(1.5),
        };
        c.record(now, 0.9);
        c.record(now, f64::NAN); // counted as a request, costs nothing
        assert!(c.check(now, &budget).is_ok());
        c.record(now, 0.2);
        let e = c.check(now, &budget).unwrap_err();
        assert_eq!(e.period, BudgetPeriod::Daily);
        assert_eq!(e.retry_after, Duration::from_secs(3_600));
        assert!(e.to_string().contains("daily budget of $1.00"), "{e}");
        assert_eq!(c.totals(now).2, 3);
        // Next day, same month: the day resets, the month does not.
        let c = cell(unix_ms("2026-11-29T12:00:00Z"));
        let day1 = unix_ms("2026-11-29T12:00:00Z");
        c.record(day1, 1.2);
        let day2 = unix_ms("2026-11-30T00:30:00Z");
        assert!(c.check(day2, &budget).is_ok());
        c.record(day2, 0.4);
        let e = c.check(day2, &budget).unwrap_err();
        assert_eq!(e.period, BudgetPeriod::Monthly);
        assert_eq!(e.retry_after, Duration::from_secs(23 * 3_600 + 1_800));
        // Next month: both reset; pending spend keeps its own periods.
        let dec = unix_ms("2026-12-01T00:00:01Z");
        assert!(c.check(dec, &budget).is_ok());
        let s = c.lock();
        let labels: Vec<String> = s.pending.iter().map(|p| p.period.label()).collect();
        assert_eq!(labels, ["d:2026-11-29", "m:2026-11", "d:2026-11-30"]);
        assert_eq!(s.pending_of(Period::Month(month_of_day(day_of(day1)))).1, 2);
    }

    #[test]
    fn a_clock_stepped_back_does_not_reset_spend() {
        let now = unix_ms("2026-11-30T00:00:10Z");
        let c = cell(now);
        c.record(now, 2.0);
        assert_eq!(c.totals(now - 60_000).0, 2.0);
    }
}
