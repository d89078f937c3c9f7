//! `skeji-gateway`: turns a webhook [`InboundMessage`] into a [`UserMessage`] — phone in
//! E.164 digits, text trimmed, WhatsApp's id as `message_id`, time in milliseconds — and
//! drops WhatsApp's redeliveries.
//!
//! Dedup is durable (SQLite, table `gateway_dedup`) and keyed by the WhatsApp message id,
//! with the record that first carried it (`topic[partition]@offset`). A *new* record with a
//! known id inside `dedup_window` is a WhatsApp redelivery and is dropped; the *same*
//! record seen again (a retry after a failed send, a redelivery after a crash between the
//! insert and the commit) is forwarded again, because its first forward may never have
//! reached the topic: dropping it would lose the message. Downstream stages are
//! idempotent for the rare duplicate that this lets through.
//!
//! ```yaml
//! config: {default_country_code: "972", dedup_window: 24h}
//! ```

use super::model::{types, InboundMessage, UserMessage};
use super::store::{Db, DbError};
use crate::envelope::{now_ms, Record};
use crate::connectors::whatsapp::webhook::opt_text;
use crate::stages::{decode, BuildEnv, BuildError, Output, Registry, Stage, StageContext, StageError, StageKind};
use async_trait::async_trait;
use rusqlite::OptionalExtension;
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Registers `skeji-gateway`.
pub fn register(r: &mut Registry) {
    r.register_stage::<Gateway>();
}

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS gateway_dedup (
    message_id    TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    forwarded_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS gateway_dedup_forwarded ON gateway_dedup (forwarded_ms);";

/// Old dedup rows are deleted every this many messages: cheap, and the table stays about
/// one window's worth of messages.
const PRUNE_EVERY: u64 = 512;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Prefixed to national numbers (a leading `0`), e.g. `972`.
    #[serde(deserialize_with = "opt_text")]
    pub default_country_code: Option<String>,
    /// How long a message id is remembered, e.g. `24h`.
    #[serde(default = "default_window")]
    pub dedup_window: String,
}

fn default_window() -> String {
    "24h".into()
}

pub struct Gateway {
    db: Db,
    country_code: String,
    window_ms: i64,
    seen: AtomicU64,
}

impl StageKind for Gateway {
    const NAME: &'static str = "skeji-gateway";
    type Config = GatewayConfig;
    const INPUT_TYPES: &'static [&'static str] = &[types::INBOUND_MESSAGE];
    const OUTPUT_TYPES: &'static [(&'static str, &'static str)] = &[("default", types::USER_MESSAGE)];

    fn required_outputs() -> Vec<&'static str> {
        vec!["default"]
    }

    fn output_fields(_: &str) -> Option<Vec<&'static str>> {
        Some(vec!["message_id", "user_phone", "text", "received_at", "profile_name"])
    }

    fn check(c: &GatewayConfig) -> Result<(), String> {
        match &c.default_country_code {
            Some(cc) if cc.len() <= 3 && cc.bytes().all(|b| b.is_ascii_digit()) => {}
            _ => return Err("`default_country_code` must be 1-3 digits, e.g. \"972\"".into()),
        }
        crate::topology::units::parse_duration(&c.dedup_window).map(|_| ())
    }

    fn build(c: GatewayConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        Self::check(&c).map_err(|e| BuildError::new(env, e))?;
        let window = crate::topology::units::parse_duration(&c.dedup_window).map_err(|e| BuildError::new(env, e))?;
        let db = Db::open(&env.data_dir).map_err(|e| BuildError::new(env, e))?;
        db.migrate(SCHEMA).map_err(|e| BuildError::new(env, e))?;
        Ok(Arc::new(Gateway {
            db,
            country_code: c.default_country_code.unwrap_or_default(),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            seen: AtomicU64::new(0),
        }))
    }
}

/// Why a phone number cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("phone number `{input}` is not valid: {why}")]
pub struct PhoneError {
    pub input: String,
    pub why: &'static str,
}

/// E.164 digits without `+`: drops spaces, dashes, dots and parentheses and a leading `+`
/// or `00`; a national number (one leading `0`) gets `country_code`.
pub fn normalize_phone(input: &str, country_code: &str) -> Result<String, PhoneError> {
    let err = |why| PhoneError { input: input.to_string(), why };
    let compact: String = input.chars().filter(|c| !c.is_whitespace() && !matches!(c, '-' | '(' | ')' | '.')).collect();
    let digits = if let Some(rest) = compact.strip_prefix('+') {
        rest.to_string()
    } else if let Some(rest) = compact.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = compact.strip_prefix('0') {
        format!("{country_code}{rest}")
    } else {
        compact
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("it contains characters other than digits"));
    }
    // E.164 allows at most 15 digits; fewer than 8 is no mobile number anywhere.
    if !(8..=15).contains(&digits.len()) {
        return Err(err("it must have 8 to 15 digits"));
    }
    Ok(digits)
}

/// Turns the webhook's message into the pipeline's (without dedup).
pub fn to_user_message(m: &InboundMessage, country_code: &str) -> Result<UserMessage, PhoneError> {
    Ok(UserMessage {
        message_id: m.wa_message_id.clone(),
        user_phone: normalize_phone(&m.from, country_code)?,
        text: m.text.trim().to_string(),
        received_at: m.timestamp.saturating_mul(1000),
        profile_name: m.profile_name.clone(),
    })
}

impl Gateway {
    /// Records that `source` forwards `message_id`; false when another record already
    /// forwarded it within the window.
    async fn first_forward(&self, message_id: &str, source: String, prune: bool) -> Result<bool, DbError> {
        let (id, window) = (message_id.to_string(), self.window_ms);
        self.db
            .call(move |c| {
                let now = now_ms();
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let previous: Option<(String, i64)> = tx
                    .query_row("SELECT source, forwarded_ms FROM gateway_dedup WHERE message_id = ?1", [&id], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                let forward = match previous {
                    Some((prev, at)) => prev == source || now.saturating_sub(at) >= window,
                    None => true,
                };
                if forward {
                    tx.execute(
                        "INSERT INTO gateway_dedup (message_id, source, forwarded_ms) VALUES (?1, ?2, ?3)
                         ON CONFLICT (message_id) DO UPDATE SET source = ?2, forwarded_ms = ?3",
                        rusqlite::params![id, source, now],
                    )?;
                }
                if prune {
                    let gone =
                        tx.execute("DELETE FROM gateway_dedup WHERE forwarded_ms < ?1", [now.saturating_sub(window)])?;
                    tracing::debug!(rows = gone, "gateway dedup pruned");
                }
                tx.commit()?;
                Ok(forward)
            })
            .await
    }
}

#[async_trait]
impl Stage for Gateway {
    async fn handle(&self, record: &Record, cx: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let inbound: InboundMessage = decode(record)?;
        let msg = to_user_message(&inbound, &self.country_code).map_err(|e| StageError::Permanent(e.to_string()))?;
        if msg.message_id.is_empty() {
            return Err(StageError::Permanent("the message has no WhatsApp id".into()));
        }
        let prune = self.seen.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1;
        let source = format!("{}[{}]@{}", record.topic, record.partition, record.offset);
        if !self.first_forward(&msg.message_id, source, prune).await.map_err(DbError::into_stage_error)? {
            tracing::info!(stage = cx.stage, message_id = %msg.message_id, "dropped a WhatsApp redelivery");
            return Ok(Vec::new());
        }
        Ok(vec![Output::json("default", &msg)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_become_e164_digits() {
        let n = |s| normalize_phone(s, "972");
        assert_eq!(n("972501234567").as_deref(), Ok("972501234567"));
        assert_eq!(n("+972 50-123-4567").as_deref(), Ok("972501234567"));
        assert_eq!(n("00972 (50) 1234567").as_deref(), Ok("972501234567"));
        assert_eq!(n("050-123-4567").as_deref(), Ok("972501234567"));
        assert!(n("+972-50-abc").is_err());
        assert!(n("12345").is_err());
    }
}
