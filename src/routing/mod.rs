//! Routing and failover: for one client request, walk the route's ordered
//! targets, retry transient failures on the same target with backoff (or the
//! upstream's `Retry-After`), fail over on the rest, and stop at the total
//! deadline. It decides *which* attempt comes next using `resilience`'s
//! rules; it never builds HTTP responses for the client (the server does).

mod attempt;

pub use attempt::{Served, StreamStart};

use crate::api::{error_body, Endpoint, InspectedBody};
use crate::config::{Route, Target};
use crate::error::GatewayError;
use crate::resilience::{AttemptFailure, FailureCause, FailureClass, TimeoutKind};
use attempt::{attempt, AttemptContext};
use http::{HeaderValue, StatusCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

/// A failed attempt, as reported to the client and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub target: String,
    pub class: FailureClass,
    pub cause: FailureCause,
    pub retry_after: Option<Duration>,
}

/// The response that will be served, and how it was obtained.
pub struct Outcome<'r> {
    pub served: Served,
    pub target: &'r Target,
    /// Upstream attempts made, the successful one included.
    pub attempts: u32,
    pub failures: Vec<AttemptRecord>,
}

/// Gateway-wide counters of the failover engine (exported as metrics later).
#[derive(Debug, Default)]
pub struct EngineCounters {
    pub attempts: AtomicU64,
    /// Attempts after the first on the same target.
    pub retries: AtomicU64,
    /// Moves from one target to the next after a failure.
    pub failovers: AtomicU64,
}

pub struct Dispatch<'r, 'a> {
    pub route: &'r Route,
    pub endpoint: Endpoint,
    pub body: &'a InspectedBody,
    pub request_id: &'a HeaderValue,
    pub max_response_body: usize,
    pub counters: &'a EngineCounters,
}

impl<'r> Dispatch<'r, '_> {
    pub async fn run(self, started: Instant) -> Result<Outcome<'r>, GatewayError> {
        let route = self.route;
        let deadline = started + route.timeouts.total;
        let client = crate::providers::client::for_connect_timeout(route.timeouts.connect);
        let ctx = AttemptContext {
            client: &client,
            endpoint: self.endpoint,
            body: self.body,
            request_id: self.request_id,
            timeouts: &route.timeouts,
            max_response_body: self.max_response_body,
        };
        let policy = &route.retry;
        let mut failures: Vec<AttemptRecord> = Vec::new();
        let mut attempts = 0u32;
        for (target_index, target) in route.targets.iter().enumerate() {
            if target_index > 0 && !failures.is_empty() {
                self.counters.failovers.fetch_add(1, Ordering::Relaxed);
            }
            for try_index in 0..policy.max_attempts_per_target {
                if try_index > 0 {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                }
                attempts += 1;
                self.counters.attempts.fetch_add(1, Ordering::Relaxed);
                let failure = match timeout_at(deadline, attempt(&ctx, target)).await {
                    Err(_) => {
                        let cut =
                            AttemptFailure::transient(FailureCause::Timeout(TimeoutKind::Total));
                        failures.push(record(target, &cut));
                        return Err(GatewayError::DeadlineExceeded { attempts: failures });
                    }
                    Ok(Ok(served)) => {
                        return Ok(Outcome {
                            served,
                            target,
                            attempts,
                            failures,
                        })
                    }
                    Ok(Err(failure)) => failure,
                };
                failures.push(record(target, &failure));
                if failure.class == FailureClass::ClientError {
                    // Only an in-stream error event gets here (client-error
                    // statuses are passed through as served responses).
                    return Ok(Outcome {
                        served: rejected_in_stream(),
                        target,
                        attempts,
                        failures,
                    });
                }
                if !failure.class.retries_same_target()
                    || try_index + 1 == policy.max_attempts_per_target
                {
                    break;
                }
                let wait = match failure.retry_after {
                    Some(wait) if wait <= policy.max_retry_after => wait,
                    // The upstream asks for longer than we will wait: fail over now.
                    Some(_) => break,
                    None => policy.backoff.delay(try_index, &mut rand::rng()),
                };
                if Instant::now() + wait >= deadline {
                    break;
                }
                tokio::time::sleep(wait).await;
            }
        }
        if Instant::now() >= deadline {
            return Err(GatewayError::DeadlineExceeded { attempts: failures });
        }
        Err(exhausted(failures))
    }
}

fn record(target: &Target, failure: &AttemptFailure) -> AttemptRecord {
    AttemptRecord {
        target: target.label().to_owned(),
        class: failure.class,
        cause: failure.cause.clone(),
        retry_after: failure.retry_after,
    }
}

fn rejected_in_stream() -> Served {
    Served::Complete {
        status: StatusCode::BAD_REQUEST,
        content_type: Some(HeaderValue::from_static("application/json")),
        body: error_body(
            "the upstream rejected the request in its stream",
            "invalid_request_error",
            Some("upstream_rejected"),
        ),
    }
}

/// 504 when every failure was a timeout, 503 when every upstream said it was
/// overloaded or rate limited (with the shortest Retry-After seen), else 502.
fn exhausted(failures: Vec<AttemptRecord>) -> GatewayError {
    let all =
        |pred: &dyn Fn(&AttemptRecord) -> bool| !failures.is_empty() && failures.iter().all(pred);
    if all(&|f| matches!(f.cause, FailureCause::Timeout(_))) {
        return GatewayError::DeadlineExceeded { attempts: failures };
    }
    let unavailable = all(&|f| {
        f.class == FailureClass::RateLimited
            || f.cause == FailureCause::Status(StatusCode::SERVICE_UNAVAILABLE)
    });
    let status = if unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_GATEWAY
    };
    let retry_after = if unavailable {
        failures
            .iter()
            .filter_map(|f| f.retry_after)
            .min()
            .or(Some(Duration::from_secs(1)))
    } else {
        None
    };
    GatewayError::Exhausted {
        attempts: failures,
        status,
        retry_after,
    }
}
