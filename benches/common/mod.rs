//! What the embedded and tracing benchmarks share: the record they send and the 3-stage
//! passthrough topology, run once from the first produce to the last output read.
#![allow(dead_code)]

use bytes::Bytes;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::envelope::{Headers, OutgoingRecord, TopicPartition};
use weir::runtime::{self, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;
use weir::transport::StartFrom;

pub const PAYLOAD: &[u8] = br#"{"id":1,"user_phone":"972501234567","text":"book a haircut tomorrow at 3pm","pad":"................................................................................................................................................................................"}"#;

pub const THREE_STAGES: &str = r#"
topics:
  in: {partitions: 4}
  a: {partitions: 4}
  b: {partitions: 4}
  out: {partitions: 4}
stages:
  one: {kind: passthrough, from: in, to: a}
  two: {kind: passthrough, from: a, to: b}
  three: {kind: passthrough, from: b, to: out}
"#;

/// Record `i`: the 256-byte payload, keyed by one of 1000 users.
pub fn record(topic: &str, i: u64, headers: Headers) -> OutgoingRecord {
    OutgoingRecord {
        topic: topic.into(),
        partition: None,
        key: Some(Bytes::from(format!("user-{}", i % 1000))),
        headers,
        payload: Bytes::from_static(PAYLOAD),
    }
}

/// Starts a node for [`THREE_STAGES`], sends `n` records made by `make` to `in`, and
/// returns the time from the first send to the last output read on `out`.
pub async fn three_stages_once(n: u64, data_dir: &str, make: impl Fn(u64) -> OutgoingRecord) -> Duration {
    let env = |_: &str| None;
    let registry = Registry::builtin();
    let t = Topology::parse("bench.yaml", THREE_STAGES, &env, &registry).expect("topology");
    let mut opts = NodeOptions::new(t.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = std::env::temp_dir().join(data_dir);
    // The embedded log is kept on disk there: start each run from an empty one.
    let _ = std::fs::remove_dir_all(&opts.data_dir);
    let node = runtime::start(opts).await.expect("node");
    let transport = node.transport.clone();
    let started = Instant::now();
    let producer = transport.producer();
    for i in 0..n {
        producer.send(make(i)).await.expect("send");
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for p in 0..4 {
        let mut r = transport.reader(&TopicPartition::new("out", p), StartFrom::Earliest).await.expect("reader");
        let tx = tx.clone();
        tokio::spawn(async move {
            while r.next().await.is_ok() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    for _ in 0..n {
        rx.recv().await.expect("output");
    }
    let elapsed = started.elapsed();
    node.shutdown().await;
    elapsed
}
