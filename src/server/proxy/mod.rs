//! The request path as named phases, the same for every inbound protocol:
//!
//! ```text
//! authenticate → admit → read body → decode (protocol) → route → dispatch → encode (protocol) → finish
//! ```
//!
//! Admission comes before the body is read, so a key over its budget, rate
//! or concurrency costs the gateway no body buffer (up to
//! `max_request_body` each). The token estimate is charged then from the
//! declared `Content-Length` and completed once the body is decoded.
//!
//! A [`RequestCtx`] is created when the request arrives and finished exactly
//! once: right away for a gateway error (rendered in the protocol's error
//! shape), or when the response body is done (complete bodies and streams).
//! Phases return `GatewayError`s; they never build error responses.
//!
//! Between route and dispatch, on a route with a response cache, a
//! cacheable request is answered from the cache or its answer is kept
//! (`cache`); then a request with an `Idempotency-Key` is either answered
//! from the first request with that key (`replay`) or leads, and its
//! answer is kept for the repeats:
//!
//! ```text
//! … route → cache (hit: replay) → idempotency (repeat: replay) → dispatch → encode → keep → finish
//! ```

mod body;
mod cache;
mod ctx;
mod replay;
mod respond;

pub use body::read_body;
pub use ctx::{Ending, RequestCtx, X_REQUEST_ID};

use super::inbound::{DecodeContext, InboundProtocol, InboundRequest};
use super::AppState;
use crate::error::GatewayError;
use crate::routing::table::{LiveRoute, RouteTable};
use crate::routing::{Dispatch, Outcome, RequestForms, Served};
use axum::extract::Request;
use axum::response::Response;
use http::request::Parts;
use std::sync::Arc;

/// Lets a client say where it is, overriding the node's configured region.
const X_REGION: &str = "x-switchyard-region";
/// `false` forbids serving this request from a `tier = "degraded"` target.
const X_ALLOW_DEGRADED: &str = "x-switchyard-allow-degraded";

/// Serves one client request in `protocol`.
pub async fn serve<P: InboundProtocol>(
    state: Arc<AppState>,
    protocol: P,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let table = state.table.load_full();
    let mut ctx = RequestCtx::start(state.clone(), &parts.headers);
    let prepared = match prepare(&protocol, &mut ctx, &table, &parts, body).await {
        Ok(prepared) => prepared,
        Err(error) => return fail(&protocol, ctx, error),
    };
    let (live, request) = prepared;
    let limits = &table.config.cache;
    let cached = cache::lookup(&ctx, &live, limits, &parts.headers, &request).await;
    let label = cached.label();
    let response = match cached {
        cache::Cached::Hit(answer) => cache::hit(ctx, &answer),
        cache::Cached::Miss(fill) => {
            proceed(&protocol, ctx, &table, live, &parts, request, Some(fill)).await
        }
        cache::Cached::Off | cache::Cached::Bypass => {
            proceed(&protocol, ctx, &table, live, &parts, request, None).await
        }
    };
    cache::tagged(response, label)
}

/// Idempotency, dispatch, encode; the answer is kept for the cache
/// (`fill`) and the idempotency key's repeats.
async fn proceed<P: InboundProtocol>(
    protocol: &P,
    mut ctx: RequestCtx,
    table: &RouteTable,
    live: Arc<LiveRoute>,
    parts: &Parts,
    request: P::Request,
    fill: Option<cache::Fill>,
) -> Response {
    let settings = table.config.idempotency.as_ref();
    let body = request.client_body();
    let lead = match replay::begin(&ctx, settings, &live, parts, body).await {
        Ok(replay::Idempotent::Proceed(lead)) => lead,
        Ok(replay::Idempotent::Replay(answer)) => return replay::replay(ctx, &live, &answer),
        Err(error) => return fail(protocol, ctx, error),
    };
    let placement = placement(&ctx, table, &live, &parts.headers);
    match dispatch(&mut ctx, table, &live, &request, &placement).await {
        Ok(outcome) => {
            let resume = respond::ResumeInputs {
                placement,
                global_budget: table.global_budget.clone(),
                max_response_body: table.config.server.max_response_body,
                clean_end: fill.as_ref().map(|f| f.clean_end.clone()),
            };
            let streamed = !matches!(outcome.served, Served::Complete { .. });
            let mut response = respond::encode(ctx, request, outcome, resume);
            if let Some(fill) = fill {
                response = cache::fill(fill, streamed, response).await;
            }
            match lead {
                Some(lead) => replay::settle(lead, settings, streamed, response).await,
                None => response,
            }
        }
        // A gateway error releases the key (the lead is dropped): none is kept.
        Err(error) => fail(protocol, ctx, error),
    }
}

/// Authenticate, admit, read, decode, route.
async fn prepare<P: InboundProtocol>(
    protocol: &P,
    ctx: &mut RequestCtx,
    table: &RouteTable,
    parts: &Parts,
    body: axum::body::Body,
) -> Result<(Arc<LiveRoute>, P::Request), GatewayError> {
    let state = ctx.state.clone();
    authenticate(ctx, parts).await?;
    let content_type = parts.headers.get(http::header::CONTENT_TYPE);
    let declared = content_type.map(|v| v.to_str().unwrap_or("(not text)"));
    if !protocol.accepts(declared) {
        return Err(GatewayError::UnsupportedMediaType {
            content_type: declared.unwrap_or_default().chars().take(100).collect(),
        });
    }
    admit(ctx, declared_length(&parts.headers)).await?;
    let config = &table.config;
    let bytes = read_body(
        body,
        &parts.headers,
        config.server.max_request_body,
        config.server.body_read_timeout,
    )
    .await?;
    ctx.request_bytes = bytes.len();
    let decode = DecodeContext {
        state: &state,
        headers: &parts.headers,
        key: ctx.key.as_deref(),
    };
    let request = protocol.decode(decode, bytes).await?;
    ctx.stream = request.stream();
    let live = route(ctx, table, request.model())?;
    complete_admission(ctx, &live, &request);
    Ok((live, request))
}

/// The virtual key, checked before the body is read: strangers cost no memory.
async fn authenticate(ctx: &mut RequestCtx, parts: &Parts) -> Result<(), GatewayError> {
    let address = parts
        .extensions
        .get::<super::accept::ClientAddress>()
        .map(|a| a.0);
    ctx.key = caller_key(&ctx.state, &parts.headers, address).await?;
    Ok(())
}

/// The caller's virtual key; `None` only with `auth = "none"`. Fails
/// closed: with `auth = "keys"` and no key service running, every request
/// is refused (503 `auth_unavailable`), never served open. Failures count
/// against the client's `address` when it is known.
pub(in crate::server) async fn caller_key(
    state: &AppState,
    headers: &http::HeaderMap,
    address: Option<std::net::IpAddr>,
) -> Result<Option<Arc<crate::keys::KeyInfo>>, GatewayError> {
    let presented = || crate::keys::presented_secret(headers).unwrap_or_default();
    match (state.keys.get(), state.table.load().config.server.auth) {
        (Some(keys), _) => Ok(Some(keys.authenticate_from(presented(), address).await?)),
        (None, crate::config::AuthMode::None) => Ok(None),
        (None, crate::config::AuthMode::Keys) => Err(crate::keys::AuthError::Unavailable.into()),
    }
}

/// The body size the client announced, if it did (chunked bodies do not).
fn declared_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The route for the model the client named, and whether its key may use it.
fn route(
    ctx: &mut RequestCtx,
    table: &RouteTable,
    model: &str,
) -> Result<Arc<LiveRoute>, GatewayError> {
    let live = table
        .route(model)
        .ok_or_else(|| GatewayError::UnknownModel {
            model: model.to_owned(),
            known: table.config.route_names().join(", "),
        })?
        .clone();
    ctx.live = Some(live.clone());
    if let Some(key) = &ctx.key {
        if !key.allows_route(&live.route.name) {
            return Err(GatewayError::RouteNotAllowed {
                route: live.route.name.clone(),
            });
        }
    }
    Ok(live)
}

/// The key's budget and rate limits, before the body is read; the grant
/// stays in `ctx` until the response ends (streams included). Tokens are
/// estimated from the declared body size here and completed by
/// [`complete_admission`].
async fn admit(ctx: &mut RequestCtx, declared_body: Option<usize>) -> Result<(), GatewayError> {
    let state = ctx.state.clone();
    let (Some(key), Some(keys)) = (&ctx.key, state.keys.get()) else {
        return Ok(());
    };
    keys.check_budget(key)?;
    let Some(limiter) = state.limiter.get() else {
        return Ok(());
    };
    let limits = crate::limits::Limits {
        requests_per_minute: key.limits.requests_per_minute,
        tokens_per_minute: key.limits.tokens_per_minute,
        max_concurrent: key.limits.max_concurrent,
    };
    let estimate = match (limits.tokens_per_minute, declared_body) {
        (Some(_), Some(len)) => crate::limits::estimate_tokens(len, None),
        _ => 0,
    };
    ctx.admission = Some(limiter.admit(key.id, &limits, estimate).await?);
    Ok(())
}

/// Once the body is decoded: the token estimate grows to the whole body
/// and the completion the request asked for at most, and content logging
/// keeps the body when the route says so.
fn complete_admission(ctx: &mut RequestCtx, live: &LiveRoute, request: &impl InboundRequest) {
    if let Some(admission) = &ctx.admission {
        let body = request.client_body().len();
        admission.raise_estimate(crate::limits::estimate_tokens(body, request.max_tokens()));
    }
    if live.route.log_content && ctx.state.request_log.get().is_some() {
        let text = String::from_utf8_lossy(request.client_body()).into_owned();
        ctx.content = Some((text, None));
    }
}

/// Where the caller is and whether degraded targets may serve it: the
/// dispatch and any continuation of its stream plan with the same.
pub struct Placement {
    pub caller_region: Option<String>,
    pub allow_degraded: bool,
    /// The route's SLO sends this request to its degraded targets first.
    pub degraded_first: bool,
}

fn placement(
    ctx: &RequestCtx,
    table: &RouteTable,
    live: &LiveRoute,
    headers: &http::HeaderMap,
) -> Placement {
    let caller_region = headers
        .get(X_REGION)
        .and_then(|v| v.to_str().ok())
        .filter(|r| !r.is_empty() && r.len() <= 64)
        .or(table.config.server.region.as_deref())
        .map(str::to_owned);
    let allow_degraded = ctx.key.as_ref().is_none_or(|k| k.allow_degraded)
        && headers
            .get(X_ALLOW_DEGRADED)
            .is_none_or(|v| !v.as_bytes().eq_ignore_ascii_case(b"false"));
    Placement {
        caller_region,
        allow_degraded,
        degraded_first: live.slo_degraded_first(allow_degraded),
    }
}

/// The failover engine, over the route's targets.
async fn dispatch<'r>(
    ctx: &mut RequestCtx,
    table: &RouteTable,
    live: &'r LiveRoute,
    request: &impl InboundRequest,
    placement: &Placement,
) -> Result<Outcome<'r>, GatewayError> {
    let config = &table.config;
    ctx.slo_degraded_first = placement.degraded_first;
    let result = Dispatch {
        live,
        global_budget: &table.global_budget,
        caller_region: placement.caller_region.as_deref(),
        request,
        request_id: &ctx.request_id,
        max_response_body: config.server.max_response_body,
        counters: &ctx.state.counters.engine,
        allow_degraded: placement.allow_degraded,
        degraded_first: placement.degraded_first,
        trace: ctx.trace.as_deref(),
    }
    .run(ctx.started)
    .await;
    if let Err(
        GatewayError::Exhausted { attempts, .. }
        | GatewayError::DeadlineExceeded { attempts }
        | GatewayError::LocalOverload { attempts },
    ) = &result
    {
        ctx.attempts = attempts.len() as u32;
        ctx.note_failures(attempts);
    }
    result
}

/// Finishes the request as a gateway error, rendered by the protocol.
fn fail<P: InboundProtocol>(protocol: &P, ctx: RequestCtx, error: GatewayError) -> Response {
    let mut response = protocol.error(&error);
    response
        .headers_mut()
        .insert(X_REQUEST_ID, ctx.request_id.clone());
    ctx.finish(Ending {
        status: error.status().as_u16(),
        outcome: error.code(),
        usage: None,
        estimated: false,
    });
    response
}
