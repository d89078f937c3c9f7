//! `GET /metrics`: the node's counters in Prometheus text format (docs/observability.md
//! lists every metric). The record path only bumps atomics in `actors::stats`; this module
//! reads them at scrape time, plus consumer lag, which needs the transport's end offsets.

use crate::actors::stats::{NodeStats, StageStats};
use crate::envelope::TopicPartition;
use crate::transport::Transport;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long a scrape may wait for end offsets before it reports lag without them.
const LAG_TIMEOUT: Duration = Duration::from_secs(3);

/// What the node is, for `weir_build_info`.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub node: String,
    pub transport: String,
}

/// One partition's consumer lag, as seen by the stage that owns (or owned) it.
#[derive(Debug, Clone)]
struct Lag {
    stage: String,
    group: String,
    tp: TopicPartition,
    lag: i64,
}

/// Renders the node's metrics. `healthy` is the supervisor's verdict.
pub async fn render(stats: &NodeStats, healthy: bool, info: &BuildInfo, transport: &dyn Transport) -> String {
    let lags = tokio::time::timeout(LAG_TIMEOUT, lags(stats, transport)).await.unwrap_or_default();
    let snapshot = Snapshot {
        stages: stats.stages.iter().map(|e| (e.key().clone(), e.value().clone())).collect(),
        restarts: stats.restarts.load(Ordering::Relaxed),
        ingress: stats
            .ingress_requests
            .iter()
            .map(|e| (e.key().0.clone(), e.key().1, e.value().load(Ordering::Relaxed)))
            .collect(),
        lags,
        healthy,
        info: info.clone(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    registry.register_collector(Box::new(KindCounters::snapshot()));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

async fn lags(stats: &NodeStats, transport: &dyn Transport) -> Vec<Lag> {
    let mut wanted: Vec<(String, String, TopicPartition, i64)> = Vec::new();
    for stage in stats.stages.iter() {
        let group = stage.value().group.get().cloned().unwrap_or_default();
        for p in stage.value().partitions.iter() {
            let committed = p.value().committed.load(Ordering::Relaxed);
            wanted.push((stage.key().clone(), group.clone(), p.key().clone(), committed));
        }
    }
    let ends = futures::future::join_all(wanted.iter().map(|(_, _, tp, _)| transport.end_offset(tp))).await;
    wanted
        .into_iter()
        .zip(ends)
        .filter_map(|((stage, group, tp, committed), end)| {
            let end = end.ok()?;
            // Before this member's first commit its position is unknown here: no lag row
            // rather than a made-up one.
            (committed >= 0).then(|| Lag { stage, group, tp, lag: (end - committed).max(0) })
        })
        .collect()
}

#[derive(Debug)]
struct Snapshot {
    stages: Vec<(String, Arc<StageStats>)>,
    restarts: u64,
    ingress: Vec<(String, u16, u64)>,
    lags: Vec<Lag>,
    healthy: bool,
    info: BuildInfo,
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// A counter family: `name` without `_total` (the encoder adds it).
fn counters(e: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(Labels<'_>, u64)]) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        // No labels: no `{}` either, which some parsers refuse.
        if labels.is_empty() {
            ConstCounter::new(*v).encode(m)?;
            break;
        }
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges(e: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(Labels<'_>, i64)]) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            ConstGauge::new(*v).encode(m)?;
            break;
        }
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl prometheus_client::collector::Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let per_stage = |f: &dyn Fn(&StageStats) -> u64| -> Vec<(Labels<'_>, u64)> {
            self.stages.iter().map(|(name, s)| (vec![("stage", name.as_str())], f(s))).collect()
        };

        // Label values are copied out of the maps: their guards do not outlive the loop.
        let by_topic = |name: &str, topic: &str, v: u64| (vec![("stage", name.to_string()), ("topic", topic.to_string())], v);
        let mut consumed = Vec::new();
        let mut produced = Vec::new();
        let mut dead = Vec::new();
        for (name, s) in &self.stages {
            for t in s.consumed_by_topic.iter() {
                consumed.push(by_topic(name, t.key(), load(t.value())));
            }
            for t in s.produced_by_topic.iter() {
                produced.push(by_topic(name, t.key(), load(t.value())));
            }
            for t in s.dead_lettered_by_topic.iter() {
                dead.push(by_topic(name, t.key(), load(t.value())));
            }
        }
        counters(&mut e, "weir_records_consumed", "Records handed to a stage (redeliveries count again).", &borrow(&consumed))?;
        counters(&mut e, "weir_records_completed", "Records whose outputs were all accepted.", &per_stage(&|s| load(&s.completed)))?;
        counters(&mut e, "weir_records_produced", "Records a stage emitted, by output topic.", &borrow(&produced))?;

        let mut failed: Vec<(Labels<'_>, u64)> = Vec::new();
        for (name, s) in &self.stages {
            failed.push((vec![("stage", name.as_str()), ("class", "transient")], load(&s.failures.transient)));
            failed.push((vec![("stage", name.as_str()), ("class", "permanent")], load(&s.failures.permanent)));
            failed.push((vec![("stage", name.as_str()), ("class", "panic")], load(&s.panics)));
        }
        counters(&mut e, "weir_records_failed", "Failed handle attempts by class.", &failed)?;
        counters(&mut e, "weir_records_retried", "Transient failures that were retried.", &per_stage(&|s| load(&s.retried)))?;
        counters(&mut e, "weir_records_dead_lettered", "Records sent to the stage's DLQ.", &borrow(&dead))?;
        counters(&mut e, "weir_records_dropped", "Permanent failures of a stage without a DLQ.", &per_stage(&|s| load(&s.dropped)))?;
        counters(&mut e, "weir_records_business", "Outputs marked as business outcomes.", &per_stage(&|s| load(&s.business)))?;

        for (metric, help, pick) in [
            (
                "weir_stage_processing_seconds",
                "Handle plus queueing outputs, per record.",
                (|s: &StageStats| &s.processing) as fn(&StageStats) -> &prometheus_client::metrics::histogram::Histogram,
            ),
            ("weir_end_to_end_seconds", "From the flow's origin (ingress) to this stage's outputs being accepted.", |s| {
                &s.end_to_end
            }),
        ] {
            let mut m = e.encode_descriptor(metric, help, None, MetricType::Histogram)?;
            for (name, s) in &self.stages {
                let labels = vec![("stage", name.as_str())];
                pick(s).encode(m.encode_family(&labels)?)?;
            }
        }

        let lag_rows: Vec<(Vec<(&'static str, String)>, i64)> = self
            .lags
            .iter()
            .map(|l| {
                (
                    vec![
                        ("stage", l.stage.clone()),
                        ("group", l.group.clone()),
                        ("topic", l.tp.topic.to_string()),
                        ("partition", l.tp.partition.to_string()),
                    ],
                    l.lag,
                )
            })
            .collect();
        gauges(&mut e, "weir_consumer_lag", "End offset minus committed offset.", &borrow_i(&lag_rows))?;

        let mut committed = Vec::new();
        let mut in_flight = Vec::new();
        for (name, s) in &self.stages {
            for p in s.partitions.iter() {
                let labels =
                    vec![("stage", name.clone()), ("topic", p.key().topic.to_string()), ("partition", p.key().partition.to_string())];
                let c = p.value().committed.load(Ordering::Relaxed);
                if c >= 0 {
                    committed.push((labels.clone(), c));
                }
                in_flight.push((labels, p.value().in_flight.load(Ordering::Relaxed)));
            }
        }
        gauges(&mut e, "weir_committed_offset", "The group's committed (next) offset.", &borrow_i(&committed))?;
        gauges(&mut e, "weir_partition_in_flight", "Records delivered and not yet complete.", &borrow_i(&in_flight))?;

        counters(&mut e, "weir_supervisor_restarts", "Stage restarts by the supervisor.", &per_stage(&|s| load(&s.restarts)))?;
        counters(
            &mut e,
            "weir_attempts_timed_out",
            "Attempts cancelled by the stage's `timeout` (retried as transient).",
            &per_stage(&|s| load(&s.timeouts)),
        )?;
        let circuit: Vec<(Labels<'_>, i64)> = self
            .stages
            .iter()
            .filter_map(|(name, s)| {
                let state = s.circuit_state.load(Ordering::Relaxed);
                (state >= 0).then(|| (vec![("stage", name.as_str())], state))
            })
            .collect();
        gauges(&mut e, "weir_circuit_state", "The stage's circuit breaker: 0 closed, 1 open, 2 half-open.", &circuit)?;
        counters(
            &mut e,
            "weir_transaction_aborts",
            "Exactly-once transactions aborted (their records are processed again).",
            &per_stage(&|s| load(&s.transaction_aborts)),
        )?;
        counters(
            &mut e,
            "weir_transactions_fenced",
            "Aborted transactions where another instance took over the transactional.id.",
            &per_stage(&|s| load(&s.transactions_fenced)),
        )?;
        counters(
            &mut e,
            "weir_fenced_records",
            "Records whose outputs were refused because their partition had been revoked.",
            &per_stage(&|s| load(&s.fenced_records)),
        )?;
        {
            let mut m = e.encode_descriptor(
                "weir_rate_limiter_wait_seconds",
                "Time records waited for the stage's rate limit.",
                None,
                MetricType::Counter,
            )?;
            for (name, s) in &self.stages {
                let secs = load(&s.rate_limit_wait_ns) as f64 / 1e9;
                ConstCounter::new(secs).encode(m.encode_family(&vec![("stage", name.as_str())])?)?;
            }
        }
        let mut transport_errors: Vec<(Labels<'_>, u64)> = Vec::new();
        for (name, s) in &self.stages {
            let f = &s.failures;
            for (op, v) in [
                ("enqueue", &f.enqueue_errors),
                ("delivery", &f.delivery_errors),
                ("commit", &f.commit_errors),
                ("consume", &f.consume_errors),
            ] {
                transport_errors.push((vec![("stage", name.as_str()), ("operation", op)], load(v)));
            }
        }
        counters(&mut e, "weir_transport_errors", "Transport errors by operation.", &transport_errors)?;

        let ingress_rows: Vec<(Vec<(&'static str, String)>, u64)> = self
            .ingress
            .iter()
            .map(|(names, status, v)| (vec![("ingress", names.clone()), ("status", status.to_string())], *v))
            .collect();
        counters(&mut e, "weir_ingress_requests", "HTTP ingress requests by status code.", &borrow(&ingress_rows))?;
        counters(&mut e, "weir_node_restarts", "Restarts of any stage on this node.", &[(vec![], self.restarts)])?;
        gauges(
            &mut e,
            "weir_node_healthy",
            "1 while the supervisor is within its restart budget.",
            &[(vec![], i64::from(self.healthy))],
        )?;
        gauges(
            &mut e,
            "weir_build_info",
            "Always 1; the labels say what runs.",
            &[(
                vec![
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("node", self.info.node.as_str()),
                    ("transport", self.info.transport.as_str()),
                ],
                1,
            )],
        )?;
        Ok(())
    }
}

fn borrow<'a>(rows: &'a [(Vec<(&'static str, String)>, u64)]) -> Vec<(Labels<'a>, u64)> {
    rows.iter().map(|(l, v)| (l.iter().map(|(k, s)| (*k, s.as_str())).collect(), *v)).collect()
}

fn borrow_i<'a>(rows: &'a [(Vec<(&'static str, String)>, i64)]) -> Vec<(Labels<'a>, i64)> {
    rows.iter().map(|(l, v)| (l.iter().map(|(k, s)| (*k, s.as_str())).collect(), *v)).collect()
}

/// A counter a stage kind owns (the `llm` kind's tokens, cost and cache lookups). Kinds
/// get theirs from [`kind_counter`] when they are built; `/metrics` renders them all.
/// Values are `f64` (cost in USD is fractional), stored as bits in an atomic.
#[derive(Debug, Default)]
pub struct KindCounter(std::sync::atomic::AtomicU64);

impl KindCounter {
    pub fn add(&self, v: f64) {
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + v).to_bits();
            match self.0.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

type KindLabels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct KindFamily {
    help: &'static str,
    rows: std::collections::BTreeMap<KindLabels, Arc<KindCounter>>,
}

/// Process-wide, keyed by family and labels: a stage rebuilt after a restart keeps
/// counting on the same counter.
static KIND_COUNTERS: std::sync::LazyLock<std::sync::Mutex<std::collections::BTreeMap<&'static str, KindFamily>>> =
    std::sync::LazyLock::new(Default::default);

/// The counter `name` (without `_total`) with `labels`, created on first use.
pub fn kind_counter(name: &'static str, help: &'static str, labels: &[(&'static str, &str)]) -> Arc<KindCounter> {
    let labels: KindLabels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let mut families = KIND_COUNTERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let family = families.entry(name).or_insert_with(|| KindFamily { help, rows: Default::default() });
    family.rows.entry(labels).or_default().clone()
}

/// One family at scrape time: name, help, and each label set's value.
type KindFamilySnapshot = (&'static str, &'static str, Vec<(KindLabels, f64)>);

#[derive(Debug)]
struct KindCounters(Vec<KindFamilySnapshot>);

impl KindCounters {
    fn snapshot() -> Self {
        let families = KIND_COUNTERS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        KindCounters(
            families
                .iter()
                .map(|(name, f)| (*name, f.help, f.rows.iter().map(|(l, c)| (l.clone(), c.get())).collect()))
                .collect(),
        )
    }
}

impl prometheus_client::collector::Collector for KindCounters {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        for (name, help, rows) in &self.0 {
            let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, v) in rows {
                let labels: Labels<'_> = labels.iter().map(|(k, s)| (*k, s.as_str())).collect();
                ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
