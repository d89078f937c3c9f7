//! Exactly-once stages on Kafka: a transactional producer whose open transaction holds a
//! stage's outputs, and the input offsets recorded by its partition consumers; `commit`
//! sends those offsets to the transaction (KIP-447: with the consumer's group metadata,
//! so a member that lost its partitions is fenced) and commits both at once. Downstream
//! consumers read `read_committed`, so an aborted or crashed transaction is never seen.

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
        }))
    }

    pub(crate) fn me(&self) -> Option<Arc<KafkaTransaction>> {
        self.me.upgrade()
    }

    /// The consumer whose offsets this transaction commits.
    pub(crate) fn bind(&self, consumer: Weak<dyn GroupMetadataSource>) {
        *lock(&self.consumer) = Some(consumer);
    }

    pub(crate) fn record_offset(&self, tp: &TopicPartition, next_offset: i64) {
        lock(&self.offsets).insert(tp.clone(), next_offset);
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

struct TxnProducer(Arc<KafkaTransaction>);

#[async_trait]
impl Producer for TxnProducer {
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, EnqueueError> {
        if let Err(error) = self.0.ready().await {
            return Err(EnqueueError { error, record });
        }
        self.0.producer.enqueue(record).await
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
        self.ready().await?;
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
            return Err(TransportError::Unavailable("no consumer group metadata for the transaction".into()));
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
            if commit.is_err() {
                // Leave nothing half open: abort, so the records are processed again.
                let _ = p.abort_transaction(TXN_TIMEOUT);
            }
            let next = p.begin_transaction();
            commit.and(next)
        })
        .await
        .map_err(|e| TransportError::Unavailable(e.to_string()))?;
        match result {
            Ok(()) => {
                let mut recorded = lock(&self.offsets);
                for (tp, next) in offsets {
                    if recorded.get(&tp) == Some(&next) {
                        recorded.remove(&tp);
                    }
                }
                Ok(())
            }
            Err(e) => Err(classify(&e)),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
