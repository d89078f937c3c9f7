use crate::common::*;
use std::collections::BTreeSet;
use weir::envelope::TopicPartition;

/// After a graceful shutdown the group's committed offsets cover every processed record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_commits_and_exits_zero() {
    let yaml = r#"
topics:
  in: {partitions: 3}
  out: {partitions: 3}
stages:
  work: {kind: passthrough, from: in, to: out, commit: {every: 100000, interval: 1h}}
"#;
    // Commits are set to (practically) never happen on their own: only the shutdown commits.
    let node = start(yaml, Options::default()).await;
    let transport = node.transport.clone();
    produce(&transport, (0..300).map(|id| record("in", id, &format!("k{id}"), 0, serde_json::json!({}))).collect())
        .await;
    collect(&transport, "out", 300).await;
    let exit = node.shutdown().await;
    let mut committed = 0;
    for p in 0..3 {
        let tp = TopicPartition::new("in", p);
        let c = transport.committed("weir.work", &tp).await.expect("committed").unwrap_or(0);
        assert_eq!(c, transport.end_offset(&tp).await.expect("end"), "partition {p}");
        committed += c;
    }
    println!("shutdown: exit {}, committed {committed} of 300", exit.code);
    assert_eq!(exit.code, 0);
    assert_eq!(committed, 300);
}

/// Stopping in the middle of a slow stream loses nothing: a second node on the same log
/// picks up from the committed offsets and between them every record comes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_stream_then_restart_loses_nothing() {
    let yaml = r#"
topics:
  in: {partitions: 2}
  out: {partitions: 2}
stages:
  work: {kind: scripted, from: in, to: out, concurrency: 2, max_in_flight: 4, drain_timeout: 5s, config: {jitter_ms: 10}}
"#;
    let first = start(yaml, Options::default()).await;
    let transport = first.transport.clone();
    let n = 300u64;
    produce(&transport, (0..n).map(|id| record("in", id, &format!("k{id}"), 0, serde_json::json!({}))).collect())
        .await;
    collect(&transport, "out", 30).await;
    let exit = first.shutdown().await;
    assert_eq!(exit.code, 0);
    let mut resumed_from = 0;
    for p in 0..2 {
        resumed_from += transport.committed("weir.work", &TopicPartition::new("in", p)).await.expect("c").unwrap_or(0);
    }
    assert!(resumed_from < n as i64, "the first node was stopped mid-stream");

    let second = start(yaml, Options { transport: Some(transport.clone()), ..Options::default() }).await;
    wait_fully_committed(&second, "work", "in").await;
    let out = collect_unique(&transport, "out", n as usize).await;
    let ids: BTreeSet<u64> = out.iter().map(id_of).collect();
    let lost = n as usize - ids.len();
    println!(
        "restart: first node committed {resumed_from}, total out {}, lost {lost}, duplicated {}",
        out.len(),
        out.len() - ids.len()
    );
    assert_eq!(lost, 0);
    assert_eq!(second.shutdown().await.code, 0);
}
