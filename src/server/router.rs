//! The HTTP surface: which path and method reach which inbound protocol or
//! operator view, the admin API behind its key, and the OpenAI-shaped
//! answers for unknown paths and methods.

use super::inbound::{Messages, Multipart, OpenAiJson, Responses, ResponsesStored};
use super::operator::*;
use super::proxy::serve;
use super::AppState;
use crate::api::Endpoint;
use crate::error::GatewayError;
use axum::extract::{Path, Request, State};
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// Every client-facing endpoint, for the 404 of an unknown `/v1/*` path.
pub const SERVED: &str = "POST /v1/chat/completions, POST /v1/responses, GET|DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items, POST /v1/messages, POST /v1/completions, POST /v1/embeddings, POST /v1/moderations, POST /v1/images/generations, POST /v1/audio/speech, POST /v1/audio/transcriptions, POST /v1/audio/translations, GET /v1/models";

/// A POST route that runs the request phases with `protocol`.
macro_rules! proxied {
    ($protocol:expr) => {
        post(
            |State(state): State<Arc<AppState>>, request: Request| async move {
                serve(state, $protocol, request).await
            },
        )
        .fallback(method_not_allowed("POST"))
    };
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route(
            "/v1/chat/completions",
            proxied!(OpenAiJson(Endpoint::ChatCompletions)),
        )
        .route("/v1/messages", proxied!(Messages))
        .route("/v1/responses", proxied!(Responses))
        .route(
            "/v1/responses/{id}",
            get(responses_get)
                .delete(responses_delete)
                .fallback(method_not_allowed("GET, DELETE")),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(responses_input_items).fallback(method_not_allowed("GET")),
        )
        .route(
            "/v1/completions",
            proxied!(OpenAiJson(Endpoint::Completions)),
        )
        .route("/v1/embeddings", proxied!(OpenAiJson(Endpoint::Embeddings)))
        .route(
            "/v1/moderations",
            proxied!(OpenAiJson(Endpoint::Moderations)),
        )
        .route(
            "/v1/images/generations",
            proxied!(OpenAiJson(Endpoint::ImageGenerations)),
        )
        .route(
            "/v1/audio/speech",
            proxied!(OpenAiJson(Endpoint::AudioSpeech)),
        )
        .route(
            "/v1/audio/transcriptions",
            proxied!(Multipart(Endpoint::AudioTranscriptions)),
        )
        .route(
            "/v1/audio/translations",
            proxied!(Multipart(Endpoint::AudioTranslations)),
        )
        .route(
            "/v1/models",
            get(models).fallback(method_not_allowed("GET")),
        )
        .route("/healthz", get(healthz).fallback(method_not_allowed("GET")))
        .route("/readyz", get(readyz).fallback(method_not_allowed("GET")))
        .route(
            "/metrics",
            behind_admin_key(&state, get(metrics).fallback(method_not_allowed("GET"))),
        )
        .route(
            "/status",
            get(status_page).fallback(method_not_allowed("GET")),
        )
        .route(
            "/status.json",
            get(status_json).fallback(method_not_allowed("GET")),
        )
        .fallback(not_found)
        .with_state(state.clone());
    let config = state.table.load_full().config.clone();
    match admin_router(&state) {
        // The admin API has a listener of its own.
        Some(_) if config.admin.listen.is_some() => api,
        Some(admin) => api.merge(admin),
        // No admin key configured: the read-only views stay open, as
        // before virtual keys existed (bind the port privately).
        None => api.merge(operator_views(state)),
    }
}

/// `/metrics` carries key names and spend per key: behind the admin key
/// when one is set, unless `[admin] metrics_public = true`.
fn behind_admin_key(
    state: &Arc<AppState>,
    route: axum::routing::MethodRouter<Arc<AppState>>,
) -> axum::routing::MethodRouter<Arc<AppState>> {
    let config = state.table.load_full().config.clone();
    let Some(admin_key) = config
        .admin
        .key
        .as_ref()
        .filter(|_| !config.admin.metrics_public)
    else {
        return route;
    };
    let digest = crate::keys::admin::admin_digest(admin_key);
    route.layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            let check = crate::keys::admin::admin_check(request.headers(), &digest);
            async move {
                match check {
                    Ok(()) => next.run(request).await,
                    Err(refused) => refused,
                }
            }
        },
    ))
}

/// Breaker and statistics views for operators.
fn operator_views(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/admin/stats",
            get(admin_stats).fallback(method_not_allowed("GET")),
        )
        .route(
            "/admin/targets",
            get(admin_targets).fallback(method_not_allowed("GET")),
        )
        .with_state(state)
}

/// The admin API (`/admin/keys`, `/admin/targets`, `/admin/stats`), all
/// behind the admin key; `None` unless an admin key is configured. With
/// `auth = "none"` there are no virtual keys to manage: only the views are
/// served, still behind the admin key (on `[admin] listen` when set), never
/// open on the main port because auth is off.
pub fn admin_router(state: &Arc<AppState>) -> Option<Router> {
    let config = state.table.load_full().config.clone();
    let admin_key = config.admin.key.clone()?;
    let digest = crate::keys::admin::admin_digest(&admin_key);
    let views = operator_views(state.clone()).layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| {
            let check = crate::keys::admin::admin_check(request.headers(), &digest);
            async move {
                match check {
                    Ok(()) => next.run(request).await,
                    Err(refused) => refused,
                }
            }
        },
    ));
    Some(match state.keys.get() {
        Some(keys) => crate::keys::admin::router(keys.clone(), &admin_key).merge(views),
        None => views,
    })
}

pub(super) fn method_not_allowed(
    allowed: &'static str,
) -> impl Fn(Method, Uri) -> std::future::Ready<Response> + Clone + Send + Sync + 'static {
    move |method: Method, uri: Uri| {
        std::future::ready(
            GatewayError::MethodNotAllowed {
                method: method.to_string(),
                path: uri.path().to_owned(),
                allowed,
            }
            .into_response(),
        )
    }
}

async fn not_found(uri: Uri) -> Response {
    GatewayError::NotFound {
        path: uri.path().to_owned(),
    }
    .into_response()
}

async fn responses_get(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    ResponsesStored::get(&state, &id, request.headers()).await
}

async fn responses_input_items(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    ResponsesStored::input_items(&state, &id, request.headers(), request.uri()).await
}

async fn responses_delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    ResponsesStored::delete(&state, &id, request.headers()).await
}
