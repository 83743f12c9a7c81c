//! The one place where an upstream failure is given a class, and the class
//! decides what the failover engine may do next. Code that observes a failure
//! (status, transport error, timeout, in-stream error event) builds an
//! [`AttemptFailure`] here; nobody else interprets status codes.

use http::StatusCode;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// 408, 5xx, 529, connect/IO errors, timeouts, error events before content:
    /// retry the same target with backoff, then fail over.
    Transient,
    /// 429: like transient, but an upstream `Retry-After` decides the wait.
    RateLimited,
    /// 401, 403, 404: this target cannot serve the request (bad key, model
    /// missing there); retrying it is pointless, another target may work.
    UpstreamAuth,
    /// 400, 413, 422 and other 4xx: the request itself is wrong; every target
    /// would refuse it, so the client gets the error as is.
    ClientError,
    /// The prompt does not fit this target's context window (each provider
    /// says so in its own shape, see `providers`): never retried on the same
    /// target; a route may fail over to a target with a larger window.
    ContextLength,
}

impl FailureClass {
    /// The class of a non-success status; `None` for 1xx-3xx.
    pub fn from_status(status: StatusCode) -> Option<FailureClass> {
        let code = status.as_u16();
        Some(match code {
            408 | 500..=599 => FailureClass::Transient,
            429 => FailureClass::RateLimited,
            401 | 403 | 404 => FailureClass::UpstreamAuth,
            400..=499 => FailureClass::ClientError,
            _ => return None,
        })
    }

    /// Classifies an OpenAI-style error object found inside a 200 SSE stream
    /// (providers report overload this way once the head is sent).
    pub fn from_error_object(kind: &str, code: &str) -> FailureClass {
        let has = |needle: &str| kind.contains(needle) || code.contains(needle);
        if has("rate_limit") || has("quota") {
            FailureClass::RateLimited
        } else if has("auth") || has("permission") || has("not_found") {
            FailureClass::UpstreamAuth
        } else if has("context_length") {
            FailureClass::ContextLength
        } else if has("invalid_request") {
            FailureClass::ClientError
        } else {
            FailureClass::Transient
        }
    }

    pub fn retries_same_target(self) -> bool {
        matches!(self, FailureClass::Transient | FailureClass::RateLimited)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Transient => "transient",
            FailureClass::RateLimited => "rate_limited",
            FailureClass::UpstreamAuth => "upstream_auth",
            FailureClass::ClientError => "client_error",
            FailureClass::ContextLength => "context_length",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No response head (non-stream) or no first content event (stream) in time.
    FirstByte,
    /// A gap between body chunks longer than the idle timeout.
    Idle,
    /// The request's total deadline ran out during this attempt.
    Total,
}

/// What went wrong in one attempt, described without any secret: upstream
/// error bodies are not kept because some providers echo (masked) keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureCause {
    Status(StatusCode),
    Connect,
    Io,
    Timeout(TimeoutKind),
    /// An error event inside a 200 stream before any content.
    StreamError,
    /// The stream ended before it produced any content.
    EmptyStream,
    ResponseTooLarge,
    /// A stream event longer than `streaming::sse::MAX_EVENT_BYTES` (an
    /// upstream fault: the attempt fails over like any transient one).
    EventTooLarge,
    /// A success body the provider's translator could not read.
    Unreadable,
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::Status(s) => write!(f, "status {}", s.as_u16()),
            FailureCause::Connect => f.write_str("connect error"),
            FailureCause::Io => f.write_str("connection error"),
            FailureCause::Timeout(TimeoutKind::FirstByte) => f.write_str("first-byte timeout"),
            FailureCause::Timeout(TimeoutKind::Idle) => f.write_str("idle timeout"),
            FailureCause::Timeout(TimeoutKind::Total) => f.write_str("total deadline"),
            FailureCause::StreamError => f.write_str("error event before content"),
            FailureCause::EmptyStream => f.write_str("stream ended before content"),
            FailureCause::ResponseTooLarge => f.write_str("response too large"),
            FailureCause::EventTooLarge => f.write_str("stream event too large"),
            FailureCause::Unreadable => f.write_str("unreadable response"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFailure {
    pub class: FailureClass,
    pub cause: FailureCause,
    pub retry_after: Option<Duration>,
    /// For a context-length error: the upstream's error body (in OpenAI's
    /// shape), served if no larger target can take the request.
    pub rejection: Option<bytes::Bytes>,
}

impl AttemptFailure {
    pub fn status(status: StatusCode, class: FailureClass, retry_after: Option<Duration>) -> Self {
        AttemptFailure {
            class,
            cause: FailureCause::Status(status),
            retry_after,
            rejection: None,
        }
    }

    pub fn transient(cause: FailureCause) -> Self {
        AttemptFailure {
            class: FailureClass::Transient,
            cause,
            retry_after: None,
            rejection: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        use FailureClass::*;
        let cases = [
            (200, None),
            (304, None),
            (400, Some(ClientError)),
            (401, Some(UpstreamAuth)),
            (403, Some(UpstreamAuth)),
            (404, Some(UpstreamAuth)),
            (408, Some(Transient)),
            (413, Some(ClientError)),
            (422, Some(ClientError)),
            (429, Some(RateLimited)),
            (500, Some(Transient)),
            (502, Some(Transient)),
            (503, Some(Transient)),
            (504, Some(Transient)),
            (529, Some(Transient)),
        ];
        for (code, want) in cases {
            let got = FailureClass::from_status(StatusCode::from_u16(code).unwrap());
            assert_eq!(got, want, "status {code}");
        }
    }

    #[test]
    fn error_objects() {
        use FailureClass::*;
        assert_eq!(
            FailureClass::from_error_object("overloaded_error", "overloaded"),
            Transient
        );
        assert_eq!(
            FailureClass::from_error_object("rate_limit_error", ""),
            RateLimited
        );
        assert_eq!(
            FailureClass::from_error_object("authentication_error", ""),
            UpstreamAuth
        );
        assert_eq!(
            FailureClass::from_error_object("invalid_request_error", ""),
            ClientError
        );
        assert_eq!(
            FailureClass::from_error_object("server_error", ""),
            Transient
        );
    }

    #[test]
    fn only_transient_classes_retry_same_target() {
        assert!(FailureClass::Transient.retries_same_target());
        assert!(FailureClass::RateLimited.retries_same_target());
        assert!(!FailureClass::UpstreamAuth.retries_same_target());
        assert!(!FailureClass::ClientError.retries_same_target());
        assert!(!FailureClass::ContextLength.retries_same_target());
    }
}
