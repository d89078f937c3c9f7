//! Shared by the runtime tests: a registry with scripted stage kinds, a node started on
//! the embedded transport, and helpers to produce records and collect a topic.
#![allow(dead_code)]

pub mod kinds;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use weir::actors::supervisor::{RestartBackoff, RestartBudget};
use weir::envelope::{OutgoingRecord, Record, TopicPartition};
use weir::runtime::{self, NodeHandle, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;
use weir::transport::embedded::EmbeddedTransport;
use weir::transport::{StartFrom, Transport};

/// Upper bound for any wait in a test: a hang fails the test instead of blocking CI.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn registry() -> Registry {
    let mut r = Registry::with_apps();
    r.register_stage::<kinds::Scripted>();
    r.register_stage::<kinds::BuildFails>();
    r
}

pub fn parse(yaml: &str) -> Topology {
    let env = |_: &str| None;
    match Topology::parse("test.yaml", yaml, &env, &registry()) {
        Ok(t) => t,
        Err(d) => panic!("test topology is invalid:\n{d}"),
    }
}

pub struct Options {
    pub transport: Option<Arc<dyn Transport>>,
    pub budget: RestartBudget,
    pub node: Option<String>,
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            transport: None,
            budget: RestartBudget { max_restarts: 50, window: Duration::from_secs(60) },
            node: None,
            data_dir: None,
        }
    }
}

/// Logs go to the test output when `WEIR_TEST_LOG` is set (e.g. `weir=debug`).
pub fn init_logging() {
    if let Ok(filter) = std::env::var("WEIR_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).with_test_writer().try_init();
    }
}

/// Starts a node for `yaml` on an embedded transport (a fresh one unless given).
pub async fn start(yaml: &str, opts: Options) -> NodeHandle {
    init_logging();
    let topology = parse(yaml);
    let plan = topology.plan(opts.node.as_deref()).expect("plan");
    let transport = opts
        .transport
        .unwrap_or_else(|| Arc::new(EmbeddedTransport::new(plan.embedded_capacity)) as Arc<dyn Transport>);
    let mut o = NodeOptions::new(plan, Arc::new(registry()));
    o.transport = Some(transport);
    o.budget = opts.budget;
    o.restart_backoff = RestartBackoff { initial: Duration::from_millis(10), max: Duration::from_millis(200) };
    o.data_dir = opts.data_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("weir-test-{}", std::process::id())));
    o.shutdown_timeout = Duration::from_secs(20);
    o.worker_threads = Some(2);
    runtime::start(o).await.expect("node starts")
}

/// A test record: `{"id": n, "key": k, "seq": s, ...extra}` keyed by `key`.
pub fn record(topic: &str, id: u64, key: &str, seq: u64, extra: serde_json::Value) -> OutgoingRecord {
    let mut v = serde_json::json!({"id": id, "key": key, "seq": seq});
    if let (Some(obj), serde_json::Value::Object(more)) = (v.as_object_mut(), extra) {
        obj.extend(more);
    }
    raw(topic, Some(key), serde_json::to_vec(&v).expect("json"))
}

pub fn raw(topic: &str, key: Option<&str>, payload: Vec<u8>) -> OutgoingRecord {
    let mut headers = weir::envelope::Headers::new();
    weir::envelope::stamp_origin(&mut headers, "test", None);
    OutgoingRecord {
        topic: topic.to_string(),
        partition: None,
        key: key.map(|k| bytes::Bytes::from(k.to_string())),
        headers,
        payload: bytes::Bytes::from(payload),
    }
}

pub async fn produce(transport: &Arc<dyn Transport>, records: Vec<OutgoingRecord>) {
    let producer = transport.producer();
    for r in records {
        producer.send(r).await.expect("produce");
    }
}

/// Reads `topic` from the start until `n` records arrived (or DEADLINE, then panics with
/// what arrived). Records come back grouped by partition, in offset order.
pub async fn collect(transport: &Arc<dyn Transport>, topic: &str, n: usize) -> Vec<Record> {
    match collect_within(transport, topic, n, DEADLINE).await {
        Ok(r) => r,
        Err(got) => panic!("expected {n} records on `{topic}`, got {} within {DEADLINE:?}", got.len()),
    }
}

/// Like [`collect`], but waits for `n` distinct ids, so redelivered duplicates do not
/// count; returns every record read, duplicates included.
pub async fn collect_unique(transport: &Arc<dyn Transport>, topic: &str, n: usize) -> Vec<Record> {
    match read_until(transport, topic, DEADLINE, |got| id_counts(got).len() >= n).await {
        Ok(r) => r,
        Err(got) => panic!("expected {n} distinct ids on `{topic}`, got {} within {DEADLINE:?}", id_counts(&got).len()),
    }
}

pub async fn collect_within(
    transport: &Arc<dyn Transport>,
    topic: &str,
    n: usize,
    within: Duration,
) -> Result<Vec<Record>, Vec<Record>> {
    read_until(transport, topic, within, |got| got.len() >= n).await
}

async fn read_until(
    transport: &Arc<dyn Transport>,
    topic: &str,
    within: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Result<Vec<Record>, Vec<Record>> {
    let parts = transport.partition_count(topic).await.expect("topic exists");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for p in 0..parts {
        let mut reader = transport.reader(&TopicPartition::new(topic, p), StartFrom::Earliest).await.expect("reader");
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(r) = reader.next().await {
                if tx.send(r).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut got = Vec::new();
    let outcome = tokio::time::timeout(within, async {
        while !done(&got) {
            match rx.recv().await {
                Some(r) => got.push(r),
                None => break,
            }
        }
    })
    .await;
    for t in tasks {
        t.abort();
    }
    got.sort_by_key(|r| (r.partition, r.offset));
    if outcome.is_ok() && done(&got) {
        Ok(got)
    } else {
        Err(got)
    }
}

pub fn json(r: &Record) -> serde_json::Value {
    serde_json::from_slice(&r.payload).expect("payload is JSON")
}

pub fn id_of(r: &Record) -> u64 {
    json(r)["id"].as_u64().expect("record has an id")
}

/// How many times each id appears.
pub fn id_counts(records: &[Record]) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for r in records {
        *m.entry(id_of(r)).or_insert(0) += 1;
    }
    m
}

/// Per key, the `seq` values in the order they appear in the output (by partition order).
pub fn seqs_by_key(records: &[Record]) -> HashMap<String, Vec<u64>> {
    let mut m: HashMap<String, Vec<u64>> = HashMap::new();
    for r in records {
        let v = json(r);
        let key = v["key"].as_str().expect("key").to_string();
        m.entry(key).or_default().push(v["seq"].as_u64().expect("seq"));
    }
    m
}

/// Waits until the group has committed every partition of `topic` up to its end.
pub async fn wait_fully_committed(node: &NodeHandle, stage: &str, topic: &str) {
    let stats = node.stats.stage(stage);
    let parts = node.transport.partition_count(topic).await.expect("topic");
    let all = async {
        for p in 0..parts {
            let tp = TopicPartition::new(topic, p);
            let end = node.transport.end_offset(&tp).await.expect("end");
            if end > 0 {
                stats.wait_committed(&tp.to_string(), end).await;
            }
        }
    };
    tokio::time::timeout(DEADLINE, all).await.expect("offsets committed to the end in time");
}

/// A router that sends `type: order` on and dead-letters anything else, then a
/// passthrough; with a metrics port. Used to check that observed counters add up.
pub const ROUTER_AUDIT: &str = r#"
name: router-audit
metrics: {listen: "127.0.0.1:0"}
topics:
  orders-in: {partitions: 4}
  routed: {partitions: 4}
  audited: {partitions: 2}
  dlq-router: {partitions: 1}
stages:
  router:
    kind: router
    from: orders-in
    to: {orders: routed}
    dlq: dlq-router
    commit: {every: 10, interval: 50ms}
    config: {field: type, routes: {order: orders}}
  audit:
    kind: passthrough
    from: routed
    to: audited
    commit: {every: 10, interval: 50ms}
"#;

/// Sends `good` orders and `bad` records of an unknown type to [`ROUTER_AUDIT`]'s input
/// and waits until both stages committed everything.
pub async fn run_router_audit(node: &NodeHandle, good: u64, bad: u64) {
    let producer = node.transport.producer();
    for id in 0..good + bad {
        let kind = if id < good { "order" } else { "bogus" };
        let r = record("orders-in", id, &format!("k{}", id % 23), id, serde_json::json!({"type": kind}));
        producer.send(r).await.expect("produced");
    }
    wait_fully_committed(node, "router", "orders-in").await;
    wait_fully_committed(node, "audit", "routed").await;
}
