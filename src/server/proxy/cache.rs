//! The cache phase, between route and the idempotency phase, for routes
//! with `[routes.NAME.cache]`: a cacheable request (`server::cache`'s rule)
//! is answered from the cache (`hit`, finished as `cache_hit` at no
//! upstream cost) or goes on and its answer is kept (`miss`); any other is
//! a `bypass`. Every response of a cached route says which in
//! `x-switchyard-cache`.
//!
//! What is kept is what the client received, in its inbound protocol: a
//! complete 2xx body, or a stream's SSE bytes when it ended complete from
//! its first target (a cut, continued or abandoned stream is not kept). A
//! stream hit replays those events. Errors are never kept.

use super::ctx::RequestCtx;
use super::replay::{from_store, keep_complete};
use crate::config::CacheSettings;
use crate::routing::table::LiveRoute;
use crate::server::cache::{
    cacheable, key, CacheClass, CacheKey, Directive, ResponseCache, X_CACHE,
};
use crate::server::inbound::InboundRequest;
use crate::server::stored::StoredAnswer;
use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// What the phase decided.
pub enum Cached {
    /// The route has no cache: no header, nothing kept.
    Off,
    Bypass,
    Hit(Arc<StoredAnswer>),
    /// Not found, or not looked up (`Cache-Control: no-cache`): the answer
    /// is kept.
    Miss(Fill),
}

impl Cached {
    /// The `x-switchyard-cache` value, `None` for an uncached route.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Cached::Off => None,
            Cached::Bypass => Some("bypass"),
            Cached::Hit(_) => Some("hit"),
            Cached::Miss(_) => Some("miss"),
        }
    }
}

/// Where a missed request's answer goes.
pub struct Fill {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    ttl: Duration,
    limits: CacheSettings,
    /// Set by the stream's end when it may be kept.
    pub clean_end: Arc<AtomicBool>,
}

pub async fn lookup(
    ctx: &RequestCtx,
    live: &LiveRoute,
    limits: &CacheSettings,
    headers: &HeaderMap,
    request: &impl InboundRequest,
) -> Cached {
    let Some(policy) = live.route.cache else {
        return Cached::Off;
    };
    let directive = Directive::of(headers);
    let class = request.cache_class();
    // The body is parsed only when it may be cached.
    let body = (directive != Directive::NoStore && class != CacheClass::Never)
        .then(|| serde_json::from_slice::<serde_json::Value>(request.client_body()).ok())
        .flatten()
        .filter(|body| cacheable(class, body, policy.nondeterministic));
    let cached = match body {
        None => Cached::Bypass,
        Some(body) => {
            let scope = ctx.key.as_ref().map(|k| k.service.as_str());
            let fill = Fill {
                cache: ctx.state.cache.clone(),
                key: key(&live.route.name, scope, &body),
                ttl: policy.ttl,
                limits: *limits,
                clean_end: Arc::default(),
            };
            let found = match directive {
                Directive::Normal => fill.cache.get(&fill.key, fill.ttl, limits).await,
                _ => None,
            };
            match found {
                Some(answer) => Cached::Hit(answer),
                None => Cached::Miss(fill),
            }
        }
    };
    if let Some(label) = cached.label() {
        live.metrics.cache.inc(label);
    }
    cached
}

/// The cached answer as this request's response: no upstream call, no
/// usage; the request still counted against the key's rate (it was
/// admitted) but not its tokens or budget.
pub fn hit(ctx: RequestCtx, answer: &StoredAnswer) -> Response {
    from_store(ctx, answer, "cache_hit")
}

/// `response` with its `x-switchyard-cache` header, if the route caches.
pub fn tagged(mut response: Response, label: Option<&'static str>) -> Response {
    if let Some(label) = label {
        response
            .headers_mut()
            .insert(X_CACHE, HeaderValue::from_static(label));
    }
    response
}

/// Keeps a missed request's 2xx answer: a complete body now (written to
/// Redis before the response goes out, bounded by its timeout), a stream
/// when its last byte went out clean.
pub async fn fill(fill: Fill, streamed: bool, response: Response) -> Response {
    if !response.status().is_success() {
        return response;
    }
    if streamed {
        return keep_stream(fill, response);
    }
    let (response, answer) = keep_complete(response, fill.limits.max_entry_bytes).await;
    if let Some(answer) = answer {
        fill.cache
            .insert(fill.key, answer, fill.ttl, &fill.limits)
            .await;
    }
    response
}

fn keep_stream(fill: Fill, response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let tee = Tee {
        inner: body.into_data_stream().boxed(),
        kept: Some(BytesMut::new()),
        status: parts.status,
        headers: parts.headers.clone(),
        fill: Some(fill),
    };
    Response::from_parts(parts, Body::from_stream(tee))
}

type DataStream = Pin<Box<dyn Stream<Item = Result<Bytes, axum::Error>> + Send>>;

/// A stream's body as it goes out, copied (up to `max_entry_bytes`) and
/// kept at its end if the stream ended clean.
struct Tee {
    inner: DataStream,
    /// `None` once over the bound or after an error.
    kept: Option<BytesMut>,
    status: StatusCode,
    headers: HeaderMap,
    fill: Option<Fill>,
}

impl Tee {
    fn finish(&mut self) {
        let (Some(fill), Some(kept)) = (self.fill.take(), self.kept.take()) else {
            return;
        };
        if !fill.clean_end.load(Ordering::Acquire) {
            return;
        }
        let answer = StoredAnswer::new(self.status, &self.headers, kept.freeze());
        fill.cache
            .insert_detached(fill.key, answer, fill.ttl, &fill.limits);
    }
}

impl Stream for Tee {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                let max = self.fill.as_ref().map_or(0, |f| f.limits.max_entry_bytes);
                let over = self
                    .kept
                    .as_ref()
                    .is_some_and(|k| k.len() + chunk.len() > max);
                match self.kept.as_mut() {
                    Some(_) if over => self.kept = None,
                    Some(kept) => kept.extend_from_slice(chunk),
                    None => {}
                }
            }
            Poll::Ready(Some(Err(_))) => self.kept = None,
            Poll::Ready(None) => self.finish(),
            Poll::Pending => {}
        }
        polled
    }
}
