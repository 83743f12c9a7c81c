//! One status line kept at the bottom of a terminal (the demo's live view)
//! with log lines written above it: the log writer clears the line, writes
//! its batch and redraws the line, under one lock, so the two never
//! interleave. Knows nothing of what either says; off (plain writes) until
//! something draws a line.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

/// The line last drawn, while one is shown.
static LINE: Mutex<Option<String>> = Mutex::new(None);

/// Carriage return and "erase the whole line".
const CLEAR: &[u8] = b"\r\x1b[2K";

fn line() -> std::sync::MutexGuard<'static, Option<String>> {
    LINE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Draws `text` on standard output as the status line, replacing the last.
pub fn draw(text: &str) {
    let mut shown = line();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(CLEAR);
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    *shown = Some(text.to_owned());
}

/// Leaves the last line as it is, ends it, and lets logs write plainly again.
pub fn finish() {
    if line().take().is_some() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
}

/// Writes log bytes to `out`, above the status line when one is shown.
pub(super) fn write_above(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let shown = line();
    let Some(text) = shown.as_deref() else {
        return out.write_all(bytes);
    };
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(CLEAR);
    let _ = stdout.flush();
    let written = out.write_all(bytes).and_then(|()| out.flush());
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    written
}
