//! `delay`: holds each record until a due time, then forwards it — a durable delay queue
//! on an ordinary topic (step deadlines, delayed retries). The due time is a payload field
//! in milliseconds since the Unix epoch (`due_field`, default `due_at`), or the record's
//! timestamp plus `after`.
//!
//! Records are forwarded in offset order per key; with due times that grow with the
//! offset (a constant delay) every record waits only for itself. A delayed record holds
//! one in-flight slot of its partition, so give the stage a `max_in_flight` large enough
//! for the records due within one delay.

use super::{decode, BuildEnv, BuildError, Output, Stage, StageContext, StageError, StageKind};
use crate::envelope::{now_ms, Record};
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

pub struct Delay {
    due_field: Option<String>,
    after: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayConfig {
    /// The payload field holding the due time (ms since the epoch).
    #[serde(default)]
    pub due_field: Option<String>,
    /// Or: a fixed delay after the record's timestamp, e.g. `30s`.
    #[serde(default)]
    pub after: Option<String>,
}

impl StageKind for Delay {
    const NAME: &'static str = "delay";
    type Config = DelayConfig;
    const FORWARDS_INPUT: bool = true;

    fn required_outputs() -> Vec<&'static str> {
        vec!["default"]
    }

    fn check(c: &DelayConfig) -> Result<(), String> {
        match (&c.due_field, &c.after) {
            (Some(_), Some(_)) | (None, None) => Err("delay needs exactly one of `due_field` and `after`".into()),
            (None, Some(a)) => crate::topology::units::parse_duration(a).map(|_| ()),
            _ => Ok(()),
        }
    }

    fn build(c: DelayConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        Self::check(&c).map_err(|e| BuildError::new(env, e))?;
        let after = match &c.after {
            Some(a) => Some(crate::topology::units::parse_duration(a).map_err(|e| BuildError::new(env, e))?),
            None => None,
        };
        Ok(Arc::new(Delay { due_field: c.due_field, after }))
    }
}

#[async_trait]
impl Stage for Delay {
    async fn handle(&self, record: &Record, _: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let due = match (&self.due_field, self.after) {
            (Some(field), _) => {
                let v: serde_json::Value = decode(record)?;
                v.get(field).and_then(serde_json::Value::as_i64).ok_or_else(|| {
                    StageError::Permanent(format!("field `{field}` (the due time in ms) is missing or not a number"))
                })?
            }
            (None, Some(after)) => record.timestamp_ms.saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
            (None, None) => record.timestamp_ms,
        };
        let wait = due.saturating_sub(now_ms());
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait as u64)).await;
        }
        Ok(vec![Output::forward("default", record)])
    }

    /// A waiting record holds nothing: on shutdown it is delivered again later.
    fn cancel_on_shutdown(&self) -> bool {
        true
    }
}
