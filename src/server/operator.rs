//! Operator endpoints: liveness and readiness, the model list, Prometheus
//! metrics, the status page and the admin views of targets and statistics.
//! They read gateway state; they never touch a client request.

use super::AppState;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

pub(super) async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "draining" })),
        )
            .into_response()
    } else {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    }
}

pub(super) async fn models(State(state): State<Arc<AppState>>) -> Response {
    let table = state.table.load();
    let data: Vec<_> = table
        .config
        .route_names()
        .iter()
        .map(|name| serde_json::json!({ "id": name, "object": "model", "created": 0, "owned_by": "switchyard" }))
        .collect();
    Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

/// Rolling statistics (1 m / 1 h / 24 h) per route and target.
pub(super) async fn admin_stats(State(state): State<Arc<AppState>>) -> Response {
    Json(super::status::stats(&state)).into_response()
}

pub(super) async fn status_page(State(state): State<Arc<AppState>>) -> Response {
    let public = state.table.load().config.server.public_status;
    let history = super::status::load_history(&state).await;
    let html = super::status::html(&super::status::report(&state, public, history.as_deref()));
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

pub(super) async fn status_json(State(state): State<Arc<AppState>>) -> Response {
    let public = state.table.load().config.server.public_status;
    let history = super::status::load_history(&state).await;
    Json(super::status::report(&state, public, history.as_deref())).into_response()
}

/// Prometheus scrape endpoint: OpenMetrics when the scraper asks for it
/// (Prometheus does), the classic text format otherwise.
pub(super) async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let body = state.metrics.render(&state.registry);
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    } else {
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        let text = crate::telemetry::metrics::to_prometheus_text(&body);
        ([(header::CONTENT_TYPE, content_type)], text).into_response()
    }
}

/// Breaker state and recent health of every target.
/// Which replica opened a breaker (null: this one, without sharing), when
/// and why.
fn opened_by_json(by: crate::routing::health::OpenedBy) -> serde_json::Value {
    serde_json::json!({
        "replica": (!by.replica.is_empty()).then_some(&*by.replica),
        "at": humantime::format_rfc3339_millis(by.at).to_string(),
        "cause": by.cause,
    })
}

pub(super) async fn admin_targets(State(state): State<Arc<AppState>>) -> Response {
    let now = Instant::now();
    let secs = |d: std::time::Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
    let targets: Vec<_> = state
        .registry
        .all()
        .iter()
        .map(|h| {
            let b = h.snapshot(now);
            serde_json::json!({
                "target": h.key,
                "state": b.state.as_str(),
                "failure_ratio": b.failure_ratio,
                "window_requests": b.window_requests,
                "consecutive_failures": b.consecutive_failures,
                "trips": b.trips,
                "transitions": b.transitions,
                "opened_seconds_ago": b.opened_at.map(|t| secs(now.saturating_duration_since(t))),
                "next_probe_in_seconds": b.next_probe.map(|t| secs(t.saturating_duration_since(now))),
                "latency_ewma_ms": (h.latency_micros() / 10.0).round() / 100.0,
                "first_byte_p95_ms": h.first_byte_quantile(0.95).map(|d| secs(d) * 1000.0),
                "inflight": h.inflight(),
                "disabled": h.is_disabled(),
                "cooling_for_seconds": h.cooled_until(now).map(|t| secs(t.saturating_duration_since(now))),
                "attempts": h.attempts.load(Ordering::Relaxed),
                "failures": h.failures.load(Ordering::Relaxed),
                "opened_by": h.opened_by().map(opened_by_json),
            })
        })
        .collect();
    Json(serde_json::json!({ "targets": targets, "counters": state.counters.snapshot() }))
        .into_response()
}
