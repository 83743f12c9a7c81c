//! The one cross-provider error taxonomy: how each provider reports an
//! overload, a rate limit, a bad key, a too-long prompt or a bad request,
//! and the failure class (`resilience::FailureClass`) the gateway gives it.
//! The README's table is this table; a test feeds every example through the
//! real adapters and checks the class, and another checks the README.

use crate::config::ProviderKind;
use crate::resilience::FailureClass;

pub struct TaxonomyRow {
    pub provider: ProviderKind,
    /// HTTP status; 200 for an error event inside a stream.
    pub status: u16,
    /// What identifies the error, as the README shows it.
    pub signal: &'static str,
    /// A body (or, for streams, an SSE event) as the provider sends it.
    pub example: &'static str,
    pub class: FailureClass,
}

use FailureClass::*;
use ProviderKind::*;

pub const TAXONOMY: &[TaxonomyRow] = &[
    TaxonomyRow { provider: OpenAi, status: 429, signal: "`rate_limit_exceeded`", example: r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#, class: RateLimited },
    TaxonomyRow { provider: OpenAi, status: 429, signal: "`resource_unavailable` (no capacity at the request's `service_tier`)", example: r#"{"error":{"message":"Request was rejected due to resource unavailability for the flex service tier","type":"resource_unavailable","param":null,"code":"resource_unavailable"}}"#, class: RateLimited },
    TaxonomyRow { provider: OpenAi, status: 503, signal: "5xx", example: r#"{"error":{"message":"The server is overloaded","type":"server_error","code":null}}"#, class: Transient },
    TaxonomyRow { provider: OpenAi, status: 401, signal: "`invalid_api_key`", example: r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#, class: UpstreamAuth },
    TaxonomyRow { provider: OpenAi, status: 404, signal: "`model_not_found`", example: r#"{"error":{"message":"The model does not exist","type":"invalid_request_error","code":"model_not_found"}}"#, class: UpstreamAuth },
    TaxonomyRow { provider: OpenAi, status: 400, signal: "`context_length_exceeded`", example: r#"{"error":{"message":"This model's maximum context length is 128000 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#, class: ContextLength },
    TaxonomyRow { provider: OpenAi, status: 400, signal: "other `invalid_request_error`", example: r#"{"error":{"message":"Invalid value for 'temperature'","type":"invalid_request_error","code":"invalid_value"}}"#, class: ClientError },
    TaxonomyRow { provider: OpenAi, status: 200, signal: "`data: {\"error\":…}` before content", example: "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":\"overloaded\"}}\n\n", class: Transient },
    TaxonomyRow { provider: AzureOpenAi, status: 429, signal: "429 + `retry-after-ms`", example: r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation have exceeded the rate limit"}}"#, class: RateLimited },
    TaxonomyRow { provider: AzureOpenAi, status: 400, signal: "`context_length_exceeded`", example: r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#, class: ContextLength },
    TaxonomyRow { provider: AzureOpenAi, status: 404, signal: "`DeploymentNotFound`", example: r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#, class: UpstreamAuth },
    TaxonomyRow { provider: Anthropic, status: 529, signal: "`overloaded_error`", example: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#, class: Transient },
    TaxonomyRow { provider: Anthropic, status: 500, signal: "`api_error`", example: r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#, class: Transient },
    TaxonomyRow { provider: Anthropic, status: 429, signal: "`rate_limit_error`", example: r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#, class: RateLimited },
    TaxonomyRow { provider: Anthropic, status: 401, signal: "`authentication_error`", example: r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#, class: UpstreamAuth },
    TaxonomyRow { provider: Anthropic, status: 400, signal: "`invalid_request_error` \"prompt is too long\"", example: r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"}}"#, class: ContextLength },
    TaxonomyRow { provider: Anthropic, status: 400, signal: "other `invalid_request_error`", example: r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#, class: ClientError },
    TaxonomyRow { provider: Anthropic, status: 200, signal: "`event: error` (`overloaded_error`) in the stream", example: "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n", class: Transient },
    TaxonomyRow { provider: Gemini, status: 429, signal: "`RESOURCE_EXHAUSTED`", example: r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#, class: RateLimited },
    TaxonomyRow { provider: Gemini, status: 503, signal: "`UNAVAILABLE`", example: r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#, class: Transient },
    TaxonomyRow { provider: Gemini, status: 500, signal: "`INTERNAL`", example: r#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#, class: Transient },
    TaxonomyRow { provider: Gemini, status: 400, signal: "`INVALID_ARGUMENT` + `API_KEY_INVALID`", example: r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#, class: UpstreamAuth },
    TaxonomyRow { provider: Gemini, status: 403, signal: "`PERMISSION_DENIED`", example: r#"{"error":{"code":403,"message":"Method doesn't allow unregistered callers.","status":"PERMISSION_DENIED"}}"#, class: UpstreamAuth },
    TaxonomyRow { provider: Gemini, status: 403, signal: "`PERMISSION_DENIED` naming a request's file, cached content, tuned model or corpus", example: r#"{"error":{"code":403,"message":"You do not have permission to access the File abc123 or it may not exist.","status":"PERMISSION_DENIED"}}"#, class: ClientError },
    TaxonomyRow { provider: Gemini, status: 400, signal: "`INVALID_ARGUMENT` \"input token count … exceeds\"", example: r#"{"error":{"code":400,"message":"The input token count (1250000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#, class: ContextLength },
    TaxonomyRow { provider: Gemini, status: 400, signal: "other `INVALID_ARGUMENT`", example: r#"{"error":{"code":400,"message":"Invalid JSON payload received.","status":"INVALID_ARGUMENT"}}"#, class: ClientError },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming::events::UpstreamEvents;
    use crate::streaming::sse::{classify_event, EventKind};
    use http::StatusCode;

    /// What the gateway does with the example, through the real code path.
    fn classified(row: &TaxonomyRow) -> Option<FailureClass> {
        let adapter = super::super::adapter(row.provider);
        if row.status == 200 {
            let translator: Option<Box<dyn super::super::StreamTranslator>> = match row.provider {
                Anthropic => Some(Box::new(super::super::anthropic::AnthropicStream::new(
                    false, 0,
                ))),
                Gemini => Some(Box::new(super::super::gemini::GeminiStream::new(
                    "m", false, 0,
                ))),
                OpenAi | AzureOpenAi => None,
            };
            let mut events =
                UpstreamEvents::new(translator, crate::streaming::events::Dialect::Chat);
            events.push(bytes::Bytes::from_static(row.example.as_bytes()));
            let event = events.next_event()?;
            return match classify_event(&event) {
                EventKind::Error { kind, code, .. } => {
                    Some(FailureClass::from_error_object(&kind, &code))
                }
                _ => None,
            };
        }
        let status = StatusCode::from_u16(row.status).ok()?;
        adapter
            .classify_error(status, row.example.as_bytes())
            .or(FailureClass::from_status(status))
    }

    #[test]
    fn every_example_gets_its_class_from_the_real_adapters() {
        for row in TAXONOMY {
            assert_eq!(
                classified(row),
                Some(row.class),
                "{} {} {}",
                row.provider.as_str(),
                row.status,
                row.signal
            );
        }
    }

    #[test]
    fn the_readme_shows_this_table() {
        let readme = include_str!("../../README.md");
        for row in TAXONOMY {
            let line = format!(
                "| {} | {} | {} | {} |",
                row.provider.as_str(),
                row.status,
                row.signal,
                row.class.as_str()
            );
            assert!(readme.contains(&line), "README lacks: {line}");
        }
    }
}
