//! Gemini's generateContent API (`POST /v1beta/models/{model}:generateContent`
//! and `:streamGenerateContent?alt=sse`): the request fields the sim looks
//! at, the `GenerateContentResponse` body, the SSE stream and the error
//! shape (`{"error":{"code","message","status"}}`).
//!
//! Stream, as Gemini sends it: one `data: {GenerateContentResponse}` event
//! per content chunk, each with `modelVersion`, `responseId` and the prompt's
//! `usageMetadata`; the last also carries `finishReason` and the complete
//! usage. No `[DONE]`: the connection just ends. Events end in `\r\n\r\n`,
//! Gemini's own framing, so clients' CRLF handling is exercised too.

use std::borrow::Cow;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::dialect::{injected_status, SimError, TOOL_INPUT_JSON};
use super::openai::{approx_tokens, completion_text, to_bytes};
use super::responses::{schema_instance, split_in_fragments};
use super::server::Ctx;
use super::stream::{Closing, StreamFormat};
use super::Shared;

/// Field names in Gemini's JSON are lowerCamelCase; its REST front end
/// also takes the proto's snake_case, hence the aliases.
#[derive(Deserialize)]
struct GenerateContentRequest<'a> {
    #[serde(default)]
    contents: Option<Vec<serde_json::Value>>,
    #[serde(default, borrow)]
    tools: Option<Vec<Tool<'a>>>,
    #[serde(default, borrow, rename = "toolConfig", alias = "tool_config")]
    tool_config: Option<ToolConfig<'a>>,
    #[serde(default, rename = "generationConfig", alias = "generation_config")]
    generation_config: Option<GenerationConfig>,
}

#[derive(Deserialize)]
struct GenerationConfig {
    #[serde(default, rename = "responseMimeType", alias = "response_mime_type")]
    response_mime_type: Option<String>,
    #[serde(default, rename = "responseJsonSchema", alias = "response_json_schema")]
    response_json_schema: Option<serde_json::Value>,
    #[serde(default, rename = "responseSchema", alias = "response_schema")]
    response_schema: Option<serde_json::Value>,
}

impl GenerationConfig {
    /// The JSON text structured output asks for: an instance of the schema
    /// (JSON Schema, or Gemini's OpenAPI subset), or `{}` for JSON alone.
    fn structured_output(&self) -> Option<String> {
        let schema = self
            .response_json_schema
            .as_ref()
            .or(self.response_schema.as_ref());
        match schema {
            Some(schema) => Some(schema_instance(schema)),
            None => (self.response_mime_type.as_deref() == Some("application/json"))
                .then(|| "{}".to_owned()),
        }
    }
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(
        default,
        borrow,
        rename = "functionDeclarations",
        alias = "function_declarations"
    )]
    function_declarations: Option<Vec<FunctionDeclaration<'a>>>,
}

#[derive(Deserialize)]
struct FunctionDeclaration<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToolConfig<'a> {
    #[serde(
        default,
        borrow,
        rename = "functionCallingConfig",
        alias = "function_calling_config"
    )]
    function_calling_config: Option<FunctionCallingConfig<'a>>,
}

#[derive(Deserialize)]
struct FunctionCallingConfig<'a> {
    #[serde(default, borrow)]
    mode: Option<Cow<'a, str>>,
    #[serde(
        default,
        borrow,
        rename = "allowedFunctionNames",
        alias = "allowed_function_names"
    )]
    allowed_function_names: Option<Vec<Cow<'a, str>>>,
}

impl GenerateContentRequest<'_> {
    /// The function the answer calls: under mode `ANY` the first allowed
    /// name (else the first declared one); under `AUTO` (or no config) the
    /// first declared one until a `functionResponse` is in the conversation,
    /// so a tool round trip ends in text; never under `NONE`. The same rule
    /// as the OpenAI dialects.
    fn called_function(&self) -> Option<&str> {
        let declared = self
            .tools
            .as_deref()?
            .iter()
            .filter_map(|t| t.function_declarations.as_deref())
            .flatten()
            .next()?;
        let config = self
            .tool_config
            .as_ref()
            .and_then(|c| c.function_calling_config.as_ref());
        match config.and_then(|c| c.mode.as_deref()).unwrap_or("AUTO") {
            "ANY" => {
                let allowed = config
                    .and_then(|c| c.allowed_function_names.as_deref())
                    .and_then(<[_]>::first);
                Some(allowed.unwrap_or(&declared.name))
            }
            "AUTO" | "VALIDATED" if !self.has_function_response() => Some(&declared.name),
            _ => None,
        }
    }

    fn has_function_response(&self) -> bool {
        self.contents.iter().flatten().any(|c| {
            c["parts"].as_array().is_some_and(|parts| {
                parts.iter().any(|p| {
                    p.get("functionResponse")
                        .or(p.get("function_response"))
                        .is_some()
                })
            })
        })
    }
}

pub(crate) async fn generate(
    ctx: &Ctx<'_>,
    body: &Bytes,
    model: &str,
    stream: bool,
) -> Response<Body> {
    if stream && ctx.query_param("alt") != Some("sse") {
        // Without `alt=sse` Gemini streams one JSON array; the sim only
        // speaks the SSE form the gateway uses.
        let message = "the simulator streams only with alt=sse";
        let status = StatusCode::BAD_REQUEST;
        return ctx.reject(Some(model), stream, status, message, body.len());
    }
    let req: GenerateContentRequest<'_> = match ctx.parse(Some(model), body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    if req.contents.as_ref().is_none_or(Vec::is_empty) {
        let message = "* GenerateContentRequest.contents: contents is not specified\n";
        let status = StatusCode::BAD_REQUEST;
        return ctx.reject(Some(model), stream, status, message, body.len());
    }
    let decision = match ctx.admit(model, stream, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    let response_id = format!("sim-{}", decision.index);
    let json = req
        .generation_config
        .as_ref()
        .and_then(GenerationConfig::structured_output);
    let answer = Answer {
        model,
        response_id: &response_id,
        function: req.called_function(),
        json: json.as_deref(),
        tokens: decision.tokens,
        prompt_tokens: approx_tokens(body.len()),
    };
    let format = stream.then(|| GenerateChunks::new(&answer));
    ctx.answer(decision, format, || {
        let text = match answer.json {
            Some(json) => json.to_owned(),
            None => completion_text(answer.tokens),
        };
        to_bytes(&answer.response(&text, Some(answer.output_tokens())))
    })
    .await
}

/// What a successful answer says, shared by the body and the stream.
struct Answer<'a> {
    model: &'a str,
    response_id: &'a str,
    /// Set when the answer is a call of this function instead of text.
    function: Option<&'a str>,
    /// Structured output: this JSON text instead of tokens.
    json: Option<&'a str>,
    tokens: u32,
    prompt_tokens: u32,
}

impl Answer<'_> {
    fn output_tokens(&self) -> u32 {
        match (self.function, self.json) {
            (Some(_), _) => approx_tokens(TOOL_INPUT_JSON.len()),
            (None, Some(json)) => approx_tokens(json.len()),
            (None, None) => self.tokens,
        }
    }

    /// A response whose content is `text` (or the function call);
    /// `finished` with the output tokens on the last, the prompt's usage
    /// only before it.
    fn response<'r>(&'r self, text: &'r str, finished: Option<u32>) -> GenerateContentResponse<'r> {
        GenerateContentResponse {
            candidates: [Candidate {
                content: Content {
                    parts: [self.part(text)],
                    role: "model",
                },
                finish_reason: finished.map(|_| "STOP"),
                index: 0,
            }],
            usage_metadata: match finished {
                Some(output_tokens) => UsageMetadata::complete(self.prompt_tokens, output_tokens),
                None => UsageMetadata::prompt(self.prompt_tokens),
            },
            model_version: self.model,
            response_id: self.response_id,
        }
    }

    fn part<'r>(&'r self, text: &'r str) -> Part<'r> {
        match self.function {
            Some(name) => Part::FunctionCall(FunctionCall {
                name,
                args: ToolArgs {
                    location: "Paris",
                    unit: "celsius",
                },
            }),
            None => Part::Text(text),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse<'a> {
    candidates: [Candidate<'a>; 1],
    usage_metadata: UsageMetadata,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    content: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'static str>,
    index: u32,
}

#[derive(Serialize)]
struct Content<'a> {
    parts: [Part<'a>; 1],
    role: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum Part<'a> {
    Text(&'a str),
    FunctionCall(FunctionCall<'a>),
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    args: ToolArgs,
}

/// The arguments of every simulated call ([`TOOL_INPUT_JSON`]).
#[derive(Serialize)]
struct ToolArgs {
    location: &'static str,
    unit: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidates_token_count: Option<u32>,
    total_token_count: u32,
}

impl UsageMetadata {
    /// What chunks before the last carry: the prompt only.
    fn prompt(prompt_tokens: u32) -> Self {
        Self {
            prompt_token_count: prompt_tokens,
            candidates_token_count: None,
            total_token_count: prompt_tokens,
        }
    }

    fn complete(prompt_tokens: u32, output_tokens: u32) -> Self {
        Self {
            prompt_token_count: prompt_tokens,
            candidates_token_count: Some(output_tokens),
            total_token_count: prompt_tokens.saturating_add(output_tokens),
        }
    }
}

fn event(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 10);
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\r\n\r\n");
    out.freeze()
}

/// The streamGenerateContent events for one answer.
pub(crate) struct GenerateChunks {
    model: String,
    response_id: String,
    function: Option<String>,
    /// The text fragments of a structured-output answer.
    json: Option<(String, Vec<String>)>,
    tokens: u32,
    prompt_tokens: u32,
}

impl GenerateChunks {
    fn new(answer: &Answer<'_>) -> Self {
        Self {
            model: answer.model.to_owned(),
            response_id: answer.response_id.to_owned(),
            function: answer.function.map(str::to_owned),
            json: answer
                .json
                .map(|j| (j.to_owned(), split_in_fragments(j, 4))),
            tokens: answer.tokens,
            prompt_tokens: answer.prompt_tokens,
        }
    }

    fn answer(&self) -> Answer<'_> {
        Answer {
            model: &self.model,
            response_id: &self.response_id,
            function: self.function.as_deref(),
            json: self.json.as_ref().map(|(j, _)| j.as_str()),
            tokens: self.tokens,
            prompt_tokens: self.prompt_tokens,
        }
    }

    fn chunk(&self, text: &str, finished: Option<u32>) -> Bytes {
        event(&to_bytes(&self.answer().response(text, finished)))
    }
}

impl StreamFormat for GenerateChunks {
    fn chunks(&self) -> u32 {
        match self.function {
            // Gemini sends a function call whole, in one chunk.
            Some(_) => 1,
            None => match &self.json {
                Some((_, fragments)) => u32::try_from(fragments.len()).unwrap_or(u32::MAX),
                None => self.tokens,
            },
        }
    }

    fn preamble(&mut self, _step: usize) -> Option<Bytes> {
        None
    }

    fn content(&mut self, n: u32, finishing: bool) -> Bytes {
        let fragment = self.json.as_ref().and_then(|(_, fragments)| {
            usize::try_from(n)
                .ok()
                .and_then(|i| fragments.get(i))
                .cloned()
        });
        let text = fragment.unwrap_or_else(|| format!("tok{n} "));
        let output_tokens = match (&self.function, &self.json) {
            (Some(_), _) => approx_tokens(TOOL_INPUT_JSON.len()),
            (None, Some((json, _))) => approx_tokens(json.len()),
            (None, None) => n.saturating_add(1),
        };
        self.chunk(&text, finishing.then_some(output_tokens))
    }

    fn closing(&mut self, _step: usize, sent: u32) -> Option<Closing> {
        // The last content chunk carried the finish; a stream without
        // content still needs one chunk to say it is finished.
        (sent == 0).then(|| Closing::Last(self.chunk("", Some(0))))
    }

    fn error_event(&mut self, shared: &Shared) -> Bytes {
        let message = format!("simulated overload from {}", shared.name);
        event(&error_body(503, &message, "UNAVAILABLE", None))
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: u16,
    message: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<[ErrorInfo; 1]>,
}

/// `google.rpc.ErrorInfo`, as sent with an invalid API key.
#[derive(Serialize)]
struct ErrorInfo {
    #[serde(rename = "@type")]
    kind: &'static str,
    reason: &'static str,
    domain: &'static str,
    metadata: ErrorInfoMetadata,
}

#[derive(Serialize)]
struct ErrorInfoMetadata {
    service: &'static str,
}

fn error_body(code: u16, message: &str, status: &str, details: Option<[ErrorInfo; 1]>) -> Bytes {
    to_bytes(&ErrorEnvelope {
        error: ErrorObject {
            code,
            message,
            status,
            details,
        },
    })
}

/// The google.rpc status name Gemini sends with an HTTP status.
pub(crate) fn rpc_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        502 | 503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        500..=599 => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

/// An error in Gemini's shape.
pub(crate) fn error(error: SimError<'_>, name: &str) -> (StatusCode, Bytes) {
    let (status, message): (StatusCode, Cow<'_, str>) = match error {
        SimError::Injected(code) => (
            injected_status(code),
            Cow::Owned(format!("simulated {code} from {name}")),
        ),
        SimError::Invalid { status, message } => (status, Cow::Borrowed(message)),
        SimError::UnknownModel(model) => (
            StatusCode::NOT_FOUND,
            Cow::Owned(format!(
                "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
            )),
        ),
        SimError::MissingKey => (
            StatusCode::FORBIDDEN,
            Cow::Borrowed("Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API."),
        ),
        SimError::InvalidKey => {
            let details = [ErrorInfo {
                kind: "type.googleapis.com/google.rpc.ErrorInfo",
                reason: "API_KEY_INVALID",
                domain: "googleapis.com",
                metadata: ErrorInfoMetadata {
                    service: "generativelanguage.googleapis.com",
                },
            }];
            let message = "API key not valid. Please pass a valid API key.";
            let body = error_body(400, message, "INVALID_ARGUMENT", Some(details));
            return (StatusCode::BAD_REQUEST, body);
        }
        SimError::MissingVersion => (
            StatusCode::BAD_REQUEST,
            Cow::Borrowed("missing API version"),
        ),
        // Gemini's wording; the count is over the limit, unlike a prompt the
        // sim could really have received.
        SimError::ContextLength => (
            StatusCode::BAD_REQUEST,
            Cow::Borrowed("The input token count (1250000) exceeds the maximum number of tokens allowed (1048576)."),
        ),
        SimError::Overloaded => {
            let message = format!("simulated overload from {name}");
            return (
                StatusCode::OK,
                error_body(503, &message, "UNAVAILABLE", None),
            );
        }
        // Only OpenAI-dialect chat refuses tiers; here it reads as a limit.
        SimError::TierUnavailable(tier) => (
            StatusCode::TOO_MANY_REQUESTS,
            Cow::Owned(format!("no capacity for the {tier} service tier")),
        ),
    };
    let code = status.as_u16();
    (status, error_body(code, &message, rpc_status(code), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_statuses() {
        assert_eq!(rpc_status(429), "RESOURCE_EXHAUSTED");
        assert_eq!(rpc_status(503), "UNAVAILABLE");
        assert_eq!(rpc_status(500), "INTERNAL");
        assert_eq!(rpc_status(400), "INVALID_ARGUMENT");
        assert_eq!(rpc_status(401), "UNAUTHENTICATED");
        assert_eq!(rpc_status(403), "PERMISSION_DENIED");
    }

    #[test]
    fn tool_args_are_the_shared_tool_input() {
        let args = ToolArgs {
            location: "Paris",
            unit: "celsius",
        };
        assert_eq!(&to_bytes(&args)[..], TOOL_INPUT_JSON.as_bytes());
    }
}
