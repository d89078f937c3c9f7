//! Helpers for tests against the real broker (`WEIR_KAFKA_BROKERS`, started by
//! scripts/test.sh): unique topics per test, a producer, a verifier that reads a topic
//! (read_committed) and counts lost, duplicated and out-of-order records, and `weir run`
//! worker processes.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use weir::envelope::{OutgoingRecord, Record, TopicPartition};
use weir::topology::plan::TopicPlan;
use weir::topology::spec::KafkaSpec;
use weir::transport::kafka::KafkaTransport;
use weir::transport::{StartFrom, Transport};

pub const BIN: &str = env!("CARGO_BIN_EXE_weir");

pub fn brokers() -> String {
    std::env::var("WEIR_KAFKA_BROKERS")
        .expect("WEIR_KAFKA_BROKERS is not set: run the tests with scripts/test.sh, which starts a local broker")
}

/// A prefix that makes this test's topics and groups its own.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

pub fn spec() -> KafkaSpec {
    KafkaSpec { brokers: Some(brokers()), auto_create_topics: true, ..KafkaSpec::default() }
}

pub fn transport() -> Arc<dyn Transport> {
    Arc::new(KafkaTransport::connect(&spec(), "weir-test").expect("kafka transport"))
}

pub fn topic(name: &str, partitions: i32) -> TopicPlan {
    TopicPlan::bare(name, partitions)
}

pub fn record(topic: &str, id: u64, key: &str, seq: u64) -> OutgoingRecord {
    let payload = serde_json::json!({"id": id, "key": key, "seq": seq});
    let mut headers = weir::envelope::Headers::new();
    weir::envelope::stamp_origin(&mut headers, "test", None);
    OutgoingRecord {
        topic: topic.to_string(),
        partition: None,
        key: Some(bytes::Bytes::from(key.to_string())),
        headers,
        payload: bytes::Bytes::from(serde_json::to_vec(&payload).expect("json")),
    }
}

/// Produces ids `from..to` over `keys` keys (seq = position of the id within its key).
pub async fn produce_range(t: &Arc<dyn Transport>, topic: &str, from: u64, to: u64, keys: u64) {
    let producer = t.producer();
    let mut acks = Vec::with_capacity((to - from) as usize);
    for id in from..to {
        let k = id % keys;
        acks.push(producer.enqueue(record(topic, id, &format!("key-{k}"), id / keys)).await.expect("enqueue"));
    }
    for a in acks {
        a.await.expect("acked");
    }
}

/// Reads `topic` (all partitions, from the start) until `expected` distinct ids arrived.
/// Panics with the counts if they do not arrive within `within`.
pub async fn read_ids(t: &Arc<dyn Transport>, topic: &str, expected: usize, within: Duration) -> Vec<Record> {
    let parts = t.partition_count(topic).await.expect("topic");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for p in 0..parts {
        let mut r = t.reader(&TopicPartition::new(topic, p), StartFrom::Earliest).await.expect("reader");
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Ok(rec) = r.next().await {
                if tx.send(rec).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut got: Vec<Record> = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let res = tokio::time::timeout(within, async {
        while ids.len() < expected {
            match rx.recv().await {
                Some(r) => {
                    ids.insert(id_of(&r));
                    got.push(r);
                }
                None => break,
            }
        }
    })
    .await;
    for t in tasks {
        t.abort();
    }
    if res.is_err() || ids.len() < expected {
        panic!("`{topic}`: {} of {expected} distinct ids within {within:?}", ids.len());
    }
    got.sort_by_key(|r| (r.partition, r.offset));
    got
}

/// Appends a marker record (id `marker_id`) to each partition of `topic`, then reads every
/// partition from the start up to its marker: every record committed before the markers,
/// duplicates at a partition's tail included (which [`read_ids`] may stop short of).
pub async fn read_to_markers(t: &Arc<dyn Transport>, topic: &str, marker_id: u64) -> Vec<Record> {
    let parts = t.partition_count(topic).await.expect("topic");
    let producer = t.producer();
    let mut got = Vec::new();
    for part in 0..parts {
        let mut marker = record(topic, marker_id, "marker", 0);
        marker.partition = Some(part);
        producer.send(marker).await.expect("marker appended");
        let mut reader = t.reader(&TopicPartition::new(topic, part), StartFrom::Earliest).await.expect("reader");
        let read = async {
            loop {
                let r = reader.next().await.expect("read");
                if id_of(&r) == marker_id {
                    break;
                }
                got.push(r);
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read).await.expect("read up to the marker");
    }
    got
}

pub fn id_of(r: &Record) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("json");
    v["id"].as_u64().expect("id")
}

/// What a run delivered, compared with what was sent.
#[derive(Debug)]
pub struct Verdict {
    pub sent: usize,
    pub received: usize,
    pub distinct: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Keys whose records (first delivery of each) are not in `seq` order.
    pub keys_out_of_order: usize,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, received {} ({} distinct), lost {}, duplicated {}, keys out of order {}",
            self.sent, self.received, self.distinct, self.lost, self.duplicated, self.keys_out_of_order
        )
    }
}

pub fn verdict(sent: u64, out: &[Record]) -> Verdict {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    for r in out {
        let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("json");
        let id = v["id"].as_u64().expect("id");
        let first = !counts.contains_key(&id);
        *counts.entry(id).or_insert(0) += 1;
        if first {
            per_key.entry(v["key"].as_str().expect("key").to_string()).or_default().push(v["seq"].as_u64().expect("seq"));
        }
    }
    let lost = (0..sent).filter(|id| !counts.contains_key(id)).count();
    let duplicated = counts.values().map(|c| c - 1).sum();
    let keys_out_of_order = per_key.values().filter(|s| s.windows(2).any(|w| w[0] >= w[1])).count();
    Verdict { sent: sent as usize, received: out.len(), distinct: counts.len(), lost, duplicated, keys_out_of_order }
}

/// A `weir run` process; killed when dropped.
pub struct Worker {
    pub child: Option<Child>,
    pub name: String,
}

impl Worker {
    /// Starts `weir run -t file` (plus `args`) and waits until it logs that it runs.
    pub fn start(name: &str, file: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Worker {
        let mut cmd = Command::new(BIN);
        cmd.arg("run").arg("-t").arg(file).args(args);
        cmd.env("WEIR_LOG", std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into())).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("weir run starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let tag = name.to_string();
        std::thread::spawn(move || {
            let mut ready = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var("WEIR_TEST_ECHO").is_ok() {
                    eprintln!("[{tag}] {line}");
                }
                if line.contains("weir is running") {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        let mut w = Worker { child: Some(child), name: name.to_string() };
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            w.kill();
            panic!("worker {name} did not start within 60 s");
        }
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL: no drain, no commit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(c.wait());
        });
        rx.recv_timeout(Duration::from_secs(60)).ok().and_then(Result::ok)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes a topology file for a worker pipeline into `dir`.
/// A Kafka topology of one stage: `stage` reads `{p}-in` and writes `{p}-out` (both of
/// `partitions`) in group `{p}-{stage}`. `kafka` holds extra lines for the `kafka:` section
/// and `settings` the stage's own lines (kind, guarantee, …), each indented as they stand.
pub fn one_stage_topology(p: &str, partitions: i32, kafka: &str, stage: &str, settings: &str) -> String {
    format!(
        "name: {p}\ntransport: kafka\nkafka:\n  brokers: \"{b}\"\n  auto_create_topics: true\n{kafka}\
         topics:\n  {p}-in: {{partitions: {partitions}}}\n  {p}-out: {{partitions: {partitions}}}\n\
         stages:\n  {stage}:\n    from: {p}-in\n    to: {p}-out\n    group: {p}-{stage}\n{settings}",
        b = brokers()
    )
}

pub fn write_topology(dir: &std::path::Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("topology.yaml");
    std::fs::write(&path, yaml).expect("write topology");
    path
}
