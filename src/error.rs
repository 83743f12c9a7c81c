//! Every error the gateway itself answers with, and the one place each maps
//! to an HTTP status and an OpenAI-format body. Messages never contain a
//! secret: upstream error bodies are not quoted (some echo masked keys).

use crate::api::{error_body, BodyError};
use crate::keys::{AuthError, BudgetExceeded};
use crate::routing::AttemptRecord;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
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
    #[error("unknown path {path}")]
    NotFound { path: String },
    #[error("{}", describe("every upstream attempt failed", .attempts))]
    Exhausted {
        attempts: Vec<AttemptRecord>,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("{}", describe("the request deadline was exceeded", .attempts))]
    DeadlineExceeded { attempts: Vec<AttemptRecord> },
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
            | GatewayError::Inbound(_) => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UnknownModel { .. } | GatewayError::NotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Exhausted { status, .. } => *status,
            GatewayError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::ShuttingDown
            | GatewayError::AllTargetsOpen { .. }
            | GatewayError::NoEligibleTarget { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Unauthorized(AuthError::Store(_)) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::RouteNotAllowed { .. } => StatusCode::FORBIDDEN,
            GatewayError::BudgetExceeded(_) | GatewayError::RateLimited(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
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
            | GatewayError::Inbound(_) => "invalid_request_error",
            GatewayError::Exhausted { .. }
            | GatewayError::DeadlineExceeded { .. }
            | GatewayError::AllTargetsOpen { .. }
            | GatewayError::NoEligibleTarget { .. } => "upstream_error",
            GatewayError::ShuttingDown | GatewayError::Unauthorized(AuthError::Store(_)) => {
                "service_unavailable"
            }
            GatewayError::Unauthorized(_) => "invalid_request_error",
            GatewayError::RouteNotAllowed { .. } => "permission_error",
            GatewayError::BudgetExceeded(_) => "insufficient_quota",
            GatewayError::RateLimited(_) => "rate_limit_error",
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
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::Exhausted { .. } => "upstream_unavailable",
            GatewayError::DeadlineExceeded { .. } => "deadline_exceeded",
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
            GatewayError::RouteNotAllowed { .. } => "model_not_allowed",
            GatewayError::BudgetExceeded(_) => "budget_exceeded",
            GatewayError::RateLimited(_) => "rate_limit_exceeded",
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = error_body(&self.to_string(), self.kind(), Some(self.code()));
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            GatewayError::Exhausted {
                retry_after: Some(wait),
                ..
            }
            | GatewayError::AllTargetsOpen {
                retry_after: wait, ..
            } => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            GatewayError::MethodNotAllowed { allowed, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allowed));
            }
            GatewayError::BudgetExceeded(exceeded) => {
                let wait = exceeded.retry_after;
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            GatewayError::Unauthorized(AuthError::Store(_)) => {
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
        response
    }
}
