//! The HTTP side: accept loop, routing and the request handlers.
//!
//! The accept loop is hand-rolled on hyper-util instead of `axum::serve`
//! because shutdown must close connections that hold hanging requests, which
//! a graceful shutdown would wait on forever.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::behavior::{decide, Decision};
use super::openai::{self, AbortAfter, ChatStream, ChatStreamPlan, EmbeddingInput, StreamEnd};
use super::stats::{bump, CancelGuard};
use super::{FaultAction, RequestRecord, Shared};

const CHAT_PATH: &str = "/v1/chat/completions";
const EMBEDDINGS_PATH: &str = "/v1/embeddings";
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

const X_SIM_NAME: HeaderName = HeaderName::from_static("x-sim-name");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            // Err means every handle was dropped: stop as well.
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    // SSE events are small writes; Nagle would hold them back.
                    let _ = tcp.set_nodelay(true);
                    let builder = Arc::clone(&builder);
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let shared = Arc::clone(&shared);
                            async move { Ok::<_, Infallible>(handle(shared, req).await) }
                        });
                        if let Err(err) = builder.serve_connection(TokioIo::new(tcp), service).await {
                            // Peers vanishing mid-request is routine here.
                            tracing::trace!(error = %err, "sim connection ended with error");
                        }
                    });
                }
                Err(err) => {
                    // Typically fd exhaustion; back off instead of spinning.
                    tracing::warn!(error = %err, "sim accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let mut guard = CancelGuard::new(&shared.stats);
    let response = route(&shared, req).await;
    guard.disarm();
    response
}

async fn route(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    match (&parts.method, parts.uri.path()) {
        (&Method::POST, CHAT_PATH) => {
            bump(&shared.stats.requests);
            match read_body(shared, &parts, body).await {
                Ok(body) => chat(shared, &parts, &body).await,
                Err(response) => response,
            }
        }
        (&Method::POST, EMBEDDINGS_PATH) => {
            bump(&shared.stats.requests);
            match read_body(shared, &parts, body).await {
                Ok(body) => embeddings(shared, &parts, &body).await,
                Err(response) => response,
            }
        }
        (&Method::GET, "/v1/models") => json(StatusCode::OK, shared.models_body.clone()),
        (&Method::GET, "/healthz") => {
            json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
        }
        (method, path) => {
            bump(&shared.stats.requests);
            bump(&shared.stats.bad_requests);
            record(shared, &parts, None, false, Cow::Borrowed("not_found"), 0);
            let message = format!("Invalid URL ({method} {path})");
            error(
                shared,
                StatusCode::NOT_FOUND,
                &message,
                "invalid_request_error",
                Some("unknown_url"),
            )
        }
    }
}

async fn read_body(
    shared: &Shared,
    parts: &Parts,
    body: Incoming,
) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => {
            let (status, message) = if err.is::<LengthLimitError>() {
                (StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
            } else {
                (StatusCode::BAD_REQUEST, "could not read request body")
            };
            Err(bad_request(shared, parts, None, false, status, message, 0))
        }
    }
}

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct EmbeddingsRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

/// Parses a request body, answering 400 (counted and logged) if it does not fit.
// The error is the response to send; boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
fn parse<'a, T: Deserialize<'a>>(
    shared: &Arc<Shared>,
    parts: &Parts,
    body: &'a Bytes,
) -> Result<T, Response<Body>> {
    serde_json::from_slice(body).map_err(|err| {
        let message = format!("invalid request body: {err}");
        bad_request(
            shared,
            parts,
            None,
            false,
            StatusCode::BAD_REQUEST,
            &message,
            body.len(),
        )
    })
}

async fn chat(shared: &Arc<Shared>, parts: &Parts, body: &Bytes) -> Response<Body> {
    let req: ChatRequest<'_> = match parse(shared, parts, body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let stream = req.stream.unwrap_or(false);
    let decision = match admit(shared, parts, &req.model, stream, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    let Decision {
        index,
        fault,
        tokens,
        pace,
    } = decision;
    let prompt_tokens = openai::approx_tokens(body.len());

    if let FaultAction::Status { code, retry_after } = fault.action {
        sleep(fault.delay).await;
        return status_error(shared, code, retry_after);
    }
    if fault.action == FaultAction::Hang {
        return hang().await;
    }
    if stream {
        let (chunks, end, skip_role) = match fault.action {
            FaultAction::DropAfter(n) => (n.min(tokens), StreamEnd::Drop, false),
            FaultAction::ErrorEventFirst => (0, StreamEnd::ErrorEvent, true),
            FaultAction::ErrorEventAfter(n) => (n.min(tokens), StreamEnd::ErrorEvent, false),
            FaultAction::TruncateAfter(n) => (n.min(tokens), StreamEnd::Truncate, false),
            _ => {
                bump(&shared.stats.ok);
                let include_usage = req
                    .stream_options
                    .and_then(|o| o.include_usage)
                    .unwrap_or(false);
                (tokens, StreamEnd::Complete { include_usage }, false)
            }
        };
        let body = ChatStream::new(
            Arc::clone(shared),
            ChatStreamPlan {
                index,
                model: req.model.into_owned(),
                delay: fault.delay,
                pace,
                chunks,
                end,
                skip_role,
                prompt_tokens,
            },
        );
        let mut response = Response::new(Body::from_stream(body));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(X_SIM_NAME, shared.name_header.clone());
        return response;
    }

    sleep(fault.delay).await;
    let completion = || openai::chat_completion(index, &req.model, tokens, prompt_tokens);
    non_stream_answer(shared, &fault.action, completion)
}

async fn embeddings(shared: &Arc<Shared>, parts: &Parts, body: &Bytes) -> Response<Body> {
    let req: EmbeddingsRequest<'_> = match parse(shared, parts, body) {
        Ok(req) => req,
        Err(response) => return response,
    };
    let inputs = match req.input.as_ref().map(parse_inputs) {
        Some(Some(inputs)) => inputs,
        _ => {
            let message = "`input` must be a non-empty string, array of strings, array of token ids or array of token id arrays";
            return bad_request(
                shared,
                parts,
                Some(&req.model),
                false,
                StatusCode::BAD_REQUEST,
                message,
                body.len(),
            );
        }
    };
    let decision = match admit(shared, parts, &req.model, false, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    let fault = decision.fault;
    if let FaultAction::Status { code, retry_after } = fault.action {
        sleep(fault.delay).await;
        return status_error(shared, code, retry_after);
    }
    if fault.action == FaultAction::Hang {
        return hang().await;
    }
    sleep(fault.delay).await;
    non_stream_answer(shared, &fault.action, || {
        openai::embeddings_body(&req.model, &inputs)
    })
}

fn parse_inputs(input: &serde_json::Value) -> Option<Vec<EmbeddingInput<'_>>> {
    use serde_json::Value;
    let is_token = |v: &Value| v.is_i64() || v.is_u64();
    let inputs: Vec<EmbeddingInput<'_>> = match input {
        Value::String(s) => vec![EmbeddingInput::Text(s)],
        Value::Array(items) if !items.is_empty() && items.iter().all(is_token) => {
            vec![EmbeddingInput::Tokens(items)]
        }
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Some(EmbeddingInput::Text(s)),
                Value::Array(tokens) if !tokens.is_empty() && tokens.iter().all(is_token) => {
                    Some(EmbeddingInput::Tokens(tokens))
                }
                _ => None,
            })
            .collect::<Option<_>>()?,
        _ => return None,
    };
    (!inputs.is_empty()).then_some(inputs)
}

/// Validates the model and override headers, then decides the fault and
/// logs the request; `Err` is the rejection to send (boxed: it is the rare
/// path and the response is large).
fn admit(
    shared: &Shared,
    parts: &Parts,
    model: &str,
    stream: bool,
    body_len: usize,
) -> Result<Decision, Box<Response<Body>>> {
    if !shared.models.iter().any(|m| m == model) {
        bump(&shared.stats.bad_requests);
        record(
            shared,
            parts,
            Some(model),
            stream,
            Cow::Borrowed("not_found"),
            body_len,
        );
        let message =
            format!("The model `{model}` does not exist or you do not have access to it.");
        return Err(Box::new(error(
            shared,
            StatusCode::NOT_FOUND,
            &message,
            "invalid_request_error",
            Some("model_not_found"),
        )));
    }
    let decision = match decide(shared, &parts.headers, stream) {
        Ok(decision) => decision,
        Err(message) => {
            let status = StatusCode::BAD_REQUEST;
            let response = bad_request(
                shared,
                parts,
                Some(model),
                stream,
                status,
                &message,
                body_len,
            );
            return Err(Box::new(response));
        }
    };
    let outcome = match decision.fault.action {
        FaultAction::Ok => Cow::Borrowed("ok"),
        FaultAction::Status { code, .. } => Cow::Owned(format!("status:{code}")),
        FaultAction::Hang => Cow::Borrowed("hang"),
        FaultAction::DropAfter(_) => Cow::Borrowed("drop"),
        FaultAction::ErrorEventFirst | FaultAction::ErrorEventAfter(_) => {
            Cow::Borrowed("error_event")
        }
        FaultAction::TruncateAfter(_) => Cow::Borrowed("truncate"),
    };
    record(shared, parts, Some(model), stream, outcome, body_len);
    if decision.fault.action == FaultAction::Hang {
        bump(&shared.stats.hangs);
    }
    Ok(decision)
}

/// The answer of a non-stream request whose action is not a status or hang.
fn non_stream_answer(
    shared: &Shared,
    action: &FaultAction,
    body: impl FnOnce() -> Bytes,
) -> Response<Body> {
    let mut response = match action {
        FaultAction::DropAfter(_) => {
            bump(&shared.stats.dropped);
            let body = body();
            let half = body.slice(..body.len() / 2);
            // The head and half the body go out, then the connection is
            // aborted.
            Response::new(Body::from_stream(AbortAfter::new(half)))
        }
        FaultAction::TruncateAfter(_) => {
            bump(&shared.stats.truncated);
            let body = body();
            Response::new(Body::from(body.slice(..body.len() / 2)))
        }
        FaultAction::ErrorEventFirst | FaultAction::ErrorEventAfter(_) => {
            bump(&shared.stats.error_events);
            let message = format!("simulated overload from {}", shared.name);
            Response::new(Body::from(openai::error_body(
                &message,
                "overloaded_error",
                Some("overloaded"),
            )))
        }
        _ => {
            bump(&shared.stats.ok);
            Response::new(Body::from(body()))
        }
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, APPLICATION_JSON);
    headers.insert(X_SIM_NAME, shared.name_header.clone());
    response
}

async fn sleep(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// Never answers; the handler future (and its cancel guard) is dropped when
/// hyper notices the peer is gone.
async fn hang() -> Response<Body> {
    std::future::pending::<()>().await;
    Response::new(Body::empty())
}

fn status_error(shared: &Shared, code: u16, retry_after: Option<Duration>) -> Response<Body> {
    shared.stats.status(code);
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, error_code) = openai::status_error_kind(code);
    let message = format!("simulated {code} from {}", shared.name);
    let mut response = error(shared, status, &message, kind, error_code);
    if let Some(retry_after) = retry_after {
        let millis = retry_after.as_nanos().div_ceil(1_000_000);
        let secs = millis.div_ceil(1000);
        let headers = response.headers_mut();
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from(u64::try_from(secs).unwrap_or(u64::MAX)),
        );
        headers.insert(
            RETRY_AFTER_MS,
            HeaderValue::from(u64::try_from(millis).unwrap_or(u64::MAX)),
        );
    }
    response
}

fn bad_request(
    shared: &Shared,
    parts: &Parts,
    model: Option<&str>,
    stream: bool,
    status: StatusCode,
    message: &str,
    body_len: usize,
) -> Response<Body> {
    bump(&shared.stats.bad_requests);
    record(
        shared,
        parts,
        model,
        stream,
        Cow::Borrowed("bad_request"),
        body_len,
    );
    error(
        shared,
        status,
        message,
        "invalid_request_error",
        Some("invalid_request"),
    )
}

fn error(
    shared: &Shared,
    status: StatusCode,
    message: &str,
    kind: &str,
    code: Option<&str>,
) -> Response<Body> {
    let mut response = json(status, openai::error_body(message, kind, code));
    response
        .headers_mut()
        .insert(X_SIM_NAME, shared.name_header.clone());
    response
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

fn record(
    shared: &Shared,
    parts: &Parts,
    model: Option<&str>,
    stream: bool,
    outcome: Cow<'static, str>,
    body_len: usize,
) {
    shared.log.push(RequestRecord {
        at: tokio::time::Instant::now(),
        path: parts.uri.path().to_owned(),
        model: model.map(str::to_owned),
        stream,
        outcome: outcome.into_owned(),
        headers: recorded_headers(&parts.headers),
        body_len,
    });
}

/// Keeps `x-request-id` and the presence, never the value, of credentials.
fn recorded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if n == "x-request-id" {
            kept.push((
                n.to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            ));
        } else if is_credential(n) {
            kept.push((n.to_owned(), "present".to_owned()));
        }
    }
    kept
}

fn is_credential(name: &str) -> bool {
    name == "authorization"
        || name == "proxy-authorization"
        || name == "cookie"
        || name.contains("key")
        || name.contains("token")
        || name.contains("secret")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_recorded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-secret"),
        );
        headers.insert("x-api-key", HeaderValue::from_static("sk-secret"));
        headers.insert("api-key", HeaderValue::from_static("sk-secret"));
        headers.insert("x-request-id", HeaderValue::from_static("req-1"));
        headers.insert("user-agent", HeaderValue::from_static("test"));
        let kept = recorded_headers(&headers);
        assert!(kept.iter().all(|(_, v)| !v.contains("sk-secret")));
        assert!(kept.contains(&("authorization".to_owned(), "present".to_owned())));
        assert!(kept.contains(&("x-request-id".to_owned(), "req-1".to_owned())));
        assert!(!kept.iter().any(|(n, _)| n == "user-agent"));
        assert_eq!(kept.len(), 4);
    }
}
