//! `Idempotency-Key` across replicas: the fleet's Redis holds, per key, who
//! is answering it and then the answer, so a repeat sent to another replica
//! is answered from the first request, not sent upstream again.
//!
//! Owns the Redis keys `PREFIX:idem:<sha256 of scope>`, whose value is
//! - `F` fingerprint token: in flight on some replica (TTL: the route's
//!   total deadline and a margin, so a crashed replica frees it);
//! - `A` fingerprint answer: the stored answer (`StoredAnswer::encode`),
//!   TTL `[idempotency] ttl`;
//! - `R` fingerprint code: the first request was refused to repeats (a
//!   stream, or an answer too large to keep).
//!
//! A claim is `SET NX`; settling and releasing are compare-and-set scripts
//! that touch only this claim's own value. May not do HTTP or decide what
//! a verdict is: `server::idempotency` does, and calls this after its own
//! in-memory claim succeeded. Redis down or slow means one node's
//! behaviour (`RedisLink`): never a refused request.

use super::idempotency::{Fingerprint, IdempotencyError, Scope, StoredAnswer, Verdict};
use crate::redis_link::RedisLink;
use bytes::{BufMut, Bytes, BytesMut};
use redis::Script;
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Bound on every call: a repeat waits at most this for the fleet's view.
const TIMEOUT: Duration = Duration::from_millis(200);
/// Added to the route's deadline for an in-flight claim's TTL.
const IN_FLIGHT_MARGIN: Duration = Duration::from_secs(10);

/// Replaces this claim's value, and only this claim's.
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0",
    )
});
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0",
    )
});

pub struct SharedIdempotency {
    link: RedisLink,
    prefix: Box<str>,
}

/// What the fleet says of a key this replica just claimed in memory.
pub enum Claim {
    /// No replica has it: this request answers it for the fleet.
    Ours(FleetClaim),
    /// Another replica is answering it now.
    InFlight,
    Done(Verdict),
    /// The key was used with another body.
    Reused,
    /// Redis did not answer: go on as one node.
    Unavailable,
}

impl SharedIdempotency {
    pub fn connect(url: &str, prefix: &str) -> redis::RedisResult<SharedIdempotency> {
        Ok(SharedIdempotency {
            link: RedisLink::connect(url, "idempotency", TIMEOUT)?,
            prefix: prefix.into(),
        })
    }

    fn key(&self, scope: &Scope) -> String {
        let mut hash = Sha256::new();
        hash.update(scope.owner.map_or(-1, |o| o).to_be_bytes());
        for part in [&scope.path, &scope.key] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest: [u8; 32] = hash.finalize().into();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:idem:{hex}", self.prefix)
    }

    /// Claims `scope` for the fleet, or says who has it.
    pub async fn claim(
        self: &Arc<Self>,
        scope: &Scope,
        print: &Fingerprint,
        deadline: Duration,
    ) -> Claim {
        let key = self.key(scope);
        let mine = in_flight_value(print);
        let ttl = millis(deadline + IN_FLIGHT_MARGIN);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(mine.as_ref())
            .arg("NX")
            .arg("PX")
            .arg(ttl);
        match self.link.query::<Option<String>>(&set).await {
            None => return Claim::Unavailable,
            Some(Some(_)) => {
                return Claim::Ours(FleetClaim {
                    shared: self.clone(),
                    key,
                    mine,
                    print: *print,
                    done: false,
                })
            }
            Some(None) => {}
        }
        let mut get = redis::cmd("GET");
        get.arg(&key);
        match self.link.query::<Option<Vec<u8>>>(&get).await {
            None => Claim::Unavailable,
            // Released in between: ask again next round.
            Some(None) => Claim::InFlight,
            Some(Some(value)) => read_claim(&value, print),
        }
    }
}

/// This replica's claim on a key for the fleet. Settled, it leaves the
/// verdict for the other replicas; dropped unsettled, it frees the key.
pub struct FleetClaim {
    shared: Arc<SharedIdempotency>,
    key: String,
    mine: Bytes,
    print: Fingerprint,
    done: bool,
}

impl FleetClaim {
    /// Writes `verdict` in the background (the response does not wait).
    pub fn settle(mut self, verdict: &Verdict, ttl: Duration) {
        self.done = true;
        let value = verdict_value(verdict, &self.print);
        let (shared, key, mine) = (self.shared.clone(), self.key.clone(), self.mine.clone());
        tokio::spawn(async move {
            let mut call = SETTLE.prepare_invoke();
            call.key(&key)
                .arg(mine.as_ref())
                .arg(value.as_ref())
                .arg(millis(ttl));
            shared.link.invoke::<i64>(&call).await;
        });
    }
}

impl Drop for FleetClaim {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (shared, key, mine) = (self.shared.clone(), self.key.clone(), self.mine.clone());
        // Outside a runtime (a test dropping a lead) the TTL frees the key.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut call = RELEASE.prepare_invoke();
                call.key(&key).arg(mine.as_ref());
                shared.link.invoke::<i64>(&call).await;
            });
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn in_flight_value(print: &Fingerprint) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + 32 + 16);
    out.put_u8(b'F');
    out.put_slice(print);
    out.put_slice(uuid::Uuid::new_v4().as_bytes());
    out.freeze()
}

fn verdict_value(verdict: &Verdict, print: &Fingerprint) -> Bytes {
    let mut out = BytesMut::new();
    match verdict {
        Verdict::Answer(answer) => {
            out.put_u8(b'A');
            out.put_slice(print);
            out.put_slice(&answer.encode());
        }
        Verdict::Refused(e) => {
            out.put_u8(b'R');
            out.put_slice(print);
            out.put_slice(e.code().as_bytes());
        }
    }
    out.freeze()
}

/// Another replica's value for a key this request carries.
fn read_claim(value: &[u8], print: &Fingerprint) -> Claim {
    let (Some(&kind), Some(theirs)) = (value.first(), value.get(1..33)) else {
        return Claim::Unavailable;
    };
    if theirs != print {
        return Claim::Reused;
    }
    let rest = Bytes::copy_from_slice(&value[33..]);
    match kind {
        b'F' => Claim::InFlight,
        b'A' => StoredAnswer::decode(rest).map_or(Claim::Unavailable, |a| {
            Claim::Done(Verdict::Answer(Arc::new(a)))
        }),
        b'R' => match &rest[..] {
            b"idempotency_stream" => Claim::Done(Verdict::Refused(IdempotencyError::Stream)),
            b"idempotency_not_stored" => Claim::Done(Verdict::Refused(IdempotencyError::NotStored)),
            _ => Claim::Unavailable,
        },
        // A format this version does not know: decide alone.
        _ => Claim::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};

    #[test]
    fn values_read_back_and_a_different_body_is_reused() {
        let print = [7u8; 32];
        let answer = StoredAnswer::new(StatusCode::OK, &HeaderMap::new(), Bytes::from("hi"));
        let value = verdict_value(&Verdict::Answer(Arc::new(answer)), &print);
        match read_claim(&value, &print) {
            Claim::Done(Verdict::Answer(a)) => assert_eq!(a.body, "hi"),
            _ => panic!("expected the answer"),
        }
        assert!(matches!(read_claim(&value, &[8u8; 32]), Claim::Reused));
        let refused = verdict_value(&Verdict::Refused(IdempotencyError::Stream), &print);
        assert!(matches!(
            read_claim(&refused, &print),
            Claim::Done(Verdict::Refused(IdempotencyError::Stream))
        ));
        assert!(matches!(
            read_claim(&in_flight_value(&print), &print),
            Claim::InFlight
        ));
        let mut unknown = vec![b'Z'];
        unknown.extend_from_slice(&print);
        for junk in [&b""[..], b"A", &unknown] {
            assert!(
                matches!(read_claim(junk, &print), Claim::Unavailable),
                "{junk:?}"
            );
        }
    }
}
