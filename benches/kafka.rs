//! weir side by side with a bare rdkafka loop and Kafka Streams on the local broker
//! (`scripts/kafka.sh start`; `WEIR_KAFKA_BROKERS`, default 127.0.0.1:9092). A harness
//! that prints numbers: `cargo bench --bench kafka`. Environment:
//! - `WEIR_BENCH_RECORDS` (1,000,000): the backlog of the throughput runs;
//! - `WEIR_BENCH_LATENCY_SECS` (5): how long each latency run offers records;
//! - `WEIR_BENCH_MAX_IN_FLIGHT`: weir's window per partition (default: the bare loop's / 6);
//! - `WEIR_BENCH_KSTREAMS=0`: skip Kafka Streams (also skipped, with the reason, when
//!   `java` or `mvn` is missing);
//! - `WEIR_BENCH_SOAK_SECS=600`: instead of the comparison, the soak (benches/common/soak.rs).
//!
//! The peers, all on the same client settings (weir's `transport::kafka::config`: acks=all,
//! idempotence, lz4, linger 5 ms) and at least once:
//! - bare: a consume → produce → store-offset loop on rdkafka, an offset stored only once
//!   its output and every earlier one were acknowledged;
//! - weir: a 1-stage `passthrough` topology, in this process;
//! - Kafka Streams 4.1.1: benches/kstreams (source → sink, 2 stream threads,
//!   `processing.guarantee=at_least_once`), a child JVM.
//!
//! One clock for all three: every output topic has `message.timestamp.type=LogAppendTime`,
//! so each output record carries the broker's time of its append (= when its produce was
//! acknowledged, to the millisecond). Throughput: N records of 256 bytes (1000 keys) are
//! produced to a 6-partition topic first; each peer copies the whole backlog to its own
//! output; time = first output appended → last output appended (start-up and group join
//! fall before the first output and are printed apart). Latency: each peer, started and
//! warmed (60 records through it), is offered records at half the bare loop's rate; a
//! record's latency = its output's append time − its create time (the feeder's clock, in
//! the payload).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/kstreams.rs"]
mod kstreams;
#[path = "common/soak.rs"]
mod soak;
#[path = "common/weir_process.rs"]
mod weir_process;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::envelope::{now_ms, OutgoingRecord, TopicPartition};
use weir::runtime::{self, NodeOptions};
use weir::stages::Registry;
use weir::topology::spec::KafkaSpec;
use weir::topology::Topology;
use weir::transport::kafka::{config, KafkaTransport};
use weir::transport::{StartFrom, Transport};
use weir_process::{load_average, pct};

pub const PARTITIONS: i32 = 6;
/// Records consumed and not yet acknowledged, at most: the bare loop's channel to its
/// acker holds this many; weir gets the same window split over its partitions
/// (`max_in_flight` per partition).
const WINDOW: usize = 100_000;
/// Records sent through a started peer before a latency run, so that its group has
/// joined and every partition is assigned; not counted.
const WARM_UP: u64 = 60;

pub fn brokers() -> String {
    std::env::var("WEIR_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn spec() -> KafkaSpec {
    KafkaSpec { brokers: Some(brokers()), auto_create_topics: true, ..KafkaSpec::default() }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Creates `names` with 6 partitions; outputs (`log_append`) stamp the broker's append
/// time. `retention_ms` bounds the disk a long run takes.
pub async fn create_topics(names: &[String], log_append: bool, retention_ms: u64) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers()).create().expect("admin client");
    let retention = retention_ms.to_string();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            let t = NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1))
                .set("retention.ms", &retention)
                .set("segment.bytes", "67108864");
            if log_append {
                t.set("message.timestamp.type", "LogAppendTime")
            } else {
                t
            }
        })
        .collect();
    for r in admin.create_topics(&topics, &AdminOptions::new()).await.expect("create topics") {
        r.expect("topic created");
    }
}

/// A 256-byte JSON payload carrying its create time; warm-up records are marked.
fn payload(id: u64, warm: bool) -> bytes::Bytes {
    let mut s = format!(r#"{{"id":{id},"t":{},"w":{},"pad":""#, now_ms(), u8::from(warm));
    while s.len() < 254 {
        s.push('.');
    }
    s.push_str("\"}");
    bytes::Bytes::from(s)
}

/// Sends records `0..n` to `topic` (at `rate_per_s` when given), keeping at most 50,000
/// unacknowledged, and returns once all were acknowledged.
pub async fn feed(t: &Arc<dyn Transport>, topic: &str, n: u64, rate_per_s: Option<f64>, warm: bool) {
    let p = t.producer();
    let mut acks = VecDeque::new();
    let started = Instant::now();
    for id in 0..n {
        if let Some(rate) = rate_per_s {
            let due = Duration::from_secs_f64(id as f64 / rate);
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
            payload: payload(id, warm),
        };
        acks.push_back(p.enqueue(r).await.expect("enqueue"));
        if acks.len() > 50_000 {
            if let Some(a) = acks.pop_front() {
                a.await.expect("acked");
            }
        }
    }
    for a in acks {
        a.await.expect("acked");
    }
}

pub async fn end_offsets(t: &Arc<dyn Transport>, topic: &str) -> i64 {
    let mut sum = 0;
    for p in 0..PARTITIONS {
        sum += t.watermarks(&TopicPartition::new(topic, p)).await.expect("watermarks").1;
    }
    sum
}

pub async fn wait_for(t: &Arc<dyn Transport>, topic: &str, n: i64) {
    while end_offsets(t, topic).await < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The broker's append times of the first and the last record on `topic` (ms).
pub async fn append_span(t: &Arc<dyn Transport>, topic: &str) -> (i64, i64) {
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for p in 0..PARTITIONS {
        let tp = TopicPartition::new(topic, p);
        let (low, high) = t.watermarks(&tp).await.expect("watermarks");
        if high <= low {
            continue;
        }
        for (from, is_first) in [(StartFrom::Offset(low), true), (StartFrom::Offset(high - 1), false)] {
            let mut r = t.reader(&tp, from).await.expect("reader");
            if let Ok(Ok(rec)) = tokio::time::timeout(Duration::from_secs(10), r.next()).await {
                if is_first {
                    first = first.min(rec.timestamp_ms);
                } else {
                    last = last.max(rec.timestamp_ms);
                }
            }
        }
    }
    (first, last)
}

/// The bare loop: consume, produce, store each input offset once its output and all
/// earlier ones were acknowledged (a FIFO of deliveries). Returns after `n` records.
async fn bare_loop(spec: &KafkaSpec, input: &str, output: &str, n: u64) {
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
    for _ in 0..n {
        let m = consumer.recv().await.expect("message");
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
}

/// weir's per-partition window of unfinished records: the bare loop's window split over
/// the partitions (`WEIR_BENCH_MAX_IN_FLIGHT` overrides).
pub fn max_in_flight() -> usize {
    std::env::var("WEIR_BENCH_MAX_IN_FLIGHT").ok().and_then(|v| v.parse().ok()).unwrap_or(WINDOW / PARTITIONS as usize)
}

/// The 1-stage passthrough topology `input` → `output`, as `weir run` would read it.
pub fn passthrough_yaml(input: &str, output: &str) -> String {
    format!(
        "transport: kafka\nkafka: {{brokers: \"{b}\", auto_create_topics: true}}\ntopics:\n  {input}: {{partitions: {PARTITIONS}}}\n  {output}: {{partitions: {PARTITIONS}}}\nstages:\n  copy: {{kind: passthrough, from: {input}, to: {output}, group: bench-weir-{}, max_in_flight: {mif}}}\n",
        uuid::Uuid::new_v4().simple(),
        b = brokers(),
        mif = max_in_flight()
    )
}

async fn weir_node(input: &str, output: &str) -> runtime::NodeHandle {
    let env = |_: &str| None;
    let registry = Registry::builtin();
    let t = Topology::parse("bench.yaml", &passthrough_yaml(input, output), &env, &registry).expect("topology");
    let mut opts = NodeOptions::new(t.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = std::env::temp_dir().join("weir-bench-kafka");
    runtime::start(opts).await.expect("node")
}

/// Latencies (ms) of the records on `topic`, warm-up records left out: append time −
/// create time.
async fn latencies(t: &Arc<dyn Transport>, topic: &str, n: usize) -> Vec<i64> {
    let mut out = Vec::with_capacity(n);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for p in 0..PARTITIONS {
        let mut r = t.reader(&TopicPartition::new(topic, p), StartFrom::Earliest).await.expect("reader");
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(rec) = r.next().await {
                let v: serde_json::Value = serde_json::from_slice(&rec.payload).unwrap_or_default();
                if v["w"].as_i64() == Some(1) {
                    continue;
                }
                let created = v["t"].as_i64().unwrap_or(rec.timestamp_ms);
                if tx.send(rec.timestamp_ms - created).is_err() {
                    break;
                }
            }
        }));
    }
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(l)) => out.push(l),
            _ => break,
        }
    }
    readers.iter().for_each(|r| r.abort());
    out.sort_unstable();
    out
}

/// One peer's result: records/s over the append span, and the time from its start to
/// its first output (start-up and group join).
struct Throughput {
    rate: f64,
    span_s: f64,
    to_first_output_s: f64,
}

async fn measure_span(t: &Arc<dyn Transport>, output: &str, n: u64, started_ms: i64) -> Throughput {
    let (first, last) = append_span(t, output).await;
    let span_s = ((last - first).max(1)) as f64 / 1000.0;
    Throughput { rate: n as f64 / span_s, span_s, to_first_output_s: (first - started_ms) as f64 / 1000.0 }
}

fn print_throughput(name: &str, n: u64, r: &Throughput) {
    println!(
        "  {name:<14} {:>9.0} records/s  ({n} records in {:.2} s; {:.2} s from start to first output)",
        r.rate, r.span_s, r.to_first_output_s
    );
}

/// Who the latency run drives: each is started, warmed and then offered records.
enum Peer<'a> {
    Bare,
    Weir,
    Streams(&'a kstreams::Build),
}

/// Starts `peer` on `input` → `output`, warms it, offers `m` records at `rate` and returns
/// the sorted latencies.
async fn latency_run(t: &Arc<dyn Transport>, peer: &Peer<'_>, input: &str, output: &str, m: u64, rate: f64) -> Vec<i64> {
    let spec = spec();
    enum Running {
        Bare(tokio::task::JoinHandle<()>),
        Weir(runtime::NodeHandle),
        Streams(kstreams::Streams),
    }
    let running = match peer {
        Peer::Bare => {
            let (spec, input, output) = (spec.clone(), input.to_string(), output.to_string());
            Running::Bare(tokio::spawn(async move { bare_loop(&spec, &input, &output, m + WARM_UP).await }))
        }
        Peer::Weir => Running::Weir(weir_node(input, output).await),
        Peer::Streams(build) => {
            let app = format!("bench-ks-{}", uuid::Uuid::new_v4().simple());
            let (input, output) = (input.to_string(), output.to_string());
            let build: &kstreams::Build = build;
            // The JVM's start blocks this thread until RUNNING.
            Running::Streams(tokio::task::block_in_place(|| build.start(&brokers(), &input, &output, &app, 2)).expect("kafka streams"))
        }
    };
    feed(t, input, WARM_UP, None, true).await;
    wait_for(t, output, WARM_UP as i64).await;
    feed(t, input, m, Some(rate), false).await;
    wait_for(t, output, (m + WARM_UP) as i64).await;
    match running {
        Running::Bare(h) => h.await.expect("bare loop"),
        Running::Weir(node) => {
            node.shutdown().await;
        }
        Running::Streams(mut s) => tokio::task::block_in_place(|| s.stop()),
    }
    latencies(t, output, m as usize).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let spec = spec();
    let t: Arc<dyn Transport> = Arc::new(KafkaTransport::connect(&spec, "bench").expect("kafka"));
    if let Some(secs) = std::env::var("WEIR_BENCH_SOAK_SECS").ok().and_then(|v| v.parse::<u64>().ok()) {
        soak::run(&t, Duration::from_secs(secs)).await;
        return;
    }
    let n = env_u64("WEIR_BENCH_RECORDS", 1_000_000);
    let latency_secs = env_u64("WEIR_BENCH_LATENCY_SECS", 5);
    let streams = if std::env::var("WEIR_BENCH_KSTREAMS").as_deref() == Ok("0") {
        println!("Kafka Streams: skipped (WEIR_BENCH_KSTREAMS=0)");
        None
    } else {
        match kstreams::build() {
            Ok(b) => Some(b),
            Err(why) => {
                println!("Kafka Streams: skipped, {why}");
                None
            }
        }
    };
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let name = |s: &str| format!("bench-{run}-{s}");
    let hour = 3_600_000;
    create_topics(&[name("in"), name("lat-in-bare"), name("lat-in-weir"), name("lat-in-ks")], false, hour).await;
    create_topics(
        &[name("out-bare"), name("out-weir"), name("out-ks"), name("lat-out-bare"), name("lat-out-weir"), name("lat-out-ks")],
        true,
        hour,
    )
    .await;
    println!("load average before: {}", load_average());

    println!("producing {n} records of 256 bytes to {} ({PARTITIONS} partitions)…", name("in"));
    let fed = Instant::now();
    feed(&t, &name("in"), n, None, false).await;
    println!("  produced in {:.1} s", fed.elapsed().as_secs_f64());

    println!("throughput (backlog of {n}, first output appended → last output appended):");
    let started = now_ms();
    bare_loop(&spec, &name("in"), &name("out-bare"), n).await;
    let bare = measure_span(&t, &name("out-bare"), n, started).await;
    print_throughput("bare rdkafka", n, &bare);

    let started = now_ms();
    let node = weir_node(&name("in"), &name("out-weir")).await;
    wait_for(&t, &name("out-weir"), n as i64).await;
    node.shutdown().await;
    let weir = measure_span(&t, &name("out-weir"), n, started).await;
    print_throughput("weir", n, &weir);
    println!("    (1 passthrough stage, max_in_flight {} per partition)", max_in_flight());

    let ks = match &streams {
        Some(build) => {
            let started = now_ms();
            let app = format!("bench-ks-{}", uuid::Uuid::new_v4().simple());
            let mut s = tokio::task::block_in_place(|| build.start(&brokers(), &name("in"), &name("out-ks"), &app, 2)).expect("kafka streams");
            wait_for(&t, &name("out-ks"), n as i64).await;
            tokio::task::block_in_place(|| s.stop());
            let r = measure_span(&t, &name("out-ks"), n, started).await;
            print_throughput("Kafka Streams", n, &r);
            println!("    (4.1.1, 2 stream threads, at_least_once)");
            Some(r)
        }
        None => None,
    };
    println!("  weir / bare rdkafka  = {:.2}", weir.rate / bare.rate);
    if let Some(ks) = &ks {
        println!("  weir / Kafka Streams = {:.2}", weir.rate / ks.rate);
    }
    println!("load average after throughput: {}", load_average());

    // Latency at half the bare loop's throughput.
    let rate = bare.rate / 2.0;
    let m = (rate * latency_secs as f64) as u64;
    println!("latency at {rate:.0} records/s offered (50 % of the bare loop's maximum), {m} records each (create time → output append):");
    let mut peers = vec![("bare rdkafka", Peer::Bare, "bare"), ("weir", Peer::Weir, "weir")];
    if let Some(b) = &streams {
        peers.push(("Kafka Streams", Peer::Streams(b), "ks"));
    }
    for (label, peer, tag) in &peers {
        let l = latency_run(&t, peer, &name(&format!("lat-in-{tag}")), &name(&format!("lat-out-{tag}")), m, rate).await;
        println!(
            "  {label:<14} p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms  ({} records)",
            pct(&l, 0.5),
            pct(&l, 0.99),
            l.last().copied().unwrap_or_default(),
            l.len()
        );
    }
    println!("load average at the end: {}", load_average());
}
