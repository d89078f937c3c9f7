//! Exactly-once with a transaction the broker aborts. One record takes longer than the
//! stage's `transaction.timeout.ms` (3 s here, through the topology's pass-through producer
//! settings), so the broker aborts the open transaction (its timeout check runs every
//! 10 s) while the checkpoint waits for that record; the commit then fails. The aborted
//! records must be processed again from the committed offsets: a `read_committed` reader
//! counts lost and duplicated records, and the stage's counter shows the abort happened.

use crate::support::*;
use std::time::Duration;
use weir::actors::stats::StageStats;
use weir::envelope::TopicPartition;

fn eos_topology(p: &str) -> String {
    let kafka = "  producer: {transaction.timeout.ms: \"3000\", message.timeout.ms: \"3000\"}\n";
    // The checkpoint waits for the slow record (up to drain_timeout) instead of giving up first.
    let settings = "    kind: scripted\n    guarantee: exactly-once\n    drain_timeout: 40s\n    commit: {every: 50, interval: 200ms}\n";
    one_stage_topology(p, 4, kafka, "copy", settings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_aborted_transaction_loses_and_duplicates_nothing() {
    let p = unique("abort");
    let t = transport();
    let (input, output) = (format!("{p}-in"), format!("{p}-out"));
    t.ensure_topics(&[topic(&input, 4), topic(&output, 4)]).await.expect("topics");
    let node = crate::nodes::start(&eos_topology(&p), &format!("{p}-instance")).await;

    let (n, keys, slow_id) = (1_000u64, 40u64, 300u64);
    let producer = t.producer();
    let mut acks = Vec::new();
    for id in 0..n {
        let mut r = record(&input, id, &format!("key-{}", id % keys), id / keys);
        if id == slow_id {
            // Slower than transaction.timeout.ms plus the broker's 10 s abort check.
            let v = serde_json::json!({"id": id, "key": format!("key-{}", id % keys), "seq": id / keys, "slow_once_ms": 15_000});
            r.payload = bytes::Bytes::from(serde_json::to_vec(&v).expect("json"));
        }
        acks.push(producer.enqueue(r).await.expect("enqueue"));
    }
    for a in acks {
        a.await.expect("acked");
    }

    let out = read_ids(&t, &output, n as usize, Duration::from_secs(240)).await;
    // Whatever is still on its way (a duplicate would be) has had its chance: wait until the
    // group committed the whole input, then read the output again.
    let stats = node.stats.stage("copy");
    let committed_all = async {
        for part in 0..4 {
            let tp = weir::envelope::TopicPartition::new(input.as_str(), part);
            let end = t.end_offset(&tp).await.expect("end offset");
            loop {
                if t.committed(&format!("{p}-copy"), &tp).await.ok().flatten().is_some_and(|c| c >= end) {
                    break;
                }
                let notified = stats.commit_notify.notified();
                let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), committed_all).await.expect("the input is committed to its end");
    drop(out);
    // Everything is committed now: read each output partition whole, so a duplicate at a
    // partition's tail is counted too.
    let out = read_to_markers(&t, &output, n).await;
    let v = verdict(n, &out);
    let aborts = StageStats::get(&stats.transaction_aborts);
    println!(
        "kafka exactly-once with a forced abort: sent {}, received {}, lost {}, duplicated {}, aborts seen {aborts} \
         (fenced {}), restarts {}",
        v.sent,
        v.received,
        v.lost,
        v.duplicated,
        StageStats::get(&stats.transactions_fenced),
        StageStats::get(&stats.restarts),
    );
    assert_eq!(node.shutdown().await.code, 0);
    assert!(aborts >= 1, "the broker aborted a transaction (else this test shows nothing)");
    assert_eq!(v.lost, 0);
    assert_eq!(v.duplicated, 0);
    assert_eq!(v.keys_out_of_order, 0);
}

/// Another instance with the same `transactional.id` takes over mid-stream (the test opens
/// a transaction under the stage's id, which fences the node's producer). The fenced
/// member stops producing, the supervisor restarts it (re-initialising transactions fences
/// the intruder in turn), and the records of the fenced transaction are processed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_fenced_by_a_second_instance_loses_and_duplicates_nothing() {
    let p = unique("fence");
    let t = transport();
    let (input, output) = (format!("{p}-in"), format!("{p}-out"));
    t.ensure_topics(&[topic(&input, 4), topic(&output, 4)]).await.expect("topics");
    let instance = format!("{p}-instance");
    let node = crate::nodes::start(&eos_topology(&p), &instance).await;

    let n = 4_000u64;
    produce_range(&t, &input, 0, n / 2, 40).await;
    read_ids(&t, &output, 200, Duration::from_secs(120)).await;
    // The id the supervisor gives the stage's transactions: weir-<topology>-<stage>-<instance>.
    let intruder = t.transaction(&format!("weir-{p}-copy-{instance}")).expect("transaction").expect("kafka has transactions");
    intruder.commit().await.expect("the intruder's (empty) transaction commits");
    produce_range(&t, &input, n / 2, n, 40).await;

    let stats = node.stats.stage("copy");
    read_ids(&t, &output, n as usize, Duration::from_secs(240)).await;
    let committed_all = async {
        for part in 0..4 {
            let tp = TopicPartition::new(input.as_str(), part);
            let end = t.end_offset(&tp).await.expect("end offset");
            loop {
                if t.committed(&format!("{p}-copy"), &tp).await.ok().flatten().is_some_and(|c| c >= end) {
                    break;
                }
                let notified = stats.commit_notify.notified();
                let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), committed_all).await.expect("the input is committed to its end");
    let out = read_to_markers(&t, &output, n).await;
    let v = verdict(n, &out);
    let aborts = StageStats::get(&stats.transaction_aborts);
    println!(
        "kafka exactly-once fenced by a second instance: sent {}, received {}, lost {}, duplicated {}, aborts seen {aborts} \
         (fenced {}), restarts {}",
        v.sent,
        v.received,
        v.lost,
        v.duplicated,
        StageStats::get(&stats.transactions_fenced),
        StageStats::get(&stats.restarts),
    );
    assert_eq!(node.shutdown().await.code, 0);
    assert!(aborts >= 1, "the fenced transaction was counted as aborted");
    assert_eq!(v.lost, 0);
    assert_eq!(v.duplicated, 0);
    assert_eq!(v.keys_out_of_order, 0);
}
