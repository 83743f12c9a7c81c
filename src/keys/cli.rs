//! `switchyard keys …`: manage virtual keys in the store the config names.
//! Parses flags into the shared management operations and prints their
//! results; `create` and `rotate` print the new secret once, everything
//! else prints prefixes only.

use super::{
    Expiry, Issued, KeyBudget, KeyLimits, KeySettings, KeyView, Keys, LimitsUpdate, NewKey, Update,
};
use crate::config::Config;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct KeysArgs {
    /// Path to the TOML config; its `[store] url` is used.
    #[arg(long, short, default_value = "switchyard.toml", global = true)]
    pub config: PathBuf,
    /// JSON output (`list`: one object per line).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; prints its secret once.
    Create(CreateArgs),
    /// Every key with its status, limits and secret prefixes.
    List,
    /// One key in detail.
    Show { name: String },
    /// Issue a new secret; older secrets keep working for `--overlap`.
    Rotate {
        name: String,
        /// How long older secrets keep working, e.g. 24h; 0s ends them now.
        #[arg(long, value_parser = humantime::parse_duration)]
        overlap: Duration,
    },
    /// Revoke a key and all its secrets, at once.
    Revoke { name: String },
    /// Change routes, limits or budgets; `none` removes a limit.
    SetLimits(SetLimitsArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub name: String,
    /// The service this key belongs to.
    #[arg(long)]
    pub service: String,
    /// Routes (public model names) the key may use; default every route.
    #[arg(long, value_delimiter = ',')]
    pub routes: Option<Vec<String>>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[arg(long)]
    pub tpm: Option<u32>,
    /// Requests in flight at once.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// USD per UTC day.
    #[arg(long)]
    pub daily_budget: Option<f64>,
    /// USD per UTC month.
    #[arg(long)]
    pub monthly_budget: Option<f64>,
    /// Expiry date (2027-01-01, midnight UTC) or RFC 3339 UTC time.
    #[arg(long, conflicts_with = "expires_in", value_parser = parse_expires)]
    pub expires: Option<i64>,
    /// Expiry as a duration from now, e.g. 90d.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires_in: Option<Duration>,
    /// Never serve this key from a degraded fallback.
    #[arg(long)]
    pub no_degraded: bool,
    /// A JSON object kept with the key.
    #[arg(long, value_parser = parse_metadata)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Args, Debug)]
pub struct SetLimitsArgs {
    pub name: String,
    /// Requests per minute, or `none`.
    #[arg(long, value_parser = parse_limit)]
    pub rpm: Option<Update<u32>>,
    /// Tokens per minute, or `none`.
    #[arg(long, value_parser = parse_limit)]
    pub tpm: Option<Update<u32>>,
    /// Requests in flight at once, or `none`.
    #[arg(long, value_parser = parse_limit)]
    pub concurrency: Option<Update<u32>>,
    /// USD per UTC day, or `none`.
    #[arg(long, value_parser = parse_usd)]
    pub daily_budget: Option<Update<f64>>,
    /// USD per UTC month, or `none`.
    #[arg(long, value_parser = parse_usd)]
    pub monthly_budget: Option<Update<f64>>,
    /// Only these routes from now on.
    #[arg(long, value_delimiter = ',', conflicts_with = "all_routes")]
    pub routes: Option<Vec<String>>,
    /// Every route from now on.
    #[arg(long)]
    pub all_routes: bool,
    /// Allow (true) or forbid (false) degraded fallbacks.
    #[arg(long)]
    pub allow_degraded: Option<bool>,
}

fn parse_expires(text: &str) -> Result<i64, String> {
    super::parse_date(text)
        .ok_or_else(|| format!("\"{text}\" is not a date (2027-01-01) or RFC 3339 UTC time"))
}

fn parse_metadata(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))
}

fn parse_limit(text: &str) -> Result<Update<u32>, String> {
    if text == "none" {
        return Ok(Update::Remove);
    }
    text.parse()
        .map(Update::Set)
        .map_err(|_| format!("\"{text}\" is not a positive integer or `none`"))
}

fn parse_usd(text: &str) -> Result<Update<f64>, String> {
    if text == "none" {
        return Ok(Update::Remove);
    }
    text.parse()
        .map(Update::Set)
        .map_err(|_| format!("\"{text}\" is not an amount of USD or `none`"))
}

pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)
        .map_err(|e| anyhow::anyhow!("invalid config {}:\n{e}", args.config.display()))?;
    let store = crate::store::Store::connect(&config.store_url.0, config.store_timeout).await?;
    let keys = Keys::open(store, KeySettings::from_config(&config)).await?;
    let json = args.json;
    match args.command {
        KeysCommand::Create(c) => {
            let new = NewKey {
                allowed_routes: c.routes,
                expires: c
                    .expires
                    .map(Expiry::At)
                    .or(c.expires_in.map(Expiry::After)),
                limits: KeyLimits {
                    requests_per_minute: c.rpm,
                    tokens_per_minute: c.tpm,
                    max_concurrent: c.concurrency,
                },
                budget: KeyBudget {
                    daily_usd: c.daily_budget,
                    monthly_usd: c.monthly_budget,
                },
                allow_degraded: !c.no_degraded,
                metadata: c.metadata.unwrap_or_default(),
                ..NewKey::new(c.name, c.service)
            };
            print_issued(&keys.create(new).await?, json, "created");
        }
        KeysCommand::List => {
            let all = keys.list().await?;
            if json {
                for key in &all {
                    println!("{}", serde_json::to_string(key)?);
                }
            } else {
                print_table(&all);
            }
        }
        KeysCommand::Show { name } => print_key(&keys.show(&name).await?, json),
        KeysCommand::Rotate { name, overlap } => {
            print_issued(&keys.rotate(&name, overlap).await?, json, "rotated");
        }
        KeysCommand::Revoke { name } => print_key(&keys.revoke(&name).await?, json),
        KeysCommand::SetLimits(s) => {
            let update = LimitsUpdate {
                allowed_routes: match (s.routes, s.all_routes) {
                    (Some(routes), _) => Update::Set(routes),
                    (None, true) => Update::Remove,
                    (None, false) => Update::Keep,
                },
                requests_per_minute: s.rpm.unwrap_or_default(),
                tokens_per_minute: s.tpm.unwrap_or_default(),
                max_concurrent: s.concurrency.unwrap_or_default(),
                daily_budget_usd: s.daily_budget.unwrap_or_default(),
                monthly_budget_usd: s.monthly_budget.unwrap_or_default(),
                allow_degraded: s.allow_degraded,
            };
            print_key(&keys.update_limits(&s.name, update).await?, json);
        }
    }
    Ok(())
}

fn print_issued(issued: &Issued, json: bool, verb: &str) {
    if json {
        println!("{}", serde_json::to_string(issued).unwrap_or_default());
        return;
    }
    println!("{verb} key \"{}\"", issued.key.name);
    println!();
    println!("secret (shown only now; it cannot be retrieved later, store it safely):");
    println!();
    println!("    {}", issued.secret.expose());
    println!();
    print_key(&issued.key, false);
}

fn or_none<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn usd(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("${v:.2}"))
}

fn routes(key: &KeyView) -> String {
    key.routes
        .as_ref()
        .map_or_else(|| "all".to_owned(), |r| r.join(","))
}

fn status(key: &KeyView) -> String {
    serde_json::to_value(key.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn print_key(key: &KeyView, json: bool) {
    if json {
        println!("{}", serde_json::to_string(key).unwrap_or_default());
        return;
    }
    println!("name:            {}", key.name);
    println!("service:         {}", key.service);
    println!("status:          {}", status(key));
    println!("routes:          {}", routes(key));
    println!(
        "limits:          rpm {}  tpm {}  concurrency {}",
        or_none(key.requests_per_minute),
        or_none(key.tokens_per_minute),
        or_none(key.max_concurrent)
    );
    println!(
        "budget:          daily {}  monthly {}",
        usd(key.daily_budget_usd),
        usd(key.monthly_budget_usd)
    );
    println!(
        "spend:           today ${:.4} ({} requests)  this month ${:.4} ({} requests)",
        key.spend.today_usd,
        key.spend.today_requests,
        key.spend.month_usd,
        key.spend.month_requests
    );
    println!("allow degraded:  {}", key.allow_degraded);
    println!("created:         {}", key.created_at);
    println!(
        "expires:         {}",
        key.expires_at.as_deref().unwrap_or("never")
    );
    if let Some(at) = &key.revoked_at {
        println!("revoked:         {at}");
    }
    if !key.metadata.is_empty() {
        println!(
            "metadata:        {}",
            serde_json::Value::Object(key.metadata.clone())
        );
    }
    for s in &key.secrets {
        println!(
            "secret:          {}…  created {}  {}",
            s.prefix,
            s.created_at,
            match (&s.expires_at, s.active) {
                (_, false) => "inactive".to_owned(),
                (Some(at), true) => format!("expires {at}"),
                (None, true) => "active".to_owned(),
            }
        );
    }
}

fn print_table(keys: &[KeyView]) {
    println!(
        "{:<24} {:<16} {:<8} {:<20} {:>7} {:>9} {:>5} {:>10} {:>10}  SECRETS",
        "NAME", "SERVICE", "STATUS", "ROUTES", "RPM", "TPM", "CONC", "DAILY", "MONTHLY"
    );
    for key in keys {
        let secrets: Vec<String> = key
            .secrets
            .iter()
            .filter(|s| s.active)
            .map(|s| match &s.expires_at {
                Some(at) => format!("{}… (until {at})", s.prefix),
                None => format!("{}…", s.prefix),
            })
            .collect();
        println!(
            "{:<24} {:<16} {:<8} {:<20} {:>7} {:>9} {:>5} {:>10} {:>10}  {}",
            key.name,
            key.service,
            status(key),
            routes(key),
            or_none(key.requests_per_minute),
            or_none(key.tokens_per_minute),
            or_none(key.max_concurrent),
            usd(key.daily_budget_usd),
            usd(key.monthly_budget_usd),
            if secrets.is_empty() {
                "-".to_owned()
            } else {
                secrets.join(", ")
            }
        );
    }
}
