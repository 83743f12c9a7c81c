use super::*;

fn env_with_keys(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY"
        | "TOGETHER_API_KEY"
        | "ANTHROPIC_API_KEY"
        | "ANTHROPIC_API_KEY_2"
        | "GEMINI_API_KEY"
        | "SWITCHYARD_ADMIN_KEY" => Some(format!("sk-test-{name}-0123456789")),
        _ => None,
    }
}

fn errors(text: &str) -> Vec<String> {
    match Config::from_toml(text, env_with_keys) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.0.iter().map(|i| i.to_string()).collect(),
    }
}

#[test]
fn shipped_example_validates() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/switchyard.toml"
    ))
    .unwrap();
    let config = Config::from_toml(&text, env_with_keys).unwrap();
    assert_eq!(
        config.route_names(),
        ["batch", "chat-default", "embeddings", "long-context"]
    );
    let batch = config.route("batch").unwrap();
    assert_eq!(batch.targets[0].service_tier.as_deref(), Some("flex"));
    assert_eq!(batch.targets[0].tier_fallback.as_deref(), Some("default"));
    assert_eq!(
        batch.targets[0].tier_first_byte,
        Some(Duration::from_secs(10))
    );
    assert_eq!(batch.targets[0].price, Some(Price::new(0.075, 0.30)));
    assert_eq!(
        batch.targets[0].fallback_price,
        Some(Price::new(0.15, 0.60))
    );
    let long = config.route("long-context").unwrap();
    assert_eq!(long.targets.len(), 4, "the claude pool has two keys");
    assert!(long.targets[3].degraded);
    assert_eq!(
        long.slo_degrade,
        Some(SloDegrade {
            on: Severity::Page,
            share: 0.5
        })
    );
    let chat = config.route("chat-default").unwrap();
    assert_eq!(chat.targets.len(), 3);
    assert_eq!(chat.targets[0].label(), "openai/gpt-4o");
    // Per-route override changes only the key it names.
    assert_eq!(chat.timeouts.first_byte, Duration::from_secs(10));
    assert_eq!(chat.timeouts.total, Duration::from_secs(120));
    let emb = config.route("embeddings").unwrap();
    assert_eq!(emb.retry.max_attempts_per_target, 3);
    assert_eq!(emb.retry.backoff.base(), Duration::from_millis(100));
    assert_eq!(config.server.max_request_body, 8 << 20);
    assert_eq!(config.server.listen.port(), 8080);
}

#[test]
fn secrets_never_show_in_debug() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/switchyard.toml"
    ))
    .unwrap();
    let config = Config::from_toml(&text, env_with_keys).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("sk-test-"), "{debug}");
    assert!(debug.contains("<redacted>"));
}

#[test]
fn toml_errors_always_say_what_is_wrong() {
    // Fuzzing found control characters in comments reported with no message.
    for text in ["# a\u{0}b\n", "x = 1\n# \u{7f}\n"] {
        let errs = Config::from_toml(text, env_with_keys).unwrap_err();
        let issue = &errs.0[0];
        assert!(issue.message.contains("unexpected character"), "{issue:?}");
        assert!(issue.path.starts_with("line "), "{issue:?}");
    }
}

#[test]
fn unknown_provider_names_the_path_and_known_ones() {
    let errs = errors(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:1/v1"
[providers.backup]
base_url = "http://127.0.0.1:2/v1"
[routes.chat-default]
targets = [{ provider = "openai", model = "a" }, { provider = "opnai", model = "b" }]
"#,
    );
    assert_eq!(
        errs,
        vec![
            r#"routes.chat-default.targets[1].provider: unknown provider "opnai" (known: backup, openai) (hint: did you mean `openai`?)"#
        ]
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let errs = errors(
        r#"
[server]
listen = "nowhere"
max_request_body = "4 parsecs"
[defaults.retry]
max_attempts_per_target = 0
base_backoff = "2s"
max_backoff = "1s"
jitter = "lots"
[defaults.timeouts]
total = "soon"
[providers.p]
base_url = "ftp://example"
api_key_env = "MISSING_KEY"
[routes.r]
targets = []
[alerts]
webhooks = ["not a url"]
"#,
    );
    let joined = errs.join("\n");
    for path in [
        "server.listen:",
        "server.max_request_body:",
        "defaults.retry.max_attempts_per_target:",
        "defaults.retry.max_backoff:",
        "defaults.retry.jitter:",
        "defaults.timeouts.total:",
        "providers.p.base_url:",
        "routes.r.targets:",
        "alerts.webhooks[0]:",
    ] {
        assert!(joined.contains(path), "missing {path} in:\n{joined}");
    }
    assert!(joined.contains("hint:"), "{joined}");
}

#[test]
fn missing_env_key_is_an_error_with_a_hint() {
    let errs = errors(
        r#"
[providers.p]
base_url = "https://example.com/v1"
api_key_env = "NOT_SET_ANYWHERE"
[routes.r]
targets = [{ provider = "p", model = "m" }]
"#,
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("providers.p.api_key_env: environment variable \"NOT_SET_ANYWHERE\"")
    );
    assert!(errs[0].contains("export NOT_SET_ANYWHERE"));
}

#[test]
fn unknown_keys_are_rejected_with_line_and_expected_keys() {
    let e = Config::from_toml("\n[defaults.retry]\nretyr = 3\n", env_with_keys).unwrap_err();
    // The semantic checks run too: the file also has no routes.
    assert_eq!(e.0.len(), 2, "{e}");
    let issue = &e.0[0];
    assert_eq!(issue.path, "defaults.retry.retyr");
    assert_eq!(issue.line, Some(3));
    assert_eq!(issue.message, "unknown field `retyr`");
    let hint = issue.hint.as_deref().unwrap_or_default();
    assert!(hint.contains("max_attempts_per_target"), "{hint}");
    assert!(
        e.to_string().starts_with("line 3: defaults.retry.retyr:"),
        "{e}"
    );
    assert_eq!(e.0[1].path, "routes");
}

#[test]
fn every_kind_of_mistake_is_reported_in_one_pass_with_suggestions() {
    let text = r#"
[server]
listen = "localhost:eighty"
listn = "0.0.0.0:8080"

[defaults.retry]
max_attempts_per_target = 0
base_backof = "100ms"

[providers.openai]
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[routes.chat]
targets = [
  { provider = "openai", model = "gpt-4o" },
  { provider = "opnai", model = "gpt-4o-mini" },
]
"#;
    let e = Config::from_toml(text, env_with_keys).unwrap_err();
    let found: Vec<(Option<usize>, &str, Option<&str>)> =
        e.0.iter()
            .map(|i| (i.line, i.path.as_str(), i.hint.as_deref()))
            .collect();
    assert_eq!(
        found,
        [
            (
                Some(3),
                "server.listen",
                Some("write IP:PORT, e.g. \"0.0.0.0:8080\"")
            ),
            (Some(4), "server.listn", Some("did you mean `listen`?")),
            (
                Some(7),
                "defaults.retry.max_attempts_per_target",
                Some("1 means no retry on the same target (failover still happens)")
            ),
            (
                Some(8),
                "defaults.retry.base_backof",
                Some("did you mean `base_backoff`?")
            ),
            (
                Some(17),
                "routes.chat.targets[1].provider",
                Some("did you mean `openai`?")
            ),
        ],
        "{e}"
    );
}

#[test]
fn first_byte_longer_than_total_is_flagged() {
    let errs = errors(
        r#"
[providers.p]
base_url = "http://127.0.0.1:9/v1"
[routes.r]
targets = [{ provider = "p", model = "m" }]
[routes.r.timeouts]
first_byte = "10s"
total = "5s"
"#,
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("routes.r.timeouts.first_byte:"),
        "{}",
        errs[0]
    );
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_size("4MiB"), Some(4 << 20));
    assert_eq!(parse_size("512KB"), Some(512_000));
    assert_eq!(parse_size("17"), Some(17));
    assert_eq!(parse_size("4 MiB"), Some(4 << 20));
    assert_eq!(parse_size("lots"), None);
}

#[test]
fn store_and_request_log_settings() {
    let base = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    let config = Config::from_toml(base, |_| None).unwrap();
    assert_eq!(config.request_log, None, "off unless enabled");
    assert_eq!(config.store_url.0, "sqlite://switchyard.db");
    let on = format!("{base}[request_log]\nenabled = true\nretention = \"2d\"\n[store]\nurl = \"postgres://u:hunter2@db/x\"\n");
    let config = Config::from_toml(&on, |_| None).unwrap();
    assert_eq!(config.request_log, Some(Duration::from_secs(2 * 86_400)));
    assert!(
        !format!("{config:?}").contains("hunter2"),
        "store passwords never show in Debug"
    );
    let errs = errors(&format!("{base}[store]\nurl = \"mysql://x\"\n"));
    assert!(
        errs[0].starts_with("store.url: unsupported store URL"),
        "{errs:?}"
    );
}

#[test]
fn provider_kinds_build_their_urls_and_auth() {
    let config = Config::from_toml(
        r#"
[providers.oai]
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
[providers.az]
kind = "azure_openai"
base_url = "https://res.openai.azure.com/"
api_key_env = "OPENAI_API_KEY"
[providers.claude]
kind = "anthropic"
api_key_env = "OPENAI_API_KEY"
default_max_tokens = 1024
[providers.gem]
kind = "gemini"
api_key_env = "OPENAI_API_KEY"
[routes.chat]
targets = [
  { provider = "oai", model = "gpt-4o" },
  { provider = "az", model = "gpt-4o-prod" },
  { provider = "claude", model = "claude-sonnet-4-5" },
  { provider = "gem", model = "gemini-2.5-flash" },
]
"#,
        env_with_keys,
    )
    .unwrap();
    let t = &config.route("chat").unwrap().targets;
    assert_eq!(t[0].chat_url, "https://api.openai.com/v1/chat/completions");
    assert_eq!(
        t[1].chat_url,
        "https://res.openai.azure.com/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(t[2].chat_url, "https://api.anthropic.com/v1/messages");
    assert!(t[2]
        .endpoint_urls
        .get(crate::api::Endpoint::Embeddings)
        .is_none());
    assert_eq!(t[2].provider.default_max_tokens, 1024);
    assert_eq!(
        t[3].stream_url,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let auth = |i: usize| t[i].key.as_ref().unwrap().value.header_value().clone();
    assert_eq!(auth(0), "Bearer sk-test-OPENAI_API_KEY-0123456789");
    assert_eq!(auth(1), "sk-test-OPENAI_API_KEY-0123456789");
    assert_eq!(t[1].provider.kind.auth_header(), "api-key");
    assert_eq!(t[2].provider.kind.auth_header(), "x-api-key");
    assert_eq!(t[3].provider.kind.auth_header(), "x-goog-api-key");
}

#[test]
fn a_key_pool_yields_one_target_per_key() {
    let config = Config::from_toml(
        r#"
[providers.oai]
base_url = "http://127.0.0.1:1/v1"
keys = [
  { name = "team-a", env = "OPENAI_API_KEY", weight = 3 },
  { name = "team-b", env = "TOGETHER_API_KEY" },
]
[providers.other]
base_url = "http://127.0.0.1:2/v1"
[routes.chat]
targets = [{ provider = "oai", model = "gpt-4o", weight = 2 }, { provider = "other", model = "m" }]
"#,
        env_with_keys,
    )
    .unwrap();
    let t = &config.route("chat").unwrap().targets;
    assert_eq!(t.len(), 3);
    assert_eq!(t[0].health_key(), "oai/gpt-4o@default#team-a");
    assert_eq!(t[1].health_key(), "oai/gpt-4o@default#team-b");
    assert_eq!(t[2].health_key(), "other/m@default");
    assert_eq!((t[0].weight, t[1].weight), (6, 2));
    assert!(t[0].is_sibling_of(&t[1]) && !t[0].is_sibling_of(&t[2]));
    assert_eq!(t[0].priority, t[1].priority);
    // The label (headers, metrics) names the model, not the key.
    assert_eq!(t[1].label(), "oai/gpt-4o");
    let debug = format!("{config:?}");
    assert!(!debug.contains("sk-test-"), "{debug}");
}

#[test]
fn provider_and_target_mistakes_are_explained() {
    let errs = errors(
        r#"
[providers.a]
kind = "azure_openai"
[providers.b]
kind = "cohere"
base_url = "http://127.0.0.1:1/v1"
[providers.c]
base_url = "http://127.0.0.1:1/v1"
api_key_env = "OPENAI_API_KEY"
keys = [{ name = "x", env = "OPENAI_API_KEY" }]
[providers.d]
base_url = "http://127.0.0.1:1/v1"
api_version = "2024-01-01"
keys = [{ name = "dup", env = "OPENAI_API_KEY" }, { name = "dup", env = "MISSING_KEY", weight = 0 }]
[routes.r]
targets = [
  { provider = "d", model = "m", tier = "cheap", deprecated_after = "2026-02-30", context_window = 0 },
]
"#,
    );
    let has = |needle: &str| errs.iter().any(|e| e.contains(needle));
    assert!(has("providers.a.base_url: missing base_url"), "{errs:#?}");
    assert!(
        has("providers.b.kind: unknown provider kind \"cohere\""),
        "{errs:#?}"
    );
    assert!(
        has("providers.c.keys: both api_key_env and keys are set"),
        "{errs:#?}"
    );
    assert!(
        has("providers.d.api_version: only azure_openai and anthropic"),
        "{errs:#?}"
    );
    assert!(
        has("providers.d.keys[1].name: duplicate key name \"dup\""),
        "{errs:#?}"
    );
    assert!(
        has("providers.d.keys[1].weight: must be at least 1"),
        "{errs:#?}"
    );
    assert!(
        has("providers.d.keys[1].env: environment variable \"MISSING_KEY\""),
        "{errs:#?}"
    );
    assert!(
        has("routes.r.targets[0].tier: unknown tier \"cheap\""),
        "{errs:#?}"
    );
    assert!(
        has("routes.r.targets[0].deprecated_after: invalid date \"2026-02-30\""),
        "{errs:#?}"
    );
    assert!(
        has("routes.r.targets[0].context_window: must be at least 1"),
        "{errs:#?}"
    );
}

#[test]
fn deprecation_dates_expire_after_their_day_and_warn_before() {
    let d = Deprecation::parse("2026-12-01").unwrap();
    let day = |y, m, dd| {
        let noon = jiff::civil::date(y, m, dd).at(12, 0, 0, 0);
        let at = jiff::tz::Offset::UTC.to_timestamp(noon).unwrap();
        std::time::SystemTime::from(at)
    };
    let month = Duration::from_secs(30 * 86_400);
    assert!(!d.expired(day(2026, 12, 1)));
    assert!(d.expired(day(2026, 12, 2)));
    assert!(d.warning(day(2026, 11, 25), month));
    assert!(d.warning(day(2026, 12, 1), month));
    assert!(!d.warning(day(2026, 10, 1), month));
    assert!(!d.warning(day(2026, 12, 2), month));
    assert_eq!(d.last_day, jiff::civil::date(2026, 12, 1));
    assert!(Deprecation::parse("2024-02-29").is_some());
    assert!(Deprecation::parse("2023-02-29").is_none());
    assert!(Deprecation::parse("2026-1-01").is_none());
}

#[test]
fn limits_settings() {
    let base = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    let config = Config::from_toml(base, |_| None).unwrap();
    assert_eq!(config.limits, LimitSettings::default(), "local unless set");
    assert_eq!(config.limits.key_prefix, "switchyard");
    let shared = format!(
        "{base}[limits]\nredis_url = \"redis://:hunter2@127.0.0.1:6379/0\"\nkey_prefix = \"gw-prod\"\n"
    );
    let config = Config::from_toml(&shared, |_| None).unwrap();
    assert_eq!(config.limits.key_prefix, "gw-prod");
    assert_eq!(
        config.limits.redis_url.as_ref().map(|u| u.0.as_str()),
        Some("redis://:hunter2@127.0.0.1:6379/0")
    );
    assert!(
        !format!("{config:?}").contains("hunter2"),
        "Redis passwords never show in Debug"
    );
    let errs = errors(&format!(
        "{base}[limits]\nredis_url = \"rediss://:hunter2@h:6380\"\nkey_prefix = \"a {{b}}\"\n"
    ));
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("limits.redis_url: TLS"), "{errs:?}");
    assert!(
        errs[1].starts_with("limits.key_prefix: invalid"),
        "{errs:?}"
    );
    assert!(
        errs.iter().all(|e| !e.contains("hunter2")),
        "errors never echo the URL: {errs:?}"
    );
    let errs = errors(&format!("{base}[limits]\nredis_url = \"127.0.0.1:6379\"\n"));
    assert!(errs[0].contains("(hint: write e.g."), "{errs:?}");
}

const ONE_ROUTE: &str = r#"
[providers.p]
base_url = "http://127.0.0.1:1/v1"
[routes.r]
targets = [{ provider = "p", model = "m" }]
"#;

#[test]
fn admin_and_key_settings() {
    let config = Config::from_toml(ONE_ROUTE, env_with_keys).unwrap();
    assert!(config.admin.key.is_none() && config.admin.listen.is_none());
    assert_eq!(config.keys.cache_ttl, Duration::from_secs(5));

    let text = format!(
        "[admin]\nkey_env = \"ADMIN\"\nlisten = \"127.0.0.1:8081\"\n[keys]\ncache_ttl = \"2s\"\n{ONE_ROUTE}"
    );
    let config = Config::from_toml(&text, |name| {
        (name == "ADMIN").then(|| " admin-key-of-enough-length ".to_owned())
    })
    .unwrap();
    assert_eq!(
        config.admin.key.as_ref().map(|k| k.expose()),
        Some("admin-key-of-enough-length")
    );
    assert_eq!(config.admin.listen, Some("127.0.0.1:8081".parse().unwrap()));
    assert_eq!(config.keys.cache_ttl, Duration::from_secs(2));
    assert!(!format!("{config:?}").contains("admin-key-of"));
}

#[test]
fn admin_key_problems_name_the_key_path() {
    let errs = errors(&format!(
        "[admin]\nkey_env = \"NOT_SET\"\nlisten = \"everywhere\"\n[keys]\ncache_ttl = \"soon\"\n{ONE_ROUTE}"
    ));
    let joined = errs.join("\n");
    for expected in [
        "admin.key_env: environment variable \"NOT_SET\" is not set or empty",
        "admin.listen: invalid address \"everywhere\"",
        "keys.cache_ttl: invalid duration \"soon\"",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected} in:\n{joined}"
        );
    }
    for (value, problem) in [
        ("short", "fewer than 16 characters"),
        ("sy-0123456789abcdefghijklmnop", "holds a virtual key"),
    ] {
        let text = format!("[admin]\nkey_env = \"ADMIN\"\n{ONE_ROUTE}");
        let e = Config::from_toml(&text, |_| Some(value.to_owned())).unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert_eq!(e.0[0].path, "admin.key_env");
        assert!(e.0[0].message.contains(problem), "{e}");
        assert!(!e.to_string().contains(value), "never echo the key: {e}");
    }
    let e = Config::from_toml(
        &format!("[admin]\nlisten = \"127.0.0.1:8081\"\n{ONE_ROUTE}"),
        env_with_keys,
    )
    .unwrap_err();
    assert_eq!(e.0[0].path, "admin.listen");
}

#[test]
fn on_timeout_defaults_to_next_target_and_is_validated() {
    let base = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    let config = Config::from_toml(base, |_| None).unwrap();
    let r = config.route("r").unwrap();
    assert_eq!(r.retry.on_timeout, OnTimeout::NextTarget);
    let text = format!("{base}[routes.r.retry]\non_timeout = \"same_target\"\n");
    let config = Config::from_toml(&text, |_| None).unwrap();
    assert_eq!(
        config.route("r").unwrap().retry.on_timeout,
        OnTimeout::SameTarget
    );
    let errs = errors(&format!(
        "{base}[routes.r.retry]\non_timeout = \"sometimes\"\n"
    ));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("routes.r.retry.on_timeout:"),
        "{}",
        errs[0]
    );
    assert!(
        errs[0].contains("next_target, same_target or stop"),
        "{}",
        errs[0]
    );
}

#[test]
fn an_open_base_past_the_default_open_max_raises_it() {
    let base = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    let config = Config::from_toml(base, |_| None).unwrap();
    assert_eq!(
        config.route("r").unwrap().breaker.open_max,
        Duration::from_secs(30)
    );
    let text = format!("[defaults.breaker]\nopen_base = \"60s\"\n{base}");
    let config = Config::from_toml(&text, |_| None).unwrap();
    assert_eq!(
        config.route("r").unwrap().breaker.open_max,
        Duration::from_secs(60)
    );
    let errs = errors(&format!(
        "[defaults.breaker]\nopen_base = \"60s\"\nopen_max = \"10s\"\n{base}"
    ));
    assert!(
        errs[0].starts_with("defaults.breaker.open_max:"),
        "{errs:?}"
    );
}

#[test]
fn max_header_bytes_is_bounded() {
    let base = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    let config = Config::from_toml(base, |_| None).unwrap();
    assert_eq!(config.server.max_header_bytes, 32 << 10);
    let errs = errors(&format!("[server]\nmax_header_bytes = \"10MiB\"\n{base}"));
    assert!(errs[0].starts_with("server.max_header_bytes:"), "{errs:?}");
}

#[test]
fn client_socket_settings_are_bounded() {
    let base = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    let config = Config::from_toml(base, |_| None).unwrap();
    assert_eq!(config.server.send_buffer, 256 << 10);
    assert_eq!(
        config.server.write_timeout,
        std::time::Duration::from_secs(30)
    );
    let errs = errors(&format!("[server]\nsend_buffer = \"1KiB\"\n{base}"));
    assert!(errs[0].starts_with("server.send_buffer:"), "{errs:?}");
    let errs = errors(&format!("[server]\nwrite_timeout = \"0s\"\n{base}"));
    assert!(errs[0].starts_with("server.write_timeout:"), "{errs:?}");
}

#[test]
fn durations_are_capped_so_no_deadline_can_overflow() {
    const BASE: &str = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    // Each of these parsed before and made `Instant::now() + d` (or the
    // breaker's open time) panic on the request path.
    for (section, key, path) in [
        ("defaults.timeouts", "total", "defaults.timeouts.total"),
        (
            "defaults.timeouts",
            "first_byte",
            "defaults.timeouts.first_byte",
        ),
        (
            "defaults.retry",
            "max_retry_after",
            "defaults.retry.max_retry_after",
        ),
        ("defaults.breaker", "open_max", "defaults.breaker.open_max"),
        ("server", "drain_timeout", "server.drain_timeout"),
        ("server", "drain_delay", "server.drain_delay"),
        ("keys", "cache_ttl", "keys.cache_ttl"),
        ("store", "timeout", "store.timeout"),
    ] {
        for huge in ["100000000y", "18446744073709551615s"] {
            let text = format!("[{section}]\n{key} = \"{huge}\"\n{BASE}");
            let errs = errors(&text);
            assert!(
                errs.iter().any(|e| e.starts_with(&format!("{path}: "))),
                "{path} = {huge}: {errs:?}"
            );
        }
    }
    let route = format!("{BASE}[routes.r.timeouts]\nidle = \"2y\"\n");
    let errs = errors(&route);
    assert!(
        errs.iter()
            .any(|e| e.starts_with("routes.r.timeouts.idle: ") && e.contains("maximum of 365 days")),
        "{errs:?}"
    );
    let hedge = format!("{BASE}hedge_after = \"18446744073709551615s\"\n");
    assert!(errors(&hedge)
        .iter()
        .any(|e| e.starts_with("routes.r.hedge_after")));
    // A year is allowed; retention may be longer, up to ten years.
    let ok =
        format!("[defaults.timeouts]\ntotal = \"365d\"\n[request_log]\nretention = \"5y\"\n{BASE}");
    let config = Config::from_toml(&ok, env_with_keys).unwrap();
    assert_eq!(config.route("r").unwrap().timeouts.total, MAX_DURATION);
    let long = format!("[request_log]\nretention = \"11y\"\n{BASE}");
    assert!(errors(&long)[0].starts_with("request_log.retention: "));
}

#[test]
fn store_timeout_and_drain_delay() {
    const BASE: &str = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    let config = Config::from_toml(BASE, env_with_keys).unwrap();
    assert_eq!(config.store_timeout, Duration::from_secs(5));
    assert_eq!(config.server.drain_delay, Duration::ZERO);
    let set = format!("[store]\ntimeout = \"750ms\"\n[server]\ndrain_delay = \"5s\"\n{BASE}");
    let config = Config::from_toml(&set, env_with_keys).unwrap();
    assert_eq!(config.store_timeout, Duration::from_millis(750));
    assert_eq!(config.server.drain_delay, Duration::from_secs(5));
    for bad in ["0s", "10ms", "6m"] {
        let errs = errors(&format!("[store]\ntimeout = \"{bad}\"\n{BASE}"));
        assert!(
            errs[0].starts_with("store.timeout: ") && errs[0].contains("hint:"),
            "{bad}: {errs:?}"
        );
    }
    let changed = Config::from_toml(&set, env_with_keys).unwrap();
    let running = Config::from_toml(BASE, env_with_keys).unwrap();
    assert!(running
        .restart_only_changes(&changed)
        .contains(&"store.timeout"));
}

#[test]
fn resume_defaults_to_continue_and_continuation_to_the_provider_kind() {
    let base = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[providers.a]\nkind = \"anthropic\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"ANTHROPIC_API_KEY\"\n";
    let routes = "[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }, { provider = \"a\", model = \"c\" }, { provider = \"p\", model = \"v\", continuation = \"prefill\" }]\n";
    let config = Config::from_toml(&format!("{base}{routes}"), env_with_keys).unwrap();
    let r = config.route("r").unwrap();
    assert!(r.resume);
    let modes: Vec<_> = r.targets.iter().map(|t| t.continuation).collect();
    assert_eq!(
        modes,
        [
            Continuation::Instruct,
            Continuation::Prefill,
            Continuation::Prefill
        ]
    );
    let off =
        Config::from_toml(&format!("{base}{routes}resume = \"off\"\n"), env_with_keys).unwrap();
    assert!(!off.route("r").unwrap().resume);
    let errs = errors(&format!(
        "{base}[routes.r]\nresume = \"maybe\"\ntargets = [{{ provider = \"p\", model = \"m\", continuation = \"guess\" }}]\n"
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("routes.r.resume: unknown resume \"maybe\"")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("routes.r.targets[0].continuation: unknown continuation")),
        "{errs:?}"
    );
}

#[test]
fn service_tiers_are_validated_with_their_key_paths() {
    let provider = |kind: &str| {
        format!("[providers.p]\nkind = \"{kind}\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key_env = \"OPENAI_API_KEY\"\n")
    };
    let route = |settings: &str| {
        format!("[routes.r]\ntargets = [{{ provider = \"p\", model = \"m\"{settings} }}]\n")
    };
    let ok = format!(
        "{}{}",
        provider("openai"),
        route(r#", service_tier = "flex", tier_fallback = "default""#)
    );
    let config = Config::from_toml(&ok, env_with_keys).unwrap();
    let t = &config.route("r").unwrap().targets[0];
    assert_eq!(t.service_tier.as_deref(), Some("flex"));
    assert_eq!(t.tier_fallback.as_deref(), Some("default"));

    let errs = errors(&format!(
        "{}{}",
        provider("anthropic"),
        route(r#", service_tier = "flex""#)
    ));
    assert!(
        errs[0].starts_with(
            "routes.r.targets[0].service_tier: anthropic targets cannot take a service tier"
        ),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{}{}",
        provider("openai"),
        route(r#", service_tier = """#)
    ));
    assert!(
        errs[0].starts_with("routes.r.targets[0].service_tier: must be a tier name"),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{}{}",
        provider("openai"),
        route(r#", tier_fallback = "default""#)
    ));
    assert!(
        errs[0].starts_with("routes.r.targets[0].tier_fallback: needs service_tier"),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{}{}",
        provider("azure_openai"),
        route(r#", service_tier = "flex", tier_fallback = "flex""#)
    ));
    assert!(
        errs[0].starts_with("routes.r.targets[0].tier_fallback: must differ"),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{ok}[prices.m]\ninput_per_million = 1.0\noutput_per_million = 1.0\ntiers.flex = {{ input_per_million = -1.0, output_per_million = 0.5 }}\n"
    ));
    assert!(
        errs[0].starts_with("prices.\"m\".tiers.flex.input_per_million: -1 is not a price"),
        "{errs:?}"
    );
}

#[test]
fn values_of_the_wrong_type_are_reported_with_the_rest_at_their_file_paths() {
    let text = r#"[server]
listen = 5
lisn = "x"

[providers.openai]
base_url = "https://api.openai.com/v1"

[routes.chat]
targets = [
  { provider = "openai", model = 4 },
  { provider = "openai", weight = "heavy", model = "b" },
  { provider = "opnai", model = "c" },
]
[routes.other]
targets = "nope"
"#;
    let e = Config::from_toml(text, env_with_keys).unwrap_err();
    let found: Vec<(Option<usize>, &str)> = e.0.iter().map(|i| (i.line, i.path.as_str())).collect();
    assert_eq!(
        found,
        [
            (Some(2), "server.listen"),
            (Some(3), "server.lisn"),
            (Some(10), "routes.chat.targets[0].model"),
            (Some(11), "routes.chat.targets[1].weight"),
            // Two elements before it were taken out for their types: the
            // validator's targets[0] is still named as the file has it.
            (Some(12), "routes.chat.targets[2].provider"),
            (Some(15), "routes.other.targets"),
        ],
        "{e}"
    );
    assert!(e.0[0].message.contains("invalid type"), "{e}");
    assert_eq!(e.0[4].hint.as_deref(), Some("did you mean `openai`?"));
}

#[test]
fn slo_degradation_is_validated_with_its_key_paths() {
    let base = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n";
    let degraded = r#"{ provider = "p", model = "m" }, { provider = "p", model = "small", tier = "degraded" }"#;
    let route = |settings: &str, targets: &str| {
        format!("{base}[routes.r]\n{settings}\ntargets = [{targets}]\n")
    };
    let config = Config::from_toml(
        &route(
            "slo = { success = 0.999 }\ndegrade_on = \"ticket\"\ndegrade_share = 0.25",
            degraded,
        ),
        env_with_keys,
    )
    .unwrap();
    assert_eq!(
        config.route("r").unwrap().slo_degrade,
        Some(SloDegrade {
            on: Severity::Ticket,
            share: 0.25
        })
    );
    let config = Config::from_toml(
        &route("slo = { success = 0.999 }\ndegrade_on = \"page\"", degraded),
        env_with_keys,
    )
    .unwrap();
    assert_eq!(config.route("r").unwrap().slo_degrade.unwrap().share, 1.0);

    let cases = [
        (
            route("degrade_on = \"page\"", degraded),
            "routes.r.degrade_on: degrade_on needs the route's slo",
        ),
        (
            route(
                "slo = { success = 0.999 }\ndegrade_on = \"page\"",
                r#"{ provider = "p", model = "m" }"#,
            ),
            "routes.r.degrade_on: degrade_on needs a target with tier = \"degraded\"",
        ),
        (
            route("slo = { success = 0.999 }\ndegrade_on = \"warn\"", degraded),
            "routes.r.degrade_on: unknown severity \"warn\" (known: page, ticket)",
        ),
        (
            route(
                "slo = { success = 0.999 }\ndegrade_on = \"page\"\ndegrade_share = 1.5",
                degraded,
            ),
            "routes.r.degrade_share: 1.5 is not between 0.0 and 1.0",
        ),
        (
            route("slo = { success = 0.999 }\ndegrade_share = 0.5", degraded),
            "routes.r.degrade_share: degrade_share has no effect without degrade_on",
        ),
    ];
    for (text, expected) in cases {
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "{expected}: {errs:?}"
        );
    }
}

#[test]
fn tier_first_byte_needs_both_tiers_and_must_beat_first_byte() {
    let text = |settings: &str, first_byte: &str| {
        format!(
            "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{{ provider = \"p\", model = \"m\"{settings} }}]\n[routes.r.timeouts]\nfirst_byte = \"{first_byte}\"\n"
        )
    };
    const TIERS: &str = r#", service_tier = "flex", tier_fallback = "default""#;
    let config = Config::from_toml(
        &text(&format!("{TIERS}, tier_first_byte = \"2s\""), "10s"),
        env_with_keys,
    )
    .unwrap();
    assert_eq!(
        config.route("r").unwrap().targets[0].tier_first_byte,
        Some(Duration::from_secs(2))
    );
    for (settings, first_byte, expected) in [
        (
            r#", service_tier = "flex", tier_first_byte = "2s""#.to_owned(),
            "10s",
            "routes.r.targets[0].tier_first_byte: needs service_tier and tier_fallback",
        ),
        (
            format!("{TIERS}, tier_first_byte = \"10s\""),
            "10s",
            "routes.r.targets[0].tier_first_byte: 10s is not shorter than the route's first_byte (10s)",
        ),
        (
            format!("{TIERS}, tier_first_byte = \"0s\""),
            "10s",
            "routes.r.targets[0].tier_first_byte: must be greater than zero",
        ),
        (
            format!("{TIERS}, tier_first_byte = \"soon\""),
            "10s",
            "routes.r.targets[0].tier_first_byte: invalid duration \"soon\"",
        ),
    ] {
        let errs = errors(&text(&settings, first_byte));
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "{expected}: {errs:?}"
        );
    }
}

#[test]
fn idempotency_settings_default_and_are_validated() {
    let config = Config::from_toml(ONE_ROUTE, env_with_keys).unwrap();
    let on = config.idempotency.expect("on by default");
    assert_eq!(on.ttl, Duration::from_secs(3600));
    assert_eq!(
        (on.max_entries, on.max_bytes, on.max_body),
        (10_000, 64 << 20, 1 << 20)
    );

    let off = format!("[idempotency]\nenabled = false\n{ONE_ROUTE}");
    assert!(Config::from_toml(&off, env_with_keys)
        .unwrap()
        .idempotency
        .is_none());

    let bad = format!(
        "[idempotency]\nttl = \"0s\"\nmax_entries = 0\nmax_bytes = \"1KiB\"\nmax_body = \"2KiB\"\nmax_bodies = 1\n{ONE_ROUTE}"
    );
    let errs = errors(&bad);
    for path in [
        "idempotency.ttl: must be greater than zero",
        "idempotency.max_entries: must be greater than zero",
        "idempotency.max_body: 2048 bytes is more than idempotency.max_bytes (1024)",
        "idempotency.max_bodies",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(path)),
            "{path} not in {errs:?}"
        );
    }
}

#[test]
fn cluster_sharing_follows_the_redis_urls_and_is_validated() {
    let config = Config::from_toml(ONE_ROUTE, env_with_keys).unwrap();
    assert_eq!(config.cluster, None, "off without Redis");

    let limits_only = format!(
        "[limits]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"fleet\"\n{ONE_ROUTE}"
    );
    let on = Config::from_toml(&limits_only, env_with_keys)
        .unwrap()
        .cluster
        .expect("on with [limits]'s Redis");
    assert_eq!(on.redis_url, RedisUrl("redis://127.0.0.1:6379".into()));
    assert_eq!(on.key_prefix, "fleet");
    assert_eq!(
        (on.replica, on.sync_interval, on.probe_lease),
        (None, Duration::from_millis(200), Duration::from_secs(10))
    );

    let text = format!("[cluster]\nshare_health = false\n{limits_only}");
    assert_eq!(
        Config::from_toml(&text, env_with_keys).unwrap().cluster,
        None
    );

    let bad = format!(
        "[cluster]\nredis_url = \"rediss://h:6379\"\nreplica = \"a b|c\"\nsync_interval = \"1ms\"\nprobe_lease = \"0s\"\n{ONE_ROUTE}"
    );
    let errs = errors(&bad);
    for path in [
        "cluster.redis_url: TLS to Redis (rediss://) is not supported",
        "cluster.replica: invalid replica name",
        "cluster.sync_interval: 1ms is outside 10ms..10s",
        "cluster.probe_lease: must be greater than zero",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(path)),
            "{path} not in {errs:?}"
        );
    }
    let no_redis = format!("[cluster]\nshare_health = true\n{ONE_ROUTE}");
    assert!(errors(&no_redis)[0].starts_with("cluster.share_health: sharing health needs Redis"));
}

#[test]
fn tls_tables_need_both_files_and_admin_tls_needs_its_listener() {
    let config = Config::from_toml(
        &format!(
            "[server.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n\
             [admin]\nkey_env = \"SWITCHYARD_ADMIN_KEY\"\nlisten = \"127.0.0.1:8081\"\n\
             [admin.tls]\ncert_file = \"a.pem\"\nkey_file = \"b.pem\"\nclient_ca_file = \"ca.pem\"\n{ONE_ROUTE}"
        ),
        env_with_keys,
    )
    .unwrap();
    let server = config.server.tls.as_ref().unwrap();
    assert_eq!(
        (
            server.section,
            server.cert_file.to_str(),
            server.client_ca_file.as_ref()
        ),
        ("server.tls", Some("c.pem"), None)
    );
    let admin = config.admin.tls.as_ref().unwrap();
    assert_eq!(admin.client_ca_file.as_deref(), Some(Path::new("ca.pem")));
    assert!(Config::from_toml(ONE_ROUTE, env_with_keys)
        .unwrap()
        .server
        .tls
        .is_none());

    let joined = errors(&format!(
        "[server.tls]\ncert_file = \"\"\nclient_ca_file = \"ca.pem\"\n\
         [admin.tls]\ncert_file = \"a.pem\"\nkey_file = \"b.pem\"\n{ONE_ROUTE}"
    ))
    .join("\n");
    for expected in [
        "server.tls.cert_file: empty path",
        "server.tls.key_file: missing",
        "unknown field `client_ca_file`",
        "admin.tls: admin TLS needs an admin listener of its own",
    ] {
        assert!(
            joined.contains(expected),
            "missing {expected} in:\n{joined}"
        );
    }
}

#[test]
fn tls_file_paths_are_restart_only() {
    let with = |cert: &str| {
        Config::from_toml(
            &format!("[server.tls]\ncert_file = \"{cert}\"\nkey_file = \"k.pem\"\n{ONE_ROUTE}"),
            env_with_keys,
        )
        .unwrap()
    };
    assert!(with("c.pem")
        .restart_only_changes(&with("c.pem"))
        .is_empty());
    assert_eq!(
        with("c.pem").restart_only_changes(&with("other.pem")),
        ["server.tls"]
    );
}

#[test]
fn cache_settings_default_and_are_validated() {
    let config = Config::from_toml(ONE_ROUTE, env_with_keys).unwrap();
    assert_eq!(config.cache, CacheSettings::default());
    assert_eq!(
        (config.cache.max_bytes, config.cache.max_entry_bytes),
        (64 << 20, 1 << 20)
    );
    assert_eq!(config.route("r").unwrap().cache, None, "off unless set");

    let inline = ONE_ROUTE.replace("[routes.r]\n", "[routes.r]\ncache = {}\n");
    let config = Config::from_toml(&inline, env_with_keys).unwrap();
    let cache = config.route("r").unwrap().cache.expect("on");
    assert_eq!(cache.ttl, Duration::from_secs(600));
    assert!(!cache.nondeterministic);
    let table = format!(
        "[cache]\nmax_bytes = \"8MiB\"\nmax_entry_bytes = 4096\n{ONE_ROUTE}[routes.r.cache]\nttl = \"30s\"\nnondeterministic = true\n"
    );
    let config = Config::from_toml(&table, env_with_keys).unwrap();
    let cache = config.route("r").unwrap().cache.expect("on");
    assert_eq!(
        (cache.ttl, cache.nondeterministic),
        (Duration::from_secs(30), true)
    );
    assert_eq!(
        (config.cache.max_bytes, config.cache.max_entry_bytes),
        (8 << 20, 4096)
    );

    let bad = format!(
        "[cache]\nmax_bytes = \"1KiB\"\nmax_entry_bytes = \"2KiB\"\nmax_entries = 3\n{ONE_ROUTE}[routes.r.cache]\nttl = \"0s\"\ntll = \"1m\"\n"
    );
    let errs = errors(&bad);
    for path in [
        "cache.max_entry_bytes: 2048 bytes is more than cache.max_bytes (1024)",
        "cache.max_entries",
        "routes.r.cache.ttl: must be greater than zero",
        "routes.r.cache.tll: unknown field `tll`",
    ] {
        assert!(
            errs.iter().any(|e| e.starts_with(path)),
            "{path} not in {errs:?}"
        );
    }
}
