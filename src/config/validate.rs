//! Validation of the raw file into the typed [`Config`], one validator per
//! section (`server`, `defaults`, `providers`, `prices`, `routes` and their
//! targets, `alerts`, `store`, `limits`, `admin`, `keys`, `idempotency`,
//! `cluster`). Each pushes every
//! problem it finds into the shared [`Issues`] with its key path and goes on
//! with a default, so one run reports them all. A new setting goes into its
//! section's validator; a new section gets a function of its own called
//! from [`validate`]. Reads environment variables through `env`; no I/O.

use super::raw::{self, RawConfig, RawProvider, RawRoute, RawTarget};
use super::*;

/// The policies every route inherits unless it overrides them.
struct Defaults {
    retry: RetryPolicy,
    timeouts: Timeouts,
    breaker: BreakerPolicy,
    budget: BudgetPolicy,
}

/// What targets need to know of the providers section.
struct Providers {
    by_name: BTreeMap<String, Arc<Provider>>,
    /// Each valid provider's base URL, without a trailing `/`.
    bases: HashMap<String, String>,
}

/// The typed config; meaningful only if `issues` stayed empty (invalid
/// values were replaced by defaults so the other sections could go on).
pub(super) fn validate(
    raw: RawConfig,
    env: &impl Fn(&str) -> Option<String>,
    issues: &mut Issues,
) -> Config {
    let server = server(issues, &raw.server, env);
    let defaults = defaults(issues, &raw.defaults);
    let providers = providers(issues, &raw.providers, env);
    prices(issues, &raw.prices);
    let routes = routes(issues, &raw, &providers, &defaults);
    let mut route_names: Vec<String> = routes.keys().cloned().collect();
    route_names.sort();
    let alerts = alerts(issues, &raw.alerts);
    let store = store(issues, &raw);
    Config {
        admin: resolve_admin(issues, &raw.admin, env),
        keys: keys(issues, &raw.keys),
        idempotency: idempotency(issues, &raw.idempotency),
        cache: cache(issues, &raw.cache),
        server,
        alerts,
        store_url: store.url,
        store_timeout: store.timeout,
        request_log: store.request_log,
        responses_store: store.responses,
        limits: resolve_limits(issues, &raw.limits),
        cluster: cluster(issues, &raw.cluster, &raw.limits),
        otlp: super::otlp::validate(issues, raw.telemetry.otlp.as_ref()),
        global_budget: defaults.budget,
        providers: providers.by_name,
        routes,
        route_names,
    }
}

fn server(
    issues: &mut Issues,
    raw: &raw::RawServer,
    env: &impl Fn(&str) -> Option<String>,
) -> ServerSettings {
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 8080));
    let listen = match raw.listen.as_deref() {
        None => default_listen,
        Some(text) => text.parse().unwrap_or_else(|_| {
            issues.hint(
                "server.listen",
                format!("invalid address \"{text}\""),
                "write IP:PORT, e.g. \"0.0.0.0:8080\"",
            );
            default_listen
        }),
    };
    ServerSettings {
        listen,
        max_request_body: issues.size(
            "server.max_request_body",
            raw.max_request_body.as_ref(),
            8 << 20,
        ),
        max_response_body: issues.size(
            "server.max_response_body",
            raw.max_response_body.as_ref(),
            32 << 20,
        ),
        drain_timeout: issues.duration(
            "server.drain_timeout".into(),
            raw.drain_timeout.as_ref(),
            Duration::from_secs(30),
        ),
        drain_delay: issues.duration(
            "server.drain_delay".into(),
            raw.drain_delay.as_ref(),
            Duration::ZERO,
        ),
        header_read_timeout: issues.positive_duration(
            "server.header_read_timeout".into(),
            raw.header_read_timeout.as_ref(),
            Duration::from_secs(30),
        ),
        body_read_timeout: issues.positive_duration(
            "server.body_read_timeout".into(),
            raw.body_read_timeout.as_ref(),
            Duration::from_secs(60),
        ),
        write_timeout: issues.positive_duration(
            "server.write_timeout".into(),
            raw.write_timeout.as_ref(),
            Duration::from_secs(30),
        ),
        max_header_bytes: max_header_bytes(issues, raw.max_header_bytes.as_ref()),
        send_buffer: send_buffer(issues, raw.send_buffer.as_ref()),
        max_connections: match raw.max_connections {
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
            .or_else(|| raw.region.clone()),
        watch_config: raw.watch_config.unwrap_or(true),
        // Target names (and pooled key names) only for who asks for them.
        public_status: raw.public_status.unwrap_or(true),
        auth: auth_mode(issues, raw.auth.as_deref()),
        tls: raw.tls.as_ref().and_then(|t| {
            super::tls::files(
                issues,
                "server.tls",
                t.cert_file.as_deref(),
                t.key_file.as_deref(),
                None,
            )
        }),
    }
}

fn auth_mode(issues: &mut Issues, raw: Option<&str>) -> AuthMode {
    match raw {
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
    }
}

fn defaults(issues: &mut Issues, raw: &raw::RawPolicy) -> Defaults {
    Defaults {
        retry: resolve_retry(issues, "defaults.retry", &raw.retry, None),
        timeouts: resolve_timeouts(
            issues,
            "defaults.timeouts",
            &raw.timeouts,
            &DEFAULT_TIMEOUTS,
        ),
        breaker: resolve_breaker(
            issues,
            "defaults.breaker",
            &raw.breaker,
            &BreakerPolicy::default(),
        ),
        budget: resolve_budget(
            issues,
            "defaults.budget",
            &raw.budget,
            &BudgetPolicy::default(),
        ),
    }
}

fn providers(
    issues: &mut Issues,
    raw: &BTreeMap<String, RawProvider>,
    env: &impl Fn(&str) -> Option<String>,
) -> Providers {
    let mut out = Providers {
        by_name: BTreeMap::new(),
        bases: HashMap::new(),
    };
    for (name, p) in raw {
        if let Some((provider, base)) = provider(issues, name, p, env) {
            out.by_name.insert(name.clone(), Arc::new(provider));
            out.bases.insert(name.clone(), base);
        }
    }
    out
}

fn provider_kind(issues: &mut Issues, path: &str, kind: &str) -> ProviderKind {
    match kind {
        "openai" => ProviderKind::OpenAi,
        "azure_openai" => ProviderKind::AzureOpenAi,
        "anthropic" => ProviderKind::Anthropic,
        "gemini" => ProviderKind::Gemini,
        other => {
            let message = format!(
                "unknown provider kind \"{other}\" (known: {})",
                ProviderKind::KNOWN
            );
            let known = ProviderKind::KNOWN.split(", ");
            match suggest::did_you_mean(other, known) {
                Some(hint) => issues.hint(format!("{path}.kind"), message, hint),
                None => issues.push(format!("{path}.kind"), message),
            }
            ProviderKind::OpenAi
        }
    }
}

/// One provider and its base URL; `None` when no target could use it.
fn provider(
    issues: &mut Issues,
    name: &str,
    p: &RawProvider,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<(Provider, String)> {
    let path = format!("providers.{name}");
    let kind = provider_kind(issues, &path, &p.kind);
    let base = base_url(issues, &path, kind, p.base_url.as_deref())?;
    if p.default_max_tokens.is_some() && kind != ProviderKind::Anthropic {
        issues.push(
            format!("{path}.default_max_tokens"),
            "only anthropic providers need a default max_tokens",
        );
    }
    if p.default_max_tokens == Some(0) {
        issues.push(format!("{path}.default_max_tokens"), "must be at least 1");
    }
    let provider = Provider {
        name: name.to_owned(),
        kind,
        region: p.region.clone().unwrap_or_else(|| "default".to_owned()),
        api_version: api_version(issues, &path, kind, p.api_version.as_deref()),
        default_max_tokens: p.default_max_tokens.unwrap_or(4096).max(1),
        keys: provider_keys(issues, &path, kind, p, env),
        responses_native: responses_mode(issues, &path, kind, p.responses.as_deref()),
    };
    Some((provider, base))
}

fn base_url(
    issues: &mut Issues,
    path: &str,
    kind: ProviderKind,
    raw: Option<&str>,
) -> Option<String> {
    let default_base = match kind {
        ProviderKind::Anthropic => Some("https://api.anthropic.com"),
        ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
        ProviderKind::OpenAi | ProviderKind::AzureOpenAi => None,
    };
    let Some(base) = raw.or(default_base) else {
        issues.hint(
            format!("{path}.base_url"),
            "missing base_url",
            match kind {
                ProviderKind::AzureOpenAi => "base_url = \"https://<resource>.openai.azure.com\"",
                _ => "base_url = \"https://api.openai.com/v1\" (including the API prefix)",
            },
        );
        return None;
    };
    let base = base.trim_end_matches('/');
    let valid_base = base
        .parse::<Uri>()
        .ok()
        .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.query().is_none());
    if !valid_base {
        issues.hint(
            format!("{path}.base_url"),
            format!("invalid URL \"{base}\""),
            "use an http:// or https:// URL including the API prefix, e.g. \"https://api.openai.com/v1\"",
        );
        return None;
    }
    Some(base.to_owned())
}

fn api_version(
    issues: &mut Issues,
    path: &str,
    kind: ProviderKind,
    raw: Option<&str>,
) -> Option<HeaderValue> {
    let version = match (kind, raw) {
        (ProviderKind::AzureOpenAi, v) => v.unwrap_or("2024-10-21"),
        (ProviderKind::Anthropic, v) => v.unwrap_or("2023-06-01"),
        (_, Some(_)) => {
            issues.push(
                format!("{path}.api_version"),
                "only azure_openai and anthropic providers take an api_version",
            );
            return None;
        }
        (_, None) => return None,
    };
    match HeaderValue::try_from(version) {
        Ok(h)
            if version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') =>
        {
            Some(h)
        }
        _ => {
            issues.push(
                format!("{path}.api_version"),
                format!("invalid version \"{version}\""),
            );
            None
        }
    }
}

fn responses_mode(issues: &mut Issues, path: &str, kind: ProviderKind, raw: Option<&str>) -> bool {
    let speaks_openai = matches!(kind, ProviderKind::OpenAi | ProviderKind::AzureOpenAi);
    match raw {
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
    }
}

/// The provider's keys: one from `api_key_env`, a pool from `keys`, or none.
fn provider_keys(
    issues: &mut Issues,
    path: &str,
    kind: ProviderKind,
    p: &RawProvider,
    env: &impl Fn(&str) -> Option<String>,
) -> Vec<Arc<PoolKey>> {
    let mut keys = Vec::new();
    match (&p.api_key_env, &p.keys) {
        (Some(_), Some(_)) => issues.hint(
            format!("{path}.keys"),
            "both api_key_env and keys are set",
            "use api_key_env for one key or keys = [{ name, env }, ...] for a pool",
        ),
        (Some(var), None) => {
            let field = format!("{path}.api_key_env");
            if let Some(value) = resolve_secret(issues, env, kind, field, var) {
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
                if valid_key_name(&k.name) && !names.insert(k.name.as_str()) {
                    issues.push(
                        format!("{kpath}.name"),
                        format!("duplicate key name \"{}\"", k.name),
                    );
                }
                keys.extend(pool_key(issues, &kpath, kind, k, env).map(Arc::new));
            }
        }
        (None, None) => {}
    }
    keys
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn pool_key(
    issues: &mut Issues,
    kpath: &str,
    kind: ProviderKind,
    k: &raw::RawPoolKey,
    env: &impl Fn(&str) -> Option<String>,
) -> Option<PoolKey> {
    if !valid_key_name(&k.name) {
        issues.hint(
            format!("{kpath}.name"),
            format!("invalid key name \"{}\"", k.name),
            "letters, digits, '-', '_' and '.', at most 64",
        );
    }
    if k.weight == Some(0) {
        issues.push(format!("{kpath}.weight"), "must be at least 1");
    }
    let value = resolve_secret(issues, env, kind, format!("{kpath}.env"), &k.env)?;
    Some(PoolKey {
        name: k.name.clone(),
        value,
        weight: k.weight.unwrap_or(1).max(1),
    })
}

fn prices(issues: &mut Issues, raw: &BTreeMap<String, raw::RawPrice>) {
    for (model, p) in raw {
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
}

fn routes(
    issues: &mut Issues,
    raw: &RawConfig,
    providers: &Providers,
    defaults: &Defaults,
) -> HashMap<String, Arc<Route>> {
    if raw.routes.is_empty() {
        issues.hint(
            "routes",
            "no routes defined",
            "add [routes.<public-model-name>] with at least one target",
        );
    }
    raw.routes
        .iter()
        .map(|(name, r)| {
            let route = route(issues, name, r, raw, providers, defaults);
            (name.clone(), Arc::new(route))
        })
        .collect()
}

fn route(
    issues: &mut Issues,
    name: &str,
    r: &RawRoute,
    raw: &RawConfig,
    providers: &Providers,
    defaults: &Defaults,
) -> Route {
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
        targets.extend(target(issues, &tpath, i, t, raw, providers));
    }
    let retry = match &r.retry {
        Some(raw_retry) => resolve_retry(
            issues,
            &format!("{path}.retry"),
            raw_retry,
            Some(&defaults.retry),
        ),
        None => defaults.retry,
    };
    let timeouts = match &r.timeouts {
        Some(t) => resolve_timeouts(issues, &format!("{path}.timeouts"), t, &defaults.timeouts),
        None => defaults.timeouts,
    };
    check_tier_first_byte(issues, &path, &targets, &timeouts);
    let slo = r
        .slo
        .as_ref()
        .and_then(|raw| resolve_slo(issues, &format!("{path}.slo"), raw));
    let slo_degrade = slo_degrade(issues, &path, r, slo.is_some(), &targets);
    Route {
        name: name.to_owned(),
        targets,
        retry,
        timeouts,
        breaker: match &r.breaker {
            Some(b) => resolve_breaker(issues, &format!("{path}.breaker"), b, &defaults.breaker),
            None => defaults.breaker,
        },
        budget: match &r.budget {
            Some(b) => resolve_budget(issues, &format!("{path}.budget"), b, &defaults.budget),
            None => defaults.budget,
        },
        strategy: strategy(issues, &path, r.strategy.as_deref()),
        hedge: resolve_hedge(
            issues,
            &format!("{path}.hedge_after"),
            r.hedge_after.as_ref(),
        ),
        slo,
        log_content: r.log_content.unwrap_or(false),
        deprecation_warning: issues.duration(
            format!("{path}.deprecation_warning"),
            r.deprecation_warning.as_ref(),
            Duration::from_secs(30 * 86_400),
        ),
        context_fallback: r.context_fallback.unwrap_or(true),
        resume: resume(issues, &path, r.resume.as_deref()),
        slo_degrade,
        cache: r.cache.as_ref().map(|c| route_cache(issues, &path, c)),
    }
}

fn route_cache(issues: &mut Issues, path: &str, raw: &raw::RawRouteCache) -> RouteCache {
    RouteCache {
        ttl: issues.retention(
            &format!("{path}.cache.ttl"),
            raw.ttl.as_ref(),
            Duration::from_secs(600),
        ),
        nondeterministic: raw.nondeterministic.unwrap_or(false),
    }
}

fn strategy(issues: &mut Issues, path: &str, raw: Option<&str>) -> Strategy {
    match raw {
        None | Some("weighted") => Strategy::Weighted,
        Some("least_inflight") => Strategy::LeastInflight,
        Some("latency") => Strategy::Latency,
        Some(other) => {
            issues.push(
                format!("{path}.strategy"),
                format!("unknown strategy \"{other}\" (known: weighted, least_inflight, latency)"),
            );
            Strategy::Weighted
        }
    }
}

fn resume(issues: &mut Issues, path: &str, raw: Option<&str>) -> bool {
    match raw {
        None | Some("continue") => true,
        Some("off") => false,
        Some(other) => {
            issues.push(
                format!("{path}.resume"),
                format!("unknown resume \"{other}\" (known: continue, off)"),
            );
            false
        }
    }
}

/// `degrade_on` / `degrade_share`: needs the route's `slo` and a
/// `tier = "degraded"` target to switch to.
fn slo_degrade(
    issues: &mut Issues,
    path: &str,
    raw: &RawRoute,
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

/// The provider a target names, or an issue with the nearest known name.
fn target_provider<'a>(
    issues: &mut Issues,
    tpath: &str,
    name: &str,
    raw: &RawConfig,
    providers: &'a Providers,
) -> Option<&'a Arc<Provider>> {
    if let Some(provider) = providers.by_name.get(name) {
        return Some(provider);
    }
    // A provider that is configured but invalid has its own issue already.
    if !raw.providers.contains_key(name) {
        let known = raw.providers.keys().map(String::as_str);
        let message = format!(
            "unknown provider \"{name}\" (known: {})",
            known.clone().collect::<Vec<_>>().join(", ")
        );
        match suggest::did_you_mean(name, known) {
            Some(hint) => issues.hint(format!("{tpath}.provider"), message, hint),
            None => issues.push(format!("{tpath}.provider"), message),
        }
    }
    None
}

/// The model name's forms (header label, JSON literal), or an issue.
fn target_model(issues: &mut Issues, tpath: &str, t: &RawTarget) -> Option<(HeaderValue, Bytes)> {
    if t.model.trim().is_empty() {
        issues.push(format!("{tpath}.model"), "model must not be empty");
        return None;
    }
    let Ok(label) = HeaderValue::try_from(format!("{}/{}", t.provider, t.model)) else {
        issues.push(
            format!("{tpath}.model"),
            "model name must be printable ASCII",
        );
        return None;
    };
    match serde_json::to_vec(&t.model) {
        Ok(v) => Some((label, Bytes::from(v))),
        Err(e) => {
            issues.push(format!("{tpath}.model"), e.to_string());
            None
        }
    }
}

/// One configured target, expanded into one target per key of its
/// provider's pool (empty when it is invalid).
fn target(
    issues: &mut Issues,
    tpath: &str,
    index: usize,
    t: &RawTarget,
    raw: &RawConfig,
    providers: &Providers,
) -> Vec<Target> {
    let Some(provider) = target_provider(issues, tpath, &t.provider, raw, providers) else {
        return Vec::new();
    };
    let Some((label, model_json)) = target_model(issues, tpath, t) else {
        return Vec::new();
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
    let degraded = target_tier(issues, tpath, t.tier.as_deref());
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
    let continuation = continuation(issues, tpath, provider.kind, t.continuation.as_deref());
    let (service_tier, tier_fallback) = resolve_service_tier(issues, tpath, provider.kind, t);
    let tier_first_byte = tier_first_byte(issues, tpath, t);
    // A tier without its own price costs the model's price.
    let price_at = |tier: Option<&str>| {
        tier.and_then(|tier| raw_price?.tiers.get(tier))
            .map(|p| Price::new(p.input_per_million, p.output_per_million))
            .or(price)
    };
    let fallback_price = price_at(tier_fallback.as_deref());
    let price = price_at(service_tier.as_deref());
    let Some((urls, endpoint_urls)) = target_urls(issues, tpath, provider, t, providers) else {
        return Vec::new();
    };
    let weight = t.weight.unwrap_or(1).max(1);
    let keys: Vec<Option<Arc<PoolKey>>> = if provider.keys.is_empty() {
        vec![None]
    } else {
        provider.keys.iter().cloned().map(Some).collect()
    };
    let pooled = keys.len() > 1;
    keys.into_iter()
        .map(|key| Target {
            provider: provider.clone(),
            model: t.model.clone(),
            model_json: model_json.clone(),
            label: label.clone(),
            priority: t.priority.unwrap_or(index as u32),
            weight: weight.saturating_mul(key.as_ref().map_or(1, |k| k.weight)),
            price,
            key,
            pooled,
            group: index,
            chat_url: urls.chat.clone(),
            stream_url: urls.stream.clone(),
            endpoint_urls: endpoint_urls.clone(),
            degraded,
            deprecated_after: deprecated_after.clone(),
            context_window: t.context_window,
            continuation,
            service_tier: service_tier.clone(),
            tier_fallback: tier_fallback.clone(),
            tier_first_byte,
            fallback_price,
        })
        .collect()
}

fn target_tier(issues: &mut Issues, tpath: &str, raw: Option<&str>) -> bool {
    match raw {
        None | Some("primary") => false,
        Some("degraded") => true,
        Some(other) => {
            issues.push(
                format!("{tpath}.tier"),
                format!("unknown tier \"{other}\" (known: primary, degraded)"),
            );
            false
        }
    }
}

/// A target's `tier_first_byte`: a positive duration, only with both
/// `service_tier` and `tier_fallback` (there must be a tier to fall back to).
fn tier_first_byte(issues: &mut Issues, tpath: &str, t: &RawTarget) -> Option<Duration> {
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
    let mut seen = HashSet::new();
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

fn continuation(
    issues: &mut Issues,
    tpath: &str,
    kind: ProviderKind,
    raw: Option<&str>,
) -> Continuation {
    match raw {
        None => Continuation::default_for(kind),
        Some("prefill") => Continuation::Prefill,
        Some("instruct") => Continuation::Instruct,
        Some("none") => Continuation::None,
        Some(other) => {
            issues.push(
                format!("{tpath}.continuation"),
                format!("unknown continuation \"{other}\" (known: prefill, instruct, none)"),
            );
            Continuation::None
        }
    }
}

/// The target's chat/stream URLs and its other OpenAI endpoints.
fn target_urls(
    issues: &mut Issues,
    tpath: &str,
    provider: &Provider,
    t: &RawTarget,
    providers: &Providers,
) -> Option<(crate::providers::Urls, crate::api::EndpointUrls)> {
    let base = providers.bases.get(&t.provider)?;
    let version = provider.api_version.as_ref().and_then(|v| v.to_str().ok());
    let adapter = crate::providers::adapter(provider.kind);
    let Some(urls) = adapter.urls(base, &t.model, version) else {
        issues.push(
            format!("{tpath}.model"),
            format!("\"{}\" cannot be part of a URL", t.model),
        );
        return None;
    };
    let mut more = adapter.openai_urls(base, &t.model, version);
    more.set(crate::api::Endpoint::Embeddings, urls.embeddings.clone());
    Some((urls, more))
}

fn alerts(issues: &mut Issues, raw: &raw::RawAlerts) -> AlertSettings {
    let mut webhooks = Vec::new();
    for (i, url) in raw.webhooks.iter().enumerate() {
        match url.parse::<Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) => webhooks.push(u),
            // Not quoted back: a webhook URL may carry a token.
            _ => issues.push(format!("alerts.webhooks[{i}]"), "not an http or https URL"),
        }
    }
    let cost_regression_ratio = raw.cost_regression_ratio.filter(|r| {
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
    AlertSettings {
        webhooks,
        cost_regression_ratio,
        evaluate_every: issues.positive_duration(
            "alerts.evaluate_every".into(),
            raw.evaluate_every.as_ref(),
            Duration::from_secs(30),
        ),
    }
}

/// The `store`, `request_log` and `responses` sections: what is kept where.
struct StoreSettings {
    url: StoreUrl,
    timeout: Duration,
    request_log: Option<Duration>,
    responses: Option<Duration>,
}

fn store(issues: &mut Issues, raw: &RawConfig) -> StoreSettings {
    let url = raw
        .store
        .url
        .clone()
        .unwrap_or_else(|| "sqlite://switchyard.db".to_owned());
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres:")
        || url.starts_with("postgresql:"))
    {
        issues.hint(
            "store.url",
            format!("unsupported store URL \"{url}\""),
            "use sqlite://path/to/file.db or postgres://user@host/db",
        );
    }
    let request_log_retention = issues.retention(
        "request_log.retention",
        raw.request_log.retention.as_ref(),
        Duration::from_secs(7 * 86_400),
    );
    let responses_retention = issues.retention(
        "responses.retention",
        raw.responses.retention.as_ref(),
        Duration::from_secs(30 * 86_400),
    );
    StoreSettings {
        url: StoreUrl(url),
        timeout: store_timeout(issues, raw.store.timeout.as_ref()),
        request_log: raw
            .request_log
            .enabled
            .unwrap_or(false)
            .then_some(request_log_retention),
        responses: raw
            .responses
            .store
            .unwrap_or(true)
            .then_some(responses_retention),
    }
}

fn keys(issues: &mut Issues, raw: &raw::RawKeys) -> VirtualKeySettings {
    VirtualKeySettings {
        cache_ttl: issues.duration(
            "keys.cache_ttl".into(),
            raw.cache_ttl.as_ref(),
            Duration::from_secs(5),
        ),
        failed_auth_per_minute: raw.failed_auth_per_minute.unwrap_or(60),
    }
}

/// `[cluster]`: on with a Redis URL of its own or `[limits]`'s, unless
/// `share_health = false`.
fn cluster(
    issues: &mut Issues,
    raw: &raw::RawCluster,
    limits: &raw::RawLimits,
) -> Option<ClusterSettings> {
    let sync_interval = issues.positive_duration(
        "cluster.sync_interval".into(),
        raw.sync_interval.as_ref(),
        Duration::from_millis(200),
    );
    if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&sync_interval) {
        issues.hint(
            "cluster.sync_interval",
            format!("{sync_interval:?} is outside 10ms..10s"),
            "the default 200ms keeps replicas within a fraction of a second of each other",
        );
    }
    let probe_lease = issues.positive_duration(
        "cluster.probe_lease".into(),
        raw.probe_lease.as_ref(),
        Duration::from_secs(10),
    );
    let replica = match &raw.replica {
        Some(name) if valid_replica_name(name) => Some(name.clone()),
        Some(name) => {
            issues.hint(
                "cluster.replica",
                format!("invalid replica name \"{name}\""),
                "use 1 to 64 letters, digits, '-', '_', '.' or ':', unique in the fleet",
            );
            None
        }
        None => None,
    };
    let url = match (&raw.redis_url, &limits.redis_url) {
        (Some(url), _) => redis_url(issues, "cluster.redis_url", url),
        // `[limits]` reports its own URL's problems.
        (None, Some(url)) => redis_url(&mut Issues::default(), "", url),
        (None, None) => {
            if raw.share_health == Some(true) {
                issues.hint(
                    "cluster.share_health",
                    "sharing health needs Redis",
                    "set cluster.redis_url (or limits.redis_url)",
                );
            }
            None
        }
    };
    let prefix = limits
        .key_prefix
        .clone()
        .unwrap_or_else(|| "switchyard".into());
    url.filter(|_| raw.share_health != Some(false))
        .map(|redis_url| ClusterSettings {
            redis_url,
            key_prefix: prefix,
            replica,
            sync_interval,
            probe_lease,
        })
}

fn valid_replica_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

fn idempotency(issues: &mut Issues, raw: &raw::RawIdempotency) -> Option<IdempotencySettings> {
    let ttl = issues.retention(
        "idempotency.ttl",
        raw.ttl.as_ref(),
        Duration::from_secs(3600),
    );
    let max_entries = match raw.max_entries {
        Some(0) => {
            issues.hint(
                "idempotency.max_entries",
                "must be greater than zero",
                "set `enabled = false` to ignore the Idempotency-Key header",
            );
            10_000
        }
        Some(n) => n as usize,
        None => 10_000,
    };
    let max_bytes = issues.size("idempotency.max_bytes", raw.max_bytes.as_ref(), 64 << 20);
    let max_body = issues.size("idempotency.max_body", raw.max_body.as_ref(), 1 << 20);
    if max_body > max_bytes {
        issues.hint(
            "idempotency.max_body",
            format!("{max_body} bytes is more than idempotency.max_bytes ({max_bytes})"),
            "one stored answer must fit in the whole store",
        );
    }
    raw.enabled.unwrap_or(true).then_some(IdempotencySettings {
        ttl,
        max_entries,
        max_bytes,
        max_body,
    })
}

fn cache(issues: &mut Issues, raw: &raw::RawCache) -> CacheSettings {
    let defaults = CacheSettings::default();
    let max_bytes = issues.size(
        "cache.max_bytes",
        raw.max_bytes.as_ref(),
        defaults.max_bytes,
    );
    let max_entry_bytes = issues.size(
        "cache.max_entry_bytes",
        raw.max_entry_bytes.as_ref(),
        defaults.max_entry_bytes,
    );
    if max_entry_bytes > max_bytes {
        issues.hint(
            "cache.max_entry_bytes",
            format!("{max_entry_bytes} bytes is more than cache.max_bytes ({max_bytes})"),
            "one cached answer must fit in the whole cache",
        );
    }
    CacheSettings {
        max_bytes,
        max_entry_bytes,
    }
}
