//! W3C Trace Context (`traceparent`, `tracestate`): parsing what a client
//! sends and formatting what goes to an upstream. Pure functions; the ids
//! themselves are random (`rand`), never derived from request content.
//!
//! Only version `00` is formatted; a later version is read by its first four
//! fields as the spec asks (`ff` and malformed headers are ignored, and the
//! request then starts a trace of its own).

use http::HeaderValue;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` passed on (the spec's 32 members of at most 256
/// bytes would be 8 KiB; 512 bytes is what the spec says a vendor must at
/// least propagate). A longer one is dropped, not truncated.
pub const MAX_TRACESTATE: usize = 512;

/// A parsed `traceparent`: the trace this request belongs to and the
/// caller's span, its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Bit 0: sampled.
    pub flags: u8,
}

impl Parent {
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// Reads a `traceparent` header value; `None` for anything malformed, an
/// all-zero id, or version `ff`.
pub fn parse(value: &[u8]) -> Option<Parent> {
    // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2 = 55.
    if value.len() < 55 {
        return None;
    }
    let version = hex_byte(&value[0..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) {
        return None;
    }
    // A later version may append fields, after a '-'.
    if value.len() > 55 && value[55] != b'-' {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let mut trace_id = [0u8; 16];
    hex_into(&value[3..35], &mut trace_id)?;
    let mut span_id = [0u8; 8];
    hex_into(&value[36..52], &mut span_id)?;
    let flags = hex_byte(&value[53..55])?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        flags,
    })
}

/// `00-{trace_id}-{span_id}-{flags}`, the header an upstream attempt carries.
pub fn format(trace_id: &[u8; 16], span_id: &[u8; 8], flags: u8) -> HeaderValue {
    let mut out = [0u8; 55];
    out[0] = b'0';
    out[1] = b'0';
    out[2] = b'-';
    write_hex(trace_id, &mut out[3..35]);
    out[35] = b'-';
    write_hex(span_id, &mut out[36..52]);
    out[52] = b'-';
    write_hex(&[flags], &mut out[53..55]);
    // Only ASCII hex digits and '-' were written.
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static(""))
}

/// A client's `tracestate`, if it is short enough to pass on and visible
/// ASCII (header-safe).
pub fn tracestate(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    (!bytes.is_empty()
        && bytes.len() <= MAX_TRACESTATE
        && bytes.iter().all(|b| (0x20..0x7f).contains(b)))
    .then(|| value.clone())
}

/// Lower-case hex of `bytes` (the trace id in the log line and the request log).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    write_hex(bytes, &mut out);
    out.into_iter().map(char::from).collect()
}

fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

fn hex_into(digits: &[u8], out: &mut [u8]) -> Option<()> {
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = hex_byte(pair)?;
    }
    Some(())
}

/// Two lower-case hex digits (the spec forbids upper case).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_round_trips() {
        let parent = parse(EXAMPLE).unwrap();
        assert_eq!(hex(&parent.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&parent.span_id), "00f067aa0ba902b7");
        assert!(parent.sampled());
        let again = format(&parent.trace_id, &parent.span_id, parent.flags);
        assert_eq!(again.as_bytes(), EXAMPLE);
    }

    #[test]
    fn malformed_headers_are_ignored() {
        let bad: [&[u8]; 7] = [
            b"",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ];
        for value in bad {
            assert_eq!(parse(value), None, "{}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_known_fields() {
        let later = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes";
        let parent = parse(later).unwrap();
        assert!(!parent.sampled());
        assert_eq!(
            parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00x"),
            None
        );
    }

    #[test]
    fn a_tracestate_too_long_is_not_passed_on() {
        let ok = HeaderValue::from_static("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
        assert_eq!(tracestate(&ok), Some(ok.clone()));
        let long = HeaderValue::from_str(&"a=b,".repeat(200)).unwrap();
        assert_eq!(tracestate(&long), None);
    }
}
