//! `weir status`: a terminal summary of running nodes, read from their metrics ports
//! (`metrics.listen`: `/metrics` and `/readyz`, no token needed).
//!
//! Each node's `/metrics` is scraped twice, `--interval` apart: rates come from the
//! difference, everything else from the second scrape, plus `/readyz`. The HTTP part is
//! thin; parsing the Prometheus text ([`parse_metrics`]), aggregating it per stage
//! ([`summarize`]) and rendering ([`render_table`]) are pure.

use super::{load, CliError, TopologyArg};
use crate::stages::Registry;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one request to a node may take before the node counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The histogram the p95 is estimated from.
const PROCESSING: &str = "weir_stage_processing_seconds";
/// Its buckets when the text has no `# TYPE` line for it (the parser then leaves them untyped).
const PROCESSING_BUCKET: &str = "weir_stage_processing_seconds_bucket";

/// The per-stage samples read (all labelled `stage`).
const STAGE_METRICS: &[&str] = &[
    "weir_records_consumed_total",
    "weir_records_completed_total",
    "weir_records_produced_total",
    "weir_records_dead_lettered_total",
    "weir_records_failed_total",
    "weir_records_retried_total",
    "weir_supervisor_restarts_total",
    "weir_consumer_lag",
    "weir_partition_in_flight",
    PROCESSING_BUCKET,
];

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    topology: TopologyArg,
    /// A node's metrics address (`host:port` or a URL); repeat it for several nodes.
    /// Default: the topology's `metrics.listen`.
    #[arg(long = "metrics", value_name = "ADDR")]
    metrics: Vec<String>,
    /// Time between the two scrapes the rates are computed from.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn status(args: StatusArgs, registry: &Registry) -> Result<(), CliError> {
    if args.interval.is_zero() {
        return Err(CliError::Usage("--interval must be longer than 0".into()));
    }
    let bases = if args.metrics.is_empty() {
        vec![load::metrics_url(&load::load(&args.topology.file, registry)?)?]
    } else {
        args.metrics.iter().map(|a| base_url(a)).collect()
    };
    let (interval, json) = (args.interval, args.json);
    load::with_http(|http| async move {
        let nodes = futures::future::join_all(bases.iter().map(|b| observe(&http, b, interval))).await;
        let report = Report { interval_seconds: interval.as_secs_f64(), nodes };
        if json {
            let text = serde_json::to_string_pretty(&report).map_err(|e| CliError::Failed(e.to_string()))?;
            println!("{text}");
        } else {
            print!("{}", render_table(&report));
        }
        let down = report.nodes.iter().filter(|n| !n.reachable).count();
        if down > 0 {
            return Err(CliError::Failed(format!("{down} of {} node(s) unreachable", report.nodes.len())));
        }
        Ok(())
    })
}

/// `host:port` → `http://host:port`; URLs are kept (without a trailing `/`).
fn base_url(addr: &str) -> String {
    let addr = addr.trim().trim_end_matches('/');
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Scrapes one node twice and summarizes; a failed request makes the node unreachable.
async fn observe(http: &reqwest::Client, base: &str, interval: Duration) -> NodeReport {
    let outcome = async {
        let before = fetch_metrics(http, base).await?;
        let t0 = Instant::now();
        tokio::time::sleep(interval).await;
        let (after, ready) = futures::join!(fetch_metrics(http, base), fetch_ready(http, base));
        let after = after?;
        Ok::<_, String>(summarize(&before, &after, t0.elapsed(), ready))
    }
    .await;
    match outcome {
        Ok(status) => NodeReport { metrics: base.to_string(), reachable: true, error: None, status: Some(status) },
        Err(e) => NodeReport { metrics: base.to_string(), reachable: false, error: Some(e), status: None },
    }
}

async fn fetch_metrics(http: &reqwest::Client, base: &str) -> Result<NodeMetrics, String> {
    let resp = http.get(format!("{base}/metrics")).timeout(REQUEST_TIMEOUT).send().await.map_err(|e| chain(&e))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| chain(&e))?;
    if !status.is_success() {
        return Err(format!("GET /metrics answered {status}"));
    }
    parse_metrics(&text)
}

async fn fetch_ready(http: &reqwest::Client, base: &str) -> Readiness {
    let resp = match http.get(format!("{base}/readyz")).timeout(REQUEST_TIMEOUT).send().await {
        Ok(r) => r,
        Err(e) => return Readiness { ready: false, detail: Some(format!("GET /readyz: {}", chain(&e))) },
    };
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    parse_ready(status, &body)
}

/// An error with its causes (reqwest's own message rarely says "connection refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

// ---------------------------------------------------------------------------------------
// Pure part: Prometheus text → per-stage numbers → report → table.

/// What one scrape of `/metrics` says, per stage.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct NodeMetrics {
    pub node: Option<String>,
    pub transport: Option<String>,
    pub version: Option<String>,
    pub healthy: Option<bool>,
    pub stages: BTreeMap<String, StageMetrics>,
}

/// One stage's counters, summed over topics and partitions.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StageMetrics {
    pub consumed: f64,
    pub completed: f64,
    pub produced: f64,
    pub dead_lettered: f64,
    pub failed: BTreeMap<String, f64>,
    pub retried: f64,
    pub restarts: f64,
    /// One value per partition with a commit.
    pub lag: Vec<f64>,
    pub in_flight: f64,
    /// `(le, cumulative count)`, sorted by `le`, the last one `+Inf`.
    pub processing: Vec<(f64, f64)>,
}

/// Parses a node's Prometheus text into per-stage sums.
pub fn parse_metrics(text: &str) -> Result<NodeMetrics, String> {
    use prometheus_parse::Value;
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).map_err(|e| format!("unreadable metrics: {e}"))?;
    let mut m = NodeMetrics::default();
    for s in &scrape.samples {
        let label = |k: &str| s.labels.get(k).map(str::to_string);
        let scalar = match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        };
        match s.metric.as_str() {
            "weir_build_info" => {
                m.node = label("node");
                m.transport = label("transport");
                m.version = label("version");
                continue;
            }
            "weir_node_healthy" => {
                m.healthy = scalar.map(|v| v >= 1.0);
                continue;
            }
            _ => {}
        }
        let Some(stage) = label("stage") else { continue };
        // Histogram buckets: typed (a `# TYPE … histogram` line) or untyped `_bucket` samples.
        if s.metric == PROCESSING {
            if let Value::Histogram(buckets) = &s.value {
                let st = stage_mut(&mut m, &stage);
                st.processing.extend(buckets.iter().map(|b| (b.less_than, b.count)));
            }
            continue;
        }
        let Some(v) = scalar else { continue };
        if !STAGE_METRICS.contains(&s.metric.as_str()) {
            continue;
        }
        let st = stage_mut(&mut m, &stage);
        match s.metric.as_str() {
            "weir_records_consumed_total" => st.consumed += v,
            "weir_records_completed_total" => st.completed += v,
            "weir_records_produced_total" => st.produced += v,
            "weir_records_dead_lettered_total" => st.dead_lettered += v,
            "weir_records_failed_total" => {
                *st.failed.entry(label("class").unwrap_or_default()).or_default() += v;
            }
            "weir_records_retried_total" => st.retried += v,
            "weir_supervisor_restarts_total" => st.restarts += v,
            "weir_consumer_lag" => st.lag.push(v),
            "weir_partition_in_flight" => st.in_flight += v,
            PROCESSING_BUCKET => {
                if let Some(le) = label("le").and_then(|le| parse_le(&le)) {
                    st.processing.push((le, v));
                }
            }
            _ => {}
        }
    }
    for st in m.stages.values_mut() {
        st.processing.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(m)
}

fn stage_mut<'a>(m: &'a mut NodeMetrics, stage: &str) -> &'a mut StageMetrics {
    m.stages.entry(stage.to_string()).or_default()
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        other => other.parse().ok(),
    }
}

/// The `q` quantile of a cumulative histogram, interpolated linearly inside the bucket it
/// falls in (as Prometheus' `histogram_quantile` does); `None` without observations. A
/// quantile in the `+Inf` bucket is reported as the highest finite bound.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total;
    let (mut lower, mut below) = (0.0_f64, 0.0_f64);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            if count <= below {
                return Some(le);
            }
            let start = if le > 0.0 { lower.min(le) } else { le };
            return Some(start + (le - start) * (rank - below) / (count - below));
        }
        lower = le;
        below = count;
    }
    Some(lower)
}

/// What `/readyz` said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not ready.
    pub detail: Option<String>,
}

/// `/readyz` answers 200 when ready, else 503 with `stages_not_joined` and `transport`.
pub fn parse_ready(status: u16, body: &str) -> Readiness {
    if status == 200 {
        return Readiness { ready: true, detail: None };
    }
    let mut why = Vec::new();
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        let waiting: Vec<&str> =
            v["stages_not_joined"].as_array().map(|a| a.iter().filter_map(|s| s.as_str()).collect()).unwrap_or_default();
        if !waiting.is_empty() {
            why.push(format!("stages not joined: {}", waiting.join(", ")));
        }
        if let Some(t) = v["transport"].as_str().filter(|t| *t != "ok") {
            why.push(format!("transport: {t}"));
        }
    }
    if why.is_empty() {
        why.push(format!("/readyz answered {status}"));
    }
    Readiness { ready: false, detail: Some(why.join("; ")) }
}

/// The whole output.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub interval_seconds: f64,
    pub nodes: Vec<NodeReport>,
}

/// One node: its status, or why it could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// The metrics base URL the node was read from.
    pub metrics: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub status: Option<NodeStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node: Option<String>,
    pub transport: Option<String>,
    pub version: Option<String>,
    pub healthy: Option<bool>,
    pub ready: bool,
    pub ready_detail: Option<String>,
    /// The time between the two scrapes.
    pub window_seconds: f64,
    pub stages: Vec<StageStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageStatus {
    pub stage: String,
    /// Records consumed per second between the two scrapes.
    pub consumed_per_second: f64,
    pub consumed_total: u64,
    pub completed_total: u64,
    pub produced_total: u64,
    pub dead_lettered_total: u64,
    pub failed_total: u64,
    pub failed_by_class: BTreeMap<String, u64>,
    pub retried_total: u64,
    /// Summed over partitions; `None` before the stage's first commit.
    pub lag: Option<u64>,
    pub lag_max_partition: Option<u64>,
    pub in_flight: u64,
    pub restarts: u64,
    /// Estimated from the histogram's buckets, over the node's lifetime.
    pub p95_processing_seconds: Option<f64>,
}

fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// Combines two scrapes `elapsed` apart: rates from the difference (a counter that went
/// down means the node restarted, so its new value is the increase), the rest from `after`.
pub fn summarize(before: &NodeMetrics, after: &NodeMetrics, elapsed: Duration, ready: Readiness) -> NodeStatus {
    let secs = elapsed.as_secs_f64();
    let stages = after
        .stages
        .iter()
        .map(|(name, a)| {
            let prev = before.stages.get(name).map_or(0.0, |b| b.consumed);
            let delta = if a.consumed >= prev { a.consumed - prev } else { a.consumed };
            let lag_max = a.lag.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            StageStatus {
                stage: name.clone(),
                consumed_per_second: if secs > 0.0 { delta / secs } else { 0.0 },
                consumed_total: count(a.consumed),
                completed_total: count(a.completed),
                produced_total: count(a.produced),
                dead_lettered_total: count(a.dead_lettered),
                failed_total: count(a.failed.values().sum()),
                failed_by_class: a.failed.iter().map(|(k, v)| (k.clone(), count(*v))).collect(),
                retried_total: count(a.retried),
                lag: (!a.lag.is_empty()).then(|| count(a.lag.iter().sum())),
                lag_max_partition: lag_max.map(count),
                in_flight: count(a.in_flight),
                restarts: count(a.restarts),
                p95_processing_seconds: quantile(0.95, &a.processing),
            }
        })
        .collect();
    NodeStatus {
        node: after.node.clone(),
        transport: after.transport.clone(),
        version: after.version.clone(),
        healthy: after.healthy,
        ready: ready.ready,
        ready_detail: ready.detail,
        window_seconds: secs,
        stages,
    }
}

/// A node line, then a table of its stages; an unreachable node is one line.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    for (i, n) in report.nodes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let Some(s) = n.status.as_ref().filter(|_| n.reachable) else {
            let why = n.error.as_deref().unwrap_or("no answer");
            out.push_str(&format!("{}: unreachable: {why}\n", n.metrics));
            continue;
        };
        out.push_str(&node_line(&n.metrics, s));
        out.push('\n');
        if s.stages.is_empty() {
            out.push_str("  (no stages)\n");
            continue;
        }
        let header = ["stage", "consumed/s", "completed", "dlq", "failed", "retried", "lag", "max lag", "in-flight", "restarts", "p95"];
        let rows: Vec<Vec<String>> = s
            .stages
            .iter()
            .map(|st| {
                let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
                vec![
                    st.stage.clone(),
                    format!("{:.1}", st.consumed_per_second),
                    st.completed_total.to_string(),
                    st.dead_lettered_total.to_string(),
                    st.failed_total.to_string(),
                    st.retried_total.to_string(),
                    opt(st.lag),
                    opt(st.lag_max_partition),
                    st.in_flight.to_string(),
                    st.restarts.to_string(),
                    st.p95_processing_seconds.map_or_else(|| "-".to_string(), seconds),
                ]
            })
            .collect();
        let widths: Vec<usize> =
            (0..header.len()).map(|c| rows.iter().map(|r| r[c].chars().count()).chain([header[c].len()]).max().unwrap_or(0)).collect();
        let line = |cells: Vec<&str>| {
            let mut l = String::from(" ");
            for (c, cell) in cells.iter().enumerate() {
                // The stage name reads left to right; numbers line up on the right.
                if c == 0 {
                    l.push_str(&format!(" {cell:<w$}", w = widths[c]));
                } else {
                    l.push_str(&format!("  {cell:>w$}", w = widths[c]));
                }
            }
            l.trim_end().to_string() + "\n"
        };
        out.push_str(&line(header.to_vec()));
        for r in &rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
        }
    }
    out
}

fn node_line(address: &str, s: &NodeStatus) -> String {
    let name = s.node.as_deref().unwrap_or("?");
    let mut what = Vec::new();
    if let Some(t) = &s.transport {
        what.push(t.clone());
    }
    if let Some(v) = &s.version {
        what.push(format!("weir {v}"));
    }
    let what = if what.is_empty() { String::new() } else { format!(" ({})", what.join(", ")) };
    let health = match s.healthy {
        Some(true) => "healthy",
        Some(false) => "UNHEALTHY",
        None => "health unknown",
    };
    let ready = match (&s.ready, &s.ready_detail) {
        (true, _) => "ready".to_string(),
        (false, Some(d)) => format!("NOT READY ({d})"),
        (false, None) => "NOT READY".to_string(),
    };
    format!("node {name}{what} at {address}: {health}, {ready}")
}

/// `0.0123` → `12.3ms`.
fn seconds(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `telemetry::metrics` emits (prometheus-client's text encoder), trimmed.
    const BEFORE: &str = r#"# HELP weir_records_consumed Records handed to a stage (redeliveries count again).
# TYPE weir_records_consumed counter
weir_records_consumed_total{stage="router",topic="orders-in"} 100
weir_records_consumed_total{stage="router",topic="refunds-in"} 20
weir_records_consumed_total{stage="audit",topic="routed"} 90
# HELP weir_records_completed Records whose outputs were all accepted.
# TYPE weir_records_completed counter
weir_records_completed_total{stage="router"} 118
weir_records_completed_total{stage="audit"} 90
# HELP weir_node_healthy 1 while the supervisor is within its restart budget.
# TYPE weir_node_healthy gauge
weir_node_healthy 1
# EOF
"#;

    const AFTER: &str = r#"# HELP weir_records_consumed Records handed to a stage (redeliveries count again).
# TYPE weir_records_consumed counter
weir_records_consumed_total{stage="router",topic="orders-in"} 300
weir_records_consumed_total{stage="router",topic="refunds-in"} 20
weir_records_consumed_total{stage="audit",topic="routed"} 290
# HELP weir_records_completed Records whose outputs were all accepted.
# TYPE weir_records_completed counter
weir_records_completed_total{stage="router"} 317
weir_records_completed_total{stage="audit"} 288
# HELP weir_records_produced Records a stage emitted, by output topic.
# TYPE weir_records_produced counter
weir_records_produced_total{stage="router",topic="routed"} 300
# HELP weir_records_failed Failed handle attempts by class.
# TYPE weir_records_failed counter
weir_records_failed_total{stage="router",class="transient"} 4
weir_records_failed_total{stage="router",class="permanent"} 17
weir_records_failed_total{stage="router",class="panic"} 0
weir_records_failed_total{stage="audit",class="transient"} 0
weir_records_failed_total{stage="audit",class="permanent"} 0
weir_records_failed_total{stage="audit",class="panic"} 1
# HELP weir_records_retried Transient failures that were retried.
# TYPE weir_records_retried counter
weir_records_retried_total{stage="router"} 4
weir_records_retried_total{stage="audit"} 0
# HELP weir_records_dead_lettered Records sent to the stage's DLQ.
# TYPE weir_records_dead_lettered counter
weir_records_dead_lettered_total{stage="router",topic="dlq-router"} 17
# HELP weir_stage_processing_seconds Handle plus queueing outputs, per record.
# TYPE weir_stage_processing_seconds histogram
weir_stage_processing_seconds_sum{stage="router"} 0.9
weir_stage_processing_seconds_count{stage="router"} 100
weir_stage_processing_seconds_bucket{le="0.001",stage="router"} 50
weir_stage_processing_seconds_bucket{le="0.002",stage="router"} 90
weir_stage_processing_seconds_bucket{le="0.004",stage="router"} 100
weir_stage_processing_seconds_bucket{le="+Inf",stage="router"} 100
weir_stage_processing_seconds_sum{stage="audit"} 0.0
weir_stage_processing_seconds_count{stage="audit"} 0
weir_stage_processing_seconds_bucket{le="0.001",stage="audit"} 0
weir_stage_processing_seconds_bucket{le="+Inf",stage="audit"} 0
# HELP weir_consumer_lag End offset minus committed offset.
# TYPE weir_consumer_lag gauge
weir_consumer_lag{stage="router",group="router",topic="orders-in",partition="0"} 3
weir_consumer_lag{stage="router",group="router",topic="orders-in",partition="1"} 9
weir_consumer_lag{stage="router",group="router",topic="refunds-in",partition="0"} 0
# HELP weir_partition_in_flight Records delivered and not yet complete.
# TYPE weir_partition_in_flight gauge
weir_partition_in_flight{stage="router",topic="orders-in",partition="0"} 2
weir_partition_in_flight{stage="router",topic="orders-in",partition="1"} 1
weir_partition_in_flight{stage="audit",topic="routed",partition="0"} 2
# HELP weir_supervisor_restarts Stage restarts by the supervisor.
# TYPE weir_supervisor_restarts counter
weir_supervisor_restarts_total{stage="router"} 0
weir_supervisor_restarts_total{stage="audit"} 1
# HELP weir_ingress_requests HTTP ingress requests by status code.
# TYPE weir_ingress_requests counter
weir_ingress_requests_total{ingress="events-api",status="200"} 5
# HELP weir_node_healthy 1 while the supervisor is within its restart budget.
# TYPE weir_node_healthy gauge
weir_node_healthy 1
# HELP weir_build_info Always 1; the labels say what runs.
# TYPE weir_build_info gauge
weir_build_info{version="0.1.0",node="edge",transport="kafka"} 1
# EOF
"#;

    fn ready() -> Readiness {
        Readiness { ready: true, detail: None }
    }

    fn stage<'a>(s: &'a NodeStatus, name: &str) -> &'a StageStatus {
        s.stages.iter().find(|st| st.stage == name).unwrap_or_else(|| panic!("no stage {name} in {s:?}"))
    }

    #[test]
    fn parses_what_the_node_emits() {
        let m = parse_metrics(AFTER).expect("parses");
        assert_eq!(m.node.as_deref(), Some("edge"));
        assert_eq!(m.transport.as_deref(), Some("kafka"));
        assert_eq!(m.version.as_deref(), Some("0.1.0"));
        assert_eq!(m.healthy, Some(true));
        assert_eq!(m.stages.keys().collect::<Vec<_>>(), ["audit", "router"]);
        let r = &m.stages["router"];
        assert_eq!(r.consumed, 320.0);
        assert_eq!(r.failed.get("permanent"), Some(&17.0));
        assert_eq!(r.lag.len(), 3);
        assert_eq!(r.processing, vec![(0.001, 50.0), (0.002, 90.0), (0.004, 100.0), (f64::INFINITY, 100.0)]);
    }

    #[test]
    fn summarizes_rates_totals_lag_and_p95() {
        let before = parse_metrics(BEFORE).expect("before");
        let after = parse_metrics(AFTER).expect("after");
        let s = summarize(&before, &after, Duration::from_secs(2), ready());
        assert_eq!(s.node.as_deref(), Some("edge"));
        assert_eq!(s.window_seconds, 2.0);
        let r = stage(&s, "router");
        assert_eq!(r.consumed_per_second, 100.0); // 120 → 320 in 2 s
        assert_eq!(r.consumed_total, 320);
        assert_eq!(r.completed_total, 317);
        assert_eq!(r.produced_total, 300);
        assert_eq!(r.dead_lettered_total, 17);
        assert_eq!(r.failed_total, 21);
        assert_eq!(r.failed_by_class["transient"], 4);
        assert_eq!(r.retried_total, 4);
        assert_eq!((r.lag, r.lag_max_partition), (Some(12), Some(9)));
        assert_eq!(r.in_flight, 3);
        assert_eq!(r.restarts, 0);
        // rank 95 of 100 falls in (0.002, 0.004], halfway between 90 and 100.
        let p95 = r.p95_processing_seconds.expect("p95");
        assert!((p95 - 0.003).abs() < 1e-12, "{p95}");

        let a = stage(&s, "audit");
        assert_eq!(a.consumed_per_second, 100.0);
        assert_eq!((a.lag, a.lag_max_partition), (None, None), "no commit yet: no lag row");
        assert_eq!((a.failed_total, a.restarts, a.in_flight), (1, 1, 2));
        assert_eq!(a.p95_processing_seconds, None, "no observations");
    }

    #[test]
    fn a_counter_that_went_down_means_a_restart() {
        let before = parse_metrics(AFTER).expect("before");
        let after = parse_metrics(BEFORE).expect("after");
        let s = summarize(&before, &after, Duration::from_secs(1), ready());
        assert_eq!(stage(&s, "router").consumed_per_second, 120.0);
        // A stage only in the second scrape counts from 0.
        let s = summarize(&NodeMetrics::default(), &after, Duration::from_secs(4), ready());
        assert_eq!(stage(&s, "audit").consumed_per_second, 22.5);
    }

    #[test]
    fn quantiles_follow_histogram_quantile() {
        let b = [(0.001, 50.0), (0.002, 90.0), (0.004, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.5, &b), Some(0.001));
        assert!((quantile(0.25, &b).expect("q") - 0.0005).abs() < 1e-12, "first bucket starts at 0");
        // Past the last finite bound: that bound.
        let tail = [(0.001, 1.0), (0.002, 2.0), (f64::INFINITY, 100.0)];
        assert_eq!(quantile(0.95, &tail), Some(0.002));
        assert_eq!(quantile(0.95, &[(0.001, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.95, &[]), None);
    }

    #[test]
    fn untyped_buckets_are_read_too() {
        let text = "weir_stage_processing_seconds_bucket{stage=\"s\",le=\"+Inf\"} 4\n\
                    weir_stage_processing_seconds_bucket{stage=\"s\",le=\"0.5\"} 4\n";
        let m = parse_metrics(text).expect("parses");
        assert_eq!(m.stages["s"].processing, vec![(0.5, 4.0), (f64::INFINITY, 4.0)]);
        assert_eq!(quantile(0.95, &m.stages["s"].processing), Some(0.475));
    }

    #[test]
    fn readiness_says_what_is_missing() {
        assert_eq!(parse_ready(200, "{}"), ready());
        let body = r#"{"status":"not ready","stages_not_joined":["a","b"],"transport":"timed out","partitions":{}}"#;
        let r = parse_ready(503, body);
        assert!(!r.ready);
        assert_eq!(r.detail.as_deref(), Some("stages not joined: a, b; transport: timed out"));
        assert_eq!(parse_ready(503, "oops").detail.as_deref(), Some("/readyz answered 503"));
    }

    #[test]
    fn table_and_json_show_reachable_and_unreachable_nodes() {
        let before = parse_metrics(BEFORE).expect("before");
        let after = parse_metrics(AFTER).expect("after");
        let status = summarize(&before, &after, Duration::from_secs(2), ready());
        let report = Report {
            interval_seconds: 2.0,
            nodes: vec![
                NodeReport { metrics: "http://a:9464".into(), reachable: true, error: None, status: Some(status) },
                NodeReport { metrics: "http://b:9464".into(), reachable: false, error: Some("connection refused".into()), status: None },
            ],
        };
        let table = render_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "node edge (kafka, weir 0.1.0) at http://a:9464: healthy, ready");
        assert!(lines[1].starts_with("  stage ") && lines[1].ends_with("p95"), "{table}");
        let router = lines.iter().find(|l| l.trim_start().starts_with("router")).expect("router row");
        let cells: Vec<&str> = router.split_whitespace().collect();
        assert_eq!(cells, ["router", "100.0", "317", "17", "21", "4", "12", "9", "3", "0", "3.0ms"], "{table}");
        let audit = lines.iter().find(|l| l.trim_start().starts_with("audit")).expect("audit row");
        assert!(audit.contains(" - "), "{audit}");
        assert!(table.ends_with("http://b:9464: unreachable: connection refused\n"), "{table}");
        // Columns line up: every row of the table is as wide as the header, or narrower
        // only by trailing blanks.
        assert_eq!(lines[1].find("p95"), router.find("3.0ms").map(|i| i + "3.0ms".len() - "p95".len()));

        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["nodes"][0]["node"], "edge");
        assert_eq!(json["nodes"][0]["stages"][1]["dead_lettered_total"], 17);
        assert_eq!(json["nodes"][1]["reachable"], false);
        assert_eq!(json["nodes"][1]["error"], "connection refused");
        assert!(json["nodes"][1].get("stages").is_none());
    }

    #[test]
    fn addresses_become_urls() {
        assert_eq!(base_url("127.0.0.1:9464"), "http://127.0.0.1:9464");
        assert_eq!(base_url("https://weir.example/"), "https://weir.example");
    }

    #[test]
    fn seconds_read_well() {
        assert_eq!(seconds(0.0004), "400µs");
        assert_eq!(seconds(0.0123), "12.3ms");
        assert_eq!(seconds(2.5), "2.50s");
    }
}
