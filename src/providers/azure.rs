//! Azure OpenAI: the OpenAI wire format behind deployment URLs
//! (`/openai/deployments/{deployment}/…?api-version=…`, the target's model
//! naming the deployment) and an `api-key` header instead of a bearer token.

use super::openai::classify_openai_error;
use super::{Provider, Urls};
use crate::api::{Endpoint, InspectedBody};
use crate::config::Target;
use crate::resilience::FailureClass;
use bytes::Bytes;
use http::StatusCode;

pub struct AzureOpenAi;

/// Deployment names are letters, digits, `-`, `_` and `.`.
fn url_safe(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Provider for AzureOpenAi {
    fn name(&self) -> &'static str {
        "azure_openai"
    }

    fn speaks_openai(&self) -> bool {
        true
    }

    fn urls(&self, base: &str, model: &str, api_version: Option<&str>) -> Option<Urls> {
        if !url_safe(model) {
            return None;
        }
        let version = api_version.unwrap_or_default();
        let deployment = format!("{base}/openai/deployments/{model}");
        let chat: http::Uri = format!("{deployment}/chat/completions?api-version={version}")
            .parse()
            .ok()?;
        Some(Urls {
            stream: chat.clone(),
            chat,
            embeddings: Some(
                format!("{deployment}/embeddings?api-version={version}")
                    .parse()
                    .ok()?,
            ),
        })
    }

    /// Deployment URLs, except the Responses API, which Azure serves at
    /// `/openai/responses` with the deployment named by `model` in the body.
    fn openai_urls(
        &self,
        base: &str,
        model: &str,
        api_version: Option<&str>,
    ) -> crate::api::EndpointUrls {
        let version = api_version.unwrap_or_default();
        super::openai_style_urls(|endpoint| match endpoint {
            Endpoint::Responses => format!("{base}/openai/responses?api-version={version}"),
            other => format!(
                "{base}/openai/deployments/{model}/{}?api-version={version}",
                other.path()
            ),
        })
    }

    /// Azure ignores `model` in the body (the deployment decides), but the
    /// body is rewritten anyway so logs on both sides agree.
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
        super::openai::rebuild_openai_error("azure_openai", status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_urls_carry_the_api_version() {
        let urls = AzureOpenAi
            .urls(
                "https://res.openai.azure.com",
                "gpt-4o-prod",
                Some("2024-10-21"),
            )
            .unwrap();
        assert_eq!(
            urls.chat.to_string(),
            "https://res.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
        );
        assert_eq!(
            urls.embeddings.unwrap().to_string(),
            "https://res.openai.azure.com/openai/deployments/gpt-4o-prod/embeddings?api-version=2024-10-21"
        );
        assert!(AzureOpenAi.urls("https://x", "a/b", Some("1")).is_none());
    }
}
