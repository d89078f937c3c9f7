//! `log`: writes each record to the log (tracing) and forwards it to `default` if wired.

use super::{BuildEnv, BuildError, Output, Stage, StageContext, StageError, StageKind};
use crate::envelope::{header, Record};
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::Arc;

pub struct Log {
    level: Level,
    max_chars: usize,
    forward: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    #[default]
    Info,
    Warn,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default)]
    pub level: Level,
    /// Longer payloads are cut (default 512 characters).
    #[serde(default)]
    pub max_chars: Option<usize>,
}

impl StageKind for Log {
    const NAME: &'static str = "log";
    type Config = LogConfig;
    const FORWARDS_INPUT: bool = true;

    fn build(c: LogConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        Ok(Arc::new(Log { level: c.level, max_chars: c.max_chars.unwrap_or(512), forward: env.wired("default") }))
    }
}

#[async_trait]
impl Stage for Log {
    async fn handle(&self, record: &Record, cx: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let text = String::from_utf8_lossy(&record.payload);
        let payload: String = text.chars().take(self.max_chars).collect();
        let key = record.key_str().unwrap_or("");
        let id = record.header(header::MESSAGE_ID).unwrap_or("");
        let (topic, partition, offset) = (&*record.topic, record.partition, record.offset);
        match self.level {
            Level::Debug => tracing::debug!(stage = cx.stage, topic, partition, offset, key, message_id = id, %payload, "record"),
            Level::Info => tracing::info!(stage = cx.stage, topic, partition, offset, key, message_id = id, %payload, "record"),
            Level::Warn => tracing::warn!(stage = cx.stage, topic, partition, offset, key, message_id = id, %payload, "record"),
        }
        Ok(if self.forward { vec![Output::forward("default", record)] } else { Vec::new() })
    }
}
