//! The in-memory partitioned log: one [`PartitionLog`] per partition, each a bounded
//! queue of records with Kafka offsets, the committed offset of every group that read it,
//! and a high-watermark channel readers wait on.
//!
//! Retention: a partition holds at most `capacity` records. A record may be dropped only
//! once every group that reads the topic (from the topology) has committed past it; until
//! then a producer to a full partition waits (backpressure). Topics no group reads (DLQs
//! kept for people to inspect) drop their oldest records instead, like size retention.

use crate::envelope::{Headers, Record, TopicPartition};
use crate::transport::{PartitionStream, TransportError};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{watch, Notify};

#[derive(Debug)]
pub(crate) struct Stored {
    pub key: Option<Bytes>,
    pub headers: Headers,
    pub payload: Bytes,
    pub timestamp_ms: i64,
}

pub(crate) struct PartitionLog {
    pub tp: TopicPartition,
    state: Mutex<LogState>,
    /// The next offset to be written (Kafka's log end offset).
    end: watch::Sender<i64>,
    space: Notify,
}

struct LogState {
    base: i64,
    records: VecDeque<Arc<Stored>>,
    committed: HashMap<String, i64>,
    retaining_groups: BTreeSet<String>,
    capacity: usize,
}

impl PartitionLog {
    pub fn new(tp: TopicPartition, capacity: usize, retaining_groups: BTreeSet<String>) -> Self {
        let (end, _) = watch::channel(0);
        PartitionLog {
            tp,
            state: Mutex::new(LogState {
                base: 0,
                records: VecDeque::new(),
                committed: HashMap::new(),
                retaining_groups,
                capacity: capacity.max(1),
            }),
            end,
            space: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LogState> {
        // A poisoned lock only means another thread panicked while holding it; the state
        // itself is always consistent between statements, so keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends, waiting while the partition is full of records a group still needs.
    pub async fn append(&self, stored: Stored) -> i64 {
        let stored = Arc::new(stored);
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                st.evict();
                if st.records.len() < st.capacity {
                    st.records.push_back(stored);
                    let offset = st.base + st.records.len() as i64 - 1;
                    drop(st);
                    self.end.send_replace(offset + 1);
                    return offset;
                }
            }
            notified.await;
        }
    }

    pub fn commit(&self, group: &str, next_offset: i64) {
        let mut st = self.lock();
        st.committed.insert(group.to_string(), next_offset);
        let frees_space = st.retaining_groups.contains(group);
        drop(st);
        if frees_space {
            self.space.notify_waiters();
        }
    }

    pub fn committed(&self, group: &str) -> Option<i64> {
        self.lock().committed.get(group).copied()
    }

    pub fn end_offset(&self) -> i64 {
        *self.end.borrow()
    }

    pub fn earliest(&self) -> i64 {
        self.lock().base
    }

    /// A reader starting at `offset` (clamped to what is retained).
    pub fn stream(self: &Arc<Self>, offset: i64) -> EmbeddedPartitionStream {
        EmbeddedPartitionStream { log: self.clone(), position: offset, end: self.end.subscribe() }
    }

    fn read(&self, position: &mut i64) -> Option<Record> {
        let st = self.lock();
        if *position < st.base {
            tracing::warn!(partition = %self.tp, from = *position, to = st.base,
                "records were dropped by retention before this reader reached them");
            *position = st.base;
        }
        let idx = usize::try_from(*position - st.base).ok()?;
        let s = st.records.get(idx)?.clone();
        drop(st);
        let offset = *position;
        *position += 1;
        Some(Record {
            topic: self.tp.topic.clone(),
            partition: self.tp.partition,
            offset,
            key: s.key.clone(),
            headers: s.headers.clone(),
            payload: s.payload.clone(),
            timestamp_ms: s.timestamp_ms,
        })
    }
}

impl LogState {
    fn evict(&mut self) {
        let floor = if self.retaining_groups.is_empty() {
            None
        } else {
            // A reading group that never committed holds everything.
            Some(
                self.retaining_groups
                    .iter()
                    .map(|g| self.committed.get(g).copied().unwrap_or(self.base))
                    .min()
                    .unwrap_or(self.base),
            )
        };
        while self.records.len() >= self.capacity {
            if floor.is_some_and(|f| self.base >= f) {
                break;
            }
            self.records.pop_front();
            self.base += 1;
        }
    }
}

pub(crate) struct EmbeddedPartitionStream {
    log: Arc<PartitionLog>,
    position: i64,
    end: watch::Receiver<i64>,
}

#[async_trait]
impl PartitionStream for EmbeddedPartitionStream {
    fn topic_partition(&self) -> &TopicPartition {
        &self.log.tp
    }

    async fn next(&mut self) -> Result<Record, TransportError> {
        loop {
            if let Some(r) = self.log.read(&mut self.position) {
                return Ok(r);
            }
            let pos = self.position;
            self.end.wait_for(|end| *end > pos).await.map_err(|_| TransportError::Closed)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(n: u8) -> Stored {
        Stored { key: None, headers: Headers::new(), payload: Bytes::from(vec![n]), timestamp_ms: 0 }
    }

    #[tokio::test]
    async fn full_partition_waits_for_the_reading_group_to_commit() {
        let log = Arc::new(PartitionLog::new(TopicPartition::new("t", 0), 2, BTreeSet::from(["g".to_string()])));
        assert_eq!(log.append(stored(0)).await, 0);
        assert_eq!(log.append(stored(1)).await, 1);
        let l2 = log.clone();
        let third = tokio::spawn(async move { l2.append(stored(2)).await });
        // Let the producer run until it blocks: it must wait, nothing was committed.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!third.is_finished());
        assert_eq!(log.end_offset(), 2);
        log.commit("g", 1);
        assert_eq!(third.await.ok(), Some(2));
        assert_eq!(log.earliest(), 1);
    }

    #[tokio::test]
    async fn unread_topic_drops_oldest() {
        let log = Arc::new(PartitionLog::new(TopicPartition::new("dlq", 0), 2, BTreeSet::new()));
        for n in 0..5 {
            log.append(stored(n)).await;
        }
        assert_eq!(log.earliest(), 3);
        let mut s = log.stream(0);
        let r = s.next().await.map(|r| r.offset);
        assert_eq!(r, Ok(3));
    }
}
