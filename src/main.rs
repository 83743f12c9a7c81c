use clap::Parser;

// glibc malloc showed up at ~5% of gateway CPU under load; mimalloc halves it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

fn main() -> ExitCode {
    switchyard::cli::run(switchyard::cli::Cli::parse())
}
