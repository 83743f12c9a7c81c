//! Failed authentication per client address: a client that presents wrong
//! keys (a typo'd config, or someone spraying random well-formed `sy-` keys)
//! is slowed down before it can keep the key store busy.
//!
//! Each address (IPv4, or the /64 of an IPv6 address, since one host holds
//! a whole /64) gets a GCRA bucket of `failed_auth_per_minute` failures with
//! the whole minute as burst. Past it, the address's failures answer 429
//! with `Retry-After` and, more importantly, it may start no store lookup
//! for a prefix the cache does not know: only keys already cached (fresh,
//! or due for renewal) are checked. An address with recent
//! failures may also have at most one lookup in flight, so a sprayer holds
//! at most one of the bounded lookup slots (`KeySettings::concurrent_lookups`)
//! however fast it sends. Addresses without recent failures are never
//! limited, and a fresh cached key is served whatever its address did: a
//! NAT shared with a sprayer does not lock out legitimate callers whose keys
//! are warm.
//!
//! The table is bounded ([`CAPACITY`] addresses); when full, recovered
//! entries are swept and, if it is still full, new addresses share one
//! overflow bucket (so a spray from more addresses than that is limited as
//! one client). It is touched only on failures and cache misses: the fresh
//! cache hit, the request path's common case, never takes its lock.
//!
//! May not: look at keys or secrets (it sees addresses and a clock).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Addresses tracked at once.
pub const CAPACITY: usize = 65_536;

const MINUTE_MS: i64 = 60_000;

/// One client, as far as limiting goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Client {
    V4(u32),
    V6Prefix(u64),
    /// Every address that found the table full.
    Overflow,
}

impl Client {
    fn of(address: IpAddr) -> Client {
        match address {
            IpAddr::V4(v4) => Client::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(u32::from(v4)),
                None => Client::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Record {
    /// GCRA's theoretical arrival time of the next failure, in ms.
    tat_ms: i64,
    lookups_in_flight: u32,
}

/// The per-address failure table; `per_minute == 0` turns it off.
#[derive(Debug)]
pub struct AddressGuard {
    per_minute: u32,
    table: Mutex<HashMap<Client, Record>>,
}

/// Why an address may not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    pub retry_after: Duration,
}

/// A store lookup started by an address; ends when dropped.
#[derive(Debug)]
pub struct Lookup<'g> {
    guard: &'g AddressGuard,
    client: Option<Client>,
}

impl Drop for Lookup<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client else {
            return;
        };
        let mut table = self.guard.lock();
        if let Some(record) = table.get_mut(&client) {
            record.lookups_in_flight = record.lookups_in_flight.saturating_sub(1);
        }
    }
}

impl AddressGuard {
    pub fn new(per_minute: u32) -> AddressGuard {
        AddressGuard {
            per_minute,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn interval_ms(&self) -> i64 {
        MINUTE_MS / i64::from(self.per_minute.max(1))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Client, Record>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `address` is past its failures: how long it must wait.
    pub fn throttled(&self, address: Option<IpAddr>, now_ms: i64) -> Option<Throttled> {
        let (address, true) = (address?, self.per_minute > 0) else {
            return None;
        };
        let table = self.lock();
        let record = table
            .get(&Client::of(address))
            .or_else(|| table.get(&Client::Overflow))?;
        over_by(record.tat_ms, now_ms, self.interval_ms()).map(|wait| Throttled {
            retry_after: Duration::from_millis(wait.unsigned_abs()),
        })
    }

    /// Counts one failed authentication of `address`.
    pub fn failed(&self, address: Option<IpAddr>, now_ms: i64) {
        let (Some(address), true) = (address, self.per_minute > 0) else {
            return;
        };
        let interval = self.interval_ms();
        let mut table = self.lock();
        let client = admit_client(&mut table, Client::of(address), now_ms);
        let record = table.entry(client).or_default();
        record.tat_ms = record.tat_ms.max(now_ms).saturating_add(interval);
    }

    /// A store lookup for `address`: refused when the address is past its
    /// failures, or has recent failures and a lookup in flight already.
    pub fn begin_lookup(
        &self,
        address: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<Lookup<'_>, Throttled> {
        let untracked = Lookup {
            guard: self,
            client: None,
        };
        let (Some(address), true) = (address, self.per_minute > 0) else {
            return Ok(untracked);
        };
        let interval = self.interval_ms();
        let mut table = self.lock();
        let client = Client::of(address);
        let client = if table.contains_key(&client) {
            client
        } else if table.contains_key(&Client::Overflow) && table.len() >= CAPACITY {
            Client::Overflow
        } else {
            // No recent failure: never limited, nothing to track.
            return Ok(untracked);
        };
        let Some(record) = table.get_mut(&client) else {
            return Ok(untracked);
        };
        if let Some(wait) = over_by(record.tat_ms, now_ms, interval) {
            return Err(Throttled {
                retry_after: Duration::from_millis(wait.unsigned_abs()),
            });
        }
        let recent_failures = record.tat_ms > now_ms;
        if recent_failures && record.lookups_in_flight >= 1 {
            return Err(Throttled {
                retry_after: Duration::from_secs(1),
            });
        }
        record.lookups_in_flight += 1;
        Ok(Lookup {
            guard: self,
            client: Some(client),
        })
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// How far past the burst (the whole minute) a bucket is, if it is.
fn over_by(tat_ms: i64, now_ms: i64, interval_ms: i64) -> Option<i64> {
    // The failure that would come next must fit within a minute of now.
    let wait = tat_ms.saturating_add(interval_ms) - now_ms - MINUTE_MS;
    (wait > 0).then_some(wait)
}

/// The key `client` is counted under: itself, unless the table is full even
/// after forgetting every recovered address, then the shared overflow.
fn admit_client(table: &mut HashMap<Client, Record>, client: Client, now_ms: i64) -> Client {
    if table.len() < CAPACITY || table.contains_key(&client) {
        return client;
    }
    table.retain(|_, r| r.tat_ms > now_ms || r.lookups_in_flight > 0);
    if table.len() < CAPACITY {
        client
    } else {
        Client::Overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn an_address_past_its_failures_waits_and_recovers() {
        let guard = AddressGuard::new(60);
        for _ in 0..60 {
            assert_eq!(guard.throttled(v4(1), 0), None);
            guard.failed(v4(1), 0);
        }
        let wait = guard.throttled(v4(1), 0).expect("61st failure in a minute");
        assert_eq!(wait.retry_after, Duration::from_secs(1));
        assert!(guard.begin_lookup(v4(1), 0).is_err(), "no store lookups");
        assert_eq!(guard.throttled(v4(2), 0), None, "other addresses are not");
        // One failure's worth of the bucket drains per second.
        assert_eq!(guard.throttled(v4(1), 1_000), None);
        assert!(guard.begin_lookup(v4(1), 1_000).is_ok());
    }

    #[test]
    fn an_address_with_failures_has_one_lookup_in_flight() {
        let guard = AddressGuard::new(60);
        let clean = guard.begin_lookup(v4(3), 0).unwrap();
        let clean_too = guard.begin_lookup(v4(3), 0).unwrap();
        drop((clean, clean_too));
        assert_eq!(guard.tracked(), 0, "clean addresses are not tracked");
        guard.failed(v4(4), 0);
        let first = guard.begin_lookup(v4(4), 0).unwrap();
        assert!(guard.begin_lookup(v4(4), 0).is_err());
        drop(first);
        assert!(guard.begin_lookup(v4(4), 0).is_ok(), "the slot came back");
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_and_mapped_v4_as_v4() {
        let guard = AddressGuard::new(1);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        guard.failed(Some(a), 0);
        guard.failed(Some(b), 0);
        assert!(guard.throttled(Some(a), 0).is_some());
        assert!(guard.throttled(Some(other), 0).is_none());
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap();
        guard.failed(Some(mapped), 0);
        guard.failed(v4(5), 0);
        assert!(guard.throttled(v4(5), 0).is_some());
    }

    #[test]
    fn a_full_table_sweeps_then_shares_an_overflow_bucket() {
        let guard = AddressGuard::new(60);
        for i in 0..CAPACITY as u32 {
            guard.failed(Some(IpAddr::from(i.to_be_bytes())), 0);
        }
        assert_eq!(guard.tracked(), CAPACITY);
        // All still recovering: newcomers share the overflow bucket.
        let newcomer = Some(IpAddr::from([192, 168, 0, 1]));
        guard.failed(newcomer, 0);
        assert!(guard.tracked() <= CAPACITY + 1, "bounded");
        // A minute later every bucket has drained: the sweep frees room.
        guard.failed(newcomer, 120_000);
        assert!(guard.tracked() <= 2, "{}", guard.tracked());
    }

    #[test]
    fn zero_turns_it_off() {
        let guard = AddressGuard::new(0);
        for _ in 0..1000 {
            guard.failed(v4(6), 0);
        }
        assert!(guard.throttled(v4(6), 0).is_none());
        assert!(guard.begin_lookup(v4(6), 0).is_ok());
    }
}
