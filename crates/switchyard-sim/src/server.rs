//! The HTTP side: accept loop, routing by dialect, the flow every inference
//! request follows (authorize, parse, admit, answer its fault) and the
//! OpenAI and Azure chat, legacy completions and embeddings handlers (the
//! Responses API is in `responses`, moderations, images and audio in
//! `media`).
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
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
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
use super::continuation::{Mode, Resume};
use super::dialect::{self, Dialect, SimError};
use super::openai::{self, ChatChunks, ChatOutput, CompletionChunks, EmbeddingInput};
use super::stats::{bump, CancelGuard};
use super::stream::{AbortAfter, SimStream, StreamEnd, StreamFormat, StreamPlan};
use super::{
    anthropic, gemini, media, responses, FaultAction, ReceivedBody, RequestRecord, Shared,
    SimEndpoint, BODY_LOG_MAX_BYTES,
};

const CHAT_PATH: &str = "/v1/chat/completions";
const EMBEDDINGS_PATH: &str = "/v1/embeddings";
const MESSAGES_PATH: &str = "/v1/messages";
const RESPONSES_PATH: &str = "/v1/responses";
const AZURE_RESPONSES_PATH: &str = "/openai/responses";
const GEMINI_PREFIX: &str = "/v1beta/models/";
const AZURE_PREFIX: &str = "/openai/deployments/";
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

const X_SIM_NAME: HeaderName = HeaderName::from_static("x-sim-name");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const AZURE_API_KEY: HeaderName = HeaderName::from_static("api-key");
const ANTHROPIC_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const GOOGLE_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

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
    // The OpenAI paths are matched first and exactly: the sim is the
    // upstream of overhead benchmarks, so other dialects cost them nothing.
    let route = match (&parts.method, parts.uri.path()) {
        (&Method::POST, CHAT_PATH) => Route::Chat { deployment: None },
        (&Method::POST, EMBEDDINGS_PATH) => Route::Embeddings { deployment: None },
        (&Method::POST, MESSAGES_PATH) => Route::Messages,
        (&Method::POST, RESPONSES_PATH) => Route::Responses { azure: false },
        (&Method::POST, AZURE_RESPONSES_PATH) => Route::Responses { azure: true },
        (&Method::GET, "/v1/models") => return json(StatusCode::OK, shared.models_body.clone()),
        (&Method::GET, "/healthz") => {
            return json(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
        }
        (&Method::POST, path) => {
            match Route::openai_operation(path).or_else(|| Route::keyed_by_path(path)) {
                Some(route) => route,
                None => return unknown_route(shared, &parts),
            }
        }
        _ => return unknown_route(shared, &parts),
    };
    bump(&shared.stats.requests);
    let ctx = Ctx::new(shared, &parts, route.endpoint());
    let path_model = route.path_model();
    let body = match read_body(&ctx, path_model, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    ctx.keep_body(&body);
    if let Err(response) = ctx.authorize(path_model, body.len()) {
        return *response;
    }
    match route {
        Route::Chat { deployment } => chat(&ctx, &body, deployment).await,
        Route::Embeddings { deployment } => embeddings(&ctx, &body, deployment).await,
        Route::Messages => anthropic::messages(&ctx, &body).await,
        Route::Generate { model, stream } => gemini::generate(&ctx, &body, model, stream).await,
        Route::Responses { .. } => responses::create(&ctx, &body).await,
        Route::Completions { deployment } => completions(&ctx, &body, deployment).await,
        Route::Moderations => media::moderations(&ctx, &body).await,
        Route::Images { deployment } => media::images(&ctx, &body, deployment).await,
        Route::Speech { deployment } => media::speech(&ctx, &body, deployment).await,
        Route::Audio {
            deployment,
            translate,
        } => media::transcribe(&ctx, &body, deployment, translate).await,
    }
}

/// An inference endpoint, with what its path says.
#[derive(Clone, Copy)]
enum Route<'p> {
    /// OpenAI's, or Azure's when the path names a deployment.
    Chat {
        deployment: Option<&'p str>,
    },
    Embeddings {
        deployment: Option<&'p str>,
    },
    Messages,
    Generate {
        model: &'p str,
        stream: bool,
    },
    /// OpenAI's, or Azure's `/openai/responses` (model in the body).
    Responses {
        azure: bool,
    },
    Completions {
        deployment: Option<&'p str>,
    },
    /// OpenAI only: Azure has no moderations API.
    Moderations,
    Images {
        deployment: Option<&'p str>,
    },
    Speech {
        deployment: Option<&'p str>,
    },
    /// Transcriptions, or translations when `translate`.
    Audio {
        deployment: Option<&'p str>,
        translate: bool,
    },
}

impl<'p> Route<'p> {
    /// OpenAI's endpoints besides chat, embeddings and responses.
    fn openai_operation(path: &str) -> Option<Self> {
        Self::operation(path.strip_prefix("/v1/")?, None)
    }

    /// An operation path under `/v1/` or an Azure deployment (Azure has no
    /// moderations).
    fn operation(operation: &str, deployment: Option<&'p str>) -> Option<Self> {
        Some(match operation {
            "chat/completions" => Self::Chat { deployment },
            "embeddings" => Self::Embeddings { deployment },
            "completions" => Self::Completions { deployment },
            "moderations" if deployment.is_none() => Self::Moderations,
            "images/generations" => Self::Images { deployment },
            "audio/speech" => Self::Speech { deployment },
            "audio/transcriptions" => Self::Audio {
                deployment,
                translate: false,
            },
            "audio/translations" => Self::Audio {
                deployment,
                translate: true,
            },
            _ => return None,
        })
    }

    /// The Gemini and Azure endpoints, which carry the model in the path.
    fn keyed_by_path(path: &'p str) -> Option<Self> {
        if let Some(rest) = path.strip_prefix(GEMINI_PREFIX) {
            let (model, method) = rest.rsplit_once(':')?;
            let stream = match method {
                "generateContent" => false,
                "streamGenerateContent" => true,
                _ => return None,
            };
            return (!model.is_empty() && !model.contains('/'))
                .then_some(Self::Generate { model, stream });
        }
        let rest = path.strip_prefix(AZURE_PREFIX)?;
        let (deployment, operation) = rest.split_once('/')?;
        if deployment.is_empty() {
            return None;
        }
        Self::operation(operation, Some(deployment))
    }

    fn endpoint(self) -> SimEndpoint {
        match self {
            Self::Chat { deployment: None } => SimEndpoint::OpenAiChat,
            Self::Chat {
                deployment: Some(_),
            } => SimEndpoint::AzureChat,
            Self::Embeddings { deployment: None } => SimEndpoint::OpenAiEmbeddings,
            Self::Embeddings {
                deployment: Some(_),
            } => SimEndpoint::AzureEmbeddings,
            Self::Messages => SimEndpoint::AnthropicMessages,
            Self::Generate { stream: false, .. } => SimEndpoint::GeminiGenerateContent,
            Self::Generate { stream: true, .. } => SimEndpoint::GeminiStreamGenerateContent,
            Self::Responses { azure: false } => SimEndpoint::OpenAiResponses,
            Self::Responses { azure: true } => SimEndpoint::AzureResponses,
            Self::Completions { deployment } => azure_or(
                deployment,
                SimEndpoint::OpenAiCompletions,
                SimEndpoint::AzureCompletions,
            ),
            Self::Moderations => SimEndpoint::OpenAiModerations,
            Self::Images { deployment } => azure_or(
                deployment,
                SimEndpoint::OpenAiImages,
                SimEndpoint::AzureImages,
            ),
            Self::Speech { deployment } => azure_or(
                deployment,
                SimEndpoint::OpenAiSpeech,
                SimEndpoint::AzureSpeech,
            ),
            Self::Audio {
                deployment,
                translate: false,
            } => azure_or(
                deployment,
                SimEndpoint::OpenAiTranscriptions,
                SimEndpoint::AzureTranscriptions,
            ),
            Self::Audio {
                deployment,
                translate: true,
            } => azure_or(
                deployment,
                SimEndpoint::OpenAiTranslations,
                SimEndpoint::AzureTranslations,
            ),
        }
    }

    fn path_model(self) -> Option<&'p str> {
        match self {
            Self::Chat { deployment }
            | Self::Embeddings { deployment }
            | Self::Completions { deployment }
            | Self::Images { deployment }
            | Self::Speech { deployment }
            | Self::Audio { deployment, .. } => deployment,
            Self::Messages | Self::Responses { .. } | Self::Moderations => None,
            Self::Generate { model, .. } => Some(model),
        }
    }
}

fn azure_or(deployment: Option<&str>, openai: SimEndpoint, azure: SimEndpoint) -> SimEndpoint {
    if deployment.is_some() {
        azure
    } else {
        openai
    }
}

fn unknown_route(shared: &Arc<Shared>, parts: &Parts) -> Response<Body> {
    bump(&shared.stats.requests);
    bump(&shared.stats.bad_requests);
    let ctx = Ctx::new(shared, parts, SimEndpoint::Unknown);
    ctx.record(None, false, Cow::Borrowed("not_found"), 0);
    let message = format!("Invalid URL ({} {})", parts.method, parts.uri.path());
    let mut response = json(
        StatusCode::NOT_FOUND,
        openai::error_body(&message, "invalid_request_error", Some("unknown_url")),
    );
    response
        .headers_mut()
        .insert(X_SIM_NAME, shared.name_header.clone());
    response
}

async fn read_body(
    ctx: &Ctx<'_>,
    path_model: Option<&str>,
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
            Err(ctx.reject(path_model, ctx.path_stream(), status, message, 0))
        }
    }
}

/// One inference request on its way through validation, fault selection
/// and the answer: the request, the dialect it speaks and the key it
/// presented.
pub(crate) struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    parts: &'a Parts,
    endpoint: SimEndpoint,
    api_key: Option<&'a str>,
    /// What the request's log record says about a continuation.
    continuation: std::sync::Mutex<Option<String>>,
    /// The `service_tier` the request's body asked for (chat only).
    service_tier: std::sync::Mutex<Option<String>>,
}

impl<'a> Ctx<'a> {
    fn new(shared: &'a Arc<Shared>, parts: &'a Parts, endpoint: SimEndpoint) -> Self {
        Self {
            shared,
            parts,
            endpoint,
            api_key: presented_key(parts, endpoint),
            continuation: std::sync::Mutex::new(None),
            service_tier: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn query_param(&self, name: &str) -> Option<&'a str> {
        query_param(self.parts, name)
    }

    pub(crate) fn shared(&self) -> &'a Arc<Shared> {
        self.shared
    }

    pub(crate) fn header(&self, name: &HeaderName) -> Option<&'a str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Keeps a copy of the body for [`super::SimHandle::bodies`].
    fn keep_body(&self, body: &Bytes) {
        let kept = &body[..body.len().min(BODY_LOG_MAX_BYTES)];
        self.shared.bodies.push(ReceivedBody {
            at: tokio::time::Instant::now(),
            path: self.parts.uri.path().to_owned(),
            endpoint: self.endpoint,
            body: Bytes::copy_from_slice(kept),
        });
    }

    /// Whether the path alone says the request streams (Gemini's
    /// `streamGenerateContent`), for records made before the body is read.
    fn path_stream(&self) -> bool {
        self.endpoint == SimEndpoint::GeminiStreamGenerateContent
    }

    /// The dialect's own credential and version checks, then the accepted
    /// keys. They come before the body is parsed, as at a real provider, and
    /// consume no request index or script entry.
    fn authorize(
        &self,
        path_model: Option<&str>,
        body_len: usize,
    ) -> Result<(), Box<Response<Body>>> {
        let dialect = self.endpoint.dialect();
        let stream = self.path_stream();
        if dialect == Dialect::Azure && self.query_param("api-version").is_none() {
            bump(&self.shared.stats.bad_requests);
            self.record(path_model, stream, Cow::Borrowed("not_found"), body_len);
            return Err(Box::new(self.error(SimError::MissingVersion)));
        }
        let key_required = dialect != Dialect::OpenAi;
        let refusal = match (self.api_key, &self.shared.accepted_keys) {
            (None, Some(_)) => Some(SimError::MissingKey),
            (None, None) if key_required => Some(SimError::MissingKey),
            (Some(key), Some(accepted)) if !accepted.iter().any(|k| k == key) => {
                Some(SimError::InvalidKey)
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            bump(&self.shared.stats.unauthorized);
            self.record(path_model, stream, Cow::Borrowed("unauthorized"), body_len);
            return Err(Box::new(self.error(refusal)));
        }
        if dialect == Dialect::Anthropic && !self.parts.headers.contains_key(ANTHROPIC_VERSION) {
            bump(&self.shared.stats.bad_requests);
            self.record(path_model, stream, Cow::Borrowed("bad_request"), body_len);
            return Err(Box::new(self.error(SimError::MissingVersion)));
        }
        Ok(())
    }

    /// Parses a request body, answering 400 (counted and logged) if it does
    /// not fit.
    #[allow(
        clippy::result_large_err,
        reason = "the error is the response to send; boxing it would only add an allocation"
    )]
    pub(crate) fn parse<'b, T: Deserialize<'b>>(
        &self,
        path_model: Option<&str>,
        body: &'b Bytes,
    ) -> Result<T, Response<Body>> {
        serde_json::from_slice(body).map_err(|err| {
            let message = format!("invalid request body: {err}");
            self.reject(
                path_model,
                self.path_stream(),
                StatusCode::BAD_REQUEST,
                &message,
                body.len(),
            )
        })
    }

    /// Validates the model and override headers, then decides the fault and
    /// logs the request; `Err` is the rejection to send (boxed: it is the
    /// rare path and the response is large).
    pub(crate) fn admit(
        &self,
        model: &str,
        stream: bool,
        body_len: usize,
    ) -> Result<Decision, Box<Response<Body>>> {
        let shared = self.shared;
        if !shared.models.iter().any(|m| m == model) {
            bump(&shared.stats.bad_requests);
            self.record(Some(model), stream, Cow::Borrowed("not_found"), body_len);
            return Err(Box::new(self.error(SimError::UnknownModel(model))));
        }
        let decision = match decide(shared, &self.parts.headers, stream) {
            Ok(decision) => decision,
            Err(message) => {
                let status = StatusCode::BAD_REQUEST;
                let response = self.reject(Some(model), stream, status, &message, body_len);
                return Err(Box::new(response));
            }
        };
        let outcome = match decision.fault.action {
            FaultAction::Ok => Cow::Borrowed("ok"),
            FaultAction::Status { code, .. } => Cow::Owned(format!("status:{code}")),
            FaultAction::ContextLength => Cow::Borrowed("context_length"),
            FaultAction::Hang => Cow::Borrowed("hang"),
            FaultAction::DropAfter(_) => Cow::Borrowed("drop"),
            FaultAction::ErrorEventFirst | FaultAction::ErrorEventAfter(_) => {
                Cow::Borrowed("error_event")
            }
            FaultAction::TruncateAfter(_) => Cow::Borrowed("truncate"),
            FaultAction::StallAfter(_) => Cow::Borrowed("stall"),
        };
        self.record(Some(model), stream, outcome, body_len);
        if decision.fault.action == FaultAction::Hang {
            bump(&shared.stats.hangs);
        }
        Ok(decision)
    }

    /// [`Ctx::admit`] for a request that may continue a partial answer:
    /// a prefill is refused (400) when the behaviour says so, an
    /// instructed continuation repeats the tokens it asks for, and the log
    /// record says where the answer was picked up.
    pub(crate) fn admit_continuing(
        &self,
        model: &str,
        stream: bool,
        body_len: usize,
        resume: Option<Resume>,
    ) -> Result<(Decision, Option<Resume>), Box<Response<Body>>> {
        let Some(resume) = resume else {
            return self.admit(model, stream, body_len).map(|d| (d, None));
        };
        let shared = self.shared;
        // The behaviour in force decides; the fault draw is not consumed
        // by a refusal.
        let behavior = shared.behavior.load();
        if behavior.reject_prefill && resume.mode == Mode::Prefill {
            self.note_continuation("prefill rejected".to_owned());
            shared.stats.status(400);
            self.record(Some(model), stream, Cow::Borrowed("status:400"), body_len);
            let message = "assistant prefill is not supported by this model";
            return Err(Box::new(self.error(SimError::Invalid {
                status: StatusCode::BAD_REQUEST,
                message,
            })));
        }
        let resume = resume.repeating(behavior.continue_overlap);
        self.note_continuation(resume.describe());
        self.admit(model, stream, body_len)
            .map(|d| (d, Some(resume)))
    }

    /// Notes the tier a chat body asked for, and refuses it (429
    /// `resource_unavailable`, logged and counted, no request index
    /// consumed) when the behaviour in force says so.
    fn refuse_tier(
        &self,
        model: &str,
        stream: bool,
        body_len: usize,
        tier: Option<&str>,
    ) -> Option<Response<Body>> {
        let tier = tier?;
        if let Ok(mut slot) = self.service_tier.lock() {
            *slot = Some(tier.to_owned());
        }
        let behavior = self.shared.behavior.load();
        if behavior.refuse_service_tier.as_deref() != Some(tier) {
            return None;
        }
        self.shared.stats.status(429);
        self.record(
            Some(model),
            stream,
            Cow::Borrowed("resource_unavailable"),
            body_len,
        );
        Some(self.error(SimError::TierUnavailable(tier)))
    }

    /// An admitted request at the behaviour's `slow_service_tier` waits
    /// that much longer before it answers.
    fn slow_tier(&self, mut decision: Decision, tier: Option<&str>) -> Decision {
        let behavior = self.shared.behavior.load();
        if let (Some((slow, delay)), Some(tier)) = (&behavior.slow_service_tier, tier) {
            if slow == tier {
                decision.fault.delay += *delay;
            }
        }
        decision
    }

    fn note_continuation(&self, text: String) {
        if let Ok(mut slot) = self.continuation.lock() {
            *slot = Some(text);
        }
    }

    /// Carries out an admitted request's fault. `stream` is the event
    /// format for a streamed request; `complete` builds the whole body of a
    /// successful non-stream answer (also cut short by the stream faults).
    pub(crate) async fn answer<F: StreamFormat>(
        &self,
        decision: Decision,
        stream: Option<F>,
        complete: impl FnOnce() -> Bytes,
    ) -> Response<Body> {
        self.answer_as(decision, stream, APPLICATION_JSON, complete)
            .await
    }

    /// [`Ctx::answer`] for a non-stream body of another `content_type`.
    pub(crate) async fn answer_as<F: StreamFormat>(
        &self,
        decision: Decision,
        stream: Option<F>,
        content_type: HeaderValue,
        complete: impl FnOnce() -> Bytes,
    ) -> Response<Body> {
        let Decision { fault, pace, .. } = decision;
        match fault.action {
            FaultAction::Status { code, retry_after } => {
                sleep(fault.delay).await;
                return self.status_error(code, retry_after);
            }
            FaultAction::ContextLength => {
                sleep(fault.delay).await;
                self.shared.stats.status(400);
                return self.error(SimError::ContextLength);
            }
            FaultAction::Hang => return hang().await,
            _ => {}
        }
        let Some(format) = stream else {
            sleep(fault.delay).await;
            return self.non_stream_answer(&fault.action, content_type, complete);
        };
        let stream_type = HeaderValue::from_static(format.content_type());
        let tokens = format.chunks();
        let (chunks, end, skip_preamble) = match fault.action {
            FaultAction::DropAfter(n) => (n.min(tokens), StreamEnd::Drop, false),
            FaultAction::ErrorEventFirst => (0, StreamEnd::ErrorEvent, true),
            FaultAction::ErrorEventAfter(n) => (n.min(tokens), StreamEnd::ErrorEvent, false),
            FaultAction::TruncateAfter(n) => (n.min(tokens), StreamEnd::Truncate, false),
            FaultAction::StallAfter(n) => (n.min(tokens), StreamEnd::Stall, false),
            _ => {
                bump(&self.shared.stats.ok);
                (tokens, StreamEnd::Complete, false)
            }
        };
        let body = SimStream::new(
            Arc::clone(self.shared),
            format,
            StreamPlan {
                delay: fault.delay,
                pace,
                chunks,
                end,
                skip_preamble,
            },
        );
        let mut response = Response::new(Body::from_stream(body));
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, stream_type);
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(X_SIM_NAME, self.shared.name_header.clone());
        response
    }

    /// The answer of a non-stream request whose action is not a status,
    /// context-length error or hang.
    fn non_stream_answer(
        &self,
        action: &FaultAction,
        content_type: HeaderValue,
        body: impl FnOnce() -> Bytes,
    ) -> Response<Body> {
        let stats = &self.shared.stats;
        let mut response = match action {
            FaultAction::DropAfter(_) => {
                bump(&stats.dropped);
                let body = body();
                let half = body.slice(..body.len() / 2);
                // The head and half the body go out, then the connection is
                // aborted.
                Response::new(Body::from_stream(AbortAfter::new(half)))
            }
            FaultAction::TruncateAfter(_) => {
                bump(&stats.truncated);
                let body = body();
                Response::new(Body::from(body.slice(..body.len() / 2)))
            }
            FaultAction::ErrorEventFirst | FaultAction::ErrorEventAfter(_) => {
                bump(&stats.error_events);
                let (_, body) =
                    dialect::render(self.endpoint, SimError::Overloaded, &self.shared.name);
                let mut response = Response::new(Body::from(body));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, APPLICATION_JSON);
                response
            }
            _ => {
                bump(&stats.ok);
                Response::new(Body::from(body()))
            }
        };
        let headers = response.headers_mut();
        headers.entry(CONTENT_TYPE).or_insert(content_type);
        headers.insert(X_SIM_NAME, self.shared.name_header.clone());
        response
    }

    fn status_error(&self, code: u16, retry_after: Option<Duration>) -> Response<Body> {
        self.shared.stats.status(code);
        let mut response = self.error(SimError::Injected(code));
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

    /// A 404 for a resource the request names that does not exist (e.g. a
    /// `previous_response_id`), counted and logged like an unknown model.
    pub(crate) fn not_found(
        &self,
        model: Option<&str>,
        stream: bool,
        body: Bytes,
        body_len: usize,
    ) -> Response<Body> {
        bump(&self.shared.stats.bad_requests);
        self.record(model, stream, Cow::Borrowed("not_found"), body_len);
        let mut response = json(StatusCode::NOT_FOUND, body);
        response
            .headers_mut()
            .insert(X_SIM_NAME, self.shared.name_header.clone());
        response
    }

    /// A 4xx for an unreadable or invalid request, counted and logged.
    pub(crate) fn reject(
        &self,
        model: Option<&str>,
        stream: bool,
        status: StatusCode,
        message: &str,
        body_len: usize,
    ) -> Response<Body> {
        bump(&self.shared.stats.bad_requests);
        self.record(model, stream, Cow::Borrowed("bad_request"), body_len);
        self.error(SimError::Invalid { status, message })
    }

    /// `error` in the dialect's shape, with the sim's name header.
    fn error(&self, error: SimError<'_>) -> Response<Body> {
        let (status, body) = dialect::render(self.endpoint, error, &self.shared.name);
        let mut response = json(status, body);
        response
            .headers_mut()
            .insert(X_SIM_NAME, self.shared.name_header.clone());
        response
    }

    fn record(
        &self,
        model: Option<&str>,
        stream: bool,
        outcome: Cow<'static, str>,
        body_len: usize,
    ) {
        self.shared.log.push(RequestRecord {
            at: tokio::time::Instant::now(),
            path: self.parts.uri.path().to_owned(),
            endpoint: self.endpoint,
            api_key: self.api_key.map(str::to_owned),
            model: model.map(str::to_owned),
            stream,
            outcome: outcome.into_owned(),
            headers: recorded_headers(&self.parts.headers),
            body_len,
            continuation: self.continuation.lock().ok().and_then(|c| c.clone()),
            service_tier: self.service_tier.lock().ok().and_then(|t| t.clone()),
        });
    }
}

/// The key in the dialect's credential header (Gemini also takes `?key=`).
/// A value that is not visible ASCII counts as absent.
fn presented_key(parts: &Parts, endpoint: SimEndpoint) -> Option<&str> {
    let header = |name: &HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    match endpoint.dialect() {
        Dialect::OpenAi => header(&AUTHORIZATION).and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        }),
        Dialect::Azure => header(&AZURE_API_KEY),
        Dialect::Anthropic => header(&ANTHROPIC_API_KEY),
        Dialect::Gemini => header(&GOOGLE_API_KEY).or_else(|| query_param(parts, "key")),
    }
}

/// The raw (not percent-decoded) value of a query parameter; keys and API
/// versions need no decoding.
fn query_param<'p>(parts: &'p Parts, name: &str) -> Option<&'p str> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default, borrow)]
    tools: Option<Vec<ChatTool<'a>>>,
    #[serde(default)]
    tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    messages: Option<ToolResults>,
    #[serde(default)]
    response_format: Option<serde_json::Value>,
    #[serde(default)]
    service_tier: Option<String>,
}

#[derive(Deserialize)]
struct ChatTool<'a> {
    #[serde(default, borrow)]
    function: Option<ChatFunction<'a>>,
}

#[derive(Deserialize)]
struct ChatFunction<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// Whether any message of `messages` is a tool result, read without keeping
/// the messages.
#[derive(Default)]
struct ToolResults {
    tool: bool,
}

impl<'de> Deserialize<'de> for ToolResults {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = ToolResults;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of messages")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ToolResults, A::Error> {
                let mut seen = ToolResults::default();
                while let Some(message) = seq.next_element::<RoleOnly<'de>>()? {
                    seen.tool |= message.role.as_deref() == Some("tool");
                }
                Ok(seen)
            }
        }
        d.deserialize_seq(Visitor)
    }
}

#[derive(Deserialize)]
struct RoleOnly<'a> {
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
}

/// The function a chat answer calls, by the same rule as the Responses
/// API: function tools offered, `tool_choice` not `none`, and no tool result
/// among the messages yet (so a tool round trip ends in text); a named
/// `tool_choice` picks the function.
fn called_tool(
    tools: Option<&[ChatTool<'_>]>,
    tool_choice: Option<&serde_json::Value>,
    messages: Option<&ToolResults>,
) -> Option<String> {
    let first = tools?.iter().find_map(|t| t.function.as_ref())?;
    if messages.is_some_and(|m| m.tool) {
        return None;
    }
    match tool_choice {
        Some(serde_json::Value::String(choice)) if choice == "none" => None,
        Some(serde_json::Value::Object(choice)) => Some(
            choice
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(serde_json::Value::as_str)
                .unwrap_or(&first.name)
                .to_owned(),
        ),
        _ => Some(first.name.clone().into_owned()),
    }
}

/// Azure's chat body: the deployment in the path is the model.
#[derive(Deserialize)]
struct DeploymentChatRequest<'a> {
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default, borrow)]
    tools: Option<Vec<ChatTool<'a>>>,
    #[serde(default)]
    tool_choice: Option<serde_json::Value>,
    #[serde(default)]
    messages: Option<ToolResults>,
    #[serde(default)]
    response_format: Option<serde_json::Value>,
    #[serde(default)]
    service_tier: Option<String>,
}

/// The chat fields the answer depends on.
struct ChatFields<'a> {
    model: Cow<'a, str>,
    service_tier: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    tool: Option<String>,
    /// Structured output asked for with `response_format`.
    json: Option<String>,
}

/// The JSON text a `response_format` of type `json_schema` (filled from its
/// schema) or `json_object` (`{}`) asks for.
fn structured_output(format: Option<&serde_json::Value>) -> Option<String> {
    let format = format?;
    match format.get("type")?.as_str()? {
        "json_schema" => Some(responses::schema_instance(&format["json_schema"]["schema"])),
        "json_object" => Some("{}".to_owned()),
        _ => None,
    }
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

#[derive(Deserialize)]
struct DeploymentEmbeddingsRequest {
    #[serde(default)]
    input: Option<serde_json::Value>,
}

/// OpenAI chat, or Azure's when `deployment` is set.
async fn chat(ctx: &Ctx<'_>, body: &Bytes, deployment: Option<&str>) -> Response<Body> {
    let fields = match deployment {
        None => ctx
            .parse::<ChatRequest<'_>>(None, body)
            .map(|req| ChatFields {
                tool: called_tool(
                    req.tools.as_deref(),
                    req.tool_choice.as_ref(),
                    req.messages.as_ref(),
                ),
                json: structured_output(req.response_format.as_ref()),
                model: req.model,
                service_tier: req.service_tier,
                stream: req.stream,
                stream_options: req.stream_options,
            }),
        Some(deployment) => ctx
            .parse::<DeploymentChatRequest<'_>>(Some(deployment), body)
            .map(|req| ChatFields {
                model: Cow::Borrowed(deployment),
                tool: called_tool(
                    req.tools.as_deref(),
                    req.tool_choice.as_ref(),
                    req.messages.as_ref(),
                ),
                json: structured_output(req.response_format.as_ref()),
                service_tier: req.service_tier,
                stream: req.stream,
                stream_options: req.stream_options,
            }),
    };
    let ChatFields {
        model,
        service_tier,
        stream,
        stream_options,
        tool,
        json,
    } = match fields {
        Ok(fields) => fields,
        Err(response) => return response,
    };
    let stream = stream.unwrap_or(false);
    if let Some(refused) = ctx.refuse_tier(&model, stream, body.len(), service_tier.as_deref()) {
        return refused;
    }
    let output = match (&tool, &json) {
        (Some(name), _) => ChatOutput::Call(name),
        (None, Some(text)) => ChatOutput::Json(text),
        (None, None) => ChatOutput::Tokens,
    };
    let resume = continuing(body);
    let (decision, resume) = match ctx.admit_continuing(&model, stream, body.len(), resume) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let decision = ctx.slow_tier(decision, service_tier.as_deref());
    let (index, tokens) = (decision.index, decision.tokens);
    let prompt_tokens = openai::approx_tokens(body.len());
    let format = stream.then(|| {
        let include_usage = stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        ChatChunks::new(index, &model, tokens, include_usage, prompt_tokens)
            .answering(index, output)
            .continuing(resume)
    });
    ctx.answer(decision, format, || {
        openai::chat_completion(index, &model, tokens, prompt_tokens, output)
    })
    .await
}

/// The continuation a chat body asks for, if any. Only bodies with an
/// assistant message are parsed a second time.
fn continuing(body: &Bytes) -> Option<Resume> {
    #[derive(Deserialize)]
    struct Messages {
        #[serde(default)]
        messages: Vec<serde_json::Value>,
    }
    memchr::memmem::find(body, b"\"assistant\"")?;
    let parsed: Messages = serde_json::from_slice(body).ok()?;
    super::continuation::detect(&parsed.messages, "assistant")
}

/// Legacy completions: the same fields as chat are read.
async fn completions(ctx: &Ctx<'_>, body: &Bytes, deployment: Option<&str>) -> Response<Body> {
    let (model, stream, stream_options) = match deployment {
        None => match ctx.parse::<ChatRequest<'_>>(None, body) {
            Ok(req) => (req.model, req.stream, req.stream_options),
            Err(response) => return response,
        },
        Some(deployment) => match ctx.parse::<DeploymentChatRequest<'_>>(Some(deployment), body) {
            Ok(req) => (Cow::Borrowed(deployment), req.stream, req.stream_options),
            Err(response) => return response,
        },
    };
    let stream = stream.unwrap_or(false);
    let decision = match ctx.admit(&model, stream, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    let (index, tokens) = (decision.index, decision.tokens);
    let prompt_tokens = openai::approx_tokens(body.len());
    let format = stream.then(|| {
        let include_usage = stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        CompletionChunks::new(index, &model, tokens, include_usage, prompt_tokens)
    });
    ctx.answer(decision, format, || {
        openai::text_completion(index, &model, tokens, prompt_tokens)
    })
    .await
}

/// OpenAI embeddings, or Azure's when `deployment` is set.
async fn embeddings(ctx: &Ctx<'_>, body: &Bytes, deployment: Option<&str>) -> Response<Body> {
    let (model, input) = match deployment {
        None => match ctx.parse::<EmbeddingsRequest<'_>>(None, body) {
            Ok(req) => (req.model, req.input),
            Err(response) => return response,
        },
        Some(deployment) => {
            match ctx.parse::<DeploymentEmbeddingsRequest>(Some(deployment), body) {
                Ok(req) => (Cow::Borrowed(deployment), req.input),
                Err(response) => return response,
            }
        }
    };
    let inputs = match input.as_ref().map(parse_inputs) {
        Some(Some(inputs)) => inputs,
        _ => {
            let message = "`input` must be a non-empty string, array of strings, array of token ids or array of token id arrays";
            return ctx.reject(
                Some(&model),
                false,
                StatusCode::BAD_REQUEST,
                message,
                body.len(),
            );
        }
    };
    let decision = match ctx.admit(&model, false, body.len()) {
        Ok(decision) => decision,
        Err(response) => return *response,
    };
    ctx.answer(decision, None::<ChatChunks>, || {
        openai::embeddings_body(&model, &inputs)
    })
    .await
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

pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// Keeps `x-request-id`, the W3C trace context (`traceparent`,
/// `tracestate`) and the presence, never the value, of credentials.
fn recorded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    for (name, value) in headers {
        let n = name.as_str();
        if matches!(n, "x-request-id" | "traceparent" | "tracestate") {
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
