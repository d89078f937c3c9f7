//! The broker goes away mid-stream and comes back: records wait (the producer holds them,
//! consumers rejoin) and then flow; nothing is lost. A test binary of its own because it
//! stops the shared local broker (cargo runs test binaries one at a time).

#[path = "kafka/support.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use weir::runtime::{self, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;

fn broker(action: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let status = Command::new(script).arg(action).status().expect("scripts/kafka.sh runs");
    assert!(status.success(), "scripts/kafka.sh {action} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_and_started_mid_stream_loses_nothing() {
    let p = unique("outage");
    let yaml = format!(
        r#"
transport: kafka
kafka: {{brokers: "{b}", auto_create_topics: true}}
topics:
  {p}-in: {{partitions: 3}}
  {p}-out: {{partitions: 3}}
stages:
  copy: {{kind: passthrough, from: {p}-in, to: {p}-out, group: {p}-copy, commit: {{every: 100, interval: 200ms}}}}
"#,
        b = brokers()
    );
    let env = |_: &str| None;
    let registry = Registry::builtin();
    let topology = Topology::parse("outage.yaml", &yaml, &env, &registry).expect("valid");
    let mut opts = NodeOptions::new(topology.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = std::env::temp_dir().join(&p);
    let node = runtime::start(opts).await.expect("node starts");
    let t = transport();
    let (input, output) = (format!("{p}-in"), format!("{p}-out"));

    let batch = 5_000u64;
    produce_range(&t, &input, 0, batch, 100).await;
    read_ids(&t, &output, 1_000, Duration::from_secs(120)).await;

    let down = Instant::now();
    broker("stop");
    broker("start");
    let outage = down.elapsed();

    produce_range(&t, &input, batch, 2 * batch, 100).await;
    let out = read_ids(&t, &output, (2 * batch) as usize, Duration::from_secs(240)).await;
    let v = verdict(2 * batch, &out);
    println!("kafka broker outage ({:.1} s down): {v}", outage.as_secs_f64());
    assert_eq!(node.shutdown().await.code, 0);
    assert_eq!(v.lost, 0);
}
