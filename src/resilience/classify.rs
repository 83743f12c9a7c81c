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
    /// The upstream answered, but its body cannot be used (larger than
    /// `max_response_body`, or unreadable): it already did (and billed) the
    /// work, so the request is not sent anywhere again; the client gets 502.
    BadResponse,
    /// The gateway itself ran out of something to connect with (open
    /// files, ephemeral ports, socket buffers): not the upstream's fault, so
    /// no breaker hears of it and no other target is tried (it would meet
    /// the same limit); the client gets 503 `overloaded`.
    LocalOverload,
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
            FailureClass::BadResponse => "bad_response",
            FailureClass::LocalOverload => "local_overload",
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

/// Which part of the connection failed, as far as the error chain tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportKind {
    Dns,
    ConnectRefused,
    ConnectTimeout,
    /// Another failure to connect.
    Connect,
    Tls,
    /// Reset, closed or aborted by the peer (or the network).
    Reset,
    /// Any other I/O or protocol error.
    Other,
    /// This process is out of open files (EMFILE, ENFILE), ephemeral ports
    /// (EADDRNOTAVAIL) or memory for sockets (ENOBUFS, ENOMEM).
    LocalResources,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Dns => "dns",
            TransportKind::ConnectRefused => "connect_refused",
            TransportKind::ConnectTimeout => "connect_timeout",
            TransportKind::Connect => "connect",
            TransportKind::Tls => "tls",
            TransportKind::Reset => "reset",
            TransportKind::Other => "io",
            TransportKind::LocalResources => "local_resources",
        }
    }

    /// Reads the kind from an error chain (hyper, hyper-util's connector,
    /// rustls, std I/O). `connecting`: the error came before a connection
    /// was made, so an unrecognised one is still a connect failure.
    pub fn of(error: &(dyn std::error::Error + 'static), connecting: bool) -> TransportKind {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(kind) = Self::of_one(e) {
                return kind;
            }
            next = e.source();
        }
        if connecting {
            TransportKind::Connect
        } else {
            TransportKind::Other
        }
    }

    fn of_one(e: &(dyn std::error::Error + 'static)) -> Option<TransportKind> {
        if e.is::<rustls::Error>() {
            return Some(TransportKind::Tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            // rustls errors travel inside (possibly nested) io::Errors,
            // whose `source()` skips the wrapped error itself.
            if let Some(kind) = io.get_ref().and_then(|inner| Self::of_one(inner)) {
                return Some(kind);
            }
            if io.raw_os_error().is_some_and(is_local_exhaustion) {
                return Some(TransportKind::LocalResources);
            }
            use std::io::ErrorKind::*;
            return match io.kind() {
                ConnectionRefused => Some(TransportKind::ConnectRefused),
                TimedOut => Some(TransportKind::ConnectTimeout),
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                    Some(TransportKind::Reset)
                }
                _ => None,
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
                return Some(TransportKind::Reset);
            }
        }
        // hyper-util's connector names a failed lookup only in its message.
        e.to_string()
            .starts_with("dns error")
            .then_some(TransportKind::Dns)
    }
}

/// errno values that say this process, not the peer, ran out of resources
/// (Linux numbering: EMFILE, ENFILE, EADDRNOTAVAIL, ENOBUFS, ENOMEM).
fn is_local_exhaustion(errno: i32) -> bool {
    matches!(errno, 24 | 23 | 99 | 105 | 12)
}

/// What went wrong in one attempt, described without any secret: upstream
/// error bodies are not kept because some providers echo (masked) keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureCause {
    Status(StatusCode),
    /// The connection could not be made, or broke.
    Transport(TransportKind),
    Timeout(TimeoutKind),
    /// An error event inside a 200 stream before any content.
    StreamError,
    /// The stream ended before it produced any content.
    EmptyStream,
    ResponseTooLarge,
    /// A stream event longer than `streaming::sse::MAX_EVENT_BYTES` (an
    /// upstream fault: the attempt fails over like any transient one).
    EventTooLarge,
    /// More than 1 MiB of stream preamble (pings, role chunks) before any
    /// content.
    PreambleTooLarge,
    /// A success body the provider's translator could not read.
    Unreadable,
    /// A stream broke after its first content had reached the client (the
    /// reason as the cut event words it); recorded when another target
    /// was asked to continue the answer.
    CutMidStream(&'static str),
    /// A 429 saying the requested service tier (e.g. OpenAI's `flex`) has
    /// no capacity, not that the client is over a limit: classed as rate
    /// limited, but a target with `tier_fallback` is asked again at once
    /// at that tier (`routing::tier`).
    TierUnavailable,
    /// No first content within the target's `tier_first_byte` at its
    /// `service_tier`: treated as a tier refusal (asked again at once at
    /// `tier_fallback`, never reported to the breaker).
    TierFirstByte,
}

impl FailureCause {
    /// The target refused the request's service tier (a 429 saying so, or
    /// silence past `tier_first_byte`): a fact about the tier, not the
    /// target, answered by asking again at `tier_fallback`.
    pub fn is_tier_refusal(&self) -> bool {
        matches!(
            self,
            FailureCause::TierUnavailable | FailureCause::TierFirstByte
        )
    }

    /// The upstream never answered in time: a first-byte or idle timeout,
    /// or a connection that could not be made within the connect timeout.
    /// Route policy `on_timeout` decides whether the same target is tried
    /// again (by default it is not: a silent upstream tends to stay silent).
    pub fn is_silence(&self) -> bool {
        matches!(
            self,
            FailureCause::Timeout(_) | FailureCause::Transport(TransportKind::ConnectTimeout)
        )
    }

    /// A low-cardinality name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            FailureCause::Status(_) => "status",
            FailureCause::Transport(kind) => kind.as_str(),
            FailureCause::Timeout(TimeoutKind::FirstByte) => "timeout_first_byte",
            FailureCause::Timeout(TimeoutKind::Idle) => "timeout_idle",
            FailureCause::Timeout(TimeoutKind::Total) => "timeout_total",
            FailureCause::StreamError => "stream_error",
            FailureCause::EmptyStream => "empty_stream",
            FailureCause::ResponseTooLarge => "response_too_large",
            FailureCause::EventTooLarge => "event_too_large",
            FailureCause::PreambleTooLarge => "preamble_too_large",
            FailureCause::Unreadable => "unreadable",
            FailureCause::CutMidStream(_) => "cut_mid_stream",
            FailureCause::TierUnavailable => "tier_unavailable",
            FailureCause::TierFirstByte => "tier_first_byte",
        }
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureCause::Status(s) => write!(f, "status {}", s.as_u16()),
            FailureCause::Transport(TransportKind::Dns) => f.write_str("DNS lookup failed"),
            FailureCause::Transport(TransportKind::ConnectRefused) => {
                f.write_str("connection refused")
            }
            FailureCause::Transport(TransportKind::ConnectTimeout) => {
                f.write_str("connect timeout")
            }
            FailureCause::Transport(TransportKind::Connect) => f.write_str("connect error"),
            FailureCause::Transport(TransportKind::Tls) => f.write_str("TLS error"),
            FailureCause::Transport(TransportKind::Reset) => f.write_str("connection reset"),
            FailureCause::Transport(TransportKind::Other) => f.write_str("connection error"),
            FailureCause::Transport(TransportKind::LocalResources) => {
                f.write_str("gateway out of open files or ports")
            }
            FailureCause::Timeout(TimeoutKind::FirstByte) => f.write_str("first-byte timeout"),
            FailureCause::Timeout(TimeoutKind::Idle) => f.write_str("idle timeout"),
            FailureCause::Timeout(TimeoutKind::Total) => f.write_str("total deadline"),
            FailureCause::StreamError => f.write_str("error event before content"),
            FailureCause::EmptyStream => f.write_str("stream ended before content"),
            FailureCause::ResponseTooLarge => f.write_str("response too large"),
            FailureCause::EventTooLarge => f.write_str("stream event too large"),
            FailureCause::PreambleTooLarge => f.write_str("too much stream before content"),
            FailureCause::Unreadable => f.write_str("unreadable response"),
            FailureCause::CutMidStream(reason) => write!(f, "stream cut after content: {reason}"),
            FailureCause::TierUnavailable => f.write_str("service tier unavailable (429)"),
            FailureCause::TierFirstByte => {
                f.write_str("first-byte timeout at the service tier (tier_first_byte)")
            }
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

    /// The upstream did the work but its answer cannot be used.
    pub fn bad_response(cause: FailureCause) -> Self {
        AttemptFailure {
            class: FailureClass::BadResponse,
            cause,
            retry_after: None,
            rejection: None,
        }
    }

    /// A failed connection or exchange: transient, unless the gateway
    /// itself is out of resources.
    pub fn transport(kind: TransportKind) -> Self {
        let class = match kind {
            TransportKind::LocalResources => FailureClass::LocalOverload,
            _ => FailureClass::Transient,
        };
        AttemptFailure {
            class,
            ..AttemptFailure::transient(FailureCause::Transport(kind))
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
    fn running_out_of_files_or_ports_is_the_gateways_own_failure() {
        for errno in [24, 23, 99, 105] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert_eq!(
                TransportKind::of(&e, true),
                TransportKind::LocalResources,
                "{e}"
            );
            let failure = AttemptFailure::transport(TransportKind::of(&e, true));
            assert_eq!(failure.class, FailureClass::LocalOverload);
            assert!(!failure.class.retries_same_target());
        }
        let refused = std::io::Error::from_raw_os_error(111);
        let failure = AttemptFailure::transport(TransportKind::of(&refused, true));
        assert_eq!(
            failure.cause,
            FailureCause::Transport(TransportKind::ConnectRefused)
        );
        assert_eq!(failure.class, FailureClass::Transient);
        assert!(FailureCause::Transport(TransportKind::ConnectTimeout).is_silence());
        assert!(!FailureCause::Transport(TransportKind::Reset).is_silence());
    }

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
        assert!(!FailureClass::BadResponse.retries_same_target());
    }

    #[test]
    fn transport_kinds_are_read_from_the_error_chain() {
        use std::io::{Error, ErrorKind};
        let io = |kind: ErrorKind| Error::new(kind, "x");
        assert_eq!(
            TransportKind::of(&io(ErrorKind::ConnectionRefused), true),
            TransportKind::ConnectRefused
        );
        assert_eq!(
            TransportKind::of(&io(ErrorKind::TimedOut), true),
            TransportKind::ConnectTimeout
        );
        assert_eq!(
            TransportKind::of(&io(ErrorKind::ConnectionReset), false),
            TransportKind::Reset
        );
        let tls = Error::new(
            ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Expired),
        );
        assert_eq!(TransportKind::of(&tls, true), TransportKind::Tls);
        #[derive(Debug)]
        struct Dns(Error);
        impl fmt::Display for Dns {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("dns error")
            }
        }
        impl std::error::Error for Dns {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let dns = Dns(io(ErrorKind::Other));
        assert_eq!(TransportKind::of(&dns, true), TransportKind::Dns);
        assert_eq!(
            TransportKind::of(&io(ErrorKind::Other), false),
            TransportKind::Other
        );
    }
}
