//! The WhatsApp Cloud API: the webhook that receives messages ([`webhook`], an ingress
//! kind an app registers with its own payload type name) and the client that sends them
//! ([`send`]). Nothing here knows about an app; apps map these messages to their own.

pub mod send;
pub mod webhook;

use serde::{Deserialize, Serialize};

/// A text message as the WhatsApp webhook delivered it. Apps register it as the payload
/// type of the topic the webhook writes to (Skeji: `skeji.InboundMessage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatsAppMessage {
    /// WhatsApp's message id (`wamid...`); the same on a redelivery.
    pub wa_message_id: String,
    /// The sender's WhatsApp id, as sent (digits, maybe with `+`).
    pub from: String,
    #[serde(default)]
    pub profile_name: Option<String>,
    pub text: String,
    /// Seconds since the Unix epoch, as WhatsApp stamped it.
    pub timestamp: i64,
    /// The business phone number id that received it (the one replies are sent from).
    #[serde(default)]
    pub phone_number_id: Option<String>,
}

