//! The streamed body every dialect shares: the initial delay, pacing between
//! content chunks, the planned end (complete, drop, in-band error, truncate)
//! and the counters that go with it. What the events look like is the
//! dialect's business ([`StreamFormat`]); this module never builds JSON.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use super::stats::bump;
use super::Shared;

/// The events of one dialect's stream, asked for in order.
pub(crate) trait StreamFormat: Send + Unpin + 'static {
    /// Content chunks a complete stream sends.
    fn chunks(&self) -> u32;
    /// Event `step` (0, 1, ...) before the first content chunk; `None` once
    /// the preamble is over.
    fn preamble(&mut self, step: usize) -> Option<Bytes>;
    /// Content chunk `n`. `finishing` is set on the last chunk of a stream
    /// that completes, for dialects that put the finish reason on it.
    fn content(&mut self, n: u32, finishing: bool) -> Bytes;
    /// Event `step` after the content of a complete stream that sent `sent`
    /// chunks; `None` when the stream is complete without another event.
    fn closing(&mut self, step: usize, sent: u32) -> Option<Closing>;
    /// The in-band error event (an overload, in the dialect's own shape).
    /// `&mut` for formats that number their events.
    fn error_event(&mut self, shared: &Shared) -> Bytes;
    /// The response's `content-type`.
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }
}

pub(crate) enum Closing {
    More(Bytes),
    /// The event that completes the stream (`[DONE]`, `message_stop`, ...).
    Last(Bytes),
}

/// How a stream ends once its content chunks are out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum StreamEnd {
    /// The dialect's closing events.
    Complete,
    /// Abort the connection.
    Drop,
    /// An error event, then a clean end.
    ErrorEvent,
    /// A clean end, nothing more.
    Truncate,
    /// Nothing more, with the connection left open.
    Stall,
}

pub(crate) struct StreamPlan {
    pub(crate) delay: Duration,
    pub(crate) pace: Option<Duration>,
    /// Content chunks to send before `end`.
    pub(crate) chunks: u32,
    pub(crate) end: StreamEnd,
    /// Skip the preamble (an error event that is the first event).
    pub(crate) skip_preamble: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Preamble(usize),
    Content,
    End,
    Closing(usize),
    Finished,
}

/// A hand-rolled state machine rather than a spawned task and channel, so
/// each event costs no task switch, and dropping the body (hyper does when
/// the peer goes away) is exactly what counts the stream as cancelled.
pub(crate) struct SimStream<F> {
    shared: Arc<Shared>,
    format: F,
    step: Step,
    sent: u32,
    limit: u32,
    end: StreamEnd,
    pace: Option<Duration>,
    /// Reused for the initial delay and every pacing pause.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    drop_flushed: bool,
    /// Set once the stream reached its planned end; otherwise drop = cancel.
    finished: bool,
}

impl<F: StreamFormat> SimStream<F> {
    pub(crate) fn new(shared: Arc<Shared>, format: F, plan: StreamPlan) -> Self {
        let mut stream = Self {
            shared,
            format,
            step: if plan.skip_preamble {
                Step::End
            } else {
                Step::Preamble(0)
            },
            sent: 0,
            limit: plan.chunks,
            end: plan.end,
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

    fn complete(&mut self) {
        bump(&self.shared.stats.streams_completed);
        self.finish();
    }
}

impl<F: StreamFormat> Stream for SimStream<F> {
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
        // client that has seen the event also sees the count. The loop only
        // repeats on steps that send nothing.
        loop {
            let frame = match this.step {
                Step::Preamble(step) => match this.format.preamble(step) {
                    Some(frame) => {
                        this.step = Step::Preamble(step + 1);
                        frame
                    }
                    None => {
                        this.step = this.after_content();
                        continue;
                    }
                },
                Step::Content => {
                    let finishing = this.end == StreamEnd::Complete
                        && this.sent.saturating_add(1) == this.limit;
                    let frame = this.format.content(this.sent, finishing);
                    this.sent += 1;
                    this.step = this.after_content();
                    if let (Step::Content, Some(pace)) = (this.step, this.pace) {
                        this.wait(pace);
                    }
                    frame
                }
                Step::End => match this.end {
                    StreamEnd::Complete => {
                        this.step = Step::Closing(0);
                        continue;
                    }
                    StreamEnd::Drop => {
                        // Hyper discards unflushed output when the body
                        // fails; one Pending first lets it flush what was
                        // sent so far.
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
                        this.format.error_event(&this.shared)
                    }
                    StreamEnd::Truncate => {
                        bump(&this.shared.stats.truncated);
                        this.finish();
                        return Poll::Ready(None);
                    }
                    // Never woken: the body ends only when the peer goes
                    // away and hyper drops it (counted as cancelled).
                    StreamEnd::Stall => return Poll::Pending,
                },
                Step::Closing(step) => match this.format.closing(step, this.sent) {
                    Some(Closing::More(frame)) => {
                        this.step = Step::Closing(step + 1);
                        frame
                    }
                    Some(Closing::Last(frame)) => {
                        this.complete();
                        frame
                    }
                    None => {
                        this.complete();
                        return Poll::Ready(None);
                    }
                },
                Step::Finished => return Poll::Ready(None),
            };
            return Poll::Ready(Some(Ok(frame)));
        }
    }
}

impl<F> Drop for SimStream<F> {
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
