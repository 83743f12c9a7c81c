//! OpenAI wire formats: JSON bodies, error objects and the SSE chat and
//! legacy completion streams; Azure OpenAI shares them and differs only in
//! its gateway errors.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use serde::Serialize;

use super::dialect::{injected_status, SimError, TOOL_INPUT_FRAGMENTS, TOOL_INPUT_JSON};
use super::responses::split_in_fragments;
use super::stream::{Closing, StreamFormat};
use super::{Shared, SimEndpoint};

pub(crate) const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// `ceil(len / 4)`, at least 1: the usual bytes-per-token rule of thumb.
pub(crate) fn approx_tokens(len: usize) -> u32 {
    u32::try_from(len.div_ceil(4)).unwrap_or(u32::MAX).max(1)
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serializing these plain structs cannot fail (string keys, no maps);
    // an empty body is a safe fallback if it ever did.
    serde_json::to_vec(value)
        .map(Bytes::from)
        .unwrap_or_default()
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
}

pub(crate) fn error_body(message: &str, kind: &str, code: Option<&str>) -> Bytes {
    to_bytes(&ErrorEnvelope {
        error: ErrorObject {
            message,
            kind,
            code,
        },
    })
}

/// OpenAI-style `type` and `code` for an injected status.
pub(crate) fn status_error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        400 => ("invalid_request_error", Some("invalid_request")),
        401 => ("authentication_error", Some("invalid_api_key")),
        403 => ("permission_error", Some("permission_denied")),
        404 => ("not_found_error", Some("not_found")),
        429 => ("rate_limit_error", Some("rate_limit_exceeded")),
        503 | 529 => ("overloaded_error", Some("overloaded")),
        500..=599 => ("server_error", Some("server_error")),
        _ => ("invalid_request_error", None),
    }
}

/// The full error object (`param` and `code` always present, possibly
/// null), as OpenAI sends it for authentication and context-length errors.
#[derive(Serialize)]
struct FullErrorEnvelope<'a> {
    error: FullErrorObject<'a>,
}

#[derive(Serialize)]
struct FullErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

fn full_error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    to_bytes(&FullErrorEnvelope {
        error: FullErrorObject {
            message,
            kind,
            param,
            code,
        },
    })
}

const MISSING_KEY: &str = "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from https://platform.openai.com/account/api-keys.";
/// The real message quotes a masked key; the sim never echoes a key.
const INVALID_KEY: &str = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.";
const CONTEXT_LENGTH: &str = "This model's maximum context length is 128000 tokens. However, your messages resulted in 250000 tokens. Please reduce the length of the messages.";

/// An error in OpenAI's shape.
pub(crate) fn error(endpoint: SimEndpoint, error: SimError<'_>, name: &str) -> (StatusCode, Bytes) {
    match error {
        SimError::Injected(code) => {
            let (kind, error_code) = status_error_kind(code);
            let message = format!("simulated {code} from {name}");
            (
                injected_status(code),
                error_body(&message, kind, error_code),
            )
        }
        SimError::Invalid { status, message } => (
            status,
            error_body(message, "invalid_request_error", Some("invalid_request")),
        ),
        SimError::UnknownModel(model) => {
            let message =
                format!("The model `{model}` does not exist or you do not have access to it.");
            (
                StatusCode::NOT_FOUND,
                error_body(&message, "invalid_request_error", Some("model_not_found")),
            )
        }
        SimError::MissingKey => (
            StatusCode::UNAUTHORIZED,
            full_error_body(MISSING_KEY, "invalid_request_error", None, None),
        ),
        SimError::InvalidKey => (
            StatusCode::UNAUTHORIZED,
            full_error_body(
                INVALID_KEY,
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
        ),
        SimError::MissingVersion => (
            StatusCode::BAD_REQUEST,
            error_body(
                "missing api-version",
                "invalid_request_error",
                Some("invalid_request"),
            ),
        ),
        SimError::ContextLength => {
            let param = match endpoint {
                SimEndpoint::OpenAiEmbeddings | SimEndpoint::AzureEmbeddings => "input",
                _ => "messages",
            };
            (
                StatusCode::BAD_REQUEST,
                full_error_body(
                    CONTEXT_LENGTH,
                    "invalid_request_error",
                    Some(param),
                    Some("context_length_exceeded"),
                ),
            )
        }
        SimError::Overloaded => {
            let message = format!("simulated overload from {name}");
            (
                StatusCode::OK,
                error_body(&message, "overloaded_error", Some("overloaded")),
            )
        }
        SimError::TierUnavailable(tier) => {
            let message = format!(
                "Request was rejected due to resource unavailability for the {tier} service tier ({name})"
            );
            (
                StatusCode::TOO_MANY_REQUESTS,
                full_error_body(
                    &message,
                    "resource_unavailable",
                    None,
                    Some("resource_unavailable"),
                ),
            )
        }
    }
}

/// Azure's own gateway errors (`{"error":{"code":"401","message":…}}`);
/// everything past its gateway is OpenAI's shape.
pub(crate) fn azure_error(
    endpoint: SimEndpoint,
    error: SimError<'_>,
    name: &str,
) -> (StatusCode, Bytes) {
    let (status, code, message) = match error {
        SimError::MissingKey | SimError::InvalidKey => (
            StatusCode::UNAUTHORIZED,
            "401",
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
        ),
        SimError::MissingVersion => (StatusCode::NOT_FOUND, "404", "Resource not found"),
        SimError::UnknownModel(_) => (
            StatusCode::NOT_FOUND,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
        ),
        _ => return self::error(endpoint, error, name),
    };
    (
        status,
        to_bytes(&AzureErrorEnvelope {
            error: AzureErrorObject { code, message },
        }),
    )
}

#[derive(Serialize)]
struct AzureErrorEnvelope<'a> {
    error: AzureErrorObject<'a>,
}

#[derive(Serialize)]
struct AzureErrorObject<'a> {
    code: &'a str,
    message: &'a str,
}

pub(crate) fn overload_event(name: &str) -> Bytes {
    let body = error_body(
        &format!("simulated overload from {name}"),
        "overloaded_error",
        Some("overloaded"),
    );
    let mut event = BytesMut::with_capacity(body.len() + 8);
    event.put_slice(b"data: ");
    event.put_slice(&body);
    event.put_slice(b"\n\n");
    event.freeze()
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

pub(crate) fn models_body(models: &[String], owner: &str) -> Bytes {
    to_bytes(&ModelList {
        object: "list",
        data: models
            .iter()
            .map(|id| ModelEntry {
                id,
                object: "model",
                created: 0,
                owned_by: owner,
            })
            .collect(),
    })
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl Usage {
    fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    arguments: &'static str,
}

fn tool_call_id(index: u64) -> String {
    format!("call_sim_{index}")
}

/// `tok0 tok1 ...`: the text of every non-stream answer, in every dialect.
pub(crate) fn completion_text(tokens: u32) -> String {
    let mut content = String::with_capacity(tokens as usize * 6);
    for i in 0..tokens {
        if i > 0 {
            content.push(' ');
        }
        let _ = write!(content, "tok{i}");
    }
    content
}

/// What a chat answer says.
#[derive(Clone, Copy)]
pub(crate) enum ChatOutput<'a> {
    /// `tok0 tok1 ...`
    Tokens,
    /// A call of this function with [`TOOL_INPUT_JSON`].
    Call(&'a str),
    /// Structured output: this JSON text.
    Json(&'a str),
}

/// A non-stream `chat.completion` with `output`.
pub(crate) fn chat_completion(
    index: u64,
    model: &str,
    tokens: u32,
    prompt_tokens: u32,
    output: ChatOutput<'_>,
) -> Bytes {
    let (content, tool) = match output {
        ChatOutput::Tokens => (completion_text(tokens), None),
        ChatOutput::Call(name) => (String::new(), Some(name)),
        ChatOutput::Json(text) => (text.to_owned(), None),
    };
    let tokens = match output {
        ChatOutput::Json(text) => approx_tokens(text.len()),
        _ => tokens,
    };
    let id = format!("chatcmpl-sim-{index}");
    let call_id = tool_call_id(index);
    let (message, finish_reason, completion_tokens) = match tool {
        Some(name) => (
            Message {
                role: "assistant",
                content: None,
                tool_calls: Some([ToolCall {
                    id: &call_id,
                    kind: "function",
                    function: FunctionCall {
                        name,
                        arguments: TOOL_INPUT_JSON,
                    },
                }]),
            },
            "tool_calls",
            approx_tokens(TOOL_INPUT_JSON.len()),
        ),
        None => (
            Message {
                role: "assistant",
                content: Some(&content),
                tool_calls: None,
            },
            "stop",
            tokens,
        ),
    };
    to_bytes(&ChatCompletion {
        id: &id,
        object: "chat.completion",
        created: unix_now(),
        model,
        choices: [Choice {
            index: 0,
            message,
            finish_reason,
        }],
        usage: Usage::new(prompt_tokens, completion_tokens),
    })
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: [f32; EMBEDDING_DIMS],
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

pub(crate) const EMBEDDING_DIMS: usize = 8;

/// One embeddings input, as OpenAI accepts it.
pub(crate) enum EmbeddingInput<'a> {
    Text(&'a str),
    Tokens(&'a [serde_json::Value]),
}

impl EmbeddingInput<'_> {
    fn tokens(&self) -> u32 {
        match self {
            Self::Text(s) => approx_tokens(s.len()),
            Self::Tokens(t) => u32::try_from(t.len()).unwrap_or(u32::MAX),
        }
    }

    /// FNV-1a over the input: stable across runs and platforms, so the same
    /// text always gets the same vector, whichever sim or seed serves it.
    fn hash(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01B3;
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        };
        match self {
            Self::Text(s) => {
                eat(b"s");
                eat(s.as_bytes());
            }
            Self::Tokens(tokens) => {
                eat(b"t");
                for t in *tokens {
                    eat(&t.as_i64().unwrap_or_default().to_le_bytes());
                }
            }
        }
        h
    }

    /// Unit-length vector from a splitmix64 stream seeded by the hash.
    fn vector(&self) -> [f32; EMBEDDING_DIMS] {
        let mut state = self.hash();
        let mut v = [0f32; EMBEDDING_DIMS];
        for x in &mut v {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // Top 24 bits fit an f32 mantissa exactly.
            *x = (z >> 40) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut v {
                *x /= norm;
            }
        }
        v
    }
}

pub(crate) fn embeddings_body(model: &str, inputs: &[EmbeddingInput<'_>]) -> Bytes {
    let prompt_tokens = inputs
        .iter()
        .fold(0u32, |acc, i| acc.saturating_add(i.tokens()));
    to_bytes(&EmbeddingList {
        object: "list",
        data: inputs
            .iter()
            .enumerate()
            .map(|(index, input)| Embedding {
                object: "embedding",
                index,
                embedding: input.vector(),
            })
            .collect(),
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

/// The `chat.completion.chunk` stream: a role chunk, one chunk per content
/// token, then a finish chunk, an optional usage chunk and `[DONE]`.
pub(crate) struct ChatChunks {
    /// `data: {..."choices":[`, shared by every chunk of this stream.
    prefix: String,
    tokens: u32,
    include_usage: bool,
    prompt_tokens: u32,
    /// The called function and the call's id, when the answer is a call:
    /// its chunks are the call's head, then the argument fragments.
    tool: Option<(String, String)>,
    /// The content fragments of a structured-output answer.
    json: Option<Vec<String>>,
    /// Where a continuation picks the token sequence up.
    resume: Option<super::continuation::Resume>,
}

impl ChatChunks {
    pub(crate) fn new(
        index: u64,
        model: &str,
        tokens: u32,
        include_usage: bool,
        prompt_tokens: u32,
    ) -> Self {
        let mut prefix = String::with_capacity(model.len() + 120);
        let _ = write!(
            prefix,
            "data: {{\"id\":\"chatcmpl-sim-{index}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":",
            unix_now()
        );
        // serde_json escapes the model name; writing a str cannot fail.
        let _ = serde_json::to_string(model).map(|m| prefix.push_str(&m));
        prefix.push_str(",\"choices\":[");
        Self {
            prefix,
            tokens,
            include_usage,
            prompt_tokens,
            tool: None,
            json: None,
            resume: None,
        }
    }

    /// A continuation of a partial answer (see `sim::continuation`).
    pub(crate) fn continuing(mut self, resume: Option<super::continuation::Resume>) -> Self {
        self.resume = resume;
        self
    }

    /// The stream of `output` instead of tokens.
    pub(crate) fn answering(mut self, index: u64, output: ChatOutput<'_>) -> Self {
        match output {
            ChatOutput::Tokens => {}
            ChatOutput::Call(name) => self.tool = Some((name.to_owned(), tool_call_id(index))),
            ChatOutput::Json(text) => self.json = Some(split_in_fragments(text, 4)),
        }
        self
    }

    fn json_chunk(&self, n: u32) -> Option<Bytes> {
        let fragments = self.json.as_ref()?;
        let fragment = usize::try_from(n).ok().and_then(|n| fragments.get(n))?;
        let choice =
            serde_json::json!({"index": 0, "delta": {"content": fragment}, "finish_reason": null});
        Some(self.chunk(&choice.to_string()))
    }

    fn tool_chunk(&self, n: u32) -> Option<Bytes> {
        let (name, id) = self.tool.as_ref()?;
        let fragment = usize::try_from(n)
            .ok()
            .and_then(|n| TOOL_INPUT_FRAGMENTS.get(n))
            .copied()
            .unwrap_or_default();
        let call = if n == 0 {
            serde_json::json!({"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": fragment}})
        } else {
            serde_json::json!({"index": 0, "function": {"arguments": fragment}})
        };
        let choice =
            serde_json::json!({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": null});
        Some(self.chunk(&choice.to_string()))
    }

    fn chunk(&self, body: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(self.prefix.len() + body.len() + 4);
        out.put_slice(self.prefix.as_bytes());
        out.put_slice(body.as_bytes());
        out.put_slice(b"]}\n\n");
        out.freeze()
    }

    fn usage_chunk(&self, sent: u32) -> Bytes {
        let usage = Usage::new(self.prompt_tokens, sent);
        let mut out = BytesMut::with_capacity(self.prefix.len() + 100);
        out.put_slice(self.prefix.as_bytes());
        out.put_slice(b"],\"usage\":");
        out.put_slice(&to_bytes(&usage));
        out.put_slice(b"}\n\n");
        out.freeze()
    }
}

impl StreamFormat for ChatChunks {
    fn chunks(&self) -> u32 {
        match (&self.tool, &self.json) {
            (Some(_), _) => u32::try_from(TOOL_INPUT_FRAGMENTS.len()).unwrap_or(u32::MAX),
            (None, Some(fragments)) => u32::try_from(fragments.len()).unwrap_or(u32::MAX),
            (None, None) => self
                .resume
                .map_or(self.tokens, |resume| resume.chunks(self.tokens)),
        }
    }

    fn preamble(&mut self, step: usize) -> Option<Bytes> {
        (step == 0).then(|| {
            self.chunk(
                r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#,
            )
        })
    }

    fn content(&mut self, n: u32, _finishing: bool) -> Bytes {
        if let Some(chunk) = self.tool_chunk(n).or_else(|| self.json_chunk(n)) {
            return chunk;
        }
        if let Some(resume) = self.resume {
            let choice = serde_json::json!({"index": 0, "delta": {"content": resume.token(n)}, "finish_reason": null});
            return self.chunk(&choice.to_string());
        }
        let mut body = String::with_capacity(80);
        let _ = write!(
            body,
            "{{\"index\":0,\"delta\":{{\"content\":\"tok{n} \"}},\"finish_reason\":null}}"
        );
        self.chunk(&body)
    }

    fn closing(&mut self, step: usize, sent: u32) -> Option<Closing> {
        let done = || Closing::Last(Bytes::from_static(DONE_EVENT));
        let (finish, sent) = match self.tool {
            Some(_) => (
                r#"{"index":0,"delta":{},"finish_reason":"tool_calls"}"#,
                approx_tokens(TOOL_INPUT_JSON.len()),
            ),
            None => {
                let sent = match &self.json {
                    Some(fragments) => approx_tokens(fragments.iter().map(String::len).sum()),
                    None => sent,
                };
                (r#"{"index":0,"delta":{},"finish_reason":"stop"}"#, sent)
            }
        };
        match (step, self.include_usage) {
            (0, _) => Some(Closing::More(self.chunk(finish))),
            (1, true) => Some(Closing::More(self.usage_chunk(sent))),
            (1, false) | (2, true) => Some(done()),
            _ => None,
        }
    }

    fn error_event(&mut self, shared: &Shared) -> Bytes {
        shared.overload_event.clone()
    }
}

#[derive(Serialize)]
struct TextCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [TextChoice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

/// A non-stream legacy `text_completion` whose text is `tok0 tok1 ...`.
pub(crate) fn text_completion(index: u64, model: &str, tokens: u32, prompt_tokens: u32) -> Bytes {
    let text = completion_text(tokens);
    let id = format!("cmpl-sim-{index}");
    to_bytes(&TextCompletion {
        id: &id,
        object: "text_completion",
        created: unix_now(),
        model,
        choices: [TextChoice {
            text: &text,
            index: 0,
            logprobs: None,
            finish_reason: "stop",
        }],
        usage: Usage::new(prompt_tokens, tokens),
    })
}

/// The legacy completion stream: one `text_completion` chunk per token
/// (no role preamble, as OpenAI sends it), a chunk with the finish reason,
/// an optional usage chunk and `[DONE]`.
pub(crate) struct CompletionChunks(ChatChunks);

impl CompletionChunks {
    pub(crate) fn new(
        index: u64,
        model: &str,
        tokens: u32,
        include_usage: bool,
        prompt_tokens: u32,
    ) -> Self {
        let mut chunks = ChatChunks::new(index, model, tokens, include_usage, prompt_tokens);
        chunks.prefix = chunks
            .prefix
            .replacen("chatcmpl-sim-", "cmpl-sim-", 1)
            .replacen("chat.completion.chunk", "text_completion", 1);
        Self(chunks)
    }
}

impl StreamFormat for CompletionChunks {
    fn chunks(&self) -> u32 {
        self.0.tokens
    }

    fn preamble(&mut self, _step: usize) -> Option<Bytes> {
        None
    }

    fn content(&mut self, n: u32, _finishing: bool) -> Bytes {
        let body = format!(
            "{{\"text\":\"tok{n} \",\"index\":0,\"logprobs\":null,\"finish_reason\":null}}"
        );
        self.0.chunk(&body)
    }

    fn closing(&mut self, step: usize, sent: u32) -> Option<Closing> {
        if step == 0 {
            return Some(Closing::More(self.0.chunk(
                r#"{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}"#,
            )));
        }
        self.0.closing(step, sent)
    }

    fn error_event(&mut self, shared: &Shared) -> Bytes {
        shared.overload_event.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimate() {
        assert_eq!(approx_tokens(0), 1);
        assert_eq!(approx_tokens(4), 1);
        assert_eq!(approx_tokens(5), 2);
    }

    #[test]
    fn embeddings_are_stable_unit_vectors() {
        let a = EmbeddingInput::Text("hello").vector();
        assert_eq!(a, EmbeddingInput::Text("hello").vector());
        assert_ne!(a, EmbeddingInput::Text("hellp").vector());
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn completion_chunks_are_text_completions_ending_in_done() {
        let mut chunks = CompletionChunks::new(3, "m", 2, true, 5);
        assert!(chunks.preamble(0).is_none(), "no role preamble");
        let first = chunks.content(0, false);
        let text = std::str::from_utf8(&first).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["id"], "cmpl-sim-3");
        assert_eq!(v["choices"][0]["text"], "tok0 ");
        let mut closing = Vec::new();
        for step in 0.. {
            match chunks.closing(step, 2) {
                Some(Closing::More(b)) => closing.push(b),
                Some(Closing::Last(b)) => {
                    closing.push(b);
                    break;
                }
                None => break,
            }
        }
        assert_eq!(closing.len(), 3, "finish, usage, [DONE]");
        assert!(std::str::from_utf8(&closing[0])
            .unwrap()
            .contains(r#""finish_reason":"stop""#));
        assert!(std::str::from_utf8(&closing[1])
            .unwrap()
            .contains(r#""completion_tokens":2"#));
        assert_eq!(&closing[2][..], DONE_EVENT);
    }

    #[test]
    fn error_kinds() {
        assert_eq!(status_error_kind(429).0, "rate_limit_error");
        assert_eq!(status_error_kind(503).0, "overloaded_error");
        assert_eq!(status_error_kind(500).0, "server_error");
        assert_eq!(status_error_kind(401).0, "authentication_error");
    }
}
