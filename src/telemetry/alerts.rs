//! Alert delivery: every SLO alert state change is logged and POSTed as JSON
//! to the configured webhooks, with retries and backoff, from a background
//! task fed by a bounded queue, so a slow or dead receiver never blocks a
//! request or the evaluator.
//!
//! The body is a stable schema (`version` 1):
//! `{"version":1,"kind":"slo_burn_rate","state":"firing"|"resolved",
//!   "severity":"page"|"ticket","route":..,"objective":"success"|"latency",
//!   "burn_rate_long":..,"burn_rate_short":..,"window_long":"1h",
//!   "window_short":"5m","error_budget_remaining":..,"at":<unix seconds>}`
//! and for cost regressions `"kind":"cost_regression"` with
//! `cost_per_success_usd`, `previous_day_cost_per_success_usd` and `ratio`.
//! A route with `degrade_on` that enters or leaves SLO-driven degradation
//! sends an event of its own after the alert's:
//! `{"version":1,"kind":"slo_degradation","state":"degraded"|"restored",
//!   "route":..,"degrade_on":"page"|"ticket","degrade_share":..,"at":..}`.

use super::slo::{AlertChange, Severity};
use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::Full;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const QUEUE: usize = 1024;
const ATTEMPTS: u32 = 5;

#[derive(Debug, Default)]
pub struct AlertCounters {
    pub changes: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

pub fn body(change: &AlertChange, at: std::time::SystemTime) -> Bytes {
    let (long, short) = match change.severity {
        Severity::Page => ("1h", "5m"),
        Severity::Ticket => ("6h", "30m"),
    };
    Bytes::from(
        serde_json::json!({
            "version": 1,
            "kind": "slo_burn_rate",
            "state": if change.firing { "firing" } else { "resolved" },
            "severity": change.severity,
            "route": change.route,
            "objective": change.objective,
            "burn_rate_long": change.burn_rate_long,
            "burn_rate_short": change.burn_rate_short,
            "window_long": long,
            "window_short": short,
            "error_budget_remaining": change.error_budget_remaining,
            "at": at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        })
        .to_string(),
    )
}

/// The event of a route entering (`degraded`) or leaving (`restored`)
/// SLO-driven degradation.
pub fn degradation_body(
    route: &str,
    degraded: bool,
    on: Severity,
    share: f64,
    at: std::time::SystemTime,
) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "version": 1,
            "kind": "slo_degradation",
            "state": if degraded { "degraded" } else { "restored" },
            "route": route,
            "degrade_on": on,
            "degrade_share": share,
            "at": at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        })
        .to_string(),
    )
}

/// Queues webhook deliveries; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<(Uri, Bytes)>,
    pub counters: Arc<AlertCounters>,
}

impl Notifier {
    /// Starts the delivery task on the current runtime.
    pub fn start(counters: Arc<AlertCounters>) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Uri, Bytes)>(QUEUE);
        let c = counters.clone();
        tokio::spawn(async move {
            let client = crate::providers::client::for_connect_timeout(Duration::from_secs(3));
            while let Some((url, body)) = rx.recv().await {
                let mut delay = Duration::from_millis(500);
                let mut delivered = false;
                for attempt in 1..=ATTEMPTS {
                    let request = Request::builder()
                        .method(Method::POST)
                        .uri(url.clone())
                        .header(header::CONTENT_TYPE, "application/json")
                        .header(header::USER_AGENT, "switchyard-alerts/1")
                        .body(Full::new(body.clone()));
                    let Ok(request) = request else { break };
                    match tokio::time::timeout(Duration::from_secs(5), client.request(request))
                        .await
                    {
                        Ok(Ok(response)) if response.status().is_success() => {
                            delivered = true;
                            break;
                        }
                        other => {
                            let why = match other {
                                Ok(Ok(r)) => format!("status {}", r.status().as_u16()),
                                Ok(Err(e)) => {
                                    crate::resilience::TransportKind::of(&e, e.is_connect())
                                        .as_str()
                                        .to_owned()
                                }
                                Err(_) => "timeout".to_owned(),
                            };
                            // Webhook URLs carry tokens in their path (Slack,
                            // Teams): only the host is logged.
                            tracing::warn!(host = url.host().unwrap_or("?"), attempt, error = %why, "alert webhook delivery failed");
                        }
                    }
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
                let counter = if delivered { &c.delivered } else { &c.failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        });
        Notifier { tx, counters }
    }

    /// A route's cost per successful request rose (or fell back) against the
    /// previous day: logged and sent with `"kind":"cost_regression"`.
    pub fn notify_cost(
        &self,
        route: &str,
        firing: bool,
        current: f64,
        previous: f64,
        webhooks: &[Uri],
    ) {
        self.counters.changes.fetch_add(1, Ordering::Relaxed);
        let ratio = current / previous;
        if firing {
            tracing::warn!(
                route,
                current,
                previous,
                ratio,
                "cost per successful request regressed against the previous day"
            );
        } else {
            tracing::info!(
                route,
                current,
                previous,
                ratio,
                "cost per successful request back to normal"
            );
        }
        let body = Bytes::from(
            serde_json::json!({
                "version": 1,
                "kind": "cost_regression",
                "state": if firing { "firing" } else { "resolved" },
                "severity": "ticket",
                "route": route,
                "cost_per_success_usd": current,
                "previous_day_cost_per_success_usd": previous,
                "ratio": ratio,
                "at": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            })
            .to_string(),
        );
        self.queue(webhooks, body);
    }

    /// A route entered or left SLO-driven degradation: one log line and
    /// the `"kind":"slo_degradation"` event.
    pub fn notify_degradation(
        &self,
        route: &str,
        degraded: bool,
        on: Severity,
        share: f64,
        webhooks: &[Uri],
    ) {
        if degraded {
            tracing::warn!(route, degrade_on = ?on, degrade_share = share,
                "SLO burning: requests go to the route's degraded targets first until the alert clears");
        } else {
            tracing::info!(route, degrade_on = ?on, "SLO alert cleared: the route's primary targets are first again");
        }
        let body = degradation_body(route, degraded, on, share, std::time::SystemTime::now());
        self.queue(webhooks, body);
    }

    fn queue(&self, webhooks: &[Uri], body: Bytes) {
        for url in webhooks {
            if self.tx.try_send((url.clone(), body.clone())).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Logs the change and queues it for every webhook.
    pub fn notify(&self, change: &AlertChange, webhooks: &[Uri]) {
        self.counters.changes.fetch_add(1, Ordering::Relaxed);
        if change.firing {
            tracing::warn!(route = %change.route, objective = ?change.objective, severity = ?change.severity,
                burn_rate_long = change.burn_rate_long, burn_rate_short = change.burn_rate_short,
                error_budget_remaining = change.error_budget_remaining, "SLO alert firing");
        } else {
            tracing::info!(route = %change.route, objective = ?change.objective, severity = ?change.severity, "SLO alert resolved");
        }
        self.queue(webhooks, body(change, std::time::SystemTime::now()));
    }
}
