//! Embedded transport and runtime throughput (criterion).
//!
//! - `embedded_log/produce`: records appended per second through the producer trait.
//! - `embedded_log/consume`: records read per second from one partition.
//! - `topology/3-stage-passthrough`: records per second end to end through three
//!   passthrough stages (4 partitions), from the first produce to the last output read.
//!
//! Run: `cargo bench --bench embedded`. Numbers go in benches/README.md. Uses the same
//! allocator as the `weir` binary (mimalloc).

mod common;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;
use weir::envelope::{Headers, OutgoingRecord, TopicPartition};
use weir::topology::plan::TopicPlan;
use weir::transport::embedded::EmbeddedTransport;
use weir::transport::{StartFrom, Transport};

fn topic(name: &str, partitions: i32) -> TopicPlan {
    TopicPlan::bare(name, partitions)
}

fn record(topic: &str, i: u64) -> OutgoingRecord {
    common::record(topic, i, Headers::new())
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
    common::three_stages_once(n, "weir-bench", |i| record("in", i)).await
}

criterion_group!(benches, embedded_log, topology);
criterion_main!(benches);
