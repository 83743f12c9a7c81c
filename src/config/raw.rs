//! The config file as written: plain serde types, no validation beyond shape.
//!
//! Every table denies unknown fields so a typo (`retyr`) fails loudly with the
//! line and the list of expected keys instead of being silently ignored.
//! Nothing outside `config` sees these types: `validate` turns them into
//! [`super::Config`].

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub defaults: RawPolicy,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub routes: BTreeMap<String, RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub max_request_body: Option<RawSize>,
    pub max_response_body: Option<RawSize>,
    pub drain_timeout: Option<String>,
    pub region: Option<String>,
}

/// A byte size: an integer number of bytes or a string such as `"4MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub timeouts: RawTimeouts,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_attempts_per_target: Option<u32>,
    pub base_backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub jitter: Option<String>,
    pub max_retry_after: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub first_byte: Option<String>,
    pub idle: Option<String>,
    pub total: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    #[serde(default = "default_kind")]
    pub kind: String,
    pub base_url: String,
    pub api_key_env: Option<String>,
    pub region: Option<String>,
}

fn default_kind() -> String {
    "openai".to_owned()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub targets: Vec<RawTarget>,
    pub retry: Option<RawRetry>,
    pub timeouts: Option<RawTimeouts>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub provider: String,
    pub model: String,
}
