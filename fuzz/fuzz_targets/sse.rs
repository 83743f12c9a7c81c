//! `SseFramer` fed the same bytes in different chunkings: the events (and
//! what `classify_event` / `event_data` make of them) never depend on where
//! the chunks happened to end, and no byte is lost or repeated.
//!
//! Events longer than the framer's limit overflow it the same way in every
//! chunking, and after an overflow nothing more is framed.
//!
//! Input: one byte `n`: `n % 9` chunk sizes follow (0 pushes an empty chunk;
//! they repeat), then the stream itself; `n / 9` picks the event limit
//! (0: the real 1 MiB, else `8 * (n / 9)` bytes, so overflows are reached).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::streaming::sse::{classify_event, event_data, SseFramer, MAX_EVENT_BYTES};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let limit = match usize::from(n / 9) {
        0 => MAX_EVENT_BYTES,
        k => 8 * k,
    };
    let n = usize::from(n % 9).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let mut sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s)).collect();
    if sizes.iter().all(|&s| s == 0) {
        sizes.push(1);
    }

    let whole = frame(stream, &[usize::MAX], limit);
    let chunked = frame(stream, &sizes, limit);
    let bytewise = frame(stream, &[1], limit);
    assert_eq!(whole, chunked, "chunk sizes {sizes:?}");
    assert_eq!(whole, bytewise, "one byte at a time");
    let Framed {
        events: whole,
        pending: whole_pending,
        overflowed,
    } = whole;

    let framed: Vec<u8> = whole.iter().flat_map(|e| e.iter().copied()).collect();
    if overflowed {
        assert_eq!(whole_pending, 0, "an overflow drops what it carried");
    } else {
        assert_eq!(
            framed.len() + whole_pending,
            stream.len(),
            "bytes lost or repeated"
        );
        assert!(whole_pending <= limit, "a partial event past the limit");
    }
    assert_eq!(stream.get(..framed.len()), Some(&framed[..]));
    for event in &whole {
        assert!(event.len() <= limit, "an event past the limit");
        assert!(
            event.ends_with(b"\n") || event.ends_with(b"\r"),
            "an event ends with its blank line: {event:?}"
        );
        let _ = event_data(event);
        assert_eq!(classify_event(event), classify_event(event));
    }
    // Arbitrary bytes straight into the classifier, too.
    let _ = classify_event(stream);
});

#[derive(Debug, PartialEq)]
struct Framed {
    events: Vec<Bytes>,
    pending: usize,
    overflowed: bool,
}

/// Feeds `stream` in chunks of the given sizes (cycled) and collects events.
fn frame(stream: &[u8], sizes: &[usize], limit: usize) -> Framed {
    let mut framer = SseFramer::with_limit(limit);
    let mut events = Vec::new();
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        framer.push(Bytes::copy_from_slice(chunk));
        events.extend(std::iter::from_fn(|| framer.next_event()));
    }
    Framed {
        events,
        pending: framer.pending_len(),
        overflowed: framer.overflowed(),
    }
}
