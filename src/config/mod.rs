//! Configuration: the raw file shape (`raw`) and the validated, typed config
//! the rest of the gateway uses. Validation happens once, at load; every
//! problem is reported with its key path and, where it helps, a hint.
//! This module reads files and environment variables; it never opens a socket.

mod keypath;
mod otlp;
pub mod prices;
pub mod raw;
mod reader;
mod restart;
pub mod starter;
mod suggest;
pub mod tls;
mod validate;

pub use otlp::OtlpConfig;
pub use tls::TlsFiles;

use crate::resilience::breaker::BreakerPolicy;
use crate::resilience::{Backoff, Jitter};
use crate::telemetry::slo::{Severity, SloPolicy};
use bytes::Bytes;
use http::{HeaderValue, Uri};
use raw::{RawBreaker, RawBudget, RawRetry, RawSize, RawTimeouts};
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
    /// `Some` when the `Idempotency-Key` header is honoured (`[idempotency]`).
    pub idempotency: Option<IdempotencySettings>,
    /// `Some` when target health is shared with other replicas (`[cluster]`).
    pub cluster: Option<ClusterSettings>,
    /// The response cache's bounds (`[cache]`); routes opt in.
    pub cache: CacheSettings,
    /// `Some` when OpenTelemetry export is on (`[telemetry.otlp]`).
    pub otlp: Option<OtlpConfig>,
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

/// Target health shared by the replicas through Redis (`[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub redis_url: RedisUrl,
    /// Starts every Redis key (`[limits] key_prefix`).
    pub key_prefix: String,
    /// This replica's name, unique in the fleet (default: host name and
    /// process id, chosen at start).
    pub replica: Option<String>,
    pub sync_interval: Duration,
    pub probe_lease: Duration,
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
    /// TLS on the admin listener (`[admin.tls]`, only with `listen`).
    pub tls: Option<TlsFiles>,
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
pub struct IdempotencySettings {
    /// How long a completed answer is replayed.
    pub ttl: Duration,
    /// Keys remembered at most (in flight and completed).
    pub max_entries: usize,
    /// Bytes of stored answers at most.
    pub max_bytes: usize,
    /// An answer larger than this is not stored.
    pub max_body: usize,
}

/// The response cache's bounds, every route together (`[cache]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes of cached answers at most.
    pub max_bytes: usize,
    /// An answer larger than this is not cached (in memory or in Redis).
    pub max_entry_bytes: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
        }
    }
}

/// A route's response cache (`[routes.NAME.cache]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    /// How long an answer is served from the cache.
    pub ttl: Duration,
    /// Requests that may answer differently each time are cached too.
    pub nondeterministic: bool,
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
    /// TLS on the main listener (`[server.tls]`); plain HTTP when `None`.
    pub tls: Option<TlsFiles>,
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
    /// `Some` when the route's answers are cached.
    pub cache: Option<RouteCache>,
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
    pub last_day: jiff::civil::Date,
    /// As configured, `YYYY-MM-DD`.
    pub date: String,
}

impl Deprecation {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Deprecation> {
        // Exactly `YYYY-MM-DD`: jiff alone would take ISO 8601's other forms.
        let shaped = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
        let last_day = text.parse::<jiff::civil::Date>().ok().filter(|_| shaped)?;
        Some(Deprecation {
            last_day,
            date: text.to_owned(),
        })
    }

    /// Past its last day at `now`.
    pub fn expired(&self, now: std::time::SystemTime) -> bool {
        utc_date(now) > self.last_day
    }

    /// Within `window` of its last day (and not yet past it).
    pub fn warning(&self, now: std::time::SystemTime, window: Duration) -> bool {
        let today = utc_date(now);
        let days_left = today
            .until(self.last_day)
            .map_or(i64::MAX, |span| i64::from(span.get_days()));
        today <= self.last_day && days_left < (window.as_secs() / 86_400) as i64
    }
}

/// The UTC date of `t` (before 1970 or beyond 9999: the epoch's).
fn utc_date(t: std::time::SystemTime) -> jiff::civil::Date {
    let at = jiff::Timestamp::try_from(t).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    jiff::tz::Offset::UTC.to_datetime(at).date()
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

    /// Reads, parses and validates `path`, then reads the TLS files it
    /// names (`tls::check_files`: readable, parseable, key matching cert).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::one(
                path.display().to_string(),
                format!("cannot read config file: {e}"),
                None,
            )
        })?;
        let config = Config::from_toml(&text, |name| std::env::var(name).ok())?;
        let problems = tls::check_files(&config);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(located(&text, problems))
        }
    }

    /// Parses and validates; `env` resolves `api_key_env` names (injected so
    /// tests need not touch the process environment). Every unknown field
    /// and every invalid setting is reported at once, each with the line it
    /// is on where the file says; a TOML syntax or type error stops at the
    /// first, as the rest of the file cannot be read past it.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let read = reader::read(text).map_err(|e| located(text, e.0))?;
        let mut issues = Issues::default();
        let config = validate::validate(read.raw, &env, &mut issues);
        if issues.0.is_empty() && read.issues.is_empty() {
            return Ok(config);
        }
        let mut all = read.issues;
        for mut issue in issues.0 {
            issue.path = read.remap.in_file(&issue.path);
            all.push(issue);
        }
        Err(located(text, all))
    }
}

/// The issues with the line of each key path in `text`, in file order (as
/// a compiler lists them); those without a line last.
fn located(text: &str, mut issues: Vec<ConfigIssue>) -> ConfigErrors {
    if let Ok(doc) = toml_edit::ImDocument::parse(text) {
        for issue in issues.iter_mut().filter(|i| i.line.is_none()) {
            issue.line = keypath::line_of(&doc, &issue.path);
        }
    }
    issues.sort_by_key(|issue| issue.line.unwrap_or(usize::MAX));
    ConfigErrors(issues)
}

/// A TOML syntax or type error, at its line.
fn toml_error(text: &str, e: &toml::de::Error) -> ConfigErrors {
    let path = e
        .span()
        .map(|s| format!("line {}", keypath::line_at(text, s.start)))
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
}

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
    /// The line of the file `path` is on (1-based), where it is in the file.
    pub line: Option<usize>,
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
            line: None,
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match issue.line {
                Some(line) => write!(f, "line {line}: {issue}")?,
                None => write!(f, "{issue}")?,
            }
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
            line: None,
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
            line: None,
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
    let tls = raw.tls.as_ref().and_then(|t| {
        let files = tls::files(
            issues,
            "admin.tls",
            t.cert_file.as_deref(),
            t.key_file.as_deref(),
            t.client_ca_file.as_deref(),
        );
        if files.is_some() && listen.is_none() {
            issues.hint(
                "admin.tls",
                "admin TLS needs an admin listener of its own",
                "set [admin] listen; on the main listener the admin API uses [server.tls]",
            );
        }
        files
    });
    AdminSettings {
        key,
        listen,
        metrics_public: raw.metrics_public.unwrap_or(false),
        tls,
    }
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
        settings.redis_url = redis_url(issues, "limits.redis_url", url);
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

/// A `redis://` URL, or an issue at `path` (never echoing the URL: it may
/// carry a password).
pub(crate) fn redis_url(issues: &mut Issues, path: &str, url: &str) -> Option<RedisUrl> {
    let scheme = url.split("://").next().unwrap_or_default();
    if url.contains("://") && matches!(scheme, "redis" | "redis+unix" | "unix") {
        return Some(RedisUrl(url.to_owned()));
    }
    if scheme == "rediss" {
        issues.hint(
            path,
            "TLS to Redis (rediss://) is not supported",
            "use redis:// to a Redis on a private network or over a TLS tunnel",
        );
    } else {
        issues.hint(
            path,
            "not a Redis URL",
            "write e.g. \"redis://127.0.0.1:6379\" or \"redis://:password@host:6379/0\"",
        );
    }
    None
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
