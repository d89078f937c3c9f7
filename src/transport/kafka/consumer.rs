//! A stage's Kafka consumer: one consumer in the stage's group, one partition queue per
//! assigned partition (each read by its own partition consumer actor), and a thread of
//! its own that polls the main queue so rebalance callbacks run — and may block there
//! while the runtime drains revoked partitions.
//!
//! Assignment: in `post_rebalance` each new partition's queue is split off and handed to
//! the runtime. A message fetched before its queue was split lands on the main queue; it
//! is put in that partition's *prelude*, which its stream reads first. If the stream had
//! already moved past it, the stream fails and the stage restarts from the committed
//! offset: a rare restart, never a lost record.
//!
//! Revocation: `pre_rebalance` sends `Revoked` and waits until the runtime has drained the
//! partitions (stopped reading, finished in-flight records, stored their offsets), then
//! commits synchronously — all before librdkafka lets go of the partitions.

use super::config;
use super::transaction::KafkaTransaction;
use crate::envelope::{Record, TopicPartition};
use crate::transport::{
    AssignedPartition, Committer, GroupEvent, GroupMember, PartitionStream, RevokeAck, TransportError,
};
use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

type Kc = StreamConsumer<MemberContext>;

/// Records of one partition that reached the main queue before its queue was split.
#[derive(Default)]
struct Prelude {
    records: Mutex<VecDeque<Record>>,
    notify: Notify,
}

pub(crate) struct MemberContext {
    group: String,
    consumer: OnceLock<Weak<Kc>>,
    events: mpsc::UnboundedSender<GroupEvent>,
    preludes: Mutex<HashMap<TopicPartition, Arc<Prelude>>>,
    /// Set while leaving: partitions were drained already, callbacks must not wait.
    leaving: Arc<AtomicBool>,
    /// How long a revocation waits for the runtime to drain.
    revoke_wait: Duration,
    /// Exactly-once: offsets go into this transaction, never committed by the consumer.
    txn: Option<Arc<KafkaTransaction>>,
}

impl ClientContext for MemberContext {}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements().iter().map(|e| TopicPartition::new(e.topic(), e.partition())).collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Commits stored offsets; "nothing to commit" is not a failure.
fn commit_stored(consumer: &impl Consumer<MemberContext>, group: &str) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(%group, error = %e, "committing stored offsets failed"),
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else { return };
        let revoked = partitions(tpl);
        if revoked.is_empty() {
            return;
        }
        let lost = base.assignment_lost();
        if !self.leaving.load(Ordering::SeqCst) {
            let (tx, rx) = std::sync::mpsc::channel();
            let done = RevokeAck::from_fn(move || {
                let _ = tx.send(());
            });
            if self.events.send(GroupEvent::Revoked { partitions: revoked.clone(), done }).is_ok()
                && rx.recv_timeout(self.revoke_wait).is_err()
            {
                tracing::warn!(group = %self.group, "revoked partitions did not drain in time; handing them over");
            }
        }
        // A lost assignment (session timed out) belongs to another member already; with a
        // transaction the runtime committed the offsets before acknowledging.
        if !lost && self.txn.is_none() {
            commit_stored(base, &self.group);
        }
        let mut preludes = lock(&self.preludes);
        for tp in &revoked {
            preludes.remove(tp);
        }
        tracing::info!(group = %self.group, lost, partitions = ?revoked.iter().map(|t| t.to_string()).collect::<Vec<_>>(), "partitions revoked");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else { return };
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else { return };
        let mut assigned = Vec::new();
        for tp in partitions(tpl) {
            let Some(queue) = consumer.split_partition_queue(&tp.topic, tp.partition) else {
                tracing::error!(group = %self.group, partition = %tp, "cannot split the partition's queue");
                continue;
            };
            let prelude = Arc::new(Prelude::default());
            lock(&self.preludes).insert(tp.clone(), prelude.clone());
            let committer: Arc<dyn Committer> = match &self.txn {
                Some(txn) => Arc::new(TxnCommitter { txn: txn.clone() }),
                None => Arc::new(KafkaCommitter { consumer: Arc::downgrade(&consumer) }),
            };
            assigned.push(AssignedPartition {
                stream: Box::new(KafkaPartitionStream { tp, queue, prelude, delivered: None }),
                committer,
            });
        }
        if !assigned.is_empty() {
            let _ = self.events.send(GroupEvent::Assigned(assigned));
        }
    }
}

pub(crate) fn to_record(tp_topic: &Arc<str>, m: &BorrowedMessage<'_>) -> Record {
    // Not `m.headers().iter()`: it panics on a header name that is not UTF-8.
    let headers = super::headers::of(m);
    Record {
        topic: tp_topic.clone(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(Bytes::copy_from_slice),
        headers,
        payload: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
    }
}

struct KafkaPartitionStream {
    tp: TopicPartition,
    queue: StreamPartitionQueue<MemberContext>,
    prelude: Arc<Prelude>,
    delivered: Option<i64>,
}

#[async_trait]
impl PartitionStream for KafkaPartitionStream {
    fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    async fn next(&mut self) -> Result<Record, TransportError> {
        loop {
            let early = lock(&self.prelude.records).pop_front();
            if let Some(r) = early {
                if self.delivered.is_some_and(|d| r.offset <= d) {
                    return Err(TransportError::Unavailable(format!(
                        "{}@{} reached the main queue after later records; re-reading from the committed offset",
                        self.tp, r.offset
                    )));
                }
                self.delivered = Some(r.offset);
                return Ok(r);
            }
            let notified = self.prelude.notify.notified();
            tokio::select! {
                m = self.queue.recv() => match m {
                    Ok(m) => {
                        let r = to_record(&self.tp.topic, &m);
                        self.delivered = Some(r.offset);
                        return Ok(r);
                    }
                    Err(e) => tracing::warn!(partition = %self.tp, error = %e, "consume error; continuing"),
                },
                _ = notified => {}
            }
        }
    }
}

/// Stores offsets for librdkafka's auto-commit; refused once the partition is revoked.
struct KafkaCommitter {
    consumer: Weak<Kc>,
}

#[async_trait]
impl Committer for KafkaCommitter {
    async fn commit(&self, tp: &TopicPartition, next_offset: i64) -> Result<(), TransportError> {
        let consumer = self.consumer.upgrade().ok_or(TransportError::Closed)?;
        let mut tpl = TopicPartitionList::with_capacity(1);
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(next_offset))
            .map_err(|e| TransportError::Rejected(e.to_string()))?;
        match consumer.store_offsets(&tpl) {
            Ok(()) => Ok(()),
            Err(KafkaError::StoreOffset(RDKafkaErrorCode::State)) => Err(TransportError::NotOwner(tp.to_string())),
            Err(e) => Err(super::producer::classify(&e)),
        }
    }
}

/// Records offsets into the stage's transaction (exactly-once).
struct TxnCommitter {
    txn: Arc<KafkaTransaction>,
}

#[async_trait]
impl Committer for TxnCommitter {
    async fn commit(&self, tp: &TopicPartition, next_offset: i64) -> Result<(), TransportError> {
        self.txn.record_offset(tp, next_offset)
    }
}

pub(crate) struct KafkaMember {
    events: mpsc::UnboundedReceiver<GroupEvent>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    leaving: Arc<AtomicBool>,
}

pub(crate) fn join(
    spec: &crate::topology::spec::KafkaSpec,
    client_id: &str,
    group: &str,
    topics: &[String],
    partitions: usize,
    revoke_wait: Duration,
    txn: Option<Arc<KafkaTransaction>>,
) -> Result<KafkaMember, TransportError> {
    let (tx, events) = mpsc::unbounded_channel();
    let leaving = Arc::new(AtomicBool::new(false));
    let ctx = MemberContext {
        group: group.to_string(),
        consumer: OnceLock::new(),
        events: tx,
        preludes: Mutex::new(HashMap::new()),
        leaving: leaving.clone(),
        revoke_wait,
        txn: txn.clone(),
    };
    let mut cfg = config::consumer(spec, client_id, group, Duration::from_millis(500), partitions);
    if txn.is_some() {
        cfg.set("enable.auto.commit", "false");
    }
    tracing::debug!(%group, config = ?config::redacted(&cfg), "creating Kafka consumer");
    let consumer: Arc<Kc> = Arc::new(cfg.create_with_context(ctx).map_err(|e| TransportError::Unavailable(e.to_string()))?);
    let _ = consumer.context().consumer.set(Arc::downgrade(&consumer));
    if let Some(t) = &txn {
        let weak: Weak<Kc> = Arc::downgrade(&consumer);
        t.bind(weak as Weak<dyn super::transaction::GroupMetadataSource>);
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names).map_err(|e| TransportError::Unavailable(e.to_string()))?;
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let group_name = group.to_string();
    let thread = std::thread::Builder::new()
        .name(format!("weir-kafka-{group}"))
        .spawn(move || poll_main_queue(consumer, stop_rx, group_name))
        .map_err(|e| TransportError::Unavailable(e.to_string()))?;
    Ok(KafkaMember { events, stop: Some(stop_tx), thread: Some(thread), leaving })
}

/// Serves the consumer's main queue (rebalance and commit callbacks, errors, and any
/// message fetched before its partition's queue was split) until told to stop, then
/// commits and closes the consumer (which leaves the group).
fn poll_main_queue(consumer: Arc<Kc>, stop: std::sync::mpsc::Receiver<()>, group: String) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(%group, error = %e, "cannot start the consumer's poll thread");
            return;
        }
    };
    rt.block_on(async {
        loop {
            if !matches!(stop.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)) {
                break; // asked to stop, or the member is gone
            }
            match tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await {
                Err(_) => {}
                Ok(Ok(m)) => {
                    let tp = TopicPartition::new(m.topic(), m.partition());
                    let prelude = lock(&consumer.context().preludes).get(&tp).cloned();
                    match prelude {
                        Some(p) => {
                            lock(&p.records).push_back(to_record(&tp.topic, &m));
                            p.notify.notify_one();
                        }
                        None => tracing::warn!(%group, partition = %tp, offset = m.offset(),
                            "message for a partition without a stream; it will be read again by its owner"),
                    }
                }
                Ok(Err(e)) => tracing::warn!(%group, error = %e, "consumer error"),
            }
        }
    });
    if consumer.context().txn.is_none() {
        commit_stored(consumer.as_ref(), &group);
    }
    consumer.context().leaving.store(true, Ordering::SeqCst);
    consumer.unsubscribe();
    // Dropping the last handle closes the consumer: it leaves the group.
    drop(consumer);
    tracing::debug!(%group, "consumer closed");
}

#[async_trait]
impl GroupMember for KafkaMember {
    async fn next_event(&mut self) -> Result<GroupEvent, TransportError> {
        self.events.recv().await.ok_or(TransportError::Closed)
    }

    async fn leave(mut self: Box<Self>) -> Result<(), TransportError> {
        self.leaving.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            tokio::task::spawn_blocking(move || t.join())
                .await
                .map_err(|e| TransportError::Unavailable(e.to_string()))?
                .map_err(|_| TransportError::Unavailable("the consumer thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for KafkaMember {
    fn drop(&mut self) {
        self.leaving.store(true, Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
