//! `switchyard drill`: rehearse an outage. A scenario file (`scenario`)
//! names simulated providers with fault timelines, the gateway config to
//! put in front of them, the load and the expectations. Self-contained, the
//! drill starts the simulators and a gateway in-process on 127.0.0.1; with
//! `--target` it drives a gateway that is already running (its faults are
//! the operator's business). Either way it drives the load, watches the
//! gateway (`watch`), shows a live view (`live`), and reports per phase of
//! the fault timeline (`report`, `plot`); it exits non-zero when an
//! expectation fails.
//!
//! The drill owns orchestration and measurement only. It holds no gateway
//! logic: it uses the gateway (`server::Gateway`) and the simulator
//! (`sim`) through their public handles, like an operator would.

pub mod live;
mod plot;
pub mod report;
pub mod scenario;
pub mod traffic;
mod watch;

use crate::loadgen::{self, Live, Observer};
use crate::server::Gateway;
use crate::sim::{SimHandle, Simulator};
use anyhow::Context as _;
use live::{Feeds, LiveView, View};
use report::{Inputs, Recorder, Report, Rss};
use scenario::Scenario;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use watch::{ProviderOf, Source, Watch};

#[derive(clap::Args, Debug, Clone)]
pub struct DrillArgs {
    /// The scenario file (TOML; see scenarios/README.md).
    pub scenario: PathBuf,
    /// Drive this running gateway (e.g. http://127.0.0.1:8080) instead of
    /// starting simulators and a gateway; the scenario's load and
    /// expectations apply, its faults are not injected.
    #[arg(long, value_name = "URL")]
    pub target: Option<String>,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as a self-contained HTML page with plots.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// No live view while running.
    #[arg(long, short)]
    pub quiet: bool,
}

/// How a drill command ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// At least one expectation failed (the report says which).
    Failed,
}

/// Runs `switchyard drill`. `Err` is a drill that could not run (invalid
/// scenario, gateway unreachable, ...), as opposed to one that ran and
/// failed its expectations.
pub async fn run(args: DrillArgs) -> anyhow::Result<Verdict> {
    // Log lines would drown the live view, and the report lists the breaker
    // changes the gateway warns about; errors still show (RUST_LOG overrides).
    let _log_guard = crate::telemetry::init_logging("error");
    let scenario = Scenario::load(&args.scenario).map_err(|errors| {
        anyhow::anyhow!("invalid scenario {}:\n{errors}", args.scenario.display())
    })?;
    let view = match (args.quiet, args.json) {
        (true, _) => View::Quiet,
        (false, true) => View::Stderr,
        (false, false) => View::Stdout,
    };
    let report = match &args.target {
        Some(target) => run_against(&scenario, target, view).await?,
        None => {
            let drill = SelfContained::start(scenario).await?;
            let report = drill.run(view).await;
            drill.shutdown().await?;
            report
        }
    };
    if args.json {
        println!("{}", report::json(&report));
    } else {
        print!("{}", report::table(&report));
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report::html(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("HTML report: {}", path.display());
    }
    Ok(if report.passed {
        Verdict::Passed
    } else {
        Verdict::Failed
    })
}

/// Simulators and a gateway started from a scenario, in this process.
pub struct SelfContained {
    scenario: Scenario,
    /// By scenario provider name.
    pub sims: BTreeMap<String, SimHandle>,
    pub gateway: Gateway,
    provider_of: ProviderOf,
}

impl SelfContained {
    /// Starts every simulator on 127.0.0.1 (free ports), then the gateway
    /// with their URLs filled into its config.
    pub async fn start(scenario: Scenario) -> anyhow::Result<SelfContained> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut sims = BTreeMap::new();
        for p in &scenario.providers {
            let sim = Simulator::start(p.sim.clone(), loopback)
                .await
                .with_context(|| format!("starting simulator {}", p.name))?;
            sims.insert(p.name.clone(), sim);
        }
        let urls = scenario
            .providers
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.format.base_url(sims.get(&p.name)?))))
            .collect();
        let config = scenario
            .gateway_config(&urls)
            .map_err(|e| anyhow::anyhow!("gateway config of scenario {}:\n{e}", scenario.name))?;
        // Breakers are keyed by the gateway's provider names; the report
        // speaks of the scenario's, so match them by address.
        let provider_of = config
            .routes()
            .flat_map(|route| route.targets.iter())
            .filter_map(|target| {
                let authority = target.chat_url.authority()?.as_str();
                let sim = sims
                    .iter()
                    .find(|(_, s)| s.addr().to_string() == authority)?;
                Some((target.provider.name.clone(), sim.0.clone()))
            })
            .collect();
        let gateway = Gateway::start(config)
            .await
            .context("starting the gateway")?;
        Ok(SelfContained {
            scenario,
            sims,
            gateway,
            provider_of,
        })
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// Restarts the simulators' timelines and drives the scenario's load.
    pub async fn run(&self, view: View) -> Report {
        let rss_start = report::rss_kib();
        for sim in self.sims.values() {
            sim.reset_clock();
        }
        let source = Source::InProcess {
            state: self.gateway.state().clone(),
            sims: self
                .sims
                .iter()
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
        };
        let mut report = drive(
            &self.scenario,
            &self.gateway.base_url(),
            source,
            self.provider_of.clone(),
            view,
            "self_contained",
        )
        .await;
        if let (Some(start_kib), Some(end_kib)) = (rss_start, report::rss_kib()) {
            report.rss = Some(Rss { start_kib, end_kib });
        }
        report
    }

    /// Drains the gateway, then stops the simulators.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let result = self.gateway.join().await;
        for sim in self.sims.into_values() {
            sim.shutdown().await;
        }
        result
    }
}

/// Drives a gateway that is already running at `target` (its origin or its
/// `/v1` base URL). Figures beyond what the client sees come from the
/// gateway's `/admin/targets`, when it answers.
pub async fn run_against(scenario: &Scenario, target: &str, view: View) -> anyhow::Result<Report> {
    let origin = target.trim_end_matches('/');
    let origin = origin.strip_suffix("/v1").unwrap_or(origin);
    let uri: http::Uri = format!("{origin}/admin/targets")
        .parse()
        .with_context(|| format!("--target {target:?} is not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        anyhow::bail!(
            "--target must be an http:// URL such as http://127.0.0.1:8080, got {target:?}"
        );
    }
    reachable(origin)
        .await
        .with_context(|| format!("cannot reach the gateway at {origin}"))?;
    // Breakers are named by the gateway's providers; a scenario naming its
    // providers the same way gets detection and recovery times.
    let provider_of = scenario
        .providers
        .iter()
        .map(|p| (p.name.clone(), p.name.clone()))
        .collect();
    Ok(drive(
        scenario,
        &format!("{origin}/v1"),
        Source::Remote { admin_targets: uri },
        provider_of,
        view,
        "target",
    )
    .await)
}

/// One `GET /healthz`, so a wrong address fails at once instead of after a
/// whole run of refused requests.
async fn reachable(origin: &str) -> anyhow::Result<()> {
    let uri: http::Uri = format!("{origin}/healthz").parse()?;
    let request = http::Request::get(uri).body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        loadgen::client().request(request),
    )
    .await
    .context("no answer within 5 s")??;
    if !response.status().is_success() {
        anyhow::bail!("/healthz answered {}", response.status());
    }
    Ok(())
}

async fn drive(
    scenario: &Scenario,
    base_url: &str,
    source: Source,
    provider_of: ProviderOf,
    view: View,
    mode: &'static str,
) -> Report {
    let t0 = tokio::time::Instant::now();
    let phases = scenario.phases();
    let recorder = Arc::new(Recorder::new(t0, &phases));
    let cuts = phases.iter().skip(1).map(|p| p.from).collect();
    let watch = Watch::start(source, t0, provider_of, cuts).await;
    let live = Arc::new(Live::default());
    let view = LiveView::start(
        view,
        Feeds {
            live: live.clone(),
            recorder: recorder.clone(),
            open: watch.open_breakers(),
            t0,
            duration: scenario.load.duration,
        },
    );
    let observer: Arc<dyn Observer> = recorder.clone();
    let spec = scenario.load_spec(base_url);
    loadgen::run_observed(&spec, live, Some(observer)).await;
    let elapsed = t0.elapsed();
    if let Some(view) = view {
        view.finish().await;
    }
    let observed = watch.finish().await;
    report::build(
        &recorder,
        Inputs {
            scenario,
            mode,
            gateway: base_url.to_owned(),
            elapsed,
            observed,
            rss: None,
        },
    )
}
