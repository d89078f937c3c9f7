//! The embedded transport: an in-process partitioned log with Kafka's semantics (keyed
//! murmur2 partitioning, consumer groups with committed offsets, record headers, bounded
//! retention with producer backpressure).
//!
//! Data lives in memory only and is gone when the process exits; it serves one process.
//! Use `transport: kafka` for anything that must survive a restart or span nodes.

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
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

#[derive(Clone)]
pub struct EmbeddedTransport {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
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

impl EmbeddedTransport {
    /// `capacity`: records kept per partition before producers wait.
    pub fn new(capacity: u64) -> Self {
        EmbeddedTransport {
            inner: Arc::new(Inner {
                capacity: usize::try_from(capacity).unwrap_or(usize::MAX),
                topics: DashMap::new(),
                groups: DashMap::new(),
                round_robin: AtomicU32::new(0),
            }),
        }
    }

    fn partition(&self, tp: &TopicPartition) -> Result<Arc<PartitionLog>, TransportError> {
        let parts = self.inner.partitions(&tp.topic)?;
        usize::try_from(tp.partition)
            .ok()
            .and_then(|i| parts.get(i).cloned())
            .ok_or_else(|| TransportError::UnknownPartition { topic: tp.topic.to_string(), partition: tp.partition })
    }

    async fn append(&self, parts: Vec<Arc<PartitionLog>>, record: OutgoingRecord) -> Result<Delivery, TransportError> {
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
            .await;
        Ok(Delivery { partition, offset })
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
        let delivery = self.append(parts, record).await;
        Ok(futures::future::ready(delivery).boxed())
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), TransportError> {
        Ok(())
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
            let parts = (0..t.partitions.max(1))
                .map(|p| {
                    Arc::new(PartitionLog::new(
                        TopicPartition::new(&t.name, p),
                        self.inner.capacity,
                        t.reader_groups.clone(),
                    ))
                })
                .collect();
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
