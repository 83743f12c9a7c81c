//! Resilience policy as small pure pieces: failure classification, backoff,
//! `Retry-After` parsing. This module decides *whether and when* to try again;
//! it never performs I/O and never knows about HTTP servers or providers.
//! The failover engine in `routing` applies these decisions.

pub mod backoff;
pub mod breaker;
pub mod classify;
pub mod retry_after;

pub use backoff::{Backoff, Jitter};
pub use classify::{AttemptFailure, FailureCause, FailureClass, TimeoutKind, TransportKind};
