//! The seam of a continued stream: what the relay remembers of the answer
//! the client has received (its text, bounded; whether a tool call was
//! streaming; the first chunk's `id`, `model` and `created`), and the
//! rewriting that makes a continuation's chat chunks read as the same
//! stream: the original `id`/`model`, no second role preamble, no text the
//! client already has (the overlap rule), usage counting what the client
//! received. Pure functions over chunks; the relay decides when to use them.

use bytes::Bytes;
use serde_json::{Map, Value};
use std::collections::VecDeque;

/// At most this much answer text is kept for a continuation; a longer
/// answer that breaks is cut as before (its prefill would be a large
/// prompt, and such answers are rare).
pub const MAX_CONTINUABLE: usize = 1 << 20;

/// The overlap rule compares at most this many bytes at the end of what the
/// client has: an instructed model that repeats more than a couple of
/// sentences is not following the instruction anyway.
pub const OVERLAP_WINDOW: usize = 256;

/// A shorter repeat is not removed: a few characters (" the ", "\n- ")
/// match by coincidence too often, and dropping real text is worse than
/// showing a short repeat.
pub const MIN_OVERLAP: usize = 8;

/// How many leading bytes of `continuation` to drop because the client
/// already has them: the longest prefix of `continuation` (at least
/// [`MIN_OVERLAP`] bytes) that is a suffix of the last [`OVERLAP_WINDOW`]
/// bytes of `sent`. Without such an overlap, whitespace at the seam is not
/// doubled: if `sent` ends in whitespace, the continuation's leading
/// whitespace is dropped.
pub fn overlap(sent: &str, continuation: &str) -> usize {
    let mut from = sent.len().saturating_sub(OVERLAP_WINDOW);
    while !sent.is_char_boundary(from) {
        from += 1;
    }
    let tail = &sent[from..];
    let longest = tail.len().min(continuation.len());
    for k in (MIN_OVERLAP..=longest).rev() {
        if continuation.is_char_boundary(k) && tail.ends_with(&continuation[..k]) {
            return k;
        }
    }
    if sent.ends_with(char::is_whitespace) {
        return continuation.len() - continuation.trim_start().len();
    }
    0
}

pub use crate::streaming::sse::Head;

/// Rewrites a continuation leg's chat chunks into the original stream.
/// The first text of the continuation is held until [`OVERLAP_WINDOW`]
/// bytes (or the end of its text) are in, so the overlap rule can see it
/// whole; it then leaves as one chunk.
pub struct Seam {
    head: Head,
    /// The end of what the client has, for the overlap rule.
    tail: String,
    /// Text held for the overlap rule, with the byte length each held
    /// chunk contributed.
    held: Option<(String, Vec<usize>)>,
    /// Content chunks of this leg the client never saw (all overlap).
    pub dropped_chunks: u64,
    /// Completion tokens the client received before this leg.
    pub earlier_tokens: u64,
}

impl Seam {
    pub fn new(head: Head, sent: &str, earlier_tokens: u64) -> Self {
        let mut from = sent.len().saturating_sub(OVERLAP_WINDOW);
        while !sent.is_char_boundary(from) {
            from += 1;
        }
        Seam {
            head,
            tail: sent[from..].to_owned(),
            held: Some((String::new(), Vec::new())),
            dropped_chunks: 0,
            earlier_tokens,
        }
    }

    /// One event of the continuation, rewritten into `out` (none, when it
    /// carried only a role or held text). `text` receives the text that
    /// reaches the client.
    pub fn rewrite(&mut self, event: &Bytes, out: &mut VecDeque<Bytes>, text: &mut String) {
        let Some(data) = crate::streaming::sse::event_data(event) else {
            out.push_back(event.clone());
            return;
        };
        let Ok(Value::Object(mut chunk)) = serde_json::from_slice::<Value>(&data) else {
            // `[DONE]`, or something unreadable: the end of held text.
            self.release(out, text);
            out.push_back(event.clone());
            return;
        };
        self.identify(&mut chunk);
        let mut content = String::new();
        let mut more = false;
        if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
            for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
                if let Some(Value::Object(delta)) = choice.get_mut("delta") {
                    delta.remove("role");
                    match delta.remove("content") {
                        Some(Value::String(t)) => content.push_str(&t),
                        Some(other) if !other.is_null() => {
                            delta.insert("content".into(), other);
                        }
                        _ => {}
                    }
                    more |= !delta.is_empty();
                }
                more |= choice.get("finish_reason").is_some_and(|f| !f.is_null());
            }
        }
        if let Some(Value::Object(usage)) = chunk.get_mut("usage") {
            self.client_usage(usage);
            more = true;
        }
        if !content.is_empty() {
            match &mut self.held {
                Some((held, sizes)) => {
                    held.push_str(&content);
                    sizes.push(content.len());
                }
                None => {
                    text.push_str(&content);
                    put_content(&mut chunk, content);
                    more = true;
                }
            }
        }
        if more || self.settled() {
            self.release(out, text);
        }
        if more {
            out.push_back(encode(&chunk));
        }
    }

    /// Whether the overlap can no longer grow: the held text fills the
    /// window, or occurs nowhere in the tail (so no longer prefix of it
    /// can end the tail). Held text leaves as early as that, so a
    /// continuation that does not repeat itself is barely delayed.
    fn settled(&self) -> bool {
        let Some((held, _)) = &self.held else {
            return false;
        };
        let window = self.tail.len().clamp(MIN_OVERLAP, OVERLAP_WINDOW);
        !held.is_empty() && (held.len() >= window || !self.tail.contains(held.as_str()))
    }

    /// Sends the held text, less what the client already has.
    pub fn release(&mut self, out: &mut VecDeque<Bytes>, text: &mut String) {
        let Some((held, sizes)) = self.held.take() else {
            return;
        };
        let drop = overlap(&self.tail, &held);
        let mut end = 0;
        for size in sizes {
            end += size;
            if end > drop {
                break;
            }
            self.dropped_chunks += 1;
        }
        let rest = &held[drop..];
        if rest.is_empty() {
            return;
        }
        text.push_str(rest);
        let mut chunk = Map::new();
        self.identify(&mut chunk);
        chunk.insert("object".into(), "chat.completion.chunk".into());
        chunk.insert(
            "choices".into(),
            serde_json::json!([{"index": 0, "delta": {}, "finish_reason": null}]),
        );
        put_content(&mut chunk, rest.to_owned());
        out.push_back(encode(&chunk));
    }

    fn identify(&self, chunk: &mut Map<String, Value>) {
        chunk.insert("id".into(), self.head.id.clone().into());
        if let Some(model) = &self.head.model {
            chunk.insert("model".into(), model.clone().into());
        }
        if let Some(created) = self.head.created {
            chunk.insert("created".into(), created.into());
        }
    }

    /// The continuation's usage as the client sees it: completion tokens
    /// it received across the legs; the prompt less the partial answer
    /// the continuation repeated in it.
    fn client_usage(&self, usage: &mut Map<String, Value>) {
        let get = |usage: &Map<String, Value>, k: &str| usage.get(k).and_then(Value::as_u64);
        let prompt = get(usage, "prompt_tokens").unwrap_or(0);
        let completion = get(usage, "completion_tokens").unwrap_or(0);
        let prompt = prompt.saturating_sub(self.earlier_tokens);
        let completion = (completion + self.earlier_tokens).saturating_sub(self.dropped_chunks);
        usage.insert("prompt_tokens".into(), prompt.into());
        usage.insert("completion_tokens".into(), completion.into());
        usage.insert("total_tokens".into(), (prompt + completion).into());
    }
}

fn put_content(chunk: &mut Map<String, Value>, content: String) {
    let delta = chunk
        .get_mut("choices")
        .and_then(Value::as_array_mut)
        .and_then(|c| c.first_mut())
        .and_then(Value::as_object_mut)
        .and_then(|c| c.get_mut("delta"))
        .and_then(Value::as_object_mut);
    if let Some(delta) = delta {
        delta.insert("content".into(), Value::String(content));
    }
}

fn encode(chunk: &Map<String, Value>) -> Bytes {
    let mut event = b"data: ".to_vec();
    // Serialising a map of JSON values cannot fail.
    let _ = serde_json::to_writer(&mut event, chunk);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streaming::sse::EventKind;

    #[test]
    fn an_exact_repeat_is_dropped_whole() {
        let sent = "The quick brown fox jumps over";
        assert_eq!(overlap(sent, "brown fox jumps over"), 20);
        assert_eq!(overlap(sent, sent), sent.len());
    }

    #[test]
    fn a_partial_overlap_keeps_what_is_new() {
        let sent = "tok35 tok36 tok37 tok38 tok39 ";
        let continuation = "tok37 tok38 tok39 tok40 tok41 ";
        let drop = overlap(sent, continuation);
        assert_eq!(&continuation[drop..], "tok40 tok41 ");
    }

    #[test]
    fn no_overlap_drops_nothing() {
        assert_eq!(overlap("Hello, wor", "ld and all"), 0);
        assert_eq!(overlap("", "anything"), 0);
        assert_eq!(overlap("abc", ""), 0);
    }

    #[test]
    fn short_coincidental_matches_are_kept() {
        // " the " at the seam is real text, not a repeat.
        assert_eq!(overlap("over the", " the lazy dog"), 0);
        assert_eq!(overlap("tok38 tok39 ", "tok39 tok40 "), 0);
    }

    #[test]
    fn whitespace_at_the_seam_is_not_doubled() {
        assert_eq!(overlap("tok38 tok39 ", " tok40"), 1);
        assert_eq!(overlap("line one\n\n", "\n\nline two"), 2);
        assert_eq!(overlap("no space", " then"), 0);
    }

    #[test]
    fn only_the_window_is_compared_and_char_boundaries_hold() {
        let long = format!("{}end of it", "x".repeat(1000));
        assert_eq!(overlap(&long, "end of it and more"), 9);
        let sent = format!("{}héllo wörld", "é".repeat(200));
        let drop = overlap(&sent, "héllo wörld, again");
        assert_eq!(drop, "héllo wörld".len());
    }

    #[test]
    fn one_read_gives_text_tool_calls_and_identity() {
        let p = crate::streaming::sse::inspect(
            br#"{"id":"c1","model":"m","created":5,"choices":[{"index":0,"delta":{"content":"hi \u00e9"}}]}"#,
        );
        assert_eq!(p.kind, EventKind::Content { finished: false });
        assert_eq!(p.text.as_deref(), Some("hi é"));
        assert!(!p.tool_call);
        assert_eq!(
            p.head(),
            Some(Head {
                id: "c1".into(),
                model: Some("m".into()),
                created: Some(5)
            })
        );
        let p = crate::streaming::sse::inspect(
            br#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
        );
        assert!(p.tool_call);
        assert_eq!(p.text, None);
        assert_eq!(p.head(), None);
        // An identity of an odd type is no identity, and the chunk still
        // counts as content.
        let p = crate::streaming::sse::inspect(
            br#"{"id":7,"created":"x","choices":[{"delta":{"content":"a"}}]}"#,
        );
        assert_eq!(p.kind, EventKind::Content { finished: false });
        assert_eq!(p.head(), None);
    }

    fn chunk(body: &str) -> Bytes {
        Bytes::from(format!("data: {body}\n\n"))
    }

    fn data(event: &Bytes) -> Value {
        serde_json::from_slice(&crate::streaming::sse::event_data(event).unwrap()).unwrap()
    }

    #[test]
    fn a_continuation_reads_as_the_same_stream() {
        let head = Head {
            id: "orig".into(),
            model: Some("announced".into()),
            created: Some(7),
        };
        let mut seam = Seam::new(head, "tok0 tok1 tok2 ", 3);
        let mut out = VecDeque::new();
        let mut text = String::new();
        let events = [
            r#"{"id":"other","model":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"id":"other","model":"x","choices":[{"index":0,"delta":{"content":"tok1 tok2 "}}]}"#,
            r#"{"id":"other","model":"x","choices":[{"index":0,"delta":{"content":"tok3 "}}]}"#,
            r#"{"id":"other","model":"x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"id":"other","model":"x","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":3}}"#,
        ];
        for e in events {
            seam.rewrite(&chunk(e), &mut out, &mut text);
        }
        seam.rewrite(
            &Bytes::from_static(b"data: [DONE]\n\n"),
            &mut out,
            &mut text,
        );
        let out: Vec<Bytes> = out.into_iter().collect();
        assert_eq!(out.len(), 4, "{out:?}");
        let first = data(&out[0]);
        assert_eq!(first["id"], "orig");
        assert_eq!(first["model"], "announced");
        assert_eq!(first["created"], 7);
        assert_eq!(first["choices"][0]["delta"]["content"], "tok3 ");
        assert!(first["choices"][0]["delta"].get("role").is_none());
        assert_eq!(data(&out[1])["choices"][0]["finish_reason"], "stop");
        let usage = &data(&out[2])["usage"];
        assert_eq!(usage["completion_tokens"], 3 + 3 - 1);
        assert_eq!(usage["prompt_tokens"], 17);
        assert_eq!(&out[3][..], b"data: [DONE]\n\n");
        assert_eq!(text, "tok3 ");
    }
}
