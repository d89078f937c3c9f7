//! Where messages go outside weir: the WhatsApp Cloud API (the client is
//! [`crate::connectors::whatsapp::send`]). (The `outbox` file is written
//! inside the notifier's own transaction instead: [`super::outbox`].) Both take the same
//! Cloud API "send text" body.

pub use crate::connectors::whatsapp::send::Rate;
use crate::connectors::whatsapp::send::CloudApi;
use crate::connectors::ServiceError;
use crate::stages::StageError;
use async_trait::async_trait;
use serde_json::{json, Value};

/// One text to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Text {
    pub to: String,
    pub body: String,
    pub correlation_id: String,
}

impl Text {
    /// The Cloud API `POST /{phone_number_id}/messages` body.
    pub fn cloud_api_body(&self) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": self.to,
            "type": "text",
            "text": {"preview_url": false, "body": self.body},
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth trying again later (rate limited, the API or the disk is unavailable).
    #[error("{sink}: {reason}")]
    Transient { sink: &'static str, reason: String },
    /// Will not work however often it is tried (a refused request).
    #[error("{sink}: {reason}")]
    Permanent { sink: &'static str, reason: String },
}

impl From<SinkError> for StageError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Transient { .. } => StageError::Transient(e.to_string()),
            SinkError::Permanent { .. } => StageError::Permanent(e.to_string()),
        }
    }
}

#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// As recorded in `SentNotification.sink` (`whatsapp`).
    fn name(&self) -> &'static str;
    /// Returns once the message was accepted.
    async fn send(&self, text: &Text) -> Result<(), SinkError>;
}

/// The Cloud API sink: the connector's client, recorded as sink `whatsapp`.
pub struct WhatsApp {
    api: CloudApi,
}

impl WhatsApp {
    pub fn new(api_base: &str, phone_number_id: &str, token: String, rate: Option<Rate>) -> Result<Self, String> {
        Ok(WhatsApp { api: CloudApi::new(api_base, phone_number_id, token, rate)? })
    }
}

#[async_trait]
impl Sink for WhatsApp {
    fn name(&self) -> &'static str {
        "whatsapp"
    }

    async fn send(&self, text: &Text) -> Result<(), SinkError> {
        self.api.send(&text.cloud_api_body()).await.map_err(|e| match e {
            ServiceError::Transient { reason, .. } => SinkError::Transient { sink: "whatsapp", reason },
            ServiceError::Permanent(reason) => SinkError::Permanent { sink: "whatsapp", reason },
        })
    }
}
