//! Every error the gateway itself answers with, and the one place each maps
//! to an HTTP status and an OpenAI-format body. Messages never contain a
//! secret: upstream error bodies are not quoted (some echo masked keys).

use crate::api::{error_body, BodyError};
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
            GatewayError::Body(_) | GatewayError::BodyRead(_) => StatusCode::BAD_REQUEST,
            GatewayError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UnknownModel { .. } | GatewayError::NotFound { .. } => {
                StatusCode::NOT_FOUND
            }
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Exhausted { status, .. } => *status,
            GatewayError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::ShuttingDown | GatewayError::AllTargetsOpen { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
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
            | GatewayError::MethodNotAllowed { .. } => "invalid_request_error",
            GatewayError::Exhausted { .. }
            | GatewayError::DeadlineExceeded { .. }
            | GatewayError::AllTargetsOpen { .. } => "upstream_error",
            GatewayError::ShuttingDown => "service_unavailable",
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
            _ => {}
        }
        response
    }
}
