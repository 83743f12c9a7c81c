//! OpenAI-compatible upstreams: the client's body is forwarded with only
//! `model` rewritten; auth is a bearer token.

use crate::api::{Endpoint, InspectedBody};
use crate::config::Target;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::Full;

pub fn build_request(
    target: &Target,
    endpoint: Endpoint,
    body: &InspectedBody,
    request_id: &HeaderValue,
) -> Request<Full<Bytes>> {
    let provider = &target.provider;
    let uri = match endpoint {
        Endpoint::ChatCompletions => provider.chat_url.clone(),
        Endpoint::Embeddings => provider.embeddings_url.clone(),
    };
    let accept = if body.stream() {
        HeaderValue::from_static("text/event-stream")
    } else {
        HeaderValue::from_static("application/json")
    };
    let mut request = Request::new(Full::new(body.with_model(&target.model_json)));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::ACCEPT, accept);
    headers.insert("x-request-id", request_id.clone());
    if let Some(key) = &provider.auth_header {
        headers.insert(header::AUTHORIZATION, key.header_value().clone());
    }
    request
}
