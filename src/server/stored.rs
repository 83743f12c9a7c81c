//! A completed answer kept for replay: the `Idempotency-Key` store and the
//! response cache keep the same thing (the status, the headers that
//! describe the answer, the body as the client received it) and replay it
//! the same way (`server::proxy::replay::from_store`).
//!
//! Owns which response headers are kept and the answer's byte encoding for
//! a shared back end (Redis). It may not do I/O or know about protocols.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// On a replay: the `x-request-id` of the request that reached upstream.
pub const X_ORIGINAL_REQUEST_ID: &str = "x-switchyard-original-request-id";

/// Stored answers keep only these response headers (the rest describe the
/// replaying request itself: its id, its rate-limit window).
/// `cache-control` is the `no-cache` a stream's answer carries.
const KEPT_HEADERS: [&str; 6] = [
    "content-type",
    "cache-control",
    "x-switchyard-target",
    "x-switchyard-service-tier",
    "x-switchyard-degraded",
    "x-switchyard-deprecation",
];

/// The first byte of [`StoredAnswer::encode`]: a format change is a miss,
/// never a misread answer.
const FORMAT: u8 = 1;

/// A completed answer as it is replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl StoredAnswer {
    /// Keeps the headers in [`KEPT_HEADERS`], and the original request id
    /// as [`X_ORIGINAL_REQUEST_ID`].
    pub fn new(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        let mut kept = HeaderMap::new();
        for name in KEPT_HEADERS {
            if let Some(value) = headers.get(name) {
                kept.insert(name, value.clone());
            }
        }
        if let Some(id) = headers.get(super::proxy::X_REQUEST_ID) {
            kept.insert(X_ORIGINAL_REQUEST_ID, id.clone());
        }
        StoredAnswer {
            status,
            headers: kept,
            body,
        }
    }

    /// What the answer holds in memory (body and headers).
    pub fn bytes(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum();
        self.body.len() + headers
    }

    /// `FORMAT`, the status (u16), the header count (u8), each header as
    /// name and value with u16 lengths, then the body.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.bytes() + 8 + 4 * self.headers.len());
        out.put_u8(FORMAT);
        out.put_u16(self.status.as_u16());
        let headers: Vec<_> = self.headers.iter().take(u8::MAX as usize).collect();
        out.put_u8(headers.len() as u8);
        for (name, value) in headers {
            put_field(&mut out, name.as_str().as_bytes());
            put_field(&mut out, value.as_bytes());
        }
        out.put_slice(&self.body);
        out.freeze()
    }

    /// The answer [`StoredAnswer::encode`] wrote; `None` for anything else.
    pub fn decode(mut bytes: Bytes) -> Option<Self> {
        if take(&mut bytes, 1)?[0] != FORMAT {
            return None;
        }
        let status = take(&mut bytes, 2)?;
        let status = StatusCode::from_u16(u16::from_be_bytes([status[0], status[1]])).ok()?;
        let count = take(&mut bytes, 1)?[0];
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let name = HeaderName::from_bytes(&take_field(&mut bytes)?).ok()?;
            let value = HeaderValue::from_maybe_shared(take_field(&mut bytes)?).ok()?;
            headers.append(name, value);
        }
        Some(StoredAnswer {
            status,
            headers,
            body: bytes,
        })
    }
}

fn put_field(out: &mut BytesMut, field: &[u8]) {
    let len = field.len().min(u16::MAX as usize);
    out.put_u16(len as u16);
    out.put_slice(&field[..len]);
}

fn take(bytes: &mut Bytes, n: usize) -> Option<Bytes> {
    (bytes.len() >= n).then(|| bytes.split_to(n))
}

fn take_field(bytes: &mut Bytes) -> Option<Bytes> {
    let len = take(bytes, 2)?;
    take(bytes, u16::from_be_bytes([len[0], len[1]]) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> StoredAnswer {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-ratelimit-remaining-requests", HeaderValue::from(3u32));
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        StoredAnswer::new(StatusCode::OK, &headers, Bytes::from_static(b"{\"a\":1}"))
    }

    #[test]
    fn keeps_content_headers_not_rate_limits() {
        let a = answer();
        assert!(a.headers.contains_key("content-type"));
        assert!(!a.headers.contains_key("x-ratelimit-remaining-requests"));
        assert_eq!(a.headers[X_ORIGINAL_REQUEST_ID], "req-1");
    }

    #[test]
    fn encodes_and_decodes_and_refuses_garbage() {
        let a = answer();
        assert_eq!(StoredAnswer::decode(a.encode()), Some(a.clone()));
        let mut other = a.encode().to_vec();
        other[0] = 9;
        assert_eq!(StoredAnswer::decode(Bytes::from(other)), None);
        let cut = a.encode().slice(..6);
        assert_eq!(StoredAnswer::decode(cut), None);
        assert_eq!(StoredAnswer::decode(Bytes::new()), None);
    }
}
