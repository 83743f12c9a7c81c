//! The request that asks a target to continue an answer another target
//! started (a stream cut mid-answer): the client's chat body with the
//! partial answer appended in the form the target's continuation mode
//! takes. The result is a chat body like any other, translated for the
//! target by its provider's adapter afterwards.

use crate::api::{BodyError, InspectedBody};
use crate::config::{Continuation, ProviderKind};
use bytes::Bytes;
use serde_json::{json, Map, Value};

/// The user message that follows the partial answer in `instruct` mode.
pub const CONTINUE_INSTRUCTION: &str =
    "Your previous answer was cut off. Continue it from exactly \
where it stops: output only the rest of the answer, without repeating any of it and without any \
preamble or comment.";

/// `base` (the client's chat body, as sent to the first target) asking for
/// the continuation of `partial`, of which the client already received
/// about `sent_tokens` tokens (taken off the completion budget). `None`
/// for a target that cannot continue.
pub fn request(
    base: &InspectedBody,
    partial: &str,
    sent_tokens: u64,
    mode: Continuation,
    kind: ProviderKind,
) -> Option<Result<InspectedBody, BodyError>> {
    if mode == Continuation::None {
        return None;
    }
    let mut body: Map<String, Value> = match serde_json::from_slice(base.bytes()) {
        Ok(body) => body,
        Err(e) => return Some(Err(BodyError::InvalidJson(e.to_string()))),
    };
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return Some(Err(BodyError::InvalidJson("no messages".to_owned())));
    };
    match mode {
        Continuation::Prefill => {
            // Anthropic refuses a final assistant turn ending in
            // whitespace; the seam rule drops a repeated space.
            let text = if kind == ProviderKind::Anthropic {
                partial.trim_end()
            } else {
                partial
            };
            messages.push(json!({"role": "assistant", "content": text}));
        }
        Continuation::Instruct => {
            messages.push(json!({"role": "assistant", "content": partial}));
            messages.push(json!({"role": "user", "content": CONTINUE_INSTRUCTION}));
        }
        Continuation::None => return None,
    }
    if mode == Continuation::Prefill && matches!(kind, ProviderKind::OpenAi) {
        // vLLM's (and SGLang's) way to continue the last assistant message
        // instead of starting a new turn.
        body.insert("continue_final_message".into(), Value::Bool(true));
        body.insert("add_generation_prompt".into(), Value::Bool(false));
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(limit) = body.get(field).and_then(Value::as_u64) {
            let left = limit.saturating_sub(sent_tokens).max(1);
            body.insert(field.into(), Value::from(left));
        }
    }
    // One answer continues; several choices cannot be stitched together.
    body.remove("n");
    Some(
        serde_json::to_vec(&body)
            .map_err(|e| BodyError::InvalidJson(e.to_string()))
            .and_then(|bytes| InspectedBody::parse(Bytes::from(bytes))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> InspectedBody {
        InspectedBody::parse(Bytes::from_static(
            br#"{"model":"m","stream":true,"max_tokens":100,"messages":[{"role":"user","content":"count"}]}"#,
        ))
        .unwrap()
    }

    fn built(mode: Continuation, kind: ProviderKind) -> Value {
        let body = request(&base(), "tok0 tok1 ", 2, mode, kind)
            .unwrap()
            .unwrap();
        serde_json::from_slice(body.bytes()).unwrap()
    }

    #[test]
    fn prefill_puts_the_partial_answer_last() {
        let v = built(Continuation::Prefill, ProviderKind::Anthropic);
        let last = &v["messages"][1];
        assert_eq!(last["role"], "assistant");
        assert_eq!(last["content"], "tok0 tok1", "trailing space trimmed");
        assert_eq!(v["max_tokens"], 98);
        assert!(v.get("continue_final_message").is_none());
        let v = built(Continuation::Prefill, ProviderKind::OpenAi);
        assert_eq!(v["messages"][1]["content"], "tok0 tok1 ");
        assert_eq!(v["continue_final_message"], true);
        assert_eq!(v["add_generation_prompt"], false);
    }

    #[test]
    fn instruct_adds_the_instruction_after_the_partial_answer() {
        let v = built(Continuation::Instruct, ProviderKind::OpenAi);
        assert_eq!(v["messages"].as_array().unwrap().len(), 3);
        assert_eq!(v["messages"][1]["role"], "assistant");
        assert_eq!(v["messages"][1]["content"], "tok0 tok1 ");
        assert_eq!(v["messages"][2]["role"], "user");
        assert_eq!(v["messages"][2]["content"], CONTINUE_INSTRUCTION);
        assert!(v.get("continue_final_message").is_none());
    }

    #[test]
    fn a_target_without_continuation_gets_nothing() {
        assert!(request(&base(), "x", 1, Continuation::None, ProviderKind::OpenAi).is_none());
    }
}
