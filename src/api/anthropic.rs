//! Anthropic's Messages API as an inbound protocol (`POST /v1/messages`):
//! translation of Anthropic requests into OpenAI chat requests (the
//! gateway's canonical form) and of OpenAI responses, streams and errors
//! back into Anthropic's shapes.
//!
//! Pure functions over bytes: no I/O, no config, no headers (so no keys).
//! Routing, retries and status codes are the caller's; this module only
//! says what a body means in the other protocol, and refuses (with an
//! [`InboundError`] naming the JSON path) whatever OpenAI cannot express
//! rather than dropping it.
//!
//! Decisions a reader of either protocol would otherwise have to guess:
//! - `cache_control` (anywhere) is ignored: it is a caching hint, not content,
//!   and OpenAI-compatible upstreams cache prefixes on their own.
//! - `thinking: {"type": "disabled"}` is accepted (it asks for nothing);
//!   enabled thinking, `top_k`, `document` blocks, server tools and every
//!   field not listed in [`request_to_openai`] are refused.
//! - Content with one text block becomes a plain string; several blocks (or
//!   any image) become an array of OpenAI content parts, one per block, so no
//!   separator is invented between them.
//! - A `tool_result` with `is_error: true` is sent as a `tool` message whose
//!   text starts with [`TOOL_ERROR_PREFIX`]: OpenAI tool messages have no
//!   error flag, and the model must still learn that the tool failed.
//! - Tool call ids are kept as they are in both directions, so the id a
//!   client echoes back in `tool_result.tool_use_id` is the upstream's own.
//! - `stop_sequence` is always `null` and `finish_reason: "stop"` becomes
//!   `end_turn`: OpenAI does not say whether a stop sequence ended the answer.
//!   An answer with tool calls gets `tool_use` whatever its finish reason,
//!   since Anthropic clients loop on exactly that.
//! - Tool call arguments that are not a JSON object become
//!   `{"_raw": "<arguments as sent>"}` (empty arguments become `{}`): the
//!   client still sees what the model produced, where failing the whole
//!   answer would hide it.
//! - Streams: `message_start` reports zero tokens (OpenAI reports usage only
//!   at the end); the real `input_tokens` and `output_tokens` arrive in
//!   `message_delta`, which the Anthropic SDKs apply to the final message.
//!   Reasoning deltas are not forwarded: the client did not ask for thinking.

use crate::api::path::Path;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A client request the gateway cannot translate; rendered in Anthropic's
/// error shape with status 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InboundError {
    pub message: String,
}

impl InboundError {
    fn new(message: impl Into<String>) -> Self {
        InboundError {
            message: message.into(),
        }
    }

    fn required(at: &Path<'_>) -> Self {
        Self::new(format!("`{}` is required", at.field()))
    }

    fn invalid(at: &Path<'_>, expected: &str) -> Self {
        Self::new(format!("`{}` must be {expected}", at.field()))
    }

    fn unsupported(at: &Path<'_>) -> Self {
        Self::new(format!(
            "`{}` is not supported: the gateway cannot express it to its upstreams",
            at.field()
        ))
    }

    fn unsupported_block(at: &Path<'_>, kind: &str) -> Self {
        Self::new(format!(
            "`{}` `{kind}` is not supported: the gateway cannot express it to its upstreams",
            at.key("type").field()
        ))
    }
}

/// Starts the text of a `tool` message translated from a `tool_result` with
/// `is_error: true`.
pub const TOOL_ERROR_PREFIX: &str = "Error: ";

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// Anthropic Messages request -> OpenAI chat request. `model` is kept (it
/// names a gateway route).
///
/// Translated: `model`, `max_tokens` (required), `system`, `messages` (text,
/// image, `tool_use`, `tool_result` blocks), `stop_sequences` -> `stop`,
/// `temperature`, `top_p`, `tools`, `tool_choice`, `metadata.user_id` ->
/// `user`, `stream` (with `stream_options.include_usage`, so usage can be
/// reported in `message_delta`). Ignored: `cache_control`, disabled
/// `thinking`. Anything else is an [`InboundError`] naming the field.
pub fn request_to_openai(anthropic: &[u8]) -> Result<Vec<u8>, InboundError> {
    let request: Value = serde_json::from_slice(anthropic)
        .map_err(|e| InboundError::new(format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(fields) = request else {
        return Err(InboundError::new("the request body must be a JSON object"));
    };

    let root = Path::ROOT;
    let mut out = Map::new();
    let mut model = None;
    let mut max_tokens = None;
    let mut system = None;
    let mut turns = None;
    for (key, value) in fields {
        // An explicit null means "not given" for every optional field.
        if value.is_null() && !matches!(key.as_str(), "model" | "max_tokens" | "messages") {
            continue;
        }
        match key.as_str() {
            "model" => match value {
                Value::String(name) if !name.is_empty() => model = Some(name),
                _ => {
                    return Err(InboundError::invalid(
                        &root.key("model"),
                        "a non-empty string",
                    ))
                }
            },
            "max_tokens" => match value.as_u64() {
                Some(n) if n > 0 => max_tokens = Some(n),
                _ => {
                    return Err(InboundError::invalid(
                        &root.key("max_tokens"),
                        "a positive integer",
                    ))
                }
            },
            "messages" => turns = Some(value),
            "system" => system = Some(system_message(value)?),
            "stop_sequences" => {
                let stops = string_array(value, &root.key("stop_sequences"))?;
                if !stops.is_empty() {
                    out.insert("stop".into(), Value::Array(stops));
                }
            }
            "temperature" | "top_p" => {
                if !value.is_number() {
                    return Err(InboundError::invalid(&root.key(&key), "a number"));
                }
                out.insert(key, value);
            }
            "top_k" => {
                return Err(InboundError::new(
                    "`top_k` is not supported: OpenAI-compatible upstreams have no equivalent",
                ))
            }
            "stream" => match value {
                Value::Bool(true) => {
                    out.insert("stream".into(), Value::Bool(true));
                    let mut options = Map::new();
                    options.insert("include_usage".into(), Value::Bool(true));
                    out.insert("stream_options".into(), Value::Object(options));
                }
                Value::Bool(false) => {}
                _ => return Err(InboundError::invalid(&root.key("stream"), "a boolean")),
            },
            "metadata" => {
                if let Some(user) = metadata_user(value)? {
                    out.insert("user".into(), Value::String(user));
                }
            }
            "tools" => {
                out.insert("tools".into(), tools(value)?);
            }
            "tool_choice" => tool_choice(value, &mut out)?,
            "thinking" => thinking(value)?,
            // A caching hint: upstreams cache prefixes on their own.
            "cache_control" => {}
            _ => return Err(InboundError::unsupported(&root.key(&key))),
        }
    }

    let model = model.ok_or_else(|| InboundError::required(&root.key("model")))?;
    let max_tokens = max_tokens.ok_or_else(|| InboundError::required(&root.key("max_tokens")))?;
    let Some(Value::Array(turns)) = turns else {
        return Err(InboundError::invalid(
            &root.key("messages"),
            "an array of messages",
        ));
    };
    let mut messages = Vec::with_capacity(turns.len() + 1);
    if let Some(system) = system {
        messages.push(system);
    }
    let at = root.key("messages");
    for (i, turn) in turns.into_iter().enumerate() {
        translate_turn(turn, &at.index(i), &mut messages)?;
    }

    out.insert("model".into(), Value::String(model));
    out.insert("max_tokens".into(), Value::from(max_tokens));
    out.insert("messages".into(), Value::Array(messages));
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| InboundError::new(format!("could not encode the translated request: {e}")))
}

/// Splits a content block into its `type` and its other fields.
fn block_fields(block: Value, at: &Path<'_>) -> Result<(String, Map<String, Value>), InboundError> {
    let Value::Object(mut fields) = block else {
        return Err(InboundError::invalid(at, "a content block object"));
    };
    match fields.remove("type") {
        Some(Value::String(kind)) => Ok((kind, fields)),
        _ => Err(InboundError::required(&at.key("type"))),
    }
}

/// Takes a required string field out of a block.
fn take_string(
    fields: &mut Map<String, Value>,
    key: &str,
    at: &Path<'_>,
) -> Result<String, InboundError> {
    match fields.remove(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(InboundError::required(&at.key(key))),
        Some(_) => Err(InboundError::invalid(&at.key(key), "a string")),
    }
}

/// Refuses whatever a block still holds once its known fields were taken;
/// `cache_control` and nulls are accepted.
fn reject_leftovers(fields: Map<String, Value>, at: &Path<'_>) -> Result<(), InboundError> {
    match fields
        .into_iter()
        .find(|(key, value)| key != "cache_control" && !value.is_null())
    {
        Some((key, _)) => Err(InboundError::unsupported(&at.key(&key))),
        None => Ok(()),
    }
}

fn string_array(value: Value, at: &Path<'_>) -> Result<Vec<Value>, InboundError> {
    match value {
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(items),
        _ => Err(InboundError::invalid(at, "an array of strings")),
    }
}

fn text_part(text: String) -> Value {
    let mut part = Map::new();
    part.insert("type".into(), Value::from("text"));
    part.insert("text".into(), Value::String(text));
    Value::Object(part)
}

/// One text part is sent as a plain string (what every OpenAI-compatible
/// upstream accepts); anything else as the parts array.
fn content_value(mut parts: Vec<Value>) -> Value {
    if let [Value::Object(part)] = parts.as_mut_slice() {
        if part.get("type").and_then(Value::as_str) == Some("text") {
            if let Some(text) = part.remove("text") {
                return text;
            }
        }
    }
    Value::Array(parts)
}

/// A text block's text; citations would be lost, so they are refused.
fn text_block(mut fields: Map<String, Value>, at: &Path<'_>) -> Result<String, InboundError> {
    let text = take_string(&mut fields, "text", at)?;
    match fields.remove("citations") {
        None | Some(Value::Null) => {}
        Some(Value::Array(citations)) if citations.is_empty() => {}
        Some(_) => return Err(InboundError::unsupported(&at.key("citations"))),
    }
    reject_leftovers(fields, at)?;
    Ok(text)
}

/// Text blocks (or a string) as OpenAI content parts, for `system` and
/// `tool_result.content`, where only text can go.
fn text_parts(value: Value, at: &Path<'_>) -> Result<Vec<Value>, InboundError> {
    match value {
        Value::String(text) => Ok(vec![text_part(text)]),
        Value::Array(blocks) => {
            let mut parts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.into_iter().enumerate() {
                let at = at.index(i);
                let (kind, fields) = block_fields(block, &at)?;
                if kind != "text" {
                    return Err(InboundError::unsupported_block(&at, &kind));
                }
                parts.push(text_part(text_block(fields, &at)?));
            }
            Ok(parts)
        }
        _ => Err(InboundError::invalid(
            at,
            "a string or an array of text blocks",
        )),
    }
}

fn system_message(value: Value) -> Result<Value, InboundError> {
    let parts = text_parts(value, &Path::ROOT.key("system"))?;
    let mut message = Map::new();
    message.insert("role".into(), Value::from("system"));
    message.insert("content".into(), content_value(parts));
    Ok(Value::Object(message))
}

fn image_part(mut fields: Map<String, Value>, at: &Path<'_>) -> Result<Value, InboundError> {
    let source_at = at.key("source");
    let Some(Value::Object(mut source)) = fields.remove("source") else {
        return Err(InboundError::invalid(&source_at, "an image source object"));
    };
    reject_leftovers(fields, at)?;
    let url = match take_string(&mut source, "type", &source_at)?.as_str() {
        "base64" => {
            let media_type = take_string(&mut source, "media_type", &source_at)?;
            let data = take_string(&mut source, "data", &source_at)?;
            format!("data:{media_type};base64,{data}")
        }
        "url" => take_string(&mut source, "url", &source_at)?,
        other => return Err(InboundError::unsupported_block(&source_at, other)),
    };
    reject_leftovers(source, &source_at)?;
    let mut image_url = Map::new();
    image_url.insert("url".into(), Value::String(url));
    let mut part = Map::new();
    part.insert("type".into(), Value::from("image_url"));
    part.insert("image_url".into(), Value::Object(image_url));
    Ok(Value::Object(part))
}

fn tool_result(mut fields: Map<String, Value>, at: &Path<'_>) -> Result<Value, InboundError> {
    let id = take_string(&mut fields, "tool_use_id", at)?;
    let mut parts = match fields.remove("content") {
        None | Some(Value::Null) => Vec::new(),
        Some(content) => text_parts(content, &at.key("content"))?,
    };
    let is_error = match fields.remove("is_error") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(InboundError::invalid(&at.key("is_error"), "a boolean")),
    };
    reject_leftovers(fields, at)?;
    if is_error {
        match parts.first_mut().and_then(|p| p.get_mut("text")) {
            Some(Value::String(text)) => text.insert_str(0, TOOL_ERROR_PREFIX),
            _ => parts.insert(0, text_part(TOOL_ERROR_PREFIX.trim_end().to_owned())),
        }
    }
    let content = if parts.is_empty() {
        Value::from("")
    } else {
        content_value(parts)
    };
    let mut message = Map::new();
    message.insert("role".into(), Value::from("tool"));
    message.insert("tool_call_id".into(), Value::String(id));
    message.insert("content".into(), content);
    Ok(Value::Object(message))
}

fn tool_call(mut fields: Map<String, Value>, at: &Path<'_>) -> Result<Value, InboundError> {
    let id = take_string(&mut fields, "id", at)?;
    let name = take_string(&mut fields, "name", at)?;
    let arguments = match fields.remove("input") {
        Some(input @ Value::Object(_)) => input.to_string(),
        None | Some(Value::Null) => return Err(InboundError::required(&at.key("input"))),
        Some(_) => return Err(InboundError::invalid(&at.key("input"), "an object")),
    };
    reject_leftovers(fields, at)?;
    let mut function = Map::new();
    function.insert("name".into(), Value::String(name));
    function.insert("arguments".into(), Value::String(arguments));
    let mut call = Map::new();
    call.insert("id".into(), Value::String(id));
    call.insert("type".into(), Value::from("function"));
    call.insert("function".into(), Value::Object(function));
    Ok(Value::Object(call))
}

fn translate_turn(
    turn: Value,
    at: &Path<'_>,
    messages: &mut Vec<Value>,
) -> Result<(), InboundError> {
    let Value::Object(mut fields) = turn else {
        return Err(InboundError::invalid(at, "a message object"));
    };
    let role = take_string(&mut fields, "role", at)?;
    let content_at = at.key("content");
    let content = match fields.remove("content") {
        None | Some(Value::Null) => return Err(InboundError::required(&content_at)),
        Some(content) => content,
    };
    if let Some((key, _)) = fields.into_iter().next() {
        return Err(InboundError::unsupported(&at.key(&key)));
    }
    if !matches!(role.as_str(), "user" | "assistant") {
        return Err(InboundError::invalid(
            &at.key("role"),
            "`user` or `assistant`",
        ));
    }
    let blocks = match content {
        Value::String(text) => {
            let mut message = Map::new();
            message.insert("role".into(), Value::String(role));
            message.insert("content".into(), Value::String(text));
            messages.push(Value::Object(message));
            return Ok(());
        }
        Value::Array(blocks) if !blocks.is_empty() => blocks,
        _ => {
            return Err(InboundError::invalid(
                &content_at,
                "a string or a non-empty array of content blocks",
            ))
        }
    };
    if role == "user" {
        user_blocks(blocks, &content_at, messages)
    } else {
        assistant_blocks(blocks, &content_at, messages)
    }
}

fn user_blocks(
    blocks: Vec<Value>,
    at: &Path<'_>,
    messages: &mut Vec<Value>,
) -> Result<(), InboundError> {
    let mut parts = Vec::new();
    let mut results = Vec::new();
    for (i, block) in blocks.into_iter().enumerate() {
        let at = at.index(i);
        let (kind, fields) = block_fields(block, &at)?;
        match kind.as_str() {
            "text" => parts.push(text_part(text_block(fields, &at)?)),
            "image" => parts.push(image_part(fields, &at)?),
            "tool_result" => results.push(tool_result(fields, &at)?),
            _ => return Err(InboundError::unsupported_block(&at, &kind)),
        }
    }
    // OpenAI wants tool results right after the assistant's tool calls.
    messages.extend(results);
    if !parts.is_empty() {
        let mut message = Map::new();
        message.insert("role".into(), Value::from("user"));
        message.insert("content".into(), content_value(parts));
        messages.push(Value::Object(message));
    }
    Ok(())
}

fn assistant_blocks(
    blocks: Vec<Value>,
    at: &Path<'_>,
    messages: &mut Vec<Value>,
) -> Result<(), InboundError> {
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for (i, block) in blocks.into_iter().enumerate() {
        let at = at.index(i);
        let (kind, fields) = block_fields(block, &at)?;
        match kind.as_str() {
            "text" => parts.push(text_part(text_block(fields, &at)?)),
            "tool_use" => calls.push(tool_call(fields, &at)?),
            _ => return Err(InboundError::unsupported_block(&at, &kind)),
        }
    }
    let mut message = Map::new();
    message.insert("role".into(), Value::from("assistant"));
    let content = if parts.is_empty() {
        Value::Null
    } else {
        content_value(parts)
    };
    message.insert("content".into(), content);
    if !calls.is_empty() {
        message.insert("tool_calls".into(), Value::Array(calls));
    }
    messages.push(Value::Object(message));
    Ok(())
}

fn metadata_user(value: Value) -> Result<Option<String>, InboundError> {
    let at = Path::ROOT.key("metadata");
    let Value::Object(mut fields) = value else {
        return Err(InboundError::invalid(&at, "an object"));
    };
    let user = match fields.remove("user_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => return Err(InboundError::invalid(&at.key("user_id"), "a string")),
    };
    reject_leftovers(fields, &at)?;
    Ok(user)
}

fn tools(value: Value) -> Result<Value, InboundError> {
    let at = Path::ROOT.key("tools");
    let Value::Array(tools) = value else {
        return Err(InboundError::invalid(&at, "an array of tools"));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        out.push(function_tool(tool, &at.index(i))?);
    }
    Ok(Value::Array(out))
}

/// One Anthropic tool as an OpenAI function tool.
fn function_tool(tool: Value, at: &Path<'_>) -> Result<Value, InboundError> {
    let Value::Object(mut fields) = tool else {
        return Err(InboundError::invalid(at, "a tool object"));
    };
    match fields.remove("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if kind == "custom" => {}
        // Server tools (web search, code execution, …) run at Anthropic.
        Some(Value::String(kind)) => return Err(InboundError::unsupported_block(at, &kind)),
        Some(_) => return Err(InboundError::invalid(&at.key("type"), "a string")),
    }
    let mut function = Map::new();
    function.insert(
        "name".into(),
        Value::String(take_string(&mut fields, "name", at)?),
    );
    match fields.remove("description") {
        None | Some(Value::Null) => {}
        Some(d @ Value::String(_)) => {
            function.insert("description".into(), d);
        }
        Some(_) => return Err(InboundError::invalid(&at.key("description"), "a string")),
    }
    match fields.remove("input_schema") {
        Some(schema @ Value::Object(_)) => {
            function.insert("parameters".into(), schema);
        }
        None | Some(Value::Null) => return Err(InboundError::required(&at.key("input_schema"))),
        Some(_) => {
            return Err(InboundError::invalid(
                &at.key("input_schema"),
                "a JSON schema object",
            ))
        }
    }
    match fields.remove("strict") {
        None | Some(Value::Null) => {}
        Some(strict @ Value::Bool(_)) => {
            function.insert("strict".into(), strict);
        }
        Some(_) => return Err(InboundError::invalid(&at.key("strict"), "a boolean")),
    }
    reject_leftovers(fields, at)?;
    let mut tool = Map::new();
    tool.insert("type".into(), Value::from("function"));
    tool.insert("function".into(), Value::Object(function));
    Ok(Value::Object(tool))
}

fn tool_choice(value: Value, out: &mut Map<String, Value>) -> Result<(), InboundError> {
    let at = Path::ROOT.key("tool_choice");
    let Value::Object(mut fields) = value else {
        return Err(InboundError::invalid(&at, "an object"));
    };
    let choice = match take_string(&mut fields, "type", &at)?.as_str() {
        "auto" => Value::from("auto"),
        "any" => Value::from("required"),
        "none" => Value::from("none"),
        "tool" => {
            let mut function = Map::new();
            function.insert(
                "name".into(),
                Value::String(take_string(&mut fields, "name", &at)?),
            );
            let mut choice = Map::new();
            choice.insert("type".into(), Value::from("function"));
            choice.insert("function".into(), Value::Object(function));
            Value::Object(choice)
        }
        other => return Err(InboundError::unsupported_block(&at, other)),
    };
    match fields.remove("disable_parallel_tool_use") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
        Some(_) => {
            return Err(InboundError::invalid(
                &at.key("disable_parallel_tool_use"),
                "a boolean",
            ))
        }
    }
    reject_leftovers(fields, &at)?;
    out.insert("tool_choice".into(), choice);
    Ok(())
}

/// Disabled thinking asks for nothing; enabled thinking has no OpenAI form.
fn thinking(value: Value) -> Result<(), InboundError> {
    match value.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(()),
        _ => Err(InboundError::new(
            "`thinking` (extended thinking) is not supported: the gateway cannot express it to its upstreams",
        )),
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<CompletionChoice>>,
    #[serde(default)]
    usage: Option<super::Usage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    message: Option<CompletionMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    /// A string, null, or (some compatible servers) an array of parts.
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<CompletionToolCall>>,
}

#[derive(Deserialize)]
struct CompletionToolCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Serialize)]
struct AnthropicMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<ResponseBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
    usage: ResponseUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseBlock<'a> {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: &'a str,
        input: Value,
    },
}

#[derive(Serialize)]
struct ResponseUsage {
    input_tokens: u64,
    output_tokens: u64,
}

/// `msg_…` from an OpenAI completion id (`chatcmpl-abc` -> `msg_abc`), so
/// one answer can be found under the same id in both protocols' logs.
fn message_id(openai_id: Option<&str>) -> String {
    match openai_id.filter(|id| !id.is_empty()) {
        Some(id) => format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id)),
        None => format!("msg_{}", uuid::Uuid::new_v4().simple()),
    }
}

fn stop_reason(finish_reason: Option<&str>, has_tool_calls: bool) -> &'static str {
    if has_tool_calls {
        return "tool_use";
    }
    match finish_reason {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

/// Tool arguments as Anthropic's `input` object; see the module doc for
/// arguments that are not an object.
fn tool_input(arguments: Option<&str>) -> Value {
    let arguments = arguments.unwrap_or("");
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(input @ Value::Object(_)) => input,
        _ => {
            let mut raw = Map::new();
            raw.insert("_raw".into(), Value::from(arguments));
            Value::Object(raw)
        }
    }
}

/// The text of an OpenAI message's `content`: a string, or the texts of an
/// array of parts (`text` and `refusal` parts) joined.
fn content_text(content: Option<Value>) -> String {
    match content {
        Some(Value::String(text)) => text,
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").or_else(|| p.get("refusal")))
            .filter_map(Value::as_str)
            .collect(),
        _ => String::new(),
    }
}

/// OpenAI `chat.completion` body -> Anthropic `message` body. An error here
/// means the upstream's answer is not a chat completion (the caller's 502,
/// not the client's 400).
pub fn response_from_openai(openai: &[u8]) -> Result<Vec<u8>, InboundError> {
    let completion: Completion = serde_json::from_slice(openai).map_err(|e| {
        InboundError::new(format!("the upstream answer is not a chat completion: {e}"))
    })?;
    let Some(choice) = completion.choices.and_then(|c| c.into_iter().next()) else {
        return Err(InboundError::new("the upstream answer has no choices"));
    };
    let id = message_id(completion.id.as_deref());
    let message = choice.message.unwrap_or(CompletionMessage {
        content: None,
        refusal: None,
        tool_calls: None,
    });
    let calls = message.tool_calls.unwrap_or_default();

    let mut content = Vec::with_capacity(1 + calls.len());
    let mut text = content_text(message.content);
    if let Some(refusal) = message.refusal {
        text.push_str(&refusal);
    }
    if !text.is_empty() {
        content.push(ResponseBlock::Text { text });
    }
    for (i, call) in calls.iter().enumerate() {
        let function = call.function.as_ref();
        content.push(ResponseBlock::ToolUse {
            id: match call.id.as_deref().filter(|id| !id.is_empty()) {
                Some(call_id) => call_id.to_owned(),
                None => format!("toolu_{}_{i}", id.strip_prefix("msg_").unwrap_or(&id)),
            },
            name: function.and_then(|f| f.name.as_deref()).unwrap_or(""),
            input: tool_input(function.and_then(|f| f.arguments.as_deref())),
        });
    }
    let usage = completion.usage.unwrap_or_default();
    let body = AnthropicMessage {
        id: &id,
        kind: "message",
        role: "assistant",
        model: completion.model.as_deref().unwrap_or(""),
        content,
        stop_reason: stop_reason(choice.finish_reason.as_deref(), !calls.is_empty()),
        stop_sequence: None,
        usage: ResponseUsage {
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        },
    };
    serde_json::to_vec(&body)
        .map_err(|e| InboundError::new(format!("could not encode the translated answer: {e}")))
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Anthropic's error type for an HTTP status, after
/// <https://docs.claude.com/en/api/errors>: the listed statuses get their
/// documented type (402 `billing_error`, 504 `timeout_error`, 529
/// `overloaded_error`); 503 (the gateway's "every target is open" and
/// "shutting down") is `overloaded_error`, since it means "no capacity, try
/// again later"; 502 and other 5xx are `api_error`; other 4xx are
/// `invalid_request_error`, as Anthropic documents for unlisted 4xx.
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

#[derive(Deserialize)]
struct OpenAiErrorBody {
    error: OpenAiError,
}

#[derive(Deserialize)]
struct OpenAiError {
    #[serde(default)]
    message: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    code: Option<Value>,
}

#[derive(Serialize)]
struct AnthropicErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicError<'a>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

/// A gateway error in Anthropic's shape, its type chosen by `status`.
pub fn gateway_error(status: u16, message: &str) -> Vec<u8> {
    error_json(error_type_for_status(status), message)
}

fn error_json(kind: &str, message: &str) -> Vec<u8> {
    let body = AnthropicErrorBody {
        kind: "error",
        error: AnthropicError { kind, message },
    };
    // Two string fields: serializing cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// An OpenAI error body (`{"error":{"message","type","code"}}`) with its
/// HTTP status -> Anthropic error body `{"type":"error","error":{"type",
/// "message"}}`. The type follows the status ([`error_type_for_status`]),
/// which is also what Anthropic SDKs pick their exception by. The message is
/// the OpenAI body's (the same text an OpenAI client would see); a body that
/// is not an OpenAI error is not quoted, it may echo anything.
pub fn error_from_openai(status: u16, openai: &[u8]) -> Vec<u8> {
    let message = serde_json::from_slice::<OpenAiErrorBody>(openai)
        .ok()
        .and_then(|b| b.error.message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("the upstream answered with HTTP status {status}"));
    error_json(error_type_for_status(status), &message)
}

/// Anthropic's type for an error object found in an OpenAI stream: the
/// gateway's `stream_cut` and anything unknown are `api_error`.
fn stream_error_type(error: &OpenAiError) -> &'static str {
    let kind = error.kind.as_deref().unwrap_or("");
    let code = match &error.code {
        Some(Value::String(code)) => code.as_str(),
        _ => "",
    };
    let has = |needle: &str| kind.contains(needle) || code.contains(needle);
    if has("overloaded") {
        "overloaded_error"
    } else if has("rate_limit") {
        "rate_limit_error"
    } else if has("timeout") {
        "timeout_error"
    } else {
        "api_error"
    }
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<super::Usage>,
    #[serde(default)]
    error: Option<OpenAiError>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ChunkDelta<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    refusal: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallDelta<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    function: Option<FunctionDelta<'a>>,
}

#[derive(Deserialize)]
struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent<'a> {
    MessageStart {
        message: StartMessage<'a>,
    },
    Ping,
    ContentBlockStart {
        index: u32,
        content_block: BlockStart<'a>,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDeltaBody,
        usage: DeltaUsage,
    },
    MessageStop,
    Error {
        error: AnthropicError<'a>,
    },
}

impl StreamEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::Ping => "ping",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Error { .. } => "error",
        }
    }
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: ResponseUsage,
}

/// Serializes as `{}`: a tool block's `input` before its JSON deltas.
#[derive(Serialize)]
struct EmptyInput {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockStart<'a> {
    Text {
        text: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: EmptyInput,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct MessageDeltaBody {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

#[derive(Serialize)]
struct DeltaUsage {
    #[serde(skip_serializing_if = "Option::is_none")]
    input_tokens: Option<u64>,
    output_tokens: u64,
}

fn write_event(event: &StreamEvent<'_>, out: &mut Vec<Bytes>) {
    let name = event.name();
    let mut buf = Vec::with_capacity(64 + name.len());
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    // Plain structs with string keys: serializing into a Vec cannot fail.
    if serde_json::to_writer(&mut buf, event).is_ok() {
        buf.extend_from_slice(b"\n\n");
        out.push(Bytes::from(buf));
    }
}

/// The content block currently open in the Anthropic stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text(u32),
    Tool(u32),
}

/// A tool call seen in the OpenAI stream and the block it became.
struct ToolSlot {
    openai_index: Option<u64>,
    id: String,
    block: u32,
}

/// OpenAI SSE events -> Anthropic SSE events.
///
/// Blocks follow each other as Anthropic's do: text, then one block per
/// tool call, each closed before the next opens. Should an upstream
/// interleave fragments of two tool calls, a late fragment still goes to its
/// own block's index (the SDKs accumulate by index) rather than being lost.
pub struct ToAnthropicStream {
    model: String,
    message_id: String,
    started: bool,
    ended: bool,
    open: Option<OpenBlock>,
    next_index: u32,
    tools: Vec<ToolSlot>,
    finish_reason: Option<String>,
    usage: Option<super::Usage>,
}

impl ToAnthropicStream {
    /// `model` is what `message_start` reports.
    pub fn new(model: &str) -> Self {
        ToAnthropicStream {
            model: model.to_owned(),
            message_id: String::new(),
            started: false,
            ended: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// One complete OpenAI SSE event in (`data: …\n\n`); zero or more
    /// complete Anthropic events out (`event: <type>\ndata: {…}\n\n`).
    pub fn translate(&mut self, openai_event: &[u8], out: &mut Vec<Bytes>) {
        if self.ended {
            return;
        }
        // Comments, keep-alives and empty events carry nothing.
        let Some(data) = crate::streaming::sse::event_payload(openai_event) else {
            return;
        };
        let data = data.as_ref();
        if data == b"[DONE]" {
            self.finish(out);
            return;
        }
        let chunk: Chunk<'_> = match serde_json::from_slice(data) {
            Ok(chunk) => chunk,
            Err(_) => {
                self.fail(
                    "api_error",
                    "the gateway could not read an event of the upstream stream; the answer is incomplete",
                    out,
                );
                return;
            }
        };
        if let Some(error) = chunk.error {
            let message = error
                .message
                .as_deref()
                .filter(|m| !m.is_empty())
                .unwrap_or("the upstream stream failed; the answer is incomplete");
            self.fail(stream_error_type(&error), message, out);
            return;
        }
        self.start(chunk.id.as_deref(), out);
        for choice in chunk.choices.into_iter().flatten() {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                    self.text(text, out);
                }
                // A refusal is the model's answer too: shown as text.
                if let Some(text) = delta.refusal.as_deref().filter(|t| !t.is_empty()) {
                    self.text(text, out);
                }
                for call in delta.tool_calls.into_iter().flatten() {
                    self.tool_call(&call, out);
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish_reason = Some(reason.into_owned());
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
    }

    fn start(&mut self, openai_id: Option<&str>, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        self.message_id = message_id(openai_id);
        let message = StartMessage {
            id: &self.message_id,
            kind: "message",
            role: "assistant",
            model: &self.model,
            content: [],
            stop_reason: None,
            stop_sequence: None,
            usage: ResponseUsage {
                input_tokens: 0,
                output_tokens: 0,
            },
        };
        write_event(&StreamEvent::MessageStart { message }, out);
        write_event(&StreamEvent::Ping, out);
    }

    fn close_open_block(&mut self, out: &mut Vec<Bytes>) {
        if let Some(OpenBlock::Text(index) | OpenBlock::Tool(index)) = self.open.take() {
            write_event(&StreamEvent::ContentBlockStop { index }, out);
        }
    }

    fn open_block(&mut self, out: &mut Vec<Bytes>) -> u32 {
        self.close_open_block(out);
        let index = self.next_index;
        self.next_index = self.next_index.saturating_add(1);
        index
    }

    fn text(&mut self, text: &str, out: &mut Vec<Bytes>) {
        let index = match self.open {
            Some(OpenBlock::Text(index)) => index,
            _ => {
                let index = self.open_block(out);
                let content_block = BlockStart::Text { text: "" };
                write_event(
                    &StreamEvent::ContentBlockStart {
                        index,
                        content_block,
                    },
                    out,
                );
                self.open = Some(OpenBlock::Text(index));
                index
            }
        };
        let delta = BlockDelta::TextDelta { text };
        write_event(&StreamEvent::ContentBlockDelta { index, delta }, out);
    }

    /// The tool block a fragment belongs to: by OpenAI's `index`, else by
    /// `id`, else the tool block that is open.
    fn find_tool(&self, call: &ToolCallDelta<'_>) -> Option<u32> {
        let found = match (call.index, call.id.as_deref()) {
            (Some(index), _) => self.tools.iter().find(|t| t.openai_index == Some(index)),
            (None, Some(id)) => self.tools.iter().find(|t| t.id == id),
            (None, None) => {
                return match self.open {
                    Some(OpenBlock::Tool(block)) => Some(block),
                    _ => self.tools.last().map(|t| t.block),
                }
            }
        };
        found.map(|t| t.block)
    }

    fn tool_call(&mut self, call: &ToolCallDelta<'_>, out: &mut Vec<Bytes>) {
        let function = call.function.as_ref();
        let block = match self.find_tool(call) {
            Some(block) => block,
            None => {
                let index = self.open_block(out);
                let id = match call.id.as_deref().filter(|id| !id.is_empty()) {
                    Some(id) => id.to_owned(),
                    None => format!(
                        "toolu_{}_{}",
                        self.message_id
                            .strip_prefix("msg_")
                            .unwrap_or(&self.message_id),
                        self.tools.len()
                    ),
                };
                let name = function.and_then(|f| f.name.as_deref()).unwrap_or("");
                let content_block = BlockStart::ToolUse {
                    id: &id,
                    name,
                    input: EmptyInput {},
                };
                write_event(
                    &StreamEvent::ContentBlockStart {
                        index,
                        content_block,
                    },
                    out,
                );
                self.tools.push(ToolSlot {
                    openai_index: call.index,
                    id,
                    block: index,
                });
                self.open = Some(OpenBlock::Tool(index));
                index
            }
        };
        if let Some(partial_json) = function
            .and_then(|f| f.arguments.as_deref())
            .filter(|a| !a.is_empty())
        {
            let delta = BlockDelta::InputJsonDelta { partial_json };
            write_event(
                &StreamEvent::ContentBlockDelta {
                    index: block,
                    delta,
                },
                out,
            );
        }
    }

    fn finish(&mut self, out: &mut Vec<Bytes>) {
        self.start(None, out);
        self.close_open_block(out);
        self.ended = true;
        let delta = MessageDeltaBody {
            stop_reason: stop_reason(self.finish_reason.as_deref(), !self.tools.is_empty()),
            stop_sequence: None,
        };
        let usage = DeltaUsage {
            input_tokens: self.usage.map(|u| u.prompt_tokens),
            output_tokens: self.usage.map_or(0, |u| u.completion_tokens),
        };
        write_event(&StreamEvent::MessageDelta { delta, usage }, out);
        write_event(&StreamEvent::MessageStop, out);
    }

    fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<Bytes>) {
        self.ended = true;
        let error = AnthropicError { kind, message };
        write_event(&StreamEvent::Error { error }, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inbound_anthropic")
    }

    /// `(stem, input, expected)` for every `{prefix}*.{from}` fixture with its
    /// `.{to}` partner, sorted by name.
    fn fixture_pairs(prefix: &str, from: &str, to: &str) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let mut pairs = Vec::new();
        for entry in std::fs::read_dir(fixture_dir()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let Some(stem) = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(&format!(".{from}")))
            else {
                continue;
            };
            let stem = format!("{prefix}{stem}");
            let input = std::fs::read(fixture_dir().join(&name)).unwrap();
            let expected = std::fs::read(fixture_dir().join(format!("{stem}.{to}")))
                .unwrap_or_else(|e| panic!("{stem}.{to}: {e}"));
            pairs.push((stem, input, expected));
        }
        pairs.sort();
        pairs
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
    }

    fn translate(body: &str) -> Result<Value, InboundError> {
        request_to_openai(body.as_bytes()).map(|out| json(&out))
    }

    #[test]
    fn request_fixtures_translate_to_their_openai_form() {
        let pairs = fixture_pairs("request_", "anthropic.json", "openai.json");
        assert!(pairs.len() >= 4, "fixtures missing: {}", pairs.len());
        for (stem, anthropic, openai) in pairs {
            let out = request_to_openai(&anthropic).unwrap_or_else(|e| panic!("{stem}: {e}"));
            assert_eq!(json(&out), json(&openai), "{stem}");
        }
    }

    #[test]
    fn translated_requests_route_like_openai_ones() {
        let out = request_to_openai(
            &std::fs::read(fixture_dir().join("request_system_multiturn.anthropic.json")).unwrap(),
        )
        .unwrap();
        let body = crate::api::InspectedBody::parse(Bytes::from(out)).unwrap();
        assert_eq!(body.model(), "chat-default");
        assert!(body.stream());
        let out = request_to_openai(
            br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"x"}],"stream":false}"#,
        )
        .unwrap();
        assert!(!crate::api::InspectedBody::parse(Bytes::from(out))
            .unwrap()
            .stream());
    }

    #[test]
    fn tool_choice_variants() {
        let with = |choice: &str| {
            translate(&format!(
                r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"x"}}],"tool_choice":{choice}}}"#
            ))
            .unwrap()
        };
        let auto = with(r#"{"type":"auto"}"#);
        assert_eq!(auto["tool_choice"], "auto");
        assert!(auto.get("parallel_tool_calls").is_none());
        let any = with(r#"{"type":"any","disable_parallel_tool_use":true}"#);
        assert_eq!(any["tool_choice"], "required");
        assert_eq!(any["parallel_tool_calls"], false);
        let none = with(r#"{"type":"none"}"#);
        assert_eq!(none["tool_choice"], "none");
        let tool = with(r#"{"type":"tool","name":"f","disable_parallel_tool_use":false}"#);
        assert_eq!(
            tool["tool_choice"],
            serde_json::json!({"type":"function","function":{"name":"f"}})
        );
        assert!(tool.get("parallel_tool_calls").is_none());
    }

    #[test]
    fn every_untranslatable_request_is_refused_naming_the_field() {
        let base = |extra: &str, messages: &str| {
            format!(r#"{{"model":"m","max_tokens":16,"messages":{messages}{extra}}}"#)
        };
        let hello = r#"[{"role":"user","content":"hi"}]"#;
        let user = |blocks: &str| format!(r#"[{{"role":"user","content":[{blocks}]}}]"#);
        let assistant = |blocks: &str| {
            format!(
                r#"[{{"role":"user","content":"hi"}},{{"role":"assistant","content":[{blocks}]}}]"#
            )
        };
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not valid JSON"),
            ("[1]".into(), "must be a JSON object"),
            (
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.into(),
                "`max_tokens` is required",
            ),
            (
                r#"{"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#.into(),
                "`model` is required",
            ),
            (
                r#"{"model":"m","max_tokens":3}"#.into(),
                "`messages` must be",
            ),
            (
                base(r#","max_tokens":0"#, hello),
                "`max_tokens` must be a positive integer",
            ),
            (base(r#","max_tokens":"9""#, hello), "`max_tokens` must be"),
            (base(r#","top_k":40"#, hello), "`top_k` is not supported"),
            (
                base(
                    r#","thinking":{"type":"enabled","budget_tokens":2000}"#,
                    hello,
                ),
                "`thinking`",
            ),
            (
                base(r#","service_tier":"auto""#, hello),
                "`service_tier` is not supported",
            ),
            (
                base(r#","temperature":"hot""#, hello),
                "`temperature` must be a number",
            ),
            (
                base(r#","stream":"yes""#, hello),
                "`stream` must be a boolean",
            ),
            (
                base(r#","metadata":{"tenant":"a"}"#, hello),
                "`metadata.tenant`",
            ),
            (
                base(r#","stop_sequences":"END""#, hello),
                "`stop_sequences` must be",
            ),
            (
                base(
                    r#","tools":[{"type":"web_search_20250305","name":"web_search"}]"#,
                    hello,
                ),
                "`tools[0].type` `web_search_20250305`",
            ),
            (
                base(r#","tools":[{"name":"f"}]"#, hello),
                "`tools[0].input_schema` is required",
            ),
            (
                base(
                    r#","tools":[{"name":"f","input_schema":{},"defer_loading":true}]"#,
                    hello,
                ),
                "`tools[0].defer_loading`",
            ),
            (
                base(r#","tool_choice":{"type":"sometimes"}"#, hello),
                "`tool_choice.type` `sometimes`",
            ),
            (
                base(r#","tool_choice":{"type":"tool"}"#, hello),
                "`tool_choice.name` is required",
            ),
            (
                base(r#","system":[{"type":"image","source":{}}]"#, hello),
                "`system[0].type` `image`",
            ),
            (
                base("", r#"[{"role":"system","content":"x"}]"#),
                "`messages[0].role` must be",
            ),
            (
                base("", r#"[{"role":"user","content":[]}]"#),
                "`messages[0].content` must be",
            ),
            (
                base("", r#"[{"role":"user"}]"#),
                "`messages[0].content` is required",
            ),
            (
                base("", r#"[{"role":"user","content":"x","name":"bob"}]"#),
                "`messages[0].name`",
            ),
            (
                base(
                    "",
                    &user(r#"{"type":"document","source":{"type":"text","data":"x"}}"#),
                ),
                "`messages[0].content[0].type` `document`",
            ),
            (
                base(
                    "",
                    &user(r#"{"type":"text","text":"x","citations":[{"type":"char_location"}]}"#),
                ),
                "`messages[0].content[0].citations`",
            ),
            (
                base("", &user(r#"{"type":"text","text":"x","lang":"en"}"#)),
                "`messages[0].content[0].lang`",
            ),
            (
                base("", &user(r#"{"text":"x"}"#)),
                "`messages[0].content[0].type` is required",
            ),
            (
                base("", &user(r#"{"type":"text"}"#)),
                "`messages[0].content[0].text` is required",
            ),
            (
                base(
                    "",
                    &user(r#"{"type":"image","source":{"type":"file","file_id":"f1"}}"#),
                ),
                "`messages[0].content[0].source.type` `file`",
            ),
            (
                base(
                    "",
                    &user(r#"{"type":"image","source":{"type":"base64","data":"AA=="}}"#),
                ),
                "`messages[0].content[0].source.media_type` is required",
            ),
            (
                base(
                    "",
                    &user(r#"{"type":"tool_use","id":"t","name":"f","input":{}}"#),
                ),
                "`messages[0].content[0].type` `tool_use`",
            ),
            (
                base(
                    "",
                    &user(
                        r#"{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"url","url":"u"}}]}"#,
                    ),
                ),
                "`messages[0].content[0].content[0].type` `image`",
            ),
            (
                base(
                    "",
                    &user(r#"{"type":"tool_result","tool_use_id":"t","is_error":"yes"}"#),
                ),
                "`messages[0].content[0].is_error` must be a boolean",
            ),
            (
                base("", &user(r#"{"type":"tool_result"}"#)),
                "`messages[0].content[0].tool_use_id` is required",
            ),
            (
                base(
                    "",
                    &assistant(r#"{"type":"image","source":{"type":"url","url":"u"}}"#),
                ),
                "`messages[1].content[0].type` `image`",
            ),
            (
                base(
                    "",
                    &assistant(r#"{"type":"thinking","thinking":"hm","signature":"s"}"#),
                ),
                "`messages[1].content[0].type` `thinking`",
            ),
            (
                base("", &assistant(r#"{"type":"redacted_thinking","data":"x"}"#)),
                "`messages[1].content[0].type` `redacted_thinking`",
            ),
            (
                base(
                    "",
                    &assistant(r#"{"type":"tool_use","id":"t","name":"f","input":"{}"}"#),
                ),
                "`messages[1].content[0].input` must be an object",
            ),
            (
                base(
                    "",
                    &assistant(
                        r#"{"type":"server_tool_use","id":"t","name":"web_search","input":{}}"#,
                    ),
                ),
                "`messages[1].content[0].type` `server_tool_use`",
            ),
        ];
        for (body, expected) in cases {
            let err = request_to_openai(body.as_bytes()).expect_err(&format!("accepted: {body}"));
            assert!(
                err.message.contains(expected),
                "{body}\n  wanted {expected:?}\n  got    {:?}",
                err.message
            );
            assert_eq!(err.to_string(), err.message);
        }
    }

    #[test]
    fn null_optional_fields_are_absent() {
        let out = translate(
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"x","cache_control":null,"citations":null}]}],
                "system":null,"temperature":null,"top_k":null,"tools":null,"tool_choice":null,"metadata":null,"stream":null,"stop_sequences":[]}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            serde_json::json!({"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]})
        );
    }

    #[test]
    fn response_fixtures_translate_to_their_anthropic_form() {
        let pairs = fixture_pairs("response_", "openai.json", "anthropic.json");
        assert!(pairs.len() >= 4, "fixtures missing: {}", pairs.len());
        for (stem, openai, anthropic) in pairs {
            let out = response_from_openai(&openai).unwrap_or_else(|e| panic!("{stem}: {e}"));
            assert_eq!(json(&out), json(&anthropic), "{stem}");
        }
    }

    #[test]
    fn tool_calls_mean_tool_use_whatever_the_finish_reason() {
        let out = response_from_openai(
            br#"{"id":"chatcmpl-1","model":"m","choices":[{"message":{"content":"","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"stop"}]}"#,
        )
        .unwrap();
        let out = json(&out);
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(
            out["content"],
            serde_json::json!([{"type":"tool_use","id":"c","name":"f","input":{"a":1}}])
        );
    }

    #[test]
    fn unreadable_responses_are_errors() {
        for body in [
            &b""[..],
            b"<html>",
            br#"{"choices":[]}"#,
            br#"{"error":{"message":"x"}}"#,
            br#"{"choices":"x"}"#,
        ] {
            assert!(
                response_from_openai(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Without an id the message still gets one.
        let out =
            json(&response_from_openai(br#"{"choices":[{"message":{"content":"hi"}}]}"#).unwrap());
        assert!(out["id"].as_str().unwrap().starts_with("msg_"));
        assert!(out["id"].as_str().unwrap().len() > "msg_".len());
        assert_eq!(out["stop_reason"], "end_turn");
        assert_eq!(
            out["usage"],
            serde_json::json!({"input_tokens":0,"output_tokens":0})
        );
    }

    /// Splits an SSE file into events, each with its terminating blank line.
    fn sse_events(file: &[u8]) -> Vec<Vec<u8>> {
        let text = std::str::from_utf8(file).unwrap();
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| format!("{e}\n\n").into_bytes())
            .collect()
    }

    /// `(event name, data)` of one Anthropic event, checking its framing.
    fn parse_anthropic_event(event: &[u8]) -> (String, Value) {
        let text = std::str::from_utf8(event).unwrap();
        let body = text
            .strip_suffix("\n\n")
            .unwrap_or_else(|| panic!("not one whole event: {text:?}"));
        assert!(!body.contains("\n\n"), "two events in one: {text:?}");
        let (name_line, data_line) = body.split_once('\n').unwrap();
        let name = name_line.strip_prefix("event: ").unwrap();
        let data = json(data_line.strip_prefix("data: ").unwrap().as_bytes());
        assert_eq!(data["type"], name, "event name and type differ");
        (name.to_owned(), data)
    }

    fn run_stream(events: &[Vec<u8>]) -> Vec<(String, Value)> {
        let mut translator = ToAnthropicStream::new("chat-default");
        let mut out = Vec::new();
        for event in events {
            translator.translate(event, &mut out);
        }
        out.iter().map(|e| parse_anthropic_event(e)).collect()
    }

    fn run_stream_str(events: &[&str]) -> Vec<(String, Value)> {
        let events: Vec<Vec<u8>> = events
            .iter()
            .map(|e| format!("data: {e}\n\n").into_bytes())
            .collect();
        run_stream(&events)
    }

    #[test]
    fn stream_fixtures_translate_event_by_event() {
        let pairs = fixture_pairs("stream_", "openai.sse", "anthropic.sse");
        assert!(pairs.len() >= 5, "fixtures missing: {}", pairs.len());
        for (stem, openai, anthropic) in pairs {
            let got = run_stream(&sse_events(&openai));
            let want: Vec<(String, Value)> = sse_events(&anthropic)
                .iter()
                .map(|e| parse_anthropic_event(e))
                .collect();
            assert_eq!(got.len(), want.len(), "{stem}: {got:#?}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{stem}: event {i}");
            }
        }
    }

    fn names(events: &[(String, Value)]) -> Vec<&str> {
        events.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn an_empty_stream_is_still_a_whole_message() {
        let out = run_stream_str(&["[DONE]"]);
        assert_eq!(
            names(&out),
            ["message_start", "ping", "message_delta", "message_stop"]
        );
        assert!(out[0].1["message"]["id"]
            .as_str()
            .unwrap()
            .starts_with("msg_"));
        assert_eq!(
            out[2].1,
            serde_json::json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":0}})
        );
    }

    #[test]
    fn length_finish_and_usage_on_the_finish_chunk() {
        let out = run_stream_str(&[
            r#"{"id":"chatcmpl-x","choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"id":"chatcmpl-x","choices":[{"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
            "[DONE]",
            r#"{"id":"chatcmpl-x","choices":[{"delta":{"content":"after done"}}]}"#,
        ]);
        let delta = &out[out.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
        assert_eq!(
            delta["usage"],
            serde_json::json!({"input_tokens":4,"output_tokens":1})
        );
        assert_eq!(out.last().unwrap().0, "message_stop");
        assert!(!out
            .iter()
            .any(|(_, v)| v.to_string().contains("after done")));
    }

    #[test]
    fn blocks_switch_between_text_and_tools_with_new_indices() {
        let out = run_stream_str(&[
            r#"{"id":"c","choices":[{"delta":{"tool_calls":[{"index":0,"id":"t0","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
            r#"{"id":"c","choices":[{"delta":{"tool_calls":[{"index":1,"id":"t1","function":{"name":"g","arguments":"{}"}}]}}]}"#,
            // A late fragment of the first call goes to its own block.
            r#"{"id":"c","choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"id":"c","choices":[{"delta":{"content":"done"}}]}"#,
            r#"{"id":"c","choices":[{"delta":{"refusal":"!"},"finish_reason":"stop"}]}"#,
            "[DONE]",
        ]);
        let summary: Vec<String> = out
            .iter()
            .skip(2)
            .map(|(name, v)| format!("{name}:{}", v["index"]))
            .collect();
        assert_eq!(
            summary,
            [
                "content_block_start:0",
                "content_block_delta:0",
                "content_block_stop:0",
                "content_block_start:1",
                "content_block_delta:1",
                "content_block_delta:0",
                "content_block_stop:1",
                "content_block_start:2",
                "content_block_delta:2",
                "content_block_delta:2",
                "content_block_stop:2",
                "message_delta:null",
                "message_stop:null",
            ]
        );
        assert_eq!(out[6].1["delta"]["partial_json"], "{}");
        assert_eq!(out[7].1["delta"]["partial_json"], ":1}");
        assert_eq!(out[9].1["content_block"]["type"], "text");
        assert_eq!(out[11].1["delta"]["text"], "!");
        assert_eq!(out[13].1["delta"]["stop_reason"], "tool_use");
    }

    #[test]
    fn tool_calls_without_index_or_id_are_kept() {
        let out = run_stream_str(&[
            r#"{"id":"chatcmpl-q","choices":[{"delta":{"tool_calls":[{"function":{"name":"f","arguments":"{"}}]}}]}"#,
            r#"{"id":"chatcmpl-q","choices":[{"delta":{"tool_calls":[{"function":{"arguments":"}"}}]}}]}"#,
            r#"{"id":"chatcmpl-q","choices":[{"delta":{"tool_calls":[{"id":"x2","function":{"name":"g"}}]}}]}"#,
            "[DONE]",
        ]);
        let starts: Vec<&Value> = out
            .iter()
            .filter(|(n, _)| n == "content_block_start")
            .map(|(_, v)| &v["content_block"])
            .collect();
        assert_eq!(starts.len(), 2);
        assert_eq!(starts[0]["id"], "toolu_q_0");
        assert_eq!(starts[1]["id"], "x2");
        let json_deltas: Vec<(&Value, &Value)> = out
            .iter()
            .filter(|(n, _)| n == "content_block_delta")
            .map(|(_, v)| (&v["index"], &v["delta"]["partial_json"]))
            .collect();
        assert_eq!(
            json_deltas,
            [
                (&Value::from(0), &Value::from("{")),
                (&Value::from(0), &Value::from("}"))
            ]
        );
    }

    #[test]
    fn stream_error_types_follow_the_openai_error() {
        for (error, kind) in [
            (
                r#"{"message":"slow down","type":"rate_limit_error","code":"rate_limit_exceeded"}"#,
                "rate_limit_error",
            ),
            (
                r#"{"message":"busy","type":"server_error","code":"overloaded"}"#,
                "overloaded_error",
            ),
            (
                r#"{"message":"late","type":"upstream_error","code":"timeout"}"#,
                "timeout_error",
            ),
            (r#"{"message":"x","code":500}"#, "api_error"),
            (r#"{}"#, "api_error"),
        ] {
            let out = run_stream_str(&[&format!(r#"{{"error":{error}}}"#)]);
            assert_eq!(names(&out), ["error"], "{error}");
            assert_eq!(out[0].1["error"]["type"], kind, "{error}");
            assert!(!out[0].1["error"]["message"].as_str().unwrap().is_empty());
        }
    }

    /// Every prefix and every single-byte corruption of real events: the
    /// translator never panics and only ever emits whole, valid events.
    #[test]
    fn garbage_never_panics_and_output_stays_well_formed() {
        let mut samples: Vec<Vec<u8>> = Vec::new();
        for (_, openai, _) in fixture_pairs("stream_", "openai.sse", "anthropic.sse") {
            samples.extend(sse_events(&openai));
        }
        samples.push(b"data: \xff\xfe\n\n".to_vec());
        samples.push(b"event: x\n\n".to_vec());
        samples.push(b"data: 12\n\n".to_vec());
        samples.push(br#"data: {"choices":[{"delta":{"tool_calls":[{"index":-1}]}}]}"#.to_vec());
        let mut checked = 0;
        for sample in &samples {
            let body = sample.strip_suffix(b"\n\n").unwrap_or(sample);
            let mut variants: Vec<Vec<u8>> = (0..body.len())
                .map(|cut| [&body[..cut], b"\n\n"].concat())
                .collect();
            for at in (0..body.len()).step_by(7) {
                let mut corrupt = sample.clone();
                corrupt[at] = b'"';
                variants.push(corrupt);
            }
            for variant in variants {
                let mut translator = ToAnthropicStream::new("m");
                let mut out = Vec::new();
                translator.translate(
                    br#"data: {"id":"c","choices":[{"delta":{"content":"a"}}]}

"#,
                    &mut out,
                );
                translator.translate(&variant, &mut out);
                translator.translate(b"data: [DONE]\n\n", &mut out);
                for event in &out {
                    parse_anthropic_event(event);
                }
                let last = parse_anthropic_event(out.last().unwrap()).0;
                assert!(last == "message_stop" || last == "error", "{last}");
                checked += 1;
            }
        }
        assert!(checked > 500, "{checked}");
    }

    #[test]
    fn error_types_per_status() {
        for (status, kind) in [
            (400, "invalid_request_error"),
            (401, "authentication_error"),
            (402, "billing_error"),
            (403, "permission_error"),
            (404, "not_found_error"),
            (405, "invalid_request_error"),
            (413, "request_too_large"),
            (422, "invalid_request_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "api_error"),
            (503, "overloaded_error"),
            (504, "timeout_error"),
            (529, "overloaded_error"),
            (200, "api_error"),
        ] {
            assert_eq!(error_type_for_status(status), kind, "{status}");
        }
    }

    #[test]
    fn openai_errors_become_anthropic_errors() {
        let gateway = crate::api::error_body(
            "the model `nope` does not exist; known models: chat-default",
            "invalid_request_error",
            Some("model_not_found"),
        );
        assert_eq!(
            json(&error_from_openai(404, &gateway)),
            serde_json::json!({"type":"error","error":{"type":"not_found_error","message":"the model `nope` does not exist; known models: chat-default"}})
        );
        let overloaded = error_from_openai(503, br#"{"error":{"message":"every target is open","type":"upstream_error","code":"targets_unavailable"}}"#);
        assert_eq!(json(&overloaded)["error"]["type"], "overloaded_error");
        // A body that is not an OpenAI error is not quoted: it may echo anything.
        for body in [
            &b"<html>key sk-secret</html>"[..],
            br#"{"error":{"message":""}}"#,
            br#"{"error":"sk-secret"}"#,
        ] {
            let out = json(&error_from_openai(502, body));
            assert_eq!(
                out,
                serde_json::json!({"type":"error","error":{"type":"api_error","message":"the upstream answered with HTTP status 502"}})
            );
        }
    }
}
