//! The client's request as each target should receive it. The inbound
//! protocol prepares the forms (an OpenAI-format body for most endpoints;
//! a native and a chat-translated body for the Responses API; a multipart
//! upload); the dispatcher asks for the form of each target it tries and
//! never looks inside.

use crate::api::{Endpoint, InspectedBody};
use crate::config::Target;
use crate::providers::{self, StreamTranslator, Unsupported};
use bytes::Bytes;
use http::HeaderValue;

/// One upstream request body, ready for a target.
#[derive(Debug, Clone)]
pub struct TargetRequest {
    /// Which of the target's endpoints receives it.
    pub endpoint: Endpoint,
    pub body: Bytes,
    pub content_type: HeaderValue,
    /// A first-byte limit shorter than the route's, set when the body is
    /// at the target's `service_tier` and it has a `tier_first_byte`
    /// (`routing::tier::with_tier`); running out of it is a tier refusal.
    pub tier_first_byte: Option<std::time::Duration>,
}

/// Everything the dispatcher needs to know about the client's request.
pub trait RequestForms: Sync {
    /// Whether the client asked for a streamed answer.
    fn stream(&self) -> bool;

    /// The request in `target`'s format, or why that target cannot take it
    /// (the dispatcher then skips it without charging an attempt).
    fn for_target(&self, target: &Target) -> Result<TargetRequest, Unsupported>;

    /// The translator turning `target`'s stream into OpenAI chunks; `None`
    /// when the target already streams in the form the client gets.
    fn stream_translator(&self, target: &Target) -> Option<Box<dyn StreamTranslator>>;

    /// The chat completions body a stream cut mid-answer can be continued
    /// from (`routing::resume`); `None` for requests that cannot be.
    fn continuation_base(&self) -> Option<InspectedBody> {
        None
    }
}

/// An OpenAI-format JSON request for one endpoint, translated for each
/// target by its provider's adapter: chat completions, embeddings, legacy
/// completions, moderations, images and speech.
pub struct OpenAiForm {
    pub endpoint: Endpoint,
    pub body: InspectedBody,
}

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

impl RequestForms for OpenAiForm {
    fn stream(&self) -> bool {
        self.body.stream()
    }

    fn for_target(&self, target: &Target) -> Result<TargetRequest, Unsupported> {
        let body = providers::adapter(target.provider.kind).translate_request(
            target,
            self.endpoint,
            &self.body,
        )?;
        Ok(TargetRequest {
            endpoint: self.endpoint,
            body,
            content_type: JSON,
            tier_first_byte: None,
        })
    }

    fn stream_translator(&self, target: &Target) -> Option<Box<dyn StreamTranslator>> {
        providers::adapter(target.provider.kind).stream_translator(target, &self.body)
    }
}
