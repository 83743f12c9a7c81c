//! Where the traffic went and when each breaker was open, for the report's
//! third and fourth plots: upstream requests per second by upstream (from
//! the watcher's once-a-second readings of the cumulative counts) and each
//! target's breaker states as stretches of time (from the breaker events).
//! Pure functions over what `watch` observed.

use super::report::BreakerEvent;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Cumulative upstream request counts at one moment.
pub type Tick = (Duration, BTreeMap<String, u64>);

/// Requests each upstream received during one second of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamSecond {
    pub t_s: u64,
    pub by_upstream: BTreeMap<String, u64>,
}

/// One stretch of a breaker's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub from_s: f64,
    pub to_s: f64,
    /// `closed`, `half_open` or `open`.
    pub state: &'static str,
}

/// A target's breaker over the whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Band {
    pub target: String,
    pub segments: Vec<Segment>,
}

/// Requests per second per upstream: what arrived between two readings is
/// counted in the second the earlier reading was taken in. Every second up
/// to the last reading has an entry (zero when nothing arrived).
pub fn per_second(ticks: &[Tick]) -> Vec<UpstreamSecond> {
    let names: Vec<&String> = ticks
        .iter()
        .flat_map(|(_, m)| m.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let seconds = ticks.last().map_or(0, |(at, _)| at.as_secs());
    let mut out: Vec<UpstreamSecond> = (0..seconds)
        .map(|t_s| UpstreamSecond {
            t_s,
            by_upstream: names.iter().map(|n| ((*n).clone(), 0)).collect(),
        })
        .collect();
    for pair in ticks.windows(2) {
        let ((at, before), (_, after)) = (&pair[0], &pair[1]);
        let Some(second) = out.get_mut(at.as_secs() as usize) else {
            continue;
        };
        for (name, n) in after {
            let delta = n.saturating_sub(before.get(name).copied().unwrap_or(0));
            *second.by_upstream.entry(name.clone()).or_default() += delta;
        }
    }
    out
}

/// Each target's breaker as stretches from 0 to `end_s`: closed until its
/// first event, then each event's state until the next. Targets that never
/// changed are one closed stretch.
pub fn bands(targets: &[String], events: &[BreakerEvent], end_s: f64) -> Vec<Band> {
    let mut names: Vec<&str> = targets.iter().map(String::as_str).collect();
    for e in events {
        if !names.contains(&e.target.as_str()) {
            names.push(&e.target);
        }
    }
    names.sort_unstable();
    names
        .into_iter()
        .map(|target| {
            let mut segments: Vec<Segment> = Vec::new();
            let (mut from, mut state) = (0.0_f64, "closed");
            for e in events.iter().filter(|e| e.target == target) {
                let at = e.at_s.clamp(from, end_s);
                if e.state != state {
                    if at > from {
                        segments.push(Segment {
                            from_s: from,
                            to_s: at,
                            state,
                        });
                    }
                    (from, state) = (at, e.state);
                }
            }
            if end_s > from {
                segments.push(Segment {
                    from_s: from,
                    to_s: end_s,
                    state,
                });
            }
            Band {
                target: target.to_owned(),
                segments,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(ms: u64, counts: &[(&str, u64)]) -> Tick {
        (
            Duration::from_millis(ms),
            counts.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        )
    }

    #[test]
    fn per_second_differences_cumulative_readings() {
        let ticks = [
            tick(0, &[("primary", 0), ("secondary", 0)]),
            tick(1_020, &[("primary", 10), ("secondary", 0)]),
            tick(2_010, &[("primary", 12), ("secondary", 8)]),
            tick(3_050, &[("primary", 12), ("secondary", 18)]),
        ];
        let s = per_second(&ticks);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].by_upstream["primary"], 10);
        assert_eq!(s[1].by_upstream["primary"], 2);
        assert_eq!(s[1].by_upstream["secondary"], 8);
        assert_eq!(s[2].by_upstream["primary"], 0);
        assert_eq!(s[2].by_upstream["secondary"], 10);
        assert!(per_second(&[]).is_empty());
    }

    #[test]
    fn bands_hold_each_state_until_the_next_event() {
        let event = |at_s, target: &str, state| BreakerEvent {
            at_s,
            target: target.into(),
            provider: None,
            state,
        };
        let events = [
            event(2.0, "p/m@a", "open"),
            event(7.0, "p/m@a", "half_open"),
            event(7.5, "p/m@a", "closed"),
        ];
        let b = bands(&["q/m@b".into(), "p/m@a".into()], &events, 10.0);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].target, "p/m@a");
        let states: Vec<_> = b[0]
            .segments
            .iter()
            .map(|s| (s.from_s, s.to_s, s.state))
            .collect();
        assert_eq!(
            states,
            [
                (0.0, 2.0, "closed"),
                (2.0, 7.0, "open"),
                (7.0, 7.5, "half_open"),
                (7.5, 10.0, "closed")
            ]
        );
        assert_eq!(b[1].segments.len(), 1, "never changed: one closed stretch");
    }
}
