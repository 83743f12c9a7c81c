//! Parsing of upstream `Retry-After` hints. Only parses; the caller decides
//! whether the wait fits its deadline and cap.

use http::HeaderMap;
use std::time::{Duration, SystemTime};

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
}
