//! The Kafka producer behind [`Producer`]: librdkafka's idempotent producer with
//! `acks=all`. Queuing maps to librdkafka's local queue (`send_result`): a full queue is
//! backpressure — wait and try again, never drop. The delivery report is the acceptance
//! the runtime waits for before it stores an offset.

use crate::envelope::OutgoingRecord;
use crate::transport::{Delivery, DeliveryFuture, EnqueueError, Producer, TransportError};
use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use std::time::Duration;

/// How long to wait before offering a record again to a full local queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);
/// How long a record is offered to a full local queue before `enqueue` hands it back as
/// retriable: callers then wait in their own way, which observes the node's stop (a
/// stage's backoff, an ingress's 503), instead of this loop spinning through a shutdown.
const QUEUE_FULL_GIVE_UP: Duration = Duration::from_secs(5);

pub struct KafkaProducer {
    inner: FutureProducer,
}

impl KafkaProducer {
    pub fn new(inner: FutureProducer) -> Self {
        KafkaProducer { inner }
    }

    pub fn inner(&self) -> &FutureProducer {
        &self.inner
    }
}

pub(crate) fn headers(record: &OutgoingRecord) -> OwnedHeaders {
    let mut h = OwnedHeaders::new_with_capacity(record.headers.len());
    for (name, value) in record.headers.iter() {
        h = h.insert(Header { key: name, value: Some(value) });
    }
    h
}

/// Maps a librdkafka error to weir's classes: what may pass with time is retriable.
pub(crate) fn classify(e: &KafkaError) -> TransportError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessage | RDKafkaErrorCode::TopicAuthorizationFailed) => {
            TransportError::Rejected(e.to_string())
        }
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            TransportError::Unavailable(format!("topic unknown (yet): {e}"))
        }
        _ => TransportError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl Producer for KafkaProducer {
    async fn enqueue(&self, record: OutgoingRecord) -> Result<DeliveryFuture, EnqueueError> {
        let give_up = tokio::time::Instant::now() + QUEUE_FULL_GIVE_UP;
        loop {
            let mut fr: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&record.topic).payload(record.payload.as_ref()).headers(headers(&record));
            if let Some(k) = &record.key {
                fr = fr.key(k.as_ref());
            }
            if let Some(p) = record.partition {
                fr = fr.partition(p);
            }
            match self.inner.send_result(fr) {
                Ok(delivery) => {
                    return Ok(async move {
                        match delivery.await {
                            Ok(Ok(d)) => Ok(Delivery { partition: d.partition, offset: d.offset }),
                            Ok(Err((e, _))) => Err(classify(&e)),
                            Err(_) => Err(TransportError::Closed),
                        }
                    }
                    .boxed())
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    if tokio::time::Instant::now() >= give_up {
                        let error = TransportError::Unavailable(format!(
                            "the producer's local queue stayed full for {QUEUE_FULL_GIVE_UP:?}"
                        ));
                        return Err(EnqueueError { error, record });
                    }
                    tokio::time::sleep(QUEUE_FULL_WAIT).await;
                }
                Err((e, _)) => {
                    let error = classify(&e);
                    return Err(EnqueueError { error, record });
                }
            }
        }
    }

    async fn flush(&self, timeout: Duration) -> Result<(), TransportError> {
        let p = self.inner.clone();
        tokio::task::spawn_blocking(move || p.flush(timeout))
            .await
            .map_err(|e| TransportError::Unavailable(e.to_string()))?
            .map_err(|e| classify(&e))
    }
}
