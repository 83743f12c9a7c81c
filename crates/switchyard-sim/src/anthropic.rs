//! Anthropic's Messages API (`POST /v1/messages`): the request fields the sim
//! looks at, the `message` body, the SSE event sequence and the error shape.
//!
//! Stream, as Anthropic sends it: `message_start`, `content_block_start`,
//! `ping`, one `content_block_delta` per content chunk (`text_delta`, or
//! `input_json_delta` fragments for a tool call), `content_block_stop`,
//! `message_delta` (stop reason, cumulative `output_tokens`), `message_stop`;
//! each as `event: NAME\ndata: {...}\n\n`.

use std::borrow::Cow;
use std::fmt::Write as _;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use super::dialect::{injected_status, SimError, TOOL_INPUT_FRAGMENTS, TOOL_INPUT_JSON};
use super::openai::{approx_tokens, completion_text, to_bytes};
use super::responses::{schema_instance, split_in_fragments};
use super::server::Ctx;
use super::stream::{Closing, StreamFormat};
use super::Shared;

#[derive(Deserialize)]
struct MessagesRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    messages: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default, borrow)]
    tools: Option<Vec<Tool<'a>>>,
    #[serde(default, borrow)]
    tool_choice: Option<ToolChoice<'a>>,
    #[serde(default)]
    system: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Tool<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
}

impl MessagesRequest<'_> {
    /// The tool the answer calls: the one `tool_choice` forces (`any`,
    /// `tool`), or under `auto` (or no choice) the first tool until a
    /// `tool_result` is in the conversation, so a tool round trip ends in
    /// text; never under `none`. The same rule as the OpenAI dialects.
    fn called_tool(&self) -> Option<&str> {
        let first = self.tools.as_deref()?.first()?;
        let kind = self.tool_choice.as_ref().map_or("auto", |c| &*c.kind);
        match kind {
            "any" => Some(&first.name),
            "tool" => {
                let named = self.tool_choice.as_ref().and_then(|c| c.name.as_deref());
                Some(named.unwrap_or(&first.name))
            }
            "auto" if !self.has_tool_result() => Some(&first.name),
            _ => None,
        }
    }

    fn has_tool_result(&self) -> bool {
        self.messages.iter().flatten().any(|m| {
            m["content"]
                .as_array()
                .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
        })
    }

    /// JSON text, when the system prompt ends with a JSON Schema (as an
    /// instruction to answer with a conforming object does): a model that
    /// follows it answers an instance.
    fn structured_output(&self) -> Option<String> {
        let text = match self.system.as_ref()? {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Array(blocks) => blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => return None,
        };
        let start = text.rfind("\n{")? + 1;
        let schema: serde_json::Value = serde_json::from_str(&text[start..]).ok()?;
        let looks_like_schema = schema.get("type").is_some() || schema.get("properties").is_some();
        looks_like_schema.then(|| schema_instance(&schema))
    }

    /// Anthropic's own field checks, worded as it words them.
    fn missing_field(&self) -> Option<&'static str> {
        if self.max_tokens.is_none() {
            Some("max_tokens: Field required")
        } else if self.messages.is_none() {
            Some("messages: Field required")
        } else {
            None
        }
    }
}

pub(crate) async fn messages(ctx: &Ctx<'_>, body: &Bytes) -> Response<Body> {
    let req: MessagesRequest<'_> = match ctx.parse(None, body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let stream = req.stream.unwrap_or(false);
    if let Some(message) = req.missing_field() {
        let status = StatusCode::BAD_REQUEST;
        return ctx.reject(Some(&req.model), stream, status, message, body.len());
    }
    let resume = req
        .messages
        .as_deref()
        .and_then(|m| super::continuation::detect(m, "assistant"));
    let (decision, resume) = match ctx.admit_continuing(&req.model, stream, body.len(), resume) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let json = req.structured_output();
    let answer = Answer {
        index: decision.index,
        model: &req.model,
        tool: req.called_tool(),
        json: json.as_deref(),
        tokens: decision.tokens,
        prompt_tokens: approx_tokens(body.len()),
    };
    let format = stream.then(|| MessageEvents::new(&answer).continuing(resume));
    ctx.answer(decision, format, || message_body(&answer)).await
}

/// What a successful answer says, shared by the body and the stream.
struct Answer<'a> {
    index: u64,
    model: &'a str,
    /// Set when the answer is a call of this tool instead of text.
    tool: Option<&'a str>,
    /// Structured output: this JSON text instead of tokens.
    json: Option<&'a str>,
    tokens: u32,
    prompt_tokens: u32,
}

impl Answer<'_> {
    fn output_tokens(&self) -> u32 {
        match (self.tool, self.json) {
            (Some(_), _) => approx_tokens(TOOL_INPUT_JSON.len()),
            (None, Some(json)) => approx_tokens(json.len()),
            (None, None) => self.tokens,
        }
    }

    fn stop_reason(&self) -> &'static str {
        match self.tool {
            Some(_) => "tool_use",
            None => "end_turn",
        }
    }
}

#[derive(Serialize)]
struct Message<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [ContentBlock<'a>; 1],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: Usage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ContentBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: ToolInput,
    },
}

/// The arguments of every simulated tool call ([`TOOL_INPUT_JSON`]).
#[derive(Serialize)]
struct ToolInput {
    location: &'static str,
    unit: &'static str,
}

const TOOL_INPUT: ToolInput = ToolInput {
    location: "Paris",
    unit: "celsius",
};

#[derive(Serialize)]
struct Usage {
    input_tokens: u32,
    output_tokens: u32,
}

fn message_id(index: u64) -> String {
    format!("msg_sim_{index}")
}

fn tool_use_id(index: u64) -> String {
    format!("toolu_sim_{index}")
}

fn message_body(answer: &Answer<'_>) -> Bytes {
    let id = message_id(answer.index);
    let text;
    let tool_id;
    let content = match answer.tool {
        Some(name) => {
            tool_id = tool_use_id(answer.index);
            ContentBlock::ToolUse {
                id: &tool_id,
                name,
                input: TOOL_INPUT,
            }
        }
        None => {
            text = match answer.json {
                Some(json) => json.to_owned(),
                None => completion_text(answer.tokens),
            };
            ContentBlock::Text { text: &text }
        }
    };
    to_bytes(&Message {
        id: &id,
        kind: "message",
        role: "assistant",
        model: answer.model,
        content: [content],
        stop_reason: Some(answer.stop_reason()),
        stop_sequence: None,
        usage: Usage {
            input_tokens: answer.prompt_tokens,
            output_tokens: answer.output_tokens(),
        },
    })
}

fn event(name: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(name.len() + data.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// The Messages event stream for one answer.
pub(crate) struct MessageEvents {
    message_start: Bytes,
    block_start: Bytes,
    tool: bool,
    /// The text fragments of a structured-output answer.
    json: Option<Vec<String>>,
    tokens: u32,
    stop_reason: &'static str,
    /// `output_tokens` of a complete tool call or JSON answer; plain text
    /// counts its chunks.
    tool_output_tokens: u32,
    /// Where a continuation picks the token sequence up.
    resume: Option<super::continuation::Resume>,
}

impl MessageEvents {
    fn new(answer: &Answer<'_>) -> Self {
        let id = message_id(answer.index);
        // `content` of the opening message is empty and its stop reason null,
        // as Anthropic sends it; the one content slot is never serialised.
        let message_start = MessageStartJson {
            kind: "message_start",
            message: MessageHead {
                id: &id,
                kind: "message",
                role: "assistant",
                model: answer.model,
                content: [],
                stop_reason: None,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: answer.prompt_tokens,
                    output_tokens: 1,
                },
            },
        };
        let block_start = match answer.tool {
            Some(name) => {
                let tool_id = tool_use_id(answer.index);
                to_bytes(&BlockStart {
                    kind: "content_block_start",
                    index: 0,
                    content_block: StartBlock::ToolUse {
                        id: &tool_id,
                        name,
                        input: Empty {},
                    },
                })
            }
            None => to_bytes(&BlockStart {
                kind: "content_block_start",
                index: 0,
                content_block: StartBlock::Text { text: "" },
            }),
        };
        Self {
            message_start: event("message_start", &to_bytes(&message_start)),
            block_start: event("content_block_start", &block_start),
            tool: answer.tool.is_some(),
            json: answer
                .json
                .filter(|_| answer.tool.is_none())
                .map(|j| split_in_fragments(j, 4)),
            tokens: answer.tokens,
            stop_reason: answer.stop_reason(),
            tool_output_tokens: answer.output_tokens(),
            resume: None,
        }
    }

    /// A continuation of a partial answer (see `sim::continuation`).
    fn continuing(mut self, resume: Option<super::continuation::Resume>) -> Self {
        self.resume = resume;
        self
    }
}

#[derive(Serialize)]
struct MessageStartJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: MessageHead<'a>,
}

#[derive(Serialize)]
struct MessageHead<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: Usage,
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: StartBlock<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

#[derive(Serialize)]
struct Empty {}

impl StreamFormat for MessageEvents {
    fn chunks(&self) -> u32 {
        match (&self.json, self.tool) {
            (_, true) => u32::try_from(TOOL_INPUT_FRAGMENTS.len()).unwrap_or(u32::MAX),
            (Some(fragments), false) => u32::try_from(fragments.len()).unwrap_or(u32::MAX),
            (None, false) => self
                .resume
                .map_or(self.tokens, |resume| resume.chunks(self.tokens)),
        }
    }

    fn preamble(&mut self, step: usize) -> Option<Bytes> {
        match step {
            0 => Some(self.message_start.clone()),
            1 => Some(self.block_start.clone()),
            2 => Some(event("ping", br#"{"type":"ping"}"#)),
            _ => None,
        }
    }

    fn content(&mut self, n: u32, _finishing: bool) -> Bytes {
        let mut data = String::with_capacity(96);
        if self.tool {
            let fragment = usize::try_from(n)
                .ok()
                .and_then(|n| TOOL_INPUT_FRAGMENTS.get(n))
                .copied()
                .unwrap_or_default();
            data.push_str(
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"#,
            );
            // serde_json escapes the fragment; writing a str cannot fail.
            let _ = serde_json::to_string(fragment).map(|f| data.push_str(&f));
            data.push_str("}}");
        } else if let Some(fragments) = &self.json {
            let fragment = usize::try_from(n)
                .ok()
                .and_then(|n| fragments.get(n))
                .map_or("", String::as_str);
            data.push_str(
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"#,
            );
            let _ = serde_json::to_string(fragment).map(|f| data.push_str(&f));
            data.push_str("}}");
        } else if let Some(resume) = self.resume {
            let delta = serde_json::json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": resume.token(n)}});
            data.push_str(&delta.to_string());
        } else {
            let _ = write!(
                data,
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"tok{n} "}}}}"#
            );
        }
        event("content_block_delta", data.as_bytes())
    }

    fn closing(&mut self, step: usize, sent: u32) -> Option<Closing> {
        match step {
            0 => Some(Closing::More(event(
                "content_block_stop",
                br#"{"type":"content_block_stop","index":0}"#,
            ))),
            1 => {
                let output_tokens = if self.tool || self.json.is_some() {
                    self.tool_output_tokens
                } else {
                    sent
                };
                let data = format!(
                    r#"{{"type":"message_delta","delta":{{"stop_reason":"{}","stop_sequence":null}},"usage":{{"output_tokens":{output_tokens}}}}}"#,
                    self.stop_reason
                );
                Some(Closing::More(event("message_delta", data.as_bytes())))
            }
            2 => Some(Closing::Last(event(
                "message_stop",
                br#"{"type":"message_stop"}"#,
            ))),
            _ => None,
        }
    }

    fn error_event(&mut self, shared: &Shared) -> Bytes {
        let message = format!("simulated overload from {}", shared.name);
        event("error", &error_body("overloaded_error", &message))
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

fn error_body(kind: &str, message: &str) -> Bytes {
    to_bytes(&ErrorEnvelope {
        kind: "error",
        error: ErrorObject { kind, message },
    })
}

/// Anthropic's error `type` for a status.
pub(crate) fn status_error_kind(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// An error in Anthropic's shape.
pub(crate) fn error(error: SimError<'_>, name: &str) -> (StatusCode, Bytes) {
    let (status, kind, message): (StatusCode, &str, Cow<'_, str>) = match error {
        SimError::Injected(code) => (
            injected_status(code),
            status_error_kind(code),
            Cow::Owned(format!("simulated {code} from {name}")),
        ),
        SimError::Invalid { status, message } => (
            status,
            status_error_kind(status.as_u16()),
            Cow::Borrowed(message),
        ),
        SimError::UnknownModel(model) => (
            StatusCode::NOT_FOUND,
            "not_found_error",
            Cow::Owned(format!("model: {model}")),
        ),
        SimError::MissingKey => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            Cow::Borrowed("x-api-key header is required"),
        ),
        SimError::InvalidKey => (
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            Cow::Borrowed("invalid x-api-key"),
        ),
        SimError::MissingVersion => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Cow::Borrowed("anthropic-version: header is required"),
        ),
        SimError::ContextLength => (
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Cow::Borrowed("prompt is too long: 250000 tokens > 200000 maximum"),
        ),
        SimError::Overloaded => (
            StatusCode::OK,
            "overloaded_error",
            Cow::Owned(format!("simulated overload from {name}")),
        ),
        // Only OpenAI-dialect chat refuses tiers; here it reads as a limit.
        SimError::TierUnavailable(tier) => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            Cow::Owned(format!("no capacity for the {tier} service tier")),
        ),
    };
    (status, error_body(kind, &message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
        assert_eq!(status_error_kind(429), "rate_limit_error");
        assert_eq!(status_error_kind(500), "api_error");
        assert_eq!(status_error_kind(503), "overloaded_error");
        assert_eq!(status_error_kind(529), "overloaded_error");
        assert_eq!(status_error_kind(400), "invalid_request_error");
        assert_eq!(status_error_kind(401), "authentication_error");
    }

    #[test]
    fn tool_fragments_reassemble_the_tool_input() {
        assert_eq!(TOOL_INPUT_FRAGMENTS.concat(), TOOL_INPUT_JSON);
        assert_eq!(&to_bytes(&TOOL_INPUT)[..], TOOL_INPUT_JSON.as_bytes());
    }
}
