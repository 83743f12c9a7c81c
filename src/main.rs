use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    switchyard::cli::run(switchyard::cli::Cli::parse())
}
