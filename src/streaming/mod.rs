//! Streaming: SSE framing and classification (`sse`) and the relay that
//! forwards an upstream stream to the client after the first content event
//! (`relay`). It owns the "never a clean-looking truncated answer" rule and
//! knows nothing about routes, retries or config files.

pub mod events;
pub mod relay;
pub mod sse;
