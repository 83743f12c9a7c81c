//! Streaming: SSE framing and classification (`sse`), an upstream stream as
//! OpenAI events (`events`), the relay that forwards an upstream stream to
//! the client after the first content event (`relay`), and the seam of a
//! continued stream (`seam`: what the client has, the overlap rule, the
//! rewriting of a continuation's chunks; `native_seam`: the same for a
//! native Responses stream, carried on from chat chunks). It owns the "never a
//! clean-looking truncated answer" rule; which target continues a cut
//! stream is `routing::resume`'s decision, not its own.

pub mod events;
pub mod native_seam;
pub mod relay;
pub mod seam;
pub mod sse;
