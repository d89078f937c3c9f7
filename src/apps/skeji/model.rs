//! The messages on Skeji's topics — the contracts between its stages. Each is registered
//! as a payload type (`payload_type: skeji.<Name>` in `topology.yaml`), so a record that
//! does not decode is dead-lettered where it enters and a `key:` naming a field these
//! types lack is refused by `weir validate`.
//!
//! Flow: `InboundMessage` (ingress) → `UserMessage` (gateway) → `ScrubbedMessage` (scrub) or
//! `Rejection` → `PipelineRequest` (llm) → `Command` ⇄ `Reply` (executor ⇄ domain services)
//! → `PipelineResult` (executor) → notifier; domain services also emit `DomainEvent`s.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A text message as the WhatsApp webhook delivered it (`ingress-requests-buffer`, key `from`).
/// The webhook connector defines it; Skeji registers it as `skeji.InboundMessage`.
pub use crate::connectors::whatsapp::WhatsAppMessage as InboundMessage;

/// The `whatsapp` ingress kind's records are `skeji.InboundMessage`s.
pub struct InboundPayload;

impl crate::connectors::whatsapp::webhook::PayloadName for InboundPayload {
    const PAYLOAD_TYPE: &'static str = types::INBOUND_MESSAGE;
}

/// A normalized user message (`gw-to-scrub-layer`, key `user_phone`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMessage {
    pub message_id: String,
    /// E.164 digits without `+`, e.g. `972501234567`.
    pub user_phone: String,
    pub text: String,
    /// Milliseconds since the Unix epoch.
    pub received_at: i64,
    #[serde(default)]
    pub profile_name: Option<String>,
}

/// A message that passed the scrub layer, with the user's context
/// (`scrub-layer-to-llm-layer`, key `user_phone`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrubbedMessage {
    pub message_id: String,
    pub user_phone: String,
    pub text: String,
    pub received_at: i64,
    #[serde(default)]
    pub profile_name: Option<String>,
    /// A new one after 30 minutes of silence.
    pub conversation_id: String,
    /// ISO 639-1 code, e.g. `en`, `he`.
    pub language: String,
    #[serde(default)]
    pub last_intent: Option<String>,
}

/// A message the scrub layer declined (`scrub-layer-to-notifier`, key `user_phone`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub message_id: String,
    pub user_phone: String,
    /// `empty`, `too_long`, `flooding` or `spam`.
    pub reason: String,
    pub detail: String,
    pub language: String,
}

/// One call of a pipeline: `service` is `business-units`, `schedules` or `bookings`.
/// String params may hold `${previous_step.field}` references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub service: String,
    pub action: String,
    #[serde(default)]
    pub params: serde_json::Map<String, Value>,
}

/// What the LLM layer made of a message (`llm-to-pipeline-executor`, key `conversation_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRequest {
    pub conversation_id: String,
    pub user_phone: String,
    pub message_id: String,
    /// `book`, `availability`, `cancel`, `list`, `register_business`, `approve`, `help`.
    pub intent: String,
    pub language: String,
    pub pipeline: Vec<Step>,
    /// A text to send as is when there is nothing to run (help).
    #[serde(default)]
    pub reply: Option<String>,
}

/// The state of a pipeline that travels with every command and reply, so any executor
/// instance can continue it: all steps, where it is, and the results so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingSlip {
    pub correlation_id: String,
    pub conversation_id: String,
    pub user_phone: String,
    pub message_id: String,
    pub intent: String,
    pub language: String,
    pub steps: Vec<Step>,
    /// Index of the step the command is for.
    pub current: usize,
    /// Results of steps `0..current`.
    pub results: Vec<Value>,
    /// Milliseconds since the Unix epoch by which the current step must be answered.
    pub step_deadline: i64,
}

/// A command to a domain service (`pipeline-executor-to-<service>`, key `correlation_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// `<correlation_id>:<step>`: the same on a redelivery, so services can answer twice
    /// without acting twice.
    pub command_id: String,
    pub correlation_id: String,
    pub action: String,
    /// Parameters with every `${previous_step.*}` already resolved.
    pub params: serde_json::Map<String, Value>,
    pub user_phone: String,
    pub slip: RoutingSlip,
}

/// A business outcome that ends a pipeline (no slot, conflict, not found, closed…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusinessError {
    /// `no_slot`, `conflict`, `not_found`, `invalid`, `closed`, `timeout`.
    pub code: String,
    pub message: String,
    /// E.g. alternative slots.
    #[serde(default)]
    pub details: Value,
}

/// A domain service's answer (`<service>-to-pipeline-executor`, key `correlation_id`), also
/// used for deadline markers (`status: deadline`) on `pipeline-executor-timeouts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub command_id: String,
    pub correlation_id: String,
    pub service: String,
    pub action: String,
    /// `ok`, `business_error` or `deadline`.
    pub status: String,
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub error: Option<BusinessError>,
    pub slip: RoutingSlip,
}

/// A deadline marker: sent with each command to the delay queue; when it comes back due
/// and the step is still unanswered, the pipeline ends with a timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDeadline {
    pub correlation_id: String,
    pub command_id: String,
    pub service: String,
    pub action: String,
    /// Milliseconds since the Unix epoch.
    pub due_at: i64,
    pub slip: RoutingSlip,
}

/// How a pipeline ended (`pipeline-executor-to-notifier`, key `user_phone`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineResult {
    pub correlation_id: String,
    pub conversation_id: String,
    pub user_phone: String,
    pub message_id: String,
    pub intent: String,
    pub language: String,
    /// `completed`, `business_error`, `timeout` or `reply`.
    pub outcome: String,
    /// Results of every step that ran, in order.
    #[serde(default)]
    pub results: Vec<Value>,
    #[serde(default)]
    pub error: Option<BusinessError>,
    #[serde(default)]
    pub reply: Option<String>,
}

/// A fact a domain service publishes (`domain-events-to-notifier`, key `entity_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    /// Unique per event; the notifier acts on each id once.
    pub event_id: String,
    /// `booking.created`, `booking.approved`, `booking.cancelled`, `business.registered`.
    pub event_type: String,
    pub entity_id: String,
    /// Milliseconds since the Unix epoch.
    pub occurred_at: i64,
    pub data: Value,
}

/// A message the notifier sent (`notifications-sent`, key `to`): the audit trail of what
/// users were told, and what tests wait for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentNotification {
    /// The idempotency key: one message per key, however often its cause is redelivered.
    pub notification_id: String,
    pub to: String,
    pub body: String,
    /// `result`, `rejection`, `event`, `reminder`, `apology`.
    pub kind: String,
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// `outbox` or `whatsapp`.
    pub sink: String,
}

/// The registered names of the types above (`payload_type:` in `topology.yaml`), which
/// the kinds also use to declare what they read and write.
pub mod types {
    pub const INBOUND_MESSAGE: &str = "skeji.InboundMessage";
    pub const USER_MESSAGE: &str = "skeji.UserMessage";
    pub const SCRUBBED_MESSAGE: &str = "skeji.ScrubbedMessage";
    pub const REJECTION: &str = "skeji.Rejection";
    pub const PIPELINE_REQUEST: &str = "skeji.PipelineRequest";
    pub const COMMAND: &str = "skeji.Command";
    pub const REPLY: &str = "skeji.Reply";
    pub const STEP_DEADLINE: &str = "skeji.StepDeadline";
    pub const PIPELINE_RESULT: &str = "skeji.PipelineResult";
    pub const DOMAIN_EVENT: &str = "skeji.DomainEvent";
    pub const SENT_NOTIFICATION: &str = "skeji.SentNotification";
}

/// Registers every Skeji payload type under `skeji.<Name>`.
pub fn register_payloads(r: &mut crate::stages::Registry) {
    r.register_payload::<InboundMessage>(types::INBOUND_MESSAGE)
        .register_payload::<UserMessage>(types::USER_MESSAGE)
        .register_payload::<ScrubbedMessage>(types::SCRUBBED_MESSAGE)
        .register_payload::<Rejection>(types::REJECTION)
        .register_payload::<PipelineRequest>(types::PIPELINE_REQUEST)
        .register_payload::<Command>(types::COMMAND)
        .register_payload::<Reply>(types::REPLY)
        .register_payload::<StepDeadline>(types::STEP_DEADLINE)
        .register_payload::<PipelineResult>(types::PIPELINE_RESULT)
        .register_payload::<DomainEvent>(types::DOMAIN_EVENT)
        .register_payload::<SentNotification>(types::SENT_NOTIFICATION);
}
