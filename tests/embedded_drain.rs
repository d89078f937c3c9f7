//! Drain to empty on the embedded transport: a node asked to stop while records are still
//! in its first topic, and in the topics between its stages, runs its pipeline until every
//! input is consumed and committed, then exits. Counted on the last topic: every record
//! came out, and every group's lag is 0. A `delay` stage holding a far-future record does
//! not hold the shutdown beyond the bound.

#[path = "common/mod.rs"]
mod common;

use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use weir::envelope::TopicPartition;

const THREE_STAGES: &str = r#"
topics:
  in: {partitions: 3}
  mid: {partitions: 2}
  last: {partitions: 2}
  out: {partitions: 3}
  later: {partitions: 1}
stages:
  one: {kind: scripted, from: in, to: mid, concurrency: 2, max_in_flight: 4, config: {jitter_ms: 4}}
  two: {kind: scripted, from: mid, to: last, concurrency: 2, max_in_flight: 4, config: {jitter_ms: 4}}
  three: {kind: scripted, from: last, to: out, concurrency: 2, max_in_flight: 4, drain_timeout: 30s, config: {jitter_ms: 4}}
  timer: {kind: delay, from: later, to: out, config: {after: 1h}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_runs_the_pipeline_until_every_input_is_committed() {
    init_logging();
    let node = start(THREE_STAGES, Options::default()).await;
    let transport = node.transport.clone();
    let n = 300u64;
    produce(&transport, (0..n).map(|id| record("in", id, &format!("k{id}"), 0, serde_json::json!({}))).collect())
        .await;
    // A deadline an hour away: the drain must not wait for it.
    produce(&transport, vec![record("later", 1_000_000, "late", 0, serde_json::json!({}))]).await;

    let asked = Instant::now();
    let exit = node.shutdown().await;
    let took = asked.elapsed();

    // Everything is already there if the drain worked; the bound only ends a failing run.
    let out = collect_within(&transport, "out", n as usize, Duration::from_secs(5)).await.unwrap_or_else(|got| got);
    let ids: BTreeSet<u64> = out.iter().map(id_of).collect();
    let mut lag = 0;
    for (group, topic, partitions) in [("weir.one", "in", 3), ("weir.two", "mid", 2), ("weir.three", "last", 2)] {
        for p in 0..partitions {
            let tp = TopicPartition::new(topic, p);
            let end = transport.end_offset(&tp).await.expect("end");
            let committed = transport.committed(group, &tp).await.expect("committed").unwrap_or(0);
            lag += end - committed;
        }
    }
    let missing = (0..n).filter(|id| !ids.contains(id)).count();
    println!(
        "drain: exit {}, out {} (unique {}), missing {missing}, lag after exit {lag}, the delayed record out: {}, shutdown took {took:?}",
        exit.code,
        out.len(),
        ids.len(),
        ids.contains(&1_000_000)
    );
    assert_eq!(exit.code, 0);
    assert_eq!(missing, 0, "every record went all the way through before the node stopped");
    assert_eq!(lag, 0, "every stage committed its whole input");
    assert!(!ids.contains(&1_000_000), "the hour-long delay was not waited for");
}
