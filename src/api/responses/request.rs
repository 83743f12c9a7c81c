//! A Responses API request as a Chat Completions request, for targets that
//! only speak chat (Anthropic, Gemini, chat-only OpenAI-compatible servers;
//! their adapters take it from there). Every field is either translated,
//! known to change nothing a chat target could do (`store`, `include`,
//! cache keys), or refused with its JSON path so the dispatcher skips the
//! target instead of dropping the field.

use crate::api::path::Path;
use serde_json::{json, Map, Value};

/// A request field a chat target cannot express.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Inexpressible {
    pub field: String,
    pub reason: String,
}

fn refuse(at: &Path<'_>, reason: impl Into<String>) -> Inexpressible {
    Inexpressible {
        field: at.field(),
        reason: reason.into(),
    }
}

/// Fields that shape only what the Responses API itself keeps or returns:
/// the gateway handles `store`; the rest mean nothing to a chat target.
const NO_CHAT_MEANING: &[&str] = &[
    "store",
    "include",
    "service_tier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "stream_options",
    "input",
    "previous_response_id",
];

/// `request` (a Responses body) as a chat completions body; `input` is the
/// conversation to send: the request's own items, after any stored
/// history `previous_response_id` named.
pub fn to_chat(request: &Map<String, Value>, input: &[Value]) -> Result<Value, Inexpressible> {
    let root = Path::ROOT;
    let mut chat = Map::new();
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").filter(|v| !v.is_null()) {
        let at = root.key("instructions");
        let text = instructions
            .as_str()
            .ok_or_else(|| refuse(&at, "must be a string"))?;
        messages.push(json!({"role": "system", "content": text}));
    }
    let input_at = root.key("input");
    input_messages(input, &input_at, &mut messages)?;
    chat.insert("messages".into(), Value::Array(messages));
    for (name, value) in request {
        let at = root.key(name);
        translate_field(name, value, &at, &mut chat)?;
    }
    if chat.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(chat))
}

fn translate_field(
    name: &str,
    value: &Value,
    at: &Path<'_>,
    chat: &mut Map<String, Value>,
) -> Result<(), Inexpressible> {
    if value.is_null() || NO_CHAT_MEANING.contains(&name) || name == "instructions" {
        return Ok(());
    }
    let copy = |chat: &mut Map<String, Value>, to: &str| {
        chat.insert(to.into(), value.clone());
    };
    match name {
        "model" | "stream" | "temperature" | "top_p" | "parallel_tool_calls" | "metadata"
        | "user" => copy(chat, name),
        "safety_identifier" => {
            if !chat.contains_key("user") {
                copy(chat, "user")
            }
        }
        "max_output_tokens" => copy(chat, "max_completion_tokens"),
        "top_logprobs" => {
            copy(chat, "top_logprobs");
            chat.insert("logprobs".into(), Value::Bool(true));
        }
        "tools" => {
            chat.insert("tools".into(), tools(value, at)?);
        }
        "tool_choice" => {
            chat.insert("tool_choice".into(), tool_choice(value, at)?);
        }
        "text" => text_options(value, at, chat)?,
        "reasoning" => {
            if let Some(effort) = value.get("effort").filter(|e| !e.is_null()) {
                chat.insert("reasoning_effort".into(), effort.clone());
            }
        }
        "truncation" if value == "disabled" => {}
        "background" if value == false => {}
        "truncation" => return Err(refuse(at, "only the Responses API can truncate a conversation; a chat target would fail instead")),
        "background" => return Err(refuse(at, "background responses run only on a provider that offers the Responses API")),
        _ => {
            return Err(refuse(
                at,
                "has no Chat Completions equivalent; only a provider that offers the Responses API natively can take it",
            ))
        }
    }
    Ok(())
}

/// The input items as chat messages. Consecutive `function_call` items
/// become one assistant message with several tool calls.
fn input_messages(
    items: &[Value],
    at: &Path<'_>,
    messages: &mut Vec<Value>,
) -> Result<(), Inexpressible> {
    for (i, item) in items.iter().enumerate() {
        let at = at.index(i);
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => messages.push(message(item, &at)?),
            "function_call" => push_tool_call(messages, function_call(item, &at)?),
            "function_call_output" => messages.push(function_call_output(item, &at)?),
            // Reasoning items replay a model's hidden state: a chat target
            // has none to resume, and the visible answer follows anyway.
            "reasoning" => {}
            other => {
                return Err(refuse(
                    &at.key("type"),
                    format!("`{other}` items exist only on a provider that offers the Responses API natively"),
                ))
            }
        }
    }
    Ok(())
}

fn string_field<'v>(item: &'v Value, key: &str, at: &Path<'_>) -> Result<&'v str, Inexpressible> {
    item.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| refuse(&at.key(key), "must be a string"))
}

fn message(item: &Value, at: &Path<'_>) -> Result<Value, Inexpressible> {
    let role = match string_field(item, "role", at)? {
        // Chat-only upstreams know `system`; `developer` means the same there.
        "system" | "developer" => "system",
        role @ ("user" | "assistant") => role,
        other => {
            return Err(refuse(
                &at.key("role"),
                format!("`{other}` is not a message role"),
            ))
        }
    };
    let content_at = at.key("content");
    let content = match item.get("content") {
        Some(Value::String(text)) => Value::String(text.clone()),
        Some(Value::Array(parts)) if role == "user" && !parts.iter().all(is_text_part) => {
            let parts = parts
                .iter()
                .enumerate()
                .map(|(i, part)| user_part(part, &content_at.index(i)))
                .collect::<Result<Vec<_>, _>>()?;
            Value::Array(parts)
        }
        Some(Value::Array(parts)) => Value::String(joined_text(parts, &content_at)?),
        _ => return Err(refuse(&content_at, "must be a string or an array of parts")),
    };
    Ok(json!({"role": role, "content": content}))
}

fn is_text_part(part: &Value) -> bool {
    matches!(
        part.get("type").and_then(Value::as_str),
        Some("input_text" | "output_text" | "text")
    )
}

/// A user content part as a chat part.
fn user_part(part: &Value, at: &Path<'_>) -> Result<Value, Inexpressible> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": string_field(part, "text", at)?}))
        }
        Some("input_image") => {
            let url = part
                .get("image_url")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    refuse(
                        &at.key("image_url"),
                        "images by `file_id` live in OpenAI's file store; send `image_url` (a URL or a data URL) to fail over",
                    )
                })?;
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail").filter(|d| !d.is_null()) {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        Some(other) => Err(refuse(
            &at.key("type"),
            format!("`{other}` parts have no Chat Completions equivalent"),
        )),
        None => Err(refuse(&at.key("type"), "must be a string")),
    }
}

/// Text parts (system, assistant and tool output) joined into one string.
fn joined_text(parts: &[Value], at: &Path<'_>) -> Result<String, Inexpressible> {
    let mut text = String::new();
    for (i, part) in parts.iter().enumerate() {
        let at = at.index(i);
        let piece = match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => string_field(part, "text", &at)?,
            Some("refusal") => string_field(part, "refusal", &at)?,
            _ => {
                return Err(refuse(
                    &at.key("type"),
                    "only text parts can be sent here to a chat target",
                ))
            }
        };
        text.push_str(piece);
    }
    Ok(text)
}

fn function_call(item: &Value, at: &Path<'_>) -> Result<Value, Inexpressible> {
    Ok(json!({
        "id": string_field(item, "call_id", at)?,
        "type": "function",
        "function": {
            "name": string_field(item, "name", at)?,
            "arguments": string_field(item, "arguments", at)?,
        },
    }))
}

/// Appends a tool call to the assistant message just before it, or starts one.
fn push_tool_call(messages: &mut Vec<Value>, call: Value) {
    if let Some(last) = messages.last_mut() {
        if last["role"] == "assistant" {
            match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                Some(calls) => calls.push(call),
                None => {
                    last["tool_calls"] = json!([call]);
                }
            }
            return;
        }
    }
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
}

fn function_call_output(item: &Value, at: &Path<'_>) -> Result<Value, Inexpressible> {
    let output_at = at.key("output");
    let output = match item.get("output") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => joined_text(parts, &output_at)?,
        _ => return Err(refuse(&output_at, "must be a string or an array of parts")),
    };
    Ok(json!({
        "role": "tool",
        "tool_call_id": string_field(item, "call_id", at)?,
        "content": output,
    }))
}

fn tools(value: &Value, at: &Path<'_>) -> Result<Value, Inexpressible> {
    let tools = value
        .as_array()
        .ok_or_else(|| refuse(at, "must be an array"))?;
    let mut out = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = at.index(i);
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {
                let mut function = Map::new();
                function.insert(
                    "name".into(),
                    Value::String(string_field(tool, "name", &at)?.to_owned()),
                );
                for key in ["description", "parameters", "strict"] {
                    if let Some(v) = tool.get(key).filter(|v| !v.is_null()) {
                        function.insert(key.into(), v.clone());
                    }
                }
                out.push(json!({"type": "function", "function": function}));
            }
            Some(other) => {
                return Err(refuse(
                    &at.key("type"),
                    format!(
                    "the built-in tool `{other}` runs only on a provider that offers it natively"
                ),
                ))
            }
            None => return Err(refuse(&at.key("type"), "must be a string")),
        }
    }
    Ok(Value::Array(out))
}

fn tool_choice(value: &Value, at: &Path<'_>) -> Result<Value, Inexpressible> {
    match value {
        Value::String(mode) if matches!(mode.as_str(), "auto" | "none" | "required") => {
            Ok(value.clone())
        }
        Value::Object(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            let name = string_field(value, "name", at)?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(refuse(
            at,
            "only `auto`, `none`, `required` or a function can be chosen on a chat target",
        )),
    }
}

/// `text.format` as `response_format`. `text.verbosity` is a style hint
/// chat targets have no field for.
fn text_options(
    value: &Value,
    at: &Path<'_>,
    chat: &mut Map<String, Value>,
) -> Result<(), Inexpressible> {
    let Some(format) = value.get("format").filter(|f| !f.is_null()) else {
        return Ok(());
    };
    let at = at.key("format");
    let response_format = match format.get("type").and_then(Value::as_str) {
        Some("text") => return Ok(()),
        Some("json_object") => json!({"type": "json_object"}),
        Some("json_schema") => {
            let mut schema = Map::new();
            schema.insert(
                "name".into(),
                Value::String(string_field(format, "name", &at)?.to_owned()),
            );
            for key in ["schema", "strict", "description"] {
                if let Some(v) = format.get(key).filter(|v| !v.is_null()) {
                    schema.insert(key.into(), v.clone());
                }
            }
            json!({"type": "json_schema", "json_schema": schema})
        }
        _ => {
            return Err(refuse(
                &at.key("type"),
                "must be `text`, `json_object` or `json_schema`",
            ))
        }
    };
    chat.insert("response_format".into(), response_format);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(request: Value) -> Result<Value, Inexpressible> {
        let input = crate::api::responses::input_items(&request["input"]).unwrap();
        to_chat(request.as_object().unwrap(), &input)
    }

    #[test]
    fn a_full_request_becomes_its_chat_equivalent() {
        let out = chat(json!({
            "model": "m",
            "instructions": "be brief",
            "input": [
                {"role": "user", "content": [
                    {"type": "input_text", "text": "what is in "},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
                ]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a cat"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{\"q\":1}"},
                {"type": "function_call", "call_id": "c2", "name": "lookup", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
                {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "7"}]}
            ],
            "tools": [{"type": "function", "name": "lookup", "description": "d", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "lookup"},
            "parallel_tool_calls": false,
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}, "verbosity": "low"},
            "reasoning": {"effort": "low", "summary": "auto"},
            "max_output_tokens": 64,
            "temperature": 0.5,
            "top_p": 0.9,
            "metadata": {"a": "b"},
            "safety_identifier": "user-1",
            "store": true,
            "include": ["reasoning.encrypted_content"],
            "stream": true
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "what is in "},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}
                    ]},
                    {"role": "assistant", "content": "a cat", "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":1}"}},
                        {"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "c1", "content": "42"},
                    {"role": "tool", "tool_call_id": "c2", "content": "7"}
                ],
                "tools": [{"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {"type": "object"}, "strict": true}}],
                "tool_choice": {"type": "function", "function": {"name": "lookup"}},
                "parallel_tool_calls": false,
                "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
                "reasoning_effort": "low",
                "max_completion_tokens": 64,
                "temperature": 0.5,
                "top_p": 0.9,
                "metadata": {"a": "b"},
                "user": "user-1",
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
    }

    #[test]
    fn a_string_input_is_one_user_message() {
        let out = chat(json!({"model": "m", "input": "hi"})).unwrap();
        assert_eq!(out["messages"], json!([{"role": "user", "content": "hi"}]));
        assert!(out.get("stream_options").is_none());
    }

    #[test]
    fn what_chat_cannot_express_is_refused_by_name() {
        let refused = |request: Value| chat(request).unwrap_err().field;
        assert_eq!(
            refused(
                json!({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]})
            ),
            "tools[1].type"
        );
        assert_eq!(
            refused(json!({"model": "m", "input": "x", "background": true})),
            "background"
        );
        assert_eq!(
            refused(json!({"model": "m", "input": [{"type": "item_reference", "id": "x"}]})),
            "input[0].type"
        );
        assert_eq!(
            refused(
                json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]})
            ),
            "input[0].content[0].image_url"
        );
        assert_eq!(
            refused(json!({"model": "m", "input": "x", "prompt": {"id": "p"}})),
            "prompt"
        );
        assert_eq!(
            refused(json!({"model": "m", "input": "x", "truncation": "auto"})),
            "truncation"
        );
        assert!(chat(
            json!({"model": "m", "input": "x", "truncation": "disabled", "background": false})
        )
        .is_ok());
    }
}
