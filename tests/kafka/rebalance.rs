use crate::support::*;
use std::time::Duration;

/// While records flow, the group grows from one worker to three and shrinks back to one:
/// partitions move twice each way; nothing is lost and every key stays in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_grows_to_three_and_shrinks_back() {
    let p = unique("grow");
    let dir = tempfile::tempdir().expect("tmp");
    let yaml = one_stage_topology(&p, 6, "", "copy", "    kind: passthrough\n    commit: {every: 100, interval: 200ms}\n");
    let file = write_topology(dir.path(), &yaml);
    let t = transport();
    let (input, output) = (format!("{p}-in"), format!("{p}-out"));
    t.ensure_topics(&[topic(&input, 6), topic(&output, 6)]).await.expect("topics");
    let batch = 10_000u64;

    let mut a = Worker::start("a", &file, &[], &[]);
    produce_range(&t, &input, 0, batch, 300).await;
    read_ids(&t, &output, 5_000, Duration::from_secs(120)).await;

    // Grow to three while the first batch is still flowing.
    let mut b = Worker::start("b", &file, &[], &[]);
    let mut c = Worker::start("c", &file, &[], &[]);
    produce_range(&t, &input, batch, 3 * batch, 300).await;
    read_ids(&t, &output, (2 * batch) as usize, Duration::from_secs(120)).await;

    // Shrink back to one with records in flight.
    produce_range(&t, &input, 3 * batch, 4 * batch, 300).await;
    let stopped_b = b.stop().is_some_and(|s| s.success());
    produce_range(&t, &input, 4 * batch, 5 * batch, 300).await;
    let stopped_c = c.stop().is_some_and(|s| s.success());
    let n = 5 * batch;
    let out = read_ids(&t, &output, n as usize, Duration::from_secs(180)).await;
    let v = verdict(n, &out);
    println!("kafka group 1→3→1: {v}");
    assert!(stopped_b && stopped_c, "workers leaving the group exit 0");
    assert!(a.stop().is_some_and(|s| s.success()));
    assert_eq!(v.lost, 0);
    assert_eq!(v.keys_out_of_order, 0);
}
