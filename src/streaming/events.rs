//! An upstream stream as OpenAI events: the SSE framer, followed by the
//! provider's translator when the upstream speaks another format, so the
//! code that classifies and relays events sees one format only.

use crate::providers::StreamTranslator;
use crate::streaming::sse::SseFramer;
use bytes::Bytes;
use std::collections::VecDeque;

pub struct UpstreamEvents {
    framer: SseFramer,
    translator: Option<Box<dyn StreamTranslator>>,
    /// Translated events not yet taken (one upstream event may yield several).
    ready: VecDeque<Bytes>,
    scratch: Vec<Bytes>,
}

impl UpstreamEvents {
    pub fn new(translator: Option<Box<dyn StreamTranslator>>) -> Self {
        UpstreamEvents {
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

    /// Bytes received but not yet returned as events.
    pub fn pending_len(&self) -> usize {
        self.framer.pending_len() + self.ready.iter().map(Bytes::len).sum::<usize>()
    }
}
