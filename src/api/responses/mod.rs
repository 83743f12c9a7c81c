//! OpenAI's Responses API on the wire: its request translated to Chat
//! Completions (the gateway's canonical format) for targets that only speak
//! chat, chat answers and streams translated back into Response objects and
//! typed Responses events, and what a native Responses stream's events mean
//! for failover. Pure functions over JSON: no HTTP, no routing, no store.

pub mod native;
mod request;
mod response;
mod stream;

pub use request::{to_chat, Inexpressible};
pub use response::{from_chat_completion, replayable, usage_from_chat, ResponseShell, Status};
pub use stream::ToResponsesStream;

use serde_json::{json, Value};

/// A Responses `input` as a list of items: a string is one user message.
/// `None` when `input` is neither (the request is malformed).
pub fn input_items(input: &Value) -> Option<Vec<Value>> {
    match input {
        Value::String(text) => Some(vec![json!({
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        })]),
        Value::Array(items) => Some(items.clone()),
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

/// A fresh object id in OpenAI's style: `resp_…`, `msg_…`, `fc_…`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// One Responses SSE event: `event: {type}` and its JSON data.
pub fn sse_event(data: &Value) -> bytes::Bytes {
    let kind = data["type"].as_str().unwrap_or("error");
    let data = data.to_string();
    let mut event = Vec::with_capacity(data.len() + kind.len() + 16);
    event.extend_from_slice(b"event: ");
    event.extend_from_slice(kind.as_bytes());
    event.extend_from_slice(b"\ndata: ");
    event.extend_from_slice(data.as_bytes());
    event.extend_from_slice(b"\n\n");
    bytes::Bytes::from(event)
}

/// The `error` event that ends a cut or failed Responses stream. It carries
/// the typed event's fields and also a top-level `error` object, on which
/// OpenAI's SDKs raise: a client can never take the stream for complete.
pub fn error_event(message: &str, code: &str, sequence_number: u64) -> bytes::Bytes {
    sse_event(&json!({
        "type": "error",
        "code": code,
        "message": message,
        "param": null,
        "sequence_number": sequence_number,
        "error": {"type": "upstream_error", "code": code, "message": message, "param": null},
    }))
}
