//! An upstream stream as OpenAI events: the SSE framer, followed by the
//! provider's translator when the upstream speaks another format, so the
//! code that classifies and relays events sees one format only.

use crate::providers::StreamTranslator;
use crate::streaming::sse::{classify_event, EventKind, SseFramer};
use bytes::Bytes;
use std::collections::VecDeque;

/// The event format an upstream stream arrives in, after translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI `chat.completion.chunk` events ending in `[DONE]` (every
    /// provider's stream once translated).
    Chat,
    /// The Responses API's typed events, from a native upstream.
    Responses,
}

impl Dialect {
    /// What an event means for failover, the relay and the cut rule.
    pub fn classify(self, event: &[u8]) -> EventKind {
        match self {
            Dialect::Chat => classify_event(event),
            Dialect::Responses => crate::api::responses::native::classify_event(event),
        }
    }
}

pub struct UpstreamEvents {
    dialect: Dialect,
    framer: SseFramer,
    translator: Option<Box<dyn StreamTranslator>>,
    /// Translated events not yet taken (one upstream event may yield several).
    ready: VecDeque<Bytes>,
    scratch: Vec<Bytes>,
}

impl UpstreamEvents {
    pub fn new(translator: Option<Box<dyn StreamTranslator>>, dialect: Dialect) -> Self {
        UpstreamEvents {
            dialect,
            framer: SseFramer::new(),
            translator,
            ready: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    pub fn push(&mut self, chunk: Bytes) {
        self.framer.push(chunk);
    }

    /// The next complete OpenAI-format event, if one is buffered.
    pub fn next_event(&mut self) -> Option<Bytes> {
        let Some(translator) = self.translator.as_mut() else {
            return self.framer.next_event();
        };
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            let upstream = self.framer.next_event()?;
            translator.translate(&upstream, &mut self.scratch);
            self.ready.extend(self.scratch.drain(..));
        }
    }

    pub fn classify(&self, event: &[u8]) -> EventKind {
        self.dialect.classify(event)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether the upstream sent an event longer than the framer's limit.
    pub fn overflowed(&self) -> bool {
        self.framer.overflowed()
    }

    /// Bytes received but not yet returned as events.
    pub fn pending_len(&self) -> usize {
        self.framer.pending_len() + self.ready.iter().map(Bytes::len).sum::<usize>()
    }
}
