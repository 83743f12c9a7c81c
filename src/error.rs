//! Every error the gateway itself answers with, and the one place each maps
//! to an HTTP status and an OpenAI-format body. Messages never contain a
//! secret: upstream error bodies are not quoted (some echo masked keys).

use crate::api::{error_body_with_param, BodyError};
use crate::keys::{AuthError, BudgetExceeded};
use crate::routing::AttemptRecord;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Body(#[from] BodyError),
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("the request body did not arrive within {} ms", .after.as_millis())]
    BodyTimeout { after: Duration },
    #[error("the model `{model}` does not exist; known models: {known}")]
    UnknownModel { model: String, known: String },
    #[error("method {method} is not allowed on {path}; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error(
        "unknown path {path}; the gateway serves {}",
        crate::server::router::SERVED
    )]
    NotFound { path: String },
    #[error("the body is declared as `{content_type}`; this endpoint takes another content type (JSON: `application/json`; audio uploads: `multipart/form-data`)")]
    UnsupportedMediaType { content_type: String },
    /// A multipart form that cannot be read or lacks a required field.
    #[error("{message}")]
    InvalidField {
        param: &'static str,
        message: String,
    },
    #[error("{}", if *.previous { format!("Previous response with id '{id}' not found.") } else { format!("Response with id '{id}' not found.") })]
    ResponseNotFound { id: String, previous: bool },
    #[error("the stored-response store is unavailable: {0}")]
    ResponseStore(String),
    #[error("invalid multipart form: {0}")]
    Multipart(String),
    #[error("{}", describe("every upstream attempt failed", .attempts))]
    Exhausted {
        attempts: Vec<AttemptRecord>,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("{}", describe("the request deadline was exceeded", .attempts))]
    DeadlineExceeded { attempts: Vec<AttemptRecord> },
    /// The gateway ran out of open files or ports connecting upstream.
    #[error(
        "the gateway is at capacity (out of open files or ports to reach upstreams); retry shortly"
    )]
    LocalOverload { attempts: Vec<AttemptRecord> },
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("{}", describe_open(.open))]
    AllTargetsOpen {
        open: Vec<(String, Duration)>,
        retry_after: Duration,
    },
    /// An Anthropic-format request the gateway cannot translate.
    #[error("{0}")]
    Inbound(#[from] crate::api::anthropic::InboundError),
    /// No target of the route can express the request (and none tried it).
    #[error("{0}")]
    Unsupported(#[from] crate::providers::Unsupported),
    #[error("no target of route `{route}` may serve this request: each is past its deprecation date, or degraded while the request forbids degradation (x-switchyard-allow-degraded: false)")]
    NoEligibleTarget { route: String },
    /// A virtual key was missing, unknown, expired or revoked, or could not
    /// be checked (`AuthError::Store`: 503).
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("this API key may not use the model `{route}`")]
    RouteNotAllowed { route: String },
    #[error("{0}")]
    BudgetExceeded(#[from] BudgetExceeded),
    /// The key's requests/min, tokens/min or concurrency limit.
    #[error("{0}")]
    RateLimited(#[from] crate::limits::Refusal),
    /// An `Idempotency-Key` that is malformed, reused with another body, or
    /// names an answer that cannot be replayed.
    #[error("{0}")]
    Idempotency(#[from] crate::server::idempotency::IdempotencyError),
}

fn describe_open(open: &[(String, Duration)]) -> String {
    let mut out =
        String::from("every target of this route is failing and its circuit breaker is open:");
    for (i, (target, probe_in)) in open.iter().enumerate() {
        let _ = write!(
            out,
            "{} {target} (next probe in {:.1} s)",
            if i == 0 { "" } else { ";" },
            probe_in.as_secs_f64()
        );
    }
    out
}

fn describe(headline: &str, attempts: &[AttemptRecord]) -> String {
    let mut out = format!(
        "{headline} ({} attempt{})",
        attempts.len(),
        if attempts.len() == 1 { "" } else { "s" }
    );
    for (i, a) in attempts.iter().enumerate() {
        let _ = write!(
            out,
            "{} {}: {} ({})",
            if i == 0 { ":" } else { ";" },
            a.target,
            a.class,
            a.cause
        );
    }
    out
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Body(_)
            | GatewayError::BodyRead(_)
            | GatewayError::Unsupported(_)
            | GatewayError::Multipart(_)
            | GatewayError::InvalidField { .. }
            | GatewayError::Inbound(_) => StatusCode::BAD_REQUEST,
            GatewayError::ResponseNotFound { .. } => StatusCode::NOT_FOUND,
            GatewayError::ResponseStore(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UnknownModel { .. } | GatewayError::NotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Exhausted { status, .. } => *status,
            GatewayError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::LocalOverload { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::ShuttingDown
            | GatewayError::AllTargetsOpen { .. }
            | GatewayError::NoEligibleTarget { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Unauthorized(AuthError::Store(_) | AuthError::Unavailable) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Unauthorized(AuthError::Throttled { .. }) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::RouteNotAllowed { .. } => StatusCode::FORBIDDEN,
            GatewayError::BudgetExceeded(_) | GatewayError::RateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            GatewayError::Idempotency(e) => e.status(),
        }
    }

    /// OpenAI's `error.type`.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayError::Body(_)
            | GatewayError::BodyRead(_)
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::BodyTimeout { .. }
            | GatewayError::UnknownModel { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::Unsupported(_)
            | GatewayError::UnsupportedMediaType { .. }
            | GatewayError::Multipart(_)
            | GatewayError::InvalidField { .. }
            | GatewayError::ResponseNotFound { .. }
            | GatewayError::Inbound(_) => "invalid_request_error",
            GatewayError::ResponseStore(_) => "service_unavailable",
            GatewayError::Exhausted { .. }
            | GatewayError::DeadlineExceeded { .. }
            | GatewayError::AllTargetsOpen { .. }
            | GatewayError::NoEligibleTarget { .. } => "upstream_error",
            GatewayError::ShuttingDown
            | GatewayError::LocalOverload { .. }
            | GatewayError::Unauthorized(AuthError::Store(_) | AuthError::Unavailable) => {
                "service_unavailable"
            }
            GatewayError::Unauthorized(AuthError::Throttled { .. }) => "rate_limit_error",
            GatewayError::Unauthorized(_) => "invalid_request_error",
            GatewayError::RouteNotAllowed { .. } => "permission_error",
            GatewayError::BudgetExceeded(_) => "insufficient_quota",
            GatewayError::RateLimited(_) => "rate_limit_error",
            GatewayError::Idempotency(_) => "invalid_request_error",
        }
    }

    /// OpenAI's `error.code`: stable, low-cardinality, safe as a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Body(BodyError::MissingModel) => "missing_model",
            GatewayError::Body(
                BodyError::InvalidJson(_)
                | BodyError::Empty
                | BodyError::NotAnObject
                | BodyError::TooDeep,
            ) => "invalid_json",
            GatewayError::Body(
                BodyError::ModelNotString | BodyError::StreamNotBool | BodyError::MessagesNotArray,
            ) => "invalid_type",
            GatewayError::BodyRead(_) => "body_read_error",
            GatewayError::PayloadTooLarge { .. } => "request_too_large",
            GatewayError::BodyTimeout { .. } => "request_timeout",
            GatewayError::UnknownModel { .. } => "model_not_found",
            GatewayError::NotFound { .. } => "unknown_url",
            GatewayError::UnsupportedMediaType { .. } => "unsupported_media_type",
            GatewayError::Multipart(_) => "invalid_multipart",
            GatewayError::InvalidField { .. } => "invalid_value",
            GatewayError::ResponseNotFound { previous: true, .. } => "previous_response_not_found",
            GatewayError::ResponseNotFound {
                previous: false, ..
            } => "response_not_found",
            GatewayError::ResponseStore(_) => "response_store_unavailable",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::Exhausted { .. } => "upstream_unavailable",
            GatewayError::DeadlineExceeded { .. } => "deadline_exceeded",
            GatewayError::LocalOverload { .. } => "overloaded",
            GatewayError::ShuttingDown => "shutting_down",
            GatewayError::AllTargetsOpen { .. } => "targets_unavailable",
            GatewayError::Unsupported(_) => "unsupported_parameter",
            GatewayError::Inbound(_) => "invalid_request",
            GatewayError::NoEligibleTarget { .. } => "no_eligible_target",
            GatewayError::Unauthorized(AuthError::Missing) => "missing_api_key",
            GatewayError::Unauthorized(AuthError::Unknown) => "invalid_api_key",
            GatewayError::Unauthorized(AuthError::Expired) => "expired_api_key",
            GatewayError::Unauthorized(AuthError::Revoked) => "revoked_api_key",
            GatewayError::Unauthorized(AuthError::Store(_)) => "key_store_unavailable",
            GatewayError::Unauthorized(AuthError::Throttled { .. }) => "too_many_invalid_keys",
            GatewayError::Unauthorized(AuthError::Unavailable) => "auth_unavailable",
            GatewayError::RouteNotAllowed { .. } => "model_not_allowed",
            GatewayError::BudgetExceeded(_) => "budget_exceeded",
            GatewayError::RateLimited(_) => "rate_limit_exceeded",
            GatewayError::Idempotency(e) => e.code(),
        }
    }
}

impl GatewayError {
    /// The headers that go with this error in any protocol: `Retry-After`,
    /// `Allow`, rate-limit headers, `WWW-Authenticate`.
    pub fn headers(&self, headers: &mut HeaderMap) {
        let retry_after = |headers: &mut HeaderMap, wait: Duration| {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        };
        match self {
            GatewayError::Exhausted {
                retry_after: Some(wait),
                ..
            }
            | GatewayError::AllTargetsOpen {
                retry_after: wait, ..
            } => retry_after(headers, *wait),
            GatewayError::MethodNotAllowed { allowed, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allowed));
            }
            GatewayError::BudgetExceeded(exceeded) => retry_after(headers, exceeded.retry_after),
            GatewayError::Unauthorized(AuthError::Throttled { retry_after: wait }) => {
                retry_after(headers, *wait)
            }
            GatewayError::Unauthorized(AuthError::Store(_) | AuthError::Unavailable)
            | GatewayError::LocalOverload { .. }
            | GatewayError::ResponseStore(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            GatewayError::RateLimited(refusal) => {
                for (name, value) in refusal.headers() {
                    headers.insert(name, value);
                }
            }
            GatewayError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
    }

    /// The field of the request the error is about, for OpenAI's `param`.
    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::Unsupported(u) => Some(&u.field),
            GatewayError::InvalidField { param, .. } => Some(param),
            GatewayError::ResponseNotFound { previous: true, .. } => Some("previous_response_id"),
            GatewayError::Body(BodyError::MissingModel | BodyError::ModelNotString) => {
                Some("model")
            }
            GatewayError::Body(BodyError::StreamNotBool) => Some("stream"),
            GatewayError::Body(BodyError::MessagesNotArray) => Some("messages"),
            _ => None,
        }
    }

    /// A response with `body` (in some protocol's error shape), this error's
    /// status and headers.
    pub fn response_with(&self, body: Bytes) -> Response {
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.headers(headers);
        response
    }

    /// The error in OpenAI's shape: `{"error":{"message","type","param","code"}}`.
    pub fn openai_response(&self) -> Response {
        self.response_with(error_body_with_param(
            &self.to_string(),
            self.kind(),
            self.param(),
            Some(self.code()),
        ))
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.openai_response()
    }
}
