//! Every provider translation on arbitrary bytes: OpenAI requests into
//! Anthropic and Gemini requests, their responses, streams and error bodies
//! back into OpenAI's shapes, and the inbound Anthropic protocol both ways.
//! None may panic; whatever a translator emits must be well-formed (JSON
//! bodies, complete SSE events).
//!
//! Input: one selector byte, then the payload. Stream payloads are cut into
//! events at blank lines, as the SSE framer would.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::api::anthropic as inbound;
use switchyard::providers::{anthropic, gemini, StreamTranslator};

fn json(bytes: &[u8], what: &str) {
    assert!(
        serde_json::from_slice::<serde_json::Value>(bytes).is_ok(),
        "{what} emitted invalid JSON: {:?}",
        String::from_utf8_lossy(bytes)
    );
}

fn events(payload: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < payload.len() {
        if payload[i] == b'\n' && payload[i + 1] == b'\n' {
            out.push(payload[start..i + 2].to_vec());
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    if start < payload.len() {
        let mut last = payload[start..].to_vec();
        last.extend_from_slice(b"\n\n");
        out.push(last);
    }
    out
}

fn complete_events(out: &[Bytes], what: &str) {
    for event in out {
        assert!(
            event.ends_with(b"\n\n"),
            "{what} emitted a partial event: {event:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    match selector % 10 {
        0 => {
            if let Ok(body) = anthropic::translate_request(payload, "claude-x", 1024) {
                json(&body, "anthropic::translate_request");
            }
        }
        1 => {
            if let Ok(body) = anthropic::translate_response(payload, 0) {
                json(&body, "anthropic::translate_response");
            }
        }
        2 => {
            let mut stream = anthropic::AnthropicStream::new(payload.first() == Some(&b'u'), 0);
            let mut out = Vec::new();
            for event in events(payload) {
                stream.translate(&event, &mut out);
            }
            complete_events(&out, "AnthropicStream");
        }
        3 => {
            let _ = anthropic::classify_error(400, payload);
            json(
                &anthropic::error_to_openai(400, payload),
                "anthropic::error_to_openai",
            );
        }
        4 => {
            if let Ok(body) = gemini::translate_request(payload) {
                json(&body, "gemini::translate_request");
            }
        }
        5 => {
            if let Ok(body) = gemini::translate_response(payload, "gemini-x", 0) {
                json(&body, "gemini::translate_response");
            }
        }
        6 => {
            let mut stream = gemini::GeminiStream::new("gemini-x", true, 0);
            let mut out = Vec::new();
            for event in events(payload) {
                stream.translate(&event, &mut out);
            }
            complete_events(&out, "GeminiStream");
            let _ = gemini::classify_error(429, payload);
            json(
                &gemini::error_to_openai(429, payload),
                "gemini::error_to_openai",
            );
        }
        7 => {
            if let Ok(body) = inbound::request_to_openai(payload) {
                json(&body, "inbound::request_to_openai");
            }
        }
        8 => {
            if let Ok(body) = inbound::response_from_openai(payload) {
                json(&body, "inbound::response_from_openai");
            }
            json(
                &inbound::error_from_openai(502, payload),
                "inbound::error_from_openai",
            );
        }
        _ => {
            let mut stream = inbound::ToAnthropicStream::new("chat-default");
            let mut out = Vec::new();
            for event in events(payload) {
                stream.translate(&event, &mut out);
            }
            complete_events(&out, "ToAnthropicStream");
        }
    }
});
