//! `SseFramer` fed the same bytes in different chunkings: the events (and
//! what `classify_event` / `event_data` make of them) never depend on where
//! the chunks happened to end, and no byte is lost or repeated.
//!
//! Input: one byte `n` (mod 9), then `n` chunk sizes (0 pushes an empty
//! chunk; they repeat), then the stream itself.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use switchyard::streaming::sse::{classify_event, event_data, SseFramer};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 9).min(rest.len());
    let (sizes, stream) = rest.split_at(n);
    let mut sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s)).collect();
    if sizes.iter().all(|&s| s == 0) {
        sizes.push(1);
    }

    let (whole, whole_pending) = frame(stream, &[usize::MAX]);
    let (chunked, chunked_pending) = frame(stream, &sizes);
    let (bytewise, bytewise_pending) = frame(stream, &[1]);
    assert_eq!(whole, chunked, "chunk sizes {sizes:?}");
    assert_eq!(whole, bytewise, "one byte at a time");
    assert_eq!(whole_pending, chunked_pending);
    assert_eq!(whole_pending, bytewise_pending);

    let framed: Vec<u8> = whole.iter().flat_map(|e| e.iter().copied()).collect();
    assert_eq!(
        framed.len() + whole_pending,
        stream.len(),
        "bytes lost or repeated"
    );
    assert_eq!(stream.get(..framed.len()), Some(&framed[..]));
    for event in &whole {
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

/// Feeds `stream` in chunks of the given sizes (cycled) and collects events.
fn frame(stream: &[u8], sizes: &[usize]) -> (Vec<Bytes>, usize) {
    let mut framer = SseFramer::new();
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
    (events, framer.pending_len())
}
