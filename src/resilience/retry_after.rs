//! Parsing of upstream `Retry-After` hints. Only parses; the caller decides
//! whether the wait fits its deadline and cap.

use http::HeaderMap;
use std::time::{Duration, SystemTime};

/// For a 429: `Retry-After` as [`parse`] reads it, else the providers'
/// rate-limit reset headers (see [`reset_headers`]). Other failures ignore
/// those headers (OpenAI sends them on every response).
pub fn parse_rate_limited(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    parse(headers, now).or_else(|| reset_headers(headers, now))
}

/// Reads `retry-after-ms` (milliseconds, used by OpenAI and Azure) first, then
/// `Retry-After` as delta-seconds (fractions accepted) or an HTTP-date.
pub fn parse(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
    }
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The limits a provider says are exhausted, and when each resets: OpenAI's
/// `x-ratelimit-reset-{requests,tokens}` (`"1s"`, `"6m0s"`, `"20ms"`) paired
/// with `x-ratelimit-remaining-*`, and Anthropic's
/// `anthropic-ratelimit-*-reset` (RFC 3339) paired with `…-remaining`.
/// The wait is the latest reset among exhausted limits, or the earliest
/// reset when none says it is exhausted.
pub fn reset_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
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
                .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO)),
            text(&format!("anthropic-ratelimit-{limit}-remaining")),
        );
    }
    exhausted
        .or(earliest)
        .map(|d| d.min(Duration::from_secs(86_400)))
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
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(86_400.0)))
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

    #[test]
    fn seconds_fractions_and_ms() {
        let now = SystemTime::now();
        assert_eq!(
            parse(&headers(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            parse(&headers(&[("retry-after", "0.5")]), now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse(
                &headers(&[("retry-after", "3"), ("retry-after-ms", "250")]),
                now
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
                now
            ),
            Some(Duration::from_secs(10))
        );
        // A date in the past means "now".
        assert_eq!(
            parse(
                &headers(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]),
                now
            ),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn garbage_and_negative_are_ignored() {
        let now = SystemTime::now();
        assert_eq!(parse(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(parse(&headers(&[("retry-after", "-4")]), now), None);
        assert_eq!(parse(&headers(&[]), now), None);
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
        assert_eq!(parse_rate_limited(&h, now), Some(Duration::from_secs(360)));
        assert_eq!(parse(&h, now), None, "only for 429s");
        // Nothing says exhausted: the earliest reset.
        let h = headers(&[
            ("x-ratelimit-reset-requests", "1.5s"),
            ("x-ratelimit-reset-tokens", "1m"),
        ]);
        assert_eq!(
            parse_rate_limited(&h, now),
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
        assert_eq!(parse_rate_limited(&h, now), Some(Duration::from_secs(30)));
        // Retry-After still comes first.
        let h = headers(&[("retry-after", "2"), ("x-ratelimit-reset-requests", "6m0s")]);
        assert_eq!(parse_rate_limited(&h, now), Some(Duration::from_secs(2)));
        // Garbage is ignored.
        let h = headers(&[
            ("x-ratelimit-reset-requests", "soon"),
            ("anthropic-ratelimit-tokens-reset", "2025-13-01T00:00:00Z"),
        ]);
        assert_eq!(parse_rate_limited(&h, now), None);
        assert_eq!(go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(
            rfc3339("2025-11-25T17:20:40+01:00"),
            rfc3339("2025-11-25T16:20:40Z")
        );
    }
}
