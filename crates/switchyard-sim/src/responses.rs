//! OpenAI's Responses API (`POST /v1/responses`, Azure's
//! `POST /openai/responses`): the request fields the sim looks at, the
//! `response` object, its event stream and the ids `previous_response_id`
//! may name.
//!
//! What the answer is, decided from the request:
//! - a `function_call` of the first function tool (or the one `tool_choice`
//!   names) when the request has function `tools`, `tool_choice` is not
//!   `none` and no input item is a `function_call_output` yet (so a tool
//!   round trip ends in text);
//! - JSON text when `text.format.type` is `json_schema` (the schema's
//!   required properties filled with placeholder values of their type);
//! - otherwise the usual `tok0 tok1 ...` text.
//!
//! Stream, as OpenAI sends it (`event: TYPE` + `data:` with `type` and a
//! `sequence_number` counting from 0): `response.created`,
//! `response.in_progress`, `response.output_item.added`, then for text
//! `response.content_part.added`, one `response.output_text.delta` per
//! chunk, `response.output_text.done`, `response.content_part.done`; for a
//! call one `response.function_call_arguments.delta` per fragment and
//! `response.function_call_arguments.done`; then `response.output_item.done`
//! and `response.completed` with usage (`response.incomplete` when the text
//! was cut to `max_output_tokens`). An in-stream error is `error` followed
//! by `response.failed`.
//!
//! A `previous_response_id` this sim did not hand out (or has forgotten, past
//! [`REMEMBERED_RESPONSES`], or was asked not to `store`) is a 404 in
//! OpenAI's words, decided before fault selection.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::dialect::{TOOL_INPUT_FRAGMENTS, TOOL_INPUT_JSON};
use super::openai::{approx_tokens, completion_text, unix_now};
use super::server::Ctx;
use super::stream::{Closing, StreamFormat};
use super::{FaultAction, Shared};

/// How many response ids a sim remembers for `previous_response_id`.
pub(crate) const REMEMBERED_RESPONSES: usize = 256;

/// Nesting depth up to which a JSON schema is filled; deeper objects are `{}`.
const MAX_SCHEMA_DEPTH: usize = 8;

/// The ids of the last responses created (and stored), bounded; oldest are
/// forgotten first, as a provider's retention would.
pub(crate) struct ResponseIds {
    capacity: usize,
    inner: Mutex<(VecDeque<String>, HashSet<String>)>,
    /// Tells this sim's ids from another sim's with the same request index.
    nonce: u64,
}

impl ResponseIds {
    pub(crate) fn new(capacity: usize) -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Self {
            capacity,
            inner: Mutex::new((VecDeque::new(), HashSet::new())),
            nonce: (u64::from(nanos) << 20) ^ n,
        }
    }

    fn id(&self, prefix: &str, index: u64) -> String {
        format!("{prefix}_{:016x}{index:016x}", self.nonce)
    }

    fn remember(&self, id: &str) {
        let mut guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let (order, set) = &mut *guard;
        if order.len() >= self.capacity {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        order.push_back(id.to_owned());
        set.insert(id.to_owned());
    }

    fn contains(&self, id: &str) -> bool {
        let guard = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        guard.1.contains(id)
    }
}

/// What the answer contains.
#[derive(Clone)]
enum Output {
    /// `tok0 tok1 ...`, `tokens` of them.
    Tokens(u32),
    /// Structured output: this JSON text, streamed in fragments.
    Json(String),
    /// A call of this function with [`TOOL_INPUT_JSON`].
    Call(String),
}

/// One answer: its ids, what the request asked for and what it says.
#[derive(Clone)]
struct Answer {
    id: String,
    item_id: String,
    call_id: String,
    created_at: u64,
    model: String,
    output: Output,
    input_tokens: u32,
    /// Text cut short by `max_output_tokens`: the answer ends `incomplete`.
    cut_short: bool,
    /// The request fields a `response` object echoes.
    echo: serde_json::Map<String, Value>,
}

pub(crate) async fn create(ctx: &Ctx<'_>, body: &Bytes) -> Response<Body> {
    let req: Value = match ctx.parse(None, body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let Some(model) = req.get("model").and_then(Value::as_str) else {
        let message = "Missing required parameter: 'model'.";
        return ctx.reject(None, stream, StatusCode::BAD_REQUEST, message, body.len());
    };
    let shared = ctx.shared();
    if let Some(previous) = req.get("previous_response_id").and_then(Value::as_str) {
        if !shared.responses.contains(previous) {
            return ctx.not_found(
                Some(model),
                stream,
                previous_not_found(previous),
                body.len(),
            );
        }
    }
    let decision = match ctx.admit(model, stream, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    let ids = &shared.responses;
    let (output, cut_short) = capped(output_for(&req, decision.tokens), &req);
    let answer = Answer {
        id: ids.id("resp", decision.index),
        item_id: ids.id("msg", decision.index),
        call_id: ids.id("call", decision.index),
        created_at: unix_now(),
        model: model.to_owned(),
        output,
        cut_short,
        input_tokens: approx_tokens(body.len()),
        echo: echoed_fields(&req),
    };
    // Only answers that carry their id to the client are kept.
    let answered = !matches!(
        decision.fault.action,
        FaultAction::Status { .. } | FaultAction::ContextLength | FaultAction::Hang
    );
    if answered && req.get("store").and_then(Value::as_bool) != Some(false) {
        ids.remember(&answer.id);
    }
    let format = stream.then(|| ResponseEvents::new(&answer));
    ctx.answer(decision, format, || complete_body(&answer))
        .await
}

/// A text answer longer than `max_output_tokens` is cut to it, and the
/// response is then `incomplete` as at OpenAI.
fn capped(output: Output, req: &Value) -> (Output, bool) {
    let limit = req["max_output_tokens"]
        .as_u64()
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    match (output, limit) {
        (Output::Tokens(n), Some(limit)) if n > limit => (Output::Tokens(limit), true),
        (output, _) => (output, false),
    }
}

/// OpenAI's answer to an unknown or expired `previous_response_id`.
fn previous_not_found(id: &str) -> Bytes {
    let body = json!({"error": {
        "message": format!("Previous response with id '{id}' not found."),
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }});
    Bytes::from(body.to_string())
}

fn output_for(req: &Value, tokens: u32) -> Output {
    if let Some(name) = called_function(req) {
        return Output::Call(name.to_owned());
    }
    let format = &req["text"]["format"];
    if format["type"] == "json_schema" {
        return Output::Json(schema_instance(&format["schema"]));
    }
    Output::Tokens(tokens)
}

/// The function the answer calls, if it should call one.
fn called_function(req: &Value) -> Option<&str> {
    let tools = req.get("tools")?.as_array()?;
    let mut functions = tools
        .iter()
        .filter(|t| t["type"] == "function")
        .filter_map(|t| t["name"].as_str());
    let first = functions.next()?;
    let answered = req["input"]
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i["type"] == "function_call_output"));
    if answered {
        return None;
    }
    match &req["tool_choice"] {
        Value::String(choice) if choice == "none" => None,
        Value::Object(choice) if choice.get("type").and_then(Value::as_str) == Some("function") => {
            choice.get("name").and_then(Value::as_str).or(Some(first))
        }
        _ => Some(first),
    }
}

/// JSON text satisfying `schema`, as a structured-output answer.
pub(crate) fn schema_instance(schema: &Value) -> String {
    fill_schema(schema, schema, 0).to_string()
}

/// A value that satisfies `schema` (the subset structured outputs use):
/// objects with their required (or, if none are listed, all) properties,
/// placeholder scalars, the first `enum` value, the first `anyOf` branch,
/// local `$ref`s (`#/$defs/...`, as pydantic writes nested models) resolved
/// against `root`. Depth-bounded, so recursive schemas end in `{}`.
fn fill_schema(schema: &Value, root: &Value, depth: usize) -> Value {
    if depth >= MAX_SCHEMA_DEPTH {
        return json!({});
    }
    if let Some(target) = schema["$ref"].as_str().and_then(|r| local_ref(root, r)) {
        return fill_schema(target, root, depth + 1);
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(branch) = schema["anyOf"].as_array().and_then(|b| b.first()) {
        return fill_schema(branch, root, depth + 1);
    }
    let kind = match &schema["type"] {
        Value::Array(kinds) => kinds.first().and_then(Value::as_str).unwrap_or("object"),
        Value::String(kind) => kind,
        _ => "object",
    };
    // Gemini's OpenAPI schemas spell types in capitals.
    match kind.to_ascii_lowercase().as_str() {
        "string" => Value::from("sim"),
        "integer" | "number" => Value::from(0),
        "boolean" => Value::from(false),
        "null" => Value::Null,
        "array" => Value::Array(Vec::new()),
        _ => fill_object(schema, root, depth),
    }
}

/// `#/a/b` inside `root` (a JSON pointer after the `#`).
fn local_ref<'r>(root: &'r Value, reference: &str) -> Option<&'r Value> {
    root.pointer(reference.strip_prefix('#')?)
}

fn fill_object(schema: &Value, root: &Value, depth: usize) -> Value {
    let properties = schema["properties"].as_object();
    let required: Vec<&str> = match schema["required"].as_array() {
        Some(names) => names.iter().filter_map(Value::as_str).collect(),
        None => properties.map_or_else(Vec::new, |p| p.keys().map(String::as_str).collect()),
    };
    let mut object = serde_json::Map::new();
    for name in required {
        let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
        object.insert(name.to_owned(), fill_schema(property, root, depth + 1));
    }
    Value::Object(object)
}

/// The request fields a `response` object repeats, with OpenAI's defaults
/// for those the request left out.
fn echoed_fields(req: &Value) -> serde_json::Map<String, Value> {
    let defaults = [
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("metadata", json!({})),
        ("parallel_tool_calls", Value::Bool(true)),
        ("previous_response_id", Value::Null),
        ("reasoning", json!({"effort": null, "summary": null})),
        ("store", Value::Bool(true)),
        ("temperature", Value::from(1.0)),
        ("text", json!({"format": {"type": "text"}})),
        ("tool_choice", Value::from("auto")),
        ("tools", json!([])),
        ("top_p", Value::from(1.0)),
        ("truncation", Value::from("disabled")),
        ("user", Value::Null),
    ];
    defaults
        .into_iter()
        .map(|(key, default)| {
            let value = req.get(key).filter(|v| !v.is_null()).cloned();
            (key.to_owned(), value.unwrap_or(default))
        })
        .collect()
}

impl Answer {
    fn text(&self, tokens: u32) -> String {
        match &self.output {
            Output::Tokens(_) => completion_text(tokens),
            Output::Json(text) => text.clone(),
            Output::Call(_) => String::new(),
        }
    }

    fn output_tokens(&self, sent: u32) -> u32 {
        match &self.output {
            Output::Tokens(_) => sent,
            Output::Json(text) => approx_tokens(text.len()),
            Output::Call(_) => approx_tokens(TOOL_INPUT_JSON.len()),
        }
    }

    fn usage(&self, output_tokens: u32) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": self.input_tokens.saturating_add(output_tokens),
        })
    }

    /// The final status: `completed`, or `incomplete` if cut short.
    fn done_status(&self) -> &'static str {
        if self.cut_short {
            "incomplete"
        } else {
            "completed"
        }
    }

    /// The output item, `status` `in_progress` (empty) or final.
    fn item(&self, text: Option<&str>) -> Value {
        let status = if text.is_some() {
            self.done_status()
        } else {
            "in_progress"
        };
        match &self.output {
            Output::Call(name) => json!({
                "type": "function_call",
                "id": self.item_id.replacen("msg_", "fc_", 1),
                "call_id": self.call_id,
                "name": name,
                "arguments": if text.is_some() { TOOL_INPUT_JSON } else { "" },
                "status": status,
            }),
            _ => {
                let content = match text {
                    Some(text) => vec![output_text(text)],
                    None => Vec::new(),
                };
                json!({
                    "type": "message",
                    "id": self.item_id,
                    "status": status,
                    "role": "assistant",
                    "content": content,
                })
            }
        }
    }

    fn item_id(&self) -> String {
        match self.output {
            Output::Call(_) => self.item_id.replacen("msg_", "fc_", 1),
            _ => self.item_id.clone(),
        }
    }

    /// The `response` object in a given state.
    fn response(&self, status: &str, output: Vec<Value>, usage: Option<Value>) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("id".into(), Value::from(self.id.as_str()));
        object.insert("object".into(), Value::from("response"));
        object.insert("created_at".into(), Value::from(self.created_at));
        object.insert("status".into(), Value::from(status));
        object.insert("error".into(), Value::Null);
        let details = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
        object.insert("incomplete_details".into(), details.unwrap_or(Value::Null));
        object.insert("model".into(), Value::from(self.model.as_str()));
        object.insert("output".into(), Value::Array(output));
        object.insert("usage".into(), usage.unwrap_or(Value::Null));
        for (key, value) in &self.echo {
            object.insert(key.clone(), value.clone());
        }
        Value::Object(object)
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

fn complete_body(answer: &Answer) -> Bytes {
    let tokens = match answer.output {
        Output::Tokens(n) => n,
        _ => 0,
    };
    let text = answer.text(tokens);
    let item = answer.item(Some(&text));
    let usage = answer.usage(answer.output_tokens(tokens));
    let body = answer.response(answer.done_status(), vec![item], Some(usage));
    Bytes::from(body.to_string())
}

/// The Responses event stream of one answer.
pub(crate) struct ResponseEvents {
    answer: Answer,
    /// Delta texts for JSON and call answers; token answers make theirs.
    fragments: Vec<String>,
    sequence: u64,
}

impl ResponseEvents {
    fn new(answer: &Answer) -> Self {
        let fragments = match &answer.output {
            Output::Tokens(_) => Vec::new(),
            Output::Json(text) => split_in_fragments(text, 4),
            Output::Call(_) => TOOL_INPUT_FRAGMENTS[1..]
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
        };
        Self {
            answer: answer.clone(),
            fragments,
            sequence: 0,
        }
    }

    fn is_call(&self) -> bool {
        matches!(self.answer.output, Output::Call(_))
    }

    /// `event: TYPE` and the data with its `type` and `sequence_number`.
    fn event(&mut self, kind: &str, mut data: Value) -> Bytes {
        if let Value::Object(fields) = &mut data {
            fields.insert("type".into(), Value::from(kind));
            fields.insert("sequence_number".into(), Value::from(self.sequence));
        }
        self.sequence += 1;
        let data = data.to_string();
        let mut out = BytesMut::with_capacity(kind.len() + data.len() + 16);
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(data.as_bytes());
        out.put_slice(b"\n\n");
        out.freeze()
    }

    fn sent_text(&self, sent: u32) -> String {
        match self.answer.output {
            Output::Tokens(_) => (0..sent).map(|n| format!("tok{n} ")).collect(),
            _ => self.fragments.concat(),
        }
    }

    fn text_closing(&mut self, step: usize, sent: u32) -> Option<Closing> {
        let text = self.sent_text(sent);
        let ids = json!({"item_id": self.answer.item_id, "output_index": 0, "content_index": 0});
        let with = |mut base: Value, key: &str, value: Value| {
            base[key] = value;
            base
        };
        Some(match step {
            0 => Closing::More(self.event(
                "response.output_text.done",
                with(with(ids, "text", Value::from(text)), "logprobs", json!([])),
            )),
            1 => Closing::More(self.event(
                "response.content_part.done",
                with(ids, "part", output_text(&text)),
            )),
            2 => {
                let item = self.answer.item(Some(&text));
                Closing::More(self.event(
                    "response.output_item.done",
                    json!({"output_index": 0, "item": item}),
                ))
            }
            3 => Closing::Last(self.completed(&text, sent)),
            _ => return None,
        })
    }

    fn call_closing(&mut self, step: usize, sent: u32) -> Option<Closing> {
        let item_id = self.answer.item_id();
        Some(match step {
            0 => Closing::More(self.event(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": 0, "arguments": TOOL_INPUT_JSON}),
            )),
            1 => {
                let item = self.answer.item(Some(""));
                Closing::More(self.event(
                    "response.output_item.done",
                    json!({"output_index": 0, "item": item}),
                ))
            }
            2 => Closing::Last(self.completed("", sent)),
            _ => return None,
        })
    }

    fn completed(&mut self, text: &str, sent: u32) -> Bytes {
        let item = self.answer.item(Some(text));
        let usage = self.answer.usage(self.answer.output_tokens(sent));
        let status = self.answer.done_status();
        let response = self.answer.response(status, vec![item], Some(usage));
        let kind = if self.answer.cut_short {
            "response.incomplete"
        } else {
            "response.completed"
        };
        self.event(kind, json!({ "response": response }))
    }
}

/// `text` cut into at most `n` pieces on character boundaries.
pub(crate) fn split_in_fragments(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(n.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

impl StreamFormat for ResponseEvents {
    fn chunks(&self) -> u32 {
        match self.answer.output {
            Output::Tokens(n) => n,
            _ => u32::try_from(self.fragments.len()).unwrap_or(u32::MAX),
        }
    }

    fn preamble(&mut self, step: usize) -> Option<Bytes> {
        match step {
            0 | 1 => {
                let kind = if step == 0 {
                    "response.created"
                } else {
                    "response.in_progress"
                };
                let response = self.answer.response("in_progress", Vec::new(), None);
                Some(self.event(kind, json!({ "response": response })))
            }
            2 => {
                let item = self.answer.item(None);
                Some(self.event(
                    "response.output_item.added",
                    json!({"output_index": 0, "item": item}),
                ))
            }
            3 if !self.is_call() => Some(self.event(
                "response.content_part.added",
                json!({
                    "item_id": self.answer.item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "part": output_text(""),
                }),
            )),
            _ => None,
        }
    }

    fn content(&mut self, n: u32, _finishing: bool) -> Bytes {
        let fragment = usize::try_from(n)
            .ok()
            .and_then(|i| self.fragments.get(i))
            .cloned();
        if self.is_call() {
            let item_id = self.answer.item_id();
            let delta = fragment.unwrap_or_default();
            return self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": 0, "delta": delta}),
            );
        }
        let delta = fragment.unwrap_or_else(|| format!("tok{n} "));
        let data = json!({
            "item_id": self.answer.item_id,
            "output_index": 0,
            "content_index": 0,
            "delta": delta,
            "logprobs": [],
        });
        self.event("response.output_text.delta", data)
    }

    fn closing(&mut self, step: usize, sent: u32) -> Option<Closing> {
        if self.is_call() {
            self.call_closing(step, sent)
        } else {
            self.text_closing(step, sent)
        }
    }

    /// `error`, then `response.failed` carrying the same error.
    fn error_event(&mut self, shared: &Shared) -> Bytes {
        let message = format!("simulated overload from {}", shared.name);
        let error = self.event(
            "error",
            json!({"code": "server_error", "message": message, "param": null}),
        );
        let mut response = self.answer.response("failed", Vec::new(), None);
        response["error"] = json!({"code": "server_error", "message": message});
        let failed = self.event("response.failed", json!({ "response": response }));
        let mut out = BytesMut::with_capacity(error.len() + failed.len());
        out.put_slice(&error);
        out.put_slice(&failed);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_tools_are_called_until_their_output_comes_back() {
        let tools = json!([{"type": "web_search"}, {"type": "function", "name": "get_weather"}]);
        let req = json!({"input": "weather?", "tools": tools});
        assert_eq!(called_function(&req), Some("get_weather"));
        let req = json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}], "tools": tools});
        assert_eq!(called_function(&req), None);
        let req = json!({"input": "x", "tools": tools, "tool_choice": "none"});
        assert_eq!(called_function(&req), None);
        let req = json!({"input": "x", "tools": [{"type": "web_search"}]});
        assert_eq!(called_function(&req), None);
    }

    #[test]
    fn json_schema_is_filled_with_its_required_properties() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "temp": {"type": "number"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "inner": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
                "optional": {"type": "string"}
            },
            "required": ["city", "temp", "unit", "tags", "inner"]
        });
        assert_eq!(
            fill_schema(&schema, &schema, 0),
            json!({"city": "sim", "temp": 0, "unit": "celsius", "tags": [], "inner": {"ok": false}})
        );
    }

    #[test]
    fn nested_models_are_filled_through_refs_and_recursion_ends() {
        let schema = json!({
            "$defs": {
                "Place": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
                "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}, "required": ["next"]},
            },
            "type": "object",
            "properties": {
                "place": {"$ref": "#/$defs/Place"},
                "maybe": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "node": {"$ref": "#/$defs/Node"},
            },
            "required": ["place", "maybe", "node"],
        });
        let value = fill_schema(&schema, &schema, 0);
        assert_eq!(value["place"], json!({"name": "sim"}));
        assert_eq!(value["maybe"], 0);
        assert!(
            value["node"]["next"].is_object(),
            "recursion is cut off: {value}"
        );
    }

    #[test]
    fn remembered_ids_are_bounded() {
        let ids = ResponseIds::new(2);
        let (a, b, c) = (ids.id("resp", 0), ids.id("resp", 1), ids.id("resp", 2));
        ids.remember(&a);
        ids.remember(&b);
        ids.remember(&c);
        assert!(!ids.contains(&a), "the oldest is forgotten");
        assert!(ids.contains(&b) && ids.contains(&c));
        assert_ne!(
            ResponseIds::new(1).id("resp", 0),
            a,
            "ids differ across sims"
        );
    }

    #[test]
    fn fragments_reassemble() {
        let text = r#"{"city":"sim","é":0}"#;
        let parts = split_in_fragments(text, 4);
        assert!(parts.len() <= 4 && parts.len() > 1);
        assert_eq!(parts.concat(), text);
    }
}
