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
    /// With `--diff OLD NEW`: validate NEW and say whether a running OLD can
    /// reload it (exit 1 naming each restart-only setting that changed).
    CheckConfig {
        /// Path to the TOML config.
        #[arg(required_unless_present = "diff")]
        file: Option<PathBuf>,
        /// The running config and the new one.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with = "file")]
        diff: Option<Vec<PathBuf>>,
    },
    /// Write a commented starter config for the provider keys found in the
    /// environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY,
    /// AZURE_OPENAI_API_KEY + AZURE_OPENAI_ENDPOINT), or for the simulator
    /// when there are none. Validated before it is written.
    Init {
        /// Where to write it; `-` for standard output.
        #[arg(long, short, default_value = "switchyard.toml")]
        output: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run the OpenAI-compatible provider simulator (fault injection for rehearsals).
    Sim(Box<crate::sim::cli::SimArgs>),
    /// A self-contained demo: simulated providers with a scripted outage, the gateway, and load.
    Demo(crate::demo::DemoArgs),
    /// Rehearse an outage: run a scenario (simulated providers with scripted faults, a gateway, load) and check its expectations. Exit code 1 when an expectation fails, 2 when the drill cannot run.
    Drill(crate::drill::DrillArgs),
    /// Read the request log from the configured store.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Manage virtual keys (create, list, show, rotate, revoke, set-limits) in the configured store.
    Keys(crate::keys::cli::KeysArgs),
    /// Probe a running gateway: exit 0 when `GET URL` answers 2xx within the
    /// timeout, else 1. For a container HEALTHCHECK in an image without curl.
    Healthcheck {
        /// URL to GET: `http://`, or `https://` with `[server.tls]`.
        #[arg(long, default_value = "http://127.0.0.1:8080/healthz")]
        url: http::Uri,
        /// Give up after this long (connect and answer together).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// HTTPS: trust the CAs in this PEM file instead of the public roots.
        #[arg(long, conflicts_with = "insecure")]
        ca_file: Option<PathBuf>,
        /// HTTPS: accept any certificate (probing the gateway's own port,
        /// whose certificate names another host; nothing secret is sent).
        #[arg(long)]
        insecure: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// The newest requests, oldest first; `--follow` keeps printing new ones.
    Tail {
        #[arg(long, short, default_value = "switchyard.toml")]
        config: PathBuf,
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: i64,
        #[arg(long, short)]
        follow: bool,
    },
    /// Requests matching filters, newest first.
    Query {
        #[arg(long, short, default_value = "switchyard.toml")]
        config: PathBuf,
        /// How far back, e.g. 1h, 30m, 7d.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
        #[arg(long)]
        route: Option<String>,
        /// 2xx, 4xx or 5xx.
        #[arg(long, value_parser = parse_status_class)]
        status: Option<i32>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_status_class(text: &str) -> Result<i32, String> {
    match text {
        "2xx" => Ok(2),
        "4xx" => Ok(4),
        "5xx" => Ok(5),
        other => Err(format!("\"{other}\" is not one of 2xx, 4xx, 5xx")),
    }
}

pub fn run(cli: Cli) -> ExitCode {
    let task = match cli.command {
        Command::CheckConfig { file, diff } => {
            return match (diff.as_deref(), file) {
                (Some([old, new]), _) => check_reload(old, new),
                (_, Some(file)) => check_config(&file),
                _ => ExitCode::FAILURE,
            }
        }
        Command::Serve { config } => return exit_code(serve(config)),
        Command::Init { output, force } => return exit_code(init(&output, force)),
        Command::Healthcheck {
            url,
            timeout,
            ca_file,
            insecure,
        } => {
            let trust = match (ca_file, insecure) {
                (_, true) => crate::probe::Trust::Insecure,
                (Some(path), false) => crate::probe::Trust::CaFile(path),
                (None, false) => crate::probe::Trust::WebRoots,
            };
            return healthcheck(url, timeout, &trust);
        }
        Command::Sim(args) => Task::Sim(args),
        Command::Demo(args) => Task::Demo(args),
        Command::Log { command } => Task::Log(command),
        Command::Keys(args) => Task::Keys(args),
        Command::Drill(args) => Task::Drill(args),
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    exit_code(match task {
        Task::Drill(args) => return drill_exit_code(runtime.block_on(crate::drill::run(args))),
        Task::Sim(args) => runtime.block_on(crate::sim::cli::run(*args)),
        Task::Demo(args) => runtime.block_on(crate::demo::run(args)),
        Task::Log(command) => runtime.block_on(log(command)),
        Task::Keys(args) => runtime.block_on(crate::keys::cli::run(args)),
    })
}

/// Subcommands that run on a multi-threaded runtime.
enum Task {
    Sim(Box<crate::sim::cli::SimArgs>),
    Demo(crate::demo::DemoArgs),
    Log(LogCommand),
    Keys(crate::keys::cli::KeysArgs),
    Drill(crate::drill::DrillArgs),
}

/// 0 passed, 1 an expectation failed, 2 the drill could not run: a script
/// can tell a failed rehearsal from a broken one.
fn drill_exit_code(result: anyhow::Result<crate::drill::Verdict>) -> ExitCode {
    match result {
        Ok(crate::drill::Verdict::Passed) => ExitCode::SUCCESS,
        Ok(crate::drill::Verdict::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
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
                // `file:line:` as compilers write it, so editors can jump there.
                match issue.line {
                    Some(line) => eprintln!("{}:{line}: {issue}", file.display()),
                    None => eprintln!("{}: {issue}", file.display()),
                }
            }
            eprintln!("{}: {} error(s)", file.display(), errors.0.len());
            ExitCode::FAILURE
        }
    }
}

/// `switchyard init`: the starter config, validated, written where asked
/// (never over an existing file without `--force`).
fn init(output: &std::path::Path, force: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (found, text) = crate::config::starter::generate(|name| std::env::var(name).ok())
        .map_err(|e| anyhow::anyhow!("the starter config for this environment is invalid:\n{e}"))?;
    if output.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        // create_new: no window between checking for the file and writing it.
        options.create_new(true);
    }
    let mut file = options.open(output).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} already exists; pass --force to replace it, or --output another path",
            output.display()
        ),
        _ => anyhow::anyhow!("cannot write {}: {e}", output.display()),
    })?;
    file.write_all(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", output.display()))?;
    let providers = found.providers();
    let path = output.display();
    if providers.is_empty() {
        eprintln!("wrote {path}: no provider key in the environment, so it uses the simulator.");
        eprintln!("next: `switchyard sim` in one terminal, `switchyard serve --config {path}` in another.");
    } else {
        eprintln!("wrote {path}: providers {}.", providers.join(", "));
        eprintln!("next: `switchyard keys create me --service local --config {path}`, then `switchyard serve --config {path}`.");
    }
    Ok(())
}

/// Whether a gateway running `old` would take `new` on reload.
fn check_reload(old: &std::path::Path, new: &std::path::Path) -> ExitCode {
    let Ok(running) = Config::load(old) else {
        eprintln!("{}: invalid (check it alone for details)", old.display());
        return ExitCode::FAILURE;
    };
    if check_config(new) != ExitCode::SUCCESS {
        return ExitCode::FAILURE;
    }
    let Ok(next) = Config::load(new) else {
        return ExitCode::FAILURE;
    };
    let changed = running.restart_only_changes(&next);
    if changed.is_empty() {
        println!("{} -> {}: reloadable", old.display(), new.display());
        return ExitCode::SUCCESS;
    }
    for path in &changed {
        eprintln!("{path}: takes effect only on restart");
    }
    eprintln!(
        "{} -> {}: a reload would be refused ({} restart-only setting(s) changed)",
        old.display(),
        new.display(),
        changed.len()
    );
    ExitCode::FAILURE
}

/// A runtime from `builder`, or the reason it could not start, printed.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("error: cannot start the async runtime: {e}"))
        .ok()
}

/// One GET, bounded by `timeout`; the status or the error on one line.
fn healthcheck(
    url: http::Uri,
    timeout: std::time::Duration,
    trust: &crate::probe::Trust,
) -> ExitCode {
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.authority().is_none() {
        eprintln!("--url {url}: expected http(s)://HOST:PORT/PATH");
        return ExitCode::FAILURE;
    }
    let client = match crate::probe::client(trust) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    let answer =
        runtime.block_on(async { tokio::time::timeout(timeout, client.get(url.clone())).await });
    match answer {
        Ok(Ok(response)) if response.status().is_success() => {
            println!("{url}: {}", response.status());
            ExitCode::SUCCESS
        }
        Ok(Ok(response)) => {
            eprintln!("{url}: {}", response.status());
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("{url}: {:#}", anyhow::Error::new(e));
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "{url}: no answer within {}",
                humantime::format_duration(timeout)
            );
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
    let scheme = if config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    crate::server::run(config, Some(path.clone()), worker_threads(), |addr| {
        tracing::info!(%addr, routes, scheme, "switchyard listening");
        println!("switchyard listening on {scheme}://{addr}/v1");
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

async fn open_store(path: &std::path::Path) -> anyhow::Result<crate::store::Store> {
    let config = Config::load(path)
        .map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", path.display()))?;
    Ok(crate::store::Store::connect(&config.store_url.0, config.store_timeout).await?)
}

fn print_row(row: &crate::store::RequestRow, json: bool) {
    if json {
        println!("{}", serde_json::to_string(row).unwrap_or_default());
        return;
    }
    let at = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(row.at_ms.max(0) as u64),
    );
    println!(
        "{at}  {:<36}  {:<16} {:>3} {:<22} {:>9.1} ms  {}{}{}{}",
        row.request_id,
        row.route,
        row.status,
        row.outcome,
        row.latency_ms,
        row.served_target.as_deref().unwrap_or("-"),
        row.degraded
            .as_deref()
            .map_or(String::new(), |why| format!(" (degraded: {why})")),
        if row.attempts == "[]" {
            String::new()
        } else {
            format!("  failed: {}", row.attempts)
        },
        row.trace_id
            .as_deref()
            .map_or(String::new(), |trace| format!("  trace: {trace}")),
    );
}

async fn log(command: LogCommand) -> anyhow::Result<()> {
    use crate::store::RequestQuery;
    match command {
        LogCommand::Query {
            config,
            since,
            route,
            status,
            limit,
            json,
        } => {
            let store = open_store(&config).await?;
            let since_ms =
                since.map(|d| crate::telemetry::request_log::now_ms() - d.as_millis() as i64);
            for row in store
                .query_requests(&RequestQuery {
                    since_ms,
                    route,
                    status_class: status,
                    limit,
                })
                .await?
            {
                print_row(&row, json);
            }
        }
        LogCommand::Tail {
            config,
            lines,
            follow,
        } => {
            let store = open_store(&config).await?;
            let mut rows = store.query_requests(&RequestQuery::newest(lines)).await?;
            rows.reverse();
            let mut last = rows.last().map_or(0, |r| r.at_ms);
            for row in &rows {
                print_row(row, false);
            }
            if !follow {
                return Ok(());
            }
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let mut new = store
                    .query_requests(&RequestQuery {
                        since_ms: Some(last + 1),
                        limit: 1000,
                        ..Default::default()
                    })
                    .await?;
                new.reverse();
                for row in &new {
                    print_row(row, false);
                    last = last.max(row.at_ms);
                }
            }
        }
    }
    Ok(())
}
