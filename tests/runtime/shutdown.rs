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

/// Everything on `topic` right now (read up to each partition's end offset).
async fn everything_on(transport: &std::sync::Arc<dyn weir::transport::Transport>, topic: &str) -> Vec<weir::envelope::Record> {
    let mut n = 0;
    for p in 0..transport.partition_count(topic).await.expect("topic") {
        n += transport.end_offset(&TopicPartition::new(topic, p)).await.expect("end");
    }
    collect(transport, topic, usize::try_from(n).unwrap_or(0)).await
}

/// Stopping while a slow stream runs commits exactly what completed, and a second node on
/// the same log resumes from there: every record comes out, none twice.
///
/// Whether the first node was stopped early or late does not matter (it is not asserted):
/// after its graceful shutdown, the records below the committed offsets must be exactly
/// those it produced outputs for. A completed record above the committed offset would be
/// done again on restart (a duplicate); a committed one without an output is lost.
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
    // Stop while it runs (at the first outputs), however far it got by then.
    collect(&transport, "out", 30).await;
    let exit = first.shutdown().await;
    assert_eq!(exit.code, 0);

    let mut committed = [0i64; 2];
    for (p, c) in committed.iter_mut().enumerate() {
        let tp = TopicPartition::new("in", i32::try_from(p).unwrap_or(0));
        *c = transport.committed("weir.work", &tp).await.expect("committed").unwrap_or(0);
    }
    let below_committed: BTreeSet<u64> = collect(&transport, "in", n as usize)
        .await
        .iter()
        .filter(|r| r.offset < committed[usize::try_from(r.partition).unwrap_or(0)])
        .map(id_of)
        .collect();
    let first_out = everything_on(&transport, "out").await;
    let completed: BTreeSet<u64> = first_out.iter().map(id_of).collect();
    let completed_uncommitted = completed.difference(&below_committed).count();
    let committed_not_completed = below_committed.difference(&completed).count();
    println!(
        "shutdown: first node completed {} (outputs {}), committed {}; completed but not committed {completed_uncommitted}, committed but not completed {committed_not_completed}",
        completed.len(),
        first_out.len(),
        below_committed.len()
    );
    assert_eq!((completed_uncommitted, committed_not_completed), (0, 0));
    assert_eq!(first_out.len(), completed.len(), "the first node produced an output twice");

    let second = start(yaml, Options { transport: Some(transport.clone()), ..Options::default() }).await;
    // The first node drains to empty on shutdown, so the second may have nothing to do:
    // counting the outputs is what tells whether anything was lost.
    let out = collect_unique(&transport, "out", n as usize).await;
    let ids: BTreeSet<u64> = out.iter().map(id_of).collect();
    let lost = n as usize - ids.len();
    let duplicated = out.len() - ids.len();
    println!(
        "restart: resumed after {} committed records, total out {}, lost {lost}, duplicated {duplicated}",
        below_committed.len(),
        out.len()
    );
    assert_eq!((lost, duplicated), (0, 0));
    assert_eq!(second.shutdown().await.code, 0);
}
