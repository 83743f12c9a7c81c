//! `switchyard init`'s starter config: which providers the environment has
//! keys for (`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `GEMINI_API_KEY`,
//! `AZURE_OPENAI_API_KEY` with `AZURE_OPENAI_ENDPOINT`), and a commented
//! config using them: a provider per key found (naming the variable, never
//! writing its value), a route per model family failing over across them.
//! With no key at all, a config in front of the built-in simulator, so the
//! first run works offline. The text is validated by the real validator
//! before anyone writes it; writing the file is the CLI's job.

use super::{Config, ConfigErrors};

pub const OPENAI_KEY: &str = "OPENAI_API_KEY";
pub const ANTHROPIC_KEY: &str = "ANTHROPIC_API_KEY";
pub const GEMINI_KEY: &str = "GEMINI_API_KEY";
pub const AZURE_KEY: &str = "AZURE_OPENAI_API_KEY";
pub const AZURE_ENDPOINT: &str = "AZURE_OPENAI_ENDPOINT";

/// Where `switchyard sim` listens by default.
const SIM_BASE: &str = "http://127.0.0.1:9001/v1";

/// The providers the environment has keys for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    pub openai: bool,
    pub anthropic: bool,
    pub gemini: bool,
    /// Azure's endpoint (not a secret), when both its variables are set.
    pub azure_endpoint: Option<String>,
    /// `AZURE_OPENAI_API_KEY` without `AZURE_OPENAI_ENDPOINT` (or the reverse).
    pub azure_incomplete: bool,
}

impl Found {
    pub fn detect(env: impl Fn(&str) -> Option<String>) -> Found {
        let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        let endpoint = env(AZURE_ENDPOINT)
            .map(|e| e.trim().trim_end_matches('/').to_owned())
            .filter(|e| !e.is_empty());
        let azure_key = set(AZURE_KEY);
        Found {
            openai: set(OPENAI_KEY),
            anthropic: set(ANTHROPIC_KEY),
            gemini: set(GEMINI_KEY),
            azure_incomplete: azure_key != endpoint.is_some(),
            azure_endpoint: endpoint.filter(|_| azure_key),
        }
    }

    /// Provider names in failover order.
    pub fn providers(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for (present, name) in [
            (self.openai, "openai"),
            (self.azure_endpoint.is_some(), "azure"),
            (self.anthropic, "anthropic"),
            (self.gemini, "gemini"),
        ] {
            if present {
                names.push(name);
            }
        }
        names
    }
}

/// One provider's models per family: flagship chat, small chat, embeddings.
struct Models {
    chat: &'static str,
    mini: &'static str,
    embeddings: Option<&'static str>,
}

fn models(provider: &str) -> Models {
    match provider {
        "anthropic" => Models {
            chat: "claude-sonnet-4-0",
            mini: "claude-3-5-haiku-latest",
            embeddings: None,
        },
        "gemini" => Models {
            chat: "gemini-2.5-pro",
            mini: "gemini-2.5-flash",
            embeddings: None,
        },
        // OpenAI, Azure (deployment names) and the simulator.
        _ => Models {
            chat: "gpt-4o",
            mini: "gpt-4o-mini",
            embeddings: Some("text-embedding-3-small"),
        },
    }
}

fn provider_section(name: &str, found: &Found) -> String {
    match name {
        "openai" => format!(
            "[providers.openai]\nbase_url = \"https://api.openai.com/v1\"\napi_key_env = \"{OPENAI_KEY}\"\n"
        ),
        "azure" => format!(
            "# Azure OpenAI: the model names in the routes are your deployment names.\n[providers.azure]\nkind = \"azure_openai\"\nbase_url = {endpoint}\napi_key_env = \"{AZURE_KEY}\"\n",
            endpoint = toml_string(found.azure_endpoint.as_deref().unwrap_or_default())
        ),
        "anthropic" => format!(
            "[providers.anthropic]             # base_url: https://api.anthropic.com\nkind = \"anthropic\"\napi_key_env = \"{ANTHROPIC_KEY}\"\n"
        ),
        "gemini" => format!(
            "[providers.gemini]                # base_url: Google's public endpoint\nkind = \"gemini\"\napi_key_env = \"{GEMINI_KEY}\"\n"
        ),
        _ => format!(
            "# The built-in simulator: run `switchyard sim` first.\n[providers.sim]\nbase_url = \"{SIM_BASE}\"\n"
        ),
    }
}

/// A TOML basic string (the endpoint comes from the environment).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn route(name: &str, comment: &str, targets: &[(&str, &str)]) -> String {
    let mut out = format!("# {comment}\n[routes.{name}]\ntargets = [\n");
    for (provider, model) in targets {
        out.push_str(&format!(
            "  {{ provider = \"{provider}\", model = \"{model}\" }},\n"
        ));
    }
    out.push_str("]\n");
    out
}

const HEADER: &str = "\
# Written by `switchyard init`. Check it with `switchyard check-config FILE`,
# run it with `switchyard serve --config FILE`. Every setting is in the
# README's Config section and in examples/switchyard.toml.
";

const SERVER_WITH_KEYS: &str = "\
[server]
listen = \"127.0.0.1:8080\"          # \"0.0.0.0:8080\" to serve other machines
# auth = \"keys\" (the default): every request needs a virtual key. Create one:
#   switchyard keys create me --service local --config FILE

# HTTPS on `listen` (HTTP/2 by ALPN); the files are read again on SIGHUP
# and when they change, without dropping connections:
# [server.tls]
# cert_file = \"/etc/switchyard/tls/cert.pem\"   # PEM chain, leaf first
# key_file = \"/etc/switchyard/tls/key.pem\"
";

const SERVER_OFFLINE: &str = "\
[server]
listen = \"127.0.0.1:8080\"
auth = \"none\"                      # loopback and a simulator only: remove this line
                                   # (virtual keys) before adding real providers
";

const POLICY: &str = "\
[defaults.retry]
max_attempts_per_target = 2        # one retry on the same target, then fail over
base_backoff = \"100ms\"
max_backoff = \"2s\"

[defaults.timeouts]
first_byte = \"30s\"                 # streams: until the first content token
total = \"120s\"                     # the whole request, every attempt
";

/// The starter config for what was found.
pub fn render(found: &Found) -> String {
    let mut providers = found.providers();
    let offline = providers.is_empty();
    if offline {
        providers.push("sim");
    }
    let mut out = String::from(HEADER);
    out.push('\n');
    if offline {
        out.push_str("# No provider key was found in the environment (OPENAI_API_KEY,\n# ANTHROPIC_API_KEY, GEMINI_API_KEY, AZURE_OPENAI_API_KEY + AZURE_OPENAI_ENDPOINT),\n# so this config runs against the simulator: start `switchyard sim` in\n# another terminal. Set a key and run `switchyard init --force` for real ones.\n");
    } else {
        out.push_str(&format!(
            "# Providers found in the environment: {}. Keys are read from the\n# variables named below at start; their values are never written here.\n",
            providers.join(", ")
        ));
    }
    if found.azure_incomplete {
        out.push_str(
            "# Azure OpenAI needs both AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT: skipped.\n",
        );
    }
    out.push('\n');
    out.push_str(if offline {
        SERVER_OFFLINE
    } else {
        SERVER_WITH_KEYS
    });
    out.push('\n');
    out.push_str(POLICY);
    for name in &providers {
        out.push('\n');
        out.push_str(&provider_section(name, found));
    }
    let family = |pick: fn(&Models) -> Option<&'static str>| -> Vec<(&str, &str)> {
        providers
            .iter()
            .filter_map(|p| Some((*p, pick(&models(p))?)))
            .collect()
    };
    let failover = if providers.len() > 1 {
        "Targets in order: the next takes over when one fails."
    } else {
        "Add targets of other providers to fail over to."
    };
    out.push('\n');
    out.push_str(&route("chat", failover, &family(|m| Some(m.chat))));
    out.push('\n');
    out.push_str(&route(
        "chat-mini",
        "Smaller, cheaper models.",
        &family(|m| Some(m.mini)),
    ));
    let embeddings = family(|m| m.embeddings);
    if !embeddings.is_empty() {
        out.push('\n');
        out.push_str(&route(
            "embeddings",
            "POST /v1/embeddings with model \"embeddings\".",
            &embeddings,
        ));
    }
    out
}

/// The starter config for `env`, checked by the real validator.
pub fn generate(env: impl Fn(&str) -> Option<String>) -> Result<(Found, String), ConfigErrors> {
    let found = Found::detect(&env);
    let text = render(&found);
    Config::from_toml(&text, &env)?;
    Ok((found, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "sk-secret-value-0123456789";

    /// Every combination of the four providers' variables.
    fn combinations() -> Vec<Vec<&'static str>> {
        let all = [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, AZURE_KEY];
        (0..16u32)
            .map(|mask| {
                all.iter()
                    .enumerate()
                    .filter(|(i, _)| mask & (1 << i) != 0)
                    .map(|(_, name)| *name)
                    .collect()
            })
            .collect()
    }

    fn env_of<'a>(names: &'a [&'static str]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name: &str| {
            if name == AZURE_ENDPOINT && names.contains(&AZURE_KEY) {
                return Some("https://my-resource.openai.azure.com/".to_owned());
            }
            names.contains(&name).then(|| format!("{SECRET}-{name}"))
        }
    }

    #[test]
    fn every_combination_of_keys_gives_a_valid_config_without_the_keys() {
        for names in combinations() {
            let (found, text) = generate(env_of(&names))
                .unwrap_or_else(|e| panic!("{names:?}: invalid starter config:\n{e}"));
            assert!(
                !text.contains(SECRET),
                "{names:?}: a key value leaked:\n{text}"
            );
            let config = Config::from_toml(&text, env_of(&names)).unwrap();
            let chat = config.route("chat").unwrap();
            if names.is_empty() {
                assert_eq!(found.providers(), Vec::<&str>::new());
                assert_eq!(chat.targets[0].label(), "sim/gpt-4o");
                assert_eq!(config.server.auth, crate::config::AuthMode::None);
                assert!(text.contains("switchyard sim"), "{text}");
                continue;
            }
            // One chat target per provider found, in failover order.
            assert_eq!(chat.targets.len(), names.len(), "{names:?}\n{text}");
            assert_eq!(config.server.auth, crate::config::AuthMode::Keys);
            for name in &names {
                assert!(
                    text.contains(&format!("api_key_env = \"{name}\"")),
                    "{text}"
                );
            }
            assert_eq!(
                config.route("embeddings").is_some(),
                names.contains(&OPENAI_KEY) || names.contains(&AZURE_KEY),
                "{names:?}"
            );
        }
    }

    #[test]
    fn azure_needs_its_endpoint_too() {
        let env = |name: &str| (name == AZURE_KEY).then(|| SECRET.to_owned());
        let (found, text) = generate(env).unwrap();
        assert_eq!(found.azure_endpoint, None);
        assert!(found.azure_incomplete);
        assert!(text.contains("needs both AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT"));
        assert!(text.contains("[providers.sim]"), "{text}");
    }

    #[test]
    fn an_invalid_endpoint_is_refused_by_the_validator() {
        let env = |name: &str| match name {
            AZURE_KEY => Some(SECRET.to_owned()),
            AZURE_ENDPOINT => Some("not a url".to_owned()),
            _ => None,
        };
        let e = generate(env).unwrap_err();
        assert_eq!(e.0[0].path, "providers.azure.base_url", "{e}");
        assert!(!e.to_string().contains(SECRET));
    }
}
