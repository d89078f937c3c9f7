//! The node's read-only port (`metrics.listen`): health, readiness and Prometheus
//! metrics. Nothing here changes or reveals records, so it needs no token and is what
//! Services, probes and Prometheus reach.
//!
//! - `GET /healthz` — 200 while the supervisor is healthy, else 503.
//! - `GET /readyz`  — 200 once every stage's consumer joined its group and the transport
//!   answers; else 503 with what is missing. The body also shows each circuit breaker's
//!   state (`circuit_breakers`), which does not change readiness.
//! - `GET /metrics` — Prometheus text (docs/observability.md).

use crate::actors::circuit_breaker::CircuitState;
use crate::actors::stats::NodeStats;
use crate::actors::supervisor::Health;
use crate::ingress::listener::HttpLimits;
use crate::telemetry::metrics::BuildInfo;
use crate::transport::Transport;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;

const READY_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
struct MetricsState {
    transport: Arc<dyn Transport>,
    stats: Arc<NodeStats>,
    health: Arc<Health>,
    info: BuildInfo,
    /// A topic of the node's, to ask the transport about (readiness).
    probe_topic: Option<String>,
}

pub struct BoundMetrics {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

pub async fn bind(
    addr: &str,
    transport: Arc<dyn Transport>,
    stats: Arc<NodeStats>,
    health: Arc<Health>,
    info: BuildInfo,
    probe_topic: Option<String>,
) -> Result<BoundMetrics, std::io::Error> {
    let state = MetricsState { transport, stats, health, info, probe_topic };
    let router = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    Ok(BoundMetrics { addr, listener, router })
}

impl BoundMetrics {
    pub async fn serve(self, limits: HttpLimits, stop: watch::Receiver<bool>) {
        tracing::info!(addr = %self.addr, "metrics port listening");
        crate::ingress::listener::serve(self.listener, self.router, limits, "metrics", stop).await;
    }
}

async fn healthz(State(s): State<MetricsState>) -> Response {
    if s.health.is_healthy() {
        Json(serde_json::json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": "unhealthy"}))).into_response()
    }
}

/// Ready = every stage's consumer joined its group (its partitions, possibly none when a
/// group has more members than partitions, are assigned) and the transport answers.
async fn readyz(State(s): State<MetricsState>) -> Response {
    let waiting: Vec<String> = s
        .stats
        .stages
        .iter()
        .filter(|e| !e.value().joined.load(std::sync::atomic::Ordering::Relaxed))
        .map(|e| e.key().clone())
        .collect();
    let transport = match &s.probe_topic {
        Some(topic) => match tokio::time::timeout(READY_PROBE, s.transport.partition_count(topic)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {READY_PROBE:?}")),
        },
        None => Ok(()),
    };
    let partitions: serde_json::Map<String, serde_json::Value> =
        s.stats.stages.iter().map(|e| (e.key().clone(), serde_json::json!(e.value().partitions.len()))).collect();
    // An open breaker is reported, not made a readiness failure: the outage is the
    // service's, the node is working as meant (records wait, nothing is lost), and
    // taking it out of rotation would not bring the service back.
    let circuits: serde_json::Map<String, serde_json::Value> = s
        .stats
        .stages
        .iter()
        .filter_map(|e| {
            let state = CircuitState::from_gauge(e.value().circuit_state.load(std::sync::atomic::Ordering::Relaxed))?;
            Some((e.key().clone(), serde_json::json!(state.as_str())))
        })
        .collect();
    let ready = waiting.is_empty() && transport.is_ok() && s.health.is_healthy();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "stages_not_joined": waiting,
        "transport": match &transport { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
        "partitions": partitions,
        "circuit_breakers": circuits,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<MetricsState>) -> Response {
    let text = crate::telemetry::metrics::render(&s.stats, s.health.is_healthy(), &s.info, s.transport.as_ref()).await;
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

