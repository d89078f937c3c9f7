use crate::common::*;
use std::collections::BTreeSet;
use weir::envelope::header;

const TOPOLOGY: &str = r#"
topics:
  in: {partitions: 4}
  out: {partitions: 4}
  dlq-work: {partitions: 1}
stages:
  work:
    kind: scripted
    from: in
    to: out
    dlq: dlq-work
    concurrency: 4
    retry: {attempts: 3, backoff: exponential, initial: 5ms, max: 50ms}
"#;

fn script(id: u64) -> serde_json::Value {
    match id % 50 {
        7 => serde_json::json!({"fail": "transient:2"}), // recovers on attempt 3
        13 => serde_json::json!({"fail": "transient"}),  // never recovers: DLQ after 3
        21 => serde_json::json!({"fail": "permanent"}),
        _ => serde_json::json!({}),
    }
}

/// Transient, permanent and never-recovering records: every record either comes out or
/// is dead-lettered with its reason; the counts add up and no offset passes a record that
/// was not done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_equals_received_plus_dead_lettered() {
    let node = start(TOPOLOGY, Options::default()).await;
    let n = 500u64;
    let records = (0..n).map(|id| record("in", id, &format!("k{}", id % 37), id, script(id))).collect();
    produce(&node.transport, records).await;

    let expected_dlq: BTreeSet<u64> = (0..n).filter(|id| matches!(id % 50, 13 | 21)).collect();
    let dlq = collect(&node.transport, "dlq-work", expected_dlq.len()).await;
    let out = collect(&node.transport, "out", (n as usize) - expected_dlq.len()).await;
    wait_fully_committed(&node, "work", "in").await;

    let received: BTreeSet<u64> = out.iter().map(id_of).collect();
    let dead: BTreeSet<u64> = dlq.iter().map(id_of).collect();
    let lost = (0..n).filter(|id| !received.contains(id) && !dead.contains(id)).count();
    let duplicated = out.len() - received.len();
    println!(
        "failures: sent {n}, received {}, dead-lettered {}, lost {lost}, duplicated {duplicated}",
        received.len(),
        dead.len()
    );
    assert_eq!(lost, 0);
    assert_eq!(dead, expected_dlq);
    assert!(received.is_disjoint(&dead));
    assert_eq!(received.len() + dead.len(), n as usize);

    for r in &dlq {
        let id = id_of(r);
        let class = r.header(header::DLQ_ERROR_CLASS).unwrap_or("");
        let reason = r.header(header::DLQ_REASON).unwrap_or("");
        assert_eq!(r.header(header::DLQ_STAGE), Some("work"));
        assert_eq!(r.header(header::DLQ_TOPIC), Some("in"));
        assert!(r.header(header::DLQ_OFFSET).and_then(|o| o.parse::<i64>().ok()).is_some());
        assert!(r.header(header::DLQ_PARTITION).is_some());
        if id % 50 == 13 {
            assert_eq!(class, "transient");
            assert_eq!(r.header(header::DLQ_ATTEMPTS), Some("3"));
            assert!(reason.contains("gave up after 3 attempts"), "{reason}");
        } else {
            assert_eq!(class, "permanent");
            assert!(reason.contains("scripted to fail"), "{reason}");
        }
    }
    let stats = node.stats.stage("work");
    // 10 records recover on attempt 3 (2 retries each), 10 never do (2 retries each).
    assert_eq!(weir::actors::stats::StageStats::get(&stats.retried), 40);
    assert_eq!(node.shutdown().await.code, 0);
}

/// `retry.backoff: none`: a transient failure that would recover on the second attempt
/// is dead-lettered at the first one instead (no retry), and the rest pass.
#[tokio::test]
async fn backoff_none_dead_letters_at_the_first_failure() {
    let topology = TOPOLOGY.replace(
        "retry: {attempts: 3, backoff: exponential, initial: 5ms, max: 50ms}",
        "retry: {backoff: none}",
    );
    let node = start(&topology, Options::default()).await;
    let n = 100u64;
    let script = |id: u64| match id % 10 {
        3 => serde_json::json!({"fail": "transient:1"}), // would recover on attempt 2
        _ => serde_json::json!({}),
    };
    produce(&node.transport, (0..n).map(|id| record("in", id, &format!("k{}", id % 7), id, script(id))).collect()).await;
    let dlq = collect(&node.transport, "dlq-work", 10).await;
    let out = collect(&node.transport, "out", 90).await;
    wait_fully_committed(&node, "work", "in").await;
    let dead: BTreeSet<u64> = dlq.iter().map(id_of).collect();
    let received: BTreeSet<u64> = out.iter().map(id_of).collect();
    let lost = (0..n).filter(|id| !received.contains(id) && !dead.contains(id)).count();
    println!("backoff none: sent {n}, received {}, dead-lettered {}, lost {lost}", received.len(), dead.len());
    assert_eq!(dead, (0..n).filter(|id| id % 10 == 3).collect::<BTreeSet<_>>());
    assert_eq!(lost, 0);
    for r in &dlq {
        assert_eq!(r.header(header::DLQ_ATTEMPTS), Some("1"));
        assert_eq!(r.header(header::DLQ_ERROR_CLASS), Some("transient"));
        let reason = r.header(header::DLQ_REASON).unwrap_or("");
        assert!(reason.contains("no retry"), "{reason}");
    }
    assert_eq!(weir::actors::stats::StageStats::get(&node.stats.stage("work").retried), 0);
    assert_eq!(node.shutdown().await.code, 0);
}

/// A malformed record (not JSON) goes to the DLQ with the decoder's reason, and the
/// records behind it on the same partition are processed.
#[tokio::test]
async fn malformed_record_is_dead_lettered_and_the_partition_moves_on() {
    let node = start(TOPOLOGY, Options::default()).await;
    let mut records = vec![raw("in", Some("same-key"), b"{not json".to_vec())];
    records.extend((1..=5).map(|id| record("in", id, "same-key", id, serde_json::json!({}))));
    produce(&node.transport, records).await;
    let dlq = collect(&node.transport, "dlq-work", 1).await;
    let out = collect(&node.transport, "out", 5).await;
    let reason = dlq[0].header(header::DLQ_REASON).unwrap_or("");
    println!("malformed: dead-lettered 1 ({reason}), then processed {}", out.len());
    assert_eq!(&dlq[0].payload[..], b"{not json");
    assert!(reason.contains("is not valid"), "{reason}");
    assert_eq!(dlq[0].header(header::DLQ_ERROR_CLASS), Some("permanent"));
    assert_eq!(out.iter().map(id_of).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(node.shutdown().await.code, 0);
}

/// A record whose payload breaks its topic's declared schema never reaches the stage.
#[tokio::test]
async fn schema_violation_is_dead_lettered() {
    let yaml = r#"
topics:
  in:
    partitions: 1
    schema: {type: object, required: [id, key], properties: {id: {type: integer}}}
  out: {partitions: 1}
  dlq-work: {partitions: 1}
stages:
  work: {kind: scripted, from: in, to: out, dlq: dlq-work}
"#;
    let node = start(yaml, Options::default()).await;
    produce(&node.transport, vec![
        raw("in", Some("a"), br#"{"id": "seven", "key": "a"}"#.to_vec()),
        record("in", 8, "a", 1, serde_json::json!({})),
    ])
    .await;
    let dlq = collect(&node.transport, "dlq-work", 1).await;
    let out = collect(&node.transport, "out", 1).await;
    let reason = dlq[0].header(header::DLQ_REASON).unwrap_or("");
    assert!(reason.contains("schema of topic `in`"), "{reason}");
    assert_eq!(id_of(&out[0]), 8);
    assert_eq!(node.shutdown().await.code, 0);
}

/// While one record is stuck, later records of other keys complete, but the committed
/// offset stays at the stuck record; once it completes the commit reaches the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_passes_an_unfinished_record() {
    let yaml = r#"
topics:
  in: {partitions: 1}
  out: {partitions: 1}
stages:
  work: {kind: scripted, from: in, to: out, commit: {every: 1, interval: 10ms}}
"#;
    let node = start(yaml, Options::default()).await;
    let gate = "commit-gap";
    let records = (0..20u64)
        .map(|id| {
            let extra = if id == 5 { serde_json::json!({"block": gate}) } else { serde_json::json!({}) };
            record("in", id, &format!("k{id}"), 0, extra)
        })
        .collect();
    produce(&node.transport, records).await;
    // Everything but record 5 comes out...
    let out = collect(&node.transport, "out", 19).await;
    assert!(!out.iter().any(|r| id_of(r) == 5));
    // ...and the commit has reached 5 but not passed it.
    let stats = node.stats.stage("work");
    stats.wait_committed("in[0]", 5).await;
    assert_eq!(stats.committed_offset("in[0]"), Some(5), "committed past the unfinished record 5");
    kinds::open_gate(gate);
    collect(&node.transport, "out", 20).await;
    stats.wait_committed("in[0]", 20).await;
    println!("commit gap: held at 5 while 19 later records finished, then reached 20");
    assert_eq!(node.shutdown().await.code, 0);
}

/// A stage that panics is restarted by the supervisor; its partitions resume from the
/// committed offset; the poison record is dead-lettered after 3 attempts; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_stage_is_restarted_and_resumes_from_committed_offset() {
    let node = start(TOPOLOGY, Options::default()).await;
    let n = 200u64;
    let poison = [40u64, 120];
    let records = (0..n)
        .map(|id| {
            let extra = if poison.contains(&id) { serde_json::json!({"fail": "panic"}) } else { serde_json::json!({}) };
            record("in", id, &format!("k{}", id % 11), id, extra)
        })
        .collect();
    produce(&node.transport, records).await;
    let dlq = collect(&node.transport, "dlq-work", poison.len()).await;
    let out = collect_unique(&node.transport, "out", (n as usize) - poison.len()).await;
    wait_fully_committed(&node, "work", "in").await;

    let received: BTreeSet<u64> = out.iter().map(id_of).collect();
    let dead: BTreeSet<u64> = dlq.iter().map(id_of).collect();
    let lost = (0..n).filter(|id| !received.contains(id) && !dead.contains(id)).count();
    let restarts = node.stats.restarts.load(std::sync::atomic::Ordering::Relaxed);
    let stats = node.stats.stage("work");
    let panics = weir::actors::stats::StageStats::get(&stats.panics);
    println!(
        "panics: sent {n}, received {} (+{} duplicates after restarts), dead-lettered {}, lost {lost}, panics {panics}, restarts {restarts}",
        received.len(),
        out.len() - received.len(),
        dead.len()
    );
    assert_eq!(lost, 0);
    assert_eq!(dead, poison.into_iter().collect());
    assert_eq!(panics, 6, "each poison record is tried 3 times");
    assert!(restarts >= 3, "the supervisor restarted the stage ({restarts})");
    for r in &dlq {
        assert_eq!(r.header(header::DLQ_ERROR_CLASS), Some("panic"));
        assert_eq!(r.header(header::DLQ_ATTEMPTS), Some("3"));
        assert!(r.header(header::DLQ_REASON).unwrap_or("").contains("scripted to panic"));
    }
    assert!(node.health.is_healthy());
    assert_eq!(node.shutdown().await.code, 0);
}

/// A stage that cannot even be built exhausts the restart budget: the node reports
/// unhealthy and exits non-zero instead of spinning.
#[tokio::test]
async fn exhausted_restart_budget_stops_the_node_non_zero() {
    let yaml = r#"
topics:
  in: {partitions: 1}
  out: {partitions: 1}
stages:
  broken: {kind: build-fails, from: in, to: out}
"#;
    let opts = Options {
        budget: weir::actors::supervisor::RestartBudget { max_restarts: 3, window: std::time::Duration::from_secs(60) },
        ..Options::default()
    };
    let mut node = start(yaml, opts).await;
    let exit = tokio::time::timeout(DEADLINE, node.wait()).await.expect("node gives up in time");
    let restarts = node.stats.restarts.load(std::sync::atomic::Ordering::Relaxed);
    println!("budget: exit {} after {restarts} failures: {}", exit.code, exit.reason);
    assert_eq!(exit.code, 1);
    assert!(exit.reason.contains("restart budget exhausted"), "{}", exit.reason);
    assert!(exit.reason.contains("database is unreachable"), "{}", exit.reason);
    assert_eq!(restarts, 4);
    assert!(!node.health.is_healthy());
}
