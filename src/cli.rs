//! Command line: parses arguments and runs one subcommand. Thin by design:
//! each subcommand calls into the module that owns the behaviour.

use crate::config::Config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "A self-hosted AI gateway: one OpenAI-compatible endpoint, many providers, no single point of failure."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve {
        /// Path to the TOML config.
        #[arg(long, short, default_value = "switchyard.toml")]
        config: PathBuf,
    },
    /// Validate a config file and print every problem with its key path.
    CheckConfig {
        /// Path to the TOML config.
        file: PathBuf,
    },
    /// Run the OpenAI-compatible provider simulator (fault injection for rehearsals).
    Sim(Box<crate::sim::cli::SimArgs>),
    /// A self-contained demo: simulated providers with a scripted outage, the gateway, and load.
    Demo(crate::demo::DemoArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    let task = match cli.command {
        Command::CheckConfig { file } => return check_config(&file),
        Command::Serve { config } => return exit_code(serve(config)),
        Command::Sim(args) => Task::Sim(args),
        Command::Demo(args) => Task::Demo(args),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    exit_code(match task {
        Task::Sim(args) => runtime.block_on(crate::sim::cli::run(*args)),
        Task::Demo(args) => runtime.block_on(crate::demo::run(args)),
    })
}

/// Subcommands that run on a multi-threaded runtime.
enum Task {
    Sim(Box<crate::sim::cli::SimArgs>),
    Demo(crate::demo::DemoArgs),
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(config) => {
            println!(
                "{}: ok ({} providers, {} routes: {})",
                file.display(),
                config.providers.len(),
                config.route_names().len(),
                config.route_names().join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for issue in &errors.0 {
                eprintln!("{issue}");
            }
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf) -> anyhow::Result<()> {
    let _log_guard = crate::telemetry::init_logging("info");
    let config = Config::load(&path)
        .map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", path.display()))?;
    let listen = config.server.listen;
    let routes = config.route_names().join(",");
    crate::server::run(config, Some(path.clone()), worker_threads(), |addr| {
        tracing::info!(%addr, routes, "switchyard listening");
        println!("switchyard listening on http://{addr}/v1");
    })
    .map_err(|e| anyhow::anyhow!("serving on {listen}: {e}"))
}

/// One per core unless `SWITCHYARD_WORKER_THREADS` says otherwise.
fn worker_threads() -> usize {
    std::env::var("SWITCHYARD_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
