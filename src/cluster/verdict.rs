//! The fleet's verdicts as stored in Redis, and the pure decisions of what
//! one replica does with them. No I/O and no clocks: times come in as
//! milliseconds since the Unix epoch, so every rule is a plain unit test.
//!
//! Values are short `|`-separated strings (replica names and causes never
//! hold a `|`: replica names are validated, causes are failure-class names):
//! - `open|UNTIL|AT|REPLICA|CAUSE`: REPLICA opened the breaker at AT; no
//!   probe before UNTIL;
//! - `closed|AT|REPLICA`: REPLICA's probes closed it at AT;
//! - a cooldown: `UNTIL|REPLICA`.

use crate::resilience::breaker::State;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breaker<'a> {
    Open {
        until_ms: u64,
        at_ms: u64,
        replica: &'a str,
        cause: &'a str,
    },
    Closed {
        at_ms: u64,
        replica: &'a str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cooling<'a> {
    pub until_ms: u64,
    pub replica: &'a str,
}

pub fn open_value(until_ms: u64, at_ms: u64, replica: &str, cause: &str) -> String {
    let cause: String = cause.chars().filter(|c| *c != '|').take(120).collect();
    format!("open|{until_ms}|{at_ms}|{replica}|{cause}")
}

pub fn closed_value(at_ms: u64, replica: &str) -> String {
    format!("closed|{at_ms}|{replica}")
}

pub fn cooling_value(until_ms: u64, replica: &str) -> String {
    format!("{until_ms}|{replica}")
}

/// None for anything this version did not write (an older or newer
/// replica's format is ignored, never misread).
pub fn parse_breaker(value: &str) -> Option<Breaker<'_>> {
    let mut parts = value.splitn(5, '|');
    match parts.next()? {
        "open" => Some(Breaker::Open {
            until_ms: parts.next()?.parse().ok()?,
            at_ms: parts.next()?.parse().ok()?,
            replica: parts.next()?,
            cause: parts.next().unwrap_or(""),
        }),
        "closed" => Some(Breaker::Closed {
            at_ms: parts.next()?.parse().ok()?,
            replica: parts.next()?,
        }),
        _ => None,
    }
}

pub fn parse_cooling(value: &str) -> Option<Cooling<'_>> {
    let (until, replica) = value.split_once('|')?;
    Some(Cooling {
        until_ms: until.parse().ok()?,
        replica,
    })
}

/// This replica's state of one target, in the same units as the fleet's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Local {
    pub state: State,
    /// Open: when it may probe.
    pub next_probe_ms: Option<u64>,
    /// Not closed: when the current opening started.
    pub opened_at_ms: Option<u64>,
    /// This replica decided the current opening.
    pub opened_here: bool,
    pub cooled_until_ms: Option<u64>,
}

/// What to do with the fleet's view of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open (or stay open) until then, as `replica` decided at `at_ms`.
    HoldOpen {
        until_ms: u64,
        at_ms: u64,
        replica: String,
        cause: String,
    },
    /// Close: `replica`'s probes found the target healthy.
    Close { replica: String },
    /// Skip the target until then (`Retry-After`).
    Cool { until_ms: u64 },
}

/// The fleet's breaker verdict against this replica's state. Verdicts of
/// this replica itself are never re-applied.
pub fn breaker_action(me: &str, now_ms: u64, local: Local, fleet: Breaker<'_>) -> Option<Action> {
    match fleet {
        Breaker::Open {
            until_ms,
            at_ms,
            replica,
            cause,
        } if replica != me && until_ms > now_ms => {
            let waits_as_long = local.state == State::Open
                && local.next_probe_ms.is_some_and(|probe| probe >= until_ms);
            (!waits_as_long).then(|| Action::HoldOpen {
                until_ms,
                at_ms,
                replica: replica.to_owned(),
                cause: cause.to_owned(),
            })
        }
        // A close counts only for an opening that began before it: a
        // breaker that opened again since then has news the closer lacks.
        Breaker::Closed { at_ms, replica } if replica != me && local.state != State::Closed => {
            local
                .opened_at_ms
                .is_none_or(|opened| opened <= at_ms)
                .then(|| Action::Close {
                    replica: replica.to_owned(),
                })
        }
        _ => None,
    }
}

pub fn cooling_action(me: &str, now_ms: u64, local: Local, fleet: Cooling<'_>) -> Option<Action> {
    let longer = local.cooled_until_ms.is_none_or(|t| t < fleet.until_ms);
    (fleet.replica != me && fleet.until_ms > now_ms && longer).then_some(Action::Cool {
        until_ms: fleet.until_ms,
    })
}

/// Times read back through the two clocks may differ by a millisecond or
/// so; a cooldown shorter by less than this is the same one, not lost.
const SLACK_MS: u64 = 1000;

/// Whether this replica's own opening is missing from the fleet's view (its
/// write was lost: Redis was down, the queue full) and must be written again.
pub fn opening_lost(now_ms: u64, local: Local, fleet: Option<&Breaker<'_>>) -> bool {
    let (State::Open, true, Some(probe)) = (local.state, local.opened_here, local.next_probe_ms)
    else {
        return false;
    };
    probe > now_ms
        && match fleet {
            None => true,
            Some(Breaker::Closed { at_ms, .. }) => local.opened_at_ms.is_some_and(|o| o > *at_ms),
            // Someone's opening is there (the write keeps the later one);
            // a wait here beyond it is a lost probe lease, not news.
            Some(Breaker::Open { .. }) => false,
        }
}

/// Whether a cooldown in force here is missing from the fleet's view.
pub fn cooling_lost(now_ms: u64, local: Local, fleet: Option<&Cooling<'_>>) -> bool {
    local.cooled_until_ms.is_some_and(|until| {
        until > now_ms && fleet.is_none_or(|f| f.until_ms.saturating_add(SLACK_MS) < until)
    })
}

/// Whether to try for the probe lease now: the breaker is open and may
/// probe within `lead`, and no attempt was made for this opening yet.
pub fn lease_due(local: Local, now_ms: u64, lead_ms: u64, tried_for: Option<u64>) -> bool {
    match (local.state, local.next_probe_ms) {
        (State::Open, Some(probe)) => {
            probe <= now_ms.saturating_add(lead_ms) && tried_for != Some(probe)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLOSED: Local = Local {
        state: State::Closed,
        next_probe_ms: None,
        opened_at_ms: None,
        opened_here: false,
        cooled_until_ms: None,
    };

    fn open_local(next_probe_ms: u64, opened_at_ms: u64) -> Local {
        Local {
            state: State::Open,
            next_probe_ms: Some(next_probe_ms),
            opened_at_ms: Some(opened_at_ms),
            opened_here: false,
            cooled_until_ms: None,
        }
    }

    #[test]
    fn an_opening_or_cooldown_the_fleet_lacks_is_written_again() {
        let mine = Local {
            opened_here: true,
            ..open_local(5000, 1000)
        };
        assert!(opening_lost(2000, mine, None), "never written");
        let closed_before = Breaker::Closed {
            at_ms: 900,
            replica: "b",
        };
        assert!(opening_lost(2000, mine, Some(&closed_before)));
        let closed_after = Breaker::Closed {
            at_ms: 1100,
            replica: "b",
        };
        assert!(!opening_lost(2000, mine, Some(&closed_after)));
        let shorter = Breaker::Open {
            until_ms: 3000,
            at_ms: 800,
            replica: "b",
            cause: "",
        };
        assert!(
            !opening_lost(2000, mine, Some(&shorter)),
            "held for another's probe"
        );
        assert!(
            !opening_lost(2000, open_local(5000, 1000), None),
            "another's"
        );
        assert!(!opening_lost(6000, mine, None), "over");

        let cooled = Local {
            cooled_until_ms: Some(9000),
            ..CLOSED
        };
        assert!(cooling_lost(1000, cooled, None));
        let written = Cooling {
            until_ms: 8999,
            replica: "a",
        };
        assert!(!cooling_lost(1000, cooled, Some(&written)));
        assert!(!cooling_lost(1000, CLOSED, None));
    }

    #[test]
    fn values_round_trip_and_foreign_formats_are_ignored() {
        let v = open_value(2000, 1000, "a-1", "server_error|x");
        assert_eq!(
            parse_breaker(&v),
            Some(Breaker::Open {
                until_ms: 2000,
                at_ms: 1000,
                replica: "a-1",
                cause: "server_errorx"
            })
        );
        let v = closed_value(3000, "b");
        assert_eq!(
            parse_breaker(&v),
            Some(Breaker::Closed {
                at_ms: 3000,
                replica: "b"
            })
        );
        let v = cooling_value(5000, "c");
        assert_eq!(
            parse_cooling(&v),
            Some(Cooling {
                until_ms: 5000,
                replica: "c"
            })
        );
        for junk in ["", "open", "open|x|1|a|c", "half|1|a", "v2:open|1|2|a|c"] {
            assert_eq!(parse_breaker(junk), None, "{junk:?}");
        }
        assert_eq!(parse_cooling("soon|a"), None);
    }

    #[test]
    fn another_replicas_opening_holds_a_closed_or_shorter_breaker_open() {
        let fleet = Breaker::Open {
            until_ms: 5000,
            at_ms: 1000,
            replica: "a",
            cause: "server_error",
        };
        let hold = Some(Action::HoldOpen {
            until_ms: 5000,
            at_ms: 1000,
            replica: "a".into(),
            cause: "server_error".into(),
        });
        assert_eq!(breaker_action("b", 2000, CLOSED, fleet.clone()), hold);
        assert_eq!(
            breaker_action("b", 2000, open_local(4000, 900), fleet.clone()),
            hold,
            "extends a shorter wait"
        );
        assert_eq!(
            breaker_action("b", 2000, open_local(6000, 900), fleet.clone()),
            None,
            "already waits longer"
        );
        assert_eq!(
            breaker_action("a", 2000, CLOSED, fleet.clone()),
            None,
            "own verdict"
        );
        assert_eq!(
            breaker_action("b", 5000, CLOSED, fleet),
            None,
            "expired: probing is due"
        );
    }

    #[test]
    fn a_close_applies_only_to_an_opening_older_than_it() {
        let fleet = Breaker::Closed {
            at_ms: 3000,
            replica: "a",
        };
        let close = Some(Action::Close {
            replica: "a".into(),
        });
        assert_eq!(
            breaker_action("b", 3100, open_local(9000, 1000), fleet.clone()),
            close
        );
        assert_eq!(
            breaker_action("b", 3100, open_local(9000, 3050), fleet.clone()),
            None,
            "opened again after the close"
        );
        assert_eq!(breaker_action("b", 3100, CLOSED, fleet.clone()), None);
        assert_eq!(
            breaker_action("a", 3100, open_local(9000, 1000), fleet),
            None
        );
    }

    #[test]
    fn cooling_is_taken_when_longer_and_not_own() {
        let fleet = Cooling {
            until_ms: 8000,
            replica: "a",
        };
        let cool = Some(Action::Cool { until_ms: 8000 });
        assert_eq!(cooling_action("b", 1000, CLOSED, fleet.clone()), cool);
        let cooled = Local {
            cooled_until_ms: Some(9000),
            ..CLOSED
        };
        assert_eq!(cooling_action("b", 1000, cooled, fleet.clone()), None);
        assert_eq!(cooling_action("a", 1000, CLOSED, fleet.clone()), None);
        assert_eq!(cooling_action("b", 8000, CLOSED, fleet), None, "over");
    }

    #[test]
    fn the_lease_is_tried_once_per_opening_shortly_before_the_probe() {
        let local = open_local(5000, 0);
        assert!(!lease_due(local, 4000, 500, None), "too early");
        assert!(lease_due(local, 4600, 500, None));
        assert!(!lease_due(local, 4600, 500, Some(5000)), "already tried");
        assert!(lease_due(local, 4600, 500, Some(4000)), "a new opening");
        assert!(!lease_due(CLOSED, 4600, 500, None));
    }
}
