//! Parsing of upstream `Retry-After` hints. Every form (milliseconds,
//! seconds, HTTP date, the providers' reset headers) comes out capped at the
//! caller's `cap` (the breaker's `open_max`): a far-future date must not
//! keep a target away practically forever. The caller decides whether the
//! wait fits its deadline.

use http::HeaderMap;
use std::time::{Duration, SystemTime};

/// For a 429: `Retry-After` as [`parse`] reads it, else the providers'
/// rate-limit reset headers (see [`reset_headers`]). Other failures ignore
/// those headers (OpenAI sends them on every response).
pub fn parse_rate_limited(headers: &HeaderMap, now: SystemTime, cap: Duration) -> Option<Duration> {
    parse(headers, now, cap).or_else(|| reset_headers(headers, now, cap))
}

/// Reads `retry-after-ms` (milliseconds, used by OpenAI and Azure) first, then
/// `Retry-After` as delta-seconds (fractions accepted) or an HTTP-date.
pub fn parse(headers: &HeaderMap, now: SystemTime, cap: Duration) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
    {
        if let Some(wait) = seconds(ms / 1000.0, cap) {
            return Some(wait);
        }
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs, cap);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(until(at, now).min(cap))
}

/// A non-negative number of seconds as a wait of at most `cap`.
fn seconds(secs: f64, cap: Duration) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(cap.as_secs_f64())))
}

/// The wait until `at` ("now" for a time in the past).
fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

/// The limits a provider says are exhausted, and when each resets: OpenAI's
/// `x-ratelimit-reset-{requests,tokens}` (`"1s"`, `"6m0s"`, `"20ms"`) paired
/// with `x-ratelimit-remaining-*`, and Anthropic's
/// `anthropic-ratelimit-*-reset` (RFC 3339) paired with `…-remaining`.
/// The wait is the latest reset among exhausted limits, or the earliest
/// reset when none says it is exhausted.
pub fn reset_headers(headers: &HeaderMap, now: SystemTime, cap: Duration) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let mut exhausted: Option<Duration> = None;
    let mut earliest: Option<Duration> = None;
    let mut consider = |wait: Option<Duration>, remaining: Option<&str>| {
        let Some(wait) = wait else { return };
        earliest = Some(earliest.map_or(wait, |e| e.min(wait)));
        if remaining == Some("0") {
            exhausted = Some(exhausted.map_or(wait, |e| e.max(wait)));
        }
    };
    for limit in ["requests", "tokens"] {
        consider(
            text(&format!("x-ratelimit-reset-{limit}")).and_then(go_duration),
            text(&format!("x-ratelimit-remaining-{limit}")),
        );
    }
    for limit in ["requests", "tokens", "input-tokens", "output-tokens"] {
        consider(
            text(&format!("anthropic-ratelimit-{limit}-reset"))
                .and_then(rfc3339)
                .map(|at| until(at, now)),
            text(&format!("anthropic-ratelimit-{limit}-remaining")),
        );
    }
    exhausted.or(earliest).map(|d| d.min(cap))
}

/// Go's duration format as OpenAI writes it: `"1h2m3.5s"`, `"20ms"`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest.get(..digits)?.parse().ok()?;
        rest = rest.get(digits..)?;
        let (unit, scale) = [
            ("ms", 1e-3),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("ns", 1e-9),
            ("h", 3600.0),
            ("m", 60.0),
            ("s", 1.0),
        ]
        .into_iter()
        .find(|(unit, _)| rest.starts_with(unit))?;
        total += value * scale;
        rest = rest.get(unit.len()..)?;
    }
    // Capped by the caller; this bound only keeps the conversion finite.
    seconds(total, Duration::from_secs(u64::from(u32::MAX)))
}

/// `2026-11-25T16:20:40Z` or with fractional seconds / a `+00:00` offset.
fn rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20
        || b.get(4) != Some(&b'-')
        || b.get(10).map(u8::to_ascii_uppercase) != Some(b'T')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = text.get(19..)?;
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        let padded = format!("{:0<9}", frac.get(..digits.min(9))?);
        nanos = padded.parse().ok()?;
        rest = frac.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" | "+00:00" | "-00:00" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const CAP: Duration = Duration::from_secs(3600);

    #[test]
    fn every_form_is_capped() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let cap = Duration::from_secs(30);
        let forms: [&[(&'static str, &str)]; 6] = [
            &[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
            &[("retry-after", "86400")],
            &[("retry-after", "1e300")],
            &[("retry-after-ms", "99999999999")],
            &[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "9999h"),
            ],
            &[("anthropic-ratelimit-requests-reset", "9999-12-31T23:59:59Z")],
        ];
        for form in forms {
            assert_eq!(
                parse_rate_limited(&headers(form), now, cap),
                Some(cap),
                "{form:?}"
            );
        }
        assert_eq!(
            parse(&headers(&[("retry-after", "2")]), now, cap),
            Some(Duration::from_secs(2)),
            "a wait under the cap is kept"
        );
        // A garbage ms value falls back to Retry-After.
        assert_eq!(
            parse(
                &headers(&[("retry-after-ms", "soon"), ("retry-after", "3")]),
                now,
                cap
            ),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn seconds_fractions_and_ms() {
        let now = SystemTime::now();
        assert_eq!(
            parse(&headers(&[("retry-after", "3")]), now, CAP),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse(&headers(&[("retry-after", "0.5")]), now, CAP),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse(
                &headers(&[("retry-after", "3"), ("retry-after-ms", "250")]),
                now,
                CAP
            ),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn http_date_relative_to_now() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse(
                &headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:10 GMT")]),
                now,
                CAP
            ),
            Some(Duration::from_secs(10))
        );
        // A date in the past means "now".
        assert_eq!(
            parse(
                &headers(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]),
                now,
                CAP
            ),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn garbage_and_negative_are_ignored() {
        let now = SystemTime::now();
        assert_eq!(parse(&headers(&[("retry-after", "soon")]), now, CAP), None);
        assert_eq!(parse(&headers(&[("retry-after", "-4")]), now, CAP), None);
        assert_eq!(parse(&headers(&[]), now, CAP), None);
    }

    #[test]
    fn provider_reset_headers_are_a_fallback() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_764_087_640);
        // OpenAI: the exhausted limit's reset wins over the other one.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0s"),
            ("x-ratelimit-remaining-tokens", "1200"),
            ("x-ratelimit-reset-tokens", "20ms"),
        ]);
        assert_eq!(
            parse_rate_limited(&h, now, CAP),
            Some(Duration::from_secs(360))
        );
        assert_eq!(parse(&h, now, CAP), None, "only for 429s");
        // Nothing says exhausted: the earliest reset.
        let h = headers(&[
            ("x-ratelimit-reset-requests", "1.5s"),
            ("x-ratelimit-reset-tokens", "1m"),
        ]);
        assert_eq!(
            parse_rate_limited(&h, now, CAP),
            Some(Duration::from_millis(1500))
        );
        // Anthropic: RFC 3339 times; 2025-11-25T16:20:40Z is `now`.
        let h = headers(&[
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2025-11-25T16:21:10Z"),
            (
                "anthropic-ratelimit-requests-reset",
                "2025-11-25T16:20:41.500Z",
            ),
        ]);
        assert_eq!(
            parse_rate_limited(&h, now, CAP),
            Some(Duration::from_secs(30))
        );
        // Retry-After still comes first.
        let h = headers(&[("retry-after", "2"), ("x-ratelimit-reset-requests", "6m0s")]);
        assert_eq!(
            parse_rate_limited(&h, now, CAP),
            Some(Duration::from_secs(2))
        );
        // Garbage is ignored.
        let h = headers(&[
            ("x-ratelimit-reset-requests", "soon"),
            ("anthropic-ratelimit-tokens-reset", "2025-13-01T00:00:00Z"),
        ]);
        assert_eq!(parse_rate_limited(&h, now, CAP), None);
        assert_eq!(go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(
            rfc3339("2025-11-25T17:20:40+01:00"),
            rfc3339("2025-11-25T16:20:40Z")
        );
    }
}
