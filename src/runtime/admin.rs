//! The node's management port (`admin.listen`): the produce/tail endpoints `weir produce`
//! and `weir tail` use to reach a running node's transport from another process, and
//! per-stage counters. Writing a record here can make the pipeline act (send a message,
//! cancel a booking) and tailing reads user data, so every request must carry
//! `Authorization: Bearer <admin.token>`; without a token configured the port is only
//! allowed on a loopback address (the runtime refuses anything else at start).
//!
//! - `GET  /stats`   — per-stage counters as JSON.
//! - `POST /topics/{topic}/records?key=K|key_field=F` — JSON object, array or NDJSON body.
//! - `GET  /topics/{topic}/records?from=earliest|latest&limit=N&follow=true` — NDJSON; a
//!   follow ends when the client goes or the node stops; at most [`MAX_TAILS`] at once.

use crate::actors::stats::{NodeStats, StageStats};
use crate::envelope::TopicPartition;
use crate::ingress::http::{is_ndjson, read_body, traceparent, ApiError};
use crate::ingress::http_json::parse_records;
use crate::ingress::listener::{stopped, HttpLimits};
use crate::ingress::{Publish, Publisher};
use crate::stages::payload::PayloadChecks;
use crate::topology::spec::AdminToken;
use crate::transport::{StartFrom, Transport};
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{watch, Semaphore};

const MAX_PRODUCE_BODY: usize = 16 * 1024 * 1024;
/// Tails served at once; each holds one reader per partition.
pub const MAX_TAILS: usize = 16;

#[derive(Clone)]
struct AdminState {
    transport: Arc<dyn Transport>,
    checks: PayloadChecks,
    stats: Arc<NodeStats>,
    tails: Arc<Semaphore>,
    /// Ends open tails when the node stops.
    stop: watch::Receiver<bool>,
}

pub struct BoundAdmin {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

/// Binds the management port. `stop` ends open tails when it turns true.
pub async fn bind(
    addr: &str,
    token: Option<AdminToken>,
    transport: Arc<dyn Transport>,
    checks: PayloadChecks,
    stats: Arc<NodeStats>,
    stop: watch::Receiver<bool>,
) -> Result<BoundAdmin, std::io::Error> {
    let state = AdminState { transport, checks, stats, tails: Arc::new(Semaphore::new(MAX_TAILS)), stop };
    let router = axum::Router::new()
        .route("/stats", get(stats_json))
        .route("/topics/{topic}/records", get(tail).post(produce))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(token.map(TokenCheck::new).map(Arc::new), require_token));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    Ok(BoundAdmin { addr, listener, router })
}

impl BoundAdmin {
    pub async fn serve(self, limits: HttpLimits, stop: watch::Receiver<bool>) {
        tracing::info!(addr = %self.addr, "admin port listening");
        crate::ingress::listener::serve(self.listener, self.router, limits, "admin", stop).await;
    }
}

/// Compares a presented token with the configured one in constant time whatever their
/// lengths: both are HMAC'd under a per-process random key and the tags are compared by
/// `ring::hmac::verify`.
pub struct TokenCheck {
    key: ring::hmac::Key,
    expected: ring::hmac::Tag,
}

impl TokenCheck {
    pub fn new(token: AdminToken) -> Self {
        let rng = ring::rand::SystemRandom::new();
        // A fixed key would do too (the tag is never shown); a random one costs nothing.
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"weir-admin-token"));
        let expected = ring::hmac::sign(&key, token.expose().as_bytes());
        TokenCheck { key, expected }
    }

    pub fn matches(&self, presented: &str) -> bool {
        ring::hmac::verify(&self.key, presented.as_bytes(), self.expected.as_ref()).is_ok()
    }
}

/// 401 with a JSON error, before anything else runs, unless the request carries the token.
async fn require_token(State(check): State<Option<Arc<TokenCheck>>>, req: Request, next: Next) -> Response {
    if let Some(check) = &check {
        let presented = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let refused = match presented {
            None => Some("missing `Authorization: Bearer <token>` (the node's admin.token; the CLI sends WEIR_ADMIN_TOKEN)"),
            Some(p) if !check.matches(p) => Some("wrong admin token"),
            Some(_) => None,
        };
        if let Some(why) = refused {
            tracing::warn!(method = %req.method(), path = %req.uri().path(), "admin request refused: {why}");
            let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
            resp.headers_mut().insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    next.run(req).await
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
    let publisher = Publisher::new(s.transport.producer(), &topic, q.key_field, "weir-produce", s.checks.clone())
        .with_stop(s.stop.clone());
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
    let permit = s.tails.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("{MAX_TAILS} tails are open already; retry later"))
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(256);
    // The readers live as long as the response body: dropping the set (client gone, node
    // stopping, limit reached) aborts them, even while they wait for a record.
    let mut readers = tokio::task::JoinSet::new();
    for p in 0..partitions {
        let tp = TopicPartition::new(&topic, p);
        let not_found = |e: crate::transport::TransportError| ApiError::new(StatusCode::NOT_FOUND, e.to_string());
        let (low, high) = s.transport.watermarks(&tp).await.map_err(not_found)?;
        if !q.follow && (from == StartFrom::Latest || low >= high) {
            continue; // nothing to print from this partition
        }
        let mut reader = s.transport.reader(&tp, from).await.map_err(not_found)?;
        let (tx, follow) = (tx.clone(), q.follow);
        readers.spawn(async move {
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
    let open = TailStream { rx, sent: 0, _readers: readers, _permit: permit, stop: s.stop.clone() };
    let stream = futures::stream::unfold(open, move |mut t| async move {
        if t.sent >= limit {
            return None;
        }
        let line = tokio::select! {
            line = t.rx.recv() => line?,
            _ = stopped(&mut t.stop) => return None,
        };
        t.sent += 1;
        Some((Ok::<_, std::convert::Infallible>(line), t))
    });
    Ok(([("content-type", "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

/// What an open tail holds; all of it goes with the response body.
struct TailStream {
    rx: tokio::sync::mpsc::Receiver<String>,
    sent: u64,
    _readers: tokio::task::JoinSet<()>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
}
