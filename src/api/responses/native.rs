//! A native Responses stream (an upstream that offers the Responses API)
//! as the relay and the failover engine see it: which events are content,
//! which end the answer, which are errors; and the finished response the
//! terminal event carries, for the gateway's conversation store.

use crate::streaming::sse::{event_data, EventKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(borrow, default)]
    code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    response: Option<ResponsePeek<'a>>,
}

#[derive(Deserialize)]
struct ResponsePeek<'a> {
    #[serde(borrow, default)]
    error: Option<ErrorPeek<'a>>,
}

#[derive(Deserialize)]
struct ErrorPeek<'a> {
    #[serde(borrow, default)]
    code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

fn code_text(code: Option<&RawValue>) -> String {
    code.map_or(String::new(), |c| c.get().trim_matches('"').to_owned())
}

/// What one native Responses event means for the gateway.
pub fn classify_event(event: &[u8]) -> EventKind {
    let Some(data) = event_data(event) else {
        return EventKind::Other;
    };
    let Ok(peek) = serde_json::from_slice::<Peek<'_>>(&data) else {
        return EventKind::Other;
    };
    match peek.kind.as_ref() {
        "response.completed" | "response.incomplete" => EventKind::Content { finished: true },
        "response.failed" => {
            let error = peek.response.and_then(|r| r.error);
            EventKind::Error {
                kind: "response.failed".into(),
                code: code_text(error.as_ref().and_then(|e| e.code)),
                message: error
                    .and_then(|e| e.message)
                    .map(Cow::into_owned)
                    .unwrap_or_default(),
            }
        }
        "error" => EventKind::Error {
            kind: "error".into(),
            code: code_text(peek.code),
            message: peek.message.map(Cow::into_owned).unwrap_or_default(),
        },
        // Text, refusal, reasoning, tool arguments and every other item's
        // progress: the answer has begun.
        kind if kind.ends_with(".delta") => {
            let empty = peek
                .delta
                .is_none_or(|d| matches!(d.get(), "\"\"" | "null"));
            if empty {
                EventKind::Other
            } else {
                EventKind::Content { finished: false }
            }
        }
        // An item with no deltas (a built-in tool call) is content once done.
        "response.output_item.done" => EventKind::Content { finished: false },
        _ => EventKind::Other,
    }
}

/// The response a terminal `response.completed` / `response.incomplete`
/// event carries.
pub fn finished_response(event: &[u8]) -> Option<serde_json::Value> {
    let data = event_data(event)?;
    if memchr::memmem::find(&data, b"\"response.completed\"").is_none()
        && memchr::memmem::find(&data, b"\"response.incomplete\"").is_none()
    {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_slice(&data).ok()?;
    matches!(
        value["type"].as_str(),
        Some("response.completed" | "response.incomplete")
    )
    .then(|| value["response"].take())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, extra: &str) -> Vec<u8> {
        format!("event: {kind}\ndata: {{\"type\":\"{kind}\",\"sequence_number\":1{extra}}}\n\n")
            .into_bytes()
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify_event(&event("response.created", ",\"response\":{}")),
            EventKind::Other
        );
        assert_eq!(
            classify_event(&event("response.output_item.added", "")),
            EventKind::Other
        );
        assert_eq!(
            classify_event(&event("response.output_text.delta", ",\"delta\":\"hi\"")),
            EventKind::Content { finished: false }
        );
        assert_eq!(
            classify_event(&event("response.output_text.delta", ",\"delta\":\"\"")),
            EventKind::Other
        );
        assert_eq!(
            classify_event(&event(
                "response.function_call_arguments.delta",
                ",\"delta\":\"{\""
            )),
            EventKind::Content { finished: false }
        );
        assert_eq!(
            classify_event(&event("response.completed", ",\"response\":{\"usage\":{}}")),
            EventKind::Content { finished: true }
        );
        assert_eq!(
            classify_event(&event(
                "error",
                ",\"code\":\"server_error\",\"message\":\"boom\""
            )),
            EventKind::Error {
                kind: "error".into(),
                code: "server_error".into(),
                message: "boom".into()
            }
        );
        assert!(matches!(
            classify_event(&event("response.failed", ",\"response\":{\"error\":{\"code\":\"server_error\",\"message\":\"x\"}}")),
            EventKind::Error { code, .. } if code == "server_error"
        ));
    }

    #[test]
    fn the_terminal_event_carries_the_response() {
        let done = event("response.completed", ",\"response\":{\"id\":\"resp_1\"}");
        assert_eq!(finished_response(&done).unwrap()["id"], "resp_1");
        assert!(finished_response(&event(
            "response.output_text.done",
            ",\"text\":\"response.completed\""
        ))
        .is_none());
    }
}
