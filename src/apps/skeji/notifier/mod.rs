//! `skeji-notifier`: tells users (and business owners) what happened. One kind for the four
//! notifier stages; what a record is decides what is said (docs/apps/skeji.md, "What the user
//! is told"):
//! - a `Rejection` (scrub layer) → why the message was declined;
//! - a `PipelineResult` (executor) → the outcome, an apology on timeout, or the help text;
//! - a `DomainEvent` → the owner about new/cancelled bookings, the user about an owner's
//!   approval; every approval schedules a reminder `reminder_before` the start, every
//!   cancellation removes it (sent by a background task, [`reminders`]);
//! - a dead-lettered record (DLQ headers naming another topic, or on a `dlq-*` topic) →
//!   an apology to the user whose message it was.
//!
//! Every message has a notification id (`result:<correlation_id>`, `rejection:<message_id>`,
//! `event:<event_id>:<recipient>`, `reminder:<booking_id>`, `apology:<message_id>`) and is
//! sent once per id ([`deliver`]). Each one sent is recorded on output `sent` when wired.
//!
//! ```yaml
//! config:
//!   sink: outbox            # or whatsapp
//!   whatsapp: {api_base: "https://graph.facebook.com/v21.0", phone_number_id: "…",
//!              token_env: WHATSAPP_TOKEN, rate_limit: {per_second: 20, burst: 40}}
//!   reminder_before: 10m
//!   claim_lease: 60s        # how long a live sender's claim is waited for
//! ```

pub mod deliver;
pub mod ledger;
pub mod outbox;
pub mod owner;
pub mod reminders;
pub mod render;
pub mod sink;

pub use deliver::subscribe_sent;

use super::model::{DomainEvent, PipelineResult, Rejection};
use super::store::{Db, DbError};
use crate::envelope::{header, now_ms, Record};
use crate::connectors::whatsapp::webhook::opt_text;
use crate::stages::{decode, BuildEnv, BuildError, Output, Registry, Stage, StageContext, StageError, StageKind};
use async_trait::async_trait;
use deliver::Deliverer;
use render::Message;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Notify;

/// Registers `skeji-notifier`.
pub fn register(r: &mut Registry) {
    r.register_stage::<Notifier>();
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    #[default]
    Outbox,
    Whatsapp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    #[serde(default)]
    pub sink: SinkKind,
    #[serde(default)]
    pub whatsapp: Option<WhatsAppConfig>,
    /// How long before a confirmed booking its reminder is sent, e.g. `10m`.
    #[serde(default = "default_reminder_before")]
    pub reminder_before: String,
    /// How long the claim of a sender that is still alive is waited for before it is
    /// taken for stuck and taken over, e.g. `60s`. A claim whose sender is gone (killed,
    /// or its stage rebuilt) is taken over at once, whatever this says.
    #[serde(default = "default_claim_lease")]
    pub claim_lease: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsAppConfig {
    pub api_base: String,
    #[serde(default, deserialize_with = "opt_text")]
    pub phone_number_id: Option<String>,
    /// The environment variable holding the access token (the token itself never goes in
    /// the topology file).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_second: u32,
    pub burst: u32,
}

fn default_reminder_before() -> String {
    "10m".into()
}

fn default_claim_lease() -> String {
    "60s".into()
}

fn default_token_env() -> String {
    "WHATSAPP_TOKEN".into()
}

pub struct Notifier {
    deliverer: Deliverer,
    sent_wired: bool,
    reminder_before_ms: i64,
    /// Wakes the reminder task when a reminder is scheduled.
    wake: Arc<Notify>,
    _reminders: reminders::TaskGuard,
}

impl StageKind for Notifier {
    const NAME: &'static str = "skeji-notifier";
    type Config = NotifierConfig;
    // Dead-lettered records (any payload) come from DLQ topics, which declare no type.
    const INPUT_TYPES: &'static [&'static str] =
        &[super::model::types::REJECTION, super::model::types::PIPELINE_RESULT, super::model::types::DOMAIN_EVENT];
    const OUTPUT_TYPES: &'static [(&'static str, &'static str)] = &[("sent", super::model::types::SENT_NOTIFICATION)];

    fn outputs() -> Vec<&'static str> {
        vec!["sent"]
    }

    fn output_fields(output: &str) -> Option<Vec<&'static str>> {
        (output == "sent").then(|| vec!["notification_id", "to", "body", "kind", "correlation_id", "sink"])
    }

    fn check(c: &NotifierConfig) -> Result<(), String> {
        crate::topology::units::parse_duration(&c.reminder_before)?;
        crate::topology::units::parse_duration(&c.claim_lease).map_err(|e| format!("claim_lease: {e}"))?;
        if c.sink == SinkKind::Whatsapp {
            let w = c.whatsapp.as_ref().ok_or("sink `whatsapp` needs the `whatsapp` settings")?;
            if w.phone_number_id.is_none() {
                return Err("sink `whatsapp` needs `whatsapp.phone_number_id`".into());
            }
        }
        Ok(())
    }

    fn build(c: NotifierConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        Self::check(&c).map_err(|e| BuildError::new(env, e))?;
        let before = crate::topology::units::parse_duration(&c.reminder_before).map_err(|e| BuildError::new(env, e))?;
        let lease = crate::topology::units::parse_duration(&c.claim_lease).map_err(|e| BuildError::new(env, e))?;
        let db = Db::open(&env.data_dir).map_err(|e| BuildError::new(env, e))?;
        db.migrate(ledger::SCHEMA).map_err(|e| BuildError::new(env, e))?;
        ledger::migrate_owner(&db).map_err(|e| BuildError::new(env, e))?;
        db.migrate(outbox::SCHEMA).map_err(|e| BuildError::new(env, e))?;
        let route = match (c.sink, &c.whatsapp) {
            (SinkKind::Whatsapp, Some(w)) => {
                let token = std::env::var(&w.token_env).ok().filter(|t| !t.is_empty()).ok_or_else(|| {
                    BuildError::new(
                        env,
                        format!(
                            "sink `whatsapp`: environment variable `{}` (the access token) is not set",
                            w.token_env
                        ),
                    )
                })?;
                let rate = w.rate_limit.map(|r| sink::Rate { per_second: r.per_second, burst: r.burst });
                let id = w.phone_number_id.as_deref().unwrap_or_default();
                let api = sink::WhatsApp::new(&w.api_base, id, token, rate).map_err(|e| BuildError::new(env, e))?;
                deliver::Route::Sink(Arc::new(api))
            }
            _ => {
                // Lines a crashed sender committed but did not append are owed to the file.
                let appended = outbox::project_now(&db, &env.data_dir).map_err(|e| BuildError::new(env, e))?;
                if appended > 0 {
                    tracing::info!(stage = %env.stage.name, lines = appended, "outbox.jsonl completed from skeji.db");
                }
                deliver::Route::Outbox { dir: env.data_dir.clone() }
            }
        };
        // This stage instance (process and generation), named in its claims.
        let owner = owner::Owner::register(&env.data_dir, &env.stage.name).map_err(|e| BuildError::new(env, e))?;
        tracing::debug!(stage = %env.stage.name, owner = owner.id(), "notifier claims are named");
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| BuildError::new(env, format!("the reminder task needs a Tokio runtime: {e}")))?;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let deliverer = Deliverer { db, route, owner: Arc::new(owner), lease_ms };
        let wake = Arc::new(Notify::new());
        let task = reminders::spawn(&rt, deliverer.clone(), wake.clone(), env.stage.name.clone());
        Ok(Arc::new(Notifier {
            deliverer,
            sent_wired: env.wired("sent"),
            reminder_before_ms: i64::try_from(before.as_millis()).unwrap_or(i64::MAX),
            wake,
            _reminders: task,
        }))
    }
}

/// The user a dead-lettered record was about: `user_phone`, or `slip.user_phone` for
/// commands, replies and deadlines.
fn dlq_user(payload: &Value) -> Option<&str> {
    [&payload["user_phone"], &payload["slip"]["user_phone"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find(|p| !p.is_empty())
}

/// Whether `record` was dead-lettered. Topic names are the deployment's (one Kafka
/// cluster shared by environments or tests prefixes them), so the runtime's DLQ headers
/// decide: the record names an original topic other than the one it is on (a record
/// replayed to its original topic with the headers kept is not one). A record on a
/// `dlq-*` topic without them counts too (produced there by hand).
fn dead_lettered(record: &Record) -> bool {
    record.header(header::DLQ_TOPIC).is_some_and(|original| original != &*record.topic) || record.topic.starts_with("dlq-")
}

/// The apology for a dead-lettered record, keyed by the user's message id when the payload
/// has one (so a message dead-lettered twice gets one apology), else by where the record
/// was when it failed.
fn apology(record: &Record) -> Option<Message> {
    let payload: Value = serde_json::from_slice(&record.payload).unwrap_or(Value::Null);
    let Some(to) = dlq_user(&payload) else {
        tracing::warn!(topic = %record.topic, offset = record.offset, "dead-lettered record names no user; no apology sent");
        return None;
    };
    let message_id = [&payload["message_id"], &payload["slip"]["message_id"]]
        .into_iter()
        .filter_map(Value::as_str)
        .find(|m| !m.is_empty());
    let id = match message_id {
        Some(m) => format!("apology:{m}"),
        None => {
            let origin = |h| record.header(h).unwrap_or("?");
            let (t, p, o) = (origin(header::DLQ_TOPIC), origin(header::DLQ_PARTITION), origin(header::DLQ_OFFSET));
            format!("apology:{}:{t}:{p}:{o}", record.topic)
        }
    };
    let correlation = payload["correlation_id"].as_str().or(message_id).unwrap_or(&id).to_string();
    Some(Message {
        notification_id: id,
        to: to.to_string(),
        body: render::APOLOGY.to_string(),
        kind: "apology",
        correlation_id: correlation,
    })
}

impl Notifier {
    /// Keeps the reminder table in step with a booking event.
    async fn track_reminder(&self, e: &DomainEvent) -> Result<(), StageError> {
        let b = &e.data;
        let booking_id = b["booking_id"].as_str().unwrap_or(&e.entity_id).to_string();
        match e.event_type.as_str() {
            "booking.approved" => {
                let start = b["start_time"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
                let (Some(start), Some(phone)) = (start, b["user_phone"].as_str()) else {
                    tracing::warn!(event_id = %e.event_id, "approved booking without start_time or user_phone; no reminder");
                    return Ok(());
                };
                let start_ms = start.as_millisecond();
                if start_ms <= now_ms() {
                    return Ok(());
                }
                let minutes = u64::try_from(self.reminder_before_ms / 60_000).unwrap_or(0);
                let r = ledger::Reminder {
                    booking_id,
                    user_phone: phone.to_string(),
                    body: render::reminder(b, minutes),
                    start_ms,
                };
                ledger::schedule(&self.deliverer.db, r, start_ms - self.reminder_before_ms)
                    .await
                    .map_err(DbError::into_stage_error)?;
                self.wake.notify_one();
            }
            "booking.cancelled" => {
                ledger::cancel(&self.deliverer.db, &booking_id).await.map_err(DbError::into_stage_error)?
            }
            _ => {}
        }
        Ok(())
    }

    /// What to say about `record`.
    async fn messages(&self, record: &Record) -> Result<Vec<Message>, StageError> {
        if dead_lettered(record) {
            return Ok(apology(record).into_iter().collect());
        }
        let v: Value = decode(record)?;
        if v.get("event_type").is_some() {
            let e: DomainEvent = decode(record)?;
            self.track_reminder(&e).await?;
            Ok(render::event(&e))
        } else if v.get("outcome").is_some() {
            Ok(vec![render::result(&decode::<PipelineResult>(record)?)])
        } else if v.get("reason").is_some() {
            Ok(vec![render::rejection(&decode::<Rejection>(record)?)])
        } else {
            Err(StageError::Permanent(format!(
                "{}[{}]@{} is neither a Rejection, a PipelineResult nor a DomainEvent",
                record.topic, record.partition, record.offset
            )))
        }
    }
}

#[async_trait]
impl Stage for Notifier {
    async fn handle(&self, record: &Record, _: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let mut out = Vec::new();
        for m in self.messages(record).await? {
            if let Some(sent) = self.deliverer.deliver(&m).await? {
                if self.sent_wired {
                    out.push(Output::json("sent", &sent)?);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Headers;
    use bytes::Bytes;

    fn record(topic: &str, original: Option<&str>) -> Record {
        let mut headers = Headers::new();
        if let Some(t) = original {
            headers.set_str(header::DLQ_TOPIC, t);
            headers.set_str(header::DLQ_REASON, "invalid LLM output");
        }
        Record {
            topic: Arc::from(topic),
            partition: 0,
            offset: 3,
            key: None,
            headers,
            payload: Bytes::from(r#"{"user_phone":"972531112233","message_id":"wamid.1"}"#),
            timestamp_ms: now_ms(),
        }
    }

    #[test]
    fn dead_lettered_records_are_known_by_their_headers_whatever_the_topic_is_called() {
        assert!(dead_lettered(&record("test-1234-dlq-llm-layer", Some("test-1234-scrub-layer-to-llm-layer"))));
        assert!(dead_lettered(&record("dlq-llm-layer", Some("scrub-layer-to-llm-layer"))));
        assert!(dead_lettered(&record("dlq-llm-layer", None)), "a `dlq-*` topic without headers");
        assert!(!dead_lettered(&record("pipeline-executor-to-notifier", None)));
        assert!(
            !dead_lettered(&record("pipeline-executor-to-notifier", Some("pipeline-executor-to-notifier"))),
            "replayed to its original topic with the headers kept"
        );
        let m = apology(&record("prod-dlq-llm-layer", Some("prod-scrub-layer-to-llm-layer"))).expect("an apology");
        assert_eq!((m.to.as_str(), m.kind, m.notification_id.as_str()), ("972531112233", "apology", "apology:wamid.1"));
    }
}
