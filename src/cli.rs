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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // Defaults to one worker per core; fewer leaves cores to co-located
    // processes (a sidecar deployment, or the benchmark's load driver).
    if let Some(n) = std::env::var("SWITCHYARD_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::CheckConfig { file } => return check_config(&file),
        Command::Serve { config } => runtime.block_on(serve(config)),
        Command::Sim(args) => runtime.block_on(crate::sim::cli::run(*args)),
        Command::Demo(args) => runtime.block_on(crate::demo::run(args)),
    };
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

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let _log_guard = crate::telemetry::init_logging("info");
    let config = Config::load(&path)
        .map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", path.display()))?;
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, routes = config.route_names().join(","), "switchyard listening");
    println!("switchyard listening on http://{addr}/v1");
    let state = crate::server::AppState::new(config);
    crate::server::serve(listener, state, crate::server::shutdown_signal()).await?;
    Ok(())
}
