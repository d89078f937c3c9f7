//! Where records live, behind one trait: [`embedded`] (in-process, the default) and
//! Kafka. The actors only see [`Transport`], [`Producer`], [`GroupMember`] and
//! [`PartitionStream`], so a transport slots in without touching them.
//!
//! The contract follows Kafka's semantics: topics have partitions; a record's partition
//! comes from its key (murmur2, the Java client's partitioner, see [`partitioner`]);
//! consumer groups split partitions among members and keep committed offsets; a member
//! learns of assignment changes as [`GroupEvent`]s and must acknowledge a revocation only
//! after it stopped using those partitions.

pub mod embedded;
pub mod kafka;
pub mod partitioner;

use crate::envelope::{OutgoingRecord, Record, TopicPartition};
use crate::topology::plan::TopicPlan;
use async_trait::async_trait;
use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("partition {partition} of topic `{topic}` does not exist")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("this member no longer owns {0} (the group rebalanced)")]
    NotOwner(String),
    #[error("the transport is shut down")]
    Closed,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Broker unreachable, leader moving, queue full past its wait: try again later.
    #[error("transport unavailable: {0}")]
    Unavailable(String),
    /// A request the transport refuses however often it is retried.
    #[error("rejected by the transport: {0}")]
    Rejected(String),
    /// An exactly-once transaction failed and was aborted: none of its outputs is visible
    /// and its recorded offsets were discarded; its records must be processed again.
    #[error("the transaction was aborted: {0}")]
    TransactionAborted(String),
    /// Another instance with the same transactional id took over: this one must stop
    /// producing (a restart re-initialises transactions and fences the other in turn).
    #[error("fenced by another instance with the same transactional id: {0}")]
    Fenced(String),
}

impl TransportError {
    /// Whether retrying the same operation later can succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, TransportError::Unavailable(_) | TransportError::Timeout(_) | TransportError::UnknownTopic(_))
    }
}

/// A record the transport did not queue, with the reason.
#[derive(Debug)]
pub struct EnqueueError {
    pub error: TransportError,
    pub record: OutgoingRecord,
}

/// Where an accepted record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub partition: i32,
    pub offset: i64,
}

/// Resolves when the transport has accepted a record for good (embedded: appended to the
/// log; Kafka: acknowledged by all in-sync replicas).
pub type DeliveryFuture = BoxFuture<'static, Result<Delivery, TransportError>>;

#[async_trait]
pub trait Producer: Send + Sync {
    /// Queues `record`. Returning means the record has its place in its partition's order
    /// (records enqueued one after another on a partition keep that order); waiting here is
    /// how a full transport pushes back. The returned future resolves on acceptance. On
    /// error the record comes back so the caller can retry without copying it up front.
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, EnqueueError>;

    /// Queues `record` and waits until it is accepted.
    async fn send(&self, record: OutgoingRecord) -> Result<Delivery, TransportError> {
        self.enqueue(record).await.map_err(|e| e.error)?.await
    }

    /// Waits until every queued record was accepted or failed.
    async fn flush(&self, timeout: Duration) -> Result<(), TransportError>;
}

/// Where a reader without a group starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    Offset(i64),
}

#[async_trait]
pub trait Transport: Send + Sync + 'static {
    /// `embedded` or `kafka`, for logs.
    fn kind(&self) -> &'static str;

    /// Makes sure the declared topics exist as declared (the embedded log creates them).
    async fn ensure_topics(&self, topics: &[TopicPlan]) -> Result<(), TransportError>;

    async fn partition_count(&self, topic: &str) -> Result<i32, TransportError>;

    /// The producer stages and ingress use for at-least-once delivery.
    fn producer(&self) -> Arc<dyn Producer>;

    /// Joins consumer group `group` for `topics` as `member_id`. Assignments arrive as
    /// events on the returned member. With `transaction`, the member's committers record
    /// offsets into it instead of committing them (exactly-once stages).
    async fn join(
        &self,
        group: &str,
        topics: &[String],
        member_id: &str,
        transaction: Option<Arc<dyn Transaction>>,
    ) -> Result<Box<dyn GroupMember>, TransportError>;

    /// A transaction for an exactly-once stage, named `id` (stable across restarts of the
    /// same instance, so a restart fences its crashed predecessor). `None`: the transport
    /// has no transactions and the stage runs at-least-once (the embedded log).
    fn transaction(&self, _id: &str) -> Result<Option<Arc<dyn Transaction>>, TransportError> {
        Ok(None)
    }

    /// Reads one partition outside any group, committing nothing (`weir tail`, tests).
    async fn reader(&self, tp: &TopicPartition, from: StartFrom) -> Result<Box<dyn PartitionStream>, TransportError>;

    /// The group's committed offset for `tp` (the next offset it will read), if any.
    async fn committed(&self, group: &str, tp: &TopicPartition) -> Result<Option<i64>, TransportError>;

    /// The earliest retained offset and the offset the next appended record will get.
    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64), TransportError>;

    /// The offset the next record appended to `tp` will get.
    async fn end_offset(&self, tp: &TopicPartition) -> Result<i64, TransportError> {
        Ok(self.watermarks(tp).await?.1)
    }
}

/// Outputs and consumed offsets that become visible together (Kafka transactions):
/// everything sent through `producer()` since the last commit, and the offsets the
/// member's committers recorded, are committed atomically by `commit`, which also opens
/// the next transaction. The caller makes sure no record is half done at that moment.
///
/// A failed `commit` (the broker aborted the transaction at its timeout, the producer was
/// fenced, …) aborts it and discards the recorded offsets; so does `abort`. Either way the
/// transaction is finished for good: it refuses outputs, offsets and commits from then on,
/// and the stage must re-read its partitions from the group's committed offsets with a
/// fresh transaction (a pipeline restart), or the aborted records would be lost.
#[async_trait]
pub trait Transaction: Send + Sync {
    fn producer(&self) -> Arc<dyn Producer>;
    /// Errors are [`TransportError::TransactionAborted`] or [`TransportError::Fenced`].
    async fn commit(&self) -> Result<(), TransportError>;
    /// Aborts the open transaction and discards the recorded offsets (see above).
    async fn abort(&self, reason: &str);
    /// Drops the offsets recorded for `tps` (partitions this member gave up), so that no
    /// later commit covers a partition the member no longer owns.
    fn forget(&self, tps: &[TopicPartition]);
    fn as_any(&self) -> &dyn std::any::Any;
}

/// A member of a consumer group.
#[async_trait]
pub trait GroupMember: Send {
    /// Waits for the next assignment change.
    async fn next_event(&mut self) -> Result<GroupEvent, TransportError>;

    /// Leaves the group so its partitions go to the other members at once. Call after the
    /// member's partition consumers have stopped and committed.
    async fn leave(self: Box<Self>) -> Result<(), TransportError>;
}

pub enum GroupEvent {
    /// These partitions are now this member's, each starting at the group's committed
    /// offset (or the earliest retained record when nothing was committed).
    Assigned(Vec<AssignedPartition>),
    /// These partitions are being taken away. The member must stop consuming them, commit
    /// what is complete, and only then call `done.ack()`; the group waits for it.
    Revoked { partitions: Vec<TopicPartition>, done: RevokeAck },
}

pub struct AssignedPartition {
    pub stream: Box<dyn PartitionStream>,
    pub committer: Arc<dyn Committer>,
}

/// Acknowledges a revocation; dropping it without `ack` counts as an acknowledgement too,
/// so a crashed member never blocks its group.
pub struct RevokeAck(Option<Box<dyn FnOnce() + Send>>);

impl RevokeAck {
    /// Acknowledges by sending on a tokio oneshot (for async waiters).
    pub fn new(tx: tokio::sync::oneshot::Sender<()>) -> Self {
        RevokeAck::from_fn(move || {
            let _ = tx.send(());
        })
    }

    /// Acknowledges by calling `f` (e.g. to wake a thread blocked in a rebalance callback).
    pub fn from_fn(f: impl FnOnce() + Send + 'static) -> Self {
        RevokeAck(Some(Box::new(f)))
    }

    pub fn ack(mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl Drop for RevokeAck {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Records of one partition, in offset order.
#[async_trait]
pub trait PartitionStream: Send {
    fn topic_partition(&self) -> &TopicPartition;

    /// Waits for the next record.
    async fn next(&mut self) -> Result<Record, TransportError>;
}

/// Commits a group's offset for a partition: `next_offset` is the offset of the next
/// record to read (last processed + 1), as Kafka defines it.
#[async_trait]
pub trait Committer: Send + Sync {
    async fn commit(&self, tp: &TopicPartition, next_offset: i64) -> Result<(), TransportError>;
}
