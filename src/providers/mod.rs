//! Upstream providers: the pooled HTTP client every provider shares, and the
//! per-kind knowledge of how to address a provider (URL, auth header, body)
//! and how to translate its wire format to and from OpenAI's.
//! Providers build requests and translate bytes; they never decide about
//! retries or failover.

pub mod anthropic;
pub mod client;
pub mod gemini;
pub mod openai;

pub use client::HttpClient;

use crate::api::{Endpoint, InspectedBody};
use crate::config::{ProviderKind, Target};
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;

/// A request field a provider cannot express. The client gets a 400 naming
/// the field and the provider, unless another target of the route can serve
/// the request: nothing is ever silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider} cannot serve this request: `{field}` {reason}")]
pub struct Unsupported {
    pub provider: &'static str,
    /// JSON path of the offending field, e.g. `messages[2].content[0].type`.
    pub field: String,
    pub reason: String,
}

/// Turns one upstream's stream into OpenAI `chat.completion.chunk` events.
pub trait StreamTranslator: Send {
    /// Takes one complete upstream SSE event (as framed by
    /// `streaming::sse::SseFramer`: its lines and the blank line ending it)
    /// and appends zero or more complete OpenAI SSE events to `out`:
    /// `data: {chunk}\n\n`, then `data: [DONE]\n\n` once the upstream said
    /// the answer is complete, or `data: {"error":{…}}\n\n` (OpenAI error
    /// object) for an error the upstream reported in its stream.
    fn translate(&mut self, event: &[u8], out: &mut Vec<Bytes>);
}

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
