//! The seam of a continued native Responses stream (an upstream serving
//! `/v1/responses` itself): what the relay records of the answer while it
//! streams (the announced Response object, its one text item, the last
//! `sequence_number`), whether that answer can still be continued, and the
//! translator that carries a chat continuation on as the same stream (same
//! response and item ids, numbering going on). Only an answer that is one
//! text message is continued: reasoning, tool calls, refusals, a second
//! item or part, or an item already closed make it not continuable, since
//! a chat continuation can only add text to an open text part. Pure over
//! events; the relay decides when to use it, and may not touch the chat
//! [`super::seam::Seam`]'s rules, which run first on every continuation chunk.

use super::seam::{Head, MAX_CONTINUABLE};
use crate::api::responses::{ResponseShell, ToResponsesStream};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;

/// What a native stream showed of its answer so far.
#[derive(Debug)]
pub struct NativeRecord {
    /// The Response object of `response.created` (or `in_progress`).
    response: Option<Value>,
    /// The text message item being streamed.
    item_id: Option<String>,
    /// The content part of that item has been announced.
    part_open: bool,
    last_sequence: Option<u64>,
    continuable: bool,
}

impl Default for NativeRecord {
    fn default() -> Self {
        NativeRecord {
            response: None,
            item_id: None,
            part_open: false,
            last_sequence: None,
            continuable: true,
        }
    }
}

#[derive(Deserialize)]
struct EventPeek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    sequence_number: Option<u64>,
    #[serde(default)]
    output_index: Option<u64>,
    #[serde(default)]
    content_index: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(borrow, default)]
    item: Option<TypedPeek<'a>>,
    #[serde(borrow, default)]
    part: Option<TypedPeek<'a>>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct TypedPeek<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

impl NativeRecord {
    /// Whether the answer so far can be continued by a chat continuation.
    pub fn continuable(&self) -> bool {
        self.continuable
    }

    /// Notes one event's data; the answer text it adds. An event this
    /// record cannot follow makes the answer not continuable.
    pub fn note(&mut self, data: &[u8]) -> Option<String> {
        if !self.continuable {
            return None;
        }
        let text = serde_json::from_slice::<EventPeek<'_>>(data)
            .ok()
            .and_then(|event| self.follow(&event));
        match text {
            Some(Ok(text)) => text,
            Some(Err(())) | None => {
                self.continuable = false;
                None
            }
        }
    }

    /// `None` or `Err` when the event is one a continuation cannot follow.
    fn follow(&mut self, event: &EventPeek<'_>) -> Option<Result<Option<String>, ()>> {
        if let Some(n) = event.sequence_number {
            self.last_sequence = Some(n);
        }
        let first_slot = event.output_index.unwrap_or(0) == 0;
        let ok = match event.kind.as_ref() {
            "response.created" | "response.in_progress" | "response.queued" => {
                if self.response.is_none() {
                    let response = event.response?;
                    self.response = Some(serde_json::from_str(response.get()).ok()?);
                }
                true
            }
            "response.output_item.added" => {
                let item = event.item.as_ref()?;
                let message = item.kind.as_deref() == Some("message");
                let id = item.id.as_deref()?;
                let first = self.item_id.is_none();
                self.item_id = Some(id.to_owned());
                message && first && first_slot
            }
            "response.content_part.added" => {
                let text = event.part.as_ref()?.kind.as_deref() == Some("output_text");
                let first = !self.part_open;
                self.part_open = true;
                text && first && first_slot && event.content_index.unwrap_or(0) == 0
            }
            "response.output_text.delta" => {
                let delta: Cow<'_, str> = serde_json::from_str(event.delta?.get()).ok()?;
                let in_place = first_slot && event.content_index.unwrap_or(0) == 0;
                return (in_place && self.part_open).then(|| Ok(Some(delta.into_owned())));
            }
            _ => false,
        };
        Some(if ok { Ok(None) } else { Err(()) })
    }

    /// The identity the chat seam gives continuation chunks: the response's
    /// id and model (the translator takes its model from the chunks).
    pub fn head(&self) -> Option<Head> {
        let response = self.response.as_ref()?;
        Some(Head {
            id: response["id"].as_str()?.to_owned(),
            model: response["model"].as_str().map(str::to_owned),
            created: None,
        })
    }

    /// The translator that carries the stream on after `text` (what the
    /// client has), numbering from the event after the last one seen.
    /// `None` when the stream never opened its text part.
    pub fn resumed(&self, text: &str) -> Option<ToResponsesStream> {
        if !self.continuable || !self.part_open || text.len() > MAX_CONTINUABLE {
            return None;
        }
        let response = self.response.as_ref()?;
        let shell = ResponseShell::from_response(response)?;
        let model = response["model"].as_str().unwrap_or_default();
        let next = self.last_sequence.map_or(0, |n| n.saturating_add(1));
        Some(ToResponsesStream::resumed(
            shell,
            model,
            next,
            self.item_id.as_deref()?,
            text,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn noted(record: &mut NativeRecord, event: Value) -> Option<String> {
        record.note(event.to_string().as_bytes())
    }

    fn opened() -> NativeRecord {
        let mut record = NativeRecord::default();
        let response = json!({"id": "resp_1", "object": "response", "created_at": 7, "model": "gpt-4o", "status": "in_progress", "output": [], "temperature": 0.5, "usage": null});
        noted(
            &mut record,
            json!({"type": "response.created", "sequence_number": 0, "response": response}),
        );
        noted(
            &mut record,
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": {"type": "message", "id": "msg_1", "content": []}}),
        );
        noted(
            &mut record,
            json!({"type": "response.content_part.added", "sequence_number": 2, "output_index": 0, "content_index": 0, "item_id": "msg_1", "part": {"type": "output_text", "text": ""}}),
        );
        record
    }

    #[test]
    fn a_text_message_is_followed_and_resumed_in_place() {
        let mut record = opened();
        let text = noted(
            &mut record,
            json!({"type": "response.output_text.delta", "sequence_number": 3, "output_index": 0, "content_index": 0, "item_id": "msg_1", "delta": "tok0 "}),
        );
        assert_eq!(text.as_deref(), Some("tok0 "));
        assert!(record.continuable());
        let head = record.head().unwrap();
        assert_eq!(
            (head.id.as_str(), head.model.as_deref()),
            ("resp_1", Some("gpt-4o"))
        );
        let mut stream = record.resumed("tok0 ").unwrap();
        assert_eq!(stream.next_sequence_number(), 4);
        let mut out = Vec::new();
        let chunk = json!({"id": "resp_1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "tok1 "}, "finish_reason": "stop"}]});
        stream.translate(format!("data: {chunk}\n\n").as_bytes(), &mut out);
        stream.translate(b"data: [DONE]\n\n", &mut out);
        let events: Vec<Value> = out
            .iter()
            .map(|e| {
                let text = std::str::from_utf8(e).unwrap();
                serde_json::from_str(text.split_once("data: ").unwrap().1.trim_end()).unwrap()
            })
            .collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let numbers: Vec<u64> = events
            .iter()
            .map(|e| e["sequence_number"].as_u64().unwrap())
            .collect();
        assert_eq!(numbers, [4, 5, 6, 7, 8]);
        assert_eq!(events[0]["item_id"], "msg_1");
        assert_eq!(events[1]["text"], "tok0 tok1 ");
        let done = &events[4]["response"];
        assert_eq!(done["id"], "resp_1");
        assert_eq!(done["created_at"], 7);
        assert_eq!(
            done["temperature"], 0.5,
            "the upstream's echoed fields stay"
        );
        assert_eq!(done["output"][0]["id"], "msg_1");
        assert_eq!(done["output"][0]["content"][0]["text"], "tok0 tok1 ");
    }

    #[test]
    fn anything_but_one_text_message_is_not_continuable() {
        let call = json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0, "item": {"type": "function_call", "id": "fc_1"}});
        let mut record = NativeRecord::default();
        noted(&mut record, call);
        assert!(!record.continuable());
        let mut record = opened();
        noted(
            &mut record,
            json!({"type": "response.output_item.added", "sequence_number": 3, "output_index": 1, "item": {"type": "message", "id": "msg_2"}}),
        );
        assert!(!record.continuable(), "a second item");
        let mut record = opened();
        noted(
            &mut record,
            json!({"type": "response.output_text.done", "sequence_number": 3, "output_index": 0, "content_index": 0, "text": ""}),
        );
        assert!(!record.continuable(), "a closed part");
        assert!(record.resumed("").is_none());
        let mut record = NativeRecord::default();
        assert!(noted(
            &mut record,
            json!({"type": "response.reasoning_text.delta", "delta": "hm"})
        )
        .is_none());
        assert!(!record.continuable());
    }
}
