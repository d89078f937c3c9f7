//! Slow outside calls with per-key order: an `http` stage calling a service that answers
//! after L (± 10 %). A harness that prints numbers: `cargo bench --bench slow_calls`
//! (`WEIR_BENCH_ROUNDS` scales the uniform cases).
//!
//! - The service runs in a child process (this binary, re-executed with
//!   `WEIR_SLOW_CALLS_SERVE`): each side of a connection costs a file descriptor, and
//!   thousands of calls in flight over HTTP/1.1 would otherwise put both sides' sockets
//!   under one `ulimit -n`. It answers on a timer (no thread per request), counts calls in
//!   flight and checks per-key order: each record carries its key's sequence number in the
//!   URL, and a number lower than one already seen for that key is a violation.
//! - weir: embedded transport in memory (`durable: false`), so the runtime is measured and
//!   not a disk; one `http` stage reads a 12-partition topic with 10,000 keys.
//! - Uniform keys: rounds of all 10,000 keys, shuffled within each round (independent
//!   draws would let keys run dry at different times and measure the sample). All records
//!   are produced before the clock starts; records/s is the steady state between the 10th
//!   and the 90th percentile of outputs.
//! - Zipf(1.0) keys: offered at a fixed rate so that keys past the top 1 % stay
//!   unsaturated; latency = output read time − produce time (in the payload); cold keys are
//!   those past the top 100 by rank.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::envelope::{Headers, OutgoingRecord, TopicPartition};
use weir::runtime::{self, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;
use weir::transport::StartFrom;

const PARTITIONS: u32 = 12;
const KEYS: u64 = 10_000;

/// xorshift64*: a deterministic generator is enough for shuffles and jitter.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------- the slow service (child)

#[derive(Default)]
struct ServiceState {
    in_flight: AtomicI64,
    peak: AtomicI64,
    calls: AtomicU64,
    violations: AtomicU64,
    repeats: AtomicU64,
    last_seq: Mutex<HashMap<u64, u64>>,
    rng: Mutex<u64>,
}

async fn serve(latency_ms: u64) {
    use axum::extract::{Path, State};
    let state = Arc::new(ServiceState { rng: Mutex::new(0x9E37_79B9_7F4A_7C15), ..Default::default() });
    async fn call(State(s): State<Arc<ServiceState>>, Path((key, seq)): Path<(u64, u64)>, latency: u64) -> String {
        {
            let mut last = s.last_seq.lock().unwrap_or_else(|e| e.into_inner());
            match last.get(&key) {
                Some(&l) if seq < l => {
                    s.violations.fetch_add(1, Ordering::Relaxed);
                }
                Some(&l) if seq == l => {
                    s.repeats.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    last.insert(key, seq);
                }
            }
        }
        let now = s.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        s.peak.fetch_max(now, Ordering::Relaxed);
        let jitter = {
            let mut g = s.rng.lock().unwrap_or_else(|e| e.into_inner());
            let mut r = Rng(*g);
            let u = r.unit();
            *g = r.0;
            u
        };
        // L ± 10 %, uniform.
        let d = latency as f64 * (0.9 + 0.2 * jitter);
        tokio::time::sleep(Duration::from_micros((d * 1000.0) as u64)).await;
        s.in_flight.fetch_sub(1, Ordering::Relaxed);
        s.calls.fetch_add(1, Ordering::Relaxed);
        "{\"ok\":true}".to_string()
    }
    async fn stats(State(s): State<Arc<ServiceState>>) -> String {
        let v = serde_json::json!({
            "calls": s.calls.load(Ordering::Relaxed),
            "peak": s.peak.swap(0, Ordering::Relaxed),
            "violations": s.violations.load(Ordering::Relaxed),
            "repeats": s.repeats.load(Ordering::Relaxed),
        });
        s.last_seq.lock().unwrap_or_else(|e| e.into_inner()).clear();
        s.calls.store(0, Ordering::Relaxed);
        s.violations.store(0, Ordering::Relaxed);
        s.repeats.store(0, Ordering::Relaxed);
        v.to_string()
    }
    let app = axum::Router::new()
        .route(
            "/call/{key}/{seq}",
            axum::routing::post(move |s: State<Arc<ServiceState>>, p: Path<(u64, u64)>| call(s, p, latency_ms)),
        )
        .route("/stats", axum::routing::get(stats))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    println!("{}", listener.local_addr().expect("addr").port());
    let _ = axum::serve(listener, app).await;
}

// ---------------------------------------------------------------- the harness (parent)

struct Service {
    child: std::process::Child,
    base: String,
}

impl Service {
    fn start(latency_ms: u64) -> Service {
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("current exe");
        let mut child = std::process::Command::new(exe)
            .env("WEIR_SLOW_CALLS_SERVE", latency_ms.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn the service");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("port");
        Service { child, base: format!("http://127.0.0.1:{}", line.trim()) }
    }
    async fn stats(&self) -> serde_json::Value {
        let text = reqwest::get(format!("{}/stats", self.base)).await.expect("stats").text().await.expect("body");
        serde_json::from_str(&text).expect("stats json")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn topology(base: &str, concurrency: u32, max_in_flight: u32) -> String {
    format!(
        r#"
transport: embedded
embedded: {{durable: false, max_records_per_partition: 2000000}}
topics:
  calls: {{partitions: {PARTITIONS}}}
  answers: {{partitions: {PARTITIONS}}}
  dlq: {{partitions: 1}}
stages:
  call:
    kind: http
    from: calls
    to: answers
    dlq: dlq
    concurrency: {concurrency}
    max_in_flight: {max_in_flight}
    timeout: 30s
    retry: {{attempts: 3, backoff: fixed, initial: 100ms, max: 1s}}
    config:
      url: "{base}/call/{{k}}/{{seq}}"
      method: POST
      into: reply
"#
    )
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn outgoing(k: u64, seq: u64) -> OutgoingRecord {
    let payload = serde_json::json!({"k": k, "seq": seq, "t": now_ms()}).to_string();
    OutgoingRecord {
        topic: "calls".into(),
        partition: None,
        key: Some(Bytes::from(format!("key-{k}"))),
        headers: Headers::default(),
        payload: Bytes::from(payload),
    }
}

struct Outcome {
    rate: f64,
    violations: u64,
    repeats: u64,
    peak: i64,
    p99_cold_ms: Option<i64>,
    p50_cold_ms: Option<i64>,
    rss_peak_mib: u64,
    records: u64,
}

/// Runs one case: `records` (key, seq) pairs, produced all at once (`rate` None) or at a
/// fixed rate; returns what the outputs and the service saw.
async fn run_case(latency_ms: u64, records: Vec<(u64, u64)>, rate: Option<f64>, cold_from_rank: Option<u64>) -> Outcome {
    let service = Service::start(latency_ms);
    let env = |_: &str| None;
    let registry = Registry::builtin();
    let (concurrency, max_in_flight) = (10_000, 5_000);
    let text = topology(&service.base, concurrency, max_in_flight);
    let t = Topology::parse("slow_calls.yaml", &text, &env, &registry).expect("topology");
    let mut opts = NodeOptions::new(t.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = std::env::temp_dir().join("weir-bench-slow-calls");
    let node = runtime::start(opts).await.expect("node");
    let transport = node.transport.clone();
    let n = records.len() as u64;
    // With skewed keys the hot keys' backlog takes far longer than the feed (rank 1 gets
    // ~10 % of the records at 1/L each): the case ends once every cold-key record is out.
    let cold_expected = cold_from_rank.map(|r| records.iter().filter(|(k, _)| *k >= r).count());

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, i64, u64)>();
    for p in 0..PARTITIONS as i32 {
        let mut r = transport.reader(&TopicPartition::new("answers", p), StartFrom::Earliest).await.expect("reader");
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(rec) = r.next().await {
                let v: serde_json::Value = serde_json::from_slice(&rec.payload).unwrap_or_default();
                let sent = v["t"].as_i64().unwrap_or(0);
                let k = v["k"].as_u64().unwrap_or(0);
                if tx.send((Instant::now(), now_ms() - sent, k)).is_err() {
                    break;
                }
            }
        });
    }
    let producer = transport.producer();
    let feeder = tokio::spawn(async move {
        let started = Instant::now();
        for (i, (k, seq)) in records.into_iter().enumerate() {
            if let Some(r) = rate {
                let due = started + Duration::from_secs_f64(i as f64 / r);
                tokio::time::sleep_until(due.into()).await;
            }
            producer.send(outgoing(k, seq)).await.expect("send");
        }
    });
    let mut times = Vec::with_capacity(n as usize);
    let mut cold = Vec::new();
    let mut rss_peak = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    while (times.len() as u64) < n && Instant::now() < deadline && cold_expected.is_none_or(|c| cold.len() < c) {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some((at, latency, k))) => {
                times.push(at);
                if cold_from_rank.is_some_and(|r| k >= r) {
                    cold.push(latency);
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
        if times.len() % 10_000 == 0 {
            rss_peak = rss_peak.max(rss_kib().0);
        }
    }
    feeder.abort();
    rss_peak = rss_peak.max(rss_kib().1);
    let got = times.len();
    let (a, b) = (got / 10, (got * 9 / 10).max(1) - 1);
    let rate_out = if b > a { (b - a) as f64 / (times[b] - times[a]).as_secs_f64() } else { 0.0 };
    let stats = service.stats().await;
    cold.sort_unstable();
    let pct = |p: f64| (!cold.is_empty()).then(|| cold[((cold.len() as f64 * p) as usize).min(cold.len() - 1)]);
    node.shutdown().await;
    if (got as u64) < n {
        println!("  ({got} of {n} outputs when the case ended; the rest are hot keys' backlog)");
    }
    Outcome {
        rate: rate_out,
        violations: stats["violations"].as_u64().unwrap_or(0),
        repeats: stats["repeats"].as_u64().unwrap_or(0),
        peak: stats["peak"].as_i64().unwrap_or(0),
        p99_cold_ms: pct(0.99),
        p50_cold_ms: pct(0.50),
        rss_peak_mib: rss_peak / 1024,
        records: got as u64,
    }
}

/// `rounds` rounds of every key once, shuffled within the round; seq = the round.
fn uniform(rounds: u64, rng: &mut Rng) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity((rounds * KEYS) as usize);
    for r in 0..rounds {
        let mut keys: Vec<u64> = (0..KEYS).collect();
        for i in (1..keys.len()).rev() {
            keys.swap(i, (rng.next() % (i as u64 + 1)) as usize);
        }
        out.extend(keys.into_iter().map(|k| (k, r)));
    }
    out
}

/// `n` draws of Zipf(1.0) over the keys (key = rank − 1); seq counts per key.
fn zipf(n: u64, rng: &mut Rng) -> Vec<(u64, u64)> {
    let weights: Vec<f64> = (1..=KEYS).map(|r| 1.0 / r as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(weights.len());
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut seq = vec![0u64; KEYS as usize];
    (0..n)
        .map(|_| {
            let u = rng.unit();
            let k = cdf.partition_point(|&c| c < u).min(KEYS as usize - 1);
            seq[k] += 1;
            (k as u64, seq[k])
        })
        .collect()
}

fn print(label: &str, latency_ms: u64, o: &Outcome, target: &str) {
    let bound = PARTITIONS as f64 / (latency_ms as f64 / 1000.0);
    let cold = match (o.p50_cold_ms, o.p99_cold_ms) {
        (Some(p50), Some(p99)) => format!("cold keys p50 {p50} ms p99 {p99} ms"),
        _ => "-".into(),
    };
    println!(
        "{label:<22} L={latency_ms:>4} ms  {:>8.0} rec/s (partition-serial bound {bound:.0}/s, {:.0}×)  records {}  order violations {}  repeats {}  peak in flight {}  {cold}  peak RSS {} MiB  target {target}",
        o.rate,
        o.rate / bound,
        o.records,
        o.violations,
        o.repeats,
        o.peak,
        o.rss_peak_mib
    );
}

fn main() {
    if let Ok(latency) = std::env::var("WEIR_SLOW_CALLS_SERVE") {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
        rt.block_on(serve(latency.parse().unwrap_or(100)));
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: u64 = std::env::var("WEIR_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        println!("slow calls: {PARTITIONS} partitions, {KEYS} keys, concurrency 10000, max_in_flight 5000 per partition, embedded in memory");
        let o = run_case(1000, uniform(rounds, &mut rng), None, None).await;
        print("uniform", 1000, &o, "≥ 9000 rec/s, 0 violations");
        let o = run_case(100, uniform(rounds * 2, &mut rng), None, None).await;
        print("uniform", 100, &o, "≥ 20000 rec/s");
        // Offered so that keys past the top 1 % stay unsaturated (rank 101 gets ~0.1 % of it).
        let o = run_case(1000, zipf(5_000, &mut rng), Some(250.0), Some(100)).await;
        print("zipf(1.0) @ 250/s", 1000, &o, "cold p99 ≤ 2000 ms");
        let o = run_case(100, zipf(50_000, &mut rng), Some(2500.0), Some(100)).await;
        print("zipf(1.0) @ 2500/s", 100, &o, "cold p99 ≤ 200 ms");
    });
}
