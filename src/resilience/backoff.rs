//! Exponential backoff with jitter between retries of the same target.
//!
//! Full jitter (a uniform draw in `[0, min(max, base * 2^retry)]`) is the
//! default because it spreads synchronized clients best; see the AWS
//! architecture blog's "Exponential Backoff and Jitter" for the numbers.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, cap]`.
    Full,
    /// Uniform in `[cap / 2, cap]`: never retries almost immediately.
    Equal,
    /// Exactly `cap`: deterministic, only sensible for tests and tiny fleets.
    None,
}

impl std::str::FromStr for Jitter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(Jitter::Full),
            "equal" => Ok(Jitter::Equal),
            "none" => Ok(Jitter::None),
            other => Err(format!(
                "unknown jitter \"{other}\" (known: full, equal, none)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: Jitter,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackoffError {
    #[error("base backoff must be greater than zero")]
    ZeroBase,
    #[error("max backoff ({max:?}) must be at least the base backoff ({base:?})")]
    MaxBelowBase { base: Duration, max: Duration },
}

impl Backoff {
    /// 100 ms doubling to 2 s, full jitter.
    pub const DEFAULT: Backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(2),
        jitter: Jitter::Full,
    };

    pub fn base(&self) -> Duration {
        self.base
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    pub fn new(base: Duration, max: Duration, jitter: Jitter) -> Result<Self, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase);
        }
        if max < base {
            return Err(BackoffError::MaxBelowBase { base, max });
        }
        Ok(Backoff { base, max, jitter })
    }

    /// The ceiling for the `retry`-th retry (0 = first retry), before jitter.
    pub fn cap(&self, retry: u32) -> Duration {
        // 2^31 * any non-zero base already exceeds any sane max; clamp the
        // shift so the multiplication cannot overflow.
        let factor = 1u32 << retry.min(31);
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let cap = self.cap(retry);
        let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
        match self.jitter {
            Jitter::None => cap,
            Jitter::Full => Duration::from_nanos(rng.random_range(0..=nanos)),
            Jitter::Equal => Duration::from_nanos(rng.random_range(nanos / 2..=nanos)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, SeedableRng};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rejects_nonsense() {
        assert_eq!(
            Backoff::new(Duration::ZERO, ms(10), Jitter::Full),
            Err(BackoffError::ZeroBase)
        );
        assert!(matches!(
            Backoff::new(ms(10), ms(5), Jitter::Full),
            Err(BackoffError::MaxBelowBase { .. })
        ));
    }

    #[test]
    fn cap_doubles_then_saturates() {
        let b = Backoff::new(ms(100), ms(1000), Jitter::None).unwrap();
        let caps: Vec<_> = (0..6).map(|r| b.cap(r)).collect();
        assert_eq!(
            caps,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        // Huge retry counts neither overflow nor exceed max.
        assert_eq!(b.cap(u32::MAX), ms(1000));
    }

    #[test]
    fn full_jitter_stays_within_zero_and_cap_and_varies() {
        let b = Backoff::new(ms(50), ms(400), Jitter::Full).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        for retry in 0..8 {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..200 {
                let d = b.delay(retry, &mut rng);
                assert!(d <= b.cap(retry), "{d:?} > cap {:?}", b.cap(retry));
                seen.insert(d);
            }
            assert!(seen.len() > 100, "jitter should spread delays");
        }
    }

    #[test]
    fn equal_jitter_never_below_half_cap() {
        let b = Backoff::new(ms(50), ms(400), Jitter::Equal).unwrap();
        let mut rng = SmallRng::seed_from_u64(9);
        for retry in 0..6 {
            for _ in 0..200 {
                let d = b.delay(retry, &mut rng);
                assert!(d >= b.cap(retry) / 2 && d <= b.cap(retry));
            }
        }
    }

    #[test]
    fn jitter_parses() {
        assert_eq!("full".parse::<Jitter>(), Ok(Jitter::Full));
        assert!("fulll".parse::<Jitter>().unwrap_err().contains("known"));
    }
}
