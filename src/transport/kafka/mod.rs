//! The Kafka transport: librdkafka (bundled) behind the same traits as the embedded log,
//! so the actors run unchanged. Consumers: `consumer`; producer: `producer`; topic
//! management and lag: `admin`; settings: `config`.

pub mod admin;
pub mod config;
mod consumer;
mod headers;
pub mod producer;
mod transaction;

pub use transaction::KafkaTransaction;

use crate::envelope::{Record, TopicPartition};
use crate::topology::plan::TopicPlan;
use crate::topology::spec::KafkaSpec;
use crate::transport::{GroupMember, PartitionStream, Producer, StartFrom, Transaction, Transport, TransportError};
use async_trait::async_trait;
use producer::KafkaProducer;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// The last-resort bound on a revocation, should the runtime never acknowledge it. The
/// runtime bounds its own wait (twice `drain_timeout` plus a few seconds) and acknowledges
/// first; handing partitions over before that could let a slow record produce after the
/// new owner started.
const REVOKE_WAIT: Duration = Duration::from_secs(60);

pub struct KafkaTransport {
    spec: KafkaSpec,
    client_id: String,
    producer: Arc<KafkaProducer>,
    meta: Arc<BaseConsumer>,
}

fn unavailable(e: impl std::fmt::Display) -> TransportError {
    TransportError::Unavailable(e.to_string())
}

impl KafkaTransport {
    /// Creates the shared producer and metadata client. `client_id` names this process in
    /// the broker's logs (e.g. `weir-skeji-edge`).
    pub fn connect(spec: &KafkaSpec, client_id: &str) -> Result<Self, TransportError> {
        let pcfg = config::producer(spec, client_id);
        tracing::info!(config = ?config::redacted(&pcfg), "Kafka producer");
        let producer = Arc::new(KafkaProducer::new(pcfg.create().map_err(unavailable)?));
        let meta = Arc::new(config::reader(spec, client_id).create().map_err(unavailable)?);
        Ok(KafkaTransport { spec: spec.clone(), client_id: client_id.to_string(), producer, meta })
    }

    pub fn spec(&self) -> &KafkaSpec {
        &self.spec
    }
}

#[async_trait]
impl Transport for KafkaTransport {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn ensure_topics(&self, topics: &[TopicPlan]) -> Result<(), TransportError> {
        if self.spec.auto_create_topics {
            let report = admin::apply(&self.spec, topics).await?;
            tracing::info!(created = ?report.created, raised = ?report.raised, "topics applied");
            for (t, what, actual, declared) in &report.drift {
                tracing::warn!(topic = %t, %what, %actual, %declared, "topic differs from the topology (left as is)");
            }
            return Ok(());
        }
        let counts = admin::partition_counts(&self.spec, topics.iter().map(|t| t.name.clone()).collect()).await?;
        let missing: Vec<&str> = topics.iter().filter(|t| !counts.contains_key(&t.name)).map(|t| t.name.as_str()).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(TransportError::UnknownTopic(format!(
                "{} (run `weir topics apply` or set `kafka.auto_create_topics: true`)",
                missing.join(", ")
            )))
        }
    }

    async fn partition_count(&self, topic: &str) -> Result<i32, TransportError> {
        let counts = admin::partition_counts(&self.spec, vec![topic.to_string()]).await?;
        counts.get(topic).copied().ok_or_else(|| TransportError::UnknownTopic(topic.to_string()))
    }

    fn producer(&self) -> Arc<dyn Producer> {
        self.producer.clone()
    }

    async fn join(
        &self,
        group: &str,
        topics: &[String],
        member_id: &str,
        transaction: Option<Arc<dyn Transaction>>,
    ) -> Result<Box<dyn GroupMember>, TransportError> {
        let client_id = format!("{}-{member_id}", self.client_id);
        let txn = match &transaction {
            Some(t) => Some(
                t.as_any()
                    .downcast_ref::<KafkaTransaction>()
                    .and_then(|k| k.me())
                    .ok_or_else(|| TransportError::Rejected("not a Kafka transaction".into()))?,
            ),
            None => None,
        };
        // The prefetch bound is split over every partition the member could be assigned.
        let counts = admin::partition_counts(&self.spec, topics.to_vec()).await?;
        let partitions = topics.iter().map(|t| counts.get(t).map_or(1, |n| usize::try_from(*n).unwrap_or(1))).sum();
        Ok(Box::new(consumer::join(&self.spec, &client_id, group, topics, partitions, REVOKE_WAIT, txn)?))
    }

    fn transaction(&self, id: &str) -> Result<Option<Arc<dyn Transaction>>, TransportError> {
        Ok(Some(KafkaTransaction::new(&self.spec, &self.client_id, id)? as Arc<dyn Transaction>))
    }

    async fn reader(&self, tp: &TopicPartition, from: StartFrom) -> Result<Box<dyn PartitionStream>, TransportError> {
        let c: StreamConsumer = config::reader(&self.spec, &self.client_id).create().map_err(unavailable)?;
        let mut tpl = TopicPartitionList::new();
        let offset = match from {
            StartFrom::Earliest => Offset::Beginning,
            StartFrom::Latest => Offset::End,
            StartFrom::Offset(o) => Offset::Offset(o),
        };
        tpl.add_partition_offset(&tp.topic, tp.partition, offset).map_err(unavailable)?;
        c.assign(&tpl).map_err(unavailable)?;
        Ok(Box::new(KafkaReader { tp: tp.clone(), consumer: c }))
    }

    async fn committed(&self, group: &str, tp: &TopicPartition) -> Result<Option<i64>, TransportError> {
        let lag = admin::lag(&self.spec, group, &[tp.topic.to_string()]).await?;
        Ok(lag.into_iter().find(|l| l.partition == tp.partition).and_then(|l| l.committed))
    }

    async fn watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64), TransportError> {
        let (meta, tp) = (self.meta.clone(), tp.clone());
        tokio::task::spawn_blocking(move || meta.fetch_watermarks(&tp.topic, tp.partition, METADATA_TIMEOUT))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }
}

/// One partition read outside any group.
struct KafkaReader {
    tp: TopicPartition,
    consumer: StreamConsumer,
}

#[async_trait]
impl PartitionStream for KafkaReader {
    fn topic_partition(&self) -> &TopicPartition {
        &self.tp
    }

    async fn next(&mut self) -> Result<Record, TransportError> {
        loop {
            match self.consumer.recv().await {
                Ok(m) => return Ok(consumer::to_record(&self.tp.topic, &m)),
                Err(e) => tracing::debug!(partition = %self.tp, error = %e, "read error; retrying"),
            }
        }
    }
}
