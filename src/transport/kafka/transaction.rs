//! Exactly-once stages on Kafka: a transactional producer whose open transaction holds a
//! stage's outputs, and the input offsets recorded by its partition consumers; `commit`
//! sends those offsets to the transaction (KIP-447: with the consumer's group metadata,
//! so a member that lost its partitions is fenced) and commits both at once. Downstream
//! consumers read `read_committed`, so an aborted or crashed transaction is never seen.
//!
//! A commit that fails aborts the transaction and discards the recorded offsets: keeping
//! them would let a later transaction commit offsets past records whose outputs were
//! aborted (lost records). The transaction is then finished (`failed`): it refuses
//! outputs, offsets and commits, and the stage restarts with a fresh one that re-reads from
//! the committed offsets. A fatal error (fenced by an instance with the same id) is
//! reported as [`TransportError::Fenced`].

use super::config;
use super::producer::{classify, KafkaProducer};
use crate::envelope::{OutgoingRecord, TopicPartition};
use crate::topology::spec::KafkaSpec;
use crate::transport::{DeliveryFuture, EnqueueError, Producer, Transaction, TransportError};
use async_trait::async_trait;
use rdkafka::consumer::{Consumer, ConsumerGroupMetadata};
use rdkafka::producer::Producer as _;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::OnceCell;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Gives the transaction the group metadata of the consumer it commits offsets for.
pub(crate) trait GroupMetadataSource: Send + Sync {
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata>;
}

impl<C: rdkafka::consumer::ConsumerContext, R: Send + Sync> GroupMetadataSource for rdkafka::consumer::StreamConsumer<C, R> {
    fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        Consumer::group_metadata(self)
    }
}

pub struct KafkaTransaction {
    id: String,
    producer: KafkaProducer,
    ready: OnceCell<()>,
    offsets: Mutex<HashMap<TopicPartition, i64>>,
    consumer: Mutex<Option<Weak<dyn GroupMetadataSource>>>,
    me: Weak<KafkaTransaction>,
    /// Aborted for good (see the module docs): set as soon as a failure is known, after
    /// which nothing is queued, recorded or committed through this transaction.
    failed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KafkaTransaction {
    pub fn new(spec: &KafkaSpec, client_id: &str, transactional_id: &str) -> Result<Arc<Self>, TransportError> {
        let cfg = config::transactional_producer(spec, client_id, transactional_id);
        let producer = KafkaProducer::new(cfg.create().map_err(|e| TransportError::Unavailable(e.to_string()))?);
        Ok(Arc::new_cyclic(|me| KafkaTransaction {
            id: transactional_id.to_string(),
            producer,
            ready: OnceCell::new(),
            offsets: Mutex::new(HashMap::new()),
            consumer: Mutex::new(None),
            me: me.clone(),
            failed: AtomicBool::new(false),
        }))
    }

    pub(crate) fn me(&self) -> Option<Arc<KafkaTransaction>> {
        self.me.upgrade()
    }

    /// The consumer whose offsets this transaction commits.
    pub(crate) fn bind(&self, consumer: Weak<dyn GroupMetadataSource>) {
        *lock(&self.consumer) = Some(consumer);
    }

    /// Records `tp`'s offset for the next commit; refused once the transaction failed.
    pub(crate) fn record_offset(&self, tp: &TopicPartition, next_offset: i64) -> Result<(), TransportError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(self.finished());
        }
        lock(&self.offsets).insert(tp.clone(), next_offset);
        Ok(())
    }

    fn finished(&self) -> TransportError {
        let what = format!("transaction `{}` was aborted earlier; the stage restarts", self.id);
        match self.producer.inner().client().fatal_error() {
            Some((code, reason)) => TransportError::Fenced(format!("{what} ({code:?}: {reason})")),
            None => TransportError::TransactionAborted(what),
        }
    }

    /// Marks the transaction finished and discards its recorded offsets.
    fn fail(&self) {
        self.failed.store(true, Ordering::SeqCst);
        lock(&self.offsets).clear();
    }

    /// `init_transactions` (which fences a predecessor with the same id and aborts its open
    /// transaction) and the first `begin_transaction`, once.
    async fn ready(&self) -> Result<(), TransportError> {
        self.ready
            .get_or_try_init(|| async {
                let p = self.producer.inner().clone();
                let id = self.id.clone();
                tokio::task::spawn_blocking(move || {
                    p.init_transactions(TXN_TIMEOUT)?;
                    p.begin_transaction()
                })
                .await
                .map_err(|e| TransportError::Unavailable(e.to_string()))?
                .map_err(|e| classify(&e))?;
                tracing::info!(transactional_id = %id, "transactions initialised");
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

/// Fatal: the producer cannot continue (fenced by a newer instance with the same id).
fn is_fatal(e: &rdkafka::error::KafkaError) -> bool {
    match e {
        rdkafka::error::KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    }
}

struct TxnProducer(Arc<KafkaTransaction>);

#[async_trait]
impl Producer for TxnProducer {
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, EnqueueError> {
        if let Err(error) = self.0.ready().await {
            return Err(EnqueueError { error, record });
        }
        if self.0.failed.load(Ordering::SeqCst) {
            return Err(EnqueueError { error: self.0.finished(), record });
        }
        match self.0.producer.enqueue(record).await {
            Ok(ack) => Ok(ack),
            Err(EnqueueError { error, record }) => match self.0.producer.inner().client().fatal_error() {
                // Fenced (or otherwise unusable): retrying would spin; nothing more is produced
                // through this transaction and the stage restarts with a fresh one.
                Some((code, reason)) => {
                    self.0.fail();
                    tracing::warn!(transactional_id = %self.0.id, ?code, %reason, "transactional producer is fenced");
                    Err(EnqueueError { error: TransportError::Fenced(format!("{code:?}: {reason}")), record })
                }
                None => Err(EnqueueError { error, record }),
            },
        }
    }

    async fn flush(&self, timeout: Duration) -> Result<(), TransportError> {
        self.0.producer.flush(timeout).await
    }
}

#[async_trait]
impl Transaction for KafkaTransaction {
    fn producer(&self) -> Arc<dyn Producer> {
        match self.me.upgrade() {
            Some(me) => Arc::new(TxnProducer(me)),
            // Unreachable while `self` is borrowed from an Arc; a plain producer keeps the
            // type total without a panic.
            None => Arc::new(KafkaProducer::new(self.producer.inner().clone())),
        }
    }

    async fn commit(&self) -> Result<(), TransportError> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(self.finished());
        }
        if let Err(e) = self.ready().await {
            self.fail();
            return Err(TransportError::TransactionAborted(format!("initialising transactions failed: {e}")));
        }
        let offsets: Vec<(TopicPartition, i64)> = lock(&self.offsets).iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut tpl = TopicPartitionList::new();
        for (tp, next) in &offsets {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*next))
                .map_err(|e| TransportError::Rejected(e.to_string()))?;
        }
        let metadata = match lock(&self.consumer).as_ref().and_then(Weak::upgrade) {
            Some(c) => c.group_metadata(),
            None => None,
        };
        if !offsets.is_empty() && metadata.is_none() {
            self.abort("no consumer group metadata for the transaction").await;
            return Err(TransportError::TransactionAborted("no consumer group metadata for the transaction".into()));
        }
        let p = self.producer.inner().clone();
        tracing::debug!(transactional_id = %self.id, ?offsets, "committing transaction");
        let result = tokio::task::spawn_blocking(move || {
            let commit = (|| {
                if let Some(m) = &metadata {
                    if tpl.count() > 0 {
                        p.send_offsets_to_transaction(&tpl, m, TXN_TIMEOUT)?;
                    }
                }
                p.commit_transaction(TXN_TIMEOUT)
            })();
            match commit {
                Ok(()) => p.begin_transaction().map_err(|e| (e, false)),
                Err(e) => {
                    let fatal = is_fatal(&e);
                    if !fatal {
                        // Leave nothing half open: its outputs are never visible.
                        if let Err(abort) = p.abort_transaction(TXN_TIMEOUT) {
                            tracing::warn!(error = %abort, "aborting the failed transaction failed too");
                        }
                    }
                    Err((e, fatal))
                }
            }
        })
        .await;
        match result {
            Ok(Ok(())) => {
                let mut recorded = lock(&self.offsets);
                for (tp, next) in offsets {
                    if recorded.get(&tp) == Some(&next) {
                        recorded.remove(&tp);
                    }
                }
                Ok(())
            }
            Ok(Err((e, fatal))) => {
                // The offsets recorded belong to records whose outputs were just aborted.
                self.fail();
                tracing::warn!(transactional_id = %self.id, fatal, error = %e, discarded = offsets.len(),
                    "transaction failed; aborted, recorded offsets discarded");
                Err(if fatal { TransportError::Fenced(e.to_string()) } else { TransportError::TransactionAborted(e.to_string()) })
            }
            Err(join) => {
                self.fail();
                Err(TransportError::TransactionAborted(format!("the commit task failed: {join}")))
            }
        }
    }

    async fn abort(&self, reason: &str) {
        let already = self.failed.load(Ordering::SeqCst);
        self.fail();
        if already || self.ready.get().is_none() {
            return;
        }
        tracing::warn!(transactional_id = %self.id, %reason, "aborting the transaction");
        let p = self.producer.inner().clone();
        match tokio::task::spawn_blocking(move || p.abort_transaction(TXN_TIMEOUT)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(transactional_id = %self.id, error = %e, "abort failed; the broker aborts it at its timeout"),
            Err(e) => tracing::warn!(transactional_id = %self.id, error = %e, "abort task failed"),
        }
    }

    fn forget(&self, tps: &[TopicPartition]) {
        let mut recorded = lock(&self.offsets);
        for tp in tps {
            recorded.remove(tp);
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
