//! Upstream providers: the pooled HTTP client every provider shares, and the
//! per-kind knowledge of how to address a provider (URLs, auth header) and
//! how to translate its wire format to and from OpenAI's, which is the
//! gateway's canonical form. One module per provider, each implementing
//! [`Provider`]. Providers build requests and translate bytes; they never
//! decide about retries or failover (that is `routing`'s job, fed by the
//! failure classes `classify_error` refines).

pub mod anthropic;
pub mod azure;
pub mod client;
pub mod continuation;
pub mod gemini;
pub mod openai;
pub mod redact;
pub mod taxonomy;

pub use client::HttpClient;

use crate::api::{Endpoint, EndpointUrls, InspectedBody};
use crate::config::{ProviderKind, Target};
use crate::resilience::FailureClass;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::Full;
use std::time::{SystemTime, UNIX_EPOCH};

/// A request field a provider cannot express. The client gets a 400 naming
/// the field and the provider, unless another target of the route can serve
/// the request: nothing is ever silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{provider} cannot serve this request: `{field}` {reason}")]
pub struct Unsupported {
    pub provider: &'static str,
    /// JSON path of the offending field, e.g. `messages[2].content[0].type`.
    pub field: String,
    pub reason: String,
}

/// Turns one upstream's stream into OpenAI `chat.completion.chunk` events.
pub trait StreamTranslator: Send {
    /// Takes one complete upstream SSE event (as framed by
    /// `streaming::sse::SseFramer`: its lines and the blank line ending it)
    /// and appends zero or more complete OpenAI SSE events to `out`:
    /// `data: {chunk}\n\n`, then `data: [DONE]\n\n` once the upstream said
    /// the answer is complete, or `data: {"error":{…}}\n\n` (OpenAI error
    /// object) for an error the upstream reported in its stream.
    fn translate(&mut self, event: &[u8], out: &mut Vec<Bytes>);
}

/// Where a target is reached.
#[derive(Debug, Clone)]
pub struct Urls {
    pub chat: Uri,
    /// Differs from `chat` only for Gemini.
    pub stream: Uri,
    /// `None`: no OpenAI-style embeddings endpoint.
    pub embeddings: Option<Uri>,
}

/// What one kind of upstream needs beyond plain HTTP.
pub trait Provider: Sync {
    fn name(&self) -> &'static str;

    /// Whether the upstream's responses are already in OpenAI's format (then
    /// they are passed through untouched, content type included).
    fn speaks_openai(&self) -> bool {
        false
    }

    /// The target's URLs from the configured base URL (validated, no
    /// trailing slash), or `None` if `model` cannot be part of one.
    fn urls(&self, base: &str, model: &str, api_version: Option<&str>) -> Option<Urls>;

    /// URLs of the OpenAI endpoints beyond chat completions (responses,
    /// legacy completions, moderations, images, audio) that this kind of
    /// upstream serves natively; none by default.
    fn openai_urls(&self, _base: &str, _model: &str, _api_version: Option<&str>) -> EndpointUrls {
        EndpointUrls::default()
    }

    /// The upstream body for an OpenAI-format client request.
    fn translate_request(
        &self,
        target: &Target,
        endpoint: Endpoint,
        body: &InspectedBody,
    ) -> Result<Bytes, Unsupported>;

    /// Headers other than auth, content type and request id.
    fn extra_headers(&self, _target: &Target, _headers: &mut HeaderMap) {}

    /// A successful non-stream upstream body, as an OpenAI response; `None`
    /// if the upstream sent something unreadable.
    fn translate_response(&self, target: &Target, body: Bytes) -> Option<Bytes>;

    /// `None` when the upstream already streams OpenAI chunks.
    fn stream_translator(
        &self,
        _target: &Target,
        _body: &InspectedBody,
    ) -> Option<Box<dyn StreamTranslator>> {
        None
    }

    /// Refines the status-based failure class from the error body (context
    /// length, overload, invalid key); `None` keeps the status's class.
    fn classify_error(&self, status: StatusCode, body: &[u8]) -> Option<FailureClass>;

    /// An upstream error body in OpenAI's error shape, for the client.
    fn error_to_openai(&self, status: StatusCode, body: Bytes) -> Bytes;
}

pub fn adapter(kind: ProviderKind) -> &'static dyn Provider {
    match kind {
        ProviderKind::OpenAi => &openai::OpenAi,
        ProviderKind::AzureOpenAi => &azure::AzureOpenAi,
        ProviderKind::Anthropic => &anthropic::Anthropic,
        ProviderKind::Gemini => &gemini::Gemini,
    }
}

/// Builds the upstream request for one attempt at `target`, carrying
/// `upstream_body` (from [`Provider::translate_request`]) as `content_type`.
pub fn build_request(
    target: &Target,
    endpoint: Endpoint,
    stream: bool,
    upstream_body: Bytes,
    content_type: HeaderValue,
    request_id: &HeaderValue,
) -> Option<Request<Full<Bytes>>> {
    let uri = match (endpoint, stream) {
        (Endpoint::ChatCompletions, false) => target.chat_url.clone(),
        (Endpoint::ChatCompletions, true) => target.stream_url.clone(),
        (other, _) => target.endpoint_urls.get(other)?.clone(),
    };
    let accept = if stream {
        HeaderValue::from_static("text/event-stream")
    } else if endpoint.streams_binary() {
        HeaderValue::from_static("*/*")
    } else {
        HeaderValue::from_static("application/json")
    };
    let mut request = Request::new(Full::new(upstream_body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::ACCEPT, accept);
    headers.insert("x-request-id", request_id.clone());
    if let Some(key) = &target.key {
        headers.insert(
            target.provider.kind.auth_header(),
            key.value.header_value().clone(),
        );
    }
    adapter(target.provider.kind).extra_headers(target, headers);
    Some(request)
}

/// Unix seconds, for the `created` field of translated responses.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether a chat request asked for a final usage chunk in its stream.
pub(crate) fn wants_stream_usage(body: &InspectedBody) -> bool {
    #[derive(serde::Deserialize)]
    struct Peek {
        stream_options: Option<StreamOptions>,
    }
    #[derive(serde::Deserialize)]
    struct StreamOptions {
        include_usage: Option<bool>,
    }
    serde_json::from_slice::<Peek>(body.bytes())
        .ok()
        .and_then(|p| p.stream_options?.include_usage)
        .unwrap_or(false)
}

/// Endpoints only OpenAI-style upstreams have.
pub(crate) fn chat_only(provider: &'static str, endpoint: Endpoint) -> Result<(), Unsupported> {
    match endpoint {
        Endpoint::ChatCompletions => Ok(()),
        other => Err(not_offered(provider, other)),
    }
}

/// The refusal for an endpoint a target's provider lacks.
pub fn not_offered(provider: &'static str, endpoint: Endpoint) -> Unsupported {
    Unsupported {
        provider,
        field: format!("/v1/{}", endpoint.path()),
        reason: "is not offered by this provider".into(),
    }
}

/// `{base}/{path}` for every endpoint an OpenAI-style API offers.
pub(crate) fn openai_style_urls(url: impl Fn(Endpoint) -> String) -> EndpointUrls {
    let mut urls = EndpointUrls::default();
    for endpoint in Endpoint::OPENAI_ONLY {
        urls.set(endpoint, url(endpoint).parse().ok());
    }
    urls
}
