//! Serves the node's ingress listeners: one HTTP server per listen address, with the
//! routes of every ingress on that address merged.

use super::listener::HttpLimits;
use super::{IngressEnv, Publisher};
use crate::stages::payload::PayloadChecks;
use crate::stages::Registry;
use crate::topology::plan::IngressPlan;
use crate::actors::stats::NodeStats;
use crate::transport::Producer;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("ingress `{0}`: unknown kind `{1}`")]
    UnknownKind(String, String),
    #[error(transparent)]
    Build(#[from] crate::stages::BuildError),
    #[error("cannot listen on {addr} (ingress {names}): {source}")]
    Bind { addr: String, names: String, source: std::io::Error },
}

/// A bound listener with its routes, ready to serve.
pub struct BoundIngress {
    pub addr: SocketAddr,
    pub names: Vec<String>,
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

/// Builds and binds every listener first, so that a port in use fails the node's start
/// instead of surfacing later.
#[allow(clippy::too_many_arguments)] // what the node shares with its listeners, one each
pub async fn bind_all(
    plans: &[IngressPlan],
    registry: &Registry,
    producer: Arc<dyn Producer>,
    checks: &PayloadChecks,
    data_dir: &Path,
    config_dir: &Path,
    stats: Arc<NodeStats>,
    stop: watch::Receiver<bool>,
) -> Result<Vec<BoundIngress>, IngressError> {
    let mut by_addr: BTreeMap<String, (Vec<String>, axum::Router)> = BTreeMap::new();
    for plan in plans {
        let factory = registry
            .ingress_factory(&plan.kind)
            .ok_or_else(|| IngressError::UnknownKind(plan.name.clone(), plan.kind.clone()))?;
        let publisher = Publisher::new(producer.clone(), &plan.topic, plan.key.clone(), &plan.name, checks.clone())
            .with_stop(stop.clone());
        let env = IngressEnv {
            plan: plan.clone(),
            publisher,
            data_dir: data_dir.to_path_buf(),
            config_dir: config_dir.to_path_buf(),
        };
        let router = factory.router(&plan.config, env)?;
        let entry = by_addr.entry(plan.listen.clone()).or_insert_with(|| (Vec::new(), axum::Router::new()));
        entry.0.push(plan.name.clone());
        entry.1 = std::mem::take(&mut entry.1).merge(router);
    }
    let mut bound = Vec::new();
    for (addr, (names, router)) in by_addr {
        let router = router.layer(axum::middleware::from_fn_with_state(
            Observed { names: Arc::from(names.join(",")), stats: stats.clone() },
            observe,
        ));
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| IngressError::Bind { addr: addr.clone(), names: names.join(", "), source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| IngressError::Bind { addr: addr.clone(), names: names.join(", "), source })?;
        bound.push(BoundIngress { addr, names, listener, router });
    }
    Ok(bound)
}

#[derive(Clone)]
struct Observed {
    names: Arc<str>,
    stats: Arc<NodeStats>,
}

/// Counts every request by status (`weir_ingress_requests_total`) and, with trace export
/// on, runs it inside the server span that starts the flow's trace.
async fn observe(State(o): State<Observed>, req: Request, next: Next) -> Response {
    let response = if crate::telemetry::trace::enabled() {
        let traceparent = super::http::traceparent(req.headers());
        let span = crate::telemetry::spans::ingress_span(&o.names, req.method().as_str(), req.uri().path(), traceparent.as_deref());
        let response = tracing::Instrument::instrument(next.run(req), span.clone()).await;
        span.record("http.response.status_code", response.status().as_u16());
        if response.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        response
    } else {
        next.run(req).await
    };
    let key = (o.names.to_string(), response.status().as_u16());
    o.stats.ingress_requests.entry(key).or_default().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    response
}

impl BoundIngress {
    /// Serves until `stop` turns true, within the listener limits (header and body
    /// timeouts, concurrent requests); requests in flight then get a bounded grace.
    pub async fn serve(self, limits: HttpLimits, stop: watch::Receiver<bool>) {
        tracing::info!(addr = %self.addr, ingress = ?self.names, "ingress listening");
        let what = format!("ingress {}", self.names.join(","));
        super::listener::serve(self.listener, self.router, limits, &what, stop).await;
    }
}
