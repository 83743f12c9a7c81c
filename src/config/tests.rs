use super::*;

fn env_with_keys(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" | "TOGETHER_API_KEY" => Some(format!("sk-test-{name}")),
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
    assert_eq!(config.route_names(), ["chat-default", "embeddings"]);
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
            r#"routes.chat-default.targets[1].provider: unknown provider "opnai" (known: backup, openai)"#
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
    let errs = errors(
        r#"
[defaults.retry]
retyr = 3
"#,
    );
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("line 3:"), "{}", errs[0]);
    assert!(errs[0].contains("unknown field `retyr`"), "{}", errs[0]);
    assert!(errs[0].contains("max_attempts_per_target"), "{}", errs[0]);
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
