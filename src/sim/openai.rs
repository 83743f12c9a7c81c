//! OpenAI wire formats: JSON bodies, error objects and the SSE chat stream.

use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use serde::Serialize;
use tokio::time::{Instant, Sleep};

use super::stats::bump;
use super::Shared;

pub(crate) const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// `ceil(len / 4)`, at least 1: the usual bytes-per-token rule of thumb.
pub(crate) fn approx_tokens(len: usize) -> u32 {
    u32::try_from(len.div_ceil(4)).unwrap_or(u32::MAX).max(1)
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    // Serializing these plain structs cannot fail (string keys, no maps);
    // an empty body is a safe fallback if it ever did.
    serde_json::to_vec(value)
        .map(Bytes::from)
        .unwrap_or_default()
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
}

pub(crate) fn error_body(message: &str, kind: &str, code: Option<&str>) -> Bytes {
    to_bytes(&ErrorEnvelope {
        error: ErrorObject {
            message,
            kind,
            code,
        },
    })
}

/// OpenAI-style `type` and `code` for an injected status.
pub(crate) fn status_error_kind(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        400 => ("invalid_request_error", Some("invalid_request")),
        401 => ("authentication_error", Some("invalid_api_key")),
        403 => ("permission_error", Some("permission_denied")),
        404 => ("not_found_error", Some("not_found")),
        429 => ("rate_limit_error", Some("rate_limit_exceeded")),
        503 | 529 => ("overloaded_error", Some("overloaded")),
        500..=599 => ("server_error", Some("server_error")),
        _ => ("invalid_request_error", None),
    }
}

pub(crate) fn overload_event(name: &str) -> Bytes {
    let body = error_body(
        &format!("simulated overload from {name}"),
        "overloaded_error",
        Some("overloaded"),
    );
    let mut event = BytesMut::with_capacity(body.len() + 8);
    event.put_slice(b"data: ");
    event.put_slice(&body);
    event.put_slice(b"\n\n");
    event.freeze()
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelEntry<'a>>,
}

#[derive(Serialize)]
struct ModelEntry<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

pub(crate) fn models_body(models: &[String], owner: &str) -> Bytes {
    to_bytes(&ModelList {
        object: "list",
        data: models
            .iter()
            .map(|id| ModelEntry {
                id,
                object: "model",
                created: 0,
                owned_by: owner,
            })
            .collect(),
    })
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

impl Usage {
    fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: Message<'a>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

/// A non-stream `chat.completion` whose content is `tok0 tok1 ...`.
pub(crate) fn chat_completion(index: u64, model: &str, tokens: u32, prompt_tokens: u32) -> Bytes {
    let mut content = String::with_capacity(tokens as usize * 6);
    for i in 0..tokens {
        if i > 0 {
            content.push(' ');
        }
        let _ = write!(content, "tok{i}");
    }
    let id = format!("chatcmpl-sim-{index}");
    to_bytes(&ChatCompletion {
        id: &id,
        object: "chat.completion",
        created: unix_now(),
        model,
        choices: [Choice {
            index: 0,
            message: Message {
                role: "assistant",
                content: &content,
            },
            finish_reason: "stop",
        }],
        usage: Usage::new(prompt_tokens, tokens),
    })
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<Embedding>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: [f32; EMBEDDING_DIMS],
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

pub(crate) const EMBEDDING_DIMS: usize = 8;

/// One embeddings input, as OpenAI accepts it.
pub(crate) enum EmbeddingInput<'a> {
    Text(&'a str),
    Tokens(&'a [serde_json::Value]),
}

impl EmbeddingInput<'_> {
    fn tokens(&self) -> u32 {
        match self {
            Self::Text(s) => approx_tokens(s.len()),
            Self::Tokens(t) => u32::try_from(t.len()).unwrap_or(u32::MAX),
        }
    }

    /// FNV-1a over the input: stable across runs and platforms, so the same
    /// text always gets the same vector, whichever sim or seed serves it.
    fn hash(&self) -> u64 {
        const PRIME: u64 = 0x0000_0100_0000_01B3;
        let mut h: u64 = 0xCBF2_9CE4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        };
        match self {
            Self::Text(s) => {
                eat(b"s");
                eat(s.as_bytes());
            }
            Self::Tokens(tokens) => {
                eat(b"t");
                for t in *tokens {
                    eat(&t.as_i64().unwrap_or_default().to_le_bytes());
                }
            }
        }
        h
    }

    /// Unit-length vector from a splitmix64 stream seeded by the hash.
    fn vector(&self) -> [f32; EMBEDDING_DIMS] {
        let mut state = self.hash();
        let mut v = [0f32; EMBEDDING_DIMS];
        for x in &mut v {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            // Top 24 bits fit an f32 mantissa exactly.
            *x = (z >> 40) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0;
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut v {
                *x /= norm;
            }
        }
        v
    }
}

pub(crate) fn embeddings_body(model: &str, inputs: &[EmbeddingInput<'_>]) -> Bytes {
    let prompt_tokens = inputs
        .iter()
        .fold(0u32, |acc, i| acc.saturating_add(i.tokens()));
    to_bytes(&EmbeddingList {
        object: "list",
        data: inputs
            .iter()
            .enumerate()
            .map(|(index, input)| Embedding {
                object: "embedding",
                index,
                embedding: input.vector(),
            })
            .collect(),
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    })
}

/// How a stream ends once its content chunks are out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum StreamEnd {
    /// finish chunk, optional usage chunk, `[DONE]`.
    Complete { include_usage: bool },
    /// Abort the connection.
    Drop,
    /// An error event, then a clean end.
    ErrorEvent,
    /// A clean end, nothing more.
    Truncate,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Role,
    Content,
    End,
    Usage,
    Done,
    Finished,
}

/// The body of a streamed chat completion: a hand-rolled state machine
/// rather than a spawned task and channel, so each event costs no task
/// switch, and dropping the body (hyper does when the peer goes away) is
/// exactly what counts the stream as cancelled.
pub(crate) struct ChatStream {
    shared: Arc<Shared>,
    /// `data: {..."choices":[`, shared by every chunk of this stream.
    prefix: String,
    step: Step,
    sent: u32,
    /// Content chunks to send before `end`.
    limit: u32,
    end: StreamEnd,
    prompt_tokens: u32,
    pace: Option<Duration>,
    /// Reused for the initial delay and every pacing pause.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    drop_flushed: bool,
    /// Set once the stream reached its planned end; otherwise drop = cancel.
    finished: bool,
}

pub(crate) struct ChatStreamPlan {
    pub(crate) index: u64,
    pub(crate) model: String,
    pub(crate) delay: Duration,
    pub(crate) pace: Option<Duration>,
    pub(crate) chunks: u32,
    pub(crate) end: StreamEnd,
    /// Skip the role chunk (an error event that is the first event).
    pub(crate) skip_role: bool,
    pub(crate) prompt_tokens: u32,
}

impl ChatStream {
    pub(crate) fn new(shared: Arc<Shared>, plan: ChatStreamPlan) -> Self {
        let mut prefix = String::with_capacity(plan.model.len() + 120);
        let _ = write!(
            prefix,
            "data: {{\"id\":\"chatcmpl-sim-{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":",
            plan.index,
            unix_now()
        );
        // serde_json escapes the model name; writing a str cannot fail.
        let _ = serde_json::to_string(&plan.model).map(|m| prefix.push_str(&m));
        prefix.push_str(",\"choices\":[");

        let mut stream = Self {
            shared,
            prefix,
            step: if plan.skip_role {
                Step::End
            } else {
                Step::Role
            },
            sent: 0,
            limit: plan.chunks,
            end: plan.end,
            prompt_tokens: plan.prompt_tokens,
            pace: plan.pace,
            timer: None,
            waiting: false,
            drop_flushed: false,
            finished: false,
        };
        if !plan.delay.is_zero() {
            stream.wait(plan.delay);
        }
        stream
    }

    fn wait(&mut self, pause: Duration) {
        let now = Instant::now();
        // Far-future fallback: `Instant + Duration::MAX` would overflow.
        let deadline = now
            .checked_add(pause)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30));
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        self.waiting = true;
    }

    fn chunk(&self, body: &str) -> Bytes {
        let mut out = BytesMut::with_capacity(self.prefix.len() + body.len() + 4);
        out.put_slice(self.prefix.as_bytes());
        out.put_slice(body.as_bytes());
        out.put_slice(b"]}\n\n");
        out.freeze()
    }

    fn content_chunk(&self, n: u32) -> Bytes {
        let mut body = String::with_capacity(80);
        let _ = write!(
            body,
            "{{\"index\":0,\"delta\":{{\"content\":\"tok{n} \"}},\"finish_reason\":null}}"
        );
        self.chunk(&body)
    }

    fn usage_chunk(&self) -> Bytes {
        let usage = Usage::new(self.prompt_tokens, self.sent);
        let mut out = BytesMut::with_capacity(self.prefix.len() + 100);
        out.put_slice(self.prefix.as_bytes());
        out.put_slice(b"],\"usage\":");
        out.put_slice(&to_bytes(&usage));
        out.put_slice(b"}\n\n");
        out.freeze()
    }

    fn finish(&mut self) {
        self.finished = true;
        self.step = Step::Finished;
    }

    fn after_content(&self) -> Step {
        if self.sent < self.limit {
            Step::Content
        } else {
            Step::End
        }
    }
}

impl Stream for ChatStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.waiting {
            if let Some(timer) = &mut this.timer {
                ready!(timer.as_mut().poll(cx));
            }
            this.waiting = false;
        }
        // Counters are bumped before the event is handed to hyper, so a
        // client that has seen the event also sees the count.
        let frame = match this.step {
            Step::Role => {
                this.step = this.after_content();
                this.chunk(
                    r#"{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}"#,
                )
            }
            Step::Content => {
                let frame = this.content_chunk(this.sent);
                this.sent += 1;
                this.step = this.after_content();
                if let (Step::Content, Some(pace)) = (this.step, this.pace) {
                    this.wait(pace);
                }
                frame
            }
            Step::End => match this.end {
                StreamEnd::Complete { include_usage } => {
                    this.step = if include_usage {
                        Step::Usage
                    } else {
                        Step::Done
                    };
                    this.chunk(r#"{"index":0,"delta":{},"finish_reason":"stop"}"#)
                }
                StreamEnd::Drop => {
                    // Hyper discards unflushed output when the body fails;
                    // one Pending first lets it flush what was sent so far.
                    if !this.drop_flushed {
                        this.drop_flushed = true;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    bump(&this.shared.stats.dropped);
                    this.finish();
                    return Poll::Ready(Some(Err(simulated_drop())));
                }
                StreamEnd::ErrorEvent => {
                    bump(&this.shared.stats.error_events);
                    this.finish();
                    this.shared.overload_event.clone()
                }
                StreamEnd::Truncate => {
                    bump(&this.shared.stats.truncated);
                    this.finish();
                    return Poll::Ready(None);
                }
            },
            Step::Usage => {
                this.step = Step::Done;
                this.usage_chunk()
            }
            Step::Done => {
                bump(&this.shared.stats.streams_completed);
                this.finish();
                Bytes::from_static(DONE_EVENT)
            }
            Step::Finished => return Poll::Ready(None),
        };
        Poll::Ready(Some(Ok(frame)))
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        if !self.finished {
            bump(&self.shared.stats.cancelled);
        }
    }
}

fn simulated_drop() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "simulated connection drop",
    )
}

/// A body that sends `data` and then aborts the connection: a non-stream
/// response cut off mid-body.
pub(crate) struct AbortAfter {
    data: Option<Bytes>,
    flushed: bool,
}

impl AbortAfter {
    pub(crate) fn new(data: Bytes) -> Self {
        Self {
            data: Some(data),
            flushed: false,
        }
    }
}

impl Stream for AbortAfter {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(data)));
        }
        // See `StreamEnd::Drop`: give hyper a chance to flush first.
        if !self.flushed {
            self.flushed = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(simulated_drop())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimate() {
        assert_eq!(approx_tokens(0), 1);
        assert_eq!(approx_tokens(4), 1);
        assert_eq!(approx_tokens(5), 2);
    }

    #[test]
    fn embeddings_are_stable_unit_vectors() {
        let a = EmbeddingInput::Text("hello").vector();
        assert_eq!(a, EmbeddingInput::Text("hello").vector());
        assert_ne!(a, EmbeddingInput::Text("hellp").vector());
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }

    #[test]
    fn error_kinds() {
        assert_eq!(status_error_kind(429).0, "rate_limit_error");
        assert_eq!(status_error_kind(503).0, "overloaded_error");
        assert_eq!(status_error_kind(500).0, "server_error");
        assert_eq!(status_error_kind(401).0, "authentication_error");
    }
}
