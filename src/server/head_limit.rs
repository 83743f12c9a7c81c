//! The request-head size limit (`[server] max_header_bytes`): a head larger
//! than the limit gets a 431 in OpenAI's error shape, on HTTP/1 and HTTP/2
//! alike. hyper's own buffers are set a few times larger (see
//! [`transport_ceiling`]) so that it parses such a head for this layer to
//! refuse; beyond that ceiling hyper refuses on its own (a bare 431 or a
//! closed connection), and memory per connection stays bounded.

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};

/// The head buffer hyper may fill before refusing by itself (never below
/// hyper's HTTP/1 minimum of 8 KiB).
pub fn transport_ceiling(limit: usize) -> usize {
    limit.saturating_mul(4).max(64 << 10)
}

/// The size of a request head as a client sent it (request line or
/// pseudo-headers, and every header with its separators), approximately
/// the same for both protocols.
pub fn head_size(request: &Request) -> usize {
    let line = request.method().as_str().len() + request.uri().to_string().len() + 12;
    request.headers().iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    })
}

/// `router` with heads larger than `limit` bytes refused.
pub fn apply(router: axum::Router, limit: usize) -> axum::Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| check(limit, request, next),
    ))
}

async fn check(limit: usize, request: Request, next: axum::middleware::Next) -> Response {
    let size = head_size(&request);
    if size > limit {
        return too_large(size, limit);
    }
    next.run(request).await
}

fn too_large(size: usize, limit: usize) -> Response {
    let message = format!(
        "the request head is {size} bytes, more than the gateway's limit of {limit} bytes (server.max_header_bytes)"
    );
    let body = crate::api::error_body(
        &message,
        "invalid_request_error",
        Some("request_header_too_large"),
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_size_counts_the_line_and_every_header() {
        let request = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("x-a", "12345")
            .body(Body::empty())
            .unwrap();
        assert_eq!(head_size(&request), 4 + 20 + 12 + 3 + 5 + 4);
        assert_eq!(transport_ceiling(32 << 10), 128 << 10);
        assert_eq!(transport_ceiling(1024), 64 << 10);
    }
}
