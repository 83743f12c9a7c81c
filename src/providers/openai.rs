//! OpenAI-compatible upstreams (OpenAI, Groq, Together, vLLM, Ollama …): the
//! client's body is forwarded with only `model` rewritten; auth is a bearer
//! token; errors are already in OpenAI's shape.

use super::{Provider, Urls};
use crate::api::{Endpoint, InspectedBody};
use crate::config::Target;
use crate::resilience::FailureClass;
use bytes::Bytes;
use http::StatusCode;

pub struct OpenAi;

impl Provider for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn speaks_openai(&self) -> bool {
        true
    }

    fn urls(&self, base: &str, _model: &str, _api_version: Option<&str>) -> Option<Urls> {
        let chat: http::Uri = format!("{base}/chat/completions").parse().ok()?;
        Some(Urls {
            stream: chat.clone(),
            chat,
            embeddings: Some(format!("{base}/embeddings").parse().ok()?),
        })
    }

    fn openai_urls(
        &self,
        base: &str,
        _model: &str,
        _api_version: Option<&str>,
    ) -> crate::api::EndpointUrls {
        super::openai_style_urls(|endpoint| format!("{base}/{}", endpoint.path()))
    }

    fn translate_request(
        &self,
        target: &Target,
        _endpoint: Endpoint,
        body: &InspectedBody,
    ) -> Result<Bytes, super::Unsupported> {
        Ok(body.with_model(&target.model_json))
    }

    fn translate_response(&self, _target: &Target, body: Bytes) -> Option<Bytes> {
        Some(body)
    }

    fn classify_error(&self, status: StatusCode, body: &[u8]) -> Option<FailureClass> {
        classify_openai_error(status, body)
    }

    fn error_to_openai(&self, _status: StatusCode, body: Bytes) -> Bytes {
        body
    }
}

/// OpenAI (and Azure) say a prompt is too long with a 400 whose error code
/// is `context_length_exceeded`.
pub(crate) fn classify_openai_error(status: StatusCode, body: &[u8]) -> Option<FailureClass> {
    if status != StatusCode::BAD_REQUEST {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        error: Option<Detail<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Detail<'a> {
        #[serde(borrow)]
        code: Option<std::borrow::Cow<'a, str>>,
    }
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    (envelope.error?.code? == "context_length_exceeded").then_some(FailureClass::ContextLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_length_is_its_own_class() {
        let body = br#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert_eq!(
            classify_openai_error(StatusCode::BAD_REQUEST, body),
            Some(FailureClass::ContextLength)
        );
        let other =
            br#"{"error":{"message":"bad","type":"invalid_request_error","code":"invalid_value"}}"#;
        assert_eq!(classify_openai_error(StatusCode::BAD_REQUEST, other), None);
        assert_eq!(
            classify_openai_error(StatusCode::BAD_REQUEST, b"not json"),
            None
        );
        assert_eq!(
            classify_openai_error(StatusCode::TOO_MANY_REQUESTS, body),
            None
        );
    }
}
