// No unwrap, expect, panic or unreachable outside tests (clippy.toml
// allows them in test code).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable
)]

use clap::Parser;

// glibc malloc showed up at ~5% of gateway CPU under load; mimalloc halves it.
// `--features system-allocator` keeps glibc's, which heap profilers
// (valgrind's dhat and massif) can see into.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

fn main() -> ExitCode {
    switchyard::cli::run(switchyard::cli::Cli::parse())
}
