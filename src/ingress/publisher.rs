//! Publishes ingress records: checks them all first (a bad request publishes nothing),
//! then queues them in order and waits until the transport accepted every one.

use crate::envelope::{stamp_origin, Headers, OutgoingRecord};
use crate::stages::payload::PayloadChecks;
use crate::stages::router::field_text;
use crate::transport::{Producer, TransportError};
use bytes::Bytes;
use std::sync::Arc;

#[derive(Clone)]
pub struct Publisher {
    producer: Arc<dyn Producer>,
    topic: String,
    key_field: Option<String>,
    source: String,
    checks: PayloadChecks,
    /// The node's stop: a record waiting for room in a full partition stops waiting.
    stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// One record to publish.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    pub payload: serde_json::Value,
    /// Overrides the ingress `key:` field.
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    /// The caller's W3C trace context, if it sent one.
    pub traceparent: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The request is wrong; nothing was published.
    #[error("{0}")]
    Invalid(String),
    /// The transport did not accept the records; the caller should retry.
    #[error("transport unavailable: {0}")]
    Unavailable(#[from] TransportError),
    /// The node stopped while the records waited for room; some may have been published.
    #[error("the node is stopping; send the request again")]
    Stopping,
}

impl Publisher {
    pub fn new(
        producer: Arc<dyn Producer>,
        topic: &str,
        key_field: Option<String>,
        source: &str,
        checks: PayloadChecks,
    ) -> Self {
        Publisher { producer, topic: topic.to_string(), key_field, source: source.to_string(), checks, stop: None }
    }

    /// Stops waiting for the transport (answering [`PublishError::Stopping`]) once `stop`
    /// turns true.
    pub fn with_stop(mut self, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes every item or reports why not; returns the message ids in order.
    pub async fn publish(&self, items: Vec<Publish>) -> Result<Vec<String>, PublishError> {
        let mut records = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            self.checks.check_json(&self.topic, &item.payload).map_err(|e| PublishError::Invalid(format!("record {i}: {e}")))?;
            let key = match (&item.key, &self.key_field) {
                (Some(k), _) => Some(k.clone()),
                (None, Some(field)) => Some(field_text(&item.payload, field).ok_or_else(|| {
                    PublishError::Invalid(format!("record {i}: field `{field}` (the key) is missing"))
                })?),
                (None, None) => None,
            };
            let mut headers = Headers::new();
            for (n, v) in &item.headers {
                headers.set_str(n.clone(), v);
            }
            // With trace export on, the flow's trace continues under the ingress request's
            // span (a child of the caller's `traceparent`, if it sent one).
            let traced = crate::telemetry::trace::enabled()
                .then(|| crate::telemetry::trace::traceparent_of(&tracing::Span::current()))
                .flatten();
            let id = stamp_origin(&mut headers, &self.source, item.traceparent.as_deref());
            if let Some(tp) = &traced {
                // The request's span is the parent of the first stage's span.
                headers.set_str(crate::envelope::header::TRACEPARENT, tp);
            }
            let payload = serde_json::to_vec(&item.payload).map_err(|e| PublishError::Invalid(e.to_string()))?;
            records.push((
                id,
                OutgoingRecord {
                    topic: self.topic.clone(),
                    partition: None,
                    key: key.map(Bytes::from),
                    headers,
                    payload: Bytes::from(payload),
                },
            ));
        }
        let mut ids = Vec::with_capacity(records.len());
        let mut pending = Vec::with_capacity(records.len());
        for (id, rec) in records {
            let queued = match &self.stop {
                None => self.producer.enqueue(rec).await,
                Some(stop) => {
                    let mut stop = stop.clone();
                    // Biased: a record that can be queued at once still is, even while stopping.
                    tokio::select! {
                        biased;
                        queued = self.producer.enqueue(rec) => queued,
                        _ = super::listener::stopped(&mut stop) => return Err(PublishError::Stopping),
                    }
                }
            };
            pending.push(queued.map_err(|e| e.error)?);
            ids.push(id);
        }
        for p in pending {
            p.await?;
        }
        tracing::debug!(ingress = %self.source, topic = %self.topic, count = ids.len(), "published");
        Ok(ids)
    }
}
