//! Counters the actors keep per stage and per node. Tests read them to check that records
//! add up; the metrics endpoint (`telemetry::metrics`) renders them at scrape time, so the
//! record path only touches atomics (and a histogram per stage).

use crate::envelope::TopicPartition;
use dashmap::DashMap;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Seconds, 1 ms .. ~65 s: stage handling and end-to-end latency.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Per-partition gauges a partition consumer keeps current.
#[derive(Debug, Default)]
pub struct PartitionGauges {
    /// Records delivered to the stage and not yet complete.
    pub in_flight: AtomicI64,
    /// The committed (next) offset; -1 until the first commit.
    pub committed: AtomicI64,
}

/// Failure and transport counters by class, for `weir_records_failed_total` and
/// `weir_transport_errors_total`.
#[derive(Debug, Default)]
pub struct FailureStats {
    pub transient: AtomicU64,
    pub permanent: AtomicU64,
    pub enqueue_errors: AtomicU64,
    pub delivery_errors: AtomicU64,
    pub commit_errors: AtomicU64,
    pub consume_errors: AtomicU64,
}

#[derive(Debug)]
pub struct StageStats {
    /// Records handed to the stage (redeliveries count again).
    pub consumed: AtomicU64,
    /// Records whose outputs were all accepted (or that had none).
    pub completed: AtomicU64,
    /// Records emitted to output topics.
    pub produced: AtomicU64,
    /// Outputs marked as business outcomes.
    pub business: AtomicU64,
    /// Handle attempts that failed transiently and were retried.
    pub retried: AtomicU64,
    /// Records routed to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Records with a permanent failure and no DLQ configured (logged, then skipped).
    pub dropped: AtomicU64,
    /// Times the stage panicked.
    pub panics: AtomicU64,
    /// Committed offsets, per "topic[partition]".
    pub committed: DashMap<String, AtomicI64>,
    /// Woken on every commit, so tests and status readers can await progress.
    pub commit_notify: tokio::sync::Notify,
    /// Consumed, produced and dead-lettered records by topic.
    pub consumed_by_topic: DashMap<Arc<str>, AtomicU64>,
    pub produced_by_topic: DashMap<String, AtomicU64>,
    pub dead_lettered_by_topic: DashMap<String, AtomicU64>,
    pub failures: FailureStats,
    /// Supervisor restarts of this stage.
    pub restarts: AtomicU64,
    /// Nanoseconds records waited for the stage's rate limit.
    pub rate_limit_wait_ns: AtomicU64,
    /// Handle + queueing outputs, per record (seconds).
    pub processing: Histogram,
    /// From the flow's origin (ingress) to this stage's outputs being accepted (seconds).
    pub end_to_end: Histogram,
    pub partitions: DashMap<TopicPartition, Arc<PartitionGauges>>,
    /// The stage's consumer group (set when the stage starts), for lag labels.
    pub group: std::sync::OnceLock<String>,
    /// The stage's consumer has joined its group at least once (readiness).
    pub joined: std::sync::atomic::AtomicBool,
    /// Exactly-once transactions that failed to commit and were aborted (their records
    /// are processed again from the last committed offsets).
    pub transaction_aborts: AtomicU64,
    /// Of those, the ones where another instance with the same `transactional.id` took
    /// over (fenced): the member stops and the supervisor restarts it.
    pub transactions_fenced: AtomicU64,
    /// Records whose outputs were refused because their partition had been revoked
    /// (still running at the drain deadline); the partition's next owner handles them.
    pub fenced_records: AtomicU64,
    /// The stage's circuit breaker: 0 closed, 1 open, 2 half-open; -1 when it has none.
    pub circuit_state: AtomicI64,
    /// Times the breaker opened (including re-openings after a failed probe).
    pub circuit_opens: AtomicU64,
    /// Woken on every breaker transition, so tests and readers can await one.
    pub circuit_notify: tokio::sync::Notify,
    /// Attempts cancelled by the stage's `timeout` (counted as transient failures).
    pub timeouts: AtomicU64,
    /// Revocation acknowledgements: (partition, wall-clock ms just before the ack), in
    /// order. Bounded: only the last [`REVOCATION_LOG`] are kept.
    pub revocations: std::sync::Mutex<std::collections::VecDeque<(TopicPartition, i64)>>,
}

/// How many revocation acknowledgements [`StageStats::revocations`] keeps.
pub const REVOCATION_LOG: usize = 1024;

impl Default for StageStats {
    fn default() -> Self {
        StageStats {
            consumed: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            produced: AtomicU64::new(0),
            business: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            committed: DashMap::new(),
            commit_notify: tokio::sync::Notify::new(),
            consumed_by_topic: DashMap::new(),
            produced_by_topic: DashMap::new(),
            dead_lettered_by_topic: DashMap::new(),
            failures: FailureStats::default(),
            restarts: AtomicU64::new(0),
            rate_limit_wait_ns: AtomicU64::new(0),
            processing: latency_histogram(),
            end_to_end: latency_histogram(),
            partitions: DashMap::new(),
            group: std::sync::OnceLock::new(),
            joined: std::sync::atomic::AtomicBool::new(false),
            transaction_aborts: AtomicU64::new(0),
            transactions_fenced: AtomicU64::new(0),
            fenced_records: AtomicU64::new(0),
            circuit_state: AtomicI64::new(-1),
            circuit_opens: AtomicU64::new(0),
            circuit_notify: tokio::sync::Notify::new(),
            timeouts: AtomicU64::new(0),
            revocations: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

impl StageStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn set_committed(&self, partition: &str, next_offset: i64) {
        self.committed
            .entry(partition.to_string())
            .or_insert_with(|| AtomicI64::new(0))
            .store(next_offset, Ordering::Relaxed);
        self.commit_notify.notify_waiters();
    }

    /// Counts one record on `topic` in a by-topic map (allocates only for a new topic).
    pub fn add_by_topic<K>(map: &DashMap<K, AtomicU64>, topic: &str, n: u64)
    where
        K: std::hash::Hash + Eq + std::borrow::Borrow<str> + for<'a> From<&'a str>,
    {
        match map.get(topic) {
            Some(c) => {
                c.fetch_add(n, Ordering::Relaxed);
            }
            None => {
                map.entry(K::from(topic)).or_default().fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Fresh gauges for a partition this node now consumes (replacing a predecessor's).
    pub fn partition(&self, tp: &TopicPartition) -> Arc<PartitionGauges> {
        let gauges = Arc::new(PartitionGauges { in_flight: AtomicI64::new(0), committed: AtomicI64::new(-1) });
        self.partitions.insert(tp.clone(), gauges.clone());
        gauges
    }

    /// The partition left this node: its lag is another member's to report.
    pub fn release_partition(&self, tp: &TopicPartition, gauges: &Arc<PartitionGauges>) {
        self.partitions.remove_if(tp, |_, g| Arc::ptr_eq(g, gauges));
    }

    /// Notes that this member is about to acknowledge the revocation of `tps`.
    pub fn note_revoked(&self, tps: &[TopicPartition], at_ms: i64) {
        let mut log = self.revocations.lock().unwrap_or_else(|p| p.into_inner());
        for tp in tps {
            if log.len() >= REVOCATION_LOG {
                log.pop_front();
            }
            log.push_back((tp.clone(), at_ms));
        }
    }

    /// The acknowledgements noted so far.
    pub fn revocations(&self) -> Vec<(TopicPartition, i64)> {
        self.revocations.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    pub fn committed_offset(&self, partition: &str) -> Option<i64> {
        self.committed.get(partition).map(|c| c.load(Ordering::Relaxed))
    }

    /// Waits until the circuit breaker's gauge satisfies `pred` (0 closed, 1 open, 2 half-open).
    pub async fn wait_circuit(&self, pred: impl Fn(i64) -> bool) {
        loop {
            let notified = self.circuit_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if pred(self.circuit_state.load(Ordering::Relaxed)) {
                return;
            }
            notified.await;
        }
    }

    /// Waits until `partition`'s committed offset reaches `at_least`.
    pub async fn wait_committed(&self, partition: &str, at_least: i64) {
        loop {
            let notified = self.commit_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.committed_offset(partition).is_some_and(|c| c >= at_least) {
                return;
            }
            notified.await;
        }
    }
}

/// Counters of a whole node, by stage.
#[derive(Debug, Default)]
pub struct NodeStats {
    pub stages: DashMap<String, Arc<StageStats>>,
    pub restarts: AtomicU64,
    /// HTTP ingress requests by (ingress listener names, status code).
    pub ingress_requests: DashMap<(String, u16), AtomicU64>,
}

impl NodeStats {
    pub fn stage(&self, name: &str) -> Arc<StageStats> {
        self.stages.entry(name.to_string()).or_default().clone()
    }
}
