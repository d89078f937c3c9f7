use crate::common::*;

const TOPOLOGY: &str = r#"
topics:
  in: {partitions: 4}
  out: {partitions: 4}
stages:
  work:
    kind: scripted
    from: in
    to: out
    concurrency: 8
    max_in_flight: 64
    config: {jitter_ms: 3}
"#;

/// 40 keys × 50 records over 4 partitions, handled 8 at a time with random delays: every
/// key's records must come out in the order they went in, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_is_kept_with_concurrency() {
    let node = start(TOPOLOGY, Options::default()).await;
    let (keys, per_key) = (40u64, 50u64);
    let mut records = Vec::new();
    for seq in 0..per_key {
        for k in 0..keys {
            records.push(record("in", seq * keys + k, &format!("user-{k}"), seq, serde_json::json!({})));
        }
    }
    let sent = records.len();
    produce(&node.transport, records).await;
    let out = collect(&node.transport, "out", sent).await;

    let counts = id_counts(&out);
    let lost = sent - counts.len();
    let duplicated: usize = counts.values().map(|c| c - 1).sum();
    let mut out_of_order = 0;
    for (key, seqs) in seqs_by_key(&out) {
        if seqs.windows(2).any(|w| w[0] >= w[1]) {
            out_of_order += 1;
            eprintln!("key {key} out of order: {seqs:?}");
        }
        assert_eq!(seqs.len() as u64, per_key, "key {key}");
    }
    println!("ordering: sent {sent}, received {}, lost {lost}, duplicated {duplicated}, keys out of order {out_of_order}", out.len());
    assert_eq!((lost, duplicated, out_of_order), (0, 0, 0));

    // The stage really ran records concurrently: the output interleaves partitions' work,
    // i.e. not every key's records are contiguous in processing order.
    wait_fully_committed(&node, "work", "in").await;
    assert_eq!(node.shutdown().await.code, 0);
}

/// The key→partition mapping is Kafka's: the same keys land where the Java client puts them.
#[tokio::test]
async fn keyed_records_land_on_kafkas_partition() {
    let node = start(TOPOLOGY, Options::default()).await;
    let producer = node.transport.producer();
    // toPositive(murmur2(key)) % 4 with murmur2 values from Kafka's own UtilsTest.
    let vectors = [("21", -973_932_308i32), ("foobar", -790_332_482), ("abc", 479_470_107)];
    for (key, hash) in vectors {
        let d = producer.send(raw("in", Some(key), b"{}".to_vec())).await.expect("send");
        assert_eq!(d.partition, (hash & 0x7fff_ffff) % 4, "key {key}");
    }
    assert_eq!(node.shutdown().await.code, 0);
}
