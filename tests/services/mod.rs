//! A scripted HTTP service on 127.0.0.1 for the kinds that call outside services
//! (`http`, `llm`, the enrich example). Every request is logged with its arrival time; a
//! script decides the answer from the request and how many requests for the same path
//! came before it. Latency is a timer (no thread per request).
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn json(v: serde_json::Value) -> Reply {
        Reply { status: 200, headers: vec![("content-type", "application/json".into())], body: v.to_string(), delay: None }
    }
    pub fn status(status: u16, body: &str) -> Reply {
        Reply { status, headers: Vec::new(), body: body.to_string(), delay: None }
    }
    pub fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }
    pub fn after(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }
}

type Script = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

struct Inner {
    seen: Mutex<Vec<Seen>>,
    script: Box<Script>,
}

pub struct MockService {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl MockService {
    /// Starts the service; `script(request, earlier)` answers, `earlier` being how many
    /// requests for the same path arrived before this one.
    pub async fn start(script: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> MockService {
        let inner = Arc::new(Inner { seen: Mutex::new(Vec::new()), script: Box::new(script) });
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockService { addr, inner, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().expect("log").clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn seen_under(&self, prefix: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path.starts_with(prefix)).collect()
    }
}

impl Drop for MockService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(inner): State<Arc<Inner>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let seen = Seen { at: Instant::now(), method: method.to_string(), path: uri.path().to_string(), headers, body };
    let reply = {
        let mut log = inner.seen.lock().expect("log");
        let earlier = log.iter().filter(|s| s.path == seen.path).count();
        log.push(seen.clone());
        (inner.script)(&seen, earlier)
    };
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut response = (StatusCode::from_u16(reply.status).expect("status"), reply.body).into_response();
    for (name, value) in reply.headers {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

/// The value of the one sample `name{labels…}` on a node's metrics port `/metrics` (0 when absent).
pub async fn metric(port: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = weir::net::client()
        .expect("client")
        .get(format!("http://{port}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let samples = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text").samples;
    let values: Vec<f64> = samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => *v,
            other => panic!("{name}: unexpected sample {other:?}"),
        })
        .collect();
    match values.as_slice() {
        [] => 0.0,
        [v] => *v,
        more => panic!("{name}{labels:?}: expected one sample, got {more:?}"),
    }
}
