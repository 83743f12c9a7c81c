//! Configuration: the raw file shape (`raw`) and the validated, typed config
//! the rest of the gateway uses. Validation happens once, at load; every
//! problem is reported with its key path and, where it helps, a hint.
//! This module reads files and environment variables; it never opens a socket.

pub mod prices;
pub mod raw;
mod restart;

use crate::resilience::breaker::BreakerPolicy;
use crate::resilience::{Backoff, Jitter};
use crate::telemetry::slo::{Severity, SloPolicy};
use bytes::Bytes;
use http::{HeaderValue, Uri};
use raw::{RawBreaker, RawBudget, RawConfig, RawRetry, RawSize, RawTimeouts};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub alerts: AlertSettings,
    /// Where persistent data lives (the request log today).
    pub store_url: StoreUrl,
    /// Bound on every store call (`[store] timeout`).
    pub store_timeout: Duration,
    /// `Some(retention)` when the request log is on.
    pub request_log: Option<Duration>,
    /// `Some(retention)` when Responses API answers are kept (`[responses]`).
    pub responses_store: Option<Duration>,
    /// Where per-key rate limits are kept (`[limits]`).
    pub limits: LimitSettings,
    pub admin: AdminSettings,
    pub keys: VirtualKeySettings,
    /// The gateway-wide retry budget (from `[defaults.budget]`).
    pub global_budget: BudgetPolicy,
    pub providers: BTreeMap<String, Arc<Provider>>,
    routes: HashMap<String, Arc<Route>>,
    /// Public model names, sorted, for `/v1/models` and error messages.
    route_names: Vec<String>,
}

/// A database URL; it may carry a password, so `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(pub String);

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.0.split(':').next().unwrap_or("?");
        write!(f, "StoreUrl({scheme}:<redacted>)")
    }
}

/// Where per-key rate limits are kept: in this process only, or in Redis
/// (shared by every replica) when `redis_url` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    pub redis_url: Option<RedisUrl>,
    /// Starts every Redis key, so several gateways (or tests) can share one Redis.
    pub key_prefix: String,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            redis_url: None,
            key_prefix: "switchyard".to_owned(),
        }
    }
}

/// A Redis URL; it may carry a password, so `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.0.split(':').next().unwrap_or("?");
        write!(f, "RedisUrl({scheme}:<redacted>)")
    }
}

/// The admin API (`/admin/keys`): off unless `[admin] key_env` names a set
/// environment variable.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    pub key: Option<AdminKey>,
    /// A separate listener for the admin API; `None`: the main one.
    pub listen: Option<SocketAddr>,
    /// `/metrics` without the admin key even when one is set.
    pub metrics_public: bool,
}

/// The admin API credential. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey(String);

impl AdminKey {
    /// The key itself, for the (constant-time) comparison only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminKey(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualKeySettings {
    /// How long an authenticated key is trusted from memory.
    pub cache_ttl: Duration,
    /// Invalid keys one client address may present per minute before it
    /// is throttled (429, no store lookups); 0 turns the limit off.
    pub failed_auth_per_minute: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertSettings {
    pub webhooks: Vec<Uri>,
    pub evaluate_every: Duration,
    pub cost_regression_ratio: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_request_body: usize,
    pub max_response_body: usize,
    pub drain_timeout: Duration,
    /// After the first SIGTERM/SIGINT: `/readyz` is 503 while serving goes
    /// on for this long, then accepting stops and the drain begins.
    pub drain_delay: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// A client connection whose writes make no progress this long is
    /// closed (restart-only: the accept loop reads it at start).
    pub write_timeout: Duration,
    /// `SO_SNDBUF` of each client socket (restart-only).
    pub send_buffer: usize,
    /// Largest request head accepted (HTTP/1 and HTTP/2); larger gets 431.
    pub max_header_bytes: usize,
    /// Client connections served at once (HTTP/1 or HTTP/2); one more is
    /// answered 503 `overloaded` and closed.
    pub max_connections: u32,
    pub region: Option<String>,
    pub watch_config: bool,
    pub public_status: bool,
    pub auth: AuthMode,
}

/// Who may call the gateway's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A virtual key (`Authorization: Bearer` or `x-api-key`) per request.
    Keys,
    /// No authentication: only for demos and trusted networks.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Any OpenAI-compatible API (OpenAI, Groq, Together, vLLM, Ollama, ...).
    OpenAi,
    /// Azure OpenAI: deployment URLs, `api-version`, `api-key` header.
    AzureOpenAi,
    /// Anthropic's Messages API, translated.
    Anthropic,
    /// Google Gemini's generateContent API, translated.
    Gemini,
}

impl ProviderKind {
    pub const KNOWN: &'static str = "openai, azure_openai, anthropic, gemini";

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::AzureOpenAi => "azure_openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
        }
    }

    /// The header an API key travels in.
    pub fn auth_header(self) -> http::HeaderName {
        match self {
            ProviderKind::OpenAi => http::header::AUTHORIZATION,
            ProviderKind::AzureOpenAi => http::HeaderName::from_static("api-key"),
            ProviderKind::Anthropic => http::HeaderName::from_static("x-api-key"),
            ProviderKind::Gemini => http::HeaderName::from_static("x-goog-api-key"),
        }
    }
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub region: String,
    /// `azure_openai`: `api-version`; `anthropic`: `anthropic-version`.
    pub api_version: Option<HeaderValue>,
    /// `anthropic`: `max_tokens` when the client sent none.
    pub default_max_tokens: u32,
    /// Empty for a keyless upstream; several form a pool used in turn.
    pub keys: Vec<Arc<PoolKey>>,
    /// Whether `/v1/responses` is passed through natively (else translated
    /// to Chat Completions).
    pub responses_native: bool,
}

/// One upstream credential of a provider.
#[derive(Debug)]
pub struct PoolKey {
    /// From the config (`api_key_env`'s variable name for a single key).
    pub name: String,
    pub value: ApiKey,
    pub weight: u32,
}

/// An upstream credential, ready to send. Its `Debug` never shows the value
/// and the header value is marked sensitive so HTTP/2 never indexes it.
#[derive(Clone)]
pub struct ApiKey(HeaderValue);

impl ApiKey {
    fn for_kind(kind: ProviderKind, secret: &str) -> Result<Self, String> {
        let text = match kind {
            ProviderKind::OpenAi => format!("Bearer {secret}"),
            _ => secret.to_owned(),
        };
        let mut value = HeaderValue::try_from(text)
            .map_err(|_| "the key contains characters not allowed in a header".to_owned())?;
        value.set_sensitive(true);
        Ok(ApiKey(value))
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The credential itself (without `Bearer `), to mask it wherever
    /// upstream text echoes it.
    pub fn secret_bytes(&self) -> &[u8] {
        let bytes = self.0.as_bytes();
        bytes.strip_prefix(b"Bearer ").unwrap_or(bytes)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub targets: Vec<Target>,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
    pub breaker: BreakerPolicy,
    pub budget: BudgetPolicy,
    pub strategy: Strategy,
    pub hedge: Option<Hedge>,
    pub slo: Option<SloPolicy>,
    /// Request log rows of this route carry the request and response bodies.
    pub log_content: bool,
    /// Responses from a target this close to its `deprecated_after` carry
    /// `x-switchyard-deprecation`.
    pub deprecation_warning: Duration,
    /// A context-length error moves on to targets with a larger window.
    pub context_fallback: bool,
    /// A stream cut after its first content is continued on another target.
    pub resume: bool,
    /// SLO-driven degradation (`degrade_on`, `degrade_share`).
    pub slo_degrade: Option<SloDegrade>,
}

/// While the route's burn-rate alert of severity `on` fires (for `Ticket`:
/// ticket or page), `share` of its requests try degraded targets first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SloDegrade {
    pub on: Severity,
    pub share: f64,
}

/// How targets of one priority tier share load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Smooth weighted round robin (nginx's algorithm).
    Weighted,
    /// Fewest requests in flight first.
    LeastInflight,
    /// Peak-EWMA latency with power-of-two-choices, as linkerd does.
    Latency,
}

/// When to start a parallel attempt at the next target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Hedge {
    After(Duration),
    /// A quantile (0..1) of the first target's recent first-byte latency.
    Percentile(f64),
}

/// Retries may add at most `retry_ratio` of recent first attempts, plus
/// `min_per_sec`, counted over `ttl` (tower's `TpsBudget`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetPolicy {
    pub retry_ratio: f32,
    pub min_per_sec: u32,
    pub ttl: Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            retry_ratio: 0.2,
            min_per_sec: 5,
            ttl: Duration::from_secs(10),
        }
    }
}

#[derive(Debug)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub model: String,
    /// The model name as a JSON string literal, spliced into request bodies.
    pub model_json: Bytes,
    /// `provider/model`: names the target in headers, logs and errors.
    pub label: HeaderValue,
    /// Lower is preferred; ties form a tier that shares load.
    pub priority: u32,
    pub weight: u32,
    /// For cost accounting; `None` when neither the config nor the shipped
    /// defaults know the model. At `service_tier`'s price when `[prices]`
    /// names one for it.
    pub price: Option<Price>,
    /// The price when a request was served at `tier_fallback`.
    pub fallback_price: Option<Price>,
    /// The key this target sends (`None` for a keyless upstream). A provider
    /// with a pool of keys yields one target per key, each its own breaker
    /// subject, so one key's 429s or revocation never stop the others.
    pub key: Option<Arc<PoolKey>>,
    /// Whether `key` is one of several: pooled keys cool down on 429 and are
    /// disabled on 401/403 individually.
    pub pooled: bool,
    /// Index of the configured target this one came from; targets sharing it
    /// are keys of one pool.
    pub group: usize,
    pub chat_url: Uri,
    /// Gemini streams from a different URL; everyone else uses `chat_url`.
    pub stream_url: Uri,
    /// The other OpenAI endpoints (embeddings, responses, …) where the
    /// provider offers them.
    pub endpoint_urls: crate::api::EndpointUrls,
    /// A cheaper or faster fallback: served only if the client allows it.
    pub degraded: bool,
    pub deprecated_after: Option<Deprecation>,
    pub context_window: Option<u32>,
    /// How this target can continue an answer another target started.
    pub continuation: Continuation,
    /// The provider service tier the gateway sets on every request to this
    /// target (the operator's choice wins over the client's).
    pub service_tier: Option<Box<str>>,
    /// The tier this target is retried at, at once, when it refuses
    /// `service_tier` (see `routing::tier`).
    pub tier_fallback: Option<Box<str>>,
    /// A first-byte timeout at `service_tier`, shorter than the route's,
    /// that counts as a tier refusal (`tier_first_byte`).
    pub tier_first_byte: Option<Duration>,
}

/// How a target can be asked to continue a partial answer (a stream cut
/// mid-answer elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation {
    /// The partial answer is the last (assistant) message and the model
    /// continues it: Anthropic natively, vLLM-style servers with
    /// `continue_final_message`.
    Prefill,
    /// The partial answer as an assistant message, then a user message
    /// asking to continue it verbatim; the gateway removes any overlap.
    Instruct,
    /// Never asked to continue.
    None,
}

impl Continuation {
    /// Each provider kind's default. Gemini gets `Instruct`: its API does
    /// not document continuing a trailing `model` turn.
    pub fn default_for(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Anthropic => Continuation::Prefill,
            ProviderKind::OpenAi | ProviderKind::AzureOpenAi | ProviderKind::Gemini => {
                Continuation::Instruct
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Continuation::Prefill => "prefill",
            Continuation::Instruct => "instruct",
            Continuation::None => "none",
        }
    }
}

/// The last day a target may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    /// Days since 1970-01-01 (UTC) of the last allowed day.
    pub last_day: i64,
    /// As configured, `YYYY-MM-DD`.
    pub date: String,
}

impl Deprecation {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Deprecation> {
        let mut parts = text.splitn(3, '-');
        let y: i64 = parts.next()?.parse().ok()?;
        let m: u32 = parts.next()?.parse().ok()?;
        let d: u32 = parts.next()?.parse().ok()?;
        let days_in_month = match m {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            _ => return None,
        };
        if text.len() != 10 || !(1..=days_in_month).contains(&d) {
            return None;
        }
        Some(Deprecation {
            last_day: days_from_civil(y, m, d),
            date: text.to_owned(),
        })
    }

    /// Past its last day at `now`.
    pub fn expired(&self, now: std::time::SystemTime) -> bool {
        unix_day(now) > self.last_day
    }

    /// Within `window` of its last day (and not yet past it).
    pub fn warning(&self, now: std::time::SystemTime, window: Duration) -> bool {
        let today = unix_day(now);
        today <= self.last_day && self.last_day - today < (window.as_secs() / 86_400) as i64
    }
}

fn unix_day(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

/// Howard Hinnant's `days_from_civil`: days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Price {
    pub const fn new(input_per_million: f64, output_per_million: f64) -> Self {
        Price {
            input_per_million,
            output_per_million,
        }
    }

    pub fn cost(&self, usage: crate::api::Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.input_per_million
            + usage.completion_tokens as f64 * self.output_per_million)
            / 1e6
    }
}

impl Target {
    pub fn label(&self) -> &str {
        // Built from a `String` in `validate`, so always valid UTF-8.
        self.label.to_str().unwrap_or("?")
    }

    pub fn region(&self) -> &str {
        &self.provider.region
    }

    /// What identifies this target's health across reloads: provider, model
    /// and region (a provider moved to another region is another target).
    pub fn health_key(&self) -> String {
        match (&self.key, self.pooled) {
            (Some(key), true) => {
                format!("{}@{}#{}", self.label(), self.provider.region, key.name)
            }
            _ => format!("{}@{}", self.label(), self.provider.region),
        }
    }

    /// Another key of the same pool as `other`.
    pub fn is_sibling_of(&self, other: &Target) -> bool {
        self.pooled && self.group == other.group
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts_per_target: u32,
    pub backoff: Backoff,
    /// Longest upstream `Retry-After` worth waiting for; longer means fail over.
    pub max_retry_after: Duration,
    pub on_timeout: OnTimeout,
}

/// What follows an attempt that timed out (no first byte or first content in
/// time, or a body that went silent): the upstream may be hung, or may be
/// running the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Fail over at once: a hung upstream seldom answers a second time, and
    /// each retry costs the client another `first_byte`.
    NextTarget,
    /// Retry the same target with backoff first (a single-target route, or
    /// an upstream known to stall only now and then).
    SameTarget,
    /// Never resend: the upstream may already be doing (and billing) the work.
    Stop,
}

impl std::str::FromStr for OnTimeout {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "next_target" => Ok(OnTimeout::NextTarget),
            "same_target" => Ok(OnTimeout::SameTarget),
            "stop" => Ok(OnTimeout::Stop),
            other => Err(format!(
                "unknown value {other:?}: expected next_target, same_target or stop"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Stream: until the first content event. Non-stream: until the response head.
    pub first_byte: Duration,
    /// Longest silence between two body chunks.
    pub idle: Duration,
    /// Whole request, across every attempt, including a stream's body.
    pub total: Duration,
}

impl Config {
    pub fn route(&self, public_model: &str) -> Option<&Arc<Route>> {
        self.routes.get(public_model)
    }

    pub fn route_names(&self) -> &[String] {
        &self.route_names
    }

    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.route_names.iter().filter_map(|n| self.routes.get(n))
    }

    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(
                path.display().to_string(),
                format!("cannot read config file: {e}"),
                None,
            )
        })?;
        Config::from_toml(&text, |name| std::env::var(name).ok())
    }

    /// Parses and validates; `env` resolves `api_key_env` names (injected so
    /// tests need not touch the process environment).
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let path = e
                .span()
                .map(|s| format!("line {}", line_of(text, s.start)))
                .unwrap_or_else(|| "config".to_owned());
            // toml reports a control character in a comment with an empty
            // message (found by fuzzing): name the character instead.
            let message = match e.message() {
                "" => e
                    .span()
                    .and_then(|s| text.get(s.start..)?.chars().next())
                    .map_or_else(
                        || "invalid TOML".to_owned(),
                        |c| format!("unexpected character {c:?}"),
                    ),
                m => m.to_owned(),
            };
            ConfigErrors::one(path, message, None)
        })?;
        validate(raw, &env)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Every problem found, not just the first, so one edit fixes them all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl ConfigErrors {
    fn one(path: String, message: String, hint: Option<String>) -> Self {
        ConfigErrors(vec![ConfigIssue {
            path,
            message,
            hint,
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// Problems collected while validating (also used by `drill::scenario`).
#[derive(Default)]
pub(crate) struct Issues(pub(crate) Vec<ConfigIssue>);

impl Issues {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
            hint: None,
        });
    }

    pub(crate) fn hint(
        &mut self,
        path: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.0.push(ConfigIssue {
            path: path.into(),
            message: message.into(),
            hint: Some(hint.into()),
        });
    }

    fn duration(&mut self, path: String, value: Option<&String>, default: Duration) -> Duration {
        self.duration_within(path, value, default, MAX_DURATION)
    }

    /// A duration of at most `max`; longer, or unreadable, is an issue at `path`.
    fn duration_within(
        &mut self,
        path: String,
        value: Option<&String>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(text) = value else { return default };
        match parse_duration(text, max) {
            Ok(d) => d,
            Err(DurationError::Invalid(e)) => {
                self.hint(
                    path,
                    format!("invalid duration \"{text}\": {e}"),
                    "write e.g. \"250ms\", \"5s\" or \"2m\"",
                );
                default
            }
            Err(DurationError::TooLong) => {
                self.hint(
                    path,
                    format!(
                        "\"{text}\" is longer than the maximum of {} days",
                        max.as_secs() / 86_400
                    ),
                    "durations are capped so that no deadline computed from them can overflow",
                );
                default
            }
        }
    }

    /// A retention period: positive, at most [`MAX_RETENTION`].
    fn retention(&mut self, path: &str, value: Option<&String>, default: Duration) -> Duration {
        let d = self.duration_within(path.to_owned(), value, default, MAX_RETENTION);
        if d.is_zero() {
            self.push(path, "must be greater than zero");
            return default;
        }
        d
    }

    fn positive_duration(
        &mut self,
        path: String,
        value: Option<&String>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(path.clone(), value, default);
        if d.is_zero() {
            self.push(path, "must be greater than zero");
            return default;
        }
        d
    }

    fn size(&mut self, path: &str, value: Option<&RawSize>, default: usize) -> usize {
        match value {
            None => default,
            Some(RawSize::Bytes(n)) if *n > 0 => usize::try_from(*n).unwrap_or(usize::MAX),
            Some(RawSize::Bytes(_)) => {
                self.push(path, "must be greater than zero");
                default
            }
            Some(RawSize::Text(text)) => match parse_size(text) {
                Some(n) if n > 0 => n,
                _ => {
                    self.hint(
                        path,
                        format!("invalid size \"{text}\""),
                        "write bytes as an integer or e.g. \"512KiB\", \"4MiB\"",
                    );
                    default
                }
            },
        }
    }
}

/// The longest duration any setting takes (timeouts, windows, TTLs):
/// `Instant::now() + d` and the breaker's growth of `open_base` stay far
/// from overflowing, whatever is configured.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 86_400);

/// Retention periods (`request_log.retention`, `responses.retention`) may
/// be longer: they only ever become a millisecond cut-off in the past.
pub const MAX_RETENTION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why a configured duration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationError {
    Invalid(String),
    TooLong,
}

/// Parses a humantime duration (`"250ms"`, `"5s"`, `"2m"`) of at most `max`.
pub(crate) fn parse_duration(text: &str, max: Duration) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| DurationError::Invalid(e.to_string()))?;
    if d > max {
        return Err(DurationError::TooLong);
    }
    Ok(d)
}

/// Each client connection may need an upstream one too: 10 000 of each
/// stays within a 32 768 open-file limit with room for the rest.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;

/// `server.max_header_bytes`: 1 KiB to 1 MiB, default 32 KiB.
fn send_buffer(issues: &mut Issues, raw: Option<&RawSize>) -> usize {
    const DEFAULT: usize = 256 << 10;
    let n = issues.size("server.send_buffer", raw, DEFAULT);
    if (16 << 10..=16 << 20).contains(&n) {
        return n;
    }
    issues.hint(
        "server.send_buffer",
        format!("{n} bytes is outside 16KiB..=16MiB"),
        "the default 256KiB streams at full speed to clients in the same region",
    );
    DEFAULT
}

fn max_header_bytes(issues: &mut Issues, raw: Option<&RawSize>) -> usize {
    const DEFAULT: usize = 32 << 10;
    let n = issues.size("server.max_header_bytes", raw, DEFAULT);
    if (1 << 10..=1 << 20).contains(&n) {
        return n;
    }
    issues.hint(
        "server.max_header_bytes",
        format!("{n} bytes is outside 1KiB..=1MiB"),
        "the default 32KiB fits every SDK's headers",
    );
    DEFAULT
}

fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(factor)
}

const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    max_attempts_per_target: 2,
    backoff: Backoff::DEFAULT,
    max_retry_after: Duration::from_secs(5),
    on_timeout: OnTimeout::NextTarget,
};

fn resolve_retry(
    issues: &mut Issues,
    path: &str,
    raw: &RawRetry,
    base: Option<&RetryPolicy>,
) -> RetryPolicy {
    let inherited = base.unwrap_or(&DEFAULT_RETRY);
    let inherited_attempts = inherited.max_attempts_per_target;
    let attempts = match raw.max_attempts_per_target {
        Some(0) => {
            issues.hint(
                format!("{path}.max_attempts_per_target"),
                "must be at least 1",
                "1 means no retry on the same target (failover still happens)",
            );
            inherited_attempts
        }
        Some(n) => n,
        None => inherited_attempts,
    };
    let (inh_base, inh_max, inh_jitter) = (
        inherited.backoff.base(),
        inherited.backoff.max(),
        inherited.backoff.jitter(),
    );
    let base_backoff = issues.positive_duration(
        format!("{path}.base_backoff"),
        raw.base_backoff.as_ref(),
        inh_base,
    );
    let max_backoff = issues.positive_duration(
        format!("{path}.max_backoff"),
        raw.max_backoff.as_ref(),
        inh_max,
    );
    let jitter = match raw.jitter.as_deref().map(str::parse::<Jitter>) {
        None => inh_jitter,
        Some(Ok(j)) => j,
        Some(Err(e)) => {
            issues.push(format!("{path}.jitter"), e);
            inh_jitter
        }
    };
    let backoff = match Backoff::new(base_backoff, max_backoff, jitter) {
        Ok(b) => b,
        Err(e) => {
            issues.push(format!("{path}.max_backoff"), e.to_string());
            inherited.backoff
        }
    };
    let max_retry_after = issues.duration(
        format!("{path}.max_retry_after"),
        raw.max_retry_after.as_ref(),
        inherited.max_retry_after,
    );
    let on_timeout = match raw.on_timeout.as_deref().map(str::parse::<OnTimeout>) {
        None => inherited.on_timeout,
        Some(Ok(o)) => o,
        Some(Err(e)) => {
            issues.push(format!("{path}.on_timeout"), e);
            inherited.on_timeout
        }
    };
    RetryPolicy {
        max_attempts_per_target: attempts,
        backoff,
        max_retry_after,
        on_timeout,
    }
}

const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    first_byte: Duration::from_secs(60),
    idle: Duration::from_secs(30),
    total: Duration::from_secs(300),
};

fn resolve_timeouts(
    issues: &mut Issues,
    path: &str,
    raw: &RawTimeouts,
    base: &Timeouts,
) -> Timeouts {
    let t = Timeouts {
        connect: issues.positive_duration(
            format!("{path}.connect"),
            raw.connect.as_ref(),
            base.connect,
        ),
        first_byte: issues.positive_duration(
            format!("{path}.first_byte"),
            raw.first_byte.as_ref(),
            base.first_byte,
        ),
        idle: issues.positive_duration(format!("{path}.idle"), raw.idle.as_ref(), base.idle),
        total: issues.positive_duration(format!("{path}.total"), raw.total.as_ref(), base.total),
    };
    if t.first_byte > t.total {
        issues.hint(
            format!("{path}.first_byte"),
            format!(
                "first_byte ({:?}) is longer than total ({:?})",
                t.first_byte, t.total
            ),
            "the total deadline would always fire first; lower first_byte or raise total",
        );
    }
    t
}

fn resolve_breaker(
    issues: &mut Issues,
    path: &str,
    raw: &RawBreaker,
    base: &BreakerPolicy,
) -> BreakerPolicy {
    let mut p = *base;
    if let Some(r) = raw.failure_ratio {
        if r > 0.0 && r <= 1.0 {
            p.failure_ratio = r;
        } else {
            issues.hint(
                format!("{path}.failure_ratio"),
                format!("{r} is not in (0, 1]"),
                "e.g. 0.5 trips when half the requests in the window fail",
            );
        }
    }
    if let Some(n) = raw.min_requests {
        p.min_requests = n.max(1);
    }
    p.window = issues.positive_duration(format!("{path}.window"), raw.window.as_ref(), p.window);
    if let Some(n) = raw.consecutive_failures {
        p.consecutive_failures = n;
    }
    p.open_base = issues.positive_duration(
        format!("{path}.open_base"),
        raw.open_base.as_ref(),
        p.open_base,
    );
    if let Some(f) = raw.open_factor {
        if (1.0..=100.0).contains(&f) {
            p.open_factor = f;
        } else {
            issues.hint(
                format!("{path}.open_factor"),
                format!("{f} is not in [1, 100]"),
                "2.0 doubles the open time on each repeated trip",
            );
        }
    }
    p.open_max = issues.positive_duration(
        format!("{path}.open_max"),
        raw.open_max.as_ref(),
        p.open_max,
    );
    if raw.open_max.is_none() && raw.open_base.is_some() {
        // An open_base set past the inherited open_max: the operator asked
        // for long open times and did not think of the cap.
        p.open_max = p.open_max.max(p.open_base);
    }
    if p.open_max < p.open_base {
        issues.push(
            format!("{path}.open_max"),
            format!(
                "open_max ({:?}) is shorter than open_base ({:?})",
                p.open_max, p.open_base
            ),
        );
    }
    for (key, value, field) in [
        (
            "half_open_probes",
            raw.half_open_probes,
            &mut p.half_open_probes,
        ),
        ("close_after", raw.close_after, &mut p.close_after),
    ] {
        match value {
            Some(0) => issues.push(format!("{path}.{key}"), "must be at least 1"),
            Some(n) => *field = n,
            None => {}
        }
    }
    p.slow_start = issues.duration(
        format!("{path}.slow_start"),
        raw.slow_start.as_ref(),
        p.slow_start,
    );
    p
}

fn resolve_budget(
    issues: &mut Issues,
    path: &str,
    raw: &RawBudget,
    base: &BudgetPolicy,
) -> BudgetPolicy {
    let mut b = *base;
    if let Some(r) = raw.retry_ratio {
        if (0.0..=10.0).contains(&r) {
            b.retry_ratio = r as f32;
        } else {
            issues.hint(
                format!("{path}.retry_ratio"),
                format!("{r} is not in [0, 10]"),
                "0.2 lets retries add at most 20% to recent first attempts",
            );
        }
    }
    if let Some(n) = raw.min_per_sec {
        b.min_per_sec = n;
    }
    let ttl = issues.positive_duration(format!("{path}.ttl"), raw.ttl.as_ref(), b.ttl);
    if (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
        b.ttl = ttl;
    } else {
        issues.push(
            format!("{path}.ttl"),
            format!("{ttl:?} is not between 1s and 60s"),
        );
    }
    b
}

fn resolve_slo(issues: &mut Issues, path: &str, raw: &raw::RawSlo) -> Option<SloPolicy> {
    let ratio = |issues: &mut Issues, key: &str, v: Option<f64>| -> Option<f64> {
        let v = v?;
        if v > 0.0 && v < 1.0 {
            Some(v)
        } else {
            issues.hint(
                format!("{path}.{key}"),
                format!("{v} is not in (0, 1)"),
                "e.g. 0.999 for 99.9%",
            );
            None
        }
    };
    let success = ratio(issues, "success", raw.success);
    let latency = match (
        &raw.latency,
        ratio(issues, "latency_target", raw.latency_target),
    ) {
        (Some(text), Some(target)) => match parse_duration(text, MAX_DURATION) {
            Ok(d) if !d.is_zero() => Some((d, target)),
            _ => {
                issues.hint(
                    format!("{path}.latency"),
                    format!("invalid duration \"{text}\""),
                    "e.g. \"2s\"",
                );
                None
            }
        },
        (None, None) => None,
        _ => {
            issues.hint(
                path,
                "latency and latency_target go together",
                "latency = \"2s\" and latency_target = 0.95",
            );
            None
        }
    };
    if success.is_none() && latency.is_none() {
        issues.hint(
            path,
            "an SLO needs `success` and/or `latency` + `latency_target`",
            "success = 0.999",
        );
        return None;
    }
    let period_days = raw.period_days.unwrap_or(30);
    if !(1..=90).contains(&period_days) {
        issues.push(
            format!("{path}.period_days"),
            format!("{period_days} is not between 1 and 90"),
        );
    }
    Some(SloPolicy {
        success,
        latency,
        period_days: period_days.clamp(1, 90),
    })
}

/// A target's `tier_first_byte`: a positive duration, only with both
/// `service_tier` and `tier_fallback` (there must be a tier to fall back to).
fn resolve_tier_first_byte(
    issues: &mut Issues,
    tpath: &str,
    t: &raw::RawTarget,
) -> Option<Duration> {
    let text = t.tier_first_byte.as_ref()?;
    let path = format!("{tpath}.tier_first_byte");
    if t.service_tier.is_none() || t.tier_fallback.is_none() {
        issues.hint(
            path,
            "needs service_tier and tier_fallback",
            "set service_tier = \"flex\" and tier_fallback = \"default\" (the tier asked after the timeout)",
        );
        return None;
    }
    let d = issues.positive_duration(path, Some(text), Duration::ZERO);
    (!d.is_zero()).then_some(d)
}

/// `tier_first_byte` must be shorter than the route's `first_byte`, or it
/// would never fire before the ordinary timeout.
fn check_tier_first_byte(issues: &mut Issues, path: &str, targets: &[Target], timeouts: &Timeouts) {
    let mut seen = std::collections::HashSet::new();
    for t in targets {
        let Some(limit) = t.tier_first_byte else {
            continue;
        };
        if limit >= timeouts.first_byte && seen.insert(t.group) {
            issues.hint(
                format!("{path}.targets[{}].tier_first_byte", t.group),
                format!(
                    "{limit:?} is not shorter than the route's first_byte ({:?})",
                    timeouts.first_byte
                ),
                "a tier first-byte timeout only helps below first_byte, e.g. \"2s\" under \"10s\"",
            );
        }
    }
}

/// `degrade_on` / `degrade_share`: needs the route's `slo` and a
/// `tier = "degraded"` target to switch to.
fn resolve_slo_degrade(
    issues: &mut Issues,
    path: &str,
    raw: &raw::RawRoute,
    has_slo: bool,
    targets: &[Target],
) -> Option<SloDegrade> {
    let Some(text) = raw.degrade_on.as_deref() else {
        if raw.degrade_share.is_some() {
            issues.hint(
                format!("{path}.degrade_share"),
                "degrade_share has no effect without degrade_on",
                "add degrade_on = \"page\" (or \"ticket\"), or remove degrade_share",
            );
        }
        return None;
    };
    let on = match text {
        "page" => Severity::Page,
        "ticket" => Severity::Ticket,
        other => {
            issues.hint(
                format!("{path}.degrade_on"),
                format!("unknown severity \"{other}\" (known: page, ticket)"),
                "\"page\" degrades on the fast burn only, \"ticket\" on either alert",
            );
            return None;
        }
    };
    if !has_slo {
        issues.hint(
            format!("{path}.degrade_on"),
            "degrade_on needs the route's slo (its burn-rate alerts decide the switch)",
            "add slo = { success = 0.999 }",
        );
    }
    if !targets.is_empty() && !targets.iter().any(|t| t.degraded) {
        issues.hint(
            format!("{path}.degrade_on"),
            "degrade_on needs a target with tier = \"degraded\" to switch to",
            "add e.g. { provider = \"...\", model = \"...\", tier = \"degraded\" } to targets",
        );
    }
    let share = raw.degrade_share.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&share) {
        issues.hint(
            format!("{path}.degrade_share"),
            format!("{share} is not between 0.0 and 1.0"),
            "0.5 sends half of the requests degraded-first while the alert fires",
        );
        return None;
    }
    Some(SloDegrade { on, share })
}

fn resolve_hedge(issues: &mut Issues, path: &str, value: Option<&String>) -> Option<Hedge> {
    let text = value?;
    if let Some(q) = text.strip_prefix('p') {
        return match q.parse::<f64>() {
            Ok(q) if q > 0.0 && q < 100.0 => Some(Hedge::Percentile(q / 100.0)),
            _ => {
                issues.hint(
                    path,
                    format!("invalid percentile \"{text}\""),
                    "write e.g. \"p95\" or \"p99.9\"",
                );
                None
            }
        };
    }
    match parse_duration(text, MAX_DURATION) {
        Ok(d) if !d.is_zero() => Some(Hedge::After(d)),
        _ => {
            issues.hint(
                path,
                format!("invalid hedge_after \"{text}\""),
                "a duration (\"300ms\") or a percentile of recent first-byte latency (\"p95\")",
            );
            None
        }
    }
}

fn resolve_admin(
    issues: &mut Issues,
    raw: &raw::RawAdmin,
    env: &impl Fn(&str) -> Option<String>,
) -> AdminSettings {
    let listen = raw.listen.as_deref().and_then(|text| {
        let parsed = text.parse().ok();
        if parsed.is_none() {
            issues.hint(
                "admin.listen",
                format!("invalid address \"{text}\""),
                "write IP:PORT, e.g. \"127.0.0.1:8081\"",
            );
        }
        parsed
    });
    let key = raw.key_env.as_ref().and_then(|var| {
        let secret = env(var).map(|s| s.trim().to_owned()).unwrap_or_default();
        let problem = if secret.is_empty() {
            Some(format!("environment variable \"{var}\" is not set or empty"))
        } else if secret.starts_with(crate::keys::secret::SCHEME) {
            Some(format!(
                "environment variable \"{var}\" holds a virtual key; the admin key must be a separate secret"
            ))
        } else if secret.len() < 16 {
            Some(format!(
                "environment variable \"{var}\" holds fewer than 16 characters"
            ))
        } else {
            None
        };
        match problem {
            Some(message) => {
                issues.hint(
                    "admin.key_env",
                    message,
                    format!("export {var}=\"$(openssl rand -hex 32)\" before starting"),
                );
                None
            }
            None => Some(AdminKey(secret)),
        }
    });
    if listen.is_some() && raw.key_env.is_none() {
        issues.hint(
            "admin.listen",
            "an admin listener without an admin key would refuse every request",
            "set [admin] key_env as well",
        );
    }
    AdminSettings {
        key,
        listen,
        metrics_public: raw.metrics_public.unwrap_or(false),
    }
}

fn validate(raw: RawConfig, env: &impl Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let mut issues = Issues::default();

    let listen = match raw.server.listen.as_deref() {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(text) => text.parse().unwrap_or_else(|_| {
            issues.hint(
                "server.listen",
                format!("invalid address \"{text}\""),
                "write IP:PORT, e.g. \"0.0.0.0:8080\"",
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        }),
    };
    let server = ServerSettings {
        listen,
        max_request_body: issues.size(
            "server.max_request_body",
            raw.server.max_request_body.as_ref(),
            8 << 20,
        ),
        max_response_body: issues.size(
            "server.max_response_body",
            raw.server.max_response_body.as_ref(),
            32 << 20,
        ),
        drain_timeout: issues.duration(
            "server.drain_timeout".into(),
            raw.server.drain_timeout.as_ref(),
            Duration::from_secs(30),
        ),
        drain_delay: issues.duration(
            "server.drain_delay".into(),
            raw.server.drain_delay.as_ref(),
            Duration::ZERO,
        ),
        header_read_timeout: issues.positive_duration(
            "server.header_read_timeout".into(),
            raw.server.header_read_timeout.as_ref(),
            Duration::from_secs(30),
        ),
        body_read_timeout: issues.positive_duration(
            "server.body_read_timeout".into(),
            raw.server.body_read_timeout.as_ref(),
            Duration::from_secs(60),
        ),
        write_timeout: issues.positive_duration(
            "server.write_timeout".into(),
            raw.server.write_timeout.as_ref(),
            Duration::from_secs(30),
        ),
        max_header_bytes: max_header_bytes(&mut issues, raw.server.max_header_bytes.as_ref()),
        send_buffer: send_buffer(&mut issues, raw.server.send_buffer.as_ref()),
        max_connections: match raw.server.max_connections {
            None => DEFAULT_MAX_CONNECTIONS,
            Some(n @ 1..=1_000_000) => n,
            Some(n) => {
                issues.push(
                    "server.max_connections",
                    format!("{n} is outside 1..=1000000"),
                );
                DEFAULT_MAX_CONNECTIONS
            }
        },
        region: env("SWITCHYARD_REGION")
            .filter(|r| !r.is_empty())
            .or_else(|| raw.server.region.clone()),
        watch_config: raw.server.watch_config.unwrap_or(true),
        // Target names (and pooled key names) only for who asks for them.
        public_status: raw.server.public_status.unwrap_or(true),
        auth: match raw.server.auth.as_deref() {
            None | Some("keys") => AuthMode::Keys,
            Some("none") => AuthMode::None,
            Some(other) => {
                issues.hint(
                    "server.auth",
                    format!("unknown auth mode \"{other}\""),
                    "\"keys\" (virtual keys, the default) or \"none\" (no authentication)",
                );
                AuthMode::Keys
            }
        },
    };

    let default_retry = resolve_retry(&mut issues, "defaults.retry", &raw.defaults.retry, None);
    let default_timeouts = resolve_timeouts(
        &mut issues,
        "defaults.timeouts",
        &raw.defaults.timeouts,
        &DEFAULT_TIMEOUTS,
    );
    let default_breaker = resolve_breaker(
        &mut issues,
        "defaults.breaker",
        &raw.defaults.breaker,
        &BreakerPolicy::default(),
    );
    let default_budget = resolve_budget(
        &mut issues,
        "defaults.budget",
        &raw.defaults.budget,
        &BudgetPolicy::default(),
    );

    let mut providers = BTreeMap::new();
    let mut bases: HashMap<String, String> = HashMap::new();
    for (name, p) in &raw.providers {
        let path = format!("providers.{name}");
        let kind = match p.kind.as_str() {
            "openai" => ProviderKind::OpenAi,
            "azure_openai" => ProviderKind::AzureOpenAi,
            "anthropic" => ProviderKind::Anthropic,
            "gemini" => ProviderKind::Gemini,
            other => {
                issues.push(
                    format!("{path}.kind"),
                    format!(
                        "unknown provider kind \"{other}\" (known: {})",
                        ProviderKind::KNOWN
                    ),
                );
                ProviderKind::OpenAi
            }
        };
        let default_base = match kind {
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::OpenAi | ProviderKind::AzureOpenAi => None,
        };
        let Some(base) = p.base_url.as_deref().or(default_base) else {
            issues.hint(
                format!("{path}.base_url"),
                "missing base_url",
                match kind {
                    ProviderKind::AzureOpenAi => {
                        "base_url = \"https://<resource>.openai.azure.com\""
                    }
                    _ => "base_url = \"https://api.openai.com/v1\" (including the API prefix)",
                },
            );
            continue;
        };
        let base = base.trim_end_matches('/');
        let valid_base = base.parse::<Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.query().is_none()
        });
        if !valid_base {
            issues.hint(
                format!("{path}.base_url"),
                format!("invalid URL \"{base}\""),
                "use an http:// or https:// URL including the API prefix, e.g. \"https://api.openai.com/v1\"",
            );
            continue;
        }
        let api_version = match (kind, p.api_version.as_deref()) {
            (ProviderKind::AzureOpenAi, v) => Some(v.unwrap_or("2024-10-21")),
            (ProviderKind::Anthropic, v) => Some(v.unwrap_or("2023-06-01")),
            (_, Some(_)) => {
                issues.push(
                    format!("{path}.api_version"),
                    "only azure_openai and anthropic providers take an api_version",
                );
                None
            }
            (_, None) => None,
        };
        let api_version = api_version.and_then(|v| match HeaderValue::try_from(v) {
            Ok(h)
                if v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
            {
                Some(h)
            }
            _ => {
                issues.push(
                    format!("{path}.api_version"),
                    format!("invalid version \"{v}\""),
                );
                None
            }
        });
        if p.default_max_tokens.is_some() && kind != ProviderKind::Anthropic {
            issues.push(
                format!("{path}.default_max_tokens"),
                "only anthropic providers need a default max_tokens",
            );
        }
        if p.default_max_tokens == Some(0) {
            issues.push(format!("{path}.default_max_tokens"), "must be at least 1");
        }
        let speaks_openai = matches!(kind, ProviderKind::OpenAi | ProviderKind::AzureOpenAi);
        let responses_native = match p.responses.as_deref() {
            None => speaks_openai,
            Some("chat") => false,
            Some("native") if speaks_openai => true,
            Some("native") => {
                issues.hint(
                    format!("{path}.responses"),
                    format!("a {} provider has no Responses API", kind.as_str()),
                    "remove it: requests to /v1/responses are translated to its format",
                );
                false
            }
            Some(other) => {
                issues.hint(
                    format!("{path}.responses"),
                    format!("unknown mode \"{other}\""),
                    "\"native\" (pass the body through) or \"chat\" (translate to Chat Completions)",
                );
                false
            }
        };
        let secret = |issues: &mut Issues, field: String, var: &str| {
            resolve_secret(issues, &env, kind, field, var)
        };
        let mut keys = Vec::new();
        match (&p.api_key_env, &p.keys) {
            (Some(_), Some(_)) => issues.hint(
                format!("{path}.keys"),
                "both api_key_env and keys are set",
                "use api_key_env for one key or keys = [{ name, env }, ...] for a pool",
            ),
            (Some(var), None) => {
                if let Some(value) = secret(&mut issues, format!("{path}.api_key_env"), var) {
                    keys.push(Arc::new(PoolKey {
                        name: var.clone(),
                        value,
                        weight: 1,
                    }));
                }
            }
            (None, Some(pool)) => {
                if pool.is_empty() {
                    issues.hint(
                        format!("{path}.keys"),
                        "an empty key pool",
                        "list at least one { name, env }, or remove keys for a keyless upstream",
                    );
                }
                let mut names = HashSet::new();
                for (i, k) in pool.iter().enumerate() {
                    let kpath = format!("{path}.keys[{i}]");
                    let name_ok = !k.name.is_empty()
                        && k.name.len() <= 64
                        && k.name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                    if !name_ok {
                        issues.hint(
                            format!("{kpath}.name"),
                            format!("invalid key name \"{}\"", k.name),
                            "letters, digits, '-', '_' and '.', at most 64",
                        );
                    } else if !names.insert(k.name.as_str()) {
                        issues.push(
                            format!("{kpath}.name"),
                            format!("duplicate key name \"{}\"", k.name),
                        );
                    }
                    if k.weight == Some(0) {
                        issues.push(format!("{kpath}.weight"), "must be at least 1");
                    }
                    if let Some(value) = secret(&mut issues, format!("{kpath}.env"), &k.env) {
                        keys.push(Arc::new(PoolKey {
                            name: k.name.clone(),
                            value,
                            weight: k.weight.unwrap_or(1).max(1),
                        }));
                    }
                }
            }
            (None, None) => {}
        }
        providers.insert(
            name.clone(),
            Arc::new(Provider {
                name: name.clone(),
                kind,
                region: p.region.clone().unwrap_or_else(|| "default".to_owned()),
                api_version,
                default_max_tokens: p.default_max_tokens.unwrap_or(4096).max(1),
                keys,
                responses_native,
            }),
        );
        bases.insert(name.clone(), base.to_owned());
    }

    for (model, p) in &raw.prices {
        let tiers = p.tiers.iter().flat_map(|(tier, t)| {
            [
                (
                    format!("tiers.{tier}.input_per_million"),
                    t.input_per_million,
                ),
                (
                    format!("tiers.{tier}.output_per_million"),
                    t.output_per_million,
                ),
            ]
        });
        for (key, v) in [
            ("input_per_million".to_owned(), p.input_per_million),
            ("output_per_million".to_owned(), p.output_per_million),
        ]
        .into_iter()
        .chain(tiers)
        {
            if !(v.is_finite() && v >= 0.0) {
                issues.push(
                    format!("prices.\"{model}\".{key}"),
                    format!("{v} is not a price (USD per million tokens, >= 0)"),
                );
            }
        }
    }
    let known_providers = raw.providers.keys().cloned().collect::<Vec<_>>().join(", ");
    let mut routes = HashMap::new();
    if raw.routes.is_empty() {
        issues.hint(
            "routes",
            "no routes defined",
            "add [routes.<public-model-name>] with at least one target",
        );
    }
    for (name, r) in &raw.routes {
        let path = format!("routes.{name}");
        if r.targets.is_empty() {
            issues.hint(
                format!("{path}.targets"),
                "a route needs at least one target",
                "targets = [{ provider = \"...\", model = \"...\" }]",
            );
        }
        let mut targets = Vec::with_capacity(r.targets.len());
        for (i, t) in r.targets.iter().enumerate() {
            let tpath = format!("{path}.targets[{i}]");
            let Some(provider) = providers.get(&t.provider) else {
                if !raw.providers.contains_key(&t.provider) {
                    issues.push(
                        format!("{tpath}.provider"),
                        format!(
                            "unknown provider \"{}\" (known: {known_providers})",
                            t.provider
                        ),
                    );
                }
                continue;
            };
            if t.model.trim().is_empty() {
                issues.push(format!("{tpath}.model"), "model must not be empty");
                continue;
            }
            let label = format!("{}/{}", t.provider, t.model);
            let Ok(label) = HeaderValue::try_from(label) else {
                issues.push(
                    format!("{tpath}.model"),
                    "model name must be printable ASCII",
                );
                continue;
            };
            let model_json = match serde_json::to_vec(&t.model) {
                Ok(v) => Bytes::from(v),
                Err(e) => {
                    issues.push(format!("{tpath}.model"), e.to_string());
                    continue;
                }
            };
            if t.weight == Some(0) {
                issues.hint(
                    format!("{tpath}.weight"),
                    "must be at least 1",
                    "remove the target to stop sending it traffic",
                );
            }
            let raw_price = raw
                .prices
                .get(&format!("{}/{}", t.provider, t.model))
                .or_else(|| raw.prices.get(&t.model));
            let price = raw_price
                .map(|p| Price::new(p.input_per_million, p.output_per_million))
                .or_else(|| {
                    prices::DEFAULTS
                        .iter()
                        .find(|(m, _)| *m == t.model)
                        .map(|(_, p)| *p)
                });
            let degraded = match t.tier.as_deref() {
                None | Some("primary") => false,
                Some("degraded") => true,
                Some(other) => {
                    issues.push(
                        format!("{tpath}.tier"),
                        format!("unknown tier \"{other}\" (known: primary, degraded)"),
                    );
                    false
                }
            };
            let deprecated_after = t.deprecated_after.as_deref().and_then(|d| {
                let parsed = Deprecation::parse(d);
                if parsed.is_none() {
                    issues.hint(
                        format!("{tpath}.deprecated_after"),
                        format!("invalid date \"{d}\""),
                        "a date as YYYY-MM-DD, e.g. \"2026-12-31\"",
                    );
                }
                parsed
            });
            if t.context_window == Some(0) {
                issues.push(
                    format!("{tpath}.context_window"),
                    "must be at least 1 token",
                );
            }
            let continuation = match t.continuation.as_deref() {
                None => Continuation::default_for(provider.kind),
                Some("prefill") => Continuation::Prefill,
                Some("instruct") => Continuation::Instruct,
                Some("none") => Continuation::None,
                Some(other) => {
                    issues.push(
                        format!("{tpath}.continuation"),
                        format!(
                            "unknown continuation \"{other}\" (known: prefill, instruct, none)"
                        ),
                    );
                    Continuation::None
                }
            };
            let (service_tier, tier_fallback) =
                resolve_service_tier(&mut issues, &tpath, provider.kind, t);
            let tier_first_byte = resolve_tier_first_byte(&mut issues, &tpath, t);
            // A tier without its own price costs the model's price.
            let price_at = |tier: Option<&str>| {
                tier.and_then(|tier| raw_price?.tiers.get(tier))
                    .map(|p| Price::new(p.input_per_million, p.output_per_million))
                    .or(price)
            };
            let fallback_price = price_at(tier_fallback.as_deref());
            let price = price_at(service_tier.as_deref());
            let version = provider.api_version.as_ref().and_then(|v| v.to_str().ok());
            let urls = bases.get(&t.provider).and_then(|base| {
                crate::providers::adapter(provider.kind).urls(base, &t.model, version)
            });
            let endpoint_urls = bases.get(&t.provider).map(|base| {
                let mut more =
                    crate::providers::adapter(provider.kind).openai_urls(base, &t.model, version);
                if let Some(urls) = &urls {
                    more.set(crate::api::Endpoint::Embeddings, urls.embeddings.clone());
                }
                more
            });
            let Some(urls) = urls else {
                issues.push(
                    format!("{tpath}.model"),
                    format!("\"{}\" cannot be part of a URL", t.model),
                );
                continue;
            };
            let weight = t.weight.unwrap_or(1).max(1);
            let keys: Vec<Option<Arc<PoolKey>>> = if provider.keys.is_empty() {
                vec![None]
            } else {
                provider.keys.iter().cloned().map(Some).collect()
            };
            let pooled = keys.len() > 1;
            for key in keys {
                targets.push(Target {
                    provider: provider.clone(),
                    model: t.model.clone(),
                    model_json: model_json.clone(),
                    label: label.clone(),
                    priority: t.priority.unwrap_or(i as u32),
                    weight: weight.saturating_mul(key.as_ref().map_or(1, |k| k.weight)),
                    price,
                    key,
                    pooled,
                    group: i,
                    chat_url: urls.chat.clone(),
                    stream_url: urls.stream.clone(),
                    endpoint_urls: endpoint_urls.clone().unwrap_or_default(),
                    degraded,
                    deprecated_after: deprecated_after.clone(),
                    context_window: t.context_window,
                    continuation,
                    service_tier: service_tier.clone(),
                    tier_fallback: tier_fallback.clone(),
                    tier_first_byte,
                    fallback_price,
                });
            }
        }
        let retry = match &r.retry {
            Some(raw_retry) => resolve_retry(
                &mut issues,
                &format!("{path}.retry"),
                raw_retry,
                Some(&default_retry),
            ),
            None => default_retry,
        };
        let timeouts = match &r.timeouts {
            Some(raw_t) => resolve_timeouts(
                &mut issues,
                &format!("{path}.timeouts"),
                raw_t,
                &default_timeouts,
            ),
            None => default_timeouts,
        };
        check_tier_first_byte(&mut issues, &path, &targets, &timeouts);
        let breaker = match &r.breaker {
            Some(b) => {
                resolve_breaker(&mut issues, &format!("{path}.breaker"), b, &default_breaker)
            }
            None => default_breaker,
        };
        let budget = match &r.budget {
            Some(b) => resolve_budget(&mut issues, &format!("{path}.budget"), b, &default_budget),
            None => default_budget,
        };
        let strategy = match r.strategy.as_deref() {
            None | Some("weighted") => Strategy::Weighted,
            Some("least_inflight") => Strategy::LeastInflight,
            Some("latency") => Strategy::Latency,
            Some(other) => {
                issues.push(
                    format!("{path}.strategy"),
                    format!(
                        "unknown strategy \"{other}\" (known: weighted, least_inflight, latency)"
                    ),
                );
                Strategy::Weighted
            }
        };
        let slo = r
            .slo
            .as_ref()
            .and_then(|raw| resolve_slo(&mut issues, &format!("{path}.slo"), raw));
        let hedge = resolve_hedge(
            &mut issues,
            &format!("{path}.hedge_after"),
            r.hedge_after.as_ref(),
        );
        let resume = match r.resume.as_deref() {
            None | Some("continue") => true,
            Some("off") => false,
            Some(other) => {
                issues.push(
                    format!("{path}.resume"),
                    format!("unknown resume \"{other}\" (known: continue, off)"),
                );
                false
            }
        };
        let slo_degrade = resolve_slo_degrade(&mut issues, &path, r, slo.is_some(), &targets);
        routes.insert(
            name.clone(),
            Arc::new(Route {
                name: name.clone(),
                targets,
                retry,
                timeouts,
                breaker,
                budget,
                strategy,
                hedge,
                slo,
                log_content: r.log_content.unwrap_or(false),
                deprecation_warning: issues.duration(
                    format!("{path}.deprecation_warning"),
                    r.deprecation_warning.as_ref(),
                    Duration::from_secs(30 * 86_400),
                ),
                context_fallback: r.context_fallback.unwrap_or(true),
                resume,
                slo_degrade,
            }),
        );
    }

    let mut route_names: Vec<String> = routes.keys().cloned().collect();
    route_names.sort();
    let mut webhooks = Vec::new();
    for (i, url) in raw.alerts.webhooks.iter().enumerate() {
        match url.parse::<Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) => webhooks.push(u),
            // Not quoted back: a webhook URL may carry a token.
            _ => issues.push(format!("alerts.webhooks[{i}]"), "not an http or https URL"),
        }
    }
    let cost_regression_ratio = raw.alerts.cost_regression_ratio.filter(|r| {
        let ok = r.is_finite() && *r > 1.0;
        if !ok {
            issues.hint(
                "alerts.cost_regression_ratio",
                format!("{r} is not greater than 1"),
                "1.5 alerts when cost per success rises 50% over the previous day",
            );
        }
        ok
    });
    let alerts = AlertSettings {
        webhooks,
        cost_regression_ratio,
        evaluate_every: issues.positive_duration(
            "alerts.evaluate_every".into(),
            raw.alerts.evaluate_every.as_ref(),
            Duration::from_secs(30),
        ),
    };
    let store_url = raw
        .store
        .url
        .clone()
        .unwrap_or_else(|| "sqlite://switchyard.db".to_owned());
    if !(store_url.starts_with("sqlite:")
        || store_url.starts_with("postgres:")
        || store_url.starts_with("postgresql:"))
    {
        issues.hint(
            "store.url",
            format!("unsupported store URL \"{store_url}\""),
            "use sqlite://path/to/file.db or postgres://user@host/db",
        );
    }
    let store_timeout = store_timeout(&mut issues, raw.store.timeout.as_ref());
    let retention = issues.retention(
        "request_log.retention",
        raw.request_log.retention.as_ref(),
        Duration::from_secs(7 * 86_400),
    );
    let request_log = raw
        .request_log
        .enabled
        .unwrap_or(false)
        .then_some(retention);
    let responses_retention = issues.retention(
        "responses.retention",
        raw.responses.retention.as_ref(),
        Duration::from_secs(30 * 86_400),
    );
    let responses_store = raw
        .responses
        .store
        .unwrap_or(true)
        .then_some(responses_retention);
    let limits = resolve_limits(&mut issues, &raw.limits);
    let admin = resolve_admin(&mut issues, &raw.admin, env);
    let keys = VirtualKeySettings {
        cache_ttl: issues.duration(
            "keys.cache_ttl".into(),
            raw.keys.cache_ttl.as_ref(),
            Duration::from_secs(5),
        ),
        failed_auth_per_minute: raw.keys.failed_auth_per_minute.unwrap_or(60),
    };
    if !issues.0.is_empty() {
        return Err(ConfigErrors(issues.0));
    }
    Ok(Config {
        admin,
        keys,
        server,
        alerts,
        store_url: StoreUrl(store_url),
        store_timeout,
        request_log,
        responses_store,
        limits,
        global_budget: default_budget,
        providers,
        routes,
        route_names,
    })
}

/// `store.timeout`: 100ms to 5m, default 5s. Shorter would fail healthy
/// batch writes; longer would let a stuck database hold requests, key
/// lookups and the shutdown flush for minutes.
fn store_timeout(issues: &mut Issues, raw: Option<&String>) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(5);
    let d = issues.duration("store.timeout".into(), raw, DEFAULT);
    if (Duration::from_millis(100)..=Duration::from_secs(300)).contains(&d) {
        return d;
    }
    issues.hint(
        "store.timeout",
        format!("{} is outside 100ms..=5m", humantime::format_duration(d)),
        "the default 5s fits a healthy database with room to spare",
    );
    DEFAULT
}

/// An API key from the environment, or an issue at `field`.
fn resolve_secret(
    issues: &mut Issues,
    env: &impl Fn(&str) -> Option<String>,
    kind: ProviderKind,
    field: String,
    var: &str,
) -> Option<ApiKey> {
    match env(var) {
        Some(secret) if !secret.trim().is_empty() => match ApiKey::for_kind(kind, secret.trim()) {
            Ok(key) => Some(key),
            Err(e) => {
                issues.push(field, format!("environment variable \"{var}\": {e}"));
                None
            }
        },
        _ => {
            issues.hint(
                field,
                format!("environment variable \"{var}\" is not set or empty"),
                format!("export {var}=... before starting, or remove it for a keyless upstream"),
            );
            None
        }
    }
}

fn resolve_limits(issues: &mut Issues, raw: &raw::RawLimits) -> LimitSettings {
    let mut settings = LimitSettings::default();
    if let Some(url) = &raw.redis_url {
        // Never echo the URL: it may carry a password.
        let scheme = url.split("://").next().unwrap_or_default();
        if url.contains("://") && matches!(scheme, "redis" | "redis+unix" | "unix") {
            settings.redis_url = Some(RedisUrl(url.clone()));
        } else if scheme == "rediss" {
            issues.hint(
                "limits.redis_url",
                "TLS to Redis (rediss://) is not supported",
                "use redis:// to a Redis on a private network or over a TLS tunnel",
            );
        } else {
            issues.hint(
                "limits.redis_url",
                "not a Redis URL",
                "write e.g. \"redis://127.0.0.1:6379\" or \"redis://:password@host:6379/0\"",
            );
        }
    }
    if let Some(prefix) = &raw.key_prefix {
        // Braces would form a cluster hash tag and split one key's state across slots.
        if prefix.is_empty() || prefix.contains(|c: char| c.is_whitespace() || c == '{' || c == '}')
        {
            issues.hint(
                "limits.key_prefix",
                format!("invalid key prefix \"{prefix}\""),
                "use a non-empty name without spaces or braces, e.g. \"switchyard-prod\"",
            );
        } else {
            settings.key_prefix = prefix.clone();
        }
    }
    settings
}

#[cfg(test)]
mod tests;

/// A target's `service_tier` and `tier_fallback`: non-empty strings, only
/// for providers whose request body carries OpenAI's `service_tier`, and a
/// fallback only with a tier to fall back from.
fn resolve_service_tier(
    issues: &mut Issues,
    tpath: &str,
    kind: ProviderKind,
    t: &raw::RawTarget,
) -> (Option<Box<str>>, Option<Box<str>>) {
    let mut check = |key: &str, value: &Option<String>| -> Option<Box<str>> {
        let value = value.as_deref()?;
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
            issues.push(
                format!("{tpath}.{key}"),
                "must be a tier name such as \"flex\" or \"default\" (printable ASCII, no spaces)",
            );
            return None;
        }
        if !matches!(kind, ProviderKind::OpenAi | ProviderKind::AzureOpenAi) {
            issues.push(
                format!("{tpath}.{key}"),
                format!(
                    "{} targets cannot take a service tier (openai and azure_openai only)",
                    kind.as_str()
                ),
            );
            return None;
        }
        Some(value.into())
    };
    let tier = check("service_tier", &t.service_tier);
    let fallback = check("tier_fallback", &t.tier_fallback);
    if t.tier_fallback.is_some() && t.service_tier.is_none() {
        issues.hint(
            format!("{tpath}.tier_fallback"),
            "needs service_tier",
            "set service_tier = \"flex\" (the tier tried first)",
        );
    }
    if tier.is_some() && tier == fallback {
        issues.push(
            format!("{tpath}.tier_fallback"),
            "must differ from service_tier",
        );
    }
    (tier, fallback)
}
