//! Which settings a running gateway reads once, at start (its listeners,
//! authentication mode, stores, the admin API): a reload that changes one
//! of them is refused as a whole, naming each, instead of silently keeping
//! the old value while the log says the reload succeeded.

use super::Config;

impl Config {
    /// The restart-only settings that differ between `self` (running) and
    /// `new`, by key path; empty when `new` can be reloaded.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.server, &new.server);
        let checks = [
            ("server.listen", a.listen != b.listen),
            ("server.auth", a.auth != b.auth),
            ("server.watch_config", a.watch_config != b.watch_config),
            ("server.drain_timeout", a.drain_timeout != b.drain_timeout),
            (
                "server.header_read_timeout",
                a.header_read_timeout != b.header_read_timeout,
            ),
            (
                "server.body_read_timeout",
                a.body_read_timeout != b.body_read_timeout,
            ),
            ("server.write_timeout", a.write_timeout != b.write_timeout),
            ("server.send_buffer", a.send_buffer != b.send_buffer),
            (
                "server.max_header_bytes",
                a.max_header_bytes != b.max_header_bytes,
            ),
            (
                "server.max_connections",
                a.max_connections != b.max_connections,
            ),
            // The listeners' TLS files are read again on SIGHUP and when
            // they change (`server::tls`); which files are read is fixed.
            ("server.tls", a.tls != b.tls),
            ("admin.key_env", self.admin.key != new.admin.key),
            ("admin.listen", self.admin.listen != new.admin.listen),
            (
                "admin.metrics_public",
                self.admin.metrics_public != new.admin.metrics_public,
            ),
            ("admin.tls", self.admin.tls != new.admin.tls),
            ("store.url", self.store_url != new.store_url),
            ("store.timeout", self.store_timeout != new.store_timeout),
            ("request_log", self.request_log != new.request_log),
            (
                "responses.store",
                self.responses_store != new.responses_store,
            ),
            (
                "limits.redis_url",
                self.limits.redis_url != new.limits.redis_url,
            ),
            (
                "limits.key_prefix",
                self.limits.key_prefix != new.limits.key_prefix,
            ),
            ("cluster", self.cluster != new.cluster),
            // The exporters and their threads are built once, at start.
            ("telemetry.otlp", self.otlp != new.otlp),
            ("keys.cache_ttl", self.keys.cache_ttl != new.keys.cache_ttl),
            (
                "keys.failed_auth_per_minute",
                self.keys.failed_auth_per_minute != new.keys.failed_auth_per_minute,
            ),
        ];
        checks
            .into_iter()
            .filter_map(|(path, changed)| changed.then_some(path))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";

    fn load(text: &str) -> Config {
        Config::from_toml(text, |_| None).unwrap()
    }

    #[test]
    fn routes_and_policies_reload_restart_only_settings_do_not() {
        let running = load(&format!("[server]\nauth = \"none\"\n{BASE}"));
        let policy = load(&format!(
            "[server]\nauth = \"none\"\n[defaults.retry]\nmax_attempts_per_target = 3\n{BASE}"
        ));
        assert!(running.restart_only_changes(&policy).is_empty());
        let changed = load(&format!(
            "[server]\nauth = \"keys\"\nlisten = \"127.0.0.1:1\"\nheader_read_timeout = \"1s\"\n\
             [keys]\ncache_ttl = \"1s\"\n[request_log]\nenabled = true\n{BASE}"
        ));
        assert_eq!(
            running.restart_only_changes(&changed),
            [
                "server.listen",
                "server.auth",
                "server.header_read_timeout",
                "request_log",
                "keys.cache_ttl"
            ]
        );
    }
}
