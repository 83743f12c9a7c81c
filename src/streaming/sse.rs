//! Server-sent events: re-framing an upstream byte stream into whole events
//! and telling what each event means for failover.
//!
//! Events are forwarded whole (never split across our own frames) so that an
//! error event we append after a cut can never be glued onto half an event.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The largest event the framer accepts, complete or still partial: the
/// same 1 MiB the gateway holds back before a stream's first content. An
/// upstream that sends more without ending an event is misbehaving, and
/// carrying it on would grow memory until a deadline.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Splits a byte stream into complete SSE events (each including its
/// terminating blank line). Zero-copy when upstream chunks end on event
/// boundaries, which is the common case.
///
/// An event longer than the limit ends framing for good ([`Self::overflowed`]):
/// whatever chunking the bytes arrived in, the same events come out first.
#[derive(Debug)]
pub struct SseFramer {
    /// A chunk not yet copied: events are sliced out of it without copying.
    fresh: Bytes,
    /// Partial event carried over between chunks.
    partial: BytesMut,
    /// Where scanning `partial` resumes, so each byte is scanned once.
    resume: Resume,
    limit: usize,
    overflowed: bool,
}

/// A scan position inside the partial event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Resume {
    /// Start of the first line not yet known to be complete.
    line_start: usize,
    /// First byte not yet looked at (at or after `line_start`).
    next: usize,
}

impl Default for SseFramer {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A framer refusing events longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        SseFramer {
            fresh: Bytes::new(),
            partial: BytesMut::new(),
            resume: Resume::default(),
            limit,
            overflowed: false,
        }
    }

    pub fn push(&mut self, chunk: Bytes) {
        if self.overflowed {
            return;
        }
        if !self.fresh.is_empty() {
            let fresh = std::mem::take(&mut self.fresh);
            self.partial.extend_from_slice(&fresh);
        }
        if self.partial.is_empty() {
            self.fresh = chunk;
        } else {
            self.partial.extend_from_slice(&chunk);
        }
    }

    /// The next complete event, if one is buffered. `None` also once the
    /// framer has overflowed.
    pub fn next_event(&mut self) -> Option<Bytes> {
        if self.overflowed {
            return None;
        }
        if !self.fresh.is_empty() {
            match find_event_end(&self.fresh, Resume::default()) {
                Scan::End(end) if end <= self.limit => return Some(self.fresh.split_to(end)),
                Scan::End(_) => return self.overflow(),
                Scan::Incomplete(resume) => {
                    // `partial` is empty whenever `fresh` is not.
                    let rest = std::mem::take(&mut self.fresh);
                    self.partial.extend_from_slice(&rest);
                    self.resume = resume;
                }
            }
        }
        match find_event_end(&self.partial, self.resume) {
            Scan::End(end) if end <= self.limit => {
                self.resume = Resume::default();
                Some(self.partial.split_to(end).freeze())
            }
            Scan::End(_) => self.overflow(),
            Scan::Incomplete(_) if self.partial.len() > self.limit => self.overflow(),
            Scan::Incomplete(resume) => {
                self.resume = resume;
                None
            }
        }
    }

    fn overflow(&mut self) -> Option<Bytes> {
        self.overflowed = true;
        self.fresh = Bytes::new();
        self.partial = BytesMut::new();
        self.resume = Resume::default();
        None
    }

    /// Whether an event longer than the limit arrived: the stream cannot be
    /// framed any further and the attempt has failed.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes received that do not yet form a complete event (0 after an
    /// overflow, which drops them).
    pub fn pending_len(&self) -> usize {
        self.fresh.len() + self.partial.len()
    }
}

enum Scan {
    End(usize),
    /// No blank line yet; scanning may resume there.
    Incomplete(Resume),
}

/// Finds the end of the first event, scanning from `at` (`at.line_start` is
/// where the current line began). Lines end with LF, CRLF or CR, as the SSE
/// spec allows.
fn find_event_end(data: &[u8], at: Resume) -> Scan {
    let mut line_start = at.line_start;
    let mut i = at.next;
    while let Some(off) = memchr::memchr2(b'\n', b'\r', &data[i..]) {
        let pos = i + off;
        let term_end = if data[pos] == b'\r' {
            match data.get(pos + 1) {
                // A trailing CR may be the first half of CRLF: look at it
                // again once more bytes are in.
                None => {
                    return Scan::Incomplete(Resume {
                        line_start,
                        next: pos,
                    })
                }
                Some(b'\n') => pos + 2,
                Some(_) => pos + 1,
            }
        } else {
            pos + 1
        };
        if pos == line_start {
            return Scan::End(term_end);
        }
        line_start = term_end;
        i = term_end;
    }
    Scan::Incomplete(Resume {
        line_start,
        next: data.len(),
    })
}

/// The `data` of an event: its `data:` lines joined by newlines. Lines are
/// found with `memchr` (this runs on every event of every stream; a
/// byte-by-byte split was a tenth of a stream's instructions).
pub fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut found: Option<Cow<'_, [u8]>> = None;
    let mut start = 0;
    while start < event.len() {
        let end = memchr::memchr(b'\n', &event[start..]).map_or(event.len(), |i| start + i);
        let line = &event[start..end];
        start = end + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(value) = line.strip_prefix(b"data:") else {
            continue;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        found = Some(match found {
            None => Cow::Borrowed(value),
            Some(prev) => {
                let mut joined = prev.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                Cow::Owned(joined)
            }
        });
    }
    found
}

/// The `data` of an event, trimmed; `None` for comments, keep-alives and
/// empty data, which carry nothing to translate.
pub fn event_payload(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    match event_data(event)? {
        Cow::Borrowed(data) => Some(data.trim_ascii())
            .filter(|d| !d.is_empty())
            .map(Cow::Borrowed),
        Cow::Owned(data) => {
            let trimmed = data.trim_ascii();
            (!trimmed.is_empty()).then(|| Cow::Owned(trimmed.to_vec()))
        }
    }
}

/// What an OpenAI-format stream event means for the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `data: [DONE]`.
    Done,
    /// A chunk carrying content (text, tool calls, refusal, reasoning) or a
    /// finish reason: once one reaches the client, failover is over.
    Content { finished: bool },
    /// An error object: `type` and `code` as strings (possibly empty).
    Error {
        kind: String,
        code: String,
        message: String,
    },
    /// Anything else: a role-only preamble, usage, comments, pings, non-JSON.
    Other,
}

#[derive(Deserialize)]
struct ChunkPeek<'a> {
    #[serde(borrow, default)]
    error: Option<ErrorPeek<'a>>,
    /// The identity, kept raw: decoded only for a stream's first chunk,
    /// and an odd type never turns a content chunk into "other".
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    created: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoicePeek<'a>>>,
}

#[derive(Deserialize)]
struct ErrorPeek<'a> {
    #[serde(default)]
    message: Option<Cow<'a, str>>,
    #[serde(rename = "type", default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoicePeek<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaPeek<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
    /// Legacy completions stream `choices[].text`.
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DeltaPeek<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
    #[serde(borrow, default)]
    function_call: Option<&'a RawValue>,
    #[serde(borrow, default)]
    refusal: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning: Option<&'a RawValue>,
}

fn meaningful(v: Option<&RawValue>) -> bool {
    v.is_some_and(|v| !matches!(v.get(), "null" | "\"\"" | "[]"))
}

pub fn classify_event(event: &[u8]) -> EventKind {
    event_data(event).map_or(EventKind::Other, |data| inspect(&data).kind)
}

/// One chat chunk read once: what it means for the gateway, and what the
/// relay keeps of the answer (its text, whether a tool call streams, the
/// stream's identity). One parse per event serves both.
#[derive(Debug)]
pub struct Inspected<'a> {
    pub kind: EventKind,
    /// The text of every choice's delta, joined.
    pub text: Option<Cow<'a, str>>,
    /// A tool call (or legacy function call) is streaming.
    pub tool_call: bool,
    id: Option<&'a RawValue>,
    model: Option<&'a RawValue>,
    created: Option<&'a RawValue>,
}

/// The identity a stream announced in its first chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub id: String,
    pub model: Option<String>,
    pub created: Option<u64>,
}

impl Inspected<'_> {
    fn of(kind: EventKind) -> Self {
        Inspected {
            kind,
            text: None,
            tool_call: false,
            id: None,
            model: None,
            created: None,
        }
    }

    /// The identity this chunk announces, owned (`None` without an `id`).
    pub fn head(&self) -> Option<Head> {
        let string = |v: Option<&RawValue>| v.and_then(|v| serde_json::from_str(v.get()).ok());
        Some(Head {
            id: string(self.id)?,
            model: string(self.model),
            created: self.created.and_then(|v| v.get().parse().ok()),
        })
    }
}

/// Reads one event's `data` (see [`event_data`]).
pub fn inspect(data: &[u8]) -> Inspected<'_> {
    if data.trim_ascii() == b"[DONE]" {
        return Inspected::of(EventKind::Done);
    }
    let Ok(peek) = serde_json::from_slice::<ChunkPeek<'_>>(data) else {
        return Inspected::of(EventKind::Other);
    };
    if let Some(err) = peek.error {
        let code = err
            .code
            .map_or(String::new(), |c| c.get().trim_matches('"').to_owned());
        return Inspected::of(EventKind::Error {
            kind: err.kind.map(Cow::into_owned).unwrap_or_default(),
            code,
            message: err.message.map(Cow::into_owned).unwrap_or_default(),
        });
    }
    let mut content = false;
    let mut finished = false;
    let mut inspected = Inspected::of(EventKind::Other);
    for choice in peek.choices.iter().flatten() {
        finished |= meaningful(choice.finish_reason);
        content |= meaningful(choice.text);
        let Some(d) = &choice.delta else {
            continue;
        };
        content |= meaningful(d.content)
            || meaningful(d.tool_calls)
            || meaningful(d.function_call)
            || meaningful(d.refusal)
            || meaningful(d.reasoning_content)
            || meaningful(d.reasoning);
        let is_set = |v: Option<&RawValue>| v.is_some_and(|v| v.get() != "null");
        inspected.tool_call |= is_set(d.tool_calls) || is_set(d.function_call);
        let text = d
            .content
            .and_then(|raw| serde_json::from_str::<Cow<'_, str>>(raw.get()).ok())
            .filter(|t| !t.is_empty());
        if let Some(text) = text {
            inspected.text = Some(match inspected.text.take() {
                None => text,
                Some(before) => Cow::Owned(format!("{before}{text}")),
            });
        }
    }
    if content || finished {
        inspected.kind = EventKind::Content { finished };
    }
    inspected.id = peek.id;
    inspected.model = peek.model;
    inspected.created = peek.created;
    inspected
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(f: &mut SseFramer) -> Vec<Bytes> {
        std::iter::from_fn(|| f.next_event()).collect()
    }

    #[test]
    fn legacy_completion_text_is_content() {
        let event = b"data: {\"object\":\"text_completion\",\"choices\":[{\"text\":\"Hi\",\"index\":0,\"finish_reason\":null}]}\n\n";
        assert_eq!(
            classify_event(event),
            EventKind::Content { finished: false }
        );
        let empty = b"data: {\"choices\":[{\"text\":\"\",\"index\":0,\"finish_reason\":null}]}\n\n";
        assert_eq!(classify_event(empty), EventKind::Other);
    }

    #[test]
    fn whole_events_are_sliced_without_loss() {
        let mut f = SseFramer::new();
        f.push(Bytes::from_static(b"data: a\n\ndata: b\n\n"));
        assert_eq!(
            drain(&mut f),
            vec![
                Bytes::from_static(b"data: a\n\n"),
                Bytes::from_static(b"data: b\n\n")
            ]
        );
        assert_eq!(f.pending_len(), 0);
    }

    #[test]
    fn events_split_anywhere_are_reassembled() {
        let stream =
            b"data: {\"x\":1}\r\n\r\n: ping\r\rdata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        for cut1 in 0..stream.len() {
            for cut2 in cut1..stream.len() {
                let mut f = SseFramer::new();
                let mut out = Vec::new();
                for part in [&stream[..cut1], &stream[cut1..cut2], &stream[cut2..]] {
                    f.push(Bytes::copy_from_slice(part));
                    out.extend(drain(&mut f));
                }
                let joined: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
                assert_eq!(joined, stream.to_vec(), "cuts {cut1} {cut2}");
                assert_eq!(out.len(), 4, "cuts {cut1} {cut2}: {out:?}");
            }
        }
    }

    #[test]
    fn an_event_longer_than_the_limit_overflows_in_any_chunking() {
        let stream = b"data: ok\n\ndata: 0123456789abcdef\n\ndata: never\n\n";
        for size in [1, 3, 7, stream.len()] {
            let mut f = SseFramer::with_limit(16);
            let mut out = Vec::new();
            for part in stream.chunks(size) {
                f.push(Bytes::copy_from_slice(part));
                out.extend(drain(&mut f));
            }
            assert_eq!(
                out,
                vec![Bytes::from_static(b"data: ok\n\n")],
                "size {size}"
            );
            assert!(f.overflowed(), "size {size}");
            assert_eq!(f.pending_len(), 0, "the carried bytes are dropped");
        }
    }

    #[test]
    fn a_partial_event_past_the_limit_overflows_without_its_end() {
        let mut f = SseFramer::with_limit(64);
        f.push(Bytes::from_static(b"data: "));
        for _ in 0..100 {
            f.push(Bytes::from_static(b"x"));
            assert_eq!(f.next_event(), None);
        }
        assert!(f.overflowed());
        f.push(Bytes::from_static(b"\n\ndata: late\n\n"));
        assert_eq!(f.next_event(), None, "nothing is framed after an overflow");
        assert_eq!(f.pending_len(), 0);
    }

    #[test]
    fn an_event_of_exactly_the_limit_passes() {
        let event = b"data: 123456789\n\n";
        let mut f = SseFramer::with_limit(event.len());
        f.push(Bytes::from_static(event));
        assert_eq!(drain(&mut f).len(), 1);
        assert!(!f.overflowed());
        assert_eq!(
            MAX_EVENT_BYTES,
            1 << 20,
            "the relay's cut message says 1 MiB"
        );
    }

    #[test]
    fn scanning_a_long_line_resumes_where_it_stopped() {
        let mut f = SseFramer::new();
        f.push(Bytes::from_static(b"data: a\n\ndata: "));
        assert_eq!(drain(&mut f).len(), 1);
        for n in 1..=1000 {
            f.push(Bytes::from_static(b"y"));
            assert_eq!(f.next_event(), None);
            // Every byte already looked at is skipped next time: a line
            // arriving byte by byte costs linear, not quadratic, time.
            assert_eq!(f.resume.next, f.partial.len(), "after {n} bytes");
            assert_eq!(f.resume.line_start, 0);
        }
        f.push(Bytes::from_static(b"\r"));
        assert_eq!(f.next_event(), None);
        assert_eq!(
            f.resume.next,
            f.partial.len() - 1,
            "a trailing CR is looked at again"
        );
        f.push(Bytes::from_static(b"\n\r\n"));
        let event = f.next_event().unwrap();
        assert_eq!(event.len(), b"data: ".len() + 1000 + 4);
        assert_eq!(f.pending_len(), 0);
    }

    #[test]
    fn incomplete_event_is_held_back() {
        let mut f = SseFramer::new();
        f.push(Bytes::from_static(b"data: a\n\ndata: partial"));
        assert_eq!(drain(&mut f).len(), 1);
        assert_eq!(f.pending_len(), b"data: partial".len());
    }

    #[test]
    fn data_lines_are_joined() {
        assert_eq!(
            event_data(b"event: x\ndata: a\ndata:b\n\n")
                .unwrap()
                .as_ref(),
            b"a\nb"
        );
        assert!(event_data(b": comment\n\n").is_none());
    }

    #[test]
    fn classification() {
        let role = br#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}

"#;
        assert_eq!(classify_event(role), EventKind::Other);
        let text =
            br#"data: {"choices":[{"index":0,"delta":{"content":"hi \"x\""},"finish_reason":null}]}

"#;
        assert_eq!(classify_event(text), EventKind::Content { finished: false });
        let tool = br#"data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}

"#;
        assert_eq!(classify_event(tool), EventKind::Content { finished: false });
        let fin = br#"data: {"choices":[{"delta":{},"finish_reason":"stop"}]}

"#;
        assert_eq!(classify_event(fin), EventKind::Content { finished: true });
        let usage = br#"data: {"choices":[],"usage":{"total_tokens":3}}

"#;
        assert_eq!(classify_event(usage), EventKind::Other);
        assert_eq!(classify_event(b"data: [DONE]\n\n"), EventKind::Done);
        assert_eq!(classify_event(b": keep-alive\n\n"), EventKind::Other);
        assert_eq!(classify_event(b"data: not json\n\n"), EventKind::Other);
        let err =
            br#"data: {"error":{"message":"busy","type":"overloaded_error","code":"overloaded"}}

"#;
        assert_eq!(
            classify_event(err),
            EventKind::Error {
                kind: "overloaded_error".into(),
                code: "overloaded".into(),
                message: "busy".into()
            }
        );
        let err_num = br#"data: {"error":{"message":"x","code":500}}

"#;
        assert!(matches!(classify_event(err_num), EventKind::Error { code, .. } if code == "500"));
    }
}
