//! OpenAI's JSON endpoints: chat completions (the gateway's canonical
//! format), legacy completions, embeddings, moderations, image generation
//! and speech. The body goes to every target through its provider's adapter
//! (only `model` rewritten for OpenAI-style upstreams; targets without the
//! endpoint are skipped), answers and streams come back unchanged. Every
//! stream asks its upstream for usage (so budgets, TPM and cost see it); the
//! usage chunk is removed again for a client that did not ask for it.

use super::{DecodeContext, InboundProtocol, InboundRequest};
use crate::api::{BodyError, Endpoint, InspectedBody};
use crate::config::Target;
use crate::error::GatewayError;
use crate::providers::{StreamTranslator, Unsupported};
use crate::routing::{OpenAiForm, RequestForms, TargetRequest};
use bytes::{Bytes, BytesMut};

/// The protocol of one OpenAI JSON endpoint.
pub struct OpenAiJson(pub Endpoint);

pub struct JsonRequest {
    form: OpenAiForm,
    client_body: Bytes,
    client_wants_usage: bool,
}

impl InboundProtocol for OpenAiJson {
    type Request = JsonRequest;

    async fn decode(
        &self,
        _ctx: DecodeContext<'_>,
        body: Bytes,
    ) -> Result<JsonRequest, GatewayError> {
        let inspected = match InspectedBody::parse(body.clone()) {
            Err(BodyError::MissingModel) if self.0 == Endpoint::Moderations => {
                with_default_moderation_model(&body)?
            }
            parsed => parsed?,
        };
        JsonRequest::new(self.0, inspected, body)
    }
}

/// OpenAI's moderations endpoint has a default model; the gateway routes on
/// that name, so a route called `omni-moderation-latest` serves requests
/// that name none.
const DEFAULT_MODERATION_MODEL: &str = "omni-moderation-latest";

fn with_default_moderation_model(body: &Bytes) -> Result<InspectedBody, BodyError> {
    let mut value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
    value.insert("model".into(), DEFAULT_MODERATION_MODEL.into());
    let bytes = serde_json::to_vec(&value).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
    InspectedBody::parse(Bytes::from(bytes))
}

impl JsonRequest {
    /// `inspected` is the body for `endpoint`; `client_body` what the client
    /// sent (the same, or the Anthropic body it was translated from).
    pub(super) fn new(
        endpoint: Endpoint,
        inspected: InspectedBody,
        client_body: Bytes,
    ) -> Result<Self, GatewayError> {
        let streams_tokens = matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions);
        let token_stream = streams_tokens && inspected.stream();
        // Only a token stream has usage to strip: other requests skip the
        // extra pass over the body.
        let client_wants_usage = !token_stream || crate::providers::wants_stream_usage(&inspected);
        let inspected = if token_stream && !client_wants_usage {
            with_stream_usage(&inspected)?
        } else {
            inspected
        };
        Ok(JsonRequest {
            form: OpenAiForm {
                endpoint,
                body: inspected,
            },
            client_body,
            client_wants_usage,
        })
    }

    #[cfg(test)]
    fn body(&self) -> &InspectedBody {
        &self.form.body
    }
}

/// The body with `stream_options.include_usage = true`: inserted as the
/// first member (no re-serialisation) unless `stream_options` exists.
fn with_stream_usage(body: &InspectedBody) -> Result<InspectedBody, BodyError> {
    let bytes = body.bytes();
    let mut value: serde_json::Map<String, serde_json::Value> =
        match memchr::memmem::find(bytes, b"\"stream_options\"") {
            None => {
                let at = bytes.iter().position(|b| *b == b'{').unwrap_or(0) + 1;
                let member = br#""stream_options":{"include_usage":true}"#;
                let empty = bytes[at..].trim_ascii_start().starts_with(b"}");
                let mut out = BytesMut::with_capacity(bytes.len() + member.len() + 1);
                out.extend_from_slice(&bytes[..at]);
                out.extend_from_slice(member);
                if !empty {
                    out.extend_from_slice(b",");
                }
                out.extend_from_slice(&bytes[at..]);
                return InspectedBody::parse(out.freeze());
            }
            Some(_) => {
                serde_json::from_slice(bytes).map_err(|e| BodyError::InvalidJson(e.to_string()))?
            }
        };
    let options = value
        .entry("stream_options")
        .or_insert_with(|| serde_json::json!({}));
    match options {
        serde_json::Value::Object(options) => {
            options.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
        // `null` or another type: the upstream would have refused it anyway.
        other => *other = serde_json::json!({ "include_usage": true }),
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
    InspectedBody::parse(Bytes::from(bytes))
}

impl RequestForms for JsonRequest {
    fn stream(&self) -> bool {
        self.form.stream()
    }

    fn for_target(&self, target: &Target) -> Result<TargetRequest, Unsupported> {
        self.form.for_target(target)
    }

    fn stream_translator(&self, target: &Target) -> Option<Box<dyn StreamTranslator>> {
        self.form.stream_translator(target)
    }

    fn continuation_base(&self) -> Option<InspectedBody> {
        let chat = self.form.endpoint == Endpoint::ChatCompletions && self.form.body.stream();
        chat.then(|| self.form.body.clone())
    }
}

impl InboundRequest for JsonRequest {
    fn model(&self) -> &str {
        self.form.body.model()
    }

    fn client_body(&self) -> &Bytes {
        &self.client_body
    }

    fn max_tokens(&self) -> Option<u32> {
        super::requested_max_tokens(self.form.body.bytes())
    }

    fn strip_stream_usage(&self) -> bool {
        !self.client_wants_usage
    }

    fn cache_class(&self) -> crate::server::cache::CacheClass {
        use crate::server::cache::CacheClass;
        match self.form.endpoint {
            Endpoint::ChatCompletions | Endpoint::Completions => CacheClass::Generation,
            Endpoint::Embeddings => CacheClass::Deterministic,
            _ => CacheClass::Never,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_added(body: &str) -> serde_json::Value {
        let inspected = InspectedBody::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap();
        let out = with_stream_usage(&inspected).unwrap();
        assert_eq!(out.model(), "m");
        serde_json::from_slice(out.bytes()).unwrap()
    }

    #[test]
    fn moderations_without_a_model_use_openais_default() {
        let body = Bytes::from_static(br#"{"input":"hello"}"#);
        let inspected = with_default_moderation_model(&body).unwrap();
        assert_eq!(inspected.model(), DEFAULT_MODERATION_MODEL);
        let v: serde_json::Value = serde_json::from_slice(inspected.bytes()).unwrap();
        assert_eq!(v["input"], "hello");
    }

    #[test]
    fn streams_ask_for_usage_whatever_the_client_sent() {
        let v = usage_added(r#"{"model":"m","stream":true,"messages":[]}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["messages"], serde_json::json!([]));
        let v = usage_added(
            r#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}"#,
        );
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["include_obfuscation"], false);
        let v = usage_added(r#"{"model":"m","stream_options":null}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
        let v = usage_added(r#" {"model":"m"}"#);
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn only_streams_without_usage_are_rewritten_and_marked_for_stripping() {
        let decode = |body: &str| {
            let inspected = InspectedBody::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap();
            JsonRequest::new(Endpoint::ChatCompletions, inspected, Bytes::new()).unwrap()
        };
        let plain = decode(r#"{"model":"m","stream":true}"#);
        assert!(plain.strip_stream_usage());
        assert!(crate::providers::wants_stream_usage(plain.body()));
        let asked =
            decode(r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#);
        assert!(!asked.strip_stream_usage());
        let not_stream = decode(r#"{"model":"m"}"#);
        assert_eq!(&not_stream.body().bytes()[..], br#"{"model":"m"}"#);
    }
}
