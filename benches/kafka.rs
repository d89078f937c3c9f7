//! weir vs a bare rdkafka consume→produce loop on the local broker (`scripts/kafka.sh
//! start`; `WEIR_KAFKA_BROKERS`, default 127.0.0.1:9092). A harness that prints numbers:
//! `cargo bench --bench kafka` (`WEIR_BENCH_RECORDS` to change the 1,000,000).
//!
//! Both sides use the same client settings (weir's `transport::kafka::config`: acks=all,
//! idempotence, lz4, linger 5 ms, cooperative-sticky, bounded prefetch) and the same
//! at-least-once rule: an input offset is stored only once its output and every output
//! before it were acknowledged.
//!
//! 1. Throughput: N records of 256 bytes (1000 keys) are produced to a 6-partition topic
//!    first; each pipeline then copies the whole backlog to its own output topic. Time =
//!    first record read → last output acknowledged.
//! 2. Latency: a feeder sends N/10 records at half the bare loop's throughput; latency of a
//!    record = its output's broker timestamp − the feeder's send time (in the payload).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::envelope::{now_ms, OutgoingRecord, TopicPartition};
use weir::runtime::{self, NodeOptions};
use weir::stages::Registry;
use weir::topology::plan::{PayloadDecl, TopicPlan};
use weir::topology::spec::KafkaSpec;
use weir::topology::Topology;
use weir::transport::kafka::{config, KafkaTransport};
use weir::transport::{StartFrom, Transport};

const PARTITIONS: i32 = 6;
/// Records consumed and not yet acknowledged, at most: the bare loop's channel to its
/// acker holds this many; weir gets the same window split over its partitions
/// (`max_in_flight` per partition).
const WINDOW: usize = 100_000;

fn spec() -> KafkaSpec {
    let brokers = std::env::var("WEIR_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    KafkaSpec { brokers: Some(brokers), auto_create_topics: true, ..KafkaSpec::default() }
}

fn topic(name: &str) -> TopicPlan {
    TopicPlan {
        name: name.into(),
        partitions: PARTITIONS,
        retention: Some(Duration::from_secs(3600)),
        cleanup_policy: Default::default(),
        replication_factor: None,
        compression: None,
        payload: PayloadDecl::Any,
        reader_groups: Default::default(),
    }
}

/// A 256-byte JSON payload carrying its send time.
fn payload(id: u64) -> bytes::Bytes {
    let head = format!(r#"{{"id":{id},"t":{},"pad":""#, now_ms());
    let mut s = head;
    while s.len() < 254 {
        s.push('.');
    }
    s.push_str("\"}");
    bytes::Bytes::from(s)
}

async fn feed(t: &Arc<dyn Transport>, topic: &str, n: u64, rate_per_s: Option<u64>) {
    let p = t.producer();
    let mut acks = Vec::with_capacity(n as usize);
    let started = Instant::now();
    for id in 0..n {
        if let Some(rate) = rate_per_s {
            let due = Duration::from_secs_f64(id as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                if wait > Duration::from_millis(1) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let r = OutgoingRecord {
            topic: topic.into(),
            partition: None,
            key: Some(bytes::Bytes::from(format!("key-{}", id % 1000))),
            headers: Default::default(),
            payload: payload(id),
        };
        acks.push(p.enqueue(r).await.expect("enqueue"));
    }
    for a in acks {
        a.await.expect("acked");
    }
}

async fn end_offsets(t: &Arc<dyn Transport>, topic: &str) -> i64 {
    let mut sum = 0;
    for p in 0..PARTITIONS {
        sum += t.watermarks(&TopicPartition::new(topic, p)).await.expect("watermarks").1;
    }
    sum
}

async fn wait_for(t: &Arc<dyn Transport>, topic: &str, n: i64) {
    while end_offsets(t, topic).await < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bare loop: consume, produce, store each input offset once its output and all
/// earlier ones were acknowledged (a FIFO of deliveries).
async fn bare_loop(spec: &KafkaSpec, input: &str, output: &str, n: u64) -> Duration {
    let group = format!("bench-bare-{}", uuid::Uuid::new_v4().simple());
    let consumer: Arc<StreamConsumer> =
        Arc::new(config::consumer(spec, "bench-bare", &group, Duration::from_millis(500), 1).create().expect("consumer"));
    consumer.subscribe(&[input]).expect("subscribe");
    let producer: FutureProducer = config::producer(spec, "bench-bare").create().expect("producer");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, i32, i64, rdkafka::producer::DeliveryFuture)>(WINDOW);
    let acker_consumer = consumer.clone();
    let acker = tokio::spawn(async move {
        let mut done = 0u64;
        while let Some((topic, partition, offset, delivery)) = rx.recv().await {
            delivery.await.expect("delivered").expect("acked");
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition_offset(&topic, partition, Offset::Offset(offset + 1));
            let _ = acker_consumer.store_offsets(&tpl);
            done += 1;
            if done == n {
                break;
            }
        }
    });
    let mut started = None;
    for _ in 0..n {
        let m = consumer.recv().await.expect("message");
        started.get_or_insert_with(Instant::now);
        let mut rec = FutureRecord::to(output).payload(m.payload().unwrap_or_default());
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        let delivery = loop {
            match producer.send_result(rec) {
                Ok(d) => break d,
                Err((_, r)) => {
                    rec = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        tx.send((m.topic().to_string(), m.partition(), m.offset(), delivery)).await.expect("acker");
    }
    acker.await.expect("acker");
    started.map_or(Duration::ZERO, |s| s.elapsed())
}

/// weir's per-partition window of unfinished records: the bare loop's window split over
/// the partitions (`WEIR_BENCH_MAX_IN_FLIGHT` overrides).
fn max_in_flight() -> usize {
    std::env::var("WEIR_BENCH_MAX_IN_FLIGHT").ok().and_then(|v| v.parse().ok()).unwrap_or(WINDOW / PARTITIONS as usize)
}

/// The earliest broker timestamp (producer create time) on `topic`: when weir produced
/// its first output, i.e. right after it read its first record.
async fn first_timestamp(t: &Arc<dyn Transport>, topic: &str) -> i64 {
    let mut first = i64::MAX;
    for p in 0..PARTITIONS {
        let mut r = t.reader(&TopicPartition::new(topic, p), StartFrom::Earliest).await.expect("reader");
        if let Ok(Ok(rec)) = tokio::time::timeout(Duration::from_secs(10), r.next()).await {
            first = first.min(rec.timestamp_ms);
        }
    }
    first
}

async fn weir_node(input: &str, output: &str) -> runtime::NodeHandle {
    let b = spec().brokers.unwrap_or_default();
    let yaml = format!(
        "transport: kafka\nkafka: {{brokers: \"{b}\", auto_create_topics: true}}\ntopics:\n  {input}: {{partitions: {PARTITIONS}}}\n  {output}: {{partitions: {PARTITIONS}}}\nstages:\n  copy: {{kind: passthrough, from: {input}, to: {output}, group: bench-weir-{}, max_in_flight: {mif}}}\n",
        uuid::Uuid::new_v4().simple(),
        mif = max_in_flight()
    );
    let env = |_: &str| None;
    let registry = Registry::builtin();
    let t = Topology::parse("bench.yaml", &yaml, &env, &registry).expect("topology");
    let mut opts = NodeOptions::new(t.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = std::env::temp_dir().join("weir-bench-kafka");
    runtime::start(opts).await.expect("node")
}

/// Latencies (ms) of the records on `topic`: broker timestamp − send time.
async fn latencies(t: &Arc<dyn Transport>, topic: &str, n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for p in 0..PARTITIONS {
        let mut r = t.reader(&TopicPartition::new(topic, p), StartFrom::Earliest).await.expect("reader");
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(rec) = r.next().await {
                let v: serde_json::Value = serde_json::from_slice(&rec.payload).unwrap_or_default();
                let sent = v["t"].as_i64().unwrap_or(rec.timestamp_ms);
                if tx.send(rec.timestamp_ms - sent).is_err() {
                    break;
                }
            }
        });
    }
    while out.len() < n {
        match rx.recv().await {
            Some(l) => out.push(l),
            None => break,
        }
    }
    out.sort_unstable();
    out
}

fn pct(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("WEIR_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let spec = spec();
    let t: Arc<dyn Transport> = Arc::new(KafkaTransport::connect(&spec, "bench").expect("kafka"));
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let name = |s: &str| format!("bench-{run}-{s}");
    let topics: Vec<TopicPlan> =
        ["in", "out-bare", "out-weir", "lat-in-bare", "lat-out-bare", "lat-in-weir", "lat-out-weir"].iter().map(|s| topic(&name(s))).collect();
    t.ensure_topics(&topics).await.expect("topics");

    println!("producing {n} records of 256 bytes to {} ({PARTITIONS} partitions)…", name("in"));
    let fed = Instant::now();
    feed(&t, &name("in"), n, None).await;
    println!("  produced in {:.1} s", fed.elapsed().as_secs_f64());

    let bare = bare_loop(&spec, &name("in"), &name("out-bare"), n).await;
    let bare_rate = n as f64 / bare.as_secs_f64();
    println!("bare rdkafka loop: {n} records in {:.2} s = {:.0} records/s", bare.as_secs_f64(), bare_rate);

    let started = Instant::now();
    let started_ms = weir::envelope::now_ms();
    let node = weir_node(&name("in"), &name("out-weir")).await;
    wait_for(&t, &name("out-weir"), n as i64).await;
    let done_ms = weir::envelope::now_ms();
    let with_start = started.elapsed();
    node.shutdown().await;
    // Like the bare loop's clock: from the first record handled to the last output acked.
    let first_ms = first_timestamp(&t, &name("out-weir")).await;
    let weir = Duration::from_millis((done_ms - first_ms).max(1) as u64);
    let weir_rate = n as f64 / weir.as_secs_f64();
    println!(
        "weir (1 passthrough stage, max_in_flight {} per partition): {n} records in {:.2} s = {:.0} records/s ({:.2} s more for start and group join: {:.2} s in all)",
        max_in_flight(),
        weir.as_secs_f64(),
        weir_rate,
        (first_ms - started_ms) as f64 / 1000.0,
        with_start.as_secs_f64()
    );
    println!("throughput ratio weir/bare = {:.2}", weir_rate / bare_rate);

    // Latency at half the bare loop's throughput.
    let m = (n / 10).max(1000);
    let rate = (bare_rate / 2.0) as u64;
    let bare_feed = {
        let t = t.clone();
        let topic = name("lat-in-bare");
        tokio::spawn(async move { feed(&t, &topic, m, Some(rate)).await })
    };
    bare_loop(&spec, &name("lat-in-bare"), &name("lat-out-bare"), m).await;
    bare_feed.await.expect("feed");
    let bl = latencies(&t, &name("lat-out-bare"), m as usize).await;

    let node = weir_node(&name("lat-in-weir"), &name("lat-out-weir")).await;
    // Let the node join its group before the clock starts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    feed(&t, &name("lat-in-weir"), m, Some(rate)).await;
    wait_for(&t, &name("lat-out-weir"), m as i64).await;
    node.shutdown().await;
    let wl = latencies(&t, &name("lat-out-weir"), m as usize).await;
    println!("latency at {rate} records/s ({m} records): bare p50 {} ms p99 {} ms; weir p50 {} ms p99 {} ms",
        pct(&bl, 0.5), pct(&bl, 0.99), pct(&wl, 0.5), pct(&wl, 0.99));
}
