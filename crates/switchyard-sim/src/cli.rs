//! `switchyard sim`: run a simulated provider from the command line.
//!
//! Phase syntax (`--phase`, repeatable): `FROM..UNTIL:SPEC[,SPEC...]`, where
//! FROM and UNTIL are durations since start (`10s`, `1m30s`; UNTIL may be
//! empty for "forever") and each SPEC is one of
//! - `CODE=P`: status CODE with probability P; the phase's status list
//!   replaces the base `--error-rate` list,
//! - `hang=P`: hang probability,
//! - `context_length=P`: context-length error probability,
//! - `latency=DURATION`: base latency,
//! - `ok`: no status errors, context-length errors or hangs.
//!
//! Everything not named in the phase is copied from the base flags. Example:
//! `--phase 10s..20s:503=1.0 --phase 20s..30s:429=0.5,hang=0.1 --phase 30s..:ok`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::{Behavior, Latency, Phase, SimConfig, Simulator};

#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,

    /// Seed of the fault sampler: the same seed gives the same fault sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Served models, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "gpt-4o-mini,gpt-4o,text-embedding-3-small,claude-sonnet-4-5,gemini-2.5-flash,gpt-3.5-turbo-instruct,omni-moderation-latest,dall-e-3,gpt-image-1,tts-1,whisper-1"
    )]
    pub models: Vec<String>,

    /// Only these API keys are accepted, comma-separated (default: any key).
    #[arg(long, value_delimiter = ',', value_name = "KEYS")]
    pub accepted_keys: Option<Vec<String>>,

    /// Error status probability as CODE=P, e.g. 503=0.1 (repeatable).
    #[arg(long = "error-rate", value_name = "CODE=P", value_parser = parse_status_rate)]
    pub error_rates: Vec<(u16, f64)>,

    /// Retry-After sent with 429 and 503 responses, e.g. 2s.
    #[arg(long, value_parser = parse_duration)]
    pub retry_after: Option<Duration>,

    /// Base delay before the response head or first SSE event.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub latency: Duration,

    /// Uniform random extra delay in 0..JITTER.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub jitter: Duration,

    /// Probability of adding --spike to the delay.
    #[arg(long, value_parser = parse_probability, default_value_t = 0.0)]
    pub spike_rate: f64,

    /// Extra delay of a latency spike.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub spike: Duration,

    /// Probability that a request is never answered.
    #[arg(long, value_parser = parse_probability, default_value_t = 0.0)]
    pub hang_rate: f64,

    /// Probability of a context-length error (400 in the dialect's shape).
    #[arg(long, value_parser = parse_probability, default_value_t = 0.0)]
    pub context_length_rate: f64,

    /// Streams abort the connection after N content chunks (see --drop-rate).
    #[arg(long, value_name = "N")]
    pub drop_after: Option<u32>,

    /// Probability of --drop-after applying to a stream.
    #[arg(long, value_parser = parse_probability, default_value_t = 1.0)]
    pub drop_rate: f64,

    /// Probability that a stream's only event is an in-band error.
    #[arg(long, value_parser = parse_probability, default_value_t = 0.0)]
    pub error_event_rate: f64,

    /// Streaming pace; 0 sends all chunks at once.
    #[arg(long, default_value_t = 0.0)]
    pub tokens_per_sec: f64,

    /// Content tokens per completion.
    #[arg(long, default_value_t = 8)]
    pub completion_tokens: u32,

    /// Timeline phase FROM..UNTIL:SPEC[,SPEC] (repeatable; see the module docs).
    #[arg(long = "phase", value_name = "FROM..UNTIL:SPECS", value_parser = parse_phase)]
    pub phases: Vec<PhaseSpec>,

    /// Name used in error messages and the x-sim-name header.
    #[arg(long, default_value = "sim")]
    pub name: String,
}

/// A parsed `--phase`, applied on top of the base behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct PhaseSpec {
    pub from: Duration,
    pub until: Duration,
    /// Replaces the base status rates when `Some`.
    pub status_rates: Option<Vec<(u16, f64)>>,
    pub hang_rate: Option<f64>,
    pub context_length_rate: Option<f64>,
    pub latency: Option<Duration>,
}

impl PhaseSpec {
    fn apply(&self, base: &Behavior) -> Behavior {
        let mut behavior = base.clone();
        if let Some(rates) = &self.status_rates {
            behavior.status_rates.clone_from(rates);
        }
        if let Some(hang_rate) = self.hang_rate {
            behavior.hang_rate = hang_rate;
        }
        if let Some(rate) = self.context_length_rate {
            behavior.context_length_rate = rate;
        }
        if let Some(latency) = self.latency {
            behavior.latency.base = latency;
        }
        behavior
    }
}

impl SimArgs {
    pub fn behavior(&self) -> Behavior {
        Behavior {
            status_rates: self.error_rates.clone(),
            retry_after: self.retry_after,
            latency: Latency {
                base: self.latency,
                jitter: self.jitter,
                spike_rate: self.spike_rate,
                spike: self.spike,
            },
            hang_rate: self.hang_rate,
            drop_after: self.drop_after.map(|n| (n, self.drop_rate)),
            error_event_rate: self.error_event_rate,
            tokens_per_sec: self.tokens_per_sec,
            completion_tokens: self.completion_tokens,
            context_length_rate: self.context_length_rate,
            ..Behavior::default()
        }
    }

    pub fn config(&self) -> SimConfig {
        let behavior = self.behavior();
        let timeline = self
            .phases
            .iter()
            .map(|p| Phase {
                from: p.from,
                until: p.until,
                behavior: p.apply(&behavior),
            })
            .collect();
        SimConfig {
            name: self.name.clone(),
            seed: self.seed,
            models: self.models.clone(),
            behavior,
            timeline,
            accepted_keys: self.accepted_keys.clone(),
        }
    }
}

/// Serves until SIGINT or SIGTERM. Prints exactly one line to stdout,
/// `switchyard sim listening on http://ADDR/v1`, for scripts to parse.
pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let sim = Simulator::start(args.config(), args.listen)
        .await
        .with_context(|| format!("starting sim on {}", args.listen))?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "switchyard sim listening on {}", sim.base_url())?;
        stdout.flush()?;
    }
    wait_for_signal().await?;
    sim.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}

fn parse_probability(s: &str) -> anyhow::Result<f64> {
    let p: f64 = s
        .trim()
        .parse()
        .with_context(|| format!("{s:?} is not a number"))?;
    if !(0.0..=1.0).contains(&p) {
        bail!("probability {p} is not within 0..=1");
    }
    Ok(p)
}

fn parse_status_rate(s: &str) -> anyhow::Result<(u16, f64)> {
    let Some((code, rate)) = s.split_once('=') else {
        bail!("expected CODE=P, e.g. 503=0.1, got {s:?}");
    };
    let code: u16 = code
        .trim()
        .parse()
        .with_context(|| format!("{code:?} is not a status code"))?;
    if !(100..=999).contains(&code) {
        bail!("status code {code} is not within 100..=999");
    }
    Ok((code, parse_probability(rate)?))
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    humantime::parse_duration(s.trim())
        .with_context(|| format!("{s:?} is not a duration (e.g. 10s)"))
}

fn parse_phase(s: &str) -> anyhow::Result<PhaseSpec> {
    let Some((range, specs)) = s.split_once(':') else {
        bail!("expected FROM..UNTIL:SPECS, e.g. 10s..20s:503=1.0, got {s:?}");
    };
    let Some((from, until)) = range.split_once("..") else {
        bail!("expected a range FROM..UNTIL, got {range:?}");
    };
    let from = parse_duration(from)?;
    let until = if until.trim().is_empty() {
        Duration::MAX
    } else {
        parse_duration(until)?
    };
    if until <= from {
        bail!("phase {range:?} is empty");
    }
    let mut phase = PhaseSpec {
        from,
        until,
        status_rates: None,
        hang_rate: None,
        context_length_rate: None,
        latency: None,
    };
    for spec in specs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match spec.split_once('=') {
            None if spec == "ok" => {
                phase.status_rates = Some(Vec::new());
                phase.hang_rate = Some(0.0);
                phase.context_length_rate = Some(0.0);
            }
            Some(("hang", p)) => phase.hang_rate = Some(parse_probability(p)?),
            Some(("context_length", p)) => {
                phase.context_length_rate = Some(parse_probability(p)?);
            }
            Some(("latency", d)) => phase.latency = Some(parse_duration(d)?),
            Some(_) => phase
                .status_rates
                .get_or_insert_with(Vec::new)
                .push(parse_status_rate(spec)?),
            None => {
                bail!("unknown phase spec {spec:?} (expected CODE=P, hang=P, context_length=P, latency=DUR or ok)")
            }
        }
    }
    Ok(phase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<SimArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).map(|c| c.sim)
    }

    #[test]
    fn defaults() {
        let args = parse(&[]).unwrap();
        let config = args.config();
        assert_eq!(args.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(config.models, SimConfig::default().models);
        assert_eq!(config.seed, 1);
        assert_eq!(config.name, "sim");
        assert!(config.timeline.is_empty());
        assert!(config.behavior.status_rates.is_empty());
        assert_eq!(config.behavior.context_length_rate, 0.0);
        assert_eq!(config.accepted_keys, None);
    }

    #[test]
    fn context_length_and_accepted_keys() {
        let args = parse(&[
            "--context-length-rate",
            "0.25",
            "--accepted-keys",
            "k1,k2",
            "--phase",
            "10s..20s:context_length=1.0",
            "--phase",
            "20s..:ok",
        ])
        .unwrap();
        let config = args.config();
        assert_eq!(config.behavior.context_length_rate, 0.25);
        assert_eq!(
            config.accepted_keys,
            Some(vec!["k1".to_owned(), "k2".to_owned()])
        );
        let [p1, p2] = &config.timeline[..] else {
            panic!("expected two phases");
        };
        assert_eq!(p1.behavior.context_length_rate, 1.0);
        assert_eq!(p2.behavior.context_length_rate, 0.0);
        assert!(parse(&["--context-length-rate", "2"]).is_err());
        assert!(parse(&["--phase", "0s..1s:context_length=x"]).is_err());
    }

    #[test]
    fn flags_and_phases() {
        let args = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--models",
            "a,b",
            "--error-rate",
            "503=0.1",
            "--error-rate",
            "429=0.2",
            "--retry-after",
            "2s",
            "--latency",
            "20ms",
            "--drop-after",
            "3",
            "--phase",
            "10s..20s:500=1.0",
            "--phase",
            "20s..:hang=1.0",
            "--phase",
            "1m..2m:ok,latency=1s",
        ])
        .unwrap();
        let config = args.config();
        assert_eq!(config.models, ["a", "b"]);
        assert_eq!(config.behavior.status_rates, [(503, 0.1), (429, 0.2)]);
        assert_eq!(config.behavior.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(config.behavior.latency.base, Duration::from_millis(20));
        assert_eq!(config.behavior.drop_after, Some((3, 1.0)));
        let [p1, p2, p3] = &config.timeline[..] else {
            panic!("expected three phases");
        };
        assert_eq!(
            (p1.from, p1.until),
            (Duration::from_secs(10), Duration::from_secs(20))
        );
        assert_eq!(p1.behavior.status_rates, [(500, 1.0)]);
        assert_eq!(p1.behavior.latency.base, Duration::from_millis(20));
        assert_eq!(p2.until, Duration::MAX);
        assert_eq!(p2.behavior.hang_rate, 1.0);
        assert_eq!(p2.behavior.status_rates, [(503, 0.1), (429, 0.2)]);
        assert!(p3.behavior.status_rates.is_empty());
        assert_eq!(p3.behavior.latency.base, Duration::from_secs(1));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(parse(&["--error-rate", "503"]).is_err());
        assert!(parse(&["--error-rate", "503=1.5"]).is_err());
        assert!(parse(&["--error-rate", "abc=0.5"]).is_err());
        assert!(parse(&["--hang-rate", "NaN"]).is_err());
        assert!(parse(&["--phase", "20s..10s:503=1"]).is_err());
        assert!(parse(&["--phase", "0s..10s:bogus"]).is_err());
        assert!(parse(&["--phase", "10s:503=1"]).is_err());
    }
}
