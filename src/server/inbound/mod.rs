//! Inbound protocols: one module per API a client speaks (OpenAI chat
//! completions, Anthropic messages, the Responses API, the OpenAI JSON
//! pass-through endpoints, multipart audio uploads). Each decodes the
//! client's body into the forms upstreams take, encodes what an upstream
//! answered back into its own wire format, and renders gateway errors in its
//! own error shape. Protocols know nothing of routing, limits or
//! accounting: the request phases in `server::proxy` do those, the same way
//! for every protocol.

mod messages;
mod multipart;
mod openai;
mod responses;

pub use messages::Messages;
pub use multipart::Multipart;
pub use openai::OpenAiJson;
pub use responses::{Responses, ResponsesStored};

use super::AppState;
use crate::config::Target;
use crate::error::GatewayError;
use crate::keys::KeyInfo;
use crate::routing::RequestForms;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::{HeaderMap, StatusCode};
use std::convert::Infallible;
use std::future::Future;

/// The relayed upstream stream (OpenAI chunks, or a native upstream's own
/// events), as the relay hands it on.
pub type RelayStream = BoxStream<'static, Result<Bytes, Infallible>>;

/// What the request phases need to know about the caller while decoding.
pub struct DecodeContext<'a> {
    pub state: &'a AppState,
    pub headers: &'a HeaderMap,
    /// `None` with `auth = "none"`.
    pub key: Option<&'a KeyInfo>,
}

/// One API a client speaks.
pub trait InboundProtocol: Send + Sync + 'static {
    type Request: InboundRequest;

    /// Whether a body declared as `content_type` is this protocol's (else
    /// 415). JSON protocols take `application/json`, `…+json`, or nothing.
    fn accepts(&self, content_type: Option<&str>) -> bool {
        content_type.is_none_or(|ct| {
            let essence = ct.split(';').next().unwrap_or_default().trim();
            essence.eq_ignore_ascii_case("application/json")
                || essence.to_ascii_lowercase().ends_with("+json")
        })
    }

    /// The client's body in the forms upstreams take.
    fn decode(
        &self,
        ctx: DecodeContext<'_>,
        body: Bytes,
    ) -> impl Future<Output = Result<Self::Request, GatewayError>> + Send;

    /// A gateway error in this protocol's error shape.
    fn error(&self, error: &GatewayError) -> Response {
        error.openai_response()
    }
}

/// One decoded client request: the forms the dispatcher sends, and how the
/// answer goes back to the client.
pub trait InboundRequest: RequestForms + Send + 'static {
    /// The public model name the client asked for (a route).
    fn model(&self) -> &str;

    /// The client's body as sent, for the token estimate and content logging.
    fn client_body(&self) -> &Bytes;

    /// The completion budget the client asked for, if any.
    fn max_tokens(&self) -> Option<u32> {
        None
    }

    /// Whether answers to this request may be cached (`server::cache`).
    fn cache_class(&self) -> crate::server::cache::CacheClass {
        crate::server::cache::CacheClass::Never
    }

    /// Swallow usage-only chunks in the relayed stream (the gateway asked
    /// the upstream for usage; the client did not).
    fn strip_stream_usage(&self) -> bool {
        false
    }

    /// A whole upstream answer (an OpenAI-format body, or a native
    /// upstream's own) in the client's format. `status` is a success or a
    /// client error passed through.
    /// Unchanged by default: the client speaks the upstream's format.
    fn encode_complete(
        &mut self,
        _served_by: &Target,
        status: StatusCode,
        body: Bytes,
    ) -> (StatusCode, Bytes) {
        (status, body)
    }

    /// The relayed stream in the client's format; as relayed by default.
    fn encode_stream(self, _served_by: &Target, events: RelayStream) -> Body
    where
        Self: Sized,
    {
        Body::from_stream(events)
    }
}

/// The completion budget a chat-shaped body asks for.
pub(crate) fn requested_max_tokens(body: &[u8]) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Peek {
        max_tokens: Option<u32>,
        max_completion_tokens: Option<u32>,
        max_output_tokens: Option<u32>,
    }
    serde_json::from_slice::<Peek>(body).ok().and_then(|p| {
        p.max_completion_tokens
            .or(p.max_tokens)
            .or(p.max_output_tokens)
    })
}
