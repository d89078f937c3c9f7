//! A slow stage through a rebalance. Every record takes twice the stage's `drain_timeout`,
//! so the old member always has records running when its drain deadline passes. Each
//! output is tagged with the member that produced it and the input partition it came from;
//! the old member notes when it acknowledged each revocation. Counted: outputs the old
//! member produced for a partition after it acknowledged that partition's revocation
//! (their CreateTime is stamped by the producing client, the same clock), per-key order
//! violations, lost records.

use crate::kinds::{FROM_HEADER, MEMBER_HEADER};
use crate::support::*;
use std::collections::HashMap;
use std::time::Duration;

fn slow_topology(p: &str, tag: &str) -> String {
    let settings = format!(
        "    kind: scripted\n    drain_timeout: 1s\n    concurrency: 64\n    max_in_flight: 64\n\
         \x20   commit: {{every: 1, interval: 100ms}}\n    config: {{sleep_ms: 2000, tag: {tag}}}\n"
    );
    one_stage_topology(p, 6, "", "slow", &settings)
}

fn header<'a>(r: &'a weir::envelope::Record, name: &str) -> Option<&'a str> {
    r.headers.get_str(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stage_through_a_rebalance_never_produces_after_the_revocation() {
    let p = unique("revoke");
    let t = transport();
    let (input, output) = (format!("{p}-in"), format!("{p}-out"));
    t.ensure_topics(&[topic(&input, 6), topic(&output, 6)]).await.expect("topics");

    let old = crate::nodes::start(&slow_topology(&p, "old"), &format!("{p}-old")).await;
    // 32 keys × 6 records: a key's records run one after another (2 s each), so the stream
    // lasts well past the second member's join.
    let (keys, n) = (32u64, 192u64);
    produce_range(&t, &input, 0, n, keys).await;
    read_ids(&t, &output, 40, Duration::from_secs(120)).await;

    let new = crate::nodes::start(&slow_topology(&p, "new"), &format!("{p}-new")).await;
    let out = read_ids(&t, &output, n as usize, Duration::from_secs(240)).await;

    let old_stats = old.stats.stage("slow");
    let acked: HashMap<String, i64> = old_stats.revocations().into_iter().map(|(tp, ms)| (tp.to_string(), ms)).collect();
    let after_ack = out
        .iter()
        .filter(|r| header(r, MEMBER_HEADER) == Some("old"))
        .filter(|r| header(r, FROM_HEADER).and_then(|from| acked.get(from)).is_some_and(|ack| r.timestamp_ms > *ack))
        .count();
    let by_new = out.iter().filter(|r| header(r, MEMBER_HEADER) == Some("new")).count();
    let fenced = weir::actors::stats::StageStats::get(&old_stats.fenced_records);
    let v = verdict(n, &out);
    println!(
        "kafka slow stage through a rebalance: {v}; partitions revoked from the old member {}, \
         outputs by the new member {by_new}, old member's outputs after its revocation ack {after_ack}, \
         records fenced at the drain deadline {fenced}",
        acked.len()
    );
    assert_eq!(new.shutdown().await.code, 0);
    assert_eq!(old.shutdown().await.code, 0);
    assert!(!acked.is_empty(), "the second member took partitions over (else this test shows nothing)");
    assert!(by_new > 0, "the new member produced for the partitions it took over");
    assert_eq!(after_ack, 0, "outputs of the old member after it acknowledged the revocation");
    assert_eq!(v.keys_out_of_order, 0);
    assert_eq!(v.lost, 0);
}

fn eos_topology(p: &str, tag: &str) -> String {
    let settings = format!(
        "    kind: scripted\n    guarantee: exactly-once\n    drain_timeout: 5s\n\
         \x20   commit: {{every: 20, interval: 200ms}}\n    config: {{jitter_ms: 5, tag: {tag}}}\n"
    );
    one_stage_topology(p, 6, "", "copy", &settings)
}

/// Exactly-once through a rebalance: a second member (another instance, so another
/// transactional id) joins mid-stream. The old member checkpoints before it lets go and
/// never commits offsets for a partition it gave up; a read_committed reader counts every
/// record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_a_rebalance_loses_and_duplicates_nothing() {
    let p = unique("eos-rebalance");
    let t = transport();
    let (input, output) = (format!("{p}-in"), format!("{p}-out"));
    t.ensure_topics(&[topic(&input, 6), topic(&output, 6)]).await.expect("topics");
    let old = crate::nodes::start(&eos_topology(&p, "old"), &format!("{p}-old")).await;
    let first = 3_000u64;
    produce_range(&t, &input, 0, first, 60).await;
    read_ids(&t, &output, 500, Duration::from_secs(120)).await;
    let new = crate::nodes::start(&eos_topology(&p, "new"), &format!("{p}-new")).await;
    // Keep records flowing until the new member has committed something, i.e. it owns
    // partitions the old member gave up mid-stream.
    let new_stats = new.stats.stage("copy");
    let mut n = first;
    let taken_over = async {
        while new_stats.committed.is_empty() {
            let notified = new_stats.commit_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            produce_range(&t, &input, n, n + 200, 60).await;
            n += 200;
            // Woken by the new member's first commit; bounded, as the join may come later.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(120), taken_over).await.expect("the new member took partitions over");
    produce_range(&t, &input, n, n + 1_000, 60).await;
    n += 1_000;
    let out = read_ids(&t, &output, n as usize, Duration::from_secs(240)).await;
    let old_revocations = old.stats.stage("copy").revocations();
    let revoked = old_revocations.len();
    let aborts = weir::actors::stats::StageStats::get(&old.stats.stage("copy").transaction_aborts);
    assert_eq!(new.shutdown().await.code, 0);
    assert_eq!(old.shutdown().await.code, 0);
    // Both members stopped (their last transactions committed): read everything there is.
    drop(out);
    let out = read_to_markers(&t, &output, n).await;
    let v = verdict(n, &out);
    if v.duplicated > 0 {
        let mut seen: HashMap<u64, Vec<String>> = HashMap::new();
        for r in &out {
            seen.entry(id_of(r)).or_default().push(format!(
                "{}:{}@{}[{}] ts {}",
                header(r, MEMBER_HEADER).unwrap_or("?"),
                header(r, FROM_HEADER).unwrap_or("?"),
                r.offset,
                r.partition,
                r.timestamp_ms
            ));
        }
        for (id, places) in seen.iter().filter(|(_, p)| p.len() > 1) {
            eprintln!("duplicated id {id}: {places:?}");
        }
        eprintln!("old revocations: {:?}", old_revocations);
        let inp = read_to_markers(&t, &input, n).await;
        eprintln!("input: {}", verdict(n, &inp));
        for r in inp.iter().filter(|r| seen.get(&id_of(r)).is_some_and(|p| p.len() > 1)) {
            eprintln!("input of a duplicated id {}: {}@{}", id_of(r), r.partition, r.offset);
        }
    }
    println!("kafka exactly-once through a rebalance: {v}; partitions revoked from the old member {revoked}, aborts {aborts}");
    assert!(revoked > 0, "the second member took partitions over (else this test shows nothing)");
    assert_eq!(v.lost, 0);
    assert_eq!(v.duplicated, 0);
    assert_eq!(v.keys_out_of_order, 0);
}
