//! Anthropic's Messages API (`POST /v1/messages`, `anthropic-version:
//! 2023-06-01`): translation between OpenAI chat completions, the gateway's
//! canonical format, and Anthropic messages, for requests, responses,
//! streams and errors. Pure functions over bytes: no I/O, no config types,
//! and no retry decisions (`classify_error` only refines the class that
//! `resilience` derives from the status).
//!
//! # Request fields
//!
//! Translated: `messages`, `max_tokens` / `max_completion_tokens` (the latter
//! wins; the target's default when neither is set), `stop`, `temperature`
//! (0..=1 only: Anthropic's range is half of OpenAI's, so a higher value
//! cannot be scaled without changing its meaning), `top_p`, `stream`,
//! `tools`, `tool_choice`, `parallel_tool_calls`, `user` (as
//! `metadata.user_id`), `response_format`.
//!
//! Accepted and dropped, because they ask nothing of the model: `model`
//! (replaced by the target's), `stream_options` (usage reporting is the
//! caller's `include_usage`), `store` and `metadata` (OpenAI's dashboard),
//! `service_tier` (an OpenAI billing tier), and neutral values of fields
//! that would otherwise be refused (`n: 1`, `logprobs: false`,
//! `top_logprobs: 0`, zero penalties, an empty `logit_bias`,
//! `modalities: ["text"]`, `reasoning_effort: "none"`, nulls).
//!
//! Refused with [`Unsupported`] naming the JSON path: `n` > 1, logprobs,
//! audio, `input_audio` and `file` parts, non-zero penalties, `logit_bias`,
//! `seed`, legacy `functions` / `function_call`, message `name`s, and any
//! field this module does not know. `reasoning_effort` is refused too:
//! Anthropic's extended thinking requires its signed thinking blocks to be
//! sent back with every tool-use turn, and OpenAI messages cannot carry them,
//! so a mapping would break the first tool loop.
//!
//! Shape changes Anthropic forces: `system` and `developer` messages, wherever
//! they appear, become the top-level `system` (joined by blank lines);
//! consecutive messages of one role are merged (Anthropic needs strict
//! user/assistant alternation), `tool` messages become `tool_result` blocks
//! of a user turn; empty text is left out (Anthropic rejects empty text
//! blocks), so a message with nothing else is left out too. A conversation
//! that starts with an assistant turn is refused rather than given an
//! invented user turn.
//!
//! `response_format` is best effort: `json_object` and `json_schema` become
//! an instruction appended to `system` (the schema quoted in it). Anthropic
//! does not enforce it the way OpenAI's structured outputs do.
//! Images: `detail` is accepted and dropped (Anthropic sizes images itself);
//! `image/jpg` data URLs are read as `image/jpeg`. A tool call whose
//! `arguments` is empty is sent as the empty object. A function's `strict`
//! is forwarded as Anthropic's tool `strict` (the same guarantee under the
//! same name; a model without it refuses the request rather than ignore it).
//! Empty stop strings are left out (they stop nothing; Anthropic refuses
//! them).
//!
//! A conversation that ends with an assistant message is sent as is:
//! Anthropic reads it as a prefill and continues that message, where OpenAI
//! would start a new one.
//!
//! # Responses and streams
//!
//! `thinking` / `redacted_thinking` blocks and their deltas are not
//! forwarded: OpenAI's chat format has no field for them, and since
//! `reasoning_effort` is refused they only appear if a target enables
//! thinking by other means. Blocks of server tools are not forwarded either;
//! this module never asks for them.

use super::redact::truncate;
use super::{StreamTranslator, Unsupported};
use crate::api::path::Path;
use crate::api::{ChatChunk, ChatUsage, ChunkChoice};
use crate::resilience::FailureClass;
use crate::streaming::sse::event_data;
use bytes::Bytes;
use serde::{de, Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::ops::Not;

pub const PROVIDER: &str = "anthropic";

/// Upstream messages are kept in error bodies, but not without bound.
const MAX_ERROR_MESSAGE_BYTES: usize = 2048;

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// OpenAI chat request body (a JSON object) -> Anthropic `/v1/messages` body,
/// with `model` replaced by `model`.
pub fn translate_request(
    openai: &[u8],
    model: &str,
    default_max_tokens: u32,
) -> Result<Vec<u8>, Unsupported> {
    let root = Path::ROOT;
    let fields: Members<'_> =
        serde_json::from_slice(openai).map_err(|_| root.unsupported("must be a JSON object"))?;

    let mut messages = None;
    let mut max_tokens = None;
    let mut max_completion_tokens = None;
    let mut tools = None;
    let mut tool_choice = None;
    let mut parallel_tool_calls = None;
    let mut response_format = None;
    let mut out = MessagesRequest {
        model,
        max_tokens: default_max_tokens,
        system: None,
        messages: Vec::new(),
        tools: Vec::new(),
        tool_choice: None,
        stop_sequences: Vec::new(),
        temperature: None,
        top_p: None,
        stream: false,
        metadata: None,
    };

    for (key, value) in fields.0 {
        let at = root.key(&key);
        match key.as_ref() {
            "model" | "stream_options" | "store" | "metadata" => {}
            "service_tier" => {
                parse::<Option<Cow<'_, str>>>(value, &at, "must be a string")?;
            }
            "messages" => messages = Some(value),
            "max_tokens" => max_tokens = parse(value, &at, "must be a positive integer")?,
            "max_completion_tokens" => {
                max_completion_tokens = parse(value, &at, "must be a positive integer")?
            }
            "stop" => out.stop_sequences = stop_sequences(value, &at)?,
            "temperature" => {
                out.temperature = parse::<Option<f64>>(value, &at, "must be a number")?;
                if let Some(t) = out.temperature {
                    if t > 1.0 {
                        return Err(at.unsupported(
                            "is above 1, Anthropic's maximum (its range is 0 to 1, not 0 to 2)",
                        ));
                    }
                    if t < 0.0 {
                        return Err(at.unsupported("must be between 0 and 1"));
                    }
                }
            }
            "top_p" => out.top_p = parse(value, &at, "must be a number")?,
            "stream" => {
                out.stream =
                    parse::<Option<bool>>(value, &at, "must be a boolean")?.unwrap_or(false)
            }
            "user" => {
                out.metadata = parse::<Option<Cow<'_, str>>>(value, &at, "must be a string")?
                    .map(|user_id| Metadata { user_id })
            }
            "tools" => tools = Some(value),
            "tool_choice" => tool_choice = Some(value),
            "parallel_tool_calls" => {
                parallel_tool_calls = parse::<Option<bool>>(value, &at, "must be a boolean")?
            }
            "response_format" => response_format = Some(value),
            "n" => {
                let n = parse::<Option<u64>>(value, &at, "must be a positive integer")?;
                if n.is_some_and(|n| n != 1) {
                    return Err(at.unsupported("above 1: Anthropic returns exactly one choice"));
                }
            }
            "logprobs" => {
                if parse::<Option<bool>>(value, &at, "must be a boolean")? == Some(true) {
                    return Err(at.unsupported("Anthropic does not return log probabilities"));
                }
            }
            "top_logprobs" => {
                let n = parse::<Option<u64>>(value, &at, "must be an integer")?;
                if n.is_some_and(|n| n > 0) {
                    return Err(at.unsupported("Anthropic does not return log probabilities"));
                }
            }
            "frequency_penalty" | "presence_penalty" => {
                let p = parse::<Option<f64>>(value, &at, "must be a number")?;
                if p.is_some_and(|p| p != 0.0) {
                    return Err(at.unsupported("Anthropic has no repetition penalties"));
                }
            }
            "logit_bias" => {
                let bias = parse::<Option<Members<'_>>>(value, &at, "must be an object")?;
                if bias.is_some_and(|b| !b.0.is_empty()) {
                    return Err(at.unsupported("Anthropic does not support token biases"));
                }
            }
            "seed" => {
                if !is_null(value) {
                    return Err(at.unsupported("Anthropic has no seeded sampling"));
                }
            }
            "functions" | "function_call" => {
                if !is_null(value) {
                    return Err(at.unsupported(
                        "is OpenAI's legacy function calling; send `tools` / `tool_choice`",
                    ));
                }
            }
            "audio" => {
                if !is_null(value) {
                    return Err(at.unsupported("Anthropic does not produce audio"));
                }
            }
            "modalities" => {
                let modalities =
                    parse::<Option<Vec<Cow<'_, str>>>>(value, &at, "must be an array of strings")?;
                if modalities.iter().flatten().any(|m| m != "text") {
                    return Err(at.unsupported("Anthropic only produces text"));
                }
            }
            "reasoning_effort" => {
                let effort = parse::<Option<Cow<'_, str>>>(value, &at, "must be a string")?;
                if effort.is_some_and(|e| e != "none") {
                    return Err(at.unsupported(
                        "Anthropic's extended thinking needs its signed thinking blocks sent \
                         back on every tool-use turn, which OpenAI messages cannot carry",
                    ));
                }
            }
            _ => return Err(at.unsupported("is not a field this translation knows")),
        }
    }

    if let Some(t) = max_completion_tokens.or(max_tokens) {
        out.max_tokens = t;
    }

    let messages_at = root.key("messages");
    let Some(messages) = messages else {
        return Err(messages_at.unsupported("is required"));
    };
    let mut conversation = Conversation::default();
    conversation.read(messages, &messages_at)?;

    if let Some(value) = response_format {
        if let Some(instruction) = response_format_instruction(value, &root.key("response_format"))?
        {
            conversation.system.push(Cow::Owned(instruction));
        }
    }
    if !conversation.system.is_empty() {
        out.system = Some(conversation.system.join("\n\n"));
    }
    out.messages = conversation.turns;

    if let Some(value) = tools {
        out.tools = tool_definitions(value, &root.key("tools"))?;
    }
    let choice = match tool_choice {
        Some(value) => tool_choice_from(value, &root.key("tool_choice"))?,
        None => None,
    };
    out.tool_choice = settle_tool_choice(choice, parallel_tool_calls, !out.tools.is_empty());

    serde_json::to_vec(&out).map_err(|_| root.unsupported("could not be encoded for Anthropic"))
}

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<Turn<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<ToolDefinition<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: Cow<'a, str>,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: Role,
    content: Vec<Block<'a>>,
}

#[derive(Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Role {
    User,
    Assistant,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: Cow<'a, str>,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: Cow<'a, str>,
        input: Box<RawValue>,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        content: Vec<Block<'a>>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Url {
        url: Cow<'a, str>,
    },
    Base64 {
        media_type: &'static str,
        data: Cow<'a, str>,
    },
}

#[derive(Serialize)]
struct ToolDefinition<'a> {
    name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Cow<'a, str>>,
    input_schema: InputSchema<'a>,
    #[serde(skip_serializing_if = "Not::not")]
    strict: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum InputSchema<'a> {
    Given(&'a RawValue),
    /// OpenAI lets a function omit `parameters`; Anthropic needs a schema.
    NoParameters {
        #[serde(rename = "type")]
        kind: &'static str,
        properties: EmptyObject,
    },
}

#[derive(Serialize)]
struct EmptyObject {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ToolChoice<'a> {
    Auto {
        #[serde(skip_serializing_if = "Not::not")]
        disable_parallel_tool_use: bool,
    },
    Any {
        #[serde(skip_serializing_if = "Not::not")]
        disable_parallel_tool_use: bool,
    },
    Tool {
        name: Cow<'a, str>,
        #[serde(skip_serializing_if = "Not::not")]
        disable_parallel_tool_use: bool,
    },
    None,
}

/// The conversation as Anthropic wants it: system text apart, turns
/// alternating.
#[derive(Default)]
struct Conversation<'a> {
    system: Vec<Cow<'a, str>>,
    turns: Vec<Turn<'a>>,
}

impl<'a> Conversation<'a> {
    fn read(&mut self, messages: &'a RawValue, at: &Path<'_>) -> Result<(), Unsupported> {
        let messages: Vec<&'a RawValue> = parse(messages, at, "must be an array of messages")?;
        self.turns.reserve(messages.len());
        let mut first_turn_at = None;
        for (i, message) in messages.into_iter().enumerate() {
            let at = at.index(i);
            let before = self.turns.len();
            self.message(message, &at)?;
            if before == 0 && !self.turns.is_empty() {
                first_turn_at = Some(i);
            }
        }
        match (self.turns.first(), first_turn_at) {
            (Some(first), Some(i)) if first.role != Role::User => Err(at
                .index(i)
                .key("role")
                .unsupported(
                "is assistant, but Anthropic needs the conversation to start with a user message",
            )),
            (Some(_), _) => Ok(()),
            _ => Err(at.unsupported(
                "has no user or assistant message with content; Anthropic needs at least one",
            )),
        }
    }

    fn message(&mut self, message: &'a RawValue, at: &Path<'_>) -> Result<(), Unsupported> {
        let fields: Members<'a> = parse(message, at, "must be an object")?;
        let role = match fields.get("role") {
            Some(role) => parse::<Cow<'_, str>>(role, &at.key("role"), "must be a string")?,
            None => return Err(at.key("role").unsupported("is required")),
        };
        match role.as_ref() {
            "system" | "developer" | "user" | "assistant" | "tool" => {}
            "function" => {
                return Err(at
                    .key("role")
                    .unsupported("is OpenAI's legacy function result; send a `tool` message"))
            }
            _ => return Err(at.key("role").unsupported("is not a chat role")),
        }
        let mut content = None;
        let mut tool_calls = None;
        let mut refusal = None;
        let mut tool_call_id = None;
        for (key, value) in &fields.0 {
            let field_at = at.key(key);
            match (role.as_ref(), key.as_ref()) {
                (_, "role") => {}
                (_, "content") => content = Some(*value),
                (_, "name") => {
                    if !is_null(value) {
                        return Err(field_at.unsupported(
                            "has no Anthropic equivalent (messages carry no participant names)",
                        ));
                    }
                }
                ("assistant", "tool_calls") => tool_calls = Some(*value),
                ("assistant", "refusal") => {
                    refusal = parse::<Option<Cow<'a, str>>>(value, &field_at, "must be a string")?
                }
                ("assistant", "function_call") => {
                    if !is_null(value) {
                        return Err(field_at.unsupported(
                            "is OpenAI's legacy function calling; send `tool_calls`",
                        ));
                    }
                }
                ("assistant", "audio") => {
                    if !is_null(value) {
                        return Err(field_at.unsupported("Anthropic has no audio turns"));
                    }
                }
                ("tool", "tool_call_id") => {
                    tool_call_id =
                        Some(parse::<Cow<'a, str>>(value, &field_at, "must be a string")?)
                }
                _ => return Err(field_at.unsupported("is not a field this translation knows")),
            }
        }
        let content_at = at.key("content");
        match role.as_ref() {
            "system" | "developer" => {
                let mut blocks = Vec::new();
                read_content(content, &content_at, Accept::Text, &mut blocks)?;
                self.system
                    .extend(blocks.into_iter().filter_map(|b| match b {
                        Block::Text { text } => Some(text),
                        _ => None,
                    }));
            }
            "user" => {
                let mut blocks = Vec::new();
                read_content(content, &content_at, Accept::UserParts, &mut blocks)?;
                self.push(Role::User, blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                read_content(content, &content_at, Accept::AssistantParts, &mut blocks)?;
                if let Some(text) = refusal.filter(|r| !r.is_empty()) {
                    blocks.push(Block::Text { text });
                }
                if let Some(calls) = tool_calls {
                    read_tool_calls(calls, &at.key("tool_calls"), &mut blocks)?;
                }
                self.push(Role::Assistant, blocks);
            }
            "tool" => {
                let Some(tool_use_id) = tool_call_id else {
                    return Err(at.key("tool_call_id").unsupported("is required"));
                };
                let mut result = Vec::new();
                read_content(content, &content_at, Accept::Text, &mut result)?;
                let block = Block::ToolResult {
                    tool_use_id,
                    content: result,
                };
                self.push(Role::User, vec![block]);
            }
            // Roles were checked above.
            _ => {}
        }
        Ok(())
    }

    /// Appends a turn, merging it into the previous one of the same role.
    fn push(&mut self, role: Role, blocks: Vec<Block<'a>>) {
        if blocks.is_empty() {
            return;
        }
        match self.turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => self.turns.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
}

/// Which content parts a role may send.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Accept {
    Text,
    UserParts,
    AssistantParts,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Part<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    image_url: Option<ImageUrl<'a>>,
    #[serde(borrow, default)]
    refusal: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    #[allow(
        dead_code,
        reason = "recognised so that the refusal can name the part type"
    )]
    input_audio: Option<&'a RawValue>,
    #[serde(borrow, default)]
    #[allow(
        dead_code,
        reason = "recognised so that the refusal can name the part type"
    )]
    file: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageUrl<'a> {
    #[serde(borrow)]
    url: Cow<'a, str>,
    #[serde(borrow, default)]
    #[allow(dead_code, reason = "Anthropic sizes images itself")]
    detail: Option<Cow<'a, str>>,
}

/// Reads a message's `content` (a string, an array of parts, or null) into
/// blocks, leaving out empty text.
fn read_content<'a>(
    content: Option<&'a RawValue>,
    at: &Path<'_>,
    accept: Accept,
    blocks: &mut Vec<Block<'a>>,
) -> Result<(), Unsupported> {
    let Some(content) = content.filter(|c| !is_null(c)) else {
        return Ok(());
    };
    if content.get().starts_with('"') {
        let text: Cow<'a, str> = parse(content, at, "must be a string or an array of parts")?;
        if !text.is_empty() {
            blocks.push(Block::Text { text });
        }
        return Ok(());
    }
    let parts: Vec<&'a RawValue> = parse(content, at, "must be a string or an array of parts")?;
    blocks.reserve(parts.len());
    for (j, part) in parts.into_iter().enumerate() {
        let at = at.index(j);
        let part: Part<'a> = parse(
            part,
            &at,
            "must be a content part (`type` with `text`, `image_url` or `refusal`)",
        )?;
        let type_at = at.key("type");
        match (part.kind.as_ref(), accept) {
            ("text", _) => {
                let Some(text) = part.text else {
                    return Err(at.key("text").unsupported("is required"));
                };
                if !text.is_empty() {
                    blocks.push(Block::Text { text });
                }
            }
            ("image_url", Accept::UserParts) => {
                let Some(image) = part.image_url else {
                    return Err(at.key("image_url").unsupported("is required"));
                };
                let source = image_source(image.url, &at.key("image_url").key("url"))?;
                blocks.push(Block::Image { source });
            }
            ("refusal", Accept::AssistantParts) => {
                let Some(text) = part.refusal else {
                    return Err(at.key("refusal").unsupported("is required"));
                };
                if !text.is_empty() {
                    blocks.push(Block::Text { text });
                }
            }
            ("input_audio", _) => {
                return Err(type_at.unsupported("is audio input, which Anthropic does not accept"))
            }
            ("file", _) => {
                return Err(
                    type_at.unsupported("is a file part, which this translation does not support")
                )
            }
            ("image_url", _) => {
                return Err(type_at.unsupported("is only allowed in user messages"));
            }
            _ => return Err(type_at.unsupported("is not a content part this role can send")),
        }
    }
    Ok(())
}

/// An `image_url` as an Anthropic image source: http(s) URLs by reference,
/// `data:` URLs as base64 of one of the four image types Anthropic reads.
fn image_source<'a>(url: Cow<'a, str>, at: &Path<'_>) -> Result<ImageSource<'a>, Unsupported> {
    let scheme_end = url.find(':').unwrap_or(0);
    let scheme = url.get(..scheme_end).unwrap_or("");
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        return Ok(ImageSource::Url { url });
    }
    if !scheme.eq_ignore_ascii_case("data") {
        return Err(at.unsupported("must be an http(s) URL or a base64 data URL"));
    }
    let Some((meta, data)) = url.get(scheme_end + 1..).and_then(|r| r.split_once(',')) else {
        return Err(at.unsupported("is a data URL without data"));
    };
    let mut params = meta.split(';');
    let media = params.next().unwrap_or("");
    if !params.any(|p| p.eq_ignore_ascii_case("base64")) {
        return Err(at.unsupported("is a data URL that is not base64"));
    }
    let media_type = match media.to_ascii_lowercase().as_str() {
        "image/jpeg" | "image/jpg" => "image/jpeg",
        "image/png" => "image/png",
        "image/gif" => "image/gif",
        "image/webp" => "image/webp",
        _ => {
            return Err(at.unsupported(
                "has a media type Anthropic does not read (jpeg, png, gif and webp only)",
            ))
        }
    };
    let data = match &url {
        Cow::Borrowed(whole) => {
            // Re-borrow from the request body rather than copy the image.
            let start = whole.len() - data.len();
            Cow::Borrowed(whole.get(start..).unwrap_or(""))
        }
        Cow::Owned(_) => Cow::Owned(data.to_owned()),
    };
    Ok(ImageSource::Base64 { media_type, data })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    function: FunctionCall<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionCall<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    arguments: Option<Cow<'a, str>>,
}

fn read_tool_calls<'a>(
    calls: &'a RawValue,
    at: &Path<'_>,
    blocks: &mut Vec<Block<'a>>,
) -> Result<(), Unsupported> {
    let calls: Option<Vec<&'a RawValue>> = parse(calls, at, "must be an array of tool calls")?;
    for (k, call) in calls.into_iter().flatten().enumerate() {
        let at = at.index(k);
        let call: ToolCall<'a> = parse(
            call,
            &at,
            "must be a tool call ({id, type: \"function\", function: {name, arguments}})",
        )?;
        if call.kind.as_deref().is_some_and(|k| k != "function") {
            return Err(at
                .key("type")
                .unsupported("is not `function`, the only tool call Anthropic can take"));
        }
        let function_at = at.key("function");
        let arguments_at = function_at.key("arguments");
        let arguments = call.function.arguments.unwrap_or(Cow::Borrowed(""));
        let input = if arguments.trim().is_empty() {
            RawValue::from_string("{}".to_owned())
        } else {
            serde_json::from_str::<Box<RawValue>>(&arguments)
        }
        .map_err(|_| arguments_at.unsupported("is not valid JSON"))?;
        if !input.get().starts_with('{') {
            return Err(arguments_at.unsupported("must be a JSON object for Anthropic"));
        }
        blocks.push(Block::ToolUse {
            id: call.id,
            name: call.function.name,
            input,
        });
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    function: Option<FunctionDefinition<'a>>,
    #[serde(borrow, default)]
    #[allow(dead_code, reason = "recognised so that the refusal names the type")]
    custom: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionDefinition<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow, default)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
    #[serde(default)]
    strict: Option<bool>,
}

fn tool_definitions<'a>(
    tools: &'a RawValue,
    at: &Path<'_>,
) -> Result<Vec<ToolDefinition<'a>>, Unsupported> {
    let tools: Option<Vec<&'a RawValue>> = parse(tools, at, "must be an array of tools")?;
    let tools = tools.unwrap_or_default();
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        let at = at.index(i);
        let tool: Tool<'a> = parse(
            tool,
            &at,
            "must be a tool ({type: \"function\", function: {name, description, parameters, strict}})",
        )?;
        if tool.kind != "function" {
            return Err(at
                .key("type")
                .unsupported("is not `function`, the only tool type Anthropic can take"));
        }
        let Some(function) = tool.function else {
            return Err(at.key("function").unsupported("is required"));
        };
        out.push(ToolDefinition {
            name: function.name,
            description: function.description.filter(|d| !d.is_empty()),
            input_schema: match function.parameters {
                Some(schema) => InputSchema::Given(schema),
                None => InputSchema::NoParameters {
                    kind: "object",
                    properties: EmptyObject {},
                },
            },
            // Anthropic's strict tool use is the same guarantee under the same name.
            strict: function.strict.unwrap_or(false),
        });
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    function: Option<NamedFunction<'a>>,
    #[serde(borrow, default)]
    #[allow(dead_code, reason = "recognised so that the refusal names the type")]
    allowed_tools: Option<&'a RawValue>,
    #[serde(borrow, default)]
    #[allow(dead_code, reason = "recognised so that the refusal names the type")]
    custom: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedFunction<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// `tool_choice` as given; `disable_parallel_tool_use` is settled later.
enum Choice<'a> {
    Auto,
    Any,
    None,
    Tool(Cow<'a, str>),
}

fn tool_choice_from<'a>(
    value: &'a RawValue,
    at: &Path<'_>,
) -> Result<Option<Choice<'a>>, Unsupported> {
    if is_null(value) {
        return Ok(None);
    }
    if value.get().starts_with('"') {
        let mode: Cow<'_, str> = parse(value, at, "must be a string or an object")?;
        return match mode.as_ref() {
            "auto" => Ok(Some(Choice::Auto)),
            "required" => Ok(Some(Choice::Any)),
            "none" => Ok(Some(Choice::None)),
            _ => Err(at.unsupported("must be `auto`, `required` or `none`")),
        };
    }
    let named: NamedToolChoice<'a> = parse(
        value,
        at,
        "must be {type: \"function\", function: {name}} or a mode string",
    )?;
    if named.kind != "function" {
        return Err(at
            .key("type")
            .unsupported("is not `function`, the only forced choice Anthropic can take"));
    }
    match named.function {
        Some(f) => Ok(Some(Choice::Tool(f.name))),
        None => Err(at.key("function").unsupported("is required")),
    }
}

fn settle_tool_choice<'a>(
    choice: Option<Choice<'a>>,
    parallel_tool_calls: Option<bool>,
    has_tools: bool,
) -> Option<ToolChoice<'a>> {
    let disable_parallel_tool_use = parallel_tool_calls == Some(false);
    match choice {
        // Without tools, "auto" and "none" mean what no tool_choice means,
        // and Anthropic refuses a tool_choice that comes without tools.
        None | Some(Choice::Auto) | Some(Choice::None) if !has_tools => None,
        None if disable_parallel_tool_use => Some(ToolChoice::Auto {
            disable_parallel_tool_use,
        }),
        None => None,
        Some(Choice::Auto) => Some(ToolChoice::Auto {
            disable_parallel_tool_use,
        }),
        Some(Choice::Any) => Some(ToolChoice::Any {
            disable_parallel_tool_use,
        }),
        Some(Choice::Tool(name)) => Some(ToolChoice::Tool {
            name,
            disable_parallel_tool_use,
        }),
        // With tool use off there is nothing to run in parallel.
        Some(Choice::None) => Some(ToolChoice::None),
    }
}

fn stop_sequences<'a>(
    value: &'a RawValue,
    at: &Path<'_>,
) -> Result<Vec<Cow<'a, str>>, Unsupported> {
    const EXPECTED: &str = "must be a string or an array of strings";
    let stops = if is_null(value) {
        Vec::new()
    } else if value.get().starts_with('"') {
        vec![parse::<Cow<'a, str>>(value, at, EXPECTED)?]
    } else {
        parse::<Vec<Cow<'a, str>>>(value, at, EXPECTED)?
    };
    // An empty stop string means nothing to OpenAI; Anthropic refuses one.
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseFormat<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    json_schema: Option<JsonSchemaFormat<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSchemaFormat<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    description: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
    #[serde(default)]
    #[allow(dead_code, reason = "best effort either way: see the module doc")]
    strict: Option<bool>,
}

const JSON_ONLY: &str = "Respond with a single valid JSON object and nothing else: no text or \
                         code fences before or after it.";

/// `response_format` as an instruction appended to `system` (see the module
/// doc: best effort, not enforced by Anthropic).
fn response_format_instruction(
    value: &RawValue,
    at: &Path<'_>,
) -> Result<Option<String>, Unsupported> {
    let format: Option<ResponseFormat<'_>> = parse(
        value,
        at,
        "must be {type: \"text\" | \"json_object\" | \"json_schema\", json_schema?}",
    )?;
    let Some(format) = format else {
        return Ok(None);
    };
    match format.kind.as_ref() {
        "text" => Ok(None),
        "json_object" => Ok(Some(JSON_ONLY.to_owned())),
        "json_schema" => {
            let Some(spec) = format.json_schema else {
                return Err(at.key("json_schema").unsupported("is required"));
            };
            let mut instruction = String::from(JSON_ONLY);
            if let Some(schema) = spec.schema {
                instruction.push_str(" The object must conform to this JSON Schema");
                if let Some(name) = spec.name.filter(|n| !n.is_empty()) {
                    instruction.push_str(" (`");
                    instruction.push_str(&name);
                    instruction.push_str("`)");
                }
                if let Some(description) = spec.description.filter(|d| !d.is_empty()) {
                    instruction.push_str(", described as: ");
                    instruction.push_str(&description);
                }
                instruction.push_str(":\n");
                instruction.push_str(schema.get());
            }
            Ok(Some(instruction))
        }
        _ => Err(at
            .key("type")
            .unsupported("must be `text`, `json_object` or `json_schema`")),
    }
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

/// An upstream body that is not what Anthropic documents. Carries only the
/// position and kind of the problem, never upstream bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("anthropic sent a body that is not a Messages API message ({problem} at line {line}, column {column})")]
    Malformed {
        problem: &'static str,
        line: usize,
        column: usize,
    },
}

impl From<serde_json::Error> for TranslateError {
    fn from(e: serde_json::Error) -> Self {
        let problem = match e.classify() {
            serde_json::error::Category::Syntax => "invalid JSON",
            serde_json::error::Category::Eof => "truncated JSON",
            serde_json::error::Category::Data => "unexpected shape",
            serde_json::error::Category::Io => "unreadable",
        };
        TranslateError::Malformed {
            problem,
            line: e.line(),
            column: e.column(),
        }
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    content: Vec<ContentBlock<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    usage: AnthropicUsage,
}

/// Every block type in one shape: the fields a block does not have stay
/// `None`, and unknown block types are skipped.
#[derive(Deserialize)]
struct ContentBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// OpenAI counts every prompt token; Anthropic splits off cached ones.
    fn prompt_tokens(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        ];
        parts.iter().any(Option::is_some).then(|| {
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b))
        })
    }
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    usage: ChatUsage,
}

#[derive(Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// Anthropic message (non-stream success body) -> OpenAI `chat.completion`
/// body.
pub fn translate_response(anthropic: &[u8], created: u64) -> Result<Vec<u8>, TranslateError> {
    let message: Message<'_> = serde_json::from_slice(anthropic)?;
    let mut text: Option<Cow<'_, str>> = None;
    let mut tool_calls = Vec::new();
    for block in &message.content {
        match block.kind.as_ref() {
            "text" => {
                let Some(part) = block.text.as_deref() else {
                    continue;
                };
                match &mut text {
                    None => text = Some(Cow::Borrowed(part)),
                    Some(all) => all.to_mut().push_str(part),
                }
            }
            "tool_use" => tool_calls.push(ToolCallOut {
                id: block.id.as_deref().unwrap_or(""),
                kind: "function",
                function: FunctionOut {
                    name: block.name.as_deref().unwrap_or(""),
                    arguments: block.input.map_or("{}", RawValue::get),
                },
            }),
            _ => {}
        }
    }
    let usage = message.usage;
    let completion = ChatCompletion {
        id: &message.id,
        object: "chat.completion",
        created,
        model: &message.model,
        choices: [CompletionChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content: text,
                tool_calls,
            },
            logprobs: None,
            finish_reason: message.stop_reason.as_deref().map(finish_reason),
        }],
        usage: ChatUsage::new(
            usage.prompt_tokens().unwrap_or(0),
            usage.output_tokens.unwrap_or(0),
        ),
    };
    Ok(serde_json::to_vec(&completion)?)
}

/// Anthropic `stop_reason` -> OpenAI `finish_reason`.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn (a server tool paused the turn:
        // the answer so far is complete as far as the client can tell), and
        // reasons added after this was written.
        _ => "stop",
    }
}

// ---------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------

/// Translates Anthropic's stream events into OpenAI chunks, one upstream
/// event at a time.
pub struct AnthropicStream {
    include_usage: bool,
    created: u64,
    id: String,
    model: String,
    usage: AnthropicUsage,
    /// (Anthropic content-block index, OpenAI tool-call index) of each
    /// `tool_use` block so far: OpenAI numbers tool calls from 0, Anthropic
    /// numbers all blocks.
    tool_blocks: Vec<(u64, u32)>,
    /// Set after `message_stop` or an error: nothing may follow `[DONE]` or
    /// an error event.
    finished: bool,
}

impl AnthropicStream {
    pub fn new(include_usage: bool, created: u64) -> Self {
        AnthropicStream {
            include_usage,
            created,
            id: String::new(),
            model: String::new(),
            usage: AnthropicUsage::default(),
            tool_blocks: Vec::new(),
            finished: false,
        }
    }

    fn chunk(&self, delta: ChunkDelta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        let choices = [ChunkChoice::first(delta, finish_reason)];
        sse_data(&ChatChunk::new(
            &self.id,
            self.created,
            &self.model,
            &choices,
            None,
        ))
    }

    fn tool_index(&self, block: Option<u64>) -> Option<u32> {
        let block = block?;
        self.tool_blocks
            .iter()
            .find(|(b, _)| *b == block)
            .map(|(_, k)| *k)
    }

    fn fail(&mut self, out: &mut Vec<Bytes>, event: Bytes) {
        out.push(event);
        self.finished = true;
    }

    fn handle(&mut self, event: StreamEvent<'_>, out: &mut Vec<Bytes>) -> Result<(), Garbage> {
        match event.kind.as_ref() {
            "message_start" => {
                let message = event.message.ok_or(Garbage)?;
                self.id = message.id.into_owned();
                self.model = message.model.into_owned();
                self.usage = message.usage;
                out.push(self.chunk(
                    ChunkDelta {
                        role: Some("assistant"),
                        content: Some(""),
                        tool_calls: None,
                    },
                    None,
                ));
            }
            "content_block_start" => {
                let block = event.content_block.ok_or(Garbage)?;
                match block.kind.as_ref() {
                    "text" => {
                        if let Some(text) = block.text.as_deref().filter(|t| !t.is_empty()) {
                            out.push(self.chunk(ChunkDelta::content(text), None));
                        }
                    }
                    "tool_use" => {
                        let index = event.index.ok_or(Garbage)?;
                        let k = u32::try_from(self.tool_blocks.len()).map_err(|_| Garbage)?;
                        self.tool_blocks.push((index, k));
                        let call = ToolCallDelta {
                            index: k,
                            id: Some(block.id.as_deref().unwrap_or("")),
                            kind: Some("function"),
                            function: FunctionDelta {
                                name: Some(block.name.as_deref().unwrap_or("")),
                                arguments: "",
                            },
                        };
                        out.push(self.chunk(ChunkDelta::tool_call(call), None));
                    }
                    // thinking, redacted_thinking, server tool blocks: see the module doc.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = event.delta.ok_or(Garbage)?;
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        let text = delta.text.ok_or(Garbage)?;
                        if !text.is_empty() {
                            out.push(self.chunk(ChunkDelta::content(&text), None));
                        }
                    }
                    Some("input_json_delta") => {
                        let partial = delta.partial_json.ok_or(Garbage)?;
                        let k = self.tool_index(event.index).ok_or(Garbage)?;
                        if !partial.is_empty() {
                            let call = ToolCallDelta {
                                index: k,
                                id: None,
                                kind: None,
                                function: FunctionDelta {
                                    name: None,
                                    arguments: &partial,
                                },
                            };
                            out.push(self.chunk(ChunkDelta::tool_call(call), None));
                        }
                    }
                    // thinking_delta, signature_delta (see the module doc),
                    // citations_delta and delta types added later.
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(usage) = event.usage {
                    // message_delta's counts are cumulative; keep what it omits.
                    let u = &mut self.usage;
                    u.output_tokens = usage.output_tokens.or(u.output_tokens);
                    u.input_tokens = usage.input_tokens.or(u.input_tokens);
                    u.cache_read_input_tokens =
                        usage.cache_read_input_tokens.or(u.cache_read_input_tokens);
                    u.cache_creation_input_tokens = usage
                        .cache_creation_input_tokens
                        .or(u.cache_creation_input_tokens);
                }
                let stop = event.delta.and_then(|d| d.stop_reason);
                if let Some(stop) = stop {
                    out.push(self.chunk(ChunkDelta::default(), Some(finish_reason(&stop))));
                }
            }
            "message_stop" => {
                if self.include_usage {
                    let usage = ChatUsage::new(
                        self.usage.prompt_tokens().unwrap_or(0),
                        self.usage.output_tokens.unwrap_or(0),
                    );
                    out.push(sse_data(&ChatChunk::<ChunkDelta<'_>>::new(
                        &self.id,
                        self.created,
                        &self.model,
                        &[],
                        Some(usage),
                    )));
                }
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
                self.finished = true;
            }
            "error" => {
                let error = event.error.ok_or(Garbage)?;
                let kind = error.kind.as_deref().unwrap_or("");
                let message = error.message.as_deref().unwrap_or("");
                let body = openai_error(None, kind, message);
                self.fail(out, sse_data(&body));
            }
            // content_block_stop, ping, and event types added later.
            _ => {}
        }
        Ok(())
    }
}

impl StreamTranslator for AnthropicStream {
    fn translate(&mut self, event: &[u8], out: &mut Vec<Bytes>) {
        if self.finished {
            return;
        }
        // Comments and events without data (keep-alives) mean nothing.
        let Some(data) = event_data(event) else {
            return;
        };
        let handled = serde_json::from_slice::<StreamEvent<'_>>(&data)
            .map_err(|_| Garbage)
            .and_then(|event| self.handle(event, out));
        if handled.is_err() {
            let body = OpenAiError::new(
                "anthropic: the upstream stream sent an event that is not valid Messages API \
                 streaming; the answer is incomplete"
                    .to_owned(),
                "server_error",
                Some("invalid_upstream_event"),
            );
            self.fail(out, sse_data(&body));
        }
    }
}

/// An upstream event that does not parse or lacks what its type requires.
struct Garbage;

/// Every streaming event type in one shape; what a type lacks stays `None`.
#[derive(Deserialize)]
struct StreamEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    message: Option<StartMessage<'a>>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    content_block: Option<ContentBlock<'a>>,
    #[serde(borrow, default)]
    delta: Option<EventDelta<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(borrow, default)]
    error: Option<AnthropicErrorObject<'a>>,
}

#[derive(Deserialize)]
struct StartMessage<'a> {
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(default)]
    usage: AnthropicUsage,
}

/// A content-block delta or a message delta.
#[derive(Deserialize)]
struct EventDelta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Serialize, Default)]
struct ChunkDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

impl<'a> ChunkDelta<'a> {
    fn content(text: &'a str) -> Self {
        ChunkDelta {
            content: Some(text),
            ..ChunkDelta::default()
        }
    }

    fn tool_call(call: ToolCallDelta<'a>) -> Self {
        ChunkDelta {
            tool_calls: Some([call]),
            ..ChunkDelta::default()
        }
    }
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

/// `data: {json}\n\n`.
fn sse_data(value: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(192);
    buf.extend_from_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        // Our own types always serialize; this keeps the event well formed anyway.
        return Bytes::from_static(
            b"data: {\"error\":{\"message\":\"anthropic: could not encode a chunk\",\"type\":\"server_error\",\"code\":null}}\n\n",
        );
    }
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct AnthropicErrorBody<'a> {
    #[serde(borrow, default)]
    error: Option<AnthropicErrorObject<'a>>,
}

#[derive(Deserialize)]
struct AnthropicErrorObject<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

fn parse_error(body: &[u8]) -> Option<AnthropicErrorObject<'_>> {
    serde_json::from_slice::<AnthropicErrorBody<'_>>(body)
        .ok()
        .and_then(|b| b.error)
}

/// Anthropic reports a prompt that does not fit the model's window as a
/// plain `invalid_request_error`; only the message tells.
fn says_context_length(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("prompt is too long")
        || message.contains("context limit")
        || message.contains("context window")
}

/// Refines the status-based class for Anthropic's error shapes; `None` =
/// use the status class.
pub fn classify_error(status: u16, body: &[u8]) -> Option<FailureClass> {
    let error = parse_error(body);
    let kind = error.as_ref().and_then(|e| e.kind.as_deref());
    if status == 529 || kind == Some("overloaded_error") {
        return Some(FailureClass::Transient);
    }
    let message = error.as_ref().and_then(|e| e.message.as_deref());
    if status == 400
        && kind == Some("invalid_request_error")
        && message.is_some_and(says_context_length)
    {
        return Some(FailureClass::ContextLength);
    }
    None
}

/// Anthropic error body -> OpenAI error body `{"error":{"message","type","code"}}`.
pub fn error_to_openai(status: u16, body: &[u8]) -> Vec<u8> {
    let error = parse_error(body);
    let kind = error.as_ref().and_then(|e| e.kind.as_deref()).unwrap_or("");
    let message = error
        .as_ref()
        .and_then(|e| e.message.as_deref())
        .unwrap_or("");
    serde_json::to_vec(&openai_error(Some(status), kind, message)).unwrap_or_else(|_| {
        br#"{"error":{"message":"anthropic: upstream error","type":"server_error","code":null}}"#
            .to_vec()
    })
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    error: OpenAiErrorObject<'a>,
}

#[derive(Serialize)]
struct OpenAiErrorObject<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
}

impl<'a> OpenAiError<'a> {
    fn new(message: String, kind: &'a str, code: Option<&'a str>) -> Self {
        OpenAiError {
            error: OpenAiErrorObject {
                message,
                kind,
                code,
            },
        }
    }
}

/// The OpenAI error for an Anthropic error `kind` and `message`; `status` is
/// `None` inside a stream (the head said 200). An empty `message` or an
/// unknown `kind` fall back on the status.
fn openai_error(status: Option<u16>, kind: &str, message: &str) -> OpenAiError<'static> {
    let (openai_kind, code) = match kind {
        "invalid_request_error" if says_context_length(message) => {
            ("invalid_request_error", Some("context_length_exceeded"))
        }
        "invalid_request_error" => ("invalid_request_error", None),
        "authentication_error" => ("authentication_error", None),
        "permission_error" => ("permission_error", None),
        "not_found_error" => ("not_found_error", None),
        "rate_limit_error" => ("rate_limit_error", Some("rate_limit_exceeded")),
        "request_too_large" => ("invalid_request_error", Some("request_too_large")),
        "billing_error" => ("insufficient_quota", Some("insufficient_quota")),
        "api_error" => ("server_error", Some("api_error")),
        "overloaded_error" => ("server_error", Some("overloaded")),
        "timeout_error" => ("server_error", Some("timeout")),
        _ => match status {
            Some(400 | 413 | 422) => ("invalid_request_error", None),
            Some(401) => ("authentication_error", None),
            Some(403) => ("permission_error", None),
            Some(404) => ("not_found_error", None),
            Some(429) => ("rate_limit_error", Some("rate_limit_exceeded")),
            Some(529) => ("server_error", Some("overloaded")),
            Some(400..=499) => ("invalid_request_error", None),
            _ => ("server_error", None),
        },
    };
    let message = if message.is_empty() {
        match status {
            Some(status) => format!("anthropic: upstream error (HTTP {status})"),
            None => "anthropic: upstream error in the stream".to_owned(),
        }
    } else {
        let message = truncate(message, MAX_ERROR_MESSAGE_BYTES);
        format!("anthropic: {}", super::redact::key_shaped(message))
    };
    OpenAiError::new(message, openai_kind, code)
}

// ---------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------

/// A JSON object's members in document order, values left unparsed, so
/// that every key can be accounted for (and an unknown one named).
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// An object key, borrowed unless it contains escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

fn is_null(value: &RawValue) -> bool {
    value.get() == "null"
}

/// Parses one request value; the client hears `expected` if it does not fit.
fn parse<'a, T: Deserialize<'a>>(
    value: &'a RawValue,
    at: &Path<'_>,
    expected: &str,
) -> Result<T, Unsupported> {
    serde_json::from_str(value.get()).map_err(|_| at.unsupported(expected))
}

/// A refusal naming the request field at `self`.
trait RefuseAt {
    fn unsupported(&self, reason: impl Into<String>) -> Unsupported;
}

impl RefuseAt for Path<'_> {
    fn unsupported(&self, reason: impl Into<String>) -> Unsupported {
        Unsupported {
            provider: PROVIDER,
            field: self.field(),
            reason: reason.into(),
        }
    }
}

/// The adapter the gateway dispatches to for `kind = "anthropic"`.
pub struct Anthropic;

impl super::Provider for Anthropic {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    fn urls(&self, base: &str, _model: &str, _api_version: Option<&str>) -> Option<super::Urls> {
        let chat: http::Uri = format!("{base}/v1/messages").parse().ok()?;
        Some(super::Urls {
            stream: chat.clone(),
            chat,
            embeddings: None,
        })
    }

    fn translate_request(
        &self,
        target: &crate::config::Target,
        endpoint: crate::api::Endpoint,
        body: &crate::api::InspectedBody,
    ) -> Result<Bytes, Unsupported> {
        super::chat_only(PROVIDER, endpoint)?;
        translate_request(
            body.bytes(),
            &target.model,
            target.provider.default_max_tokens,
        )
        .map(Bytes::from)
    }

    fn extra_headers(&self, target: &crate::config::Target, headers: &mut http::HeaderMap) {
        if let Some(version) = &target.provider.api_version {
            headers.insert("anthropic-version", version.clone());
        }
    }

    fn translate_response(&self, _target: &crate::config::Target, body: Bytes) -> Option<Bytes> {
        translate_response(&body, super::unix_now())
            .ok()
            .map(Bytes::from)
    }

    fn stream_translator(
        &self,
        _target: &crate::config::Target,
        body: &crate::api::InspectedBody,
    ) -> Option<Box<dyn StreamTranslator>> {
        Some(Box::new(AnthropicStream::new(
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
    use crate::streaming::sse::SseFramer;
    use serde_json::{json, Value};

    const MODEL: &str = "claude-sonnet-4-5";
    const DEFAULT_MAX_TOKENS: u32 = 1024;
    const CREATED: u64 = 1_700_000_000;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/anthropic/",
                $name
            ))
            .as_slice()
        };
    }

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("test JSON parses")
    }

    /// `created` is the caller's clock: checked once, then left out of comparisons.
    fn without_created(mut v: Value) -> Value {
        if let Some(obj) = v.as_object_mut() {
            if let Some(created) = obj.remove("created") {
                assert_eq!(created, json!(CREATED));
            }
        }
        v
    }

    fn request(body: &[u8]) -> Result<Value, Unsupported> {
        translate_request(body, MODEL, DEFAULT_MAX_TOKENS).map(|out| json(&out))
    }

    fn request_value(body: Value) -> Result<Value, Unsupported> {
        request(body.to_string().as_bytes())
    }

    fn refused_field(body: Value) -> String {
        let err = request_value(body.clone()).expect_err("should be refused");
        assert_eq!(err.provider, PROVIDER);
        assert!(err.to_string().contains(&err.field), "{err}");
        err.field
    }

    fn user(text: &str) -> Value {
        json!({"role": "user", "content": text})
    }

    // --- requests -------------------------------------------------------

    #[test]
    fn request_fixtures() {
        let pairs: [(&str, &[u8], &[u8]); 5] = [
            (
                "system_multiturn",
                fixture!("request_system_multiturn.openai.json"),
                fixture!("request_system_multiturn.anthropic.json"),
            ),
            (
                "images",
                fixture!("request_images.openai.json"),
                fixture!("request_images.anthropic.json"),
            ),
            (
                "tools",
                fixture!("request_tools.openai.json"),
                fixture!("request_tools.anthropic.json"),
            ),
            (
                "tool_results",
                fixture!("request_tool_results.openai.json"),
                fixture!("request_tool_results.anthropic.json"),
            ),
            (
                "json_schema",
                fixture!("request_json_schema.openai.json"),
                fixture!("request_json_schema.anthropic.json"),
            ),
        ];
        for (name, openai, anthropic) in pairs {
            let got = request(openai).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, json(anthropic), "{name}");
        }
    }

    #[test]
    fn each_unsupported_field_is_named() {
        let base = |extra: Value| {
            let mut body = json!({"model": "m", "messages": [user("hi")]});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            body
        };
        let cases = [
            (json!({"n": 2}), "n"),
            (json!({"logprobs": true}), "logprobs"),
            (json!({"top_logprobs": 3}), "top_logprobs"),
            (
                json!({"audio": {"voice": "alloy", "format": "wav"}}),
                "audio",
            ),
            (json!({"modalities": ["text", "audio"]}), "modalities"),
            (json!({"frequency_penalty": 0.5}), "frequency_penalty"),
            (json!({"presence_penalty": -1}), "presence_penalty"),
            (json!({"logit_bias": {"50256": -100}}), "logit_bias"),
            (json!({"seed": 42}), "seed"),
            (json!({"functions": [{"name": "f"}]}), "functions"),
            (json!({"function_call": "auto"}), "function_call"),
            (
                json!({"prediction": {"type": "content", "content": "x"}}),
                "prediction",
            ),
            (json!({"temperature": 1.5}), "temperature"),
            (json!({"temperature": -0.1}), "temperature"),
            (json!({"reasoning_effort": "high"}), "reasoning_effort"),
            (json!({"max_tokens": -1}), "max_tokens"),
            (json!({"stop": 3}), "stop"),
            (
                json!({"tools": [{"type": "custom", "custom": {"name": "x"}}]}),
                "tools[0].type",
            ),
            (
                json!({"tools": [{"type": "function"}]}),
                "tools[0].function",
            ),
            (
                json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}),
                "tool_choice.type",
            ),
            (json!({"tool_choice": "sometimes"}), "tool_choice"),
            (
                json!({"response_format": {"type": "yaml"}}),
                "response_format.type",
            ),
            (
                json!({"response_format": {"type": "json_schema"}}),
                "response_format.json_schema",
            ),
        ];
        for (extra, field) in cases {
            assert_eq!(refused_field(base(extra.clone())), field, "{extra}");
        }
    }

    #[test]
    fn each_unsupported_message_shape_is_named() {
        let with = |messages: Value| json!({"model": "m", "messages": messages});
        let part = |p: Value| with(json!([{"role": "user", "content": [p]}]));
        let image = |url: &str| part(json!({"type": "image_url", "image_url": {"url": url}}));
        let call = |arguments: &str| {
            with(json!([
                user("hi"),
                {"role": "assistant", "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": arguments}}
                ]}
            ]))
        };
        let cases = [
            (
                part(
                    json!({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
                ),
                "messages[0].content[0].type",
            ),
            (
                part(json!({"type": "file", "file": {"file_id": "file-1"}})),
                "messages[0].content[0].type",
            ),
            (
                part(json!({"type": "video"})),
                "messages[0].content[0].type",
            ),
            (
                part(json!({"type": "text", "text": "x", "cache_control": {}})),
                "messages[0].content[0]",
            ),
            (
                image("data:image/svg+xml;base64,PHN2Zz4="),
                "messages[0].content[0].image_url.url",
            ),
            (
                image("data:image/png,rawbytes"),
                "messages[0].content[0].image_url.url",
            ),
            (
                image("data:image/png;base64"),
                "messages[0].content[0].image_url.url",
            ),
            (
                image("ftp://example.com/a.png"),
                "messages[0].content[0].image_url.url",
            ),
            (image("cat.png"), "messages[0].content[0].image_url.url"),
            (
                call("{not json"),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                call("[1, 2]"),
                "messages[1].tool_calls[0].function.arguments",
            ),
            (
                with(json!([{"role": "user", "content": "hi", "name": "ada"}])),
                "messages[0].name",
            ),
            (
                with(json!([{"role": "function", "name": "f", "content": "1"}])),
                "messages[0].role",
            ),
            (
                with(json!([{"role": "critic", "content": "hi"}])),
                "messages[0].role",
            ),
            (with(json!([{"content": "hi"}])), "messages[0].role"),
            (
                with(json!([{"role": "user", "content": 7}])),
                "messages[0].content",
            ),
            (
                with(json!([{"role": "user", "content": "hi", "tool_call_id": "x"}])),
                "messages[0].tool_call_id",
            ),
            (
                with(json!([user("hi"), {"role": "tool", "content": "1"}])),
                "messages[1].tool_call_id",
            ),
            (
                with(
                    json!([user("hi"), {"role": "assistant", "content": "a", "function_call": {"name": "f", "arguments": "{}"}}]),
                ),
                "messages[1].function_call",
            ),
            (
                with(json!([user("hi"), {"role": "assistant", "audio": {"id": "a1"}}])),
                "messages[1].audio",
            ),
            (
                with(
                    json!([user("hi"), {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]),
                ),
                "messages[1].content[0].type",
            ),
            (
                with(
                    json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, user("hi")]),
                ),
                "messages[0].content[0].type",
            ),
            (
                with(
                    json!([{"role": "system", "content": "s"}, {"role": "assistant", "content": "I start."}, user("hi")]),
                ),
                "messages[1].role",
            ),
            (
                with(json!([{"role": "system", "content": "only a system prompt"}])),
                "messages",
            ),
            (with(json!([])), "messages"),
            (with(json!("hi")), "messages"),
            (json!({"model": "m"}), "messages"),
        ];
        for (body, field) in cases {
            assert_eq!(refused_field(body.clone()), field, "{body}");
        }
        assert_eq!(request(b"[1, 2]").unwrap_err().field, "(body)");
        assert_eq!(request(b"{\"model\":").unwrap_err().field, "(body)");
    }

    #[test]
    fn neutral_values_of_refused_fields_are_accepted() {
        let got = request_value(json!({
            "model": "m",
            "messages": [user("hi")],
            "n": 1, "logprobs": false, "top_logprobs": 0, "frequency_penalty": 0,
            "presence_penalty": 0, "logit_bias": {}, "seed": null, "functions": null,
            "function_call": null, "audio": null, "modalities": ["text"],
            "reasoning_effort": "none", "response_format": {"type": "text"},
            "temperature": 1, "stop": [], "user": null, "tools": [], "tool_choice": "auto"
        }))
        .expect("accepted");
        assert_eq!(
            got,
            json!({
                "model": MODEL, "max_tokens": DEFAULT_MAX_TOKENS, "temperature": 1.0,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
            })
        );
    }

    #[test]
    fn tool_choice_and_parallel_tool_calls() {
        let tools = json!([{"type": "function", "function": {"name": "f"}}]);
        let choice = |tool_choice: Value, parallel: Value, tools: &Value| {
            let body = json!({"model": "m", "messages": [user("hi")], "tools": tools,
                              "tool_choice": tool_choice, "parallel_tool_calls": parallel});
            request_value(body).expect("translates")["tool_choice"].clone()
        };
        assert_eq!(
            choice(json!("auto"), json!(null), &tools),
            json!({"type": "auto"})
        );
        assert_eq!(
            choice(json!("required"), json!(true), &tools),
            json!({"type": "any"})
        );
        assert_eq!(
            choice(json!("none"), json!(false), &tools),
            json!({"type": "none"})
        );
        assert_eq!(
            choice(json!("auto"), json!(false), &tools),
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            choice(json!("required"), json!(false), &tools),
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            choice(json!(null), json!(false), &tools),
            json!({"type": "auto", "disable_parallel_tool_use": true})
        );
        assert_eq!(choice(json!(null), json!(null), &tools), Value::Null);
        assert_eq!(
            choice(
                json!({"type": "function", "function": {"name": "f"}}),
                json!(null),
                &tools
            ),
            json!({"type": "tool", "name": "f"})
        );
        // Without tools "auto"/"none" say nothing, and Anthropic would refuse them.
        assert_eq!(
            choice(json!("none"), json!(false), &json!(null)),
            Value::Null
        );
        assert_eq!(choice(json!("auto"), json!(null), &json!([])), Value::Null);
    }

    #[test]
    fn max_tokens_precedence_and_json_object() {
        let body = |extra: Value| {
            let mut b = json!({"model": "m", "messages": [user("hi")]});
            if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            request_value(b).expect("translates")
        };
        assert_eq!(body(json!({}))["max_tokens"], json!(DEFAULT_MAX_TOKENS));
        assert_eq!(body(json!({"max_tokens": 7}))["max_tokens"], json!(7));
        assert_eq!(
            body(json!({"max_completion_tokens": 9, "max_tokens": 7}))["max_tokens"],
            json!(9)
        );
        assert_eq!(
            body(json!({"stop": ["END", "", "STOP"]}))["stop_sequences"],
            json!(["END", "STOP"])
        );
        let json_object = body(json!({"response_format": {"type": "json_object"}}));
        assert_eq!(json_object["system"], json!(JSON_ONLY));
    }

    #[test]
    fn escaped_text_round_trips() {
        let got = request(
            br#"{"model":"m","messages":[{"role":"user","content":"tab\there \u00e9 \"q\" \ud83d\ude00"}]}"#,
        )
        .expect("translates");
        assert_eq!(
            got["messages"][0]["content"][0]["text"],
            json!("tab\there é \"q\" 😀")
        );
    }

    // --- responses ------------------------------------------------------

    #[test]
    fn response_fixtures() {
        let pairs: [(&str, &[u8], &[u8]); 2] = [
            (
                "text",
                fixture!("response_text.anthropic.json"),
                fixture!("response_text.openai.json"),
            ),
            (
                "tool_use",
                fixture!("response_tool_use.anthropic.json"),
                fixture!("response_tool_use.openai.json"),
            ),
        ];
        for (name, anthropic, openai) in pairs {
            let got =
                translate_response(anthropic, CREATED).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(without_created(json(&got)), json(openai), "{name}");
        }
    }

    #[test]
    fn finish_reasons_and_usage() {
        let cases = [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("pause_turn", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "tool_calls"),
            ("refusal", "content_filter"),
            ("a_reason_from_the_future", "stop"),
        ];
        for (stop_reason, expected) in cases {
            let body = json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                "content": [], "stop_reason": stop_reason,
                "usage": {"input_tokens": 3, "cache_read_input_tokens": null, "output_tokens": 4}
            });
            let got = json(&translate_response(body.to_string().as_bytes(), CREATED).expect("ok"));
            assert_eq!(
                got["choices"][0]["finish_reason"],
                json!(expected),
                "{stop_reason}"
            );
            // No text block: content is null, as OpenAI reports it.
            assert_eq!(got["choices"][0]["message"]["content"], Value::Null);
            assert_eq!(
                got["usage"],
                json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
            );
        }
    }

    #[test]
    fn unparseable_responses_are_errors_that_quote_nothing() {
        let secretish = br#"{"id": "sk-ant-secret-looking", "content": "not an array"}"#;
        for body in [
            b"".as_slice(),
            b"<html>502 Bad Gateway</html>",
            b"{\"id\":\"msg\",",
            secretish,
            br#"{"type":"error","error":{"type":"api_error","message":"x"}}"#,
        ] {
            let err = translate_response(body, CREATED).expect_err("malformed");
            let text = err.to_string();
            assert!(text.starts_with("anthropic sent a body"), "{text}");
            assert!(!text.contains("sk-ant"), "{text}");
            assert!(!text.contains("html"), "{text}");
        }
    }

    // --- streams --------------------------------------------------------

    /// Frames an Anthropic transcript into events and translates each.
    fn run_stream(transcript: &[u8], include_usage: bool) -> Vec<Bytes> {
        let mut framer = SseFramer::new();
        framer.push(Bytes::copy_from_slice(transcript));
        let mut translator = AnthropicStream::new(include_usage, CREATED);
        let mut out = Vec::new();
        while let Some(event) = framer.next_event() {
            translator.translate(&event, &mut out);
        }
        assert_eq!(
            framer.pending_len(),
            0,
            "transcript ends on an event boundary"
        );
        out
    }

    /// Each output event is `data: …\n\n`; returns the data parts as JSON
    /// (with `created` checked and removed) or the `[DONE]` marker.
    fn decode_events(events: &[Bytes]) -> Vec<Value> {
        events
            .iter()
            .map(|e| {
                let data = e
                    .strip_prefix(b"data: ")
                    .and_then(|d| d.strip_suffix(b"\n\n"))
                    .unwrap_or_else(|| panic!("not one data event: {e:?}"));
                if data == b"[DONE]" {
                    json!("[DONE]")
                } else {
                    without_created(json(data))
                }
            })
            .collect()
    }

    fn expected_events(openai: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(openai).expect("utf-8 fixture");
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let data = e.strip_prefix("data: ").expect("fixture event is data");
                if data == "[DONE]" {
                    json!("[DONE]")
                } else {
                    json(data.as_bytes())
                }
            })
            .collect()
    }

    #[test]
    fn stream_fixtures() {
        let cases: [(&str, &[u8], &[u8], bool); 3] = [
            (
                "text",
                fixture!("stream_text.anthropic.sse"),
                fixture!("stream_text.openai.sse"),
                true,
            ),
            (
                "tool_use",
                fixture!("stream_tool_use.anthropic.sse"),
                fixture!("stream_tool_use.openai.sse"),
                false,
            ),
            (
                "error",
                fixture!("stream_error.anthropic.sse"),
                fixture!("stream_error.openai.sse"),
                true,
            ),
        ];
        for (name, anthropic, openai, include_usage) in cases {
            let got = decode_events(&run_stream(anthropic, include_usage));
            assert_eq!(got, expected_events(openai), "{name}");
        }
    }

    #[test]
    fn crlf_events_translate_like_lf_events() {
        let lf = fixture!("stream_text.anthropic.sse");
        let crlf = String::from_utf8_lossy(lf).replace('\n', "\r\n");
        assert_eq!(
            decode_events(&run_stream(crlf.as_bytes(), true)),
            decode_events(&run_stream(lf, true))
        );
    }

    #[test]
    fn garbage_becomes_one_server_error_event() {
        let start = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\"}}\n\n";
        for garbage in [
            b"event: content_block_delta\ndata: {not json\n\n".as_slice(),
            b"data: \xff\xfe\n\n",
            b"data: []\n\n",
            b"data: {\"type\":\"content_block_delta\",\"index\":0}\n\n",
            b"data: {\"type\":\"message_start\"}\n\n",
            // A tool delta for a block that never started.
            b"data: {\"type\":\"content_block_delta\",\"index\":5,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{}\"}}\n\n",
        ] {
            let mut translator = AnthropicStream::new(true, CREATED);
            let mut out = Vec::new();
            translator.translate(start, &mut out);
            translator.translate(garbage, &mut out);
            // Nothing may follow the error, not even a later clean end.
            translator.translate(b"data: {\"type\":\"message_stop\"}\n\n", &mut out);
            let events = decode_events(&out);
            assert_eq!(events.len(), 2, "{:?}", String::from_utf8_lossy(garbage));
            assert_eq!(events[1]["error"]["type"], json!("server_error"));
            assert_eq!(events[1]["error"]["code"], json!("invalid_upstream_event"));
        }
        // Keep-alive comments and data-less events are not garbage.
        let mut translator = AnthropicStream::new(true, CREATED);
        let mut out = Vec::new();
        translator.translate(b": keep-alive\n\n", &mut out);
        translator.translate(b"event: ping\n\n", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn in_stream_errors_map_to_openai_types() {
        let cases = [
            (
                "overloaded_error",
                "Overloaded",
                "server_error",
                json!("overloaded"),
            ),
            (
                "api_error",
                "Internal server error",
                "server_error",
                json!("api_error"),
            ),
            (
                "rate_limit_error",
                "Slow down",
                "rate_limit_error",
                json!("rate_limit_exceeded"),
            ),
            (
                "invalid_request_error",
                "Bad",
                "invalid_request_error",
                Value::Null,
            ),
            (
                "invalid_request_error",
                "prompt is too long: 250000 tokens > 200000 maximum",
                "invalid_request_error",
                json!("context_length_exceeded"),
            ),
            ("brand_new_error", "?", "server_error", Value::Null),
        ];
        for (kind, message, openai_kind, code) in cases {
            let event = format!(
                "event: error\ndata: {}\n\n",
                json!({"type": "error", "error": {"type": kind, "message": message}})
            );
            let mut out = Vec::new();
            AnthropicStream::new(false, CREATED).translate(event.as_bytes(), &mut out);
            let events = decode_events(&out);
            assert_eq!(
                events,
                vec![json!({"error": {
                    "message": format!("anthropic: {message}"), "type": openai_kind, "code": code
                }})],
                "{kind}"
            );
            // The gateway's stream classifier reads it as the same class.
            let class = match crate::streaming::sse::classify_event(&out[0]) {
                crate::streaming::sse::EventKind::Error { kind, code, .. } => {
                    FailureClass::from_error_object(&kind, &code)
                }
                other => panic!("not an error event: {other:?}"),
            };
            let expected = match kind {
                "rate_limit_error" => FailureClass::RateLimited,
                "invalid_request_error" if code.is_string() => FailureClass::ContextLength,
                "invalid_request_error" => FailureClass::ClientError,
                _ => FailureClass::Transient,
            };
            assert_eq!(class, expected, "{kind}");
        }
    }

    #[test]
    fn usage_chunk_is_found_by_the_relay() {
        let out = run_stream(fixture!("stream_text.anthropic.sse"), true);
        let usage = out
            .iter()
            .filter_map(|e| event_data(e).and_then(|d| crate::api::find_usage(&d)))
            .next_back();
        assert_eq!(
            usage,
            Some(crate::api::Usage {
                prompt_tokens: 30,
                completion_tokens: 15
            })
        );
    }

    // --- errors ---------------------------------------------------------

    fn anthropic_error(kind: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn classify_error_refines_overload_and_context_length() {
        let too_long = anthropic_error(
            "invalid_request_error",
            "prompt is too long: 250000 tokens > 200000 maximum",
        );
        let exceeds = anthropic_error(
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 197626 + 8192 > 200000, \
             decrease input length or `max_tokens` and try again",
        );
        let overloaded = anthropic_error("overloaded_error", "Overloaded");
        let bad = anthropic_error("invalid_request_error", "messages: field required");
        assert_eq!(
            classify_error(529, &overloaded),
            Some(FailureClass::Transient)
        );
        assert_eq!(
            classify_error(529, b"<html>busy</html>"),
            Some(FailureClass::Transient)
        );
        // Overload reported under another status is still overload.
        assert_eq!(
            classify_error(500, &overloaded),
            Some(FailureClass::Transient)
        );
        assert_eq!(
            classify_error(400, &too_long),
            Some(FailureClass::ContextLength)
        );
        assert_eq!(
            classify_error(400, &exceeds),
            Some(FailureClass::ContextLength)
        );
        assert_eq!(classify_error(400, &bad), None);
        assert_eq!(classify_error(413, &too_long), None);
        assert_eq!(
            classify_error(429, &anthropic_error("rate_limit_error", "x")),
            None
        );
        assert_eq!(classify_error(400, b"not json"), None);
    }

    #[test]
    fn error_to_openai_maps_every_type() {
        let cases = [
            (
                400,
                "invalid_request_error",
                "messages: field required",
                "invalid_request_error",
                Value::Null,
            ),
            (
                400,
                "invalid_request_error",
                "prompt is too long: 250000 tokens > 200000 maximum",
                "invalid_request_error",
                json!("context_length_exceeded"),
            ),
            (
                401,
                "authentication_error",
                "invalid x-api-key",
                "authentication_error",
                Value::Null,
            ),
            (
                403,
                "permission_error",
                "no access",
                "permission_error",
                Value::Null,
            ),
            (
                404,
                "not_found_error",
                "model: claude-9",
                "not_found_error",
                Value::Null,
            ),
            (
                413,
                "request_too_large",
                "Request exceeds the maximum size",
                "invalid_request_error",
                json!("request_too_large"),
            ),
            (
                429,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit",
                "rate_limit_error",
                json!("rate_limit_exceeded"),
            ),
            (
                500,
                "api_error",
                "Internal server error",
                "server_error",
                json!("api_error"),
            ),
            (
                529,
                "overloaded_error",
                "Overloaded",
                "server_error",
                json!("overloaded"),
            ),
        ];
        for (status, kind, message, openai_kind, code) in cases {
            let got = json(&error_to_openai(status, &anthropic_error(kind, message)));
            assert_eq!(
                got,
                json!({"error": {"message": format!("anthropic: {message}"), "type": openai_kind, "code": code}}),
                "{kind}"
            );
        }
    }

    #[test]
    fn error_bodies_that_are_not_anthropic_errors_are_not_echoed() {
        let cases = [
            (
                502,
                b"<html>sk-ant-api03-leaked</html>".as_slice(),
                "server_error",
                Value::Null,
            ),
            (529, b"", "server_error", json!("overloaded")),
            (429, b"{}", "rate_limit_error", json!("rate_limit_exceeded")),
            (
                401,
                b"{\"error\":\"sk-ant-x\"}",
                "authentication_error",
                Value::Null,
            ),
            (418, b"[1]", "invalid_request_error", Value::Null),
        ];
        for (status, body, kind, code) in cases {
            let got = json(&error_to_openai(status, body));
            assert_eq!(
                got,
                json!({"error": {
                    "message": format!("anthropic: upstream error (HTTP {status})"),
                    "type": kind, "code": code
                }}),
                "{status}"
            );
        }
    }

    #[test]
    fn long_upstream_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let got = json(&error_to_openai(
            400,
            &anthropic_error("invalid_request_error", &long),
        ));
        let message = got["error"]["message"].as_str().expect("message");
        let kept = message.strip_prefix("anthropic: ").expect("prefix");
        assert_eq!(kept.len(), MAX_ERROR_MESSAGE_BYTES);
        assert!(kept.chars().all(|c| c == 'é'));
    }

    // --- robustness -----------------------------------------------------

    /// Every prefix of every fixture, fed to the function that reads it:
    /// errors are fine, panics are not.
    #[test]
    fn truncated_inputs_never_panic() {
        let requests: [&[u8]; 3] = [
            fixture!("request_tool_results.openai.json"),
            fixture!("request_images.openai.json"),
            fixture!("request_json_schema.openai.json"),
        ];
        for body in requests {
            for end in 0..body.len() {
                let _ = translate_request(&body[..end], MODEL, DEFAULT_MAX_TOKENS);
            }
        }
        let response = fixture!("response_tool_use.anthropic.json");
        for end in 0..response.len() {
            let _ = translate_response(&response[..end], CREATED);
            let _ = error_to_openai(500, &response[..end]);
            let _ = classify_error(400, &response[..end]);
        }
        let stream = fixture!("stream_tool_use.anthropic.sse");
        for end in 0..stream.len() {
            let mut translator = AnthropicStream::new(true, CREATED);
            let mut out = Vec::new();
            translator.translate(&stream[..end], &mut out);
            for event in &out {
                assert!(event.starts_with(b"data: ") && event.ends_with(b"\n\n"));
            }
        }
    }
}
