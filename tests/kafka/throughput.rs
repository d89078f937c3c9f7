use crate::support::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::runtime::{self, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;

/// 100,000 keyed records through three stages on six partitions: exactly the input ids
/// come out, every key in order, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_through_three_stages() {
    let p = unique("tp");
    let yaml = format!(
        r#"
transport: kafka
kafka: {{brokers: "{b}", auto_create_topics: true}}
topics:
  {p}-in: {{partitions: 6}}
  {p}-a: {{partitions: 6}}
  {p}-b: {{partitions: 6}}
  {p}-out: {{partitions: 6}}
stages:
  one: {{kind: passthrough, from: {p}-in, to: {p}-a, group: {p}-one}}
  two: {{kind: passthrough, from: {p}-a, to: {p}-b, group: {p}-two}}
  three: {{kind: passthrough, from: {p}-b, to: {p}-out, group: {p}-three}}
"#,
        b = brokers()
    );
    let env = |_: &str| None;
    let registry = Registry::builtin();
    let topology = Topology::parse("kafka-3-stage.yaml", &yaml, &env, &registry).expect("valid");
    let mut opts = NodeOptions::new(topology.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = std::env::temp_dir().join(&p);
    let node = runtime::start(opts).await.expect("node starts");
    let t = node.transport.clone();

    let n = 100_000u64;
    let started = Instant::now();
    produce_range(&t, &format!("{p}-in"), 0, n, 1000).await;
    let out = read_ids(&t, &format!("{p}-out"), n as usize, Duration::from_secs(300)).await;
    let elapsed = started.elapsed();
    let v = verdict(n, &out);
    println!("kafka 3-stage: {v}; {:.1} s, {:.0} records/s end to end", elapsed.as_secs_f64(), n as f64 / elapsed.as_secs_f64());
    assert_eq!(node.shutdown().await.code, 0);
    assert_eq!(v.lost, 0);
    assert_eq!(v.distinct, n as usize);
    assert_eq!(v.keys_out_of_order, 0);
    // No restart or rebalance happened, so nothing was delivered twice either.
    assert_eq!(v.duplicated, 0);
}
