//! The idempotency phase, between route and dispatch: a request with an
//! `Idempotency-Key` either leads (goes upstream, then its answer is
//! settled into `server::idempotency`'s store) or is answered from the
//! first request with that key, waiting for it while it is in flight
//! (bounded by the route's total deadline). A replay finishes its context
//! with outcome `idempotent_replay` and no usage: billed and counted once.
//!
//! With the fleet's Redis, a key new on this replica is claimed for the
//! fleet (`server::shared_idempotency`) before it leads, and a repeat of a
//! key another replica is answering polls for that answer.
//!
//! Also owns the replay of any stored answer ([`from_store`], the cache's
//! hits too) and the keeping of a complete one ([`keep_complete`]).

use super::ctx::{Ending, RequestCtx, X_REQUEST_ID};
use crate::config::IdempotencySettings;
use crate::error::GatewayError;
use crate::routing::table::LiveRoute;
use crate::server::idempotency::{
    client_key, fingerprint, Begin, Fingerprint, IdempotencyError, Lead, Scope, StoredAnswer,
    Verdict, X_REPLAY,
};
use crate::server::shared_idempotency::{Claim, SharedIdempotency};
use axum::body::Body;
use axum::response::Response;
use http::HeaderValue;
use http_body_util::BodyExt;
use std::sync::Arc;
use tokio::time::Instant;

/// How often a repeat asks again after the first request released its key
/// (then it leads itself, unless another repeat got there first).
const MAX_ROUNDS: usize = 4;

/// What the phase decided.
pub enum Idempotent {
    /// Go upstream; settle the lead, if any, with the answer.
    Proceed(Option<Lead>),
    Replay(Arc<StoredAnswer>),
}

pub async fn begin(
    ctx: &RequestCtx,
    settings: Option<&IdempotencySettings>,
    live: &LiveRoute,
    parts: &http::request::Parts,
    body: &[u8],
) -> Result<Idempotent, GatewayError> {
    let Some(settings) = settings else {
        return Ok(Idempotent::Proceed(None));
    };
    let Some(key) = client_key(&parts.headers)? else {
        return Ok(Idempotent::Proceed(None));
    };
    let scope = Scope {
        owner: ctx.key.as_ref().map(|k| k.id),
        path: parts.uri.path().to_owned(),
        key: key.to_owned(),
    };
    let print = fingerprint(body);
    let deadline = ctx.started + live.route.timeouts.total;
    let store = &ctx.state.idempotency;
    for _ in 0..MAX_ROUNDS {
        let verdict = match store.begin(scope.clone(), print, settings, Instant::now())? {
            Begin::Lead(lead) => match store.shared() {
                None => return Ok(Idempotent::Proceed(Some(lead))),
                Some(shared) => {
                    let total = live.route.timeouts.total;
                    match lead_for_fleet(shared, lead, print, settings, total, deadline).await? {
                        Fleet::Lead(lead) => return Ok(Idempotent::Proceed(Some(lead))),
                        Fleet::Verdict(verdict) => verdict,
                    }
                }
            },
            Begin::Done(verdict) => verdict,
            Begin::Wait(mut rx) => {
                let waited = tokio::time::timeout_at(deadline, rx.wait_for(Option::is_some)).await;
                match waited {
                    Err(_) => return Err(IdempotencyError::InProgress.into()),
                    Ok(Err(_)) => continue,
                    Ok(Ok(verdict)) => match verdict.clone() {
                        Some(verdict) => verdict,
                        None => continue,
                    },
                }
            }
        };
        return match verdict {
            Verdict::Answer(answer) => Ok(Idempotent::Replay(answer)),
            Verdict::Refused(e) => Err(e.into()),
        };
    }
    Err(IdempotencyError::InProgress.into())
}

/// How often a repeat asks the fleet whether the request another replica
/// is answering has ended.
const FLEET_POLL: std::time::Duration = std::time::Duration::from_millis(50);

enum Fleet {
    /// This request answers the key for the whole fleet (or for this
    /// replica alone, Redis not answering).
    Lead(Lead),
    Verdict(Verdict),
}

/// The key is new on this replica: claims it for the fleet, or waits (until
/// `deadline`) for the replica that has it. A verdict from elsewhere also
/// settles the local lead, so this replica's own repeats need no Redis.
async fn lead_for_fleet(
    shared: &Arc<SharedIdempotency>,
    mut lead: Lead,
    print: Fingerprint,
    settings: &IdempotencySettings,
    total: std::time::Duration,
    deadline: Instant,
) -> Result<Fleet, GatewayError> {
    loop {
        match shared.claim(lead.scope(), &print, total).await {
            Claim::Ours(claim) => {
                lead.claimed_for_fleet(claim);
                return Ok(Fleet::Lead(lead));
            }
            Claim::Unavailable => return Ok(Fleet::Lead(lead)),
            Claim::Reused => return Err(IdempotencyError::Reused.into()),
            Claim::Done(verdict) => {
                lead.settle(verdict.clone(), settings, Instant::now());
                return Ok(Fleet::Verdict(verdict));
            }
            Claim::InFlight if Instant::now() + FLEET_POLL >= deadline => {
                return Err(IdempotencyError::InProgress.into());
            }
            Claim::InFlight => tokio::time::sleep(FLEET_POLL).await,
        }
    }
}

/// The stored answer as this request's response, marked as a replay.
pub fn replay(ctx: RequestCtx, live: &LiveRoute, answer: &StoredAnswer) -> Response {
    live.metrics.idempotent_replays.inc();
    let mut response = from_store(ctx, answer, "idempotent_replay");
    response
        .headers_mut()
        .insert(X_REPLAY, HeaderValue::from_static("true"));
    response
}

/// A stored answer (an idempotent replay, a cache hit) as this request's
/// response; the context is finished with `outcome` and no usage (no
/// target served it, nothing billed, no tokens counted).
pub fn from_store(ctx: RequestCtx, answer: &StoredAnswer, outcome: &'static str) -> Response {
    let mut response = Response::new(Body::from(answer.body.clone()));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.extend(answer.headers.clone());
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    ctx.finish(Ending {
        status: answer.status.as_u16(),
        outcome,
        usage: Some(crate::api::Usage::default()),
        estimated: false,
    });
    response
}

/// Settles the lead with the served response: a stream is refused to its
/// repeats, a retryable failure (5xx, 429) releases the key, anything else
/// is kept.
pub async fn settle(
    lead: Lead,
    settings: Option<&IdempotencySettings>,
    streamed: bool,
    response: Response,
) -> Response {
    let Some(settings) = settings else {
        return response;
    };
    let status = response.status();
    if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
        return response;
    }
    let now = Instant::now();
    if streamed {
        lead.settle(Verdict::Refused(IdempotencyError::Stream), settings, now);
        return response;
    }
    let (response, answer) = keep_complete(response, settings.max_body).await;
    let verdict = match answer {
        Some(answer) => Verdict::Answer(Arc::new(answer)),
        None => Verdict::Refused(IdempotencyError::NotStored),
    };
    lead.settle(verdict, settings, now);
    response
}

/// A complete response of at most `max_body` bytes as a [`StoredAnswer`],
/// and the response to send (the same bytes). A complete body is already
/// one in-memory frame, so reading it here costs no wait; a larger or
/// streamed body is left alone (`None`).
pub async fn keep_complete(
    response: Response,
    max_body: usize,
) -> (Response, Option<StoredAnswer>) {
    let exact = http_body::Body::size_hint(response.body()).exact();
    if exact.is_none_or(|n| n > max_body as u64) {
        return (response, None);
    }
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        // An in-memory frame cannot fail to be read; if it did, nothing is kept.
        return (Response::from_parts(parts, Body::empty()), None);
    };
    let bytes = collected.to_bytes();
    let answer = StoredAnswer::new(parts.status, &parts.headers, bytes.clone());
    (Response::from_parts(parts, Body::from(bytes)), Some(answer))
}
