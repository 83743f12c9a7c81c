//! The scenario file: simulated providers with their fault timelines, the
//! gateway config to run in front of them, the load, and the expectations.
//! Parsed with `serde(deny_unknown_fields)` and validated once, reporting
//! every problem with its key path and a hint, like `config` does. The
//! format is documented field by field in `scenarios/README.md`.
//!
//! This module reads files and validates; it starts nothing.

use crate::config::{Config, ConfigErrors, ConfigIssue, Issues};
use crate::loadgen::{Arrival, LoadSpec};
use crate::sim::{Behavior, Latency, Phase, SimConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a gateway config names a simulated provider's base URL with.
pub const PLACEHOLDER_PREFIX: &str = "{sim.";

/// The longest load a scenario may ask for.
const MAX_DURATION: Duration = Duration::from_secs(7 * 86_400);

/// Stands in for a simulator's URL while the gateway config is validated,
/// before any simulator runs.
const PLACEHOLDER_URL: &str = "http://127.0.0.1:9/v1";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    seed: Option<u64>,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    gateway: Option<RawGateway>,
    load: RawLoad,
    #[serde(default)]
    expect: RawExpect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    format: Option<String>,
    region: Option<String>,
    models: Option<Vec<String>>,
    seed: Option<u64>,
    latency: Option<RawLatency>,
    tokens_per_sec: Option<f64>,
    completion_tokens: Option<u32>,
    // Faults in force for the whole run (a phase replaces what it names).
    status: Option<u16>,
    rate: Option<f64>,
    errors: Option<Vec<RawErrorRate>>,
    retry_after: Option<String>,
    hang_rate: Option<f64>,
    drop_rate: Option<f64>,
    drop_after: Option<u32>,
    stall_rate: Option<f64>,
    stall_after: Option<u32>,
    error_event_rate: Option<f64>,
    #[serde(default)]
    timeline: Vec<RawPhase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhase {
    from: String,
    to: String,
    latency: Option<RawLatency>,
    status: Option<u16>,
    rate: Option<f64>,
    errors: Option<Vec<RawErrorRate>>,
    retry_after: Option<String>,
    hang_rate: Option<f64>,
    drop_rate: Option<f64>,
    drop_after: Option<u32>,
    stall_rate: Option<f64>,
    stall_after: Option<u32>,
    error_event_rate: Option<f64>,
}

/// The fault fields a provider's baseline and a phase share.
struct RawFaults<'a> {
    latency: Option<&'a RawLatency>,
    status: Option<u16>,
    rate: Option<f64>,
    errors: Option<&'a Vec<RawErrorRate>>,
    retry_after: Option<&'a String>,
    hang_rate: Option<f64>,
    drop_rate: Option<f64>,
    drop_after: Option<u32>,
    stall_rate: Option<f64>,
    stall_after: Option<u32>,
    error_event_rate: Option<f64>,
}

impl RawProvider {
    fn faults(&self) -> RawFaults<'_> {
        RawFaults {
            latency: self.latency.as_ref(),
            status: self.status,
            rate: self.rate,
            errors: self.errors.as_ref(),
            retry_after: self.retry_after.as_ref(),
            hang_rate: self.hang_rate,
            drop_rate: self.drop_rate,
            drop_after: self.drop_after,
            stall_rate: self.stall_rate,
            stall_after: self.stall_after,
            error_event_rate: self.error_event_rate,
        }
    }
}

impl RawPhase {
    fn faults(&self) -> RawFaults<'_> {
        RawFaults {
            latency: self.latency.as_ref(),
            status: self.status,
            rate: self.rate,
            errors: self.errors.as_ref(),
            retry_after: self.retry_after.as_ref(),
            hang_rate: self.hang_rate,
            drop_rate: self.drop_rate,
            drop_after: self.drop_after,
            stall_rate: self.stall_rate,
            stall_after: self.stall_after,
            error_event_rate: self.error_event_rate,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLatency {
    base: Option<String>,
    jitter: Option<String>,
    spike_rate: Option<f64>,
    spike: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErrorRate {
    status: u16,
    rate: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    file: Option<String>,
    config: Option<RawGatewayConfig>,
}

/// An inline gateway config: a TOML table, or the text of a config file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawGatewayConfig {
    Text(String),
    Table(toml::Table),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLoad {
    model: Option<String>,
    rate: Option<f64>,
    arrival: Option<String>,
    concurrency: Option<u32>,
    max_in_flight: Option<u32>,
    duration: String,
    max_requests: Option<u64>,
    stream_share: Option<f64>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    min_success_ratio: Option<f64>,
    max_amplification: Option<f64>,
    max_p99: Option<String>,
    max_phase_p99: Option<String>,
    max_detect: Option<String>,
    max_recover: Option<String>,
    max_streams_cut: Option<u64>,
}

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    /// Sorted by name.
    pub providers: Vec<SimProvider>,
    /// The gateway config as TOML text with `{sim.NAME}` placeholders;
    /// `None` when the scenario only drives an existing gateway.
    pub gateway: Option<GatewayTemplate>,
    pub load: Load,
    pub expect: Expectations,
}

/// An `api_key_env` that resolves to a fixed key in a self-contained drill
/// (simulators accept any key), unless the environment sets it.
pub const SIM_KEY_ENV: &str = "SWITCHYARD_DRILL_SIM_KEY";

/// The dialect the gateway uses with a simulated provider. The simulator
/// answers every dialect at its own paths; the format decides what
/// `{sim.NAME}` stands for in the gateway config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    AzureOpenAi,
    Anthropic,
    Gemini,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::AzureOpenAi => "azure_openai",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
        }
    }

    /// The base URL a provider of this kind is configured with: OpenAI's
    /// includes `/v1`; the others add their own paths to the origin.
    pub fn base_url(self, sim: &crate::sim::SimHandle) -> String {
        match self {
            Format::OpenAi => sim.base_url(),
            Format::AzureOpenAi | Format::Anthropic | Format::Gemini => sim.origin(),
        }
    }
}

/// One simulated provider and its fault timeline.
#[derive(Debug, Clone)]
pub struct SimProvider {
    pub name: String,
    pub format: Format,
    pub region: Option<String>,
    /// Name, seed, models, baseline behaviour and timeline, ready to start.
    pub sim: SimConfig,
    /// What each timeline phase does, for the report (same order as
    /// `sim.timeline`).
    pub phase_labels: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GatewayTemplate {
    /// TOML text of a gateway config with `{sim.NAME}` placeholders.
    pub text: String,
    /// Where the text came from, for error messages: `gateway.config` or
    /// `gateway.file (PATH)`.
    pub origin: String,
}

#[derive(Debug, Clone)]
pub struct Load {
    /// The public model name requested.
    pub model: String,
    /// Open loop at this many requests per second; `None` is closed loop.
    pub rate: Option<f64>,
    pub arrival: Arrival,
    /// Closed loop: workers. Open loop: cap on requests in flight.
    pub concurrency: usize,
    pub duration: Duration,
    pub max_requests: Option<u64>,
    pub stream_share: f64,
    pub timeout: Duration,
}

/// Every bound is optional; an unset one is not checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expectations {
    pub min_success_ratio: Option<f64>,
    pub max_amplification: Option<f64>,
    pub max_p99: Option<Duration>,
    pub max_phase_p99: Option<Duration>,
    pub max_detect: Option<Duration>,
    pub max_recover: Option<Duration>,
    pub max_streams_cut: Option<u64>,
}

/// A stretch of the run between two consecutive fault boundaries.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseWindow {
    pub from: Duration,
    pub to: Duration,
    /// `provider: what` for every fault phase in force; empty when none is.
    pub faults: Vec<String>,
}

/// A provider's faults from start to end (adjacent phases merged): the
/// outage whose detection and recovery the drill times.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    pub provider: String,
    pub from: Duration,
    pub to: Duration,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            one(
                path.display().to_string(),
                format!("cannot read scenario file: {e}"),
            )
        })?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        Scenario::from_toml(&text, dir, path_stem(path))
    }

    /// Parses and validates; `dir` resolves `gateway.file`, and
    /// `default_name` names a scenario without a `name`.
    pub fn from_toml(text: &str, dir: &Path, default_name: &str) -> Result<Scenario, ConfigErrors> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let path = e
                .span()
                .map(|s| format!("line {}", line_of(text, s.start)))
                .unwrap_or_else(|| "scenario".to_owned());
            one(path, e.message().to_owned())
        })?;
        validate(raw, dir, default_name)
    }

    /// The gateway config with each `{sim.NAME}` replaced by `urls[NAME]`,
    /// validated, listening on loopback (port 0 unless the config names a
    /// loopback address).
    pub fn gateway_config(&self, urls: &BTreeMap<String, String>) -> Result<Config, ConfigErrors> {
        let Some(template) = &self.gateway else {
            return Err(one(
                "gateway".to_owned(),
                "a self-contained drill needs a gateway config".to_owned(),
            ));
        };
        gateway_config(template, urls)
    }

    /// The load as the load driver takes it.
    pub fn load_spec(&self, base_url: &str) -> LoadSpec {
        LoadSpec {
            base_url: base_url.to_owned(),
            model: self.load.model.clone(),
            rate: self.load.rate,
            arrival: self.load.arrival,
            concurrency: self.load.concurrency,
            duration: self.load.duration,
            max_requests: self.load.max_requests.unwrap_or(u64::MAX),
            stream_share: self.load.stream_share,
            seed: self.seed,
            request_timeout: self.load.timeout,
            api_key: None,
            api: crate::loadgen::LoadApi::ChatCompletions,
        }
    }

    /// The run cut at every fault phase's start and end.
    pub fn phases(&self) -> Vec<PhaseWindow> {
        let end = self.load.duration;
        let mut cuts = vec![Duration::ZERO, end];
        for p in &self.providers {
            for phase in &p.sim.timeline {
                cuts.extend([phase.from, phase.until].into_iter().filter(|&t| t < end));
            }
        }
        cuts.sort();
        cuts.dedup();
        cuts.windows(2)
            .filter_map(|w| match *w {
                [from, to] => Some(PhaseWindow {
                    from,
                    to,
                    faults: self.faults_between(from, to),
                }),
                _ => None,
            })
            .collect()
    }

    fn faults_between(&self, from: Duration, to: Duration) -> Vec<String> {
        let mut faults = Vec::new();
        for p in &self.providers {
            for (phase, label) in p.sim.timeline.iter().zip(&p.phase_labels) {
                if phase.from < to && from < phase.until {
                    faults.push(format!("{}: {label}", p.name));
                }
            }
        }
        faults
    }

    /// Each provider's outages, adjacent phases merged, within the run.
    pub fn fault_windows(&self) -> Vec<FaultWindow> {
        let end = self.load.duration;
        let mut windows = Vec::new();
        for p in &self.providers {
            let mut spans: Vec<(Duration, Duration)> = p
                .sim
                .timeline
                .iter()
                .filter(|ph| ph.from < end)
                .map(|ph| (ph.from, ph.until.min(end)))
                .collect();
            spans.sort();
            let mut merged: Vec<(Duration, Duration)> = Vec::new();
            for (from, to) in spans {
                match merged.last_mut() {
                    Some(last) if from <= last.1 => last.1 = last.1.max(to),
                    _ => merged.push((from, to)),
                }
            }
            windows.extend(merged.into_iter().map(|(from, to)| FaultWindow {
                provider: p.name.clone(),
                from,
                to,
            }));
        }
        windows.sort_by_key(|w| w.from);
        windows
    }
}

fn path_stem(path: &Path) -> &str {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("scenario")
}

fn gateway_config(
    template: &GatewayTemplate,
    urls: &BTreeMap<String, String>,
) -> Result<Config, ConfigErrors> {
    let mut text = template.text.clone();
    for (name, url) in urls {
        text = text.replace(&format!("{PLACEHOLDER_PREFIX}{name}}}"), url);
    }
    if let Some(start) = text.find(PLACEHOLDER_PREFIX) {
        let rest = text.get(start..).unwrap_or_default();
        let placeholder = rest.split('}').next().unwrap_or(rest);
        let known: Vec<&str> = urls.keys().map(String::as_str).collect();
        return Err(ConfigErrors(vec![ConfigIssue {
            path: template.origin.clone(),
            message: format!("{placeholder}}} names no simulated provider"),
            hint: Some(format!(
                "write {{sim.NAME}} with NAME one of: {}",
                known.join(", ")
            )),
            line: None,
        }]));
    }
    // Simulated Anthropic and Gemini providers want some key; a scenario
    // names this variable rather than put a secret in the file.
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .or_else(|| (name == SIM_KEY_ENV).then(|| "drill-simulator-key".to_owned()))
    };
    let mut config = Config::from_toml(&text, env).map_err(|e| {
        ConfigErrors(
            e.0.into_iter()
                .map(|issue| ConfigIssue {
                    path: if issue.path.starts_with("line ") && template.origin == "gateway.config"
                    {
                        // Line numbers of an inline table are those of its
                        // re-serialized text: the key path is the useful part.
                        template.origin.clone()
                    } else {
                        format!("{}: {}", template.origin, issue.path)
                    },
                    // Lines of an inline table's re-serialized text mean nothing
                    // to the reader of the scenario.
                    line: issue.line.filter(|_| template.origin != "gateway.config"),
                    ..issue
                })
                .collect(),
        )
    })?;
    // The default listen address (port 8080) would clash with a gateway
    // already running there: a drill takes a free port unless the config
    // asks for a loopback address of its own.
    let table = toml::from_str::<toml::Table>(&text).ok();
    let server_sets = |key: &str| {
        table
            .as_ref()
            .is_some_and(|t| t.get("server").and_then(|s| s.get(key)).is_some())
    };
    if !(server_sets("listen") && config.server.listen.ip().is_loopback()) {
        config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    }
    // A rehearsal on loopback needs no virtual keys unless it asks for them.
    if !server_sets("auth") {
        config.server.auth = crate::config::AuthMode::None;
    }
    Ok(config)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

fn one(path: String, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigIssue {
        path,
        message,
        hint: None,
        line: None,
    }])
}

/// Checks scenario files need beyond config's own.
trait ScenarioIssues {
    fn duration(&mut self, path: String, text: &str) -> Option<Duration>;
    fn opt_duration(&mut self, path: String, text: Option<&String>) -> Option<Duration>;
    fn probability(&mut self, path: String, value: Option<f64>) -> Option<f64>;
}

impl ScenarioIssues for Issues {
    fn duration(&mut self, path: String, text: &str) -> Option<Duration> {
        match crate::config::parse_duration(text, crate::config::MAX_DURATION) {
            Ok(d) => Some(d),
            Err(crate::config::DurationError::Invalid(e)) => {
                self.hint(
                    path,
                    format!("invalid duration \"{text}\": {e}"),
                    "write e.g. \"250ms\", \"20s\" or \"10m\"",
                );
                None
            }
            Err(crate::config::DurationError::TooLong) => {
                self.push(path, "longer than a year");
                None
            }
        }
    }

    fn opt_duration(&mut self, path: String, text: Option<&String>) -> Option<Duration> {
        text.and_then(|t| self.duration(path, t))
    }

    fn probability(&mut self, path: String, value: Option<f64>) -> Option<f64> {
        let p = value?;
        if (0.0..=1.0).contains(&p) {
            Some(p)
        } else {
            self.hint(
                path,
                format!("{p} is not within 0..=1"),
                "a probability, e.g. 0.3 for 30%",
            );
            None
        }
    }
}

fn validate(raw: RawScenario, dir: &Path, default_name: &str) -> Result<Scenario, ConfigErrors> {
    let mut issues = Issues::default();
    let seed = raw.seed.unwrap_or(1);
    let load = validate_load(&mut issues, &raw.load);
    let mut providers = Vec::new();
    for (index, (name, p)) in raw.providers.iter().enumerate() {
        let provider_seed = seed.wrapping_add(index as u64 + 1);
        if let Some(sim) = validate_provider(&mut issues, name, p, provider_seed, load.duration) {
            providers.push(sim);
        }
    }
    let gateway = raw
        .gateway
        .as_ref()
        .and_then(|g| validate_gateway(&mut issues, g, dir, &raw.providers));
    let expect = validate_expect(&mut issues, &raw.expect);
    if !issues.0.is_empty() {
        return Err(ConfigErrors(issues.0));
    }
    Ok(Scenario {
        name: raw.name.unwrap_or_else(|| default_name.to_owned()),
        description: raw.description.unwrap_or_default(),
        seed,
        providers,
        gateway,
        load,
        expect,
    })
}

fn validate_load(issues: &mut Issues, raw: &RawLoad) -> Load {
    let duration = match issues.duration("load.duration".into(), &raw.duration) {
        Some(d) if d.is_zero() => {
            issues.push("load.duration", "must be greater than zero");
            d
        }
        Some(d) if d > MAX_DURATION => {
            issues.hint(
                "load.duration",
                format!("{} is longer than a week", show(d)),
                "a drill runs in one process; soak for hours, not months",
            );
            d
        }
        Some(d) => d,
        // Reported already; a stand-in keeps the phase checks quiet.
        None => Duration::MAX,
    };
    let rate = match (raw.rate, raw.concurrency) {
        (Some(_), Some(_)) => {
            issues.hint(
                "load",
                "rate and concurrency are both set",
                "rate = open loop (requests per second), concurrency = closed loop (workers); pick one",
            );
            None
        }
        (None, None) => {
            issues.hint(
                "load",
                "neither rate nor concurrency is set",
                "rate = 100 sends 100 requests per second; concurrency = 16 keeps 16 in flight",
            );
            None
        }
        (Some(r), None) if !(r.is_finite() && r > 0.0 && r <= 1_000_000.0) => {
            issues.push("load.rate", format!("{r} is not within (0, 1000000]"));
            None
        }
        (rate, _) => rate,
    };
    let arrival = match raw.arrival.as_deref() {
        None | Some("constant") => Arrival::Constant,
        Some("poisson") => Arrival::Poisson,
        Some(other) => {
            issues.hint(
                "load.arrival",
                format!("unknown arrival \"{other}\""),
                "one of: constant, poisson",
            );
            Arrival::Constant
        }
    };
    if raw.arrival.is_some() && raw.concurrency.is_some() {
        issues.hint(
            "load.arrival",
            "arrival applies to an open loop (rate) only",
            "remove arrival, or use rate instead of concurrency",
        );
    }
    if raw.max_in_flight.is_some() && raw.concurrency.is_some() {
        issues.hint(
            "load.max_in_flight",
            "max_in_flight applies to an open loop (rate) only",
            "a closed loop keeps exactly `concurrency` requests in flight",
        );
    }
    let concurrency = match (raw.concurrency, raw.max_in_flight) {
        (Some(0), _) => {
            issues.push("load.concurrency", "must be at least 1");
            1
        }
        (_, Some(0)) => {
            issues.push("load.max_in_flight", "must be at least 1");
            1
        }
        (Some(n), _) | (None, Some(n)) => n as usize,
        (None, None) => 4096,
    };
    let stream_share = issues
        .probability("load.stream_share".into(), raw.stream_share)
        .unwrap_or(0.0);
    let timeout = issues
        .opt_duration("load.timeout".into(), raw.timeout.as_ref())
        .unwrap_or(Duration::from_secs(30));
    if timeout.is_zero() {
        issues.push("load.timeout", "must be greater than zero");
    }
    if raw.max_requests == Some(0) {
        issues.push("load.max_requests", "must be at least 1");
    }
    let model = raw
        .model
        .clone()
        .unwrap_or_else(|| "chat-default".to_owned());
    if model.is_empty() {
        issues.push("load.model", "must not be empty");
    }
    Load {
        model,
        rate,
        arrival,
        concurrency,
        duration,
        max_requests: raw.max_requests,
        stream_share,
        timeout,
    }
}

fn validate_provider(
    issues: &mut Issues,
    name: &str,
    raw: &RawProvider,
    seed: u64,
    run: Duration,
) -> Option<SimProvider> {
    let path = format!("providers.{name}");
    let before = issues.0.len();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        issues.hint(
            &path,
            format!("invalid provider name \"{name}\""),
            "letters, digits, '-' and '_' only: the name appears in headers and {sim.NAME}",
        );
    }
    let format = match raw.format.as_deref() {
        None | Some("openai") => Format::OpenAi,
        Some("azure_openai") => Format::AzureOpenAi,
        Some("anthropic") => Format::Anthropic,
        Some("gemini") => Format::Gemini,
        Some(other) => {
            issues.hint(
                format!("{path}.format"),
                format!("unknown format \"{other}\""),
                "one of: openai, azure_openai, anthropic, gemini (the gateway provider's `kind`)",
            );
            Format::OpenAi
        }
    };
    let models = raw
        .models
        .clone()
        .unwrap_or_else(|| SimConfig::default().models);
    if models.is_empty() || models.iter().any(String::is_empty) {
        issues.push(
            format!("{path}.models"),
            "must list at least one non-empty model name",
        );
    }
    let mut base = Behavior::default();
    apply_faults(issues, &path, &raw.faults(), &mut base);
    if let Some(tps) = raw.tokens_per_sec {
        if tps.is_finite() && tps >= 0.0 {
            base.tokens_per_sec = tps;
        } else {
            issues.hint(
                format!("{path}.tokens_per_sec"),
                format!("{tps} is not a non-negative number"),
                "0 sends every chunk at once",
            );
        }
    }
    if let Some(n) = raw.completion_tokens {
        if (1..=100_000).contains(&n) {
            base.completion_tokens = n;
        } else {
            issues.push(
                format!("{path}.completion_tokens"),
                format!("{n} is not within 1..=100000"),
            );
        }
    }
    let mut timeline = Vec::new();
    let mut labels = Vec::new();
    for (i, phase) in raw.timeline.iter().enumerate() {
        let phase_path = format!("{path}.timeline[{i}]");
        let from = issues.duration(format!("{phase_path}.from"), &phase.from);
        let to = issues.duration(format!("{phase_path}.to"), &phase.to);
        let mut behavior = base.clone();
        apply_faults(issues, &phase_path, &phase.faults(), &mut behavior);
        let (Some(from), Some(to)) = (from, to) else {
            continue;
        };
        if to <= from {
            issues.push(
                format!("{phase_path}.to"),
                format!("ends ({}) before it starts ({})", show(to), show(from)),
            );
            continue;
        }
        if from >= run {
            issues.hint(
                format!("{phase_path}.from"),
                format!("starts at {} but the load lasts {}", show(from), show(run)),
                "move the phase into the run or lengthen load.duration",
            );
        }
        if let Some((j, _)) = timeline
            .iter()
            .enumerate()
            .find(|(_, p): &(usize, &Phase)| p.from < to && from < p.until)
        {
            issues.hint(
                format!("{phase_path}.from"),
                format!("overlaps {path}.timeline[{j}]"),
                "phases of one provider must not overlap; split them",
            );
        }
        labels.push(describe(&behavior, &base));
        timeline.push(Phase {
            from,
            until: to,
            behavior,
        });
    }
    if issues.0.len() > before {
        return None;
    }
    Some(SimProvider {
        name: name.to_owned(),
        format,
        region: raw.region.clone(),
        sim: SimConfig {
            name: name.to_owned(),
            seed: raw.seed.unwrap_or(seed),
            models,
            behavior: base,
            timeline,
            accepted_keys: None,
        },
        phase_labels: labels,
    })
}

/// Overwrites in `behavior` what `raw` names: a status list replaces the
/// inherited one, a latency table replaces the inherited latency.
fn apply_faults(issues: &mut Issues, path: &str, raw: &RawFaults<'_>, behavior: &mut Behavior) {
    if let Some(latency) = raw.latency {
        behavior.latency = validate_latency(issues, &format!("{path}.latency"), latency);
    }
    let mut statuses: Option<Vec<(u16, f64)>> = None;
    match (raw.status, raw.rate) {
        (Some(code), rate) => {
            let rate = issues
                .probability(format!("{path}.rate"), rate)
                .unwrap_or(1.0);
            statuses.get_or_insert_with(Vec::new).push((code, rate));
        }
        (None, Some(_)) => issues.hint(
            format!("{path}.rate"),
            "rate without status",
            "add status = 503 (or use hang_rate, drop_rate, error_event_rate)",
        ),
        (None, None) => {}
    }
    if let Some(errors) = raw.errors {
        let list = statuses.get_or_insert_with(Vec::new);
        for (i, e) in errors.iter().enumerate() {
            if let Some(rate) = issues.probability(format!("{path}.errors[{i}].rate"), Some(e.rate))
            {
                list.push((e.status, rate));
            }
        }
    }
    if let Some(list) = statuses {
        for &(code, _) in &list {
            if !(100..=999).contains(&code) {
                issues.push(
                    format!("{path}.status"),
                    format!("{code} is not an HTTP status (100..=999)"),
                );
            }
        }
        let total: f64 = list.iter().map(|&(_, r)| r).sum();
        if total > 1.0 + 1e-9 {
            issues.hint(
                format!("{path}.errors"),
                format!("error rates add up to {total}"),
                "rates are shares of all requests; together at most 1.0",
            );
        }
        behavior.status_rates = list;
    }
    if let Some(text) = raw.retry_after {
        behavior.retry_after = issues.duration(format!("{path}.retry_after"), text);
    }
    if let Some(p) = issues.probability(format!("{path}.hang_rate"), raw.hang_rate) {
        behavior.hang_rate = p;
    }
    if let Some(p) = issues.probability(format!("{path}.error_event_rate"), raw.error_event_rate) {
        behavior.error_event_rate = p;
    }
    if let Some(fault) = stream_fault(issues, path, "drop", raw.drop_rate, raw.drop_after) {
        behavior.drop_after = Some(fault);
    }
    if let Some(fault) = stream_fault(issues, path, "stall", raw.stall_rate, raw.stall_after) {
        behavior.stall_after = Some(fault);
    }
}

/// A mid-stream fault `{kind}_rate` / `{kind}_after` (chunks, default 2):
/// `(after, rate)` when a rate is set; an `_after` without a rate is a
/// hint, not a silent no-op.
fn stream_fault(
    issues: &mut Issues,
    path: &str,
    kind: &str,
    rate: Option<f64>,
    after: Option<u32>,
) -> Option<(u32, f64)> {
    match (
        issues.probability(format!("{path}.{kind}_rate"), rate),
        after,
    ) {
        (Some(p), after) => Some((after.unwrap_or(2), p)),
        (None, Some(_)) if rate.is_none() => {
            issues.hint(
                format!("{path}.{kind}_after"),
                format!("{kind}_after without {kind}_rate"),
                format!("add {kind}_rate = 0.1 to {kind} 10% of streams after {kind}_after chunks"),
            );
            None
        }
        (None, _) => None,
    }
}

fn validate_latency(issues: &mut Issues, path: &str, raw: &RawLatency) -> Latency {
    let d = |issues: &mut Issues, key: &str, v: Option<&String>| {
        issues
            .opt_duration(format!("{path}.{key}"), v)
            .unwrap_or_default()
    };
    Latency {
        base: d(issues, "base", raw.base.as_ref()),
        jitter: d(issues, "jitter", raw.jitter.as_ref()),
        spike_rate: issues
            .probability(format!("{path}.spike_rate"), raw.spike_rate)
            .unwrap_or(0.0),
        spike: d(issues, "spike", raw.spike.as_ref()),
    }
}

fn validate_gateway(
    issues: &mut Issues,
    raw: &RawGateway,
    dir: &Path,
    providers: &BTreeMap<String, RawProvider>,
) -> Option<GatewayTemplate> {
    let template = match (&raw.file, &raw.config) {
        (Some(_), Some(_)) | (None, None) => {
            issues.hint(
                "gateway",
                "set exactly one of file and config",
                "file = \"switchyard.toml\" (relative to the scenario), or an inline [gateway.config] table",
            );
            return None;
        }
        (Some(file), None) => {
            let path: PathBuf = dir.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) => GatewayTemplate {
                    text,
                    origin: format!("gateway.file ({})", path.display()),
                },
                Err(e) => {
                    issues.push(
                        "gateway.file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
        (None, Some(RawGatewayConfig::Text(text))) => GatewayTemplate {
            text: text.clone(),
            origin: "gateway.config".to_owned(),
        },
        (None, Some(RawGatewayConfig::Table(table))) => match toml::to_string(table) {
            Ok(text) => GatewayTemplate {
                text,
                origin: "gateway.config".to_owned(),
            },
            Err(e) => {
                issues.push("gateway.config", format!("cannot use the table: {e}"));
                return None;
            }
        },
    };
    // Validate now, with stand-in URLs, so a broken gateway config fails
    // before anything starts.
    let urls = providers
        .keys()
        .map(|name| (name.clone(), PLACEHOLDER_URL.to_owned()))
        .collect();
    match gateway_config(&template, &urls) {
        Ok(_) => Some(template),
        Err(errors) => {
            issues.0.extend(errors.0);
            None
        }
    }
}

fn validate_expect(issues: &mut Issues, raw: &RawExpect) -> Expectations {
    let max_amplification = match raw.max_amplification {
        Some(a) if !(a.is_finite() && a >= 1.0) => {
            issues.hint(
                "expect.max_amplification",
                format!("{a} is below 1"),
                "every client request makes at least one upstream attempt; 1.2 allows 20% extra",
            );
            None
        }
        a => a,
    };
    Expectations {
        min_success_ratio: issues
            .probability("expect.min_success_ratio".into(), raw.min_success_ratio),
        max_amplification,
        max_p99: issues.opt_duration("expect.max_p99".into(), raw.max_p99.as_ref()),
        max_phase_p99: issues
            .opt_duration("expect.max_phase_p99".into(), raw.max_phase_p99.as_ref()),
        max_detect: issues.opt_duration("expect.max_detect".into(), raw.max_detect.as_ref()),
        max_recover: issues.opt_duration("expect.max_recover".into(), raw.max_recover.as_ref()),
        max_streams_cut: raw.max_streams_cut,
    }
}

/// A short human description of what a phase changes from the baseline.
fn describe(phase: &Behavior, base: &Behavior) -> String {
    let pct = |p: f64| format!("{:.0}%", p * 100.0);
    let mut parts = Vec::new();
    if phase.status_rates != base.status_rates {
        if phase.status_rates.is_empty() {
            parts.push("no errors".to_owned());
        }
        for &(code, rate) in &phase.status_rates {
            let mut part = format!("{code} × {}", pct(rate));
            if let (429 | 503, Some(wait)) = (code, phase.retry_after) {
                part.push_str(&format!(" (Retry-After {})", show(wait)));
            }
            parts.push(part);
        }
    }
    if phase.hang_rate != base.hang_rate {
        parts.push(format!("hang {}", pct(phase.hang_rate)));
    }
    if phase.latency.base != base.latency.base
        || phase.latency.jitter != base.latency.jitter
        || phase.latency.spike_rate != base.latency.spike_rate
        || phase.latency.spike != base.latency.spike
    {
        let l = &phase.latency;
        let mut part = format!("latency {}", show(l.base));
        if !l.jitter.is_zero() {
            part.push_str(&format!("+0..{}", show(l.jitter)));
        }
        if l.spike_rate > 0.0 {
            part.push_str(&format!(
                ", {} spikes of {}",
                pct(l.spike_rate),
                show(l.spike)
            ));
        }
        parts.push(part);
    }
    if phase.drop_after != base.drop_after {
        if let Some((n, p)) = phase.drop_after {
            parts.push(format!("{} of streams cut after {n} chunks", pct(p)));
        }
    }
    if phase.error_event_rate != base.error_event_rate {
        parts.push(format!("error events {}", pct(phase.error_event_rate)));
    }
    if parts.is_empty() {
        "as baseline".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `1.5s`, `250ms`, `2m`: durations as a scenario writes them.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() {
        format!("{}µs", d.as_micros())
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else if ms > 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[providers.primary]
region = "us-east"
timeline = [
  { from = "2s", to = "5s", status = 503 },
  { from = "5s", to = "7s", status = 429, rate = 0.3, retry_after = "2s" },
]
[providers.secondary]
latency = { base = "40ms", jitter = "10ms" }

[gateway.config.providers.primary]
base_url = "{sim.primary}"
[gateway.config.providers.secondary]
base_url = "{sim.secondary}"
[gateway.config.routes.chat-default]
targets = [{ provider = "primary", model = "gpt-4o" }, { provider = "secondary", model = "gpt-4o" }]

[load]
rate = 50
duration = "10s"

[expect]
min_success_ratio = 0.99
"#;

    fn parse(text: &str) -> Result<Scenario, ConfigErrors> {
        Scenario::from_toml(text, Path::new("."), "test")
    }

    fn errors(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_scenario_and_its_phases() {
        let s = parse(MINIMAL).unwrap();
        assert_eq!(s.name, "test");
        assert_eq!(s.providers.len(), 2);
        let primary = &s.providers[0];
        assert_eq!(primary.sim.timeline.len(), 2);
        assert_eq!(primary.sim.timeline[0].behavior.status_rates, [(503, 1.0)]);
        assert_eq!(
            primary.sim.timeline[1].behavior.retry_after,
            Some(Duration::from_secs(2))
        );
        assert_eq!(primary.phase_labels[1], "429 × 30% (Retry-After 2s)");
        let phases = s.phases();
        let bounds: Vec<(u64, u64)> = phases
            .iter()
            .map(|p| (p.from.as_secs(), p.to.as_secs()))
            .collect();
        assert_eq!(bounds, [(0, 2), (2, 5), (5, 7), (7, 10)]);
        assert!(phases[0].faults.is_empty());
        assert_eq!(phases[1].faults, ["primary: 503 × 100%"]);
        let windows = s.fault_windows();
        assert_eq!(windows.len(), 1, "adjacent phases are one outage");
        assert_eq!(
            (windows[0].from, windows[0].to),
            (Duration::from_secs(2), Duration::from_secs(7))
        );
        assert_eq!(s.expect.min_success_ratio, Some(0.99));
        assert_eq!(s.load.concurrency, 4096);
    }

    #[test]
    fn gateway_placeholders_are_filled_and_listen_forced_to_loopback() {
        let s = parse(&MINIMAL.replace(
            "[gateway.config.providers.primary]",
            "[gateway.config.server]\nlisten = \"0.0.0.0:8080\"\n[gateway.config.providers.primary]",
        ))
        .unwrap();
        let urls: BTreeMap<String, String> = [
            ("primary".to_owned(), "http://127.0.0.1:1111/v1".to_owned()),
            (
                "secondary".to_owned(),
                "http://127.0.0.1:2222/v1".to_owned(),
            ),
        ]
        .into();
        let config = s.gateway_config(&urls).unwrap();
        assert!(config.server.listen.ip().is_loopback());
        assert_eq!(config.server.listen.port(), 0);
        let primary = config
            .routes()
            .flat_map(|r| r.targets.iter())
            .find(|t| t.provider.name == "primary")
            .unwrap();
        assert_eq!(
            primary.chat_url.to_string(),
            "http://127.0.0.1:1111/v1/chat/completions"
        );
        assert_eq!(config.server.auth, crate::config::AuthMode::None);
    }

    #[test]
    fn gateway_config_as_text_and_unknown_placeholders() {
        let text = MINIMAL.replace(
            "[gateway.config.providers.primary]\nbase_url = \"{sim.primary}\"\n[gateway.config.providers.secondary]\nbase_url = \"{sim.secondary}\"\n[gateway.config.routes.chat-default]\ntargets = [{ provider = \"primary\", model = \"gpt-4o\" }, { provider = \"secondary\", model = \"gpt-4o\" }]\n",
            "[gateway]\nconfig = '''\n[providers.primary]\nbase_url = \"{sim.primary}\"\n[routes.chat-default]\ntargets = [{ provider = \"primary\", model = \"gpt-4o\" }]\n'''\n",
        );
        assert!(parse(&text).is_ok(), "{:?}", parse(&text).err());
        let unknown = text.replace("{sim.primary}", "{sim.primry}");
        let e = errors(&unknown);
        assert!(
            e.contains("gateway.config: {sim.primry} names no simulated provider"),
            "{e}"
        );
        assert!(e.contains("primary, secondary"), "{e}");
        let broken = text.replace(
            "provider = \"primary\", model",
            "provider = \"ghost\", model",
        );
        let e = errors(&broken);
        assert!(
            e.contains("gateway.config: routes.chat-default.targets[0].provider"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let text = MINIMAL
            .replace("status = 503 }", "status = 503, rate = 1.5 }")
            .replace("to = \"7s\"", "to = \"4s\"")
            .replace("rate = 50", "rate = 50\nconcurrency = 4")
            .replace(
                "min_success_ratio = 0.99",
                "min_success_ratio = 0.99\nmax_detect = \"soon\"",
            )
            .replace(
                "region = \"us-east\"",
                "region = \"us-east\"\nformat = \"cohere\"",
            );
        let e = errors(&text);
        for expected in [
            "providers.primary.timeline[0].rate: 1.5 is not within 0..=1",
            "providers.primary.timeline[1].to: ends (4s) before it starts (5s)",
            "load: rate and concurrency are both set",
            "expect.max_detect: invalid duration \"soon\"",
            "providers.primary.format: unknown format \"cohere\"",
        ] {
            assert!(e.contains(expected), "missing {expected:?} in:\n{e}");
        }
    }

    #[test]
    fn unknown_keys_and_overlaps_are_refused() {
        let e = errors(&MINIMAL.replace("rate = 50", "rate = 50\nrps = 50"));
        assert!(e.contains("unknown field `rps`"), "{e}");
        assert!(e.starts_with("line "), "{e}");
        let e = errors(&MINIMAL.replace("from = \"5s\"", "from = \"4s\""));
        assert!(
            e.contains(
                "providers.primary.timeline[1].from: overlaps providers.primary.timeline[0]"
            ),
            "{e}"
        );
        let e = errors(&MINIMAL.replace("duration = \"10s\"", "duration = \"30days\""));
        assert!(
            e.contains("load.duration: ") && e.contains("longer than a week"),
            "{e}"
        );
        // Past the config's cap on every duration, before any field's own.
        let e = errors(&MINIMAL.replace("duration = \"10s\"", "duration = \"3000years\""));
        assert!(
            e.contains("load.duration: ") && e.contains("longer than a year"),
            "{e}"
        );
        let e = errors(&MINIMAL.replace("[load]\nrate = 50\n", "[load]\n"));
        assert!(e.contains("neither rate nor concurrency"), "{e}");
        let e = errors(&MINIMAL.replace("format", "x").replace(
            "region = \"us-east\"",
            "region = \"us-east\"\nerrors = [{ status = 500, rate = 0.7 }, { status = 503, rate = 0.7 }]",
        ));
        assert!(
            e.contains("providers.primary.errors: error rates add up to 1.4"),
            "{e}"
        );
    }

    #[test]
    fn show_durations() {
        assert_eq!(show(Duration::from_secs(120)), "2m");
        assert_eq!(show(Duration::from_secs(20)), "20s");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
        assert_eq!(show(Duration::ZERO), "0s");
    }
}
