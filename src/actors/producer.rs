//! Where records leave a stage. Turns a stage's [`Output`]s into transport records —
//! topic from `to:`, key from `key:`, envelope headers, payload checked against the
//! topic's declaration — and queues them in order. Also builds dead-letter records.
//!
//! Every output of a record is prepared before any is sent, so an invalid output sends
//! nothing (the input goes to the DLQ instead). Queuing waits and retries while the
//! transport pushes back or is unavailable; the returned [`Acks`] resolve once every
//! output was accepted, which is when the input's offset may be committed.

use super::processing::Stopping;
use crate::envelope::{header, stamp_child, stamp_origin, Headers, OutgoingRecord, Record};
use crate::stages::payload::PayloadChecks;
use crate::stages::router::field_text;
use crate::stages::emitter::{EmitOutput, Emitter};
use crate::stages::{Output, Payload, StageError};
use crate::topology::plan::{OutputPlan, RetryPolicy};
use crate::transport::{DeliveryFuture, EnqueueError, Producer, TransportError};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Resolves when every queued output was accepted; an error means one was not.
pub type Acks = BoxFuture<'static, Result<(), TransportError>>;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Refused however often it is tried (e.g. a record too large): a permanent failure.
    #[error("the transport refused an output: {0}")]
    Refused(TransportError),
    /// The node is shutting down; nothing more is queued.
    #[error("stopped while waiting for the transport")]
    Stopped,
    /// The stage's transaction is gone (aborted, or fenced by another instance): the record
    /// is not done and is processed again after the stage restarts; never dead-lettered.
    #[error("the stage's transaction is gone: {0}")]
    TransactionGone(TransportError),
}

pub struct OutputProducer {
    stage: String,
    outputs: BTreeMap<String, OutputPlan>,
    dlq: Option<String>,
    producer: Arc<dyn Producer>,
    checks: PayloadChecks,
    /// Backoff between attempts to queue while the transport is unavailable.
    backoff: RetryPolicy,
    stats: Arc<super::stats::StageStats>,
}

impl OutputProducer {
    pub fn new(
        stage: &str,
        outputs: BTreeMap<String, OutputPlan>,
        dlq: Option<String>,
        producer: Arc<dyn Producer>,
        checks: PayloadChecks,
        backoff: RetryPolicy,
        stats: Arc<super::stats::StageStats>,
    ) -> Self {
        OutputProducer { stage: stage.to_string(), outputs, dlq, producer, checks, backoff, stats }
    }

    pub fn has_dlq(&self) -> bool {
        self.dlq.is_some()
    }

    /// Turns outputs into records, or says why one of them is invalid.
    pub fn prepare(&self, input: &Record, outputs: Vec<Output>, attempt: u32) -> Result<Vec<OutgoingRecord>, String> {
        outputs.into_iter().map(|o| self.prepare_one(input, o, attempt)).collect()
    }

    fn prepare_one(&self, input: &Record, out: Output, attempt: u32) -> Result<OutgoingRecord, String> {
        let plan = self
            .outputs
            .get(out.name.as_ref())
            .ok_or_else(|| format!("stage emitted output `{}`, which is not wired in `to`", out.name))?;
        let mut headers = stamp_child(&input.headers, &self.stage, attempt);
        for (n, v) in &out.headers {
            headers.set_str(n.clone(), v);
        }
        if let Some(reason) = &out.business {
            headers.set_str(header::OUTCOME, &format!("business: {reason}"));
        }
        let key = match (&out.key, &plan.key) {
            (Some(k), _) => Some(Bytes::from(k.clone())),
            (None, Some(field)) => Some(Bytes::from(key_value(&out.payload, &headers, field).ok_or_else(|| {
                format!("output `{}` has no field `{field}` to key by", out.name)
            })?)),
            (None, None) => input.key.clone(),
        };
        let payload = match out.payload {
            Payload::Raw(bytes) => {
                if self.checks.declares(&plan.topic) {
                    self.checks.check_bytes(&plan.topic, &bytes)?;
                }
                bytes
            }
            Payload::Json(value) => {
                if self.checks.declares(&plan.topic) {
                    self.checks.check_json(&plan.topic, &value)?;
                }
                Bytes::from(serde_json::to_vec(&value).map_err(|e| e.to_string())?)
            }
        };
        Ok(OutgoingRecord { topic: plan.topic.clone(), partition: None, key, headers, payload })
    }

    /// A record that starts a flow (not produced from an input): an origin envelope.
    pub fn prepare_origin(&self, out: Output) -> Result<OutgoingRecord, String> {
        let mut parent = Headers::new();
        stamp_origin(&mut parent, &self.stage, None);
        let input = Record {
            topic: std::sync::Arc::from(""),
            partition: -1,
            offset: -1,
            key: None,
            headers: parent,
            payload: Bytes::new(),
            timestamp_ms: crate::envelope::now_ms(),
        };
        self.prepare_one(&input, out, 1)
    }

    /// The record for the DLQ: the input unchanged, with the reason in headers.
    pub fn dead_letter(&self, input: &Record, class: &str, reason: &str, attempts: u32) -> Option<OutgoingRecord> {
        let topic = self.dlq.clone()?;
        let mut headers = input.headers.clone();
        headers.set_str(header::DLQ_STAGE, &self.stage);
        headers.set_str(header::DLQ_ERROR_CLASS, class);
        headers.set_str(header::DLQ_REASON, reason);
        headers.set_str(header::DLQ_TOPIC, &input.topic);
        headers.set_str(header::DLQ_PARTITION, &input.partition.to_string());
        headers.set_str(header::DLQ_OFFSET, &input.offset.to_string());
        headers.set_str(header::DLQ_ATTEMPTS, &attempts.to_string());
        Some(OutgoingRecord { topic, partition: None, key: input.key.clone(), headers, payload: input.payload.clone() })
    }

    /// Queues the records in order, waiting out backpressure and unavailability.
    pub async fn send_all(&self, records: Vec<OutgoingRecord>, stopping: &Stopping) -> Result<Acks, SendError> {
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(records.len());
        for record in records {
            pending.push(self.enqueue_with_retry(record, stopping).await?);
        }
        Ok(async move {
            for p in pending {
                p.await?;
            }
            Ok(())
        }
        .boxed())
    }

    async fn enqueue_with_retry(&self, record: OutgoingRecord, stopping: &Stopping) -> Result<DeliveryFuture, SendError> {
        let mut attempt = 0u32;
        let mut record = record;
        loop {
            // A full partition (embedded) or local queue (Kafka) makes `enqueue` wait; the
            // node's stop ends that wait (the record is not complete and comes again).
            // Biased: a record that can be queued at once still is, even while stopping.
            let queued = tokio::select! {
                biased;
                queued = self.producer.enqueue(record) => queued,
                _ = until_stopped(stopping) => return Err(SendError::Stopped),
            };
            match queued {
                Ok(ack) => return Ok(ack),
                Err(EnqueueError { error, record: back }) if error.is_retriable() => {
                    super::stats::StageStats::add(&self.stats.failures.enqueue_errors, 1);
                    attempt += 1;
                    let wait = self.backoff.delay(attempt);
                    tracing::warn!(stage = %self.stage, topic = %back.topic, %error, ?wait, "transport unavailable; waiting to send");
                    if stopping.sleep_or_stop(wait).await {
                        return Err(SendError::Stopped);
                    }
                    record = back;
                }
                Err(EnqueueError { error: error @ (TransportError::Fenced(_) | TransportError::TransactionAborted(_)), .. }) => {
                    return Err(SendError::TransactionGone(error))
                }
                Err(EnqueueError { error, .. }) => return Err(SendError::Refused(error)),
            }
        }
    }
}

/// Resolves once the node stops.
async fn until_stopped(stopping: &Stopping) {
    while !stopping.sleep_or_stop(std::time::Duration::from_secs(3600)).await {}
}

/// The key value for `field`: a payload field (dotted path) or an envelope field.
fn key_value(payload: &Payload, headers: &Headers, field: &str) -> Option<String> {
    let from_payload = match payload {
        Payload::Json(v) => field_text(v, field),
        Payload::Raw(bytes) => serde_json::from_slice::<serde_json::Value>(bytes).ok().and_then(|v| field_text(&v, field)),
    };
    from_payload.or_else(|| header::for_field(field).and_then(|h| headers.get_str(h)).map(str::to_string))
}

/// Sends a stage's [`Emitter`] outputs: keyed, checked and stamped like `handle`'s outputs;
/// `emit` returns once the transport accepted the record.
struct ProducerEmitter {
    producer: std::sync::Arc<OutputProducer>,
    stopping: Stopping,
}

/// The [`Emitter`] a stage gets, sending through `producer`.
pub fn emitter(producer: std::sync::Arc<OutputProducer>, stopping: Stopping) -> Emitter {
    Emitter::new(Arc::new(ProducerEmitter { producer, stopping }))
}

#[async_trait::async_trait]
impl EmitOutput for ProducerEmitter {
    async fn emit(&self, out: Output) -> Result<(), StageError> {
        let record = self.producer.prepare_origin(out).map_err(StageError::Permanent)?;
        let acks = self.producer.send_all(vec![record], &self.stopping).await.map_err(|e| match e {
            SendError::Stopped => StageError::Transient("shutting down".into()),
            SendError::TransactionGone(e) => StageError::Transient(e.to_string()),
            SendError::Refused(e) => StageError::Permanent(e.to_string()),
        })?;
        acks.await.map_err(|e| StageError::Transient(e.to_string()))
    }
}
