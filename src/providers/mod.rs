//! Upstream providers: the pooled HTTP client every provider shares, and the
//! per-kind knowledge of how to address a provider (URL, auth header, body).
//! Providers build requests; they never decide about retries or failover.

pub mod client;
pub mod openai;

pub use client::HttpClient;

use crate::api::{Endpoint, InspectedBody};
use crate::config::{ProviderKind, Target};
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;

/// Builds the upstream request for one attempt at `target`.
pub fn build_request(
    target: &Target,
    endpoint: Endpoint,
    body: &InspectedBody,
    request_id: &HeaderValue,
) -> Request<Full<Bytes>> {
    match target.provider.kind {
        ProviderKind::OpenAi => openai::build_request(target, endpoint, body, request_id),
    }
}
