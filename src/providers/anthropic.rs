//! Anthropic's Messages API: translation between OpenAI chat completions and
//! Anthropic messages (requests, responses, streams, errors).
// Placeholder signatures until the translation lands (being merged).

use super::{StreamTranslator, Unsupported};
use crate::resilience::FailureClass;
use bytes::Bytes;

pub const PROVIDER: &str = "anthropic";

#[derive(Debug, thiserror::Error)]
#[error("unreadable anthropic response")]
pub struct TranslateError;

pub fn translate_request(
    _openai: &[u8],
    _model: &str,
    _default_max_tokens: u32,
) -> Result<Vec<u8>, Unsupported> {
    Err(Unsupported {
        provider: PROVIDER,
        field: String::new(),
        reason: "pending".into(),
    })
}
pub fn translate_response(_anthropic: &[u8], _created: u64) -> Result<Vec<u8>, TranslateError> {
    Err(TranslateError)
}
pub struct AnthropicStream;
impl AnthropicStream {
    pub fn new(_include_usage: bool, _created: u64) -> Self {
        AnthropicStream
    }
}
impl StreamTranslator for AnthropicStream {
    fn translate(&mut self, _event: &[u8], _out: &mut Vec<Bytes>) {}
}
pub fn classify_error(_status: u16, _body: &[u8]) -> Option<FailureClass> {
    None
}
pub fn error_to_openai(_status: u16, body: &[u8]) -> Vec<u8> {
    body.to_vec()
}

// ---- Provider glue ----

pub struct Anthropic;

impl super::Provider for Anthropic {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn urls(&self, base: &str, _model: &str, _api_version: Option<&str>) -> Option<super::Urls> {
        let chat: http::Uri = format!("{base}/v1/messages").parse().ok()?;
        Some(super::Urls {
            stream: chat.clone(),
            chat,
            embeddings: None,
        })
    }

    fn translate_request(
        &self,
        target: &crate::config::Target,
        endpoint: crate::api::Endpoint,
        body: &crate::api::InspectedBody,
    ) -> Result<Bytes, Unsupported> {
        super::chat_only(PROVIDER, endpoint)?;
        translate_request(
            body.bytes(),
            &target.model,
            target.provider.default_max_tokens,
        )
        .map(Bytes::from)
    }

    fn extra_headers(&self, target: &crate::config::Target, headers: &mut http::HeaderMap) {
        if let Some(version) = &target.provider.api_version {
            headers.insert("anthropic-version", version.clone());
        }
    }

    fn translate_response(&self, _target: &crate::config::Target, body: Bytes) -> Option<Bytes> {
        translate_response(&body, super::unix_now())
            .ok()
            .map(Bytes::from)
    }

    fn stream_translator(
        &self,
        _target: &crate::config::Target,
        body: &crate::api::InspectedBody,
    ) -> Option<Box<dyn StreamTranslator>> {
        Some(Box::new(AnthropicStream::new(
            super::wants_stream_usage(body),
            super::unix_now(),
        )))
    }

    fn classify_error(&self, status: http::StatusCode, body: &[u8]) -> Option<FailureClass> {
        classify_error(status.as_u16(), body)
    }

    fn error_to_openai(&self, status: http::StatusCode, body: Bytes) -> Bytes {
        Bytes::from(error_to_openai(status.as_u16(), &body))
    }
}
