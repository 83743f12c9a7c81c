//! `Config::from_toml` on arbitrary text: never panics, every problem is
//! reported with a path and a message, a valid config is self-consistent,
//! and an API key read from the environment never shows in the config's
//! `Debug` or in an error message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::Config;

const SECRET: &str = "sk-fuzz-7f3a9c2e1b5d";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Every variable an `api_key_env` names holds the secret; the region
    // variable is shown on purpose, so it holds something else.
    let env = |name: &str| match name {
        "SWITCHYARD_REGION" => None,
        _ => Some(SECRET.to_owned()),
    };
    let shown = match Config::from_toml(&text, env) {
        Ok(config) => {
            for name in config.route_names() {
                let route = config.route(name).expect("a listed route resolves");
                assert!(!route.targets.is_empty(), "route {name} without targets");
            }
            assert_eq!(config.routes().count(), config.route_names().len());
            format!("{config:?}")
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without issues");
            for issue in &errors.0 {
                assert!(
                    !issue.path.is_empty() && !issue.message.is_empty(),
                    "{issue:?}"
                );
            }
            errors.to_string()
        }
    };
    if !text.contains(SECRET) {
        assert!(!shown.contains(SECRET), "the API key leaked: {shown}");
    }
});
