//! Switchyard: a self-hosted AI gateway. One OpenAI-compatible endpoint in
//! front of many providers, with retries, failover, timeouts and SSE
//! streaming that never hides a cut answer. See ARCHITECTURE.md for the
//! request path; each module's doc says what it owns.

// No unwrap, expect, panic or unreachable outside tests (clippy.toml
// allows them in test code).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conversations;
pub mod demo;
pub mod drill;
pub mod error;
pub mod keys;
pub mod limits;
pub mod loadgen;
pub mod probe;
pub mod providers;
pub mod redis_link;
pub mod resilience;
pub mod routing;
pub mod server;
/// The simulator, its own crate (it imports nothing of the gateway).
pub use switchyard_sim as sim;
pub mod store;
pub mod streaming;
pub mod telemetry;
