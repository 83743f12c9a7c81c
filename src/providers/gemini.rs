//! Google Gemini's `generateContent` API (v1beta REST): translation between
//! OpenAI chat completions, the gateway's canonical form, and Gemini's
//! requests, responses, SSE streams and errors.
//!
//! Owns every mapping decision between the two wire formats. May not do I/O,
//! read config or decide about retries: [`classify_error`] only refines the
//! failure class, `resilience` decides what happens next.
//!
//! # Requests
//!
//! Translated: `messages` (`system`/`developer` → `systemInstruction`
//! wherever they appear; `user`/`assistant`/`tool` → `contents` with
//! consecutive turns of one role merged, tool results being
//! `functionResponse` parts of a `user` turn), `tools`, `tool_choice`,
//! `max_tokens`/`max_completion_tokens` (the latter wins), `temperature`,
//! `top_p`, `stop`, `n` (1 only: just choice 0 is translated back), `seed`
//! (32-bit in Gemini), `presence_penalty`, `frequency_penalty`,
//! `response_format`.
//!
//! Accepted without effect because they do not change the answer: `model`
//! (it goes in the URL, see [`path`]), `stream` and `stream_options` (the
//! caller picks the endpoint and builds [`GeminiStream`]), `store`,
//! `metadata`, `user`, `service_tier`, a message's `name`, an image's
//! `detail`, a tool's `strict`, `logprobs: false`, `top_logprobs: 0`, an
//! empty `logit_bias`, `modalities: ["text"]`, `parallel_tool_calls: true`.
//! Every other top-level field is [`Unsupported`], never silently dropped.
//! Inside a message, fields other than `role`, `content`, `tool_calls`,
//! `tool_call_id`, `refusal` (sent as assistant text), `function_call` and
//! `audio` (both refused) are ignored: clients echo assistant messages back
//! with response-only fields such as `annotations`.
//!
//! Tool calls round-trip Gemini's thought signatures (required by Gemini 3
//! for function calling) the way Google's own OpenAI-compatible endpoint
//! does: as `extra_content.google.thought_signature` on the tool call.
//!
//! # Tool schemas
//!
//! `parameters` is Gemini's `Schema`, an OpenAPI 3.0 subset, and Gemini
//! rejects JSON Schema keywords outside it. So each tool's schema is
//! rewritten: types are upper-cased (`"object"` → `"OBJECT"`), a type list
//! with `"null"` and an `anyOf` member `{"type":"null"}` become `nullable`,
//! local `$ref`s into `$defs`/`definitions` and single-member `allOf`s are
//! inlined, `oneOf` becomes `anyOf`, a string `const` becomes a one-value
//! `enum`, `format`s Gemini does not know and non-string `enum`s are
//! dropped, empty `properties` are dropped (Gemini refuses them; a function
//! whose parameters end up without properties is declared without
//! parameters), `required` keeps only declared properties. Validation-only
//! keywords Gemini has no field for (`additionalProperties`, `$schema`,
//! `$id`, `$comment`, `examples`, `exclusiveMinimum`, `multipleOf`,
//! `uniqueItems`, `patternProperties`, `not`, …) are dropped: they constrain
//! what the tool accepts, which the tool still checks, not what it means.
//! Recursive `$ref`s, several types in one schema, multi-member `allOf` and
//! tuple `items` cannot be expressed and are [`Unsupported`].
//! `response_format.json_schema` needs none of this: it goes to
//! `responseJsonSchema`, which takes JSON Schema as is.

use crate::api::path::Path;
use crate::api::{error_body, CachedTokens, ChatChunk, ChatUsage, ChunkChoice, ReasoningTokens};
use crate::providers::{StreamTranslator, Unsupported};
use crate::resilience::FailureClass;
use bytes::Bytes;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Write as _};

pub const PROVIDER: &str = "gemini";

/// URL path (after the base URL) for a model:
/// `/v1beta/models/{model}:generateContent`, or
/// `:streamGenerateContent?alt=sse` for a stream. A leading `models/` (the
/// resource name form) is accepted; anything that is not a URL-safe
/// character is percent-encoded so the result is always a valid path.
pub fn path(model: &str, stream: bool) -> String {
    let model = model.strip_prefix("models/").unwrap_or(model);
    let method = if stream {
        ":streamGenerateContent?alt=sse"
    } else {
        ":generateContent"
    };
    let mut out = String::with_capacity(15 + model.len() + method.len());
    out.push_str("/v1beta/models/");
    for byte in model.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out.push_str(method);
    out
}

fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Unsupported {
    Unsupported {
        provider: PROVIDER,
        field: field.into(),
        reason: reason.into(),
    }
}

/// A refusal naming the request field at `self`, rendered only now.
trait RefuseAt {
    fn unsupported(&self, reason: impl Into<String>) -> Unsupported;
}

impl RefuseAt for Path<'_> {
    fn unsupported(&self, reason: impl Into<String>) -> Unsupported {
        unsupported(self.field(), reason)
    }
}

// ---------------------------------------------------------------------------
// Requests: OpenAI chat request → Gemini GenerateContentRequest
// ---------------------------------------------------------------------------

/// The OpenAI request fields the translation reads. Parsed by a hand-written
/// visitor so that an unknown or inexpressible field becomes an
/// [`Unsupported`] naming it, without buffering the body into a `Value`.
#[derive(Default)]
struct ChatRequest<'a> {
    messages: Vec<Message<'a>>,
    tools: Vec<Tool<'a>>,
    tool_choice: Option<ToolChoice>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    stop: Option<Stop>,
    n: Option<u64>,
    seed: Option<i64>,
    response_format: Option<ResponseFormat<'a>>,
    /// The first field found that Gemini cannot express.
    rejected: Option<Unsupported>,
}

impl ChatRequest<'_> {
    fn reject(&mut self, field: &str, reason: &str) {
        if self.rejected.is_none() {
            self.rejected = Some(Path::ROOT.key(field).unsupported(reason));
        }
    }
}

/// A map key, borrowed from the body unless it has escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

struct RequestVisitor<'s> {
    /// Set to the top-level field whose value did not parse, so the error
    /// names it.
    failing_field: &'s mut Option<String>,
}

impl<'de> Visitor<'de> for RequestVisitor<'_> {
    type Value = ChatRequest<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OpenAI chat completion request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatRequest<'de>, A::Error> {
        let mut request = ChatRequest::default();
        while let Some(Key(key)) = map.next_key()? {
            macro_rules! value {
                () => {
                    match map.next_value() {
                        Ok(value) => value,
                        Err(error) => {
                            *self.failing_field = Some(key.into_owned());
                            return Err(error);
                        }
                    }
                };
            }
            match key.as_ref() {
                "messages" => request.messages = value!(),
                "tools" => {
                    let tools: Option<Vec<Tool<'de>>> = value!();
                    request.tools = tools.unwrap_or_default();
                }
                "tool_choice" => request.tool_choice = value!(),
                "max_tokens" => request.max_tokens = value!(),
                "max_completion_tokens" => request.max_completion_tokens = value!(),
                "temperature" => request.temperature = value!(),
                "top_p" => request.top_p = value!(),
                "presence_penalty" => request.presence_penalty = value!(),
                "frequency_penalty" => request.frequency_penalty = value!(),
                "stop" => request.stop = value!(),
                "n" => request.n = value!(),
                "seed" => request.seed = value!(),
                "response_format" => request.response_format = value!(),
                "model" | "stream" | "stream_options" | "store" | "metadata" | "user"
                | "service_tier" => {
                    let _: IgnoredAny = value!();
                }
                "logprobs" => {
                    let wanted: Option<bool> = value!();
                    if wanted == Some(true) {
                        request.reject(&key, "cannot be served: Gemini returns no log probabilities through this adapter");
                    }
                }
                "top_logprobs" => {
                    let count: Option<u64> = value!();
                    if count.is_some_and(|count| count > 0) {
                        request.reject(&key, "cannot be served: Gemini returns no log probabilities through this adapter");
                    }
                }
                "logit_bias" => {
                    let bias: Option<HashMap<Cow<'de, str>, IgnoredAny>> = value!();
                    if bias.is_some_and(|bias| !bias.is_empty()) {
                        request.reject(&key, "has no Gemini equivalent");
                    }
                }
                "audio" => {
                    let audio: Option<IgnoredAny> = value!();
                    if audio.is_some() {
                        request.reject(
                            &key,
                            "cannot be served: this adapter does not produce audio",
                        );
                    }
                }
                "modalities" => {
                    let modalities: Option<Vec<Cow<'de, str>>> = value!();
                    if modalities.is_some_and(|list| list.iter().any(|m| m != "text")) {
                        request.reject(
                            &key,
                            "asks for output other than text, which this adapter does not produce",
                        );
                    }
                }
                "functions" | "function_call" => {
                    let legacy: Option<IgnoredAny> = value!();
                    if legacy.is_some() {
                        request.reject(
                            &key,
                            "is the legacy function-calling API; use `tools` and `tool_choice`",
                        );
                    }
                }
                "parallel_tool_calls" => {
                    let parallel: Option<bool> = value!();
                    if parallel == Some(false) {
                        request.reject(
                            &key,
                            "cannot be false: Gemini cannot be told to call one function at a time",
                        );
                    }
                }
                _ => {
                    let _: IgnoredAny = value!();
                    request.reject(&key, "is not a field the Gemini adapter can translate");
                }
            }
        }
        Ok(request)
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<MessageContent<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
    #[serde(borrow, default)]
    tool_call_id: Option<Cow<'a, str>>,
    /// An assistant's earlier refusal: what it said, so it is sent as text.
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default)]
    function_call: Option<IgnoredAny>,
    #[serde(default)]
    audio: Option<IgnoredAny>,
}

/// A message's `content`: a string or a list of typed parts. Deserialized by
/// hand because an untagged enum would copy the (possibly large) content
/// into serde's buffer first.
enum MessageContent<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<ContentPart<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for MessageContent<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for ContentVisitor<'a> {
            type Value = MessageContent<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MessageContent::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MessageContent::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(MessageContent::Text(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(MessageContent::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct ContentPart<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    image_url: Option<ImageUrl<'a>>,
}

#[derive(Deserialize)]
struct ImageUrl<'a> {
    #[serde(borrow)]
    url: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: CalledFunction<'a>,
    #[serde(borrow, default)]
    extra_content: Option<ExtraContent<'a>>,
}

#[derive(Deserialize)]
struct CalledFunction<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Cow<'a, str>,
}

/// Provider-specific data on a tool call, as Google's OpenAI-compatible
/// endpoint places it.
#[derive(Deserialize, Serialize)]
struct ExtraContent<'a> {
    #[serde(borrow, default)]
    google: Option<GoogleExtra<'a>>,
}

#[derive(Deserialize, Serialize)]
struct GoogleExtra<'a> {
    #[serde(borrow, default)]
    thought_signature: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    function: Option<FunctionDefinition<'a>>,
}

#[derive(Deserialize)]
struct FunctionDefinition<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    description: Option<Cow<'a, str>>,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ToolChoice {
    Mode(String),
    Function {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        function: Option<NamedFunction>,
    },
}

#[derive(Deserialize)]
struct NamedFunction {
    name: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    json_schema: Option<JsonSchemaFormat<'a>>,
}

#[derive(Deserialize)]
struct JsonSchemaFormat<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest<'a> {
    contents: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<GeminiTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<ToolConfig>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    generation_config: GenerationConfig<'a>,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Part<'a> {
    Text {
        text: &'a str,
    },
    InlineData {
        #[serde(rename = "inlineData")]
        inline_data: MediaData<'a>,
    },
    FileData {
        #[serde(rename = "fileData")]
        file_data: MediaFile<'a>,
    },
    FunctionCall {
        #[serde(rename = "functionCall")]
        function_call: FunctionCallPart<'a>,
        #[serde(rename = "thoughtSignature", skip_serializing_if = "Option::is_none")]
        thought_signature: Option<&'a str>,
    },
    FunctionResponse {
        #[serde(rename = "functionResponse")]
        function_response: FunctionResponsePart<'a>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MediaData<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MediaFile<'a> {
    mime_type: &'static str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct FunctionCallPart<'a> {
    name: &'a str,
    args: Box<RawValue>,
}

#[derive(Serialize)]
struct FunctionResponsePart<'a> {
    name: &'a str,
    response: ToolResult<'a>,
}

#[derive(Serialize)]
struct ToolResult<'a> {
    content: ToolResultContent<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolResultContent<'a> {
    Json(Box<RawValue>),
    Text(Cow<'a, str>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GeminiTool<'a> {
    function_declarations: Vec<FunctionDeclaration<'a>>,
}

#[derive(Serialize)]
struct FunctionDeclaration<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ToolConfig {
    function_calling_config: FunctionCallingConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FunctionCallingConfig {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[String; 1]>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_sequences: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    candidate_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a RawValue>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.stop_sequences.is_none()
            && self.candidate_count.is_none()
            && self.seed.is_none()
            && self.presence_penalty.is_none()
            && self.frequency_penalty.is_none()
            && self.response_mime_type.is_none()
            && self.response_json_schema.is_none()
    }
}

/// OpenAI chat request body (a JSON object) → Gemini GenerateContentRequest
/// body (the model goes in the URL, not the body).
pub fn translate_request(openai: &[u8]) -> Result<Vec<u8>, Unsupported> {
    let mut failing_field = None;
    let mut deserializer = serde_json::Deserializer::from_slice(openai);
    let parsed = deserializer
        .deserialize_map(RequestVisitor {
            failing_field: &mut failing_field,
        })
        .and_then(|request| deserializer.end().map(|()| request));
    let request = match parsed {
        Ok(request) => request,
        Err(error) => {
            let field = failing_field.unwrap_or_else(|| "body".to_owned());
            return Err(unsupported(field, format!("is not valid: {error}")));
        }
    };
    if let Some(rejected) = request.rejected {
        return Err(rejected);
    }
    let (contents, system) = translate_messages(&request.messages)?;
    let tools = translate_tools(&request.tools)?;
    let tool_config = match &request.tool_choice {
        Some(choice) => tool_config(choice, !tools.is_empty())?,
        None => None,
    };
    let gemini = GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(SystemInstruction { parts: system }),
        tools: if tools.is_empty() {
            Vec::new()
        } else {
            vec![GeminiTool {
                function_declarations: tools,
            }]
        },
        tool_config,
        generation_config: generation_config(&request)?,
    };
    serde_json::to_vec(&gemini)
        .map_err(|error| unsupported("body", format!("could not be encoded: {error}")))
}

type Translated<'a> = (Vec<Turn<'a>>, Vec<Part<'a>>);

fn translate_messages<'a>(messages: &'a [Message<'a>]) -> Result<Translated<'a>, Unsupported> {
    let mut contents: Vec<Turn<'a>> = Vec::with_capacity(messages.len());
    let mut system = Vec::new();
    // (tool call id, function name) of every assistant tool call so far; a
    // tool result names only the id, Gemini wants the name.
    let mut calls: Vec<(&'a str, &'a str)> = Vec::new();
    let root = Path::ROOT;
    let messages_at = root.key("messages");
    for (i, message) in messages.iter().enumerate() {
        let at = messages_at.index(i);
        if message.function_call.is_some() {
            return Err(at
                .key("function_call")
                .unsupported("is the legacy function-calling API; use `tool_calls`"));
        }
        if message.audio.is_some() {
            return Err(at
                .key("audio")
                .unsupported("cannot be sent to Gemini by this adapter"));
        }
        if message.tool_calls.is_some() && message.role != "assistant" {
            return Err(at
                .key("tool_calls")
                .unsupported("is only valid on assistant messages"));
        }
        let content = message.content.as_ref();
        let content_at = at.key("content");
        match message.role.as_ref() {
            "system" | "developer" => {
                text_parts(content, &content_at, &mut system, TextOnly::System)?
            }
            "user" => {
                let mut parts = Vec::new();
                user_parts(content, &content_at, &mut parts)?;
                push_turn(&mut contents, "user", parts);
            }
            "assistant" => {
                let mut parts = Vec::new();
                text_parts(content, &content_at, &mut parts, TextOnly::Assistant)?;
                if let Some(refusal) = message.refusal.as_deref().filter(|r| !r.is_empty()) {
                    parts.push(Part::Text { text: refusal });
                }
                let calls_at = at.key("tool_calls");
                for (j, call) in message.tool_calls.iter().flatten().enumerate() {
                    let at = calls_at.index(j);
                    if let Some(kind) = call.kind.as_deref().filter(|kind| *kind != "function") {
                        return Err(at.key("type").unsupported(format!("`{kind}` tool calls cannot be sent to Gemini; only function calls translate")));
                    }
                    let args = function_arguments(&call.function.arguments).ok_or_else(|| {
                        at.key("function").key("arguments").unsupported(
                            "is not a JSON object; Gemini takes function arguments as an object",
                        )
                    })?;
                    calls.push((&call.id, &call.function.name));
                    let thought_signature = call
                        .extra_content
                        .as_ref()
                        .and_then(|extra| extra.google.as_ref())
                        .and_then(|google| google.thought_signature.as_deref());
                    parts.push(Part::FunctionCall {
                        function_call: FunctionCallPart {
                            name: &call.function.name,
                            args,
                        },
                        thought_signature,
                    });
                }
                push_turn(&mut contents, "model", parts);
            }
            "tool" => {
                let Some(id) = message.tool_call_id.as_deref() else {
                    return Err(at
                        .key("tool_call_id")
                        .unsupported("is required on tool messages"));
                };
                let Some(&(_, name)) = calls.iter().rev().find(|(call_id, _)| *call_id == id)
                else {
                    return Err(at.key("tool_call_id").unsupported(
                        "does not match a tool call of an earlier assistant message; Gemini needs the function's name",
                    ));
                };
                let text = tool_result_text(content, &content_at)?;
                let content = match serde_json::from_str::<Box<RawValue>>(&text) {
                    Ok(json) => ToolResultContent::Json(json),
                    Err(_) => ToolResultContent::Text(text),
                };
                let part = Part::FunctionResponse {
                    function_response: FunctionResponsePart {
                        name,
                        response: ToolResult { content },
                    },
                };
                push_turn(&mut contents, "user", vec![part]);
            }
            "function" => {
                return Err(at.key("role").unsupported(
                    "`function` is the legacy function-calling API; use `tool` messages",
                ));
            }
            other => {
                return Err(at
                    .key("role")
                    .unsupported(format!("`{other}` is not a chat role")))
            }
        }
    }
    if contents.is_empty() {
        return Err(messages_at.unsupported(
            "has no user or assistant message with content; Gemini needs at least one",
        ));
    }
    Ok((contents, system))
}

/// Appends a message's parts to the conversation: Gemini wants turns to
/// alternate, so a message of the same role as the last turn joins it, and
/// a message with nothing to say adds no (invalid) empty turn.
fn push_turn<'a>(contents: &mut Vec<Turn<'a>>, role: &'static str, parts: Vec<Part<'a>>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => contents.push(Turn { role, parts }),
    }
}

#[derive(Clone, Copy)]
enum TextOnly {
    System,
    Assistant,
}

/// Text of a system or assistant message. Empty strings are skipped: Gemini
/// rejects a part with empty text.
fn text_parts<'a>(
    content: Option<&'a MessageContent<'a>>,
    at: &Path<'_>,
    out: &mut Vec<Part<'a>>,
    role: TextOnly,
) -> Result<(), Unsupported> {
    match content {
        Some(MessageContent::Text(text)) if !text.is_empty() => out.push(Part::Text { text }),
        None | Some(MessageContent::Text(_)) => {}
        Some(MessageContent::Parts(parts)) => {
            for (j, part) in parts.iter().enumerate() {
                let at = at.index(j);
                let text = match (part.kind.as_ref(), role) {
                    ("text", _) => part.text.as_deref(),
                    ("refusal", TextOnly::Assistant) => part.refusal.as_deref(),
                    (kind, TextOnly::System) => {
                        return Err(at.key("type").unsupported(
                            format!("`{kind}` cannot be part of a Gemini system instruction, which is text only"),
                        ))
                    }
                    (kind, TextOnly::Assistant) => {
                        return Err(at.key("type").unsupported(
                            format!("`{kind}` cannot be part of an assistant message sent to Gemini"),
                        ))
                    }
                };
                let Some(text) = text else {
                    return Err(at.unsupported("has no text"));
                };
                if !text.is_empty() {
                    out.push(Part::Text { text });
                }
            }
        }
    }
    Ok(())
}

fn user_parts<'a>(
    content: Option<&'a MessageContent<'a>>,
    at: &Path<'_>,
    out: &mut Vec<Part<'a>>,
) -> Result<(), Unsupported> {
    let parts = match content {
        None => return Ok(()),
        Some(MessageContent::Text(text)) => {
            if !text.is_empty() {
                out.push(Part::Text { text });
            }
            return Ok(());
        }
        Some(MessageContent::Parts(parts)) => parts,
    };
    for (j, part) in parts.iter().enumerate() {
        let at = at.index(j);
        match part.kind.as_ref() {
            "text" => {
                let Some(text) = part.text.as_deref() else {
                    return Err(at.key("text").unsupported("is required on text parts"));
                };
                if !text.is_empty() {
                    out.push(Part::Text { text });
                }
            }
            "image_url" => {
                let image_at = at.key("image_url");
                let Some(image) = &part.image_url else {
                    return Err(image_at.unsupported("is required on image_url parts"));
                };
                out.push(
                    image_part(&image.url)
                        .map_err(|reason| image_at.key("url").unsupported(reason))?,
                );
            }
            "input_audio" => {
                return Err(at
                    .key("type")
                    .unsupported("`input_audio` parts cannot be sent to Gemini by this adapter"));
            }
            "file" => {
                return Err(at
                    .key("type")
                    .unsupported("`file` parts cannot be sent to Gemini by this adapter"));
            }
            other => {
                return Err(at.key("type").unsupported(format!(
                    "`{other}` is not a content part type this adapter knows"
                )));
            }
        }
    }
    Ok(())
}

/// A `data:` URL becomes inline bytes; an http(s) URL becomes a file
/// reference, which Gemini wants typed, so its type comes from the file
/// extension.
fn image_part(url: &str) -> Result<Part<'_>, &'static str> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err("is a data URL without data");
        };
        let Some(meta) = meta.strip_suffix(";base64") else {
            return Err(
                "is a data URL that is not base64-encoded; Gemini takes inline data as base64",
            );
        };
        let mime_type = meta.split(';').next().unwrap_or_default();
        if mime_type.is_empty() {
            return Err("is a data URL without a media type");
        }
        return Ok(Part::InlineData {
            inline_data: MediaData { mime_type, data },
        });
    }
    let scheme_len = if starts_with_ignore_case(url, "https://") {
        8
    } else if starts_with_ignore_case(url, "http://") {
        7
    } else {
        return Err("is neither a data: URL nor an http(s) URL");
    };
    let mime_type = url
        .get(scheme_len..)
        .and_then(image_type_from_extension)
        .ok_or("has no image file extension Gemini accepts (png, jpg, jpeg, webp, heic, heif), and Gemini needs the media type of a file URL")?;
    Ok(Part::FileData {
        file_data: MediaFile {
            mime_type,
            file_uri: url,
        },
    })
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// `host/dir/photo.JPG?x=1#y` → `image/jpeg`.
fn image_type_from_extension(after_scheme: &str) -> Option<&'static str> {
    let without_query = after_scheme.split(['?', '#']).next()?;
    let (_, path) = without_query.split_once('/')?;
    let file = path.rsplit('/').next()?;
    let (_, extension) = file.rsplit_once('.')?;
    const TYPES: &[(&str, &str)] = &[
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("jpeg", "image/jpeg"),
        ("webp", "image/webp"),
        ("heic", "image/heic"),
        ("heif", "image/heif"),
    ];
    TYPES
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(extension))
        .map(|(_, mime)| *mime)
}

/// Gemini takes `args` as an object; clients send a JSON string. An empty
/// string is how some clients spell "no arguments".
fn function_arguments(arguments: &str) -> Option<Box<RawValue>> {
    if arguments.trim().is_empty() {
        return RawValue::from_string("{}".to_owned()).ok();
    }
    let raw: Box<RawValue> = serde_json::from_str(arguments).ok()?;
    raw.get().starts_with('{').then_some(raw)
}

fn tool_result_text<'a>(
    content: Option<&'a MessageContent<'a>>,
    at: &Path<'_>,
) -> Result<Cow<'a, str>, Unsupported> {
    let parts = match content {
        None => return Ok(Cow::Borrowed("")),
        Some(MessageContent::Text(text)) => return Ok(Cow::Borrowed(text)),
        Some(MessageContent::Parts(parts)) => parts,
    };
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        match (part.kind.as_ref(), part.text.as_deref()) {
            ("text", Some(text)) => texts.push(text),
            _ => {
                return Err(at.index(j).unsupported(
                    "is not a text part; Gemini function responses are sent as text or JSON",
                ))
            }
        }
    }
    Ok(match texts.as_slice() {
        [one] => Cow::Borrowed(one),
        many => Cow::Owned(many.concat()),
    })
}

fn translate_tools<'a>(tools: &'a [Tool<'a>]) -> Result<Vec<FunctionDeclaration<'a>>, Unsupported> {
    let mut declarations = Vec::with_capacity(tools.len());
    let root = Path::ROOT;
    let tools_at = root.key("tools");
    for (i, tool) in tools.iter().enumerate() {
        let at = tools_at.index(i);
        if tool.kind != "function" {
            return Err(at.key("type").unsupported(format!(
                "`{}` tools cannot be sent to Gemini; only function tools translate",
                tool.kind
            )));
        }
        let function_at = at.key("function");
        let Some(function) = &tool.function else {
            return Err(function_at.unsupported("is required on function tools"));
        };
        let parameters = match &function.parameters {
            Some(schema) => function_parameters(schema, &function_at.key("parameters"))?,
            None => None,
        };
        declarations.push(FunctionDeclaration {
            name: &function.name,
            description: function.description.as_deref(),
            parameters,
        });
    }
    Ok(declarations)
}

fn tool_config(choice: &ToolChoice, has_tools: bool) -> Result<Option<ToolConfig>, Unsupported> {
    let root = Path::ROOT;
    let (mode, name) = match choice {
        ToolChoice::Mode(mode) => match mode.as_str() {
            "auto" => ("AUTO", None),
            "none" => ("NONE", None),
            "required" => ("ANY", None),
            other => {
                return Err(root
                    .key("tool_choice")
                    .unsupported(format!("`{other}` is not a tool choice this adapter knows")))
            }
        },
        ToolChoice::Function { kind, function } => match (kind.as_str(), function) {
            ("function", Some(function)) => ("ANY", Some([function.name.clone()])),
            ("function", None) => {
                return Err(root
                    .key("tool_choice")
                    .key("function")
                    .unsupported("is required"))
            }
            (other, _) => {
                return Err(root.key("tool_choice").key("type").unsupported(format!(
                    "`{other}` cannot be expressed in Gemini's function calling config"
                )))
            }
        },
    };
    if !has_tools {
        // Without tools, `auto` and `none` both mean a plain answer; forcing
        // a call is a contradiction Gemini would reject less clearly.
        return match mode {
            "AUTO" | "NONE" => Ok(None),
            _ => Err(root
                .key("tool_choice")
                .unsupported("requires a function call but the request has no tools")),
        };
    }
    Ok(Some(ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode,
            allowed_function_names: name,
        },
    }))
}

fn generation_config<'a>(request: &ChatRequest<'a>) -> Result<GenerationConfig<'a>, Unsupported> {
    let root = Path::ROOT;
    let candidate_count = match request.n {
        None => None,
        Some(1) => Some(1),
        Some(0) => return Err(root.key("n").unsupported("must be at least 1")),
        Some(_) => {
            return Err(root.key("n").unsupported(
                "must be 1: the Gemini adapter translates only the first choice back",
            ))
        }
    };
    let seed = match request.seed {
        None => None,
        Some(seed) => Some(i32::try_from(seed).map_err(|_| {
            root.key("seed")
                .unsupported("must fit in 32 bits for Gemini")
        })?),
    };
    let stop_sequences = match &request.stop {
        None => None,
        Some(Stop::One(one)) => Some(vec![one.clone()]),
        Some(Stop::Many(many)) if many.is_empty() => None,
        Some(Stop::Many(many)) => Some(many.clone()),
    };
    let (response_mime_type, response_json_schema) = match &request.response_format {
        None => (None, None),
        Some(format) => match format.kind.as_ref() {
            "text" => (None, None),
            "json_object" => (Some("application/json"), None),
            "json_schema" => {
                let Some(schema) = format.json_schema.as_ref().and_then(|j| j.schema) else {
                    return Err(root
                        .key("response_format")
                        .key("json_schema")
                        .key("schema")
                        .unsupported("is required"));
                };
                (Some("application/json"), Some(schema))
            }
            other => {
                return Err(root.key("response_format").key("type").unsupported(format!(
                    "`{other}` is not a response format this adapter knows"
                )))
            }
        },
    };
    Ok(GenerationConfig {
        max_output_tokens: request.max_completion_tokens.or(request.max_tokens),
        temperature: request.temperature,
        top_p: request.top_p,
        stop_sequences,
        candidate_count,
        seed,
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        response_mime_type,
        response_json_schema,
    })
}

// --- Tool schemas: JSON Schema → Gemini's OpenAPI-subset `Schema` ---

/// Keywords of Gemini's `Schema` that mean the same as in JSON Schema.
const KEPT_KEYWORDS: &[&str] = &[
    "title",
    "description",
    "nullable",
    "default",
    "example",
    "pattern",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "propertyOrdering",
];

/// The `format`s Gemini accepts; others make it reject the request.
const GEMINI_FORMATS: &[&str] = &["enum", "date-time", "float", "double", "int32", "int64"];

/// Deeper nesting (counting `$ref` hops) than this is refused rather than
/// risk the stack on a hostile schema.
const MAX_SCHEMA_DEPTH: usize = 48;
/// `$ref`s can expand a small schema exponentially; this bounds the work.
const MAX_SCHEMA_NODES: usize = 4096;

struct SchemaContext<'r> {
    root: &'r Value,
    /// `$ref`s being expanded, outermost first: one seen twice is a cycle.
    expanding: Vec<&'r str>,
    depth: usize,
    nodes_left: usize,
}

/// A function's `parameters`, or `None` when it declares no properties
/// (Gemini refuses an object schema with empty `properties`).
fn function_parameters(schema: &Value, path: &Path<'_>) -> Result<Option<Value>, Unsupported> {
    let mut cx = SchemaContext {
        root: schema,
        // The root is being expanded: `"$ref": "#"` refers back to it.
        expanding: vec!["#"],
        depth: 0,
        nodes_left: MAX_SCHEMA_NODES,
    };
    let out = gemini_schema(schema, &mut cx, path)?;
    Ok(out.contains_key("properties").then_some(Value::Object(out)))
}

fn gemini_schema<'r>(
    schema: &'r Value,
    cx: &mut SchemaContext<'r>,
    path: &Path<'_>,
) -> Result<Map<String, Value>, Unsupported> {
    let object = match schema {
        Value::Object(object) => object,
        // `true` accepts anything: an unconstrained schema.
        Value::Bool(true) => return Ok(Map::new()),
        _ => return Err(path.unsupported("is not a JSON schema object")),
    };
    if cx.depth >= MAX_SCHEMA_DEPTH {
        return Err(path.unsupported(format!("nests deeper than {MAX_SCHEMA_DEPTH} levels")));
    }
    cx.nodes_left = cx.nodes_left.checked_sub(1).ok_or_else(|| {
        path.unsupported(format!("expands to more than {MAX_SCHEMA_NODES} schemas"))
    })?;
    cx.depth += 1;
    let result = schema_object(object, cx, path);
    cx.depth -= 1;
    result
}

fn schema_object<'r>(
    object: &'r Map<String, Value>,
    cx: &mut SchemaContext<'r>,
    path: &Path<'_>,
) -> Result<Map<String, Value>, Unsupported> {
    // Precedence: the schema's own keywords over a single `allOf` member
    // over a `$ref` target, as JSON Schema siblings refine what they sit by.
    let mut out = match object.get("$ref") {
        Some(reference) => expand_ref(reference, cx, &path.key("$ref"))?,
        None => Map::new(),
    };
    if let Some(all_of) = object.get("allOf") {
        let at = path.key("allOf");
        match all_of.as_array().map(Vec::as_slice) {
            Some([only]) => out.extend(gemini_schema(only, cx, &at.index(0))?),
            _ => {
                return Err(
                    at.unsupported("combines several schemas; Gemini's schema subset has no allOf")
                )
            }
        }
    }
    let mut any_of = None;
    for (key, value) in object {
        match key.as_str() {
            "type" => {
                let (kind, nullable) =
                    gemini_type(value).map_err(|reason| path.key("type").unsupported(reason))?;
                out.insert("type".to_owned(), Value::String(kind.to_owned()));
                if nullable {
                    out.insert("nullable".to_owned(), Value::Bool(true));
                }
            }
            "format"
                if value
                    .as_str()
                    .is_some_and(|format| GEMINI_FORMATS.contains(&format)) =>
            {
                out.insert(key.clone(), value.clone());
            }
            // Gemini's `enum` is a list of strings; `required` names properties.
            "enum" | "required"
                if value
                    .as_array()
                    .is_some_and(|values| values.iter().all(Value::is_string)) =>
            {
                out.insert(key.clone(), value.clone());
            }
            "const" if value.is_string() => {
                out.insert("enum".to_owned(), Value::Array(vec![value.clone()]));
            }
            "properties" => {
                let at = path.key("properties");
                let Some(properties) = value.as_object() else {
                    return Err(at.unsupported("is not an object"));
                };
                let mut translated = Map::new();
                for (name, property) in properties {
                    let property = gemini_schema(property, cx, &at.key(name))?;
                    translated.insert(name.clone(), Value::Object(property));
                }
                if !translated.is_empty() {
                    out.insert(key.clone(), Value::Object(translated));
                }
            }
            "items" => {
                let at = path.key("items");
                if value.is_array() {
                    return Err(at.unsupported(
                        "is a tuple schema; Gemini's schema subset has one item schema per array",
                    ));
                }
                let items = gemini_schema(value, cx, &at)?;
                out.insert(key.clone(), Value::Object(items));
            }
            "anyOf" | "oneOf" => {
                let at = path.key(key);
                let Some(members) = value.as_array() else {
                    return Err(at.unsupported("is not an array"));
                };
                let mut translated = Vec::with_capacity(members.len());
                for (i, member) in members.iter().enumerate() {
                    translated.push(gemini_schema(member, cx, &at.index(i))?);
                }
                any_of = Some(translated);
            }
            keyword if KEPT_KEYWORDS.contains(&keyword) => {
                out.insert(key.clone(), value.clone());
            }
            // Everything else is validation-only or JSON Schema bookkeeping
            // that Gemini rejects (see the module docs).
            _ => {}
        }
    }
    if let Some(members) = any_of {
        merge_any_of(&mut out, members);
    }
    // Only string enums are kept, and Gemini wants an enum's type spelled out.
    if out.contains_key("enum") && !out.contains_key("type") {
        out.insert("type".to_owned(), Value::String("STRING".to_owned()));
    }
    if let Some(Value::Array(required)) = out.remove("required") {
        let declared = out.get("properties").and_then(Value::as_object);
        let required: Vec<Value> = required
            .into_iter()
            .filter(|name| {
                name.as_str()
                    .is_some_and(|name| declared.is_some_and(|d| d.contains_key(name)))
            })
            .collect();
        if !required.is_empty() {
            out.insert("required".to_owned(), Value::Array(required));
        }
    }
    Ok(out)
}

fn expand_ref<'r>(
    reference: &'r Value,
    cx: &mut SchemaContext<'r>,
    path: &Path<'_>,
) -> Result<Map<String, Value>, Unsupported> {
    let Some(reference) = reference.as_str() else {
        return Err(path.unsupported("is not a string"));
    };
    let target = reference
        .strip_prefix('#')
        .and_then(|pointer| cx.root.pointer(pointer))
        .ok_or_else(|| {
            path.unsupported("is not a reference into this schema (e.g. `#/$defs/Name`)")
        })?;
    if cx.expanding.contains(&reference) {
        return Err(
            path.unsupported("is recursive; Gemini's schema subset cannot express recursion")
        );
    }
    cx.expanding.push(reference);
    let expanded = gemini_schema(target, cx, path);
    cx.expanding.pop();
    expanded
}

/// `anyOf` with a `{"type":"null"}` member is how JSON Schema spells
/// "nullable"; a single remaining member is just that schema.
fn merge_any_of(out: &mut Map<String, Value>, mut members: Vec<Map<String, Value>>) {
    let before = members.len();
    members.retain(|member| {
        !(member.len() == 1 && member.get("type").and_then(Value::as_str) == Some("NULL"))
    });
    if members.len() != before {
        out.insert("nullable".to_owned(), Value::Bool(true));
    }
    match members.len() {
        0 => {}
        1 => {
            for (key, value) in members.into_iter().flatten() {
                out.entry(key).or_insert(value);
            }
        }
        _ => {
            out.insert(
                "anyOf".to_owned(),
                Value::Array(members.into_iter().map(Value::Object).collect()),
            );
        }
    }
}

/// JSON Schema `type` (a name or a list of names) → Gemini's upper-case
/// `Type` and whether `null` was allowed.
fn gemini_type(value: &Value) -> Result<(&'static str, bool), &'static str> {
    fn one(name: &str) -> Option<&'static str> {
        const TYPES: &[(&str, &str)] = &[
            ("string", "STRING"),
            ("number", "NUMBER"),
            ("integer", "INTEGER"),
            ("boolean", "BOOLEAN"),
            ("array", "ARRAY"),
            ("object", "OBJECT"),
            ("null", "NULL"),
        ];
        TYPES
            .iter()
            .find(|(json, _)| json.eq_ignore_ascii_case(name))
            .map(|(_, gemini)| *gemini)
    }
    const UNKNOWN: &str = "is not a JSON Schema type";
    match value {
        Value::String(name) => one(name).map(|kind| (kind, false)).ok_or(UNKNOWN),
        Value::Array(names) => {
            let mut kind = None;
            let mut nullable = false;
            for name in names {
                match name.as_str().and_then(one) {
                    None => return Err(UNKNOWN),
                    Some("NULL") => nullable = true,
                    Some(other) if kind.is_none() => kind = Some(other),
                    Some(_) => {
                        return Err("lists several types; Gemini's schema takes one (use anyOf)")
                    }
                }
            }
            match kind {
                Some(kind) => Ok((kind, nullable)),
                None if nullable => Ok(("NULL", false)),
                None => Err("is an empty list of types"),
            }
        }
        _ => Err(UNKNOWN),
    }
}

// ---------------------------------------------------------------------------
// Responses: Gemini GenerateContentResponse → OpenAI chat.completion
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiResponse<'a> {
    #[serde(borrow, default)]
    candidates: Vec<Candidate<'a>>,
    #[serde(borrow, default)]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(borrow, default)]
    model_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    response_id: Option<Cow<'a, str>>,
    /// Only in streams: Gemini reports a failure after the head this way.
    #[serde(borrow, default)]
    error: Option<GeminiError<'a>>,
}

impl GeminiResponse<'_> {
    fn first_candidate(&self) -> Option<&Candidate<'_>> {
        self.candidates
            .iter()
            .find(|candidate| candidate.index == 0)
    }

    fn prompt_blocked(&self) -> bool {
        self.prompt_feedback
            .as_ref()
            .is_some_and(|feedback| feedback.block_reason.is_some())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<CandidateContent<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    index: u32,
}

impl Candidate<'_> {
    fn parts(&self) -> &[GeminiPart<'_>] {
        self.content.as_ref().map_or(&[], |content| &content.parts)
    }
}

#[derive(Deserialize)]
struct CandidateContent<'a> {
    #[serde(borrow, default)]
    parts: Vec<GeminiPart<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiPart<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    /// A thought summary, not part of the answer.
    #[serde(default)]
    thought: Option<bool>,
    #[serde(borrow, default)]
    function_call: Option<GeminiFunctionCall<'a>>,
    #[serde(borrow, default)]
    thought_signature: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct GeminiFunctionCall<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    args: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback<'a> {
    #[serde(borrow, default)]
    block_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    // Last, where `api::find_usage` looks for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<ChatUsage>,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OpenAiToolCall<'a>>,
}

#[derive(Serialize)]
struct OpenAiToolCall<'a> {
    /// Only in stream deltas.
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OpenAiFunction<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra_content: Option<ExtraContent<'a>>,
}

#[derive(Serialize)]
struct OpenAiFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

impl From<UsageMetadata> for ChatUsage {
    /// Thinking tokens are billed as output, so they count as completion
    /// tokens, as OpenAI counts reasoning tokens.
    fn from(usage: UsageMetadata) -> Self {
        let completion_tokens = usage
            .candidates_token_count
            .saturating_add(usage.thoughts_token_count);
        ChatUsage {
            prompt_tokens: usage.prompt_token_count,
            completion_tokens,
            total_tokens: usage.prompt_token_count.saturating_add(completion_tokens),
            prompt_tokens_details: usage
                .cached_content_token_count
                .map(|cached_tokens| CachedTokens { cached_tokens }),
            completion_tokens_details: (usage.thoughts_token_count > 0).then_some(
                ReasoningTokens {
                    reasoning_tokens: usage.thoughts_token_count,
                },
            ),
        }
    }
}

/// Why a Gemini success body could not be translated. Never quotes the body:
/// only positions and Gemini's status names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("gemini response is not a readable GenerateContentResponse ({kind} error at line {line}, column {column})")]
    Malformed {
        kind: &'static str,
        line: usize,
        column: usize,
    },
    #[error("gemini response has no candidate and no block reason")]
    NoCandidate,
    #[error("gemini answered with an error object (status {status})")]
    ErrorObject { status: &'static str },
}

impl TranslateError {
    fn malformed(error: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        TranslateError::Malformed {
            kind: match error.classify() {
                Category::Io => "io",
                Category::Syntax => "syntax",
                Category::Data => "data",
                Category::Eof => "truncation",
            },
            line: error.line(),
            column: error.column(),
        }
    }
}

/// Gemini GenerateContentResponse → OpenAI `chat.completion` body; `model`
/// is the target's model name, replaced by Gemini's `modelVersion` when the
/// response names one.
pub fn translate_response(
    gemini: &[u8],
    model: &str,
    created: u64,
) -> Result<Vec<u8>, TranslateError> {
    let response: GeminiResponse<'_> =
        serde_json::from_slice(gemini).map_err(|error| TranslateError::malformed(&error))?;
    if let Some(error) = &response.error {
        return Err(TranslateError::ErrorObject {
            status: error.status(0).as_str(),
        });
    }
    let (content, tool_calls, finish_reason) = match response.first_candidate() {
        Some(candidate) => {
            let parts = candidate.parts();
            let tool_calls = openai_tool_calls(parts, 0, false);
            let finish = finish_reason(candidate.finish_reason.as_deref(), !tool_calls.is_empty());
            (joined_text(parts), tool_calls, finish)
        }
        None if response.prompt_blocked() => (None, Vec::new(), "content_filter"),
        None => return Err(TranslateError::NoCandidate),
    };
    let id = completion_id(response.response_id.as_deref());
    let completion = Completion {
        id: &id,
        object: "chat.completion",
        created,
        model: response
            .model_version
            .as_deref()
            .filter(|v| !v.is_empty())
            .unwrap_or(model),
        choices: [CompletionChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content,
                tool_calls,
            },
            logprobs: None,
            finish_reason,
        }],
        usage: response.usage_metadata.map(ChatUsage::from),
    };
    serde_json::to_vec(&completion).map_err(|error| TranslateError::malformed(&error))
}

/// `chatcmpl-` + Gemini's `responseId`, so a response can be found in
/// Gemini's logs; a fresh id when Gemini sent none.
fn completion_id(response_id: Option<&str>) -> String {
    match response_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("chatcmpl-{id}"),
        None => format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
    }
}

/// The answer's text: text parts joined, thought summaries left out, `None`
/// when there is no text at all.
fn joined_text<'a>(parts: &'a [GeminiPart<'a>]) -> Option<Cow<'a, str>> {
    let mut texts = parts
        .iter()
        .filter(|part| part.thought != Some(true))
        .filter_map(|part| part.text.as_deref())
        .filter(|text| !text.is_empty());
    let first = texts.next()?;
    let Some(second) = texts.next() else {
        return Some(Cow::Borrowed(first));
    };
    let mut joined = String::with_capacity(first.len() + second.len());
    joined.push_str(first);
    joined.push_str(second);
    texts.for_each(|text| joined.push_str(text));
    Some(Cow::Owned(joined))
}

/// `functionCall` parts as OpenAI tool calls with ids `call_<n>`, numbered
/// from `first` (a stream numbers across its events).
fn openai_tool_calls<'a>(
    parts: &'a [GeminiPart<'a>],
    first: usize,
    stream: bool,
) -> Vec<OpenAiToolCall<'a>> {
    parts
        .iter()
        .filter_map(|part| {
            Some((
                part.function_call.as_ref()?,
                part.thought_signature.as_deref(),
            ))
        })
        .enumerate()
        .map(|(n, (call, signature))| {
            let index = first.saturating_add(n);
            OpenAiToolCall {
                index: stream.then_some(index),
                id: format!("call_{index}"),
                kind: "function",
                function: OpenAiFunction {
                    name: &call.name,
                    arguments: call.args.map_or("{}", RawValue::get),
                },
                extra_content: signature.map(|signature| ExtraContent {
                    google: Some(GoogleExtra {
                        thought_signature: Some(Cow::Borrowed(signature)),
                    }),
                }),
            }
        })
        .collect()
}

fn finish_reason(reason: Option<&str>, called_functions: bool) -> &'static str {
    match reason {
        Some("MAX_TOKENS") => "length",
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => "content_filter",
        None | Some("STOP") if called_functions => "tool_calls",
        _ => "stop",
    }
}

// ---------------------------------------------------------------------------
// Streams: `streamGenerateContent?alt=sse` events → chat.completion.chunk
// ---------------------------------------------------------------------------

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OpenAiToolCall<'a>>,
}

const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// Translates one Gemini stream into OpenAI chunks. Gemini has no
/// end-of-stream event: the event carrying a `finishReason` ends the answer,
/// so that is when the finish chunk, the usage chunk and `[DONE]` are sent.
pub struct GeminiStream {
    /// Decided by the first event (Gemini's `responseId`), then fixed.
    id: String,
    model: String,
    include_usage: bool,
    created: u64,
    /// The first chunk, which carries `role`, has been sent.
    started: bool,
    tool_calls: usize,
    usage: Option<UsageMetadata>,
    /// `[DONE]` or an error event has been sent; later events are ignored.
    ended: bool,
}

impl GeminiStream {
    pub fn new(model: &str, include_usage: bool, created: u64) -> Self {
        GeminiStream {
            id: String::new(),
            model: model.to_owned(),
            include_usage,
            created,
            started: false,
            tool_calls: 0,
            usage: None,
            ended: false,
        }
    }

    fn on_response(&mut self, response: &GeminiResponse<'_>, out: &mut Vec<Bytes>) {
        if let Some(error) = &response.error {
            out.push(error_event(&openai_error(error, 0)));
            self.ended = true;
            return;
        }
        if self.id.is_empty() {
            self.id = completion_id(response.response_id.as_deref());
        }
        if !self.started {
            if let Some(version) = response.model_version.as_deref().filter(|v| !v.is_empty()) {
                version.clone_into(&mut self.model);
            }
        }
        if let Some(usage) = response.usage_metadata {
            self.usage = Some(usage);
        }
        let Some(candidate) = response.first_candidate() else {
            if response.prompt_blocked() {
                self.finish("content_filter", out);
            }
            return;
        };
        let parts = candidate.parts();
        let content = joined_text(parts);
        let tool_calls = openai_tool_calls(parts, self.tool_calls, true);
        if content.is_some() || !tool_calls.is_empty() {
            let called = tool_calls.len();
            let delta = Delta {
                role: (!self.started).then_some("assistant"),
                content,
                tool_calls,
            };
            out.push(self.chunk_event(delta, None));
            self.started = true;
            self.tool_calls = self.tool_calls.saturating_add(called);
        }
        let reason = candidate
            .finish_reason
            .as_deref()
            .filter(|reason| !reason.is_empty() && *reason != "FINISH_REASON_UNSPECIFIED");
        if let Some(reason) = reason {
            self.finish(finish_reason(Some(reason), self.tool_calls > 0), out);
        }
    }

    fn finish(&mut self, reason: &'static str, out: &mut Vec<Bytes>) {
        let delta = Delta {
            role: (!self.started).then_some("assistant"),
            ..Delta::default()
        };
        out.push(self.chunk_event(delta, Some(reason)));
        self.started = true;
        if self.include_usage {
            if let Some(usage) = self.usage {
                let chunk = ChatChunk::<Delta<'_>>::new(
                    &self.id,
                    self.created,
                    &self.model,
                    &[],
                    Some(ChatUsage::from(usage)),
                );
                out.push(sse_event(&chunk));
            }
        }
        out.push(Bytes::from_static(DONE_EVENT));
        self.ended = true;
    }

    fn chunk_event(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        let choices = [ChunkChoice::first(delta, finish_reason)];
        sse_event(&ChatChunk::new(
            &self.id,
            self.created,
            &self.model,
            &choices,
            None,
        ))
    }

    fn unreadable(&mut self, out: &mut Vec<Bytes>) {
        out.push(error_event(&OpenAiError {
            message: Cow::Borrowed("gemini: unreadable stream event"),
            kind: "server_error",
            code: None,
        }));
        self.ended = true;
    }
}

impl StreamTranslator for GeminiStream {
    fn translate(&mut self, event: &[u8], out: &mut Vec<Bytes>) {
        if self.ended {
            return;
        }
        // Comments, keep-alives and empty events carry nothing.
        let Some(data) = crate::streaming::sse::event_payload(event) else {
            return;
        };
        let data = data.as_ref();
        match serde_json::from_slice::<GeminiResponse<'_>>(data) {
            Ok(response) => self.on_response(&response, out),
            Err(_) => self.unreadable(out),
        }
    }
}

/// `data: {json}\n\n`.
fn sse_event<T: Serialize>(value: &T) -> Bytes {
    let mut event = Vec::with_capacity(256);
    event.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut event, value).is_err() {
        // Unreachable for these types (no maps with non-string keys); an
        // error event keeps the stream well-formed regardless.
        return error_event(&OpenAiError {
            message: Cow::Borrowed("gemini: could not encode a stream chunk"),
            kind: "server_error",
            code: None,
        });
    }
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

fn error_event(error: &OpenAiError<'_>) -> Bytes {
    let body = error_body(&error.message, error.kind, error.code);
    let mut event = Vec::with_capacity(body.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

// ---------------------------------------------------------------------------
// Errors: {"error":{"code","message","status","details"}} → class / OpenAI body
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct ErrorEnvelope<'a> {
    #[serde(borrow)]
    error: GeminiError<'a>,
}

#[derive(Deserialize)]
struct GeminiError<'a> {
    #[serde(borrow, default)]
    code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    details: Option<Vec<ErrorDetail<'a>>>,
}

#[derive(Deserialize)]
struct ErrorDetail<'a> {
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
}

/// Google's canonical error codes that change the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    InvalidArgument,
    FailedPrecondition,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    ResourceExhausted,
    Unavailable,
    Internal,
    DeadlineExceeded,
    Other,
}

impl Status {
    const NAMES: [(&'static str, Status); 9] = [
        ("INVALID_ARGUMENT", Status::InvalidArgument),
        ("FAILED_PRECONDITION", Status::FailedPrecondition),
        ("UNAUTHENTICATED", Status::Unauthenticated),
        ("PERMISSION_DENIED", Status::PermissionDenied),
        ("NOT_FOUND", Status::NotFound),
        ("RESOURCE_EXHAUSTED", Status::ResourceExhausted),
        ("UNAVAILABLE", Status::Unavailable),
        ("INTERNAL", Status::Internal),
        ("DEADLINE_EXCEEDED", Status::DeadlineExceeded),
    ];

    fn parse(name: &str) -> Option<Status> {
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, status)| *status)
    }

    /// The status Google pairs with an HTTP code, for bodies without one.
    fn from_http(code: u16) -> Status {
        match code {
            400 => Status::InvalidArgument,
            401 => Status::Unauthenticated,
            403 => Status::PermissionDenied,
            404 => Status::NotFound,
            429 => Status::ResourceExhausted,
            500 => Status::Internal,
            503 => Status::Unavailable,
            504 => Status::DeadlineExceeded,
            405..=499 => Status::FailedPrecondition,
            _ => Status::Other,
        }
    }

    fn as_str(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, status)| *status == self)
            .map_or("UNKNOWN", |(name, _)| name)
    }
}

impl GeminiError<'_> {
    /// The canonical status: the body's own, else the HTTP status (or the
    /// body's numeric `code` inside a stream, where there is no HTTP status).
    fn status(&self, http_status: u16) -> Status {
        if let Some(status) = self.status.as_deref().and_then(Status::parse) {
            return status;
        }
        let code = match http_status {
            0 => self
                .code
                .and_then(|code| code.get().parse::<u16>().ok())
                .unwrap_or(0),
            status => status,
        };
        Status::from_http(code)
    }

    /// `API_KEY_INVALID` (and its siblings such as `API_KEY_EXPIRED`) comes
    /// as a 400 INVALID_ARGUMENT: only the details tell it is the key.
    fn key_rejected(&self) -> bool {
        self.details.iter().flatten().any(|detail| {
            detail
                .reason
                .as_deref()
                .is_some_and(|reason| reason.starts_with("API_KEY_"))
        })
    }

    /// Whether the message names a resource a request refers to (an
    /// uploaded file, a cached content, a tuned model, a corpus), as in
    /// "You do not have permission to access the File abc or it may not
    /// exist." Key- and project-level denials name the project or API.
    fn names_request_resource(&self) -> bool {
        const RESOURCES: [&str; 6] = [
            "the File ",
            "files/",
            "cachedContents/",
            "CachedContent",
            "tunedModels/",
            "corpora/",
        ];
        self.message
            .as_deref()
            .is_some_and(|m| RESOURCES.iter().any(|r| m.contains(r)))
    }

    /// "The input token count (N) exceeds the maximum number of tokens
    /// allowed (M)."
    fn context_too_long(&self, status: Status) -> bool {
        status == Status::InvalidArgument
            && self.message.as_deref().is_some_and(|message| {
                message.contains("input token count") && message.contains("exceeds the maximum")
            })
    }
}

fn parse_error(body: &[u8]) -> Option<GeminiError<'_>> {
    // Some Gemini endpoints wrap the error object in a one-element array.
    if body.trim_ascii_start().starts_with(b"[") {
        let mut list: Vec<ErrorEnvelope<'_>> = serde_json::from_slice(body).ok()?;
        return (!list.is_empty()).then(|| list.swap_remove(0).error);
    }
    serde_json::from_slice::<ErrorEnvelope<'_>>(body)
        .ok()
        .map(|envelope| envelope.error)
}

/// Refines the status-based class for Gemini's error shapes; `None` = use
/// the status class.
pub fn classify_error(status: u16, body: &[u8]) -> Option<FailureClass> {
    let error = parse_error(body)?;
    let kind = error.status(status);
    if kind == Status::PermissionDenied && !error.key_rejected() && error.names_request_resource() {
        // The request points at something this key cannot see (the
        // client's file or cache): the key is fine, the request is not.
        return Some(FailureClass::ClientError);
    }
    if error.key_rejected() || matches!(kind, Status::Unauthenticated | Status::PermissionDenied) {
        return Some(FailureClass::UpstreamAuth);
    }
    match kind {
        Status::ResourceExhausted => Some(FailureClass::RateLimited),
        Status::Unavailable | Status::Internal | Status::DeadlineExceeded => {
            Some(FailureClass::Transient)
        }
        Status::InvalidArgument if error.context_too_long(kind) => {
            Some(FailureClass::ContextLength)
        }
        _ => None,
    }
}

struct OpenAiError<'a> {
    message: Cow<'a, str>,
    kind: &'static str,
    code: Option<&'static str>,
}

/// OpenAI's `type` and `code` for a Gemini error.
fn openai_kind(
    status: Status,
    key_rejected: bool,
    context_too_long: bool,
) -> (&'static str, Option<&'static str>) {
    if context_too_long {
        return ("invalid_request_error", Some("context_length_exceeded"));
    }
    if key_rejected {
        return ("authentication_error", Some("invalid_api_key"));
    }
    match status {
        Status::InvalidArgument => ("invalid_request_error", Some("invalid_argument")),
        Status::FailedPrecondition => ("invalid_request_error", Some("failed_precondition")),
        Status::Unauthenticated => ("authentication_error", Some("unauthenticated")),
        Status::PermissionDenied => ("permission_error", Some("permission_denied")),
        Status::NotFound => ("not_found_error", Some("not_found")),
        Status::ResourceExhausted => ("rate_limit_error", Some("rate_limit_exceeded")),
        Status::Unavailable => ("server_error", Some("unavailable")),
        Status::Internal => ("server_error", Some("internal")),
        Status::DeadlineExceeded => ("server_error", Some("deadline_exceeded")),
        Status::Other => ("server_error", None),
    }
}

/// `http_status` is 0 inside a stream, where only the body's own `code`
/// and `status` say what failed.
fn openai_error(error: &GeminiError<'_>, http_status: u16) -> OpenAiError<'static> {
    let status = error.status(http_status);
    let (kind, code) = openai_kind(status, error.key_rejected(), error.context_too_long(status));
    let message = match error
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
    {
        Some(message) => format!(
            "gemini: {}",
            super::redact::key_shaped(super::redact::truncate(
                message,
                super::redact::MAX_MESSAGE_BYTES
            ))
        ),
        None if http_status == 0 => format!("gemini: error in stream (status {})", status.as_str()),
        None => generic_message(http_status),
    };
    OpenAiError {
        message: Cow::Owned(message),
        kind,
        code,
    }
}

fn generic_message(status: u16) -> String {
    match http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
    {
        Some(reason) => format!("gemini: upstream error (HTTP {status} {reason})"),
        None => format!("gemini: upstream error (HTTP {status})"),
    }
}

/// Gemini error body → OpenAI error body `{"error":{"message","type","code"}}`.
/// Only Gemini's `message` is kept (prefixed `gemini: `), never its
/// `details`, which can hold debug data; a body that is not a Gemini error
/// gets a message made from the status alone.
pub fn error_to_openai(status: u16, body: &[u8]) -> Vec<u8> {
    let body = match parse_error(body) {
        Some(error) => {
            let error = openai_error(&error, status);
            error_body(&error.message, error.kind, error.code)
        }
        None => {
            let (kind, code) = openai_kind(Status::from_http(status), false, false);
            error_body(&generic_message(status), kind, code)
        }
    };
    Vec::from(body)
}

/// The adapter the gateway dispatches to for `kind = "gemini"`.
pub struct Gemini;

impl super::Provider for Gemini {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn urls(&self, base: &str, model: &str, _api_version: Option<&str>) -> Option<super::Urls> {
        // `path` percent-encodes what a URL path cannot carry.
        if model.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming::sse::{classify_event, EventKind, SseFramer};

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/gemini/",
                $name
            ))
        };
    }

    const CREATED: u64 = 1_700_000_000;

    /// Compares JSON documents; an expected string `"<generated>"` matches
    /// any string (ids the adapter makes up).
    fn assert_json(actual: &[u8], expected: &str, what: &str) {
        let actual: Value = serde_json::from_slice(actual).unwrap_or_else(|e| {
            panic!(
                "{what}: output is not JSON ({e}): {}",
                String::from_utf8_lossy(actual)
            )
        });
        let expected: Value = serde_json::from_str(expected).expect("fixture is JSON");
        if let Err(at) = json_matches(&expected, &actual, "$") {
            panic!("{what}: mismatch at {at}\nexpected: {expected:#}\nactual:   {actual:#}");
        }
    }

    fn json_matches(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
        match (expected, actual) {
            (Value::String(e), Value::String(_)) if e == "<generated>" => Ok(()),
            (Value::Object(e), Value::Object(a)) => {
                for key in e.keys().chain(a.keys()) {
                    let (Some(ev), Some(av)) = (e.get(key), a.get(key)) else {
                        return Err(format!("{at}.{key} (present on one side only)"));
                    };
                    json_matches(ev, av, &format!("{at}.{key}"))?;
                }
                Ok(())
            }
            (Value::Array(e), Value::Array(a)) if e.len() == a.len() => e
                .iter()
                .zip(a)
                .enumerate()
                .try_for_each(|(i, (ev, av))| json_matches(ev, av, &format!("{at}[{i}]"))),
            _ if expected == actual => Ok(()),
            _ => Err(at.to_owned()),
        }
    }

    fn request(body: &str) -> Result<Value, Unsupported> {
        translate_request(body.as_bytes())
            .map(|out| serde_json::from_slice(&out).expect("output is JSON"))
    }

    fn run_stream(input: &str, model: &str, include_usage: bool) -> Vec<Bytes> {
        let mut framer = SseFramer::new();
        framer.push(Bytes::copy_from_slice(input.as_bytes()));
        let mut stream = GeminiStream::new(model, include_usage, CREATED);
        let mut out = Vec::new();
        while let Some(event) = framer.next_event() {
            stream.translate(&event, &mut out);
        }
        assert_eq!(
            framer.pending_len(),
            0,
            "fixture ends with a complete event"
        );
        out
    }

    /// Each output element must be exactly one `data: …\n\n` event.
    fn event_data(event: &Bytes) -> &str {
        let text = std::str::from_utf8(event).expect("utf-8 event");
        let data = text
            .strip_prefix("data: ")
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("not one SSE data event: {text:?}"));
        assert!(!data.contains('\n'), "event data spans lines: {text:?}");
        data
    }

    fn assert_stream(out: &[Bytes], expected: &str, what: &str) {
        let expected: Vec<&str> = expected
            .split("\n\n")
            .map(str::trim)
            .filter(|event| !event.is_empty())
            .collect();
        assert_eq!(
            out.len(),
            expected.len(),
            "{what}: event count; got {out:#?}"
        );
        for (i, (actual, expected)) in out.iter().zip(expected).enumerate() {
            let data = event_data(actual);
            let expected = expected.strip_prefix("data: ").expect("fixture event");
            if expected == "[DONE]" {
                assert_eq!(data, "[DONE]", "{what}: event {i}");
            } else {
                assert_json(data.as_bytes(), expected, &format!("{what}: event {i}"));
            }
        }
    }

    #[test]
    fn paths() {
        assert_eq!(
            path("gemini-2.5-flash", false),
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            path("models/gemini-2.5-flash", true),
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            path("a b/é?", false),
            "/v1beta/models/a%20b%2F%C3%A9%3F:generateContent"
        );
    }

    #[test]
    fn request_fixtures() {
        let cases = [
            (
                "conversation",
                fixture!("request_conversation.openai.json"),
                fixture!("request_conversation.gemini.json"),
            ),
            (
                "images",
                fixture!("request_images.openai.json"),
                fixture!("request_images.gemini.json"),
            ),
            (
                "tools",
                fixture!("request_tools.openai.json"),
                fixture!("request_tools.gemini.json"),
            ),
            (
                "tool results",
                fixture!("request_tool_results.openai.json"),
                fixture!("request_tool_results.gemini.json"),
            ),
            (
                "json schema",
                fixture!("request_json_schema.openai.json"),
                fixture!("request_json_schema.gemini.json"),
            ),
        ];
        for (what, openai, gemini) in cases {
            let out =
                translate_request(openai.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_json(&out, gemini, what);
        }
    }

    #[test]
    fn request_small_mappings() {
        let json_object = request(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"},"max_tokens":9,"stop":["a","b"]}"#).unwrap();
        assert_eq!(
            json_object["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert_eq!(json_object["generationConfig"]["maxOutputTokens"], 9);
        assert_eq!(
            json_object["generationConfig"]["stopSequences"],
            serde_json::json!(["a", "b"])
        );
        let tools = r#"[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"x":{"type":"string"}}}}}]"#;
        for (choice, mode) in [
            (r#""auto""#, "AUTO"),
            (r#""none""#, "NONE"),
            (r#""required""#, "ANY"),
        ] {
            let out = request(&format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":{tools},"tool_choice":{choice}}}"#)).unwrap();
            assert_eq!(
                out["toolConfig"]["functionCallingConfig"]["mode"], mode,
                "{choice}"
            );
            assert!(out["toolConfig"]["functionCallingConfig"]
                .get("allowedFunctionNames")
                .is_none());
        }
        // Without tools, `auto`/`none` need no config at all.
        let out = request(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"tool_choice":"auto","tools":null}"#).unwrap();
        assert!(out.get("toolConfig").is_none() && out.get("tools").is_none());
        // Arguments with surrounding whitespace are still an object; an
        // empty stop list asks for nothing.
        let out = request(r#"{"model":"m","stop":[],"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"  {\"a\": 1} "}}]}]}"#).unwrap();
        assert_eq!(
            out["contents"][1]["parts"][0]["functionCall"]["args"],
            serde_json::json!({"a": 1})
        );
        assert!(out.get("generationConfig").is_none());
        // A plain request has nothing but contents.
        let out = request(r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"contents":[{"role":"user","parts":[{"text":"hi"}]}]})
        );
    }

    #[test]
    fn unsupported_fields_are_named() {
        const USER: &str = r#"{"role":"user","content":"hi"}"#;
        let with = |extra: &str| format!(r#"{{"model":"m","messages":[{USER}],{extra}}}"#);
        let messages = |list: &str| format!(r#"{{"model":"m","messages":[{list}]}}"#);
        let call = |args: &str| {
            format!(
                r#"{USER},{{"role":"assistant","tool_calls":[{{"id":"c1","type":"function","function":{{"name":"f","arguments":{args}}}}}]}}"#
            )
        };
        let tool_schema = |schema: &str| {
            with(&format!(
                r#""tools":[{{"type":"function","function":{{"name":"f","parameters":{schema}}}}}]"#
            ))
        };
        let cases: Vec<(String, &str, &str)> = vec![
            (with(r#""logprobs":true"#), "logprobs", "log probabilities"),
            (
                with(r#""top_logprobs":3"#),
                "top_logprobs",
                "log probabilities",
            ),
            (
                with(r#""logit_bias":{"50256":-100}"#),
                "logit_bias",
                "no Gemini equivalent",
            ),
            (
                with(r#""audio":{"voice":"alloy","format":"wav"}"#),
                "audio",
                "audio",
            ),
            (
                with(r#""modalities":["text","audio"]"#),
                "modalities",
                "other than text",
            ),
            (with(r#""functions":[{"name":"f"}]"#), "functions", "legacy"),
            (with(r#""function_call":"auto""#), "function_call", "legacy"),
            (
                with(r#""parallel_tool_calls":false"#),
                "parallel_tool_calls",
                "cannot be false",
            ),
            (
                with(r#""reasoning_effort":"high""#),
                "reasoning_effort",
                "not a field",
            ),
            (with(r#""n":2"#), "n", "first choice"),
            (with(r#""n":0"#), "n", "at least 1"),
            (with(r#""seed":1099511627776"#), "seed", "32 bits"),
            (
                with(r#""tool_choice":"required""#),
                "tool_choice",
                "no tools",
            ),
            (
                with(r#""response_format":{"type":"grammar"}"#),
                "response_format.type",
                "`grammar`",
            ),
            (
                with(r#""response_format":{"type":"json_schema","json_schema":{"name":"x"}}"#),
                "response_format.json_schema.schema",
                "required",
            ),
            (
                with(r#""temperature":"hot""#),
                "temperature",
                "is not valid",
            ),
            (
                r#"{"model":"m","messages":{"role":"user"}}"#.to_owned(),
                "messages",
                "is not valid",
            ),
            (
                messages(r#"{"role":"system","content":"only rules"}"#),
                "messages",
                "at least one",
            ),
            (
                messages(
                    r#"{"role":"user","content":[{"type":"text","text":"listen"},{"type":"input_audio","input_audio":{"data":"AAA=","format":"wav"}}]}"#,
                ),
                "messages[0].content[1].type",
                "input_audio",
            ),
            (
                messages(
                    r#"{"role":"user","content":[{"type":"file","file":{"file_id":"file-1"}}]}"#,
                ),
                "messages[0].content[0].type",
                "`file`",
            ),
            (
                messages(
                    r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/anim.gif"}}]}"#,
                ),
                "messages[0].content[0].image_url.url",
                "extension",
            ),
            (
                messages(
                    r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/"}}]}"#,
                ),
                "messages[0].content[0].image_url.url",
                "extension",
            ),
            (
                messages(
                    r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,rawbytes"}}]}"#,
                ),
                "messages[0].content[0].image_url.url",
                "base64",
            ),
            (
                messages(
                    r#"{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://example.com/a.png"}}]}"#,
                ),
                "messages[0].content[0].image_url.url",
                "http(s)",
            ),
            (
                messages(
                    r#"{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]},{"role":"user","content":"hi"}"#,
                ),
                "messages[0].content[0].type",
                "text only",
            ),
            (
                messages(&call(r#""{\"city\": \"Par""#)),
                "messages[1].tool_calls[0].function.arguments",
                "JSON object",
            ),
            (
                messages(&call(r#""[1, 2]""#)),
                "messages[1].tool_calls[0].function.arguments",
                "JSON object",
            ),
            (
                messages(&format!(
                    r#"{},{{"role":"tool","tool_call_id":"c2","content":"x"}}"#,
                    call(r#""{}""#)
                )),
                "messages[2].tool_call_id",
                "function's name",
            ),
            (
                messages(&format!(r#"{USER},{{"role":"tool","content":"x"}}"#)),
                "messages[1].tool_call_id",
                "required",
            ),
            (
                messages(&format!(
                    r#"{USER},{{"role":"function","name":"f","content":"x"}}"#
                )),
                "messages[1].role",
                "legacy",
            ),
            (
                messages(&format!(
                    r#"{USER},{{"role":"assistant","content":null,"function_call":{{"name":"f","arguments":"{{}}"}}}}"#
                )),
                "messages[1].function_call",
                "legacy",
            ),
            (
                messages(&format!(
                    r#"{USER},{{"role":"assistant","tool_calls":[{{"id":"c","type":"custom","function":{{"name":"f"}}}}]}}"#
                )),
                "messages[1].tool_calls[0].type",
                "`custom`",
            ),
            (
                messages(r#"{"role":"user","content":"hi","tool_calls":[]}"#),
                "messages[0].tool_calls",
                "assistant",
            ),
            (
                messages(r#"{"role":"critic","content":"hi"}"#),
                "messages[0].role",
                "`critic`",
            ),
            (
                with(r#""tools":[{"type":"web_search"}]"#),
                "tools[0].type",
                "`web_search`",
            ),
            (
                tool_schema(r##"{"type":"object","properties":{"child":{"$ref":"#"}}}"##),
                "tools[0].function.parameters.properties.child.$ref",
                "recursive",
            ),
            (
                tool_schema(
                    r##"{"type":"object","$defs":{"N":{"type":"object","properties":{"next":{"$ref":"#/$defs/N"}}}},"properties":{"head":{"$ref":"#/$defs/N"}}}"##,
                ),
                "tools[0].function.parameters.properties.head.$ref.properties.next.$ref",
                "recursive",
            ),
            (
                tool_schema(r##"{"type":"object","properties":{"x":{"$ref":"#/$defs/Missing"}}}"##),
                "tools[0].function.parameters.properties.x.$ref",
                "reference",
            ),
            (
                tool_schema(
                    r#"{"type":"object","properties":{"x":{"type":["string","integer"]}}}"#,
                ),
                "tools[0].function.parameters.properties.x.type",
                "several types",
            ),
            (
                tool_schema(r#"{"type":"object","properties":{"x":{"type":"date"}}}"#),
                "tools[0].function.parameters.properties.x.type",
                "not a JSON Schema type",
            ),
            (
                tool_schema(
                    r#"{"type":"object","properties":{"x":{"allOf":[{"type":"string"},{"minLength":2}]}}}"#,
                ),
                "tools[0].function.parameters.properties.x.allOf",
                "allOf",
            ),
            (
                tool_schema(
                    r#"{"type":"object","properties":{"x":{"type":"array","items":[{"type":"string"}]}}}"#,
                ),
                "tools[0].function.parameters.properties.x.items",
                "tuple",
            ),
            (
                tool_schema(r#"{"type":"object","properties":{"x":3}}"#),
                "tools[0].function.parameters.properties.x",
                "not a JSON schema",
            ),
        ];
        for (body, field, reason) in cases {
            let error = translate_request(body.as_bytes()).expect_err(&body);
            assert_eq!(error.provider, "gemini", "{body}");
            assert_eq!(error.field, field, "{body}: {error}");
            assert!(
                error.reason.contains(reason),
                "{body}: reason {:?} lacks {reason:?}",
                error.reason
            );
        }
    }

    #[test]
    fn hostile_schemas_are_bounded() {
        // Each definition references the next twice: 2^20 nodes if expanded.
        let mut defs = Vec::new();
        for i in 0..20 {
            defs.push(format!(
                r##""D{i}":{{"type":"object","properties":{{"a":{{"$ref":"#/$defs/D{n}"}},"b":{{"$ref":"#/$defs/D{n}"}}}}}}"##,
                n = i + 1
            ));
        }
        defs.push(r#""D20":{"type":"string"}"#.to_owned());
        let body = format!(
            r##"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object","$defs":{{{}}},"properties":{{"x":{{"$ref":"#/$defs/D0"}}}}}}}}}}]}}"##,
            defs.join(",")
        );
        let error = translate_request(body.as_bytes()).expect_err("explodes");
        assert!(error.reason.contains("more than"), "{error}");
        // A chain of distinct references deeper than the limit.
        let mut defs = Vec::new();
        for i in 0..200 {
            defs.push(format!(r##""D{i}":{{"$ref":"#/$defs/D{}"}}"##, i + 1));
        }
        defs.push(r#""D200":{"type":"string"}"#.to_owned());
        let body = format!(
            r##"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],"tools":[{{"type":"function","function":{{"name":"f","parameters":{{"type":"object","$defs":{{{}}},"properties":{{"x":{{"$ref":"#/$defs/D0"}}}}}}}}}}]}}"##,
            defs.join(",")
        );
        let error = translate_request(body.as_bytes()).expect_err("too deep");
        assert!(error.reason.contains("deeper"), "{error}");
    }

    #[test]
    fn response_fixtures() {
        let cases = [
            (
                "text",
                fixture!("response_text.gemini.json"),
                fixture!("response_text.openai.json"),
            ),
            (
                "tool calls",
                fixture!("response_tool_calls.gemini.json"),
                fixture!("response_tool_calls.openai.json"),
            ),
            (
                "blocked prompt",
                fixture!("response_blocked.gemini.json"),
                fixture!("response_blocked.openai.json"),
            ),
        ];
        for (what, gemini, openai) in cases {
            let out = translate_response(gemini.as_bytes(), "gemini-target", CREATED)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_json(&out, openai, what);
            // The gateway's usage accounting reads the translated body.
            assert!(
                crate::api::find_usage(&out).is_some_and(|u| u.prompt_tokens > 0),
                "{what}"
            );
        }
    }

    #[test]
    fn finish_reasons() {
        let cases = [
            ("STOP", false, "stop"),
            ("STOP", true, "tool_calls"),
            ("MAX_TOKENS", false, "length"),
            ("MAX_TOKENS", true, "length"),
            ("SAFETY", false, "content_filter"),
            ("RECITATION", false, "content_filter"),
            ("BLOCKLIST", false, "content_filter"),
            ("PROHIBITED_CONTENT", false, "content_filter"),
            ("SPII", false, "content_filter"),
            ("IMAGE_SAFETY", false, "content_filter"),
            ("MALFORMED_FUNCTION_CALL", false, "stop"),
            ("OTHER", false, "stop"),
            ("LANGUAGE", false, "stop"),
        ];
        for (reason, call, expected) in cases {
            let part = if call {
                r#"{"functionCall":{"name":"f","args":{}}}"#
            } else {
                r#"{"text":"partial"}"#
            };
            let body = format!(
                r#"{{"candidates":[{{"content":{{"parts":[{part}],"role":"model"}},"finishReason":"{reason}","index":0}}]}}"#
            );
            let out: Value =
                serde_json::from_slice(&translate_response(body.as_bytes(), "m", CREATED).unwrap())
                    .unwrap();
            assert_eq!(
                out["choices"][0]["finish_reason"], expected,
                "{reason} call={call}"
            );
        }
        // A candidate stopped for safety before any text has null content.
        let out: Value = serde_json::from_slice(
            &translate_response(
                br#"{"candidates":[{"finishReason":"SAFETY","index":0}]}"#,
                "m",
                CREATED,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(out["choices"][0]["finish_reason"], "content_filter");
        assert!(out.get("usage").is_none(), "no usage is invented");
        assert_eq!(out["model"], "m");
        assert_eq!(out["created"], CREATED);
    }

    #[test]
    fn response_errors() {
        assert_eq!(
            translate_response(br#"{"usageMetadata":{"promptTokenCount":1}}"#, "m", CREATED),
            Err(TranslateError::NoCandidate)
        );
        assert_eq!(
            translate_response(
                br#"{"error":{"code":500,"message":"boom","status":"INTERNAL"}}"#,
                "m",
                CREATED
            ),
            Err(TranslateError::ErrorObject { status: "INTERNAL" })
        );
        let secret = br#"{"candidates":"AIzaSySecretSecretSecretSecretSecret123"}"#;
        let error = translate_response(secret, "m", CREATED).expect_err("wrong shape");
        assert!(
            matches!(error, TranslateError::Malformed { kind: "data", .. }),
            "{error:?}"
        );
        assert!(
            !error.to_string().contains("AIza"),
            "the body is never quoted: {error}"
        );
        assert!(matches!(
            translate_response(b"<html>", "m", CREATED),
            Err(TranslateError::Malformed { kind: "syntax", .. })
        ));
    }

    #[test]
    fn stream_fixtures() {
        let text = run_stream(fixture!("stream_text.gemini.sse"), "gemini-target", true);
        assert_stream(&text, fixture!("stream_text.openai.sse"), "text");
        let calls = run_stream(
            fixture!("stream_function_call.gemini.sse"),
            "gemini-target",
            false,
        );
        assert_stream(
            &calls,
            fixture!("stream_function_call.openai.sse"),
            "function call",
        );
        let error = run_stream(fixture!("stream_error.gemini.sse"), "gemini-target", true);
        assert_stream(&error, fixture!("stream_error.openai.sse"), "error");
    }

    #[test]
    fn stream_events_mean_what_the_relay_expects() {
        let text = run_stream(fixture!("stream_text.gemini.sse"), "gemini-target", true);
        let kinds: Vec<EventKind> = text.iter().map(|event| classify_event(event)).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Content { finished: false },
                EventKind::Content { finished: false },
                EventKind::Content { finished: false },
                EventKind::Content { finished: true },
                EventKind::Other,
                EventKind::Done,
            ]
        );
        let usage = crate::streaming::sse::event_data(&text[4])
            .and_then(|data| crate::api::find_usage(&data));
        assert_eq!(
            usage,
            Some(crate::api::Usage {
                prompt_tokens: 9,
                completion_tokens: 21
            })
        );
        let error = run_stream(fixture!("stream_error.gemini.sse"), "gemini-target", true);
        assert!(
            matches!(classify_event(&error[1]), EventKind::Error { kind, .. } if kind == "server_error")
        );
        let id = |event: &Bytes| -> Value {
            serde_json::from_str::<Value>(event_data(event)).unwrap()["id"].clone()
        };
        let calls = run_stream(
            fixture!("stream_function_call.gemini.sse"),
            "gemini-target",
            false,
        );
        assert!(
            calls[..3].iter().all(|event| id(event) == "chatcmpl-fc-1"),
            "one id per stream"
        );
    }

    #[test]
    fn stream_without_response_id_keeps_one_generated_id() {
        let input = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"index\":0}]}\n\n\
                     : keep-alive\n\n\
                     data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}]},\"finishReason\":\"MAX_TOKENS\",\"index\":0}]}\n\n\
                     data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"late\"}]},\"index\":0}]}\n\n";
        let out = run_stream(input, "gemini-target", true);
        // No usage was reported, so none is invented; nothing after the end.
        assert_eq!(out.len(), 3, "{out:#?}");
        let first: Value = serde_json::from_str(event_data(&out[0])).unwrap();
        let finish: Value = serde_json::from_str(event_data(&out[1])).unwrap();
        assert!(first["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-") && id.len() > 9));
        assert_eq!(first["id"], finish["id"]);
        assert_eq!(first["model"], "gemini-target");
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
        assert_eq!(event_data(&out[2]), "[DONE]");
    }

    #[test]
    fn stream_blocked_prompt_and_error_statuses() {
        let blocked = "data: {\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"},\"usageMetadata\":{\"promptTokenCount\":4,\"totalTokenCount\":4},\"responseId\":\"b\"}\n\n";
        let out = run_stream(blocked, "m", true);
        assert_eq!(out.len(), 3);
        let finish: Value = serde_json::from_str(event_data(&out[0])).unwrap();
        assert_eq!(
            finish["choices"][0]["delta"],
            serde_json::json!({"role": "assistant"})
        );
        assert_eq!(finish["choices"][0]["finish_reason"], "content_filter");
        let usage: Value = serde_json::from_str(event_data(&out[1])).unwrap();
        assert_eq!(usage["usage"]["prompt_tokens"], 4);
        assert_eq!(usage["choices"], serde_json::json!([]));

        let cases = [
            (
                r#"{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}"#,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            (
                r#"{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}"#,
                "server_error",
                Some("internal"),
            ),
            (
                r#"{"code":504,"message":"Deadline expired before operation could complete.","status":"DEADLINE_EXCEEDED"}"#,
                "server_error",
                Some("deadline_exceeded"),
            ),
            (
                r#"{"code":400,"message":"Request contains an invalid argument.","status":"INVALID_ARGUMENT"}"#,
                "invalid_request_error",
                Some("invalid_argument"),
            ),
            (
                r#"{"code":429}"#,
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            ),
            (r#"{"message":"odd"}"#, "server_error", None),
        ];
        for (error, kind, code) in cases {
            let out = run_stream(&format!("data: {{\"error\":{error}}}\n\n"), "m", true);
            assert_eq!(out.len(), 1, "{error}");
            let event: Value = serde_json::from_str(event_data(&out[0])).unwrap();
            assert_eq!(event["error"]["type"], kind, "{error}");
            assert_eq!(
                event["error"]["code"],
                code.map_or(Value::Null, Value::from),
                "{error}"
            );
            assert!(
                event["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("gemini: ")),
                "{error}"
            );
        }
    }

    #[test]
    fn stream_garbage_is_an_error_event() {
        for garbage in [
            "data: not json\n\n",
            "data: {\"candidates\":7}\n\n",
            "data: [1,\n\n",
            "data: \u{1F600}\n\n",
        ] {
            let out = run_stream(garbage, "m", true);
            assert_eq!(out.len(), 1, "{garbage:?}");
            let event: Value = serde_json::from_str(event_data(&out[0])).unwrap();
            assert_eq!(event["error"]["type"], "server_error");
            assert!(
                !event_data(&out[0]).contains("not json"),
                "garbage is never echoed"
            );
        }
        // Comments, empty data and non-data fields are not events to translate.
        assert!(run_stream(": ping\n\nevent: x\n\ndata:\n\n", "m", true).is_empty());
    }

    #[test]
    fn error_fixtures() {
        let cases = [
            (
                "context length",
                400,
                fixture!("error_context_length.gemini.json"),
                fixture!("error_context_length.openai.json"),
                Some(FailureClass::ContextLength),
            ),
            (
                "api key",
                400,
                fixture!("error_api_key_invalid.gemini.json"),
                fixture!("error_api_key_invalid.openai.json"),
                Some(FailureClass::UpstreamAuth),
            ),
            (
                "rate limit",
                429,
                fixture!("error_rate_limit.gemini.json"),
                fixture!("error_rate_limit.openai.json"),
                Some(FailureClass::RateLimited),
            ),
            (
                "unavailable",
                503,
                fixture!("error_unavailable.gemini.json"),
                fixture!("error_unavailable.openai.json"),
                Some(FailureClass::Transient),
            ),
        ];
        for (what, status, gemini, openai, class) in cases {
            assert_eq!(classify_error(status, gemini.as_bytes()), class, "{what}");
            let out = error_to_openai(status, gemini.as_bytes());
            assert_json(&out, openai, what);
            assert!(
                !String::from_utf8_lossy(&out).contains("AIza"),
                "{what}: no key-shaped text"
            );
        }
    }

    #[test]
    fn error_mappings() {
        let body = |status: &str, message: &str| {
            format!(r#"{{"error":{{"code":0,"message":"{message}","status":"{status}"}}}}"#)
        };
        let cases = [
            (
                403,
                body(
                    "PERMISSION_DENIED",
                    "Permission denied on resource project x.",
                ),
                "permission_error",
                Some(FailureClass::UpstreamAuth),
            ),
            (
                403,
                body(
                    "PERMISSION_DENIED",
                    "You do not have permission to access the File abc123 or it may not exist.",
                ),
                "permission_error",
                Some(FailureClass::ClientError),
            ),
            (
                403,
                body(
                    "PERMISSION_DENIED",
                    "CachedContent not found (or permission denied)",
                ),
                "permission_error",
                Some(FailureClass::ClientError),
            ),
            (
                401,
                body(
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                ),
                "authentication_error",
                Some(FailureClass::UpstreamAuth),
            ),
            (
                400,
                body("PERMISSION_DENIED", "odd but seen"),
                "permission_error",
                Some(FailureClass::UpstreamAuth),
            ),
            (
                404,
                body(
                    "NOT_FOUND",
                    "models/gemini-9 is not found for API version v1beta",
                ),
                "not_found_error",
                None,
            ),
            (
                400,
                body(
                    "FAILED_PRECONDITION",
                    "User location is not supported for the API use.",
                ),
                "invalid_request_error",
                None,
            ),
            (
                400,
                body("INVALID_ARGUMENT", "Invalid JSON payload received."),
                "invalid_request_error",
                None,
            ),
            (
                500,
                body("INTERNAL", "An internal error has occurred."),
                "server_error",
                Some(FailureClass::Transient),
            ),
            (
                504,
                body("DEADLINE_EXCEEDED", "Deadline expired."),
                "server_error",
                Some(FailureClass::Transient),
            ),
            (
                499,
                body("CANCELLED", "The operation was cancelled."),
                "invalid_request_error",
                None,
            ),
            (
                503,
                r#"{"error":{"code":503,"message":"Service busy"}}"#.to_owned(),
                "server_error",
                Some(FailureClass::Transient),
            ),
        ];
        for (status, body, kind, class) in cases {
            assert_eq!(classify_error(status, body.as_bytes()), class, "{body}");
            let out: Value =
                serde_json::from_slice(&error_to_openai(status, body.as_bytes())).unwrap();
            assert_eq!(out["error"]["type"], kind, "{body}");
            assert!(
                out["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("gemini: ")),
                "{body}"
            );
        }
        // The context-length wording only counts as such for INVALID_ARGUMENT.
        let wording = "The input token count (9) exceeds the maximum number of tokens allowed (8).";
        assert_eq!(
            classify_error(500, body("INTERNAL", wording).as_bytes()),
            Some(FailureClass::Transient)
        );
    }

    #[test]
    fn unreadable_error_bodies_get_a_generic_message() {
        for (status, body, kind) in [
            (
                502,
                &b"<html><body>AIzaSyLeakedLeakedLeakedLeakedLeaked12 Bad Gateway</body></html>"[..],
                "server_error",
            ),
            (429, b"", "rate_limit_error"),
            (
                400,
                b"{\"error\":\"just a string\"}",
                "invalid_request_error",
            ),
            (418, b"\xff\xfe", "invalid_request_error"),
            (999, b"[]", "server_error"),
        ] {
            assert_eq!(classify_error(status, body), None);
            let out = error_to_openai(status, body);
            let text = String::from_utf8_lossy(&out);
            assert!(
                !text.contains("html") && !text.contains("AIza") && !text.contains("just a string"),
                "{text}"
            );
            let out: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(out["error"]["type"], kind, "{status}");
            assert!(
                out["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("gemini: upstream error (HTTP ")),
                "{text}"
            );
        }
        let out: Value = serde_json::from_slice(&error_to_openai(502, b"")).unwrap();
        assert_eq!(
            out["error"]["message"],
            "gemini: upstream error (HTTP 502 Bad Gateway)"
        );
    }

    #[test]
    fn key_shaped_text_is_redacted_from_messages() {
        let body = r#"{"error":{"code":400,"message":"Key AIzaSyAbCdEfGhIjKlMnOpQrStUvWxYz0123456, rejected; also AIza.","status":"INVALID_ARGUMENT"}}"#;
        let out: Value = serde_json::from_slice(&error_to_openai(400, body.as_bytes())).unwrap();
        assert_eq!(
            out["error"]["message"],
            "gemini: Key [redacted], rejected; also [redacted]."
        );
    }

    /// Truncations of every fixture and assorted junk through every entry
    /// point: errors are fine, panics are not.
    #[test]
    fn no_input_panics() {
        let fixtures = [
            fixture!("request_conversation.openai.json"),
            fixture!("request_images.openai.json"),
            fixture!("request_tools.openai.json"),
            fixture!("request_tool_results.openai.json"),
            fixture!("request_json_schema.openai.json"),
            fixture!("response_text.gemini.json"),
            fixture!("response_tool_calls.gemini.json"),
            fixture!("response_blocked.gemini.json"),
            fixture!("error_api_key_invalid.gemini.json"),
            fixture!("error_context_length.gemini.json"),
            fixture!("stream_text.gemini.sse"),
            fixture!("stream_function_call.gemini.sse"),
        ];
        let junk: [&[u8]; 12] = [
            b"",
            b"null",
            b"[]",
            b"{}",
            b"\xff",
            b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:"}}]}]}"#,
            br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://\u00e9.png"}}]}]}"#,
            br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":[1]}}]},"index":4294967295}]}"#,
            br#"{"candidates":[],"usageMetadata":{"promptTokenCount":18446744073709551615,"candidatesTokenCount":18446744073709551615,"thoughtsTokenCount":1}}"#,
            br#"{"error":{"code":"x","details":[{"reason":7}]}}"#,
            br#"[{"error":null}]"#,
        ];
        let mut inputs: Vec<&[u8]> = junk.to_vec();
        for fixture in fixtures {
            let bytes = fixture.as_bytes();
            inputs.extend(
                (0..bytes.len())
                    .step_by(3)
                    .filter_map(|end| bytes.get(..end)),
            );
        }
        for input in inputs {
            let _ = translate_request(input);
            let _ = translate_response(input, "m", CREATED);
            let _ = classify_error(400, input);
            let error: Value = serde_json::from_slice(&error_to_openai(400, input))
                .expect("always a JSON error body");
            assert!(error["error"]["message"].is_string());
            let mut event = b"data: ".to_vec();
            event.extend_from_slice(input);
            event.extend_from_slice(b"\n\n");
            let mut out = Vec::new();
            GeminiStream::new("m", true, CREATED).translate(&event, &mut out);
            for event in &out {
                assert!(event.starts_with(b"data: ") && event.ends_with(b"\n\n"));
            }
        }
        // Saturating usage arithmetic: the sums do not overflow.
        let out = translate_response(
            br#"{"candidates":[{"index":0}],"usageMetadata":{"promptTokenCount":18446744073709551615,"candidatesTokenCount":18446744073709551615,"thoughtsTokenCount":1}}"#,
            "m",
            CREATED,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap()["usage"]["total_tokens"],
            u64::MAX
        );
    }
}
