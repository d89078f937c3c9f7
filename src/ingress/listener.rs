//! Serves an axum router on a TCP listener with the limits every weir listener has
//! (ingress, admin, metrics):
//!
//! - a header read timeout: a client that opens a connection and trickles its request
//!   line and headers is disconnected (hyper's `header_read_timeout`);
//! - a body read timeout: a body not fully received in time ends the request with a 408
//!   JSON error (see [`read_body`](super::http::read_body)), and a body still arriving
//!   when the node stops ends it with a 503;
//! - a bound on concurrent requests: one more gets a 503 JSON error at once;
//! - a bounded shutdown: on stop, no new connection is accepted, idle connections close,
//!   requests in flight get `shutdown_grace` to finish, then their connections are cut.
//!
//! axum's own `serve` offers none of the timeouts and waits for every connection without
//! a bound, hence this accept loop.

use super::http::ApiError;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Longest time from connection (or the previous response) to a request's complete headers.
    pub header_timeout: Duration,
    /// Longest time to receive a request's whole body.
    pub body_timeout: Duration,
    /// Requests served at once on this listener; more get a 503.
    pub max_concurrent: usize,
    /// After stop, how long requests in flight may still take before their connections are cut.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_concurrent: 512,
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

impl HttpLimits {
    /// These limits with what the topology's `http:` sets.
    pub fn with_plan(self, plan: &crate::topology::plan::HttpPlan) -> Self {
        HttpLimits {
            header_timeout: plan.header_timeout.unwrap_or(self.header_timeout),
            body_timeout: plan.body_timeout.unwrap_or(self.body_timeout),
            max_concurrent: plan.max_concurrent_requests.map_or(self.max_concurrent, |n| n.max(1) as usize),
            shutdown_grace: plan.shutdown_grace.unwrap_or(self.shutdown_grace),
        }
    }
}

/// Why a request body could not be read to its end (found by `read_body` in the error's
/// source chain to answer 408 or 503).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body did not arrive within {0:?}")]
    TimedOut(Duration),
    #[error("the node is stopping; send the request again")]
    Stopping,
}

/// Resolves once `stop` says so (or its sender is gone: the node is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[derive(Clone)]
struct RequestLimits {
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    body_timeout: Duration,
    stop: watch::Receiver<bool>,
}

/// Serves `router` on `listener` with `limits` until `stop` turns true, then shuts down
/// within `limits.shutdown_grace`. `what` names the listener in logs.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    what: &str,
    mut stop: watch::Receiver<bool>,
) {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let request_limits = RequestLimits {
        permits: Arc::new(Semaphore::new(limits.max_concurrent)),
        max_concurrent: limits.max_concurrent,
        body_timeout: limits.body_timeout,
        stop: stop.clone(),
    };
    let router = router.layer(axum::middleware::from_fn_with_state(request_limits, limit_request));
    let (graceful_tx, graceful_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let service = TowerToHyperService::new(router.clone());
                    let mut graceful = graceful_rx.clone();
                    let header_timeout = limits.header_timeout;
                    connections.spawn(async move {
                        let mut builder = hyper::server::conn::http1::Builder::new();
                        builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(conn);
                        tokio::select! {
                            result = conn.as_mut() => {
                                if let Err(e) = result {
                                    tracing::debug!(error = %e, "connection ended with an error");
                                }
                                return;
                            }
                            _ = stopped(&mut graceful) => conn.as_mut().graceful_shutdown(),
                        }
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error during shutdown");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a little instead of spinning.
                    tracing::warn!(?addr, listener = what, error = %e, "accept failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = stopped(&mut stop) => break,
                    }
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let _ = graceful_tx.send(true);
    let grace = tokio::time::sleep(limits.shutdown_grace);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() { break },
            _ = &mut grace => {
                tracing::warn!(?addr, listener = what, open = connections.len(), grace = ?limits.shutdown_grace,
                    "requests still running after the shutdown grace; closing their connections");
                connections.abort_all();
                while connections.join_next().await.is_some() {}
                break;
            }
        }
    }
    tracing::info!(?addr, listener = what, "listener stopped");
}

/// Refuses a request over the concurrency bound (503) and puts the body read under the
/// body timeout and the node's stop.
async fn limit_request(State(l): State<RequestLimits>, req: Request, next: Next) -> Response {
    let Ok(_permit) = l.permits.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this listener is serving {} requests already; retry later", l.max_concurrent),
        )
        .into_response();
    };
    let req = req.map(|body| timed_body(body, l.body_timeout, l.stop.clone()));
    next.run(req).await
}

/// `body`, ending with [`BodyError::TimedOut`] once `timeout` has passed since the request
/// arrived, or with [`BodyError::Stopping`] once the node stops.
fn timed_body(body: Body, timeout: Duration, stop: watch::Receiver<bool>) -> Body {
    // One timer for the whole body, not one per chunk.
    let deadline = Box::pin(tokio::time::sleep(timeout));
    let chunks = body.into_data_stream();
    Body::from_stream(futures::stream::unfold(Some((chunks, stop, deadline)), move |state| async move {
        let (mut chunks, mut stop, mut deadline) = state?;
        tokio::select! {
            chunk = chunks.next() => {
                let chunk = chunk?;
                Some((chunk.map_err(axum::BoxError::from), Some((chunks, stop, deadline))))
            }
            _ = &mut deadline => Some((Err(BodyError::TimedOut(timeout).into()), None)),
            _ = stopped(&mut stop) => Some((Err(BodyError::Stopping.into()), None)),
        }
    }))
}
