//! Counters the actors keep per stage and per node. Tests read them to check that records
//! add up; the metrics endpoint exports them.

use dashmap::DashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
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

    pub fn committed_offset(&self, partition: &str) -> Option<i64> {
        self.committed.get(partition).map(|c| c.load(Ordering::Relaxed))
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
}

impl NodeStats {
    pub fn stage(&self, name: &str) -> Arc<StageStats> {
        self.stages.entry(name.to_string()).or_default().clone()
    }
}
