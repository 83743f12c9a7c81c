//! Service tiers: the provider tier (`service_tier`) a target's requests are
//! sent at, and the rule that asks the same target again at its
//! `tier_fallback` when it refuses that tier. The dispatcher calls these;
//! they decide, it acts.

use super::forms::TargetRequest;
use crate::api::Endpoint;
use crate::config::Target;
use crate::resilience::{AttemptFailure, FailureCause};
use bytes::Bytes;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::time::Duration;

/// The tier to ask `target` again at, at once, after `failure` at tier
/// `current`: its `tier_fallback`, when the failure is a refusal of the
/// tier (not an ordinary rate limit) and the request was at the target's
/// own `service_tier` (so the fallback is tried once, never in a loop).
pub fn fallback_after<'t>(
    target: &'t Target,
    current: Option<&str>,
    failure: &AttemptFailure,
) -> Option<&'t str> {
    if !failure.cause.is_tier_refusal() {
        return None;
    }
    let first = target.service_tier.as_deref()?;
    if current != Some(first) {
        return None;
    }
    target.tier_fallback.as_deref()
}

/// The `reason` label of a tier fallback after `failure`.
pub fn reason(failure: &AttemptFailure) -> &'static str {
    if failure.cause == FailureCause::TierFirstByte {
        "first_byte"
    } else {
        "refused"
    }
}

/// `upstream` with its top-level `service_tier` set to `tier` (replacing
/// the client's: the operator chose the tier for this target), and its
/// `tier_first_byte` limit (`first_byte`: the target's at its first tier,
/// `None` at the fallback). Only chat and Responses bodies carry a tier;
/// other endpoints, a body that is not a JSON object, or no tier leave the
/// request as it is.
pub fn with_tier(
    upstream: TargetRequest,
    tier: Option<&str>,
    first_byte: Option<Duration>,
) -> TargetRequest {
    let upstream = TargetRequest {
        tier_first_byte: None,
        ..upstream
    };
    let Some(tier) = tier else {
        return upstream;
    };
    if !matches!(
        upstream.endpoint,
        Endpoint::ChatCompletions | Endpoint::Responses
    ) {
        return upstream;
    }
    match set_field(&upstream.body, "service_tier", tier) {
        Some(body) => TargetRequest {
            body,
            tier_first_byte: first_byte,
            ..upstream
        },
        None => upstream,
    }
}

/// Re-serialises a JSON object with `key` set to the string `value`; the
/// other members are kept as raw text (not re-parsed into values).
fn set_field(body: &[u8], key: &str, value: &str) -> Option<Bytes> {
    let mut object: BTreeMap<&str, &RawValue> = serde_json::from_slice(body).ok()?;
    let value_json = serde_json::to_string(value).ok()?;
    let value_raw = RawValue::from_string(value_json).ok()?;
    object.insert(key, &value_raw);
    serde_json::to_vec(&object).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::forms::JSON;
    use http::StatusCode;

    /// A one-target route whose target has `settings` (TOML inline keys).
    fn with_target(settings: &str, check: impl FnOnce(&Target)) {
        let text = format!(
            "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[routes.r]\ntargets = [{{ provider = \"p\", model = \"m\"{settings} }}]\n"
        );
        let config = crate::config::Config::from_toml(&text, |_| None).unwrap();
        check(&config.route("r").unwrap().targets[0]);
    }

    fn refusal() -> AttemptFailure {
        AttemptFailure {
            cause: FailureCause::TierUnavailable,
            ..AttemptFailure::status(
                StatusCode::TOO_MANY_REQUESTS,
                crate::resilience::FailureClass::RateLimited,
                None,
            )
        }
    }

    const FLEX: &str = r#", service_tier = "flex", tier_fallback = "default""#;

    #[test]
    fn a_tier_refusal_at_the_first_tier_falls_back() {
        with_target(FLEX, |t| {
            assert_eq!(fallback_after(t, Some("flex"), &refusal()), Some("default"));
        });
    }

    #[test]
    fn a_first_byte_timeout_at_the_tier_falls_back_like_a_refusal() {
        let silent = AttemptFailure::transient(FailureCause::TierFirstByte);
        with_target(FLEX, |t| {
            assert_eq!(fallback_after(t, Some("flex"), &silent), Some("default"));
            assert_eq!(fallback_after(t, Some("default"), &silent), None);
            let ordinary = AttemptFailure::transient(FailureCause::Timeout(
                crate::resilience::TimeoutKind::FirstByte,
            ));
            assert_eq!(fallback_after(t, Some("flex"), &ordinary), None);
        });
    }

    #[test]
    fn no_fallback_twice_without_one_or_for_a_plain_rate_limit() {
        with_target(FLEX, |t| {
            assert_eq!(fallback_after(t, Some("default"), &refusal()), None);
            let limited = AttemptFailure::status(
                StatusCode::TOO_MANY_REQUESTS,
                crate::resilience::FailureClass::RateLimited,
                None,
            );
            assert_eq!(fallback_after(t, Some("flex"), &limited), None);
        });
        with_target(r#", service_tier = "flex""#, |t| {
            assert_eq!(fallback_after(t, Some("flex"), &refusal()), None);
        });
        with_target("", |t| {
            assert_eq!(fallback_after(t, None, &refusal()), None)
        });
    }

    fn request(endpoint: Endpoint, body: &'static str) -> TargetRequest {
        TargetRequest {
            endpoint,
            body: Bytes::from_static(body.as_bytes()),
            content_type: JSON,
            tier_first_byte: None,
        }
    }

    #[test]
    fn the_targets_tier_replaces_the_clients() {
        let sent = with_tier(
            request(
                Endpoint::ChatCompletions,
                r#"{"model":"m","service_tier":"auto","messages":[{"role":"user","content":"hi"}]}"#,
            ),
            Some("flex"),
            Some(Duration::from_secs(2)),
        );
        assert_eq!(sent.tier_first_byte, Some(Duration::from_secs(2)));
        let v: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(v["service_tier"], "flex");
        assert_eq!(v["messages"][0]["content"], "hi");
        assert_eq!(v["model"], "m");
    }

    #[test]
    fn other_endpoints_and_no_tier_are_left_alone() {
        let body = r#"{"model":"m","input":"x"}"#;
        let two = Some(Duration::from_secs(2));
        let sent = with_tier(request(Endpoint::Embeddings, body), Some("flex"), two);
        assert_eq!(&sent.body[..], body.as_bytes());
        assert_eq!(sent.tier_first_byte, None, "no tier set, no tier timeout");
        let sent = with_tier(request(Endpoint::ChatCompletions, body), None, two);
        assert_eq!(&sent.body[..], body.as_bytes());
        assert_eq!(sent.tier_first_byte, None);
    }
}
