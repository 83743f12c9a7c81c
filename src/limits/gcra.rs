//! GCRA with weighted cells and after-the-fact adjustment, for tokens per
//! minute: pure math over a theoretical arrival time (TAT), plus an atomic
//! cell holding one TAT. `shared.lua` implements the same math for Redis.
//!
//! governor's GCRA admits `n` cells at once (`check_n`) but cannot take cells
//! back or add them later, which reconciling an estimate with the upstream's
//! reported usage needs; the state is one number, so keeping it here is less
//! code than working around that. A charge after the fact may push the TAT
//! beyond one period ahead: that is debt, and it refuses every request until
//! it is paid off, so the long-run rate still holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A limit of `limit` cells per `period`, with a burst of the whole limit.
/// Times are nanoseconds on one monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    limit: u32,
    /// Time one cell takes to replenish.
    interval: u64,
    period: u64,
}

/// What a successful charge leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charged {
    pub tat: u64,
    /// Cells charged: the request's cost, capped at the whole limit.
    pub cost: u32,
}

impl Gcra {
    /// `limit` must be positive (zero limits are refused before any GCRA).
    pub fn new(limit: u32, period: Duration) -> Gcra {
        let limit = limit.max(1);
        let period = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
        Gcra {
            limit,
            interval: (period / u64::from(limit)).max(1),
            period,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Charges `cost` cells at `now` if they fit, else says how long to wait.
    /// A cost above the whole limit is charged as the whole limit: it could
    /// never fit otherwise, and reconciling charges the rest as debt.
    pub fn charge(&self, tat: u64, now: u64, cost: u32) -> Result<Charged, Duration> {
        let cost = cost.min(self.limit);
        let new_tat = tat
            .max(now)
            .saturating_add(u64::from(cost).saturating_mul(self.interval));
        let ahead = new_tat - now;
        if ahead > self.period {
            return Err(Duration::from_nanos(ahead - self.period));
        }
        Ok(Charged { tat: new_tat, cost })
    }

    /// Moves the TAT by `delta` cells: positive charges (may create debt),
    /// negative refunds (never below `now`, a full bucket).
    pub fn adjust(&self, tat: u64, now: u64, delta: i64) -> u64 {
        let shift = delta.unsigned_abs().saturating_mul(self.interval);
        let base = tat.max(now);
        if delta >= 0 {
            base.saturating_add(shift)
        } else {
            base.saturating_sub(shift).max(now)
        }
    }

    /// Cells that would fit right now.
    pub fn remaining(&self, tat: u64, now: u64) -> u32 {
        let used = tat.saturating_sub(now);
        let free = self.period.saturating_sub(used) / self.interval;
        u32::try_from(free).unwrap_or(u32::MAX).min(self.limit)
    }

    /// Until the bucket is full again.
    pub fn reset(&self, tat: u64, now: u64) -> Duration {
        Duration::from_nanos(tat.saturating_sub(now))
    }
}

/// One GCRA's state, updated lock-free.
#[derive(Debug)]
pub(crate) struct AtomicGcra {
    pub gcra: Gcra,
    tat: AtomicU64,
}

impl AtomicGcra {
    pub fn new(gcra: Gcra) -> AtomicGcra {
        AtomicGcra {
            gcra,
            tat: AtomicU64::new(0),
        }
    }

    pub fn charge(&self, now: u64, cost: u32) -> Result<Charged, Duration> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let charged = self.gcra.charge(tat, now, cost)?;
            match self.tat.compare_exchange_weak(
                tat,
                charged.tat,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(charged),
                Err(current) => tat = current,
            }
        }
    }

    pub fn adjust(&self, now: u64, delta: i64) {
        // `fetch_update` retries the closure until the swap wins; it never fails here.
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(self.gcra.adjust(tat, now, delta))
            });
    }

    pub fn tat(&self) -> u64 {
        self.tat.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const SEC: u64 = 1_000_000_000;

    #[test]
    fn full_bucket_admits_the_whole_limit_then_refuses_with_the_wait_for_the_next_cell() {
        let g = Gcra::new(60, MINUTE); // one cell per second
        let now = 100 * SEC;
        let mut tat = 0;
        for i in 0..60 {
            let c = g
                .charge(tat, now, 1)
                .unwrap_or_else(|w| panic!("cell {i}: {w:?}"));
            tat = c.tat;
        }
        assert_eq!(g.remaining(tat, now), 0);
        assert_eq!(g.charge(tat, now, 1), Err(Duration::from_secs(1)));
        assert_eq!(g.reset(tat, now), MINUTE);
        // One second later exactly one cell fits.
        assert!(g.charge(tat, now + SEC, 1).is_ok());
        assert_eq!(g.remaining(tat, now + SEC), 1);
    }

    #[test]
    fn weighted_cells_and_oversized_requests() {
        let g = Gcra::new(1000, MINUTE);
        let now = 5 * SEC;
        let c = g.charge(0, now, 600).unwrap();
        assert_eq!(g.remaining(c.tat, now), 400);
        // 500 do not fit; the wait is until 100 more have replenished (6 s).
        assert_eq!(g.charge(c.tat, now, 500), Err(Duration::from_secs(6)));
        // More than the whole limit is charged as the whole limit, on a full bucket only.
        let big = g.charge(0, now, 5000).unwrap();
        assert_eq!(big.cost, 1000);
        assert_eq!(g.remaining(big.tat, now), 0);
    }

    #[test]
    fn refunds_stop_at_a_full_bucket_and_charges_become_debt() {
        let g = Gcra::new(1000, MINUTE);
        let now = 10 * SEC;
        let tat = g.charge(0, now, 800).unwrap().tat;
        let refunded = g.adjust(tat, now, -500);
        assert_eq!(g.remaining(refunded, now), 700);
        assert_eq!(g.adjust(refunded, now, -10_000), now, "never beyond full");
        // Used 3000 where 800 were estimated: 2200 more, 2000 beyond the limit.
        let debt = g.adjust(tat, now, 2200);
        assert_eq!(g.remaining(debt, now), 0);
        assert_eq!(g.charge(debt, now, 0), Err(Duration::from_secs(120)));
        assert_eq!(g.reset(debt, now), Duration::from_secs(180));
    }

    #[test]
    fn atomic_cell_agrees_with_the_math() {
        let cell = AtomicGcra::new(Gcra::new(10, MINUTE));
        let now = SEC;
        for _ in 0..10 {
            assert!(cell.charge(now, 1).is_ok());
        }
        assert!(cell.charge(now, 1).is_err());
        cell.adjust(now, -3);
        assert_eq!(cell.gcra.remaining(cell.tat(), now), 3);
    }

    #[test]
    fn extreme_inputs_do_not_overflow() {
        let g = Gcra::new(u32::MAX, MINUTE);
        assert!(g.charge(u64::MAX - 1, u64::MAX, u32::MAX).is_ok());
        let tiny = Gcra::new(1, Duration::MAX);
        assert_eq!(tiny.adjust(u64::MAX, 0, i64::MAX), u64::MAX);
        assert_eq!(tiny.adjust(0, 0, i64::MIN), 0);
        assert_eq!(tiny.remaining(u64::MAX, 0), 0);
    }
}
