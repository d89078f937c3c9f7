//! Kafka: a stage whose outputs wait on a full librdkafka local queue still stops when the
//! node stops. The producer's queue holds one message and lingers far longer than the
//! test, so the stage's second output meets `QueueFull`; shutdown must still end with
//! exit 0 within `drain_timeout` plus a few seconds, and commit nothing whose output did
//! not get out: a second node (normal producer) then finishes the topic, and the output
//! must hold every input (0 lost, counted).

#[path = "kafka/support.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use weir::runtime::{self, NodeHandle, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;

const DRAIN: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_secs(5);

async fn node(p: &str, producer: &str) -> NodeHandle {
    let yaml = format!(
        r#"
transport: kafka
kafka: {{brokers: "{b}", auto_create_topics: true, producer: {{{producer}}}}}
defaults: {{drain_timeout: 2s}}
topics:
  {p}-in: {{partitions: 1}}
  {p}-out: {{partitions: 1}}
stages:
  copy: {{kind: passthrough, from: {p}-in, to: {p}-out, group: {p}-copy, commit: {{every: 1, interval: 50ms}}}}
"#,
        b = brokers()
    );
    let registry = Registry::builtin();
    let topology = Topology::parse("queue-full.yaml", &yaml, &|_| None, &registry).unwrap_or_else(|d| panic!("{d}"));
    let mut opts = NodeOptions::new(topology.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = std::env::temp_dir().join(p);
    // The default bound, well above the drain: what ends the wait must be the stop itself.
    opts.shutdown_timeout = Duration::from_secs(30);
    runtime::start(opts).await.expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_blocked_on_a_full_local_queue_stops_with_the_node_and_loses_nothing() {
    let p = unique("queue-full");
    let sent = 40u64;
    let t = transport();
    // One message fits in the local queue, and it waits a minute for company.
    let blocked = node(&p, r#""queue.buffering.max.messages": "1", "linger.ms": "60000""#).await;
    produce_range(&t, &format!("{p}-in"), 0, sent, 4).await;
    let stats = blocked.stats.stage("copy");
    let waiting = async {
        // The first output sits in the queue; the second one meets QueueFull.
        while weir::actors::stats::StageStats::get(&stats.consumed) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), waiting).await.expect("the stage consumed its first records");

    let started = Instant::now();
    let exit = tokio::time::timeout(Duration::from_secs(120), blocked.shutdown()).await.expect("shutdown ends");
    let took = started.elapsed();

    // A node with a normal producer finishes what the first did not commit.
    let finisher = node(&p, "").await;
    let out = read_ids(&t, &format!("{p}-out"), sent as usize, Duration::from_secs(120)).await;
    let v = verdict(sent, &out);
    println!(
        "kafka QueueFull at shutdown: exit {} in {:.2}s (drain_timeout {}s + {}s allowed); then {v}",
        exit.code,
        took.as_secs_f64(),
        DRAIN.as_secs(),
        SLACK.as_secs()
    );
    assert_eq!(finisher.shutdown().await.code, 0);
    assert_eq!(exit.code, 0, "{}", exit.reason);
    assert!(took < DRAIN + SLACK, "shutdown took {took:?}");
    assert_eq!(v.lost, 0);
}
