//! OpenAI chat chunks (every translated upstream's stream, as the relay
//! forwards it) as the Responses API's typed events: `response.created`,
//! output items opened, deltas, items closed, and a terminal
//! `response.completed` / `response.incomplete`, each numbered. A chat
//! error event (an upstream error after content, or the relay's cut event)
//! becomes `response.failed` followed by an `error` event the SDKs raise on.

use super::response::{
    function_call_item, message_item, output_text, reasoning_item, ResponseShell, Status,
};
use super::{error_event, sse_event, usage_from_chat};
use crate::streaming::sse::event_data;
use bytes::Bytes;
use serde_json::{json, Value};

/// Output items one response may stream; a chat stream with more tool calls
/// than this is cut (a bounded translator state).
const MAX_ITEMS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Refusal,
    Reasoning,
    /// A tool call, by its chat `index`.
    Call(u64),
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    id: String,
    /// Text, refusal, reasoning or the call's arguments so far.
    text: String,
    call_id: String,
    name: String,
    open: bool,
}

pub struct ToResponsesStream {
    shell: ResponseShell,
    model: String,
    sequence: u64,
    started: bool,
    items: Vec<Item>,
    finish_reason: Option<String>,
    usage: Value,
    ended: bool,
    finished: Option<Value>,
}

impl ToResponsesStream {
    pub fn new(shell: ResponseShell, model: &str) -> Self {
        ToResponsesStream {
            shell,
            model: model.to_owned(),
            sequence: 0,
            started: false,
            items: Vec::new(),
            finish_reason: None,
            usage: Value::Null,
            ended: false,
            finished: None,
        }
    }

    /// Carries on a native Responses stream that broke inside its only
    /// output item, a text message (`item_id`, output 0, content part 0,
    /// holding `text` so far): the chat chunks of a continuation then
    /// become that item's further deltas and the response's closing
    /// events, numbered from `next_sequence`, under `shell`'s id.
    pub fn resumed(
        shell: ResponseShell,
        model: &str,
        next_sequence: u64,
        item_id: &str,
        text: &str,
    ) -> Self {
        let mut stream = ToResponsesStream::new(shell, model);
        stream.started = true;
        stream.sequence = next_sequence;
        stream.items.push(Item {
            kind: Kind::Text,
            id: item_id.to_owned(),
            text: text.to_owned(),
            call_id: String::new(),
            name: String::new(),
            open: true,
        });
        stream
    }

    /// The next event's `sequence_number`.
    pub fn next_sequence_number(&self) -> u64 {
        self.sequence
    }

    /// The whole response once the stream completed (or stopped early);
    /// `None` while it runs and after a failure.
    pub fn finished_response(&self) -> Option<&Value> {
        self.finished.as_ref()
    }

    /// Takes one chat SSE event and appends the Responses events it means.
    pub fn translate(&mut self, event: &[u8], out: &mut Vec<Bytes>) {
        if self.ended {
            return;
        }
        let Some(data) = event_data(event) else {
            return;
        };
        if data.trim_ascii() == b"[DONE]" {
            let status = Status::from_finish_reason(self.finish_reason.as_deref());
            return self.end(status, out);
        }
        let Ok(chunk) = serde_json::from_slice::<Value>(&data) else {
            return;
        };
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return self.fail(error, out);
        }
        if let Some(model) = chunk["model"].as_str().filter(|m| !m.is_empty()) {
            model.clone_into(&mut self.model);
        }
        self.start(out);
        if chunk["usage"].is_object() {
            self.usage = usage_from_chat(&chunk["usage"]);
        }
        let Some(choice) = chunk["choices"].get(0) else {
            return;
        };
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(reason.to_owned());
        }
        self.delta(&choice["delta"], out);
    }

    fn delta(&mut self, delta: &Value, out: &mut Vec<Bytes>) {
        let reasoning = delta["reasoning_content"]
            .as_str()
            .or(delta["reasoning"].as_str());
        for (kind, text) in [
            (Kind::Reasoning, reasoning),
            (Kind::Text, delta["content"].as_str()),
            (Kind::Refusal, delta["refusal"].as_str()),
        ] {
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                let index = self.open_item(kind, "", "", out);
                self.append(index, text, out);
            }
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let kind = Kind::Call(call["index"].as_u64().unwrap_or(0));
            let call_id = call["id"].as_str().unwrap_or_default();
            let name = call["function"]["name"].as_str().unwrap_or_default();
            let index = self.open_item(kind, call_id, name, out);
            if let Some(arguments) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                self.append(index, arguments, out);
            }
        }
    }

    fn next_sequence(&mut self) -> u64 {
        let n = self.sequence;
        self.sequence += 1;
        n
    }

    /// Appends one event, numbering it.
    fn emit(&mut self, mut event: Value, out: &mut Vec<Bytes>) {
        event["sequence_number"] = json!(self.next_sequence());
        out.push(sse_event(&event));
    }

    fn start(&mut self, out: &mut Vec<Bytes>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self
            .shell
            .build(&self.model, Status::InProgress, Vec::new(), Value::Null);
        self.emit(
            json!({"type": "response.created", "response": response}),
            out,
        );
        self.emit(
            json!({"type": "response.in_progress", "response": response}),
            out,
        );
    }

    /// The index of the open item of `kind`, opening it (and closing the
    /// text or reasoning item before it) when there is none.
    fn open_item(&mut self, kind: Kind, call_id: &str, name: &str, out: &mut Vec<Bytes>) -> usize {
        if let Some(index) = self.items.iter().position(|i| i.open && i.kind == kind) {
            return index;
        }
        for index in 0..self.items.len() {
            let item = &self.items[index];
            if item.open && !matches!(item.kind, Kind::Call(_)) {
                self.close(index, out);
            }
        }
        if self.items.len() == MAX_ITEMS {
            let error = json!({"code": "stream_cut", "message": format!("the upstream streamed more than {MAX_ITEMS} output items")});
            self.fail(&error, out);
            return 0;
        }
        let prefix = match kind {
            Kind::Text | Kind::Refusal => "msg",
            Kind::Reasoning => "rs",
            Kind::Call(_) => "fc",
        };
        let item = Item {
            kind,
            id: super::new_id(prefix),
            text: String::new(),
            call_id: call_id.to_owned(),
            name: name.to_owned(),
            open: true,
        };
        let index = self.items.len();
        let added = self.item_value(&item, "in_progress", true);
        self.items.push(item);
        self.emit(
            json!({"type": "response.output_item.added", "output_index": index, "item": added}),
            out,
        );
        if let Some(part) = empty_part(kind) {
            let id = self.items[index].id.clone();
            self.emit(
                json!({"type": "response.content_part.added", "item_id": id, "output_index": index, "content_index": 0, "part": part}),
                out,
            );
        }
        index
    }

    fn append(&mut self, index: usize, delta: &str, out: &mut Vec<Bytes>) {
        if self.ended {
            return;
        }
        let item = &mut self.items[index];
        item.text.push_str(delta);
        let id = item.id.clone();
        let event = match item.kind {
            Kind::Text => {
                json!({"type": "response.output_text.delta", "item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []})
            }
            Kind::Refusal => {
                json!({"type": "response.refusal.delta", "item_id": id, "output_index": index, "content_index": 0, "delta": delta})
            }
            Kind::Reasoning => {
                json!({"type": "response.reasoning_text.delta", "item_id": id, "output_index": index, "content_index": 0, "delta": delta})
            }
            Kind::Call(_) => {
                json!({"type": "response.function_call_arguments.delta", "item_id": id, "output_index": index, "delta": delta})
            }
        };
        self.emit(event, out);
    }

    /// The item as a Response output item.
    fn item_value(&self, item: &Item, status: &str, empty: bool) -> Value {
        let text = if empty { "" } else { item.text.as_str() };
        match item.kind {
            Kind::Text => message_item(
                &item.id,
                status,
                if empty {
                    vec![]
                } else {
                    vec![output_text(text)]
                },
            ),
            Kind::Refusal => message_item(
                &item.id,
                status,
                if empty {
                    vec![]
                } else {
                    vec![json!({"type": "refusal", "refusal": text})]
                },
            ),
            Kind::Reasoning => {
                let mut value = reasoning_item(&item.id, text);
                if empty {
                    value["content"] = json!([]);
                }
                value
            }
            Kind::Call(_) => function_call_item(&item.id, status, &item.call_id, &item.name, text),
        }
    }

    fn close(&mut self, index: usize, out: &mut Vec<Bytes>) {
        self.items[index].open = false;
        let item = &self.items[index];
        let (id, text) = (item.id.clone(), item.text.clone());
        let done = match item.kind {
            Kind::Text => {
                json!({"type": "response.output_text.done", "item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})
            }
            Kind::Refusal => {
                json!({"type": "response.refusal.done", "item_id": id, "output_index": index, "content_index": 0, "refusal": text})
            }
            Kind::Reasoning => {
                json!({"type": "response.reasoning_text.done", "item_id": id, "output_index": index, "content_index": 0, "text": text})
            }
            Kind::Call(_) => {
                json!({"type": "response.function_call_arguments.done", "item_id": id, "output_index": index, "name": item.name, "arguments": text})
            }
        };
        let part = full_part(item.kind, &text);
        let finished = self.item_value(item, "completed", false);
        self.emit(done, out);
        if let Some(part) = part {
            self.emit(
                json!({"type": "response.content_part.done", "item_id": id, "output_index": index, "content_index": 0, "part": part}),
                out,
            );
        }
        self.emit(
            json!({"type": "response.output_item.done", "output_index": index, "item": finished}),
            out,
        );
    }

    fn end(&mut self, status: Status, out: &mut Vec<Bytes>) {
        self.start(out);
        for index in 0..self.items.len() {
            if self.items[index].open {
                self.close(index, out);
            }
        }
        let output = self
            .items
            .iter()
            .map(|item| self.item_value(item, "completed", false))
            .collect();
        let event_type = status.event_type();
        let response = self
            .shell
            .build(&self.model, status, output, self.usage.clone());
        self.emit(json!({"type": event_type, "response": response}), out);
        self.finished = Some(response);
        self.ended = true;
    }

    /// `response.failed` with what was produced, then the `error` event.
    fn fail(&mut self, error: &Value, out: &mut Vec<Bytes>) {
        self.start(out);
        let code = error["code"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| error["code"].to_string());
        let message = error["message"]
            .as_str()
            .unwrap_or("the upstream failed mid-answer")
            .to_owned();
        let output = self
            .items
            .iter()
            .map(|item| self.item_value(item, "incomplete", false))
            .collect();
        let status = Status::Failed {
            code: code.clone(),
            message: message.clone(),
        };
        let response = self
            .shell
            .build(&self.model, status, output, self.usage.clone());
        self.emit(
            json!({"type": "response.failed", "response": response}),
            out,
        );
        let sequence = self.next_sequence();
        out.push(error_event(&message, &code, sequence));
        self.ended = true;
    }
}

fn empty_part(kind: Kind) -> Option<Value> {
    full_part(kind, "")
}

fn full_part(kind: Kind, text: &str) -> Option<Value> {
    match kind {
        Kind::Text => Some(output_text(text)),
        Kind::Refusal => Some(json!({"type": "refusal", "refusal": text})),
        Kind::Reasoning => Some(json!({"type": "reasoning_text", "text": text})),
        Kind::Call(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(v: Value) -> Vec<u8> {
        format!("data: {v}\n\n").into_bytes()
    }

    fn run(events: &[Vec<u8>]) -> (Vec<Value>, ToResponsesStream) {
        let shell = ResponseShell::new(json!({"model": "m"}).as_object().unwrap());
        let mut t = ToResponsesStream::new(shell, "route");
        let mut out = Vec::new();
        for e in events {
            t.translate(e, &mut out);
        }
        let parsed = out
            .iter()
            .map(|e| {
                let text = std::str::from_utf8(e).unwrap();
                let (head, data) = text.split_once("\ndata: ").unwrap();
                let v: Value = serde_json::from_str(data.trim_end()).unwrap();
                assert_eq!(head, format!("event: {}", v["type"].as_str().unwrap()));
                v
            })
            .collect();
        (parsed, t)
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn text_and_a_tool_call_stream_as_typed_numbered_events() {
        let (events, t) = run(&[
            chunk(
                json!({"model": "claude", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            ),
            chunk(json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})),
            chunk(json!({"choices": [{"index": 0, "delta": {"content": "lo"}}]})),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]}}]}),
            ),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}}]}),
            ),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}, "finish_reason": "tool_calls"}]}),
            ),
            chunk(
                json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}),
            ),
            b"data: [DONE]\n\n".to_vec(),
        ]);
        assert_eq!(
            types(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (n, e) in events.iter().enumerate() {
            assert_eq!(e["sequence_number"], n as u64);
        }
        assert_eq!(events[6]["text"], "Hello");
        assert_eq!(events[12]["arguments"], "{\"a\":1}");
        assert_eq!(events[13]["output_index"], 1);
        let done = &events[14]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["model"], "claude");
        assert_eq!(done["usage"]["output_tokens"], 4);
        assert_eq!(done["output"][1]["call_id"], "call_1");
        assert_eq!(t.finished_response(), Some(done));
    }

    #[test]
    fn a_cut_stream_fails_with_a_raising_error_event() {
        let cut = crate::streaming::relay::cut_event(
            crate::streaming::relay::CutReason::ConnectionLost,
            3,
        );
        let (events, t) = run(&[
            chunk(json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})),
            cut.to_vec(),
            b"data: [DONE]\n\n".to_vec(),
        ]);
        let tail = &types(&events)[events.len() - 2..];
        assert_eq!(tail, ["response.failed", "error"]);
        assert_eq!(events[events.len() - 2]["response"]["status"], "failed");
        assert_eq!(
            events[events.len() - 2]["response"]["error"]["code"],
            "stream_cut"
        );
        let error = events.last().unwrap();
        assert_eq!(
            error["error"]["code"], "stream_cut",
            "the SDKs raise on `error`"
        );
        assert_eq!(error["sequence_number"], events.len() as u64 - 1);
        assert!(t.finished_response().is_none());
    }

    #[test]
    fn a_length_stop_is_incomplete_and_reasoning_gets_its_own_item() {
        let (events, _) = run(&[
            chunk(json!({"choices": [{"index": 0, "delta": {"reasoning_content": "think"}}]})),
            chunk(
                json!({"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": "length"}]}),
            ),
            b"data: [DONE]\n\n".to_vec(),
        ]);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
        assert_eq!(last["response"]["output"][0]["type"], "reasoning");
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "think");
        assert!(types(&events).contains(&"response.reasoning_text.delta"));
    }
}
