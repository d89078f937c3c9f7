use crate::support::*;
use std::time::Duration;

fn worker_topology(p: &str, guarantee: &str) -> String {
    let settings = format!("    kind: passthrough\n    guarantee: {guarantee}\n    commit: {{every: 200, interval: 200ms}}\n");
    one_stage_topology(p, 6, "", "copy", &settings)
}

async fn crash_and_restart(guarantee: &str) -> Verdict {
    let p = unique("crash");
    let dir = tempfile::tempdir().expect("tmp");
    let file = write_topology(dir.path(), &worker_topology(&p, guarantee));
    let t = transport();
    t.ensure_topics(&[topic(&format!("{p}-in"), 6), topic(&format!("{p}-out"), 6)]).await.expect("topics");
    let instance = [("WEIR_INSTANCE", "crash-worker")];

    let mut first = Worker::start("first", &file, &[], &instance);
    let n = 20_000u64;
    let producer_t = t.clone();
    let input = format!("{p}-in");
    let producing = tokio::spawn(async move { produce_range(&producer_t, &input, 0, n, 500).await });
    // Kill it mid-stream: once part of the output is there, with records still in flight.
    read_ids(&t, &format!("{p}-out"), 3_000, Duration::from_secs(120)).await;
    first.kill();
    producing.await.expect("produced");

    let mut second = Worker::start("second", &file, &[], &instance);
    let out = read_ids(&t, &format!("{p}-out"), n as usize, Duration::from_secs(180)).await;
    let v = verdict(n, &out);
    assert!(second.stop().is_some_and(|s| s.success()), "the restarted worker exits 0");
    v
}

/// SIGKILL in the middle of the stream, then a restart: at-least-once means nothing is
/// lost; what was processed after the last commit is delivered again (counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_at_least_once_loses_nothing() {
    let v = crash_and_restart("at-least-once").await;
    println!("kafka SIGKILL (at-least-once): {v}");
    assert_eq!(v.lost, 0);
    assert_eq!(v.keys_out_of_order, 0);
}

/// The same crash with `guarantee: exactly-once`: outputs and input offsets commit in one
/// Kafka transaction, the restarted worker (same instance name) fences the dead one, and a
/// read_committed reader sees every record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_exactly_once_has_no_duplicates() {
    let v = crash_and_restart("exactly-once").await;
    println!("kafka SIGKILL (exactly-once): {v}");
    assert_eq!(v.lost, 0);
    assert_eq!(v.duplicated, 0);
    assert_eq!(v.keys_out_of_order, 0);
}
