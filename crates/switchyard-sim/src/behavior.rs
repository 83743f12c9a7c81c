//! Turning behaviours, phases, the script and override headers into one
//! [`Fault`] per request.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Behavior, Fault, FaultAction, Latency, Shared};

pub(crate) const DEFAULT_COMPLETION_TOKENS: u32 = 8;

/// Guards the sim against a header asking for an absurd allocation.
const MAX_HEADER_TOKENS: u32 = 1_000_000;

/// Spreads consecutive request indices over the seed space (Fibonacci
/// hashing) so neighbouring requests get unrelated RNG streams.
const INDEX_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

const H_STATUS: HeaderName = HeaderName::from_static("x-sim-status");
const H_RETRY_AFTER_MS: HeaderName = HeaderName::from_static("x-sim-retry-after-ms");
const H_DELAY_MS: HeaderName = HeaderName::from_static("x-sim-delay-ms");
const H_HANG: HeaderName = HeaderName::from_static("x-sim-hang");
const H_CONTEXT_LENGTH: HeaderName = HeaderName::from_static("x-sim-context-length");
const H_DROP_AFTER: HeaderName = HeaderName::from_static("x-sim-drop-after");
const H_ERROR_EVENT: HeaderName = HeaderName::from_static("x-sim-error-event");
const H_TRUNCATE_AFTER: HeaderName = HeaderName::from_static("x-sim-truncate-after");
const H_STALL_AFTER: HeaderName = HeaderName::from_static("x-sim-stall-after");
const H_TOKENS: HeaderName = HeaderName::from_static("x-sim-tokens");

/// Everything a handler needs to know about one request's fate.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) index: u64,
    pub(crate) fault: Fault,
    pub(crate) tokens: u32,
    /// Pause between content chunks, if streaming is paced.
    pub(crate) pace: Option<Duration>,
}

/// Chooses the fault for a request that passed validation. Consumes a request
/// index (and possibly a script entry), so call it once per request. Errors
/// are invalid `x-sim-*` headers, meant for a 400.
pub(crate) fn decide(
    shared: &Shared,
    headers: &HeaderMap,
    stream: bool,
) -> Result<Decision, String> {
    let overrides = Overrides::parse(headers)?;
    let index = shared.next_index.fetch_add(1, Ordering::Relaxed);

    // Guards are dropped before returning: nothing here is held across an
    // await, and a concurrent set_behavior only affects later requests.
    let timeline = shared.timeline.load();
    let default = shared.behavior.load();
    let behavior: &Behavior = if timeline.is_empty() {
        &default
    } else {
        let elapsed = shared.clock.elapsed();
        timeline
            .iter()
            .find(|p| p.from <= elapsed && elapsed < p.until)
            .map_or(&**default, |p| &p.behavior)
    };

    let fault = match overrides.fault {
        Some(fault) => fault,
        None => match shared.script.pop() {
            Some(fault) => fault,
            None => behavior.sample(shared.seed, index, stream),
        },
    };
    Ok(Decision {
        index,
        fault: normalize(fault),
        tokens: overrides.tokens.unwrap_or_else(|| behavior.tokens()),
        pace: behavior.pace(),
    })
}

/// Codes outside 100..=999 cannot be sent; they become 500 so the log, the
/// counters and the wire agree.
fn normalize(mut fault: Fault) -> Fault {
    if let FaultAction::Status { code, .. } = &mut fault.action {
        if !(100..=999).contains(code) {
            *code = 500;
        }
    }
    fault
}

impl Behavior {
    /// Draws every random value up front, in a fixed order, so one rate being
    /// zero never shifts the draws another rate sees.
    pub(crate) fn sample(&self, seed: u64, index: u64, stream: bool) -> Fault {
        let mut rng = SmallRng::seed_from_u64(seed ^ index.wrapping_mul(INDEX_MIX));
        let hang_draw: f64 = rng.random();
        let status_draw: f64 = rng.random();
        let drop_draw: f64 = rng.random();
        let event_draw: f64 = rng.random();
        let delay = self.latency.sample(&mut rng);
        // Drawn last: earlier draws, and so every existing seed's sequence,
        // are unchanged by the rate's existence.
        let context_draw: f64 = rng.random();
        let stall_draw: f64 = rng.random();

        let action = if hang_draw < self.hang_rate {
            FaultAction::Hang
        } else if let Some(code) = self.pick_status(status_draw) {
            let retry_after = if code == 429 || code == 503 {
                self.retry_after
            } else {
                None
            };
            FaultAction::Status { code, retry_after }
        } else if context_draw < self.context_length_rate {
            FaultAction::ContextLength
        } else if !stream {
            FaultAction::Ok
        } else if let Some((n, _)) = self.drop_after.filter(|&(_, p)| drop_draw < p) {
            FaultAction::DropAfter(n)
        } else if let Some((n, _)) = self.stall_after.filter(|&(_, p)| stall_draw < p) {
            FaultAction::StallAfter(n)
        } else if event_draw < self.error_event_rate {
            FaultAction::ErrorEventFirst
        } else {
            FaultAction::Ok
        };
        Fault { delay, action }
    }

    fn pick_status(&self, draw: f64) -> Option<u16> {
        let mut cumulative = 0.0;
        for &(code, rate) in &self.status_rates {
            if rate.is_nan() {
                continue;
            }
            cumulative += rate;
            if draw < cumulative {
                return Some(code);
            }
        }
        None
    }

    pub(crate) fn tokens(&self) -> u32 {
        if self.completion_tokens == 0 {
            DEFAULT_COMPLETION_TOKENS
        } else {
            self.completion_tokens
        }
    }

    pub(crate) fn pace(&self) -> Option<Duration> {
        // Infinity yields a zero pause, hence no pacing.
        if self.tokens_per_sec.is_nan() || self.tokens_per_sec <= 0.0 {
            return None;
        }
        let pause = Duration::try_from_secs_f64(1.0 / self.tokens_per_sec).unwrap_or(Duration::MAX);
        (!pause.is_zero()).then_some(pause)
    }
}

impl Latency {
    fn sample(&self, rng: &mut SmallRng) -> Duration {
        let jitter_draw: f64 = rng.random();
        let spike_draw: f64 = rng.random();
        // Integer nanos with saturating casts: Duration's float helpers
        // panic on overflow, and these values come from user input.
        let jitter_nanos = u64::try_from(self.jitter.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos((jitter_nanos as f64 * jitter_draw) as u64);
        let mut delay = self.base.saturating_add(jitter);
        if spike_draw < self.spike_rate {
            delay = delay.saturating_add(self.spike);
        }
        delay
    }
}

#[derive(Debug, Default)]
struct Overrides {
    fault: Option<Fault>,
    tokens: Option<u32>,
}

impl Overrides {
    fn parse(headers: &HeaderMap) -> Result<Self, String> {
        let tokens = number::<u32>(headers, &H_TOKENS)?;
        if tokens.is_some_and(|t| t > MAX_HEADER_TOKENS) {
            return Err(format!("{H_TOKENS} must be at most {MAX_HEADER_TOKENS}"));
        }
        let delay = number::<u64>(headers, &H_DELAY_MS)?.map(Duration::from_millis);
        let hang = flag(headers, &H_HANG)?;
        let context_length = flag(headers, &H_CONTEXT_LENGTH)?;
        let status = number::<u16>(headers, &H_STATUS)?;
        let drop_after = number::<u32>(headers, &H_DROP_AFTER)?;
        let error_event = match text(headers, &H_ERROR_EVENT)? {
            None => None,
            Some("first") => Some(FaultAction::ErrorEventFirst),
            Some(n) => match n.parse() {
                Ok(n) => Some(FaultAction::ErrorEventAfter(n)),
                Err(_) => return Err(format!("{H_ERROR_EVENT} must be `first` or a number")),
            },
        };
        let truncate_after = number::<u32>(headers, &H_TRUNCATE_AFTER)?;
        let stall_after = number::<u32>(headers, &H_STALL_AFTER)?;

        let action = if hang {
            Some(FaultAction::Hang)
        } else if let Some(code) = status {
            let retry_after = number::<u64>(headers, &H_RETRY_AFTER_MS)?.map(Duration::from_millis);
            Some(FaultAction::Status { code, retry_after })
        } else if context_length {
            Some(FaultAction::ContextLength)
        } else if let Some(n) = drop_after {
            Some(FaultAction::DropAfter(n))
        } else if error_event.is_some() {
            error_event
        } else if let Some(n) = stall_after {
            Some(FaultAction::StallAfter(n))
        } else {
            truncate_after.map(FaultAction::TruncateAfter)
        };
        let fault = match (action, delay) {
            (None, None) => None,
            (action, delay) => Some(Fault {
                delay: delay.unwrap_or_default(),
                action: action.unwrap_or(FaultAction::Ok),
            }),
        };
        Ok(Self { fault, tokens })
    }
}

fn text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, String> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| format!("{name} is not valid text")),
    }
}

fn flag(headers: &HeaderMap, name: &HeaderName) -> Result<bool, String> {
    match text(headers, name)? {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(_) => Err(format!("{name} must be 1, 0, true or false")),
    }
}

fn number<T: std::str::FromStr>(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Option<T>, String> {
    match text(headers, name)? {
        None => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| format!("{name} must be a non-negative integer, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for &(k, v) in pairs {
            map.insert(
                HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            );
        }
        map
    }

    #[test]
    fn sampling_is_deterministic_and_respects_rates() {
        let b = Behavior {
            status_rates: vec![(503, 0.5)],
            ..Behavior::default()
        };
        let first: Vec<Fault> = (0..200).map(|i| b.sample(7, i, false)).collect();
        let again: Vec<Fault> = (0..200).map(|i| b.sample(7, i, false)).collect();
        assert_eq!(first, again);
        let errors = first
            .iter()
            .filter(|f| matches!(f.action, FaultAction::Status { code: 503, .. }))
            .count();
        assert!((60..140).contains(&errors), "{errors} errors out of 200");
    }

    #[test]
    fn hang_wins_then_status_then_stream_faults() {
        let all = Behavior {
            status_rates: vec![(500, 1.0)],
            hang_rate: 1.0,
            drop_after: Some((2, 1.0)),
            ..Behavior::default()
        };
        assert_eq!(all.sample(1, 0, true).action, FaultAction::Hang);
        let no_hang = Behavior {
            hang_rate: 0.0,
            ..all.clone()
        };
        assert_eq!(
            no_hang.sample(1, 0, true).action,
            FaultAction::Status {
                code: 500,
                retry_after: None
            }
        );
        let stream_only = Behavior {
            status_rates: vec![],
            ..no_hang
        };
        assert_eq!(
            stream_only.sample(1, 0, true).action,
            FaultAction::DropAfter(2)
        );
        assert_eq!(stream_only.sample(1, 0, false).action, FaultAction::Ok);
    }

    #[test]
    fn streams_stall_when_they_do_not_drop() {
        let stalling = Behavior {
            stall_after: Some((8, 1.0)),
            ..Behavior::default()
        };
        assert_eq!(
            stalling.sample(1, 0, true).action,
            FaultAction::StallAfter(8)
        );
        assert_eq!(stalling.sample(1, 0, false).action, FaultAction::Ok);
        let both = Behavior {
            drop_after: Some((2, 1.0)),
            ..stalling
        };
        assert_eq!(both.sample(1, 0, true).action, FaultAction::DropAfter(2));
    }

    #[test]
    fn context_length_after_status_before_stream_faults() {
        let b = Behavior {
            status_rates: vec![(500, 1.0)],
            context_length_rate: 1.0,
            drop_after: Some((2, 1.0)),
            ..Behavior::default()
        };
        assert!(matches!(
            b.sample(1, 0, true).action,
            FaultAction::Status { code: 500, .. }
        ));
        let b = Behavior {
            status_rates: vec![],
            ..b
        };
        assert_eq!(b.sample(1, 0, true).action, FaultAction::ContextLength);
        assert_eq!(b.sample(1, 0, false).action, FaultAction::ContextLength);
    }

    #[test]
    fn context_length_rate_leaves_other_draws_alone() {
        let base = Behavior {
            status_rates: vec![(503, 0.3)],
            hang_rate: 0.1,
            ..Behavior::default()
        };
        let with = Behavior {
            context_length_rate: 0.2,
            ..base.clone()
        };
        for i in 0..200 {
            let (a, b) = (base.sample(9, i, false), with.sample(9, i, false));
            if b.action != FaultAction::ContextLength {
                assert_eq!(a, b, "request {i}");
            } else {
                assert_eq!(a.action, FaultAction::Ok, "request {i}");
            }
        }
    }

    #[test]
    fn retry_after_only_on_429_and_503() {
        let b = Behavior {
            status_rates: vec![(500, 1.0)],
            retry_after: Some(Duration::from_secs(1)),
            ..Behavior::default()
        };
        assert_eq!(
            b.sample(1, 0, false).action,
            FaultAction::Status {
                code: 500,
                retry_after: None
            }
        );
        let b = Behavior {
            status_rates: vec![(429, 1.0)],
            ..b
        };
        assert_eq!(
            b.sample(1, 0, false).action,
            FaultAction::Status {
                code: 429,
                retry_after: Some(Duration::from_secs(1))
            }
        );
    }

    #[test]
    fn latency_stays_in_bounds_and_never_panics() {
        let lat = Latency {
            base: Duration::from_millis(10),
            jitter: Duration::from_millis(5),
            spike_rate: 0.0,
            spike: Duration::from_secs(1),
        };
        let mut rng = SmallRng::seed_from_u64(3);
        for _ in 0..100 {
            let d = lat.sample(&mut rng);
            assert!(d >= Duration::from_millis(10) && d < Duration::from_millis(15));
        }
        let huge = Latency {
            base: Duration::MAX,
            jitter: Duration::MAX,
            spike_rate: 1.0,
            spike: Duration::MAX,
        };
        assert_eq!(huge.sample(&mut rng), Duration::MAX);
    }

    #[test]
    fn pace_handles_odd_rates() {
        let pace = |tps| {
            Behavior {
                tokens_per_sec: tps,
                ..Behavior::default()
            }
            .pace()
        };
        assert_eq!(pace(0.0), None);
        assert_eq!(pace(f64::NAN), None);
        assert_eq!(pace(-3.0), None);
        assert_eq!(pace(f64::INFINITY), None);
        assert_eq!(pace(4.0), Some(Duration::from_millis(250)));
        assert_eq!(pace(1e-300), Some(Duration::MAX));
    }

    #[test]
    fn override_headers() {
        let o = Overrides::parse(&headers(&[
            ("x-sim-status", "503"),
            ("x-sim-retry-after-ms", "1500"),
        ]))
        .unwrap();
        assert_eq!(
            o.fault,
            Some(Fault {
                delay: Duration::ZERO,
                action: FaultAction::Status {
                    code: 503,
                    retry_after: Some(Duration::from_millis(1500))
                },
            })
        );
        let o = Overrides::parse(&headers(&[("x-sim-delay-ms", "200")])).unwrap();
        assert_eq!(o.fault, Some(Fault::ok(Duration::from_millis(200))));
        let o = Overrides::parse(&headers(&[
            ("x-sim-error-event", "3"),
            ("x-sim-tokens", "5"),
        ]))
        .unwrap();
        assert_eq!(o.fault, Some(FaultAction::ErrorEventAfter(3).into()));
        assert_eq!(o.tokens, Some(5));
        let o = Overrides::parse(&headers(&[("x-sim-tokens", "5")])).unwrap();
        assert_eq!(o.fault, None);
        assert!(Overrides::parse(&headers(&[("x-sim-status", "abc")])).is_err());
        assert!(Overrides::parse(&headers(&[("x-sim-hang", "maybe")])).is_err());
        let o = Overrides::parse(&headers(&[
            ("x-sim-context-length", "1"),
            ("x-sim-drop-after", "2"),
        ]))
        .unwrap();
        assert_eq!(o.fault, Some(FaultAction::ContextLength.into()));
        assert!(Overrides::parse(&headers(&[("x-sim-context-length", "yes")])).is_err());
        assert!(Overrides::parse(&headers(&[("x-sim-tokens", "99999999")])).is_err());
    }
}
