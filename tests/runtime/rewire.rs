use crate::common::*;
use std::collections::BTreeSet;

const THREE_STAGES: &str = r#"
topics:
  in: {partitions: 2}
  a: {partitions: 2}
  b: {partitions: 2}
  out: {partitions: 2}
stages:
  first: {kind: passthrough, from: in, to: a}
  middle: {kind: scripted, from: a, to: b}
  last: {kind: passthrough, from: b, to: out}
"#;

/// `middle` removed and `first` pointed at its downstream topic: an edit of the YAML only.
const MIDDLE_REMOVED: &str = r#"
topics:
  in: {partitions: 2}
  a: {partitions: 2}
  b: {partitions: 2}
  out: {partitions: 2}
stages:
  first: {kind: passthrough, from: in, to: b}
  last: {kind: passthrough, from: b, to: out}
"#;

async fn run(yaml: &str) -> (BTreeSet<u64>, u64) {
    let node = start(yaml, Options::default()).await;
    produce(&node.transport, (0..100).map(|id| record("in", id, "k", id, serde_json::json!({}))).collect()).await;
    let out = collect(&node.transport, "out", 100).await;
    let through_a = node.transport.end_offset(&weir::envelope::TopicPartition::new("a", 0)).await.expect("a")
        + node.transport.end_offset(&weir::envelope::TopicPartition::new("a", 1)).await.expect("a");
    assert_eq!(node.shutdown().await.code, 0);
    (out.iter().map(id_of).collect(), through_a as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_stage_is_a_yaml_edit() {
    let (full, via_a) = run(THREE_STAGES).await;
    let (rewired, via_a_rewired) = run(MIDDLE_REMOVED).await;
    println!("rewire: 3 stages delivered {} (via a: {via_a}); 2 stages delivered {} (via a: {via_a_rewired})", full.len(), rewired.len());
    assert_eq!(full, (0..100).collect());
    assert_eq!(rewired, full);
    assert_eq!(via_a, 100);
    assert_eq!(via_a_rewired, 0, "the rewired pipeline no longer passes through `a`");
}
