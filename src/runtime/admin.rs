//! The node's admin port (`admin.listen`): health and readiness, counters, and the
//! produce/tail endpoints that `weir produce` and `weir tail` use to reach a running
//! node's embedded transport from another process.
//!
//! - `GET  /healthz` — 200 while the supervisor is healthy, else 503.
//! - `GET  /readyz`  — 200 once every stage's consumer joined its group and the transport
//!   answers; else 503 with what is missing.
//! - `GET  /metrics` — Prometheus text (docs/observability.md).
//! - `GET  /stats`   — per-stage counters as JSON.
//! - `POST /topics/{topic}/records?key=K|key_field=F` — JSON object, array or NDJSON body.
//! - `GET  /topics/{topic}/records?from=earliest|latest&limit=N&follow=true` — NDJSON.

use crate::actors::stats::{NodeStats, StageStats};
use crate::actors::supervisor::Health;
use crate::envelope::TopicPartition;
use crate::ingress::http::{is_ndjson, read_body, traceparent, ApiError};
use crate::ingress::http_json::parse_records;
use crate::ingress::{Publish, Publisher};
use crate::stages::payload::PayloadChecks;
use crate::telemetry::metrics::BuildInfo;
use crate::transport::{StartFrom, Transport};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;

const MAX_PRODUCE_BODY: usize = 16 * 1024 * 1024;
const READY_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
struct AdminState {
    transport: Arc<dyn Transport>,
    checks: PayloadChecks,
    stats: Arc<NodeStats>,
    health: Arc<Health>,
    info: BuildInfo,
    /// A topic of the node's, to ask the transport about (readiness).
    probe_topic: Option<String>,
}

pub struct BoundAdmin {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

pub async fn bind(
    addr: &str,
    transport: Arc<dyn Transport>,
    checks: PayloadChecks,
    stats: Arc<NodeStats>,
    health: Arc<Health>,
    info: BuildInfo,
    probe_topic: Option<String>,
) -> Result<BoundAdmin, std::io::Error> {
    let state = AdminState { transport, checks, stats, health, info, probe_topic };
    let router = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/stats", get(stats_json))
        .route("/topics/{topic}/records", get(tail).post(produce))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    Ok(BoundAdmin { addr, listener, router })
}

impl BoundAdmin {
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        tracing::info!(addr = %self.addr, "admin port listening");
        if let Err(e) = axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await {
            tracing::error!(addr = %self.addr, error = %e, "admin server failed");
        }
    }
}

async fn healthz(State(s): State<AdminState>) -> Response {
    if s.health.is_healthy() {
        Json(serde_json::json!({"status": "ok"})).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"status": "unhealthy"}))).into_response()
    }
}

/// Ready = every stage's consumer joined its group (its partitions, possibly none when a
/// group has more members than partitions, are assigned) and the transport answers.
async fn readyz(State(s): State<AdminState>) -> Response {
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
    let ready = waiting.is_empty() && transport.is_ok() && s.health.is_healthy();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "stages_not_joined": waiting,
        "transport": match &transport { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
        "partitions": partitions,
    });
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    let text = crate::telemetry::metrics::render(&s.stats, s.health.is_healthy(), &s.info, s.transport.as_ref()).await;
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

async fn stats_json(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let mut stages = serde_json::Map::new();
    for e in s.stats.stages.iter() {
        let st: &StageStats = e.value();
        let committed: serde_json::Map<String, serde_json::Value> = st
            .committed
            .iter()
            .map(|c| (c.key().clone(), serde_json::json!(c.value().load(std::sync::atomic::Ordering::Relaxed))))
            .collect();
        stages.insert(
            e.key().clone(),
            serde_json::json!({
                "consumed": StageStats::get(&st.consumed),
                "completed": StageStats::get(&st.completed),
                "produced": StageStats::get(&st.produced),
                "business": StageStats::get(&st.business),
                "retried": StageStats::get(&st.retried),
                "dead_lettered": StageStats::get(&st.dead_lettered),
                "dropped": StageStats::get(&st.dropped),
                "panics": StageStats::get(&st.panics),
                "committed": committed,
            }),
        );
    }
    let restarts = s.stats.restarts.load(std::sync::atomic::Ordering::Relaxed);
    Json(serde_json::json!({ "restarts": restarts, "stages": stages }))
}

#[derive(Deserialize)]
struct ProduceQuery {
    key: Option<String>,
    key_field: Option<String>,
}

async fn produce(
    State(s): State<AdminState>,
    Path(topic): Path<String>,
    Query(q): Query<ProduceQuery>,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    s.transport.partition_count(&topic).await.map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    let ndjson = is_ndjson(req.headers());
    let trace = traceparent(req.headers());
    let body = read_body(req.into_body(), MAX_PRODUCE_BODY).await?;
    let values = parse_records(&body, ndjson)?;
    let publisher = Publisher::new(s.transport.producer(), &topic, q.key_field, "weir-produce", s.checks.clone());
    let items = values
        .into_iter()
        .map(|payload| Publish { payload, key: q.key.clone(), traceparent: trace.clone(), ..Publish::default() })
        .collect();
    let ids = publisher.publish(items).await?;
    Ok(Json(serde_json::json!({ "accepted": ids.len(), "message_ids": ids })))
}

#[derive(Deserialize)]
struct TailQuery {
    from: Option<String>,
    limit: Option<u64>,
    #[serde(default)]
    follow: bool,
}

async fn tail(
    State(s): State<AdminState>,
    Path(topic): Path<String>,
    Query(q): Query<TailQuery>,
) -> Result<Response, ApiError> {
    let partitions =
        s.transport.partition_count(&topic).await.map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e.to_string()))?;
    let from = match q.from.as_deref() {
        None | Some("earliest") => StartFrom::Earliest,
        Some("latest") => StartFrom::Latest,
        Some(other) => {
            return Err(ApiError::bad_request(format!("`from` must be `earliest` or `latest`, not `{other}`")))
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(256);
    for p in 0..partitions {
        let tp = TopicPartition::new(&topic, p);
        let not_found = |e: crate::transport::TransportError| ApiError::new(StatusCode::NOT_FOUND, e.to_string());
        let (low, high) = s.transport.watermarks(&tp).await.map_err(not_found)?;
        if !q.follow && (from == StartFrom::Latest || low >= high) {
            continue; // nothing to print from this partition
        }
        let mut reader = s.transport.reader(&tp, from).await.map_err(not_found)?;
        let (tx, follow) = (tx.clone(), q.follow);
        tokio::spawn(async move {
            while let Ok(record) = reader.next().await {
                let last = record.offset + 1 >= high;
                if tx.send(format!("{}\n", record.to_json())).await.is_err() || (!follow && last) {
                    break;
                }
            }
        });
    }
    drop(tx);
    let limit = q.limit.unwrap_or(u64::MAX);
    let stream = futures::stream::unfold((rx, 0u64), move |(mut rx, n)| async move {
        if n >= limit {
            return None;
        }
        rx.recv().await.map(|line| (Ok::<_, std::convert::Infallible>(line), (rx, n + 1)))
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(stream)).into_response())
}
