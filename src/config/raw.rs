//! The config file as written: plain serde types, no validation beyond shape.
//!
//! Unknown keys are not denied here but collected, all of them, by
//! `config::unknown` (a typo such as `retyr` is an error with its line and
//! the nearest known field, never silently ignored): read these types only
//! through `Config::from_toml`. Nothing outside `config` sees them:
//! `validate` turns them into [`super::Config`].

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub defaults: RawPolicy,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub routes: BTreeMap<String, RawRoute>,
    /// USD per million tokens, by `provider/model` or by model name.
    #[serde(default)]
    pub prices: BTreeMap<String, RawPrice>,
    #[serde(default)]
    pub alerts: RawAlerts,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub request_log: RawRequestLog,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub keys: RawKeys,
    #[serde(default)]
    pub responses: RawResponses,
    #[serde(default)]
    pub idempotency: RawIdempotency,
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub telemetry: RawTelemetry,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawTelemetry {
    /// OpenTelemetry export over OTLP/HTTP; off unless set.
    pub otlp: Option<RawOtlp>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawOtlp {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318`.
    pub endpoint: Option<String>,
    /// Headers sent with every export (e.g. `authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `service.name` of the exported resource (default `switchyard`).
    pub service_name: Option<String>,
    /// Bound on each export (default 10s).
    pub timeout: Option<String>,
    /// How often metrics are exported (default 10s).
    pub metrics_interval: Option<String>,
    /// How long finished spans are gathered before an export (default 5s).
    pub traces_interval: Option<String>,
    /// Finished requests waiting for export at most (default 2048).
    pub max_queue: Option<usize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawCluster {
    /// Redis the replicas share target health through (default: `[limits]
    /// redis_url`; neither set: each replica alone).
    pub redis_url: Option<String>,
    /// Share breaker openings, `Retry-After` cooldowns, failure streaks and
    /// half-open probes with the other replicas (default true with a URL).
    pub share_health: Option<bool>,
    /// This replica's name in `/admin/targets` and the logs (default: host
    /// name and process id).
    pub replica: Option<String>,
    /// How often the fleet's verdicts are read from Redis (default 200ms):
    /// the bound on how late a replica follows another.
    pub sync_interval: Option<String>,
    /// How long one replica may probe an open target alone (default 10s).
    pub probe_lease: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawCache {
    /// Bytes of cached answers at most, every route together (default 64MiB);
    /// the least recently used entry is evicted first.
    pub max_bytes: Option<RawSize>,
    /// An answer larger than this is not cached (default 1MiB); also the
    /// bound on a value written to Redis.
    pub max_entry_bytes: Option<RawSize>,
}

/// `[routes.NAME.cache]`: the route's answers are cached (exact match).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawRouteCache {
    /// How long an answer is served from the cache (default 10m).
    pub ttl: Option<String>,
    /// Cache requests that may answer differently each time too
    /// (`temperature` absent or above 0, `n` above 1); default false.
    pub nondeterministic: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawIdempotency {
    /// Honour the `Idempotency-Key` request header (default true).
    pub enabled: Option<bool>,
    /// How long a completed answer is replayed (default 1h).
    pub ttl: Option<String>,
    /// Keys remembered at most; the oldest is forgotten first (default 10000).
    pub max_entries: Option<u32>,
    /// Bytes of stored answers at most, all keys together (default 64MiB).
    pub max_bytes: Option<RawSize>,
    /// An answer larger than this is not stored (default 1MiB).
    pub max_body: Option<RawSize>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawResponses {
    /// Keep what `/v1/responses` served (default true), for
    /// `previous_response_id` across providers and `GET /v1/responses/{id}`;
    /// a request with `store: false` is never kept either way.
    pub store: Option<bool>,
    /// Stored responses older than this are deleted (default 30d).
    pub retention: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawLimits {
    /// `redis://[user:password@]host:port[/db]`: per-key limits are shared by
    /// every gateway using it; without it each gateway enforces them alone.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key the limiter writes (default `switchyard`).
    pub key_prefix: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawAdmin {
    /// Environment variable holding the admin API key; no admin API without it.
    pub key_env: Option<String>,
    /// Serve the admin API on this address instead of the main listener.
    pub listen: Option<String>,
    /// Serve `/metrics` without the admin key even when one is set (default
    /// false: the metrics carry key names and spend per key).
    pub metrics_public: Option<bool>,
    /// TLS on the admin listener (needs `listen`), optionally requiring
    /// client certificates.
    pub tls: Option<RawAdminTls>,
}

/// `[server.tls]`: PEM files of the main listener's certificate chain and key.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawTls {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: Option<String>,
    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<String>,
}

/// `[admin.tls]`: as `[server.tls]`, plus the CA that client certificates
/// must chain to (mutual TLS, required when set).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawAdminTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// CA certificates (PEM); when set, a client without a certificate
    /// signed by one of them is refused in the handshake.
    pub client_ca_file: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawKeys {
    /// How long a virtual key is trusted from memory (default 5s): the
    /// bound on how late a revocation made elsewhere takes effect.
    pub cache_ttl: Option<String>,
    /// Invalid keys one client address may present per minute (default
    /// 60) before it is throttled; 0 turns the limit off.
    pub failed_auth_per_minute: Option<u32>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawStore {
    /// `sqlite://path/to/file.db` (default `sqlite://switchyard.db`) or `postgres://…`.
    pub url: Option<String>,
    /// Bound on every store call: waiting for a pooled connection, each
    /// statement, and the call as a whole (default 5s).
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawRequestLog {
    pub enabled: Option<bool>,
    /// Rows older than this are deleted (default 7d).
    pub retention: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawAlerts {
    /// URLs that receive a JSON POST on every alert state change.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// How often SLO burn rates are evaluated (default 30s).
    pub evaluate_every: Option<String>,
    /// Alert when a route's cost per successful request over the last day
    /// exceeds the previous day's by this factor (e.g. 1.5); off if unset.
    pub cost_regression_ratio: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawSlo {
    /// Success ratio, e.g. 0.999.
    pub success: Option<f64>,
    /// Latency threshold, e.g. "2s" ...
    pub latency: Option<String>,
    /// ... met by this ratio of requests, e.g. 0.95.
    pub latency_target: Option<f64>,
    /// Error-budget period in days (default 30).
    pub period_days: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawPrice {
    pub input_per_million: f64,
    pub output_per_million: f64,
    /// Prices at named service tiers (`flex = { input_per_million = …,
    /// output_per_million = … }`), used when a target's request was served
    /// at that tier.
    #[serde(default)]
    pub tiers: BTreeMap<String, RawTierPrice>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RawTierPrice {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_request_body: Option<RawSize>,
    pub max_response_body: Option<RawSize>,
    pub drain_timeout: Option<String>,
    /// After SIGTERM, how long `/readyz` answers 503 while the gateway
    /// still accepts and serves, so a load balancer stops sending first.
    pub drain_delay: Option<String>,
    /// How long a client may take to send a request's head (and, on a new
    /// connection, to show which protocol it speaks); also the idle timeout
    /// of HTTP/1 keep-alive connections, and how long an HTTP/2 client may
    /// leave a ping unanswered.
    pub header_read_timeout: Option<String>,
    /// Largest request head (request line and headers) accepted; larger
    /// gets 431. Default 32 KiB.
    pub max_header_bytes: Option<RawSize>,
    /// Client connections served at once; more are refused with a 503.
    pub max_connections: Option<u32>,
    /// How long a client may take to send a request's body once its head
    /// arrived (slow-body guard).
    pub body_read_timeout: Option<String>,
    /// How long a write to a client may make no progress (a client that
    /// stopped reading) before its connection is closed.
    pub write_timeout: Option<String>,
    /// The kernel send buffer of each client connection (`SO_SNDBUF`):
    /// what a client that reads slowly can make the kernel hold for it.
    pub send_buffer: Option<RawSize>,
    /// This node's region; `SWITCHYARD_REGION` overrides it.
    pub region: Option<String>,
    /// Reload the config when the file changes (checked every 2 s). SIGHUP
    /// always reloads.
    pub watch_config: Option<bool>,
    /// `/status` for the public: hides target names and internal detail.
    pub public_status: Option<bool>,
    /// `"keys"` (default): every request needs a virtual key. `"none"`:
    /// anyone who reaches the port may use every route.
    pub auth: Option<String>,
    /// TLS on the main listener; plain HTTP without it.
    pub tls: Option<RawTls>,
}

/// A byte size: an integer number of bytes or a string such as `"4MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawPolicy {
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub timeouts: RawTimeouts,
    #[serde(default)]
    pub breaker: RawBreaker,
    #[serde(default)]
    pub budget: RawBudget,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawBreaker {
    pub failure_ratio: Option<f64>,
    pub min_requests: Option<u32>,
    pub window: Option<String>,
    pub consecutive_failures: Option<u32>,
    pub open_base: Option<String>,
    pub open_factor: Option<f64>,
    pub open_max: Option<String>,
    pub half_open_probes: Option<u32>,
    pub close_after: Option<u32>,
    pub slow_start: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawBudget {
    pub retry_ratio: Option<f64>,
    pub min_per_sec: Option<u32>,
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawRetry {
    pub max_attempts_per_target: Option<u32>,
    pub base_backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub jitter: Option<String>,
    pub max_retry_after: Option<String>,
    /// `next_target` (default), `same_target` or `stop`: see `OnTimeout`.
    pub on_timeout: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub first_byte: Option<String>,
    pub idle: Option<String>,
    pub total: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawProvider {
    /// `openai` (default), `azure_openai`, `anthropic` or `gemini`.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Required for `openai` and `azure_openai`; `anthropic` and `gemini`
    /// default to the vendor's public endpoint.
    pub base_url: Option<String>,
    pub api_key_env: Option<String>,
    /// A pool of keys used in turn instead of `api_key_env`.
    pub keys: Option<Vec<RawPoolKey>>,
    pub region: Option<String>,
    /// `azure_openai`: the `api-version` query parameter; `anthropic`: the
    /// `anthropic-version` header.
    pub api_version: Option<String>,
    /// `anthropic`: `max_tokens` sent when the client did not set one.
    pub default_max_tokens: Option<u32>,
    /// How `/v1/responses` reaches this provider: `native` (the body passed
    /// through; default for `openai` and `azure_openai`) or `chat`
    /// (translated to Chat Completions; the only way for `anthropic` and
    /// `gemini`, and for OpenAI-compatible servers without the Responses API).
    pub responses: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawPoolKey {
    /// Names the key in logs and `/admin/targets`; the value never appears.
    pub name: String,
    pub env: String,
    /// Share of traffic among the pool's keys; default 1.
    pub weight: Option<u32>,
}

fn default_kind() -> String {
    "openai".to_owned()
}

#[derive(Debug, Deserialize)]
pub struct RawRoute {
    pub targets: Vec<RawTarget>,
    pub retry: Option<RawRetry>,
    pub timeouts: Option<RawTimeouts>,
    pub breaker: Option<RawBreaker>,
    pub budget: Option<RawBudget>,
    /// `weighted` (default), `least_inflight` or `latency`.
    pub strategy: Option<String>,
    /// A duration (`"300ms"`) or a percentile of the target's recent
    /// first-byte latency (`"p95"`).
    pub hedge_after: Option<String>,
    pub slo: Option<RawSlo>,
    /// Keep request and (non-stream) response bodies in the request log.
    pub log_content: Option<bool>,
    /// How long before a target's `deprecated_after` responses carry
    /// `x-switchyard-deprecation` (default 30d).
    pub deprecation_warning: Option<String>,
    /// When a target says the prompt exceeds its context window, try the
    /// route's targets with a larger `context_window` (default true).
    pub context_fallback: Option<bool>,
    /// What a stream that breaks after its first content does: `"continue"`
    /// (default: the next target continues the answer) or `"off"` (end with
    /// the `stream_cut` event).
    pub resume: Option<String>,
    /// `"page"` or `"ticket"`: while the route's SLO burn-rate alert of
    /// that severity fires (`"ticket"`: ticket or page), requests try the
    /// `tier = "degraded"` targets first.
    pub degrade_on: Option<String>,
    /// Share of requests (0.0..=1.0, default 1.0) sent degraded-first
    /// while `degrade_on` is in force.
    pub degrade_share: Option<f64>,
    /// Exact-match response cache for this route (off unless set).
    pub cache: Option<RawRouteCache>,
}

#[derive(Debug, Deserialize)]
pub struct RawTarget {
    pub provider: String,
    pub model: String,
    /// Lower is preferred; defaults to the target's position in the list.
    pub priority: Option<u32>,
    /// Share within a priority tier (weighted strategy); default 1.
    pub weight: Option<u32>,
    /// `"primary"` (default) or `"degraded"`: a cheaper or faster model
    /// served only when the client allows it, flagged in the response.
    pub tier: Option<String>,
    /// `"YYYY-MM-DD"`: from the day after, the target is skipped.
    pub deprecated_after: Option<String>,
    /// Tokens; used to pick a larger target after a context-length error.
    pub context_window: Option<u32>,
    /// How this target can continue a cut answer: `"prefill"`, `"instruct"`
    /// or `"none"`; defaults to its provider kind's.
    pub continuation: Option<String>,
    /// The provider service tier requests are sent at (`"flex"`, …);
    /// OpenAI and Azure OpenAI targets only.
    pub service_tier: Option<String>,
    /// The tier the same target is retried at when it refuses
    /// `service_tier` (OpenAI's 429 `resource_unavailable`).
    pub tier_fallback: Option<String>,
    /// A first-byte timeout at `service_tier` (shorter than the route's
    /// `first_byte`) that counts as a tier refusal: the same target is
    /// asked again at once at `tier_fallback`.
    pub tier_first_byte: Option<String>,
}
