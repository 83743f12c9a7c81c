//! Gemini's generateContent API: translation between OpenAI chat completions and
//! Gemini messages (requests, responses, streams, errors).
// Placeholder signatures until the translation lands (being merged).

use super::{StreamTranslator, Unsupported};
use crate::resilience::FailureClass;
use bytes::Bytes;

pub const PROVIDER: &str = "gemini";

#[derive(Debug, thiserror::Error)]
#[error("unreadable gemini response")]
pub struct TranslateError;

pub fn path(model: &str, stream: bool) -> String {
    format!(
        "/v1beta/models/{model}:{}",
        if stream {
            "streamGenerateContent?alt=sse"
        } else {
            "generateContent"
        }
    )
}
pub fn translate_request(_openai: &[u8]) -> Result<Vec<u8>, Unsupported> {
    Err(Unsupported {
        provider: PROVIDER,
        field: String::new(),
        reason: "pending".into(),
    })
}
pub fn translate_response(
    _gemini: &[u8],
    _model: &str,
    _created: u64,
) -> Result<Vec<u8>, TranslateError> {
    Err(TranslateError)
}
pub struct GeminiStream;
impl GeminiStream {
    pub fn new(_model: &str, _include_usage: bool, _created: u64) -> Self {
        GeminiStream
    }
}
impl StreamTranslator for GeminiStream {
    fn translate(&mut self, _event: &[u8], _out: &mut Vec<Bytes>) {}
}
pub fn classify_error(_status: u16, _body: &[u8]) -> Option<FailureClass> {
    None
}
pub fn error_to_openai(_status: u16, body: &[u8]) -> Vec<u8> {
    body.to_vec()
}

// ---- Provider glue ----

pub struct Gemini;

impl super::Provider for Gemini {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn urls(&self, base: &str, model: &str, _api_version: Option<&str>) -> Option<super::Urls> {
        let safe = !model.is_empty()
            && model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !safe {
            return None;
        }
        Some(super::Urls {
            chat: format!("{base}{}", path(model, false)).parse().ok()?,
            stream: format!("{base}{}", path(model, true)).parse().ok()?,
            embeddings: None,
        })
    }

    fn translate_request(
        &self,
        _target: &crate::config::Target,
        endpoint: crate::api::Endpoint,
        body: &crate::api::InspectedBody,
    ) -> Result<Bytes, Unsupported> {
        super::chat_only(PROVIDER, endpoint)?;
        translate_request(body.bytes()).map(Bytes::from)
    }

    fn translate_response(&self, target: &crate::config::Target, body: Bytes) -> Option<Bytes> {
        translate_response(&body, &target.model, super::unix_now())
            .ok()
            .map(Bytes::from)
    }

    fn stream_translator(
        &self,
        target: &crate::config::Target,
        body: &crate::api::InspectedBody,
    ) -> Option<Box<dyn StreamTranslator>> {
        Some(Box::new(GeminiStream::new(
            &target.model,
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
