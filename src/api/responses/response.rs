//! Chat completions answers as Response objects: the output items, the
//! status a finish reason means, usage in the Responses shape, and the
//! request's settings echoed the way OpenAI echoes them.

use super::new_id;
use serde_json::{json, Map, Value};

/// The parts of a Response object that come from the request: its id, its
/// creation time and the settings OpenAI echoes back.
#[derive(Debug, Clone)]
pub struct ResponseShell {
    id: String,
    created_at: u64,
    echo: Map<String, Value>,
}

/// Echoed settings and what OpenAI reports when the request left them out.
fn echo_defaults() -> [(&'static str, Value); 14] {
    [
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("metadata", json!({})),
        ("parallel_tool_calls", Value::Bool(true)),
        ("previous_response_id", Value::Null),
        ("reasoning", json!({"effort": null, "summary": null})),
        ("store", Value::Bool(true)),
        ("temperature", json!(1.0)),
        ("text", json!({"format": {"type": "text"}})),
        ("tool_choice", json!("auto")),
        ("tools", json!([])),
        ("top_p", json!(1.0)),
        ("truncation", json!("disabled")),
        ("user", Value::Null),
    ]
}

/// The fields [`ResponseShell::build`] sets itself.
const BUILT_FIELDS: [&str; 10] = [
    "id",
    "object",
    "created_at",
    "status",
    "background",
    "error",
    "incomplete_details",
    "model",
    "output",
    "usage",
];

impl ResponseShell {
    pub fn new(request: &Map<String, Value>) -> Self {
        let echo = echo_defaults()
            .into_iter()
            .map(|(key, default)| {
                let value = request
                    .get(key)
                    .filter(|v| !v.is_null())
                    .cloned()
                    .unwrap_or(default);
                (key.to_owned(), value)
            })
            .collect();
        ResponseShell {
            id: new_id("resp"),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            echo,
        }
    }

    /// The shell of a Response object a native upstream announced (its
    /// `response.created`): the same id and creation time, and every other
    /// field it echoed, so a response the gateway finishes for it (a
    /// continued stream) reads as the upstream's own. `None` without an id.
    pub fn from_response(response: &Value) -> Option<Self> {
        let fields = response.as_object()?;
        let id = fields.get("id")?.as_str()?.to_owned();
        let created_at = fields
            .get("created_at")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let echo = fields
            .iter()
            .filter(|(key, _)| !BUILT_FIELDS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Some(ResponseShell {
            id,
            created_at,
            echo,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A Response object. `usage` may be null (a stream still running).
    pub fn build(&self, model: &str, outcome: Status, output: Vec<Value>, usage: Value) -> Value {
        let mut response = Map::new();
        response.insert("id".into(), json!(self.id));
        response.insert("object".into(), json!("response"));
        response.insert("created_at".into(), json!(self.created_at));
        response.insert("status".into(), json!(outcome.status()));
        response.insert("background".into(), json!(false));
        response.insert("error".into(), outcome.error());
        response.insert("incomplete_details".into(), outcome.incomplete_details());
        response.insert("model".into(), json!(model));
        response.insert("output".into(), Value::Array(output));
        response.extend(self.echo.clone());
        response.insert("usage".into(), usage);
        Value::Object(response)
    }
}

/// Where a response stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    InProgress,
    Completed,
    /// Stopped early: `max_output_tokens` or `content_filter`.
    Incomplete(&'static str),
    Failed {
        code: String,
        message: String,
    },
}

impl Status {
    /// What a chat `finish_reason` means for the response.
    pub fn from_finish_reason(finish: Option<&str>) -> Status {
        match finish {
            Some("length") => Status::Incomplete("max_output_tokens"),
            Some("content_filter") => Status::Incomplete("content_filter"),
            _ => Status::Completed,
        }
    }

    pub fn status(&self) -> &'static str {
        match self {
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Incomplete(_) => "incomplete",
            Status::Failed { .. } => "failed",
        }
    }

    /// The terminal stream event that carries this status.
    pub fn event_type(&self) -> &'static str {
        match self {
            Status::InProgress => "response.in_progress",
            Status::Completed => "response.completed",
            Status::Incomplete(_) => "response.incomplete",
            Status::Failed { .. } => "response.failed",
        }
    }

    fn error(&self) -> Value {
        match self {
            Status::Failed { code, message } => json!({"code": code, "message": message}),
            _ => Value::Null,
        }
    }

    fn incomplete_details(&self) -> Value {
        match self {
            Status::Incomplete(reason) => json!({"reason": reason}),
            _ => Value::Null,
        }
    }
}

/// Chat usage (`prompt_tokens`, …) in the Responses shape.
pub fn usage_from_chat(usage: &Value) -> Value {
    if !usage.is_object() {
        return Value::Null;
    }
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    let input = count(&usage["prompt_tokens"]);
    let output = count(&usage["completion_tokens"]);
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": count(&usage["prompt_tokens_details"]["cached_tokens"])},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": count(&usage["completion_tokens_details"]["reasoning_tokens"])},
        "total_tokens": usage["total_tokens"].as_u64().unwrap_or(input + output),
    })
}

/// A chat completion's first choice as Response output items: reasoning,
/// the message, then its tool calls, in the order a model produces them.
fn output_items(message: &Value) -> Vec<Value> {
    let mut output = Vec::new();
    let reasoning = message["reasoning_content"]
        .as_str()
        .or(message["reasoning"].as_str())
        .filter(|r| !r.is_empty());
    if let Some(reasoning) = reasoning {
        output.push(reasoning_item(&new_id("rs"), reasoning));
    }
    let mut content = Vec::new();
    if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
        content.push(output_text(text));
    }
    if let Some(refusal) = message["refusal"].as_str().filter(|t| !t.is_empty()) {
        content.push(json!({"type": "refusal", "refusal": refusal}));
    }
    if !content.is_empty() {
        output.push(message_item(&new_id("msg"), "completed", content));
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        output.push(function_call_item(
            &new_id("fc"),
            "completed",
            call["id"].as_str().unwrap_or_default(),
            call["function"]["name"].as_str().unwrap_or_default(),
            call["function"]["arguments"].as_str().unwrap_or_default(),
        ));
    }
    output
}

pub(super) fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub(super) fn message_item(id: &str, status: &str, content: Vec<Value>) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

pub(super) fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": id, "summary": [], "content": [{"type": "reasoning_text", "text": text}]})
}

pub(super) fn function_call_item(
    id: &str,
    status: &str,
    call_id: &str,
    name: &str,
    arguments: &str,
) -> Value {
    json!({"type": "function_call", "id": id, "status": status, "call_id": call_id, "name": name, "arguments": arguments})
}

/// A whole chat completion as a Response object; `Err` when the body is not
/// a chat completion.
pub fn from_chat_completion(chat: &[u8], shell: &ResponseShell) -> Result<Value, String> {
    let chat: Value = serde_json::from_slice(chat)
        .map_err(|e| format!("the upstream's answer is not JSON: {e}"))?;
    let choice = chat["choices"]
        .get(0)
        .ok_or("the upstream's answer has no choices")?;
    let status = Status::from_finish_reason(choice["finish_reason"].as_str());
    Ok(shell.build(
        chat["model"].as_str().unwrap_or_default(),
        status,
        output_items(&choice["message"]),
        usage_from_chat(&chat["usage"]),
    ))
}

/// Items as they can be sent again as input, to any provider: without the
/// ids and statuses that name one provider's stored objects, and without
/// reasoning items (one provider's hidden state).
pub fn replayable(items: &[Value]) -> Vec<Value> {
    items
        .iter()
        .filter(|item| item["type"] != "reasoning")
        .map(|item| {
            let mut item = item.clone();
            if let Some(fields) = item.as_object_mut() {
                fields.remove("id");
                fields.remove("status");
            }
            item
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell() -> ResponseShell {
        ResponseShell::new(
            json!({"model": "m", "instructions": "x", "tools": [{"type": "function", "name": "f"}]})
                .as_object()
                .unwrap(),
        )
    }

    #[test]
    fn a_chat_completion_becomes_a_response() {
        let chat = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "claude",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "let me look", "reasoning_content": "hmm",
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
            }}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
                      "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 2}}
        });
        let shell = shell();
        let r = from_chat_completion(chat.to_string().as_bytes(), &shell).unwrap();
        assert_eq!(r["id"], shell.id());
        assert_eq!(r["object"], "response");
        assert_eq!(r["status"], "completed");
        assert_eq!(r["model"], "claude");
        assert_eq!(r["instructions"], "x");
        assert_eq!(r["tools"][0]["name"], "f");
        assert_eq!(r["tool_choice"], "auto");
        let types: Vec<_> = r["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["reasoning", "message", "function_call"]);
        assert_eq!(r["output"][1]["content"][0]["text"], "let me look");
        assert_eq!(r["output"][2]["call_id"], "call_1");
        assert_eq!(
            r["usage"],
            json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
                   "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 15})
        );
    }

    #[test]
    fn a_cut_off_answer_is_incomplete() {
        let chat = json!({"model": "m", "choices": [{"finish_reason": "length", "message": {"content": "abc"}}]});
        let r = from_chat_completion(chat.to_string().as_bytes(), &shell()).unwrap();
        assert_eq!(r["status"], "incomplete");
        assert_eq!(r["incomplete_details"]["reason"], "max_output_tokens");
        assert!(from_chat_completion(b"{\"choices\":[]}", &shell()).is_err());
    }

    #[test]
    fn replayed_items_lose_provider_state() {
        let items = [
            json!({"type": "reasoning", "id": "rs_1"}),
            json!({"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "content": []}),
            json!({"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{}"}),
        ];
        assert_eq!(
            replayable(&items),
            [
                json!({"type": "message", "role": "assistant", "content": []}),
                json!({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}),
            ]
        );
    }
}
