//! Forwards an upstream SSE stream to the client after its first content
//! event, event by event as they arrive, and guarantees the client can tell
//! a complete answer from a cut one: a stream ends either with the
//! upstream's `[DONE]` (or a synthesized one after a finish reason; a native
//! Responses stream with its terminal event), or with a final error event
//! saying it was cut, in the stream's own dialect. A stream that breaks
//! after content is first offered to its [`Legs`] to be continued on
//! another target; the continuation's chunks then pass through the
//! [`Seam`] so the client sees one stream (and, when the first leg was a
//! native Responses stream, through the translator that carries that
//! stream on: [`NativeRecord`]).

use crate::api::responses::ToResponsesStream;
use crate::api::Usage;
use crate::routing::resume::{Legs, NextLeg};
use crate::routing::StreamStart;
use crate::streaming::events::{Dialect, UpstreamEvents};
use crate::streaming::native_seam::NativeRecord;
use crate::streaming::seam::{self, Head, Seam};
use crate::streaming::sse::EventKind;
use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

/// How a relayed stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Completed,
    Cut(CutReason),
    /// The client went away; the upstream request was dropped with it.
    ClientGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    UpstreamError,
    ConnectionLost,
    EndedWithoutFinish,
    IdleTimeout,
    Deadline,
    EventTooLarge,
}

impl CutReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CutReason::UpstreamError => "upstream sent an error event",
            CutReason::ConnectionLost => "upstream connection lost",
            CutReason::EndedWithoutFinish => {
                "upstream ended the stream without finishing the answer"
            }
            CutReason::IdleTimeout => "upstream went silent past the idle timeout",
            CutReason::Deadline => "the request's total deadline ran out",
            CutReason::EventTooLarge => "upstream sent an event larger than 1 MiB",
        }
    }
}

impl StreamEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamEnd::Completed => "completed",
            StreamEnd::Cut(_) => "cut",
            StreamEnd::ClientGone => "client_gone",
        }
    }
}

const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";
/// After `[DONE]`, wait this long for the upstream's end of body so its
/// connection can return to the pool; the client already has every byte.
const DRAIN_AFTER_DONE: Duration = Duration::from_secs(1);

/// What a relayed stream carried, for billing: the usage the upstream
/// reported (every upstream is asked for it), and the number of content
/// events forwarded, which stands in for the completion tokens when a
/// stream ends without usage (cut, client gone). A continued stream also
/// carries what its earlier legs (the upstream calls that broke) came to:
/// billing counts every upstream call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub usage: Option<Usage>,
    pub content_events: u64,
    pub earlier: EarlierLegs,
}

/// The legs of a continued stream before the current one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EarlierLegs {
    /// Usage reported by earlier legs, summed.
    pub reported: Usage,
    /// Earlier legs that reported no usage (a broken leg seldom does), and
    /// the content events they forwarded.
    pub unreported: u64,
    pub unreported_events: u64,
}

/// Called once when the stream ends, with the upstream legs it used.
pub type OnEnd = Box<dyn FnOnce(StreamEnd, Tally, Legs) + Send>;

/// The answer the client has received so far, while it may still be
/// continued elsewhere (`None` once it cannot: a tool call was streaming,
/// or the text outgrew [`seam::MAX_CONTINUABLE`]).
struct Answer {
    text: String,
    head: Option<Head>,
    /// What a native Responses first leg showed (`None` for chat).
    native: Option<NativeRecord>,
    /// Completion tokens the client received in legs before the current.
    earlier_tokens: u64,
}

pub struct Relay {
    /// The current leg's events held before its first content.
    held: VecDeque<Bytes>,
    /// Events ready for the client.
    queue: VecDeque<Bytes>,
    framer: UpstreamEvents,
    body: Option<Incoming>,
    finished: bool,
    idle: Duration,
    deadline: Instant,
    events_sent: u64,
    tally: Tally,
    /// Swallow usage-only chunks: the client did not ask for them, the
    /// gateway did (to bill the stream).
    strip_usage: bool,
    on_end: Option<OnEnd>,
    legs: Option<Legs>,
    answer: Option<Answer>,
    /// Rewrites a continuation leg's chunks; `None` on the first leg.
    seam: Option<Seam>,
    /// Turns continuation chunks into the native Responses stream the
    /// first leg began; `None` unless one was continued.
    restream: Option<ToResponsesStream>,
}

impl Relay {
    pub fn new(
        start: StreamStart,
        legs: Legs,
        idle: Duration,
        deadline: Instant,
        strip_usage: bool,
        on_end: OnEnd,
    ) -> Self {
        let continuable = legs.can_continue();
        let native = start.framer.dialect() == Dialect::Responses;
        Relay {
            held: start.held.into(),
            queue: VecDeque::new(),
            framer: start.framer,
            body: Some(start.body),
            finished: start.finished,
            idle,
            deadline,
            events_sent: 0,
            tally: Tally::default(),
            strip_usage,
            on_end: Some(on_end),
            legs: Some(legs),
            answer: continuable.then(|| Answer {
                text: String::new(),
                head: None,
                native: native.then(NativeRecord::default),
                earlier_tokens: 0,
            }),
            seam: None,
            restream: None,
        }
    }

    /// The client-facing body: one frame per event.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        futures_util::stream::unfold(self, |mut relay| async move {
            let event = relay.next_event().await?;
            relay.events_sent += 1;
            Some((Ok(event), relay))
        })
    }

    /// The client-facing body, driven by its own task so the relay's idle
    /// and deadline timers run whether or not the client reads: the task
    /// runs at most [`AHEAD`] events ahead of the client, and a client that
    /// takes no event for `write_timeout` is dropped, the upstream with it
    /// (its connection, concurrency slot and buffers are freed at once).
    /// The [`Abandoned`] flag tells the body's last layer to end in an
    /// error then, never in a clean-looking end.
    pub fn into_driven_stream(
        self,
        write_timeout: Duration,
    ) -> (
        impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
        Abandoned,
    ) {
        let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
        let abandoned = Abandoned::default();
        // Boxed: the relay is large, and a spawned future is moved into
        // its task by value (a tenth of a stream's instructions were that
        // copy, callgrind).
        tokio::spawn(drive(
            Box::pin(self.into_stream()),
            tx,
            write_timeout,
            abandoned.clone(),
        ));
        let events = futures_util::stream::unfold(rx, |mut rx| async move {
            let event = rx.recv().await?;
            Some((event, rx))
        });
        (events, abandoned)
    }

    fn end(&mut self, how: StreamEnd) {
        if let (Some(on_end), Some(legs)) = (self.on_end.take(), self.legs.take()) {
            on_end(how, self.tally, legs);
        }
    }

    fn cut_event(&self, reason: CutReason) -> Bytes {
        match self.framer.dialect() {
            Dialect::Chat => cut_event(reason, self.events_sent),
            // Native Responses events are numbered from 0, one per event.
            Dialect::Responses => crate::api::responses::error_event(
                &cut_message(reason, self.events_sent),
                "stream_cut",
                self.events_sent,
            ),
        }
    }

    /// The current leg broke: continued on another target when the answer
    /// allows it, else the cut event ends the stream.
    async fn broke(&mut self, reason: CutReason) {
        self.body = None;
        self.release_held_text();
        if reason != CutReason::Deadline {
            // Boxed: the continuation's upstream call would otherwise be
            // part of every relay's future, held for the whole stream
            // whether it breaks or not (the relay's
            // boxed stream: 4,776 -> 1,632 bytes in a release build).
            if let Some((next, restream)) = Box::pin(self.continuation(reason)).await {
                if restream.is_some() {
                    self.restream = restream;
                }
                self.switch(next);
                return;
            }
        }
        let event = self.cut_event(reason);
        self.end(StreamEnd::Cut(reason));
        self.deliver(event);
    }

    /// The next leg, and for a native Responses stream continued for the
    /// first time the translator that carries it on.
    async fn continuation(
        &mut self,
        reason: CutReason,
    ) -> Option<(NextLeg, Option<ToResponsesStream>)> {
        let answer = self.answer.as_ref()?;
        answer.head.as_ref()?;
        if answer.text.is_empty() {
            return None;
        }
        let restream = match &answer.native {
            Some(record) if self.restream.is_none() => Some(record.resumed(&answer.text)?),
            _ => None,
        };
        let tokens = answer.earlier_tokens + self.leg_tokens();
        let next = self
            .legs
            .as_mut()?
            .broke(reason, &answer.text, tokens)
            .await?;
        Some((next, restream))
    }

    /// A chat event for the client: as is, or translated into the native
    /// Responses stream it continues.
    fn deliver(&mut self, event: Bytes) {
        match &mut self.restream {
            None => self.queue.push_back(event),
            Some(restream) => {
                let mut out = Vec::new();
                restream.translate(&event, &mut out);
                self.queue.extend(out);
            }
        }
    }

    fn deliver_all(&mut self, events: VecDeque<Bytes>) {
        for event in events {
            self.deliver(event);
        }
    }

    /// Completion tokens the client received from the current leg.
    fn leg_tokens(&self) -> u64 {
        let dropped = self.seam.as_ref().map_or(0, |s| s.dropped_chunks);
        self.tally.content_events.saturating_sub(dropped)
    }

    /// Relays the next leg from here on.
    fn switch(&mut self, next: NextLeg) {
        let tokens = self.leg_tokens();
        let earlier = &mut self.tally.earlier;
        match self.tally.usage.take() {
            Some(usage) => {
                earlier.reported.prompt_tokens += usage.prompt_tokens;
                earlier.reported.completion_tokens += usage.completion_tokens;
            }
            None => {
                earlier.unreported += 1;
                earlier.unreported_events += self.tally.content_events;
            }
        }
        self.tally.content_events = 0;
        if let Some(answer) = &mut self.answer {
            answer.earlier_tokens += tokens;
            if let Some(head) = answer.head.clone() {
                self.seam = Some(Seam::new(head, &answer.text, answer.earlier_tokens));
            }
        }
        let start = next.start;
        self.held = start.held.into();
        self.framer = start.framer;
        self.body = Some(start.body);
        self.finished = start.finished;
        self.queue.push_back(next.comment);
    }

    /// A continuation's text held for the overlap rule goes out before the
    /// stream ends or moves on.
    fn release_held_text(&mut self) {
        if let Some(seam) = &mut self.seam {
            let mut text = String::new();
            let mut out = VecDeque::new();
            seam.release(&mut out, &mut text);
            self.remember(&text);
            self.deliver_all(out);
        }
    }

    /// Adds text the client received to the answer, within its bound.
    fn remember(&mut self, text: &str) {
        if let Some(answer) = &mut self.answer {
            if answer.text.len() + text.len() > seam::MAX_CONTINUABLE {
                self.answer = None;
            } else {
                answer.text.push_str(text);
            }
        }
    }

    /// Hands an event on to the client: as is on the first leg, rewritten
    /// by the seam on a continuation (what it sent remembered).
    fn forward(&mut self, event: Bytes) {
        if self.seam.is_none() && self.framer.dialect() == Dialect::Responses {
            return self.forward_native(event);
        }
        let Some(seam) = &mut self.seam else {
            return self.queue.push_back(event);
        };
        let mut sent = String::new();
        let mut out = VecDeque::new();
        seam.rewrite(&event, &mut out, &mut sent);
        self.remember(&sent);
        self.deliver_all(out);
    }

    /// What a chat event means, read in the same parse as what the answer
    /// keeps of it: the stream's identity, the text of the first leg (a
    /// continuation's is remembered as the seam sends it), and whether a
    /// tool call streams. Tool-call arguments are not continued: a call
    /// stitched from two models' halves could be valid JSON meaning
    /// something else.
    fn classify(&mut self, event: &[u8]) -> EventKind {
        if self.framer.dialect() != Dialect::Chat || self.answer.is_none() {
            return self.framer.classify(event);
        }
        let Some(data) = crate::streaming::sse::event_data(event) else {
            return EventKind::Other;
        };
        let inspected = crate::streaming::sse::inspect(&data);
        let first_leg = self.seam.is_none();
        if let Some(answer) = &mut self.answer {
            if inspected.tool_call {
                self.answer = None;
            } else {
                if answer.head.is_none() {
                    answer.head = inspected.head();
                }
                if let Some(text) = inspected.text.as_deref().filter(|_| first_leg) {
                    self.remember(text);
                }
            }
        }
        inspected.kind
    }

    /// An event of a native Responses first leg: forwarded as is, its text
    /// remembered while the answer is one a continuation can carry on.
    fn forward_native(&mut self, event: Bytes) {
        if let Some(answer) = &mut self.answer {
            let record = answer.native.get_or_insert_with(NativeRecord::default);
            let text = crate::streaming::sse::event_data(&event).and_then(|d| record.note(&d));
            if !record.continuable() {
                self.answer = None;
            } else {
                if answer.head.is_none() {
                    answer.head = record.head();
                }
                if let Some(text) = text {
                    self.remember(&text);
                }
            }
        }
        self.queue.push_back(event);
    }

    async fn next_event(&mut self) -> Option<Bytes> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            self.on_end.as_ref()?;
            let event = match self.held.pop_front().or_else(|| self.framer.next_event()) {
                Some(event) => event,
                None => {
                    self.read().await;
                    continue;
                }
            };
            match self.classify(&event) {
                EventKind::Done => {
                    if let Some(mut body) = self.body.take() {
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(DRAIN_AFTER_DONE, async {
                                while let Some(Ok(_)) = body.frame().await {}
                            })
                            .await;
                        });
                    }
                    self.release_held_text();
                    self.end(StreamEnd::Completed);
                    self.deliver(event);
                }
                EventKind::Content { finished } => {
                    self.finished |= finished;
                    self.tally.content_events += 1;
                    // A native Responses stream reports usage in its
                    // terminal event.
                    self.note_usage(&event);
                    self.forward(event);
                }
                EventKind::Error { .. } => self.broke(CutReason::UpstreamError).await,
                EventKind::Other => {
                    if self.note_usage(&event) && self.strip_usage && usage_only(&event) {
                        continue;
                    }
                    self.forward(event);
                }
            }
        }
    }

    /// Waits for the next piece of the upstream body; a leg that breaks
    /// meanwhile is continued or cut.
    async fn read(&mut self) {
        if self.framer.overflowed() {
            return self.broke(CutReason::EventTooLarge).await;
        }
        let Some(body) = self.body.as_mut() else {
            // Unreachable: a leg without a body has ended the stream.
            return self.end(StreamEnd::Cut(CutReason::ConnectionLost));
        };
        let idle_deadline = Instant::now() + self.idle;
        let wait_until = idle_deadline.min(self.deadline);
        match timeout_at(wait_until, body.frame()).await {
            Err(_) if wait_until == self.deadline => self.broke(CutReason::Deadline).await,
            Err(_) => self.broke(CutReason::IdleTimeout).await,
            Ok(Some(Err(_))) => self.broke(CutReason::ConnectionLost).await,
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    self.framer.push(data);
                }
            }
            Ok(None) => {
                // A finished answer whose `[DONE]` got lost is complete:
                // add the terminator rather than alarm the client.
                if self.finished && self.framer.pending_len() == 0 {
                    self.body = None;
                    self.release_held_text();
                    self.end(StreamEnd::Completed);
                    if self.framer.dialect() == Dialect::Chat {
                        self.deliver(Bytes::from_static(DONE_EVENT));
                    }
                    // A Responses stream's terminal event was the end.
                    return;
                }
                self.broke(CutReason::EndedWithoutFinish).await
            }
        }
    }
}

impl Relay {
    /// Records the usage an event carries; whether it carried any.
    fn note_usage(&mut self, event: &[u8]) -> bool {
        if memchr::memmem::find(event, b"\"usage\"").is_none() {
            return false;
        }
        let found =
            crate::streaming::sse::event_data(event).and_then(|data| crate::api::find_usage(&data));
        self.tally.usage = found.or(self.tally.usage);
        found.is_some()
    }
}

/// A chat chunk with no choices: the final usage chunk.
fn usage_only(event: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Peek<'a> {
        #[serde(borrow)]
        choices: Option<&'a serde_json::value::RawValue>,
    }
    let Some(data) = crate::streaming::sse::event_data(event) else {
        return false;
    };
    serde_json::from_slice::<Peek<'_>>(&data)
        .ok()
        .and_then(|p| p.choices)
        .is_some_and(|c| c.get().trim_start_matches('[').trim_start() == "]")
}

/// Events the relay may read ahead of a client that is slow to take them.
const AHEAD: usize = 16;

/// Chunks ready together are handed to hyper as one frame (one `writev`
/// instead of one per event: an upstream chunk often carries several), up
/// to this many bytes.
const COALESCE_MAX: usize = 64 << 10;

/// The client's stream body with the chunks that follow each other without
/// waiting on the network joined into one frame (at most [`COALESCE_MAX`]
/// bytes, give or take a chunk). It wraps the *encoded* stream (after the
/// inbound protocol's translator, which reads one event at a time). hyper's
/// client hands an upstream body over one chunk at a time, each a hop
/// between its connection task and the relay, so the next event is seldom
/// ready the moment one is: a yield lets those tasks run first. A yield that
/// brings nothing (the upstream really is between events) sends what there
/// is; it costs one trip through the run queue, never a timer. Measured:
/// 11 → 3 `writev` per 8-token stream (BENCHMARKS.md).
pub fn coalesced<S, E>(chunks: S) -> impl Stream<Item = Result<Bytes, E>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
{
    use futures_util::{FutureExt, StreamExt};
    struct State<S, E> {
        chunks: std::pin::Pin<Box<S>>,
        /// An error met while gathering, sent after the gathered frame.
        pending: Option<E>,
        /// The inner stream has ended: it must not be polled again.
        done: bool,
    }
    let state = State {
        chunks: Box::pin(chunks),
        pending: None,
        done: false,
    };
    futures_util::stream::unfold(state, |mut state| async move {
        if let Some(e) = state.pending.take() {
            return Some((Err(e), state));
        }
        if state.done {
            return None;
        }
        let first = match state.chunks.next().await {
            None => return None,
            Some(Err(e)) => return Some((Err(e), state)),
            Some(Ok(first)) => first,
        };
        let mut batch: Option<bytes::BytesMut> = None;
        let len = |batch: &Option<bytes::BytesMut>| batch.as_ref().map_or(first.len(), |b| b.len());
        'gather: while len(&batch) < COALESCE_MAX {
            tokio::task::yield_now().await;
            let before = len(&batch);
            while len(&batch) < COALESCE_MAX {
                // Polled once with a no-op waker; the next `next().await`
                // polls again with the real one before anything parks.
                match state.chunks.next().now_or_never() {
                    Some(Some(Ok(next))) => batch
                        .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
                        .extend_from_slice(&next),
                    Some(Some(Err(e))) => {
                        state.pending = Some(e);
                        break 'gather;
                    }
                    Some(None) => {
                        state.done = true;
                        break 'gather;
                    }
                    None => break,
                }
            }
            if len(&batch) == before {
                break;
            }
        }
        Some((Ok(batch.map_or(first, bytes::BytesMut::freeze)), state))
    })
}

/// Set when the relay gave up on a client that stopped reading.
#[derive(Debug, Clone, Default)]
pub struct Abandoned(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Abandoned {
    fn set(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `body`, ending in an error instead of its end when the relay gave up
    /// on the client: hyper then aborts the connection (HTTP/1) or resets
    /// the stream (HTTP/2). Ended cleanly, a chunked HTTP/1 body would get
    /// its terminator, and a client that resumed reading would take the
    /// answer so far for all of it; the connection would also stay open
    /// for keep-alive. The flag is set before the relay's channel closes,
    /// so it is seen when the body's end is.
    pub fn fail_at_end<S, E>(
        self,
        body: S,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
    where
        S: Stream<Item = Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use futures_util::StreamExt;
        let end = futures_util::stream::once(async move {
            self.is_set().then(|| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client stopped reading the stream",
                ))
            })
        })
        .filter_map(std::future::ready);
        body.map(|chunk| chunk.map_err(std::io::Error::other))
            .chain(end)
    }
}

/// Moves events from the relay to the client's body until the stream ends,
/// the client leaves, or the client stops reading. Returning drops the
/// relay, which ends it as `ClientGone` unless it had ended already.
async fn drive(
    events: impl Stream<Item = Result<Bytes, Infallible>> + Send,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, Infallible>>,
    write_timeout: Duration,
    abandoned: Abandoned,
) {
    use futures_util::StreamExt;
    let mut events = std::pin::pin!(events);
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = tx.closed() => return,
        };
        let Some(event) = event else {
            return;
        };
        match tokio::time::timeout(write_timeout, tx.send(event)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(
                    after_ms = write_timeout.as_millis() as u64,
                    "client stopped reading a stream; dropped it and its upstream"
                );
                abandoned.set();
                return;
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.end(StreamEnd::ClientGone);
    }
}

fn cut_message(reason: CutReason, events_sent: u64) -> String {
    format!(
        "the upstream stream was cut after {events_sent} events: {}; the answer is incomplete",
        reason.as_str()
    )
}

/// The final event of a cut stream: OpenAI SDKs raise on a `data:` event
/// carrying an `error` object, so the client cannot mistake it for an end.
pub fn cut_event(reason: CutReason, events_sent: u64) -> Bytes {
    let message = cut_message(reason, events_sent);
    let body = crate::api::error_body(&message, "upstream_error", Some("stream_cut"));
    let mut event = Vec::with_capacity(body.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn chunks(parts: &[&'static str]) -> Vec<Result<Bytes, Infallible>> {
        parts.iter().map(|p| Ok(Bytes::from(*p))).collect()
    }

    #[tokio::test]
    async fn chunks_ready_together_leave_as_one_frame() {
        let stream =
            futures_util::stream::iter(chunks(&["data: a\n\n", "data: b\n\n", "data: c\n\n"]));
        let frames: Vec<Bytes> = coalesced(stream).map(|f| f.unwrap()).collect().await;
        assert_eq!(
            frames,
            vec![Bytes::from("data: a\n\ndata: b\n\ndata: c\n\n")]
        );
    }

    #[tokio::test]
    async fn frames_stay_within_the_bound_and_lose_nothing() {
        let big = vec![b'z'; COALESCE_MAX / 2];
        let parts: Vec<Result<Bytes, Infallible>> =
            (0..5).map(|_| Ok(Bytes::from(big.clone()))).collect();
        let frames: Vec<Bytes> = coalesced(futures_util::stream::iter(parts))
            .map(|f| f.unwrap())
            .collect()
            .await;
        let sizes: Vec<usize> = frames.iter().map(Bytes::len).collect();
        assert_eq!(sizes, vec![COALESCE_MAX, COALESCE_MAX, COALESCE_MAX / 2]);
    }

    /// A chunk that only comes after a real wait is a frame of its own, and
    /// an error is delivered after what was gathered before it.
    #[tokio::test]
    async fn waiting_chunks_and_errors_are_not_merged_or_lost() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, &'static str>>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item, rx))
        });
        let mut frames = Box::pin(coalesced(stream));
        tx.send(Ok(Bytes::from("a"))).await.unwrap();
        assert_eq!(frames.next().await.unwrap().unwrap(), Bytes::from("a"));
        tx.send(Ok(Bytes::from("b"))).await.unwrap();
        tx.send(Err("cut")).await.unwrap();
        drop(tx);
        assert_eq!(frames.next().await.unwrap().unwrap(), Bytes::from("b"));
        assert_eq!(frames.next().await.unwrap().unwrap_err(), "cut");
        assert!(frames.next().await.is_none());
    }
}
