//! Anthropic's Messages API (`POST /v1/messages`): translated to chat
//! completions on the way in, so it shares every route and the failover
//! engine, and back to Anthropic's answers, events and error shape on the
//! way out (`api::anthropic` holds the translation).

use super::openai::JsonRequest;
use super::{DecodeContext, InboundProtocol, InboundRequest, RelayStream};
use crate::api::{anthropic, Endpoint, InspectedBody};
use crate::config::Target;
use crate::error::GatewayError;
use crate::providers::{StreamTranslator, Unsupported};
use crate::routing::{RequestForms, TargetRequest};
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use std::convert::Infallible;

pub struct Messages;

/// The translated request; routing sees a chat completions body.
pub struct MessagesRequest(JsonRequest);

impl InboundProtocol for Messages {
    type Request = MessagesRequest;

    async fn decode(
        &self,
        _ctx: DecodeContext<'_>,
        body: Bytes,
    ) -> Result<MessagesRequest, GatewayError> {
        let chat = Bytes::from(anthropic::request_to_openai(&body)?);
        Ok(MessagesRequest(JsonRequest::new(
            Endpoint::ChatCompletions,
            InspectedBody::parse(chat)?,
            body,
        )?))
    }

    fn error(&self, error: &GatewayError) -> Response {
        let status = error.status().as_u16();
        error.response_with(Bytes::from(anthropic::gateway_error(
            status,
            &error.to_string(),
        )))
    }
}

impl RequestForms for MessagesRequest {
    fn stream(&self) -> bool {
        self.0.stream()
    }

    fn for_target(&self, target: &Target) -> Result<TargetRequest, Unsupported> {
        self.0.for_target(target)
    }

    fn stream_translator(&self, target: &Target) -> Option<Box<dyn StreamTranslator>> {
        self.0.stream_translator(target)
    }

    fn continuation_base(&self) -> Option<InspectedBody> {
        self.0.continuation_base()
    }
}

impl InboundRequest for MessagesRequest {
    fn model(&self) -> &str {
        self.0.model()
    }

    fn client_body(&self) -> &Bytes {
        self.0.client_body()
    }

    fn max_tokens(&self) -> Option<u32> {
        self.0.max_tokens()
    }

    fn cache_class(&self) -> crate::server::cache::CacheClass {
        crate::server::cache::CacheClass::Generation
    }

    fn encode_complete(
        &mut self,
        _served_by: &Target,
        status: StatusCode,
        body: Bytes,
    ) -> (StatusCode, Bytes) {
        if !status.is_success() {
            return (
                status,
                Bytes::from(anthropic::error_from_openai(status.as_u16(), &body)),
            );
        }
        match anthropic::response_from_openai(&body) {
            Ok(translated) => (status, Bytes::from(translated)),
            // The upstream's answer was not a chat completion.
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                Bytes::from(anthropic::gateway_error(502, &e.message)),
            ),
        }
    }

    fn encode_stream(self, _served_by: &Target, events: RelayStream) -> Body {
        let mut to_anthropic = anthropic::ToAnthropicStream::new(self.model());
        Body::from_stream(events.flat_map(move |event| {
            let mut out = Vec::new();
            let Ok(event) = event;
            to_anthropic.translate(&event, &mut out);
            futures_util::stream::iter(out.into_iter().map(Ok::<_, Infallible>))
        }))
    }
}
