//! Which provider a request speaks, and the errors every dialect can answer
//! with. Each dialect module renders these in its provider's own shape.

use bytes::Bytes;
use http::StatusCode;

use super::{anthropic, gemini, openai, SimEndpoint};

/// A provider's wire format, as chosen by the request path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Azure,
    Anthropic,
    Gemini,
}

/// An error answer, independent of its wire shape.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SimError<'a> {
    /// An injected status (a fault, not a validation result).
    Injected(u16),
    /// The request is unreadable or invalid.
    Invalid {
        status: StatusCode,
        message: &'a str,
    },
    UnknownModel(&'a str),
    /// The dialect's credential header (or query parameter) is absent.
    MissingKey,
    /// A key was presented but is not among the sim's accepted keys.
    InvalidKey,
    /// Anthropic's `anthropic-version` header or Azure's `api-version`
    /// query parameter is absent.
    MissingVersion,
    /// The prompt exceeds the model's context window.
    ContextLength,
    /// The in-band overload error, as a whole body (status 200).
    Overloaded,
    /// The requested service tier (e.g. `flex`) has no capacity: OpenAI's
    /// 429 `resource_unavailable`.
    TierUnavailable(&'a str),
}

impl SimEndpoint {
    pub(crate) fn dialect(self) -> Dialect {
        match self {
            Self::OpenAiChat
            | Self::OpenAiEmbeddings
            | Self::OpenAiResponses
            | Self::OpenAiCompletions
            | Self::OpenAiModerations
            | Self::OpenAiImages
            | Self::OpenAiSpeech
            | Self::OpenAiTranscriptions
            | Self::OpenAiTranslations
            | Self::Unknown => Dialect::OpenAi,
            Self::AzureChat
            | Self::AzureEmbeddings
            | Self::AzureResponses
            | Self::AzureCompletions
            | Self::AzureImages
            | Self::AzureSpeech
            | Self::AzureTranscriptions
            | Self::AzureTranslations => Dialect::Azure,
            Self::AnthropicMessages => Dialect::Anthropic,
            Self::GeminiGenerateContent | Self::GeminiStreamGenerateContent => Dialect::Gemini,
        }
    }
}

/// The status and body of `error` as `endpoint`'s provider would send it;
/// `name` is the sim's name, quoted in messages of injected faults.
pub(crate) fn render(
    endpoint: SimEndpoint,
    error: SimError<'_>,
    name: &str,
) -> (StatusCode, Bytes) {
    match endpoint.dialect() {
        Dialect::OpenAi => openai::error(endpoint, error, name),
        Dialect::Azure => openai::azure_error(endpoint, error, name),
        Dialect::Anthropic => anthropic::error(error, name),
        Dialect::Gemini => gemini::error(error, name),
    }
}

/// The arguments of every simulated tool call, as one JSON text.
pub(crate) const TOOL_INPUT_JSON: &str = r#"{"location":"Paris","unit":"celsius"}"#;

/// [`TOOL_INPUT_JSON`] cut where a provider streaming it might cut it; the
/// leading empty fragment is what Anthropic sends first.
pub(crate) const TOOL_INPUT_FRAGMENTS: [&str; 4] =
    ["", r#"{"location":"#, r#""Paris","unit":"#, r#""celsius"}"#];

/// The status an injected code is sent with; codes the `http` crate cannot
/// represent were already normalised to 500 by fault selection.
pub(crate) fn injected_status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
