//! OpenAI-compatible upstreams (OpenAI, Groq, Together, vLLM, Ollama …): the
//! client's body is forwarded with only `model` rewritten; auth is a bearer
//! token; errors come in OpenAI's shape, and are rebuilt from their fields
//! (never passed on verbatim: they may echo the key).

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

    fn error_to_openai(&self, status: StatusCode, body: Bytes) -> Bytes {
        rebuild_openai_error("openai", status, &body)
    }
}

/// An OpenAI-shaped upstream error rebuilt from its parsed `message`,
/// `type`, `param` and `code` (key-shaped text masked, the message cut at
/// `redact::MAX_MESSAGE_BYTES`); a body that is not one gets a message made
/// from the status alone. Nothing else of the upstream body is kept.
pub(crate) fn rebuild_openai_error(provider: &str, status: StatusCode, body: &[u8]) -> Bytes {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Fields,
    }
    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(default)]
        message: Option<String>,
        #[serde(rename = "type", default)]
        kind: Option<String>,
        #[serde(default)]
        param: Option<String>,
        #[serde(default)]
        code: Option<serde_json::Value>,
    }
    let fallback_kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let Ok(Envelope { error }) = serde_json::from_slice::<Envelope>(body) else {
        let reason = status.canonical_reason().unwrap_or("error");
        let message = format!(
            "{provider}: upstream error (HTTP {} {reason})",
            status.as_u16()
        );
        return crate::api::error_body(&message, fallback_kind, None);
    };
    let clean = |s: &str| -> String {
        let s = super::redact::truncate(s, super::redact::MAX_MESSAGE_BYTES);
        super::redact::key_shaped(s).into_owned()
    };
    let message = error
        .message
        .as_deref()
        .map(clean)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("{provider}: upstream error (HTTP {})", status.as_u16()));
    let kind = error.kind.as_deref().map(clean);
    let code = match error.code {
        Some(serde_json::Value::String(code)) => Some(clean(&code)),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let param = error.param.as_deref().map(clean);
    crate::api::error_body_with_param(
        &message,
        kind.as_deref().unwrap_or(fallback_kind),
        param.as_deref(),
        code.as_deref(),
    )
}

/// The `code` and `type` of an OpenAI-shaped error body: all the
/// classifiers below need of it.
#[derive(serde::Deserialize)]
struct ErrorCode<'a> {
    #[serde(borrow)]
    error: Option<CodeAndType<'a>>,
}

#[derive(serde::Deserialize)]
struct CodeAndType<'a> {
    #[serde(borrow, default)]
    code: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

fn error_code(body: &[u8]) -> Option<CodeAndType<'_>> {
    serde_json::from_slice::<ErrorCode>(body).ok()?.error
}

/// OpenAI (and Azure) say a prompt is too long with a 400 whose error code
/// is `context_length_exceeded`.
pub(crate) fn classify_openai_error(status: StatusCode, body: &[u8]) -> Option<FailureClass> {
    if status != StatusCode::BAD_REQUEST {
        return None;
    }
    (error_code(body)?.code? == "context_length_exceeded").then_some(FailureClass::ContextLength)
}

/// Whether an OpenAI-shaped error says the requested `service_tier` has
/// no capacity (a 429 whose `code` or `type` is `resource_unavailable`),
/// as opposed to the client being over a rate limit.
pub(crate) fn is_tier_refusal(status: StatusCode, body: &[u8]) -> bool {
    if status != StatusCode::TOO_MANY_REQUESTS {
        return false;
    }
    const SIGNAL: &str = "resource_unavailable";
    error_code(body)
        .is_some_and(|d| d.code.as_deref() == Some(SIGNAL) || d.kind.as_deref() == Some(SIGNAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_429_resource_unavailable_is_a_tier_refusal() {
        let tier = br#"{"error":{"message":"no flex capacity","type":"resource_unavailable","param":null,"code":"resource_unavailable"}}"#;
        let limit = br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert!(is_tier_refusal(StatusCode::TOO_MANY_REQUESTS, tier));
        assert!(!is_tier_refusal(StatusCode::TOO_MANY_REQUESTS, limit));
        assert!(!is_tier_refusal(StatusCode::SERVICE_UNAVAILABLE, tier));
        assert!(!is_tier_refusal(StatusCode::TOO_MANY_REQUESTS, b"<html>"));
    }

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
