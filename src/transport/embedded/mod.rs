//! The embedded transport: an in-process partitioned log with Kafka's semantics (keyed
//! murmur2 partitioning, consumer groups with committed offsets, record headers, bounded
//! retention with producer backpressure). It serves one process.
//!
//! Two modes:
//! - [`EmbeddedTransport::new`]: memory only, gone when the process exits (tests, benches).
//! - [`EmbeddedTransport::open`]: the same log also kept on disk under
//!   `<data dir>/log/` (see [`disk`]): a record is in the OS before its delivery resolves,
//!   everything is fsynced every `sync_interval` and on close, and committed offsets are
//!   written beside the segments after the data they cover. Reopening restores records,
//!   end offsets and committed offsets, so groups resume where they committed.

mod disk;
mod group;
mod log;

use self::group::{GroupCoordinator, Logs};
use self::log::{PartitionLog, Stored};
use super::partitioner::partition_for_key;
use super::{
    Delivery, DeliveryFuture, EnqueueError, GroupMember, PartitionStream, Producer, StartFrom, Transport, TransportError,
};
use crate::envelope::{now_ms, OutgoingRecord, TopicPartition};
use crate::topology::plan::TopicPlan;
use async_trait::async_trait;
use dashmap::DashMap;
use futures::FutureExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use self::disk::DiskError;

/// How a durable embedded log keeps its files.
#[derive(Debug, Clone, Copy)]
pub struct DurableOptions {
    /// How often everything written is fsynced (the window a power loss can take).
    pub sync_interval: Duration,
    /// A partition's segment file rolls at this size; whole old segments are deleted once
    /// every reading group committed past them.
    pub segment_bytes: u64,
}

impl Default for DurableOptions {
    fn default() -> Self {
        DurableOptions { sync_interval: Duration::from_secs(1), segment_bytes: 64 * 1024 * 1024 }
    }
}

#[derive(Clone)]
pub struct EmbeddedTransport {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    /// `Some`: partitions live in `<root>/log/<topic>/<partition>/`.
    durable: Option<(PathBuf, DurableOptions)>,
    /// Dropped with the transport, which ends the sync thread.
    _sync_stop: Option<std::sync::mpsc::Sender<()>>,
    topics: DashMap<String, Arc<Vec<Arc<PartitionLog>>>>,
    groups: DashMap<String, Arc<GroupCoordinator>>,
    /// Spreads records without a key over partitions.
    round_robin: AtomicU32,
}

impl Logs for Inner {
    fn partitions(&self, topic: &str) -> Result<Vec<Arc<PartitionLog>>, TransportError> {
        self.topics
            .get(topic)
            .map(|p| p.as_ref().clone())
            .ok_or_else(|| TransportError::UnknownTopic(topic.to_string()))
    }
}

impl Inner {
    fn all_partitions(&self) -> Vec<Arc<PartitionLog>> {
        self.topics.iter().flat_map(|t| t.value().as_ref().clone()).collect()
    }

    /// One sync round: take every partition's changed committed offsets, then flush and
    /// fsync every partition's data, then write the offsets (after the data they cover).
    fn sync_all(&self) -> Result<(), DiskError> {
        let parts = self.all_partitions();
        let offsets: Vec<_> = parts.iter().filter_map(|p| p.take_offsets().map(|o| (p, o))).collect();
        let mut first_error = None;
        for p in &parts {
            let synced = match p.prepare_data_sync() {
                None => continue,
                Some(prepared) => prepared.and_then(|data| data.run()),
            };
            if let Err(e) = synced {
                p.mark_unsynced();
                first_error.get_or_insert(e);
            }
        }
        // An offset is written only if every partition's data made it: the outputs it
        // covers may be on any of them.
        for (p, o) in &offsets {
            let written = match &first_error {
                Some(_) => Ok(false),
                None => o.run().map(|()| true),
            };
            match written {
                Ok(true) => {}
                Ok(false) => p.mark_unsynced(),
                Err(e) => {
                    p.mark_unsynced();
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.durable.is_some() {
            if let Err(e) = self.sync_all() {
                tracing::error!(error = %e, "final sync of the embedded log failed");
            }
        }
    }
}

impl EmbeddedTransport {
    /// In memory only. `capacity`: records kept per partition before producers wait.
    pub fn new(capacity: u64) -> Self {
        EmbeddedTransport {
            inner: Arc::new(Inner {
                capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
                durable: None,
                _sync_stop: None,
                topics: DashMap::new(),
                groups: DashMap::new(),
                round_robin: AtomicU32::new(0),
            }),
        }
    }

    /// Kept on disk under `<data_dir>/log/`; topics reopen in [`Transport::ensure_topics`].
    /// Starts a thread that fsyncs every `options.sync_interval`.
    pub fn open(data_dir: &Path, capacity: u64, options: DurableOptions) -> Result<Self, DiskError> {
        let root = data_dir.join("log");
        std::fs::create_dir_all(&root).map_err(|source| DiskError { path: root.clone(), source })?;
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let inner = Arc::new(Inner {
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
            durable: Some((root.clone(), options)),
            _sync_stop: Some(stop_tx),
            topics: DashMap::new(),
            groups: DashMap::new(),
            round_robin: AtomicU32::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let interval = options.sync_interval.max(Duration::from_millis(1));
        std::thread::Builder::new()
            .name("weir-log-sync".into())
            .spawn(move || sync_loop(&weak, &stop_rx, interval))
            .map_err(|source| DiskError { path: root.clone(), source })?;
        tracing::info!(dir = %root.display(), sync_interval = ?interval, "embedded log kept on disk");
        Ok(EmbeddedTransport { inner })
    }

    /// Fsyncs everything written so far and the committed offsets (no-op in memory).
    pub fn sync(&self) -> Result<(), DiskError> {
        self.inner.sync_all()
    }

    fn partition(&self, tp: &TopicPartition) -> Result<Arc<PartitionLog>, TransportError> {
        let parts = self.inner.partitions(&tp.topic)?;
        usize::try_from(tp.partition)
            .ok()
            .and_then(|i| parts.get(i).cloned())
            .ok_or_else(|| TransportError::UnknownPartition { topic: tp.topic.to_string(), partition: tp.partition })
    }

    async fn append(&self, parts: &[Arc<PartitionLog>], record: OutgoingRecord) -> Result<Delivery, TransportError> {
        let n = i32::try_from(parts.len()).unwrap_or(i32::MAX);
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, n),
            (None, None) => (self.inner.round_robin.fetch_add(1, Ordering::Relaxed) % n.max(1) as u32) as i32,
        };
        let log = usize::try_from(partition)
            .ok()
            .and_then(|i| parts.get(i))
            .ok_or_else(|| TransportError::UnknownPartition { topic: record.topic.clone(), partition })?;
        let offset = log
            .append(Stored {
                key: record.key,
                headers: record.headers,
                payload: record.payload,
                timestamp_ms: now_ms(),
            })
            .await?;
        Ok(Delivery { partition, offset })
    }

    fn log_for(&self, parts: &[Arc<PartitionLog>], partition: i32) -> Option<Arc<PartitionLog>> {
        usize::try_from(partition).ok().and_then(|i| parts.get(i)).cloned()
    }
}

fn sync_loop(inner: &Weak<Inner>, stop: &std::sync::mpsc::Receiver<()>, interval: Duration) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            // The transport is gone (its drop did the final sync).
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.sync_all() {
            tracing::error!(error = %e, "syncing the embedded log failed; retrying at the next interval");
        }
    }
}

#[async_trait]
impl Producer for EmbeddedTransport {
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, EnqueueError> {
        // Appending is the acceptance: the returned future is already complete.
        let parts = match self.inner.partitions(&record.topic) {
            Ok(p) => p,
            Err(error) => return Err(EnqueueError { error, record }),
        };
        let delivery = match self.append(&parts, record).await {
            Ok(d) => d,
            Err(e) => return Ok(futures::future::ready(Err(e)).boxed()),
        };
        if self.inner.durable.is_none() {
            return Ok(futures::future::ready(Ok(delivery)).boxed());
        }
        // Accepted once in the OS: a process kill then loses nothing acknowledged. Writing
        // when the delivery is awaited lets records enqueued together share one write.
        let log = self.log_for(&parts, delivery.partition);
        Ok(async move {
            match log {
                Some(log) => log.ensure_written(delivery.offset).map(|()| delivery),
                None => Ok(delivery),
            }
        }
        .boxed())
    }

    async fn flush(&self, timeout: Duration) -> Result<(), TransportError> {
        if self.inner.durable.is_none() {
            return Ok(());
        }
        let inner = self.inner.clone();
        let sync = tokio::task::spawn_blocking(move || inner.sync_all());
        match tokio::time::timeout(timeout, sync).await {
            Err(_) => Err(TransportError::Timeout(timeout)),
            Ok(Err(join)) => Err(TransportError::Unavailable(format!("syncing the embedded log: {join}"))),
            Ok(Ok(Err(e))) => Err(TransportError::Unavailable(format!("syncing the embedded log: {e}"))),
            Ok(Ok(Ok(()))) => Ok(()),
        }
    }
}

#[async_trait]
impl Transport for EmbeddedTransport {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ensure_topics(&self, topics: &[TopicPlan]) -> Result<(), TransportError> {
        for t in topics {
            if let Some(existing) = self.inner.topics.get(&t.name) {
                if existing.len() != t.partitions.max(1) as usize {
                    return Err(TransportError::Rejected(format!(
                        "topic `{}` exists with {} partitions, not {}",
                        t.name,
                        existing.len(),
                        t.partitions
                    )));
                }
                continue;
            }
            let mut parts = Vec::new();
            for p in 0..t.partitions.max(1) {
                let tp = TopicPartition::new(&t.name, p);
                let log = match &self.inner.durable {
                    None => PartitionLog::new(tp, self.inner.capacity, t.reader_groups.clone()),
                    Some((root, options)) => {
                        let dir = partition_dir(root, &t.name, p)?;
                        PartitionLog::open(tp, self.inner.capacity, t.reader_groups.clone(), &dir, options.segment_bytes)
                            .map_err(|e| TransportError::Rejected(format!("opening the embedded log: {e}")))?
                    }
                };
                parts.push(Arc::new(log));
            }
            self.inner.topics.insert(t.name.clone(), Arc::new(parts));
        }
        Ok(())
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, TransportError> {
        Ok(i32::try_from(self.inner.partitions(topic)?.len()).unwrap_or(i32::MAX))
    }

    fn producer(&self) -> Arc<dyn Producer> {
        Arc::new(self.clone())
    }

    async fn join(
        &self,
        group: &str,
        topics: &[String],
        member_id: &str,
        _transaction: Option<Arc<dyn super::Transaction>>,
    ) -> Result<Box<dyn GroupMember>, TransportError> {
        let coordinator = self
            .inner
            .groups
            .entry(group.to_string())
            .or_insert_with(|| {
                let logs: Weak<dyn Logs> = Arc::downgrade(&self.inner) as Weak<dyn Logs>;
                GroupCoordinator::new(group, logs)
            })
            .clone();
        Ok(Box::new(coordinator.join(member_id, topics).await?))
    }

    async fn reader(&self, tp: &TopicPartition, from: StartFrom) -> Result<Box<dyn PartitionStream>, TransportError> {
        let log = self.partition(tp)?;
        let start = match from {
            StartFrom::Earliest => log.earliest(),
            StartFrom::Latest => log.end_offset(),
            StartFrom::Offset(o) => o,
        };
        Ok(Box::new(log.stream(start)))
    }

    async fn committed(&self, group: &str, tp: &TopicPartition) -> Result<Option<i64>, TransportError> {
        Ok(self.partition(tp)?.committed(group))
    }

    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64), TransportError> {
        let log = self.partition(tp)?;
        Ok((log.earliest(), log.end_offset()))
    }
}

/// `<root>/<topic>/<partition>`; a topic name that is not a plain file name is refused
/// rather than allowed to write outside the log directory.
fn partition_dir(root: &Path, topic: &str, partition: i32) -> Result<PathBuf, TransportError> {
    let plain = !topic.is_empty()
        && topic != "."
        && topic != ".."
        && topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        return Err(TransportError::Rejected(format!(
            "topic `{topic}` cannot be kept on disk: use letters, digits, `.`, `_` and `-`"
        )));
    }
    Ok(root.join(topic).join(partition.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Headers;
    use crate::topology::plan::PayloadDecl;
    use crate::transport::GroupEvent;

    fn topic(name: &str, partitions: i32, group: &str) -> TopicPlan {
        TopicPlan {
            name: name.into(),
            partitions,
            retention: None,
            cleanup_policy: Default::default(),
            replication_factor: None,
            compression: None,
            payload: PayloadDecl::Any,
            reader_groups: [group.to_string()].into(),
        }
    }

    fn record(partition: i32, n: u8) -> OutgoingRecord {
        OutgoingRecord {
            topic: "t".into(),
            partition: Some(partition),
            key: None,
            headers: Headers::new(),
            payload: bytes::Bytes::from(vec![n]),
        }
    }

    async fn open(dir: &Path) -> EmbeddedTransport {
        let options = DurableOptions { sync_interval: Duration::from_secs(3600), segment_bytes: 1 << 20 };
        let t = EmbeddedTransport::open(dir, 100, options).expect("opens");
        t.ensure_topics(&[topic("t", 2, "g")]).await.expect("topics");
        t
    }

    /// A restarted transport on the same directory: a group resumes at its committed
    /// offsets and reads what was appended after them.
    #[tokio::test]
    async fn a_group_resumes_from_its_committed_offsets_after_reopen() {
        let tmp = tempfile::tempdir().expect("tmp");
        {
            let t = open(tmp.path()).await;
            let p = t.producer();
            for n in 0..4 {
                p.send(record(0, n)).await.expect("send");
                p.send(record(1, 10 + n)).await.expect("send");
            }
            let mut member = t.join("g", &["t".to_string()], "m1", None).await.expect("join");
            let GroupEvent::Assigned(parts) = member.next_event().await.expect("event") else { panic!("assigned") };
            for part in &parts {
                if part.stream.topic_partition().partition == 0 {
                    part.committer.commit(part.stream.topic_partition(), 3).await.expect("commit");
                }
            }
            // The shutdown path: the supervisor flushes the producer, which syncs.
            p.flush(Duration::from_secs(5)).await.expect("synced");
        }
        let t = open(tmp.path()).await;
        assert_eq!(t.committed("g", &TopicPartition::new("t", 0)).await, Ok(Some(3)));
        assert_eq!(t.committed("g", &TopicPartition::new("t", 1)).await, Ok(None));
        assert_eq!(t.end_offset(&TopicPartition::new("t", 1)).await, Ok(4));
        let mut member = t.join("g", &["t".to_string()], "m1", None).await.expect("join");
        let GroupEvent::Assigned(mut parts) = member.next_event().await.expect("event") else { panic!("assigned") };
        parts.sort_by_key(|p| p.stream.topic_partition().partition);
        let first = parts[0].stream.next().await.expect("record");
        assert_eq!((first.offset, first.payload.as_ref()), (3, &[3u8][..]));
        let first = parts[1].stream.next().await.expect("record");
        assert_eq!((first.offset, first.payload.as_ref()), (0, &[10u8][..]));
        // New records continue the restored offsets.
        assert_eq!(t.producer().send(record(0, 9)).await.map(|d| d.offset), Ok(4));
    }
}
