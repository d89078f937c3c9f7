//! Embedded transport and runtime throughput (criterion).
//!
//! - `embedded_log/produce`: records appended per second through the producer trait.
//! - `embedded_log/consume`: records read per second from one partition.
//! - `topology/3-stage-passthrough`: records per second end to end through three
//!   passthrough stages (4 partitions), from the first produce to the last output read.
//!
//! Run: `cargo bench --bench embedded`. Numbers go in benches/README.md. Uses the same
//! allocator as the `weir` binary (mimalloc).

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::envelope::{Headers, OutgoingRecord, TopicPartition};
use weir::runtime::{self, NodeOptions};
use weir::stages::Registry;
use weir::topology::plan::{PayloadDecl, TopicPlan};
use weir::topology::Topology;
use weir::transport::embedded::EmbeddedTransport;
use weir::transport::{StartFrom, Transport};

const PAYLOAD: &[u8] = br#"{"id":1,"user_phone":"972501234567","text":"book a haircut tomorrow at 3pm","pad":"................................................................................................................................................................................"}"#;

fn topic(name: &str, partitions: i32) -> TopicPlan {
    TopicPlan {
        name: name.into(),
        partitions,
        retention: None,
        cleanup_policy: Default::default(),
        replication_factor: None,
        compression: None,
        payload: PayloadDecl::Any,
        reader_groups: Default::default(),
    }
}

fn record(topic: &str, i: u64) -> OutgoingRecord {
    OutgoingRecord {
        topic: topic.into(),
        partition: None,
        key: Some(Bytes::from(format!("user-{}", i % 1000))),
        headers: Headers::new(),
        payload: Bytes::from_static(PAYLOAD),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn embedded_log(c: &mut Criterion) {
    let rt = rt();
    let n = 100_000u64;
    let mut g = c.benchmark_group("embedded_log");
    g.throughput(Throughput::Elements(n)).sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("produce", |b| {
        b.iter_batched(
            || {
                let t = Arc::new(EmbeddedTransport::new(n * 2));
                rt.block_on(t.ensure_topics(&[topic("t", 4)])).expect("topic");
                t
            },
            |t| {
                rt.block_on(async {
                    let p = t.producer();
                    for i in 0..n {
                        p.send(record("t", i)).await.expect("send");
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("consume", |b| {
        b.iter_batched(
            || {
                let t = Arc::new(EmbeddedTransport::new(n * 2));
                rt.block_on(async {
                    t.ensure_topics(&[topic("t", 1)]).await.expect("topic");
                    let p = t.producer();
                    for i in 0..n {
                        p.send(record("t", i)).await.expect("send");
                    }
                });
                t
            },
            |t| {
                rt.block_on(async {
                    let mut r = t.reader(&TopicPartition::new("t", 0), StartFrom::Earliest).await.expect("reader");
                    for _ in 0..n {
                        r.next().await.expect("next");
                    }
                })
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

const THREE_STAGES: &str = r#"
topics:
  in: {partitions: 4}
  a: {partitions: 4}
  b: {partitions: 4}
  out: {partitions: 4}
stages:
  one: {kind: passthrough, from: in, to: a}
  two: {kind: passthrough, from: a, to: b}
  three: {kind: passthrough, from: b, to: out}
"#;

fn topology(c: &mut Criterion) {
    let rt = rt();
    let n = 50_000u64;
    let mut g = c.benchmark_group("topology");
    g.throughput(Throughput::Elements(n)).sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("3-stage-passthrough", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += run_once(n).await;
                }
                total
            })
        })
    });
    g.finish();
}

async fn run_once(n: u64) -> Duration {
    let env = |_: &str| None;
    let registry = Registry::builtin();
    let t = Topology::parse("bench.yaml", THREE_STAGES, &env, &registry).expect("topology");
    let mut opts = NodeOptions::new(t.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = std::env::temp_dir().join("weir-bench");
    let node = runtime::start(opts).await.expect("node");
    let transport = node.transport.clone();
    let started = Instant::now();
    let producer = transport.producer();
    for i in 0..n {
        producer.send(record("in", i)).await.expect("send");
    }
    // Wait for the last stage to have written every record.
    let mut readers = Vec::new();
    for p in 0..4 {
        readers.push(transport.reader(&TopicPartition::new("out", p), StartFrom::Earliest).await.expect("reader"));
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for mut r in readers {
        let tx = tx.clone();
        tokio::spawn(async move {
            while r.next().await.is_ok() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
    }
    for _ in 0..n {
        rx.recv().await.expect("output");
    }
    let elapsed = started.elapsed();
    node.shutdown().await;
    elapsed
}

criterion_group!(benches, embedded_log, topology);
criterion_main!(benches);
