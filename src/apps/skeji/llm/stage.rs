//! `skeji-llm`: reads a [`ScrubbedMessage`], asks the configured provider for a plan and
//! emits one [`PipelineRequest`] on `default` (keyed by `conversation_id` in the topology).
//!
//! ```yaml
//! config:
//!   provider: rules            # or openai
//!   time_zone: Asia/Jerusalem  # relative dates resolve here, from the message's received_at
//!   openai: {base_url: https://api.openai.com/v1, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY,
//!            timeout: 30s, requests_per_second: 5}
//! ```
//! A transient provider error is retried with the stage's backoff; a permanent one
//! (rejected request, invalid model output) dead-letters the record with the reason.

use super::openai::{OpenAiConfig, OpenAiProvider};
use super::provider::{LlmInput, LlmProvider};
use super::rules::RulesProvider;
use super::validate::check_plan;
use crate::envelope::{header, Record};
use crate::apps::skeji::context;
use crate::apps::skeji::model::{types, PipelineRequest, ScrubbedMessage};
use crate::apps::skeji::store::Db;
use crate::stages::{decode, BuildEnv, BuildError, Output, Stage, StageContext, StageError, StageKind};
use async_trait::async_trait;
use jiff::tz::TimeZone;
use serde::Deserialize;
use std::sync::Arc;

/// Which provider plans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    #[default]
    Rules,
    Openai,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    #[serde(default)]
    pub provider: ProviderName,
    /// The business time zone (IANA name).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    #[serde(default)]
    pub openai: OpenAiConfig,
}

fn default_time_zone() -> String {
    "Asia/Jerusalem".into()
}

impl LlmConfig {
    fn time_zone(&self) -> Result<TimeZone, String> {
        TimeZone::get(&self.time_zone).map_err(|e| format!("time_zone {:?} is not a known IANA time zone: {e}", self.time_zone))
    }
}

/// The `skeji-llm` kind.
pub struct SkejiLlm;

impl StageKind for SkejiLlm {
    const NAME: &'static str = "skeji-llm";
    type Config = LlmConfig;
    const INPUT_TYPES: &'static [&'static str] = &[types::SCRUBBED_MESSAGE];
    const OUTPUT_TYPES: &'static [(&'static str, &'static str)] = &[("default", types::PIPELINE_REQUEST)];

    fn required_outputs() -> Vec<&'static str> {
        vec!["default"]
    }

    fn output_fields(output: &str) -> Option<Vec<&'static str>> {
        (output == "default").then(|| vec!["conversation_id", "user_phone", "message_id", "intent", "language", "pipeline", "reply"])
    }

    fn check(c: &LlmConfig) -> Result<(), String> {
        c.time_zone()?;
        // Checked whichever provider is chosen: a typo in the openai section should
        // surface before the day someone switches to it.
        c.openai.check()
    }

    fn build(c: LlmConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let tz = c.time_zone().map_err(|e| BuildError::new(env, e))?;
        let provider: Arc<dyn LlmProvider> = match c.provider {
            ProviderName::Rules => Arc::new(RulesProvider::new(tz).map_err(|e| BuildError::new(env, e))?),
            ProviderName::Openai => {
                let settings = c.openai.settings(|name| std::env::var(name).ok()).map_err(|e| BuildError::new(env, e))?;
                Arc::new(OpenAiProvider::new(settings, tz).map_err(|e| BuildError::new(env, e))?)
            }
        };
        std::fs::create_dir_all(&env.data_dir)
            .map_err(|e| BuildError::new(env, format!("cannot create data dir {}: {e}", env.data_dir.display())))?;
        let db = Db::open(&env.data_dir).map_err(|e| BuildError::new(env, e))?;
        db.migrate(context::SCHEMA).map_err(|e| BuildError::new(env, e))?;
        tracing::info!(stage = %env.stage.name, provider = provider.name(), time_zone = %c.time_zone, "LLM layer ready");
        Ok(Arc::new(LlmStage::new(provider, Some(db))))
    }
}

/// The running stage.
pub struct LlmStage {
    provider: Arc<dyn LlmProvider>,
    /// Where the last intent is remembered for the scrub layer; `None` in tests that only
    /// look at the mapping.
    db: Option<Db>,
}

impl LlmStage {
    pub fn new(provider: Arc<dyn LlmProvider>, db: Option<Db>) -> LlmStage {
        LlmStage { provider, db }
    }
}

#[async_trait]
impl Stage for LlmStage {
    async fn handle(&self, record: &Record, cx: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let msg: ScrubbedMessage = decode(record)?;
        let input = LlmInput {
            text: msg.text,
            language: msg.language.clone(),
            last_intent: msg.last_intent,
            user_phone: msg.user_phone.clone(),
            received_at: msg.received_at,
        };
        let provider = self.provider.name();
        let plan = self.provider.plan(&input).await.map_err(|e| {
            tracing::warn!(stage = cx.stage, provider, message_id = %msg.message_id, attempt = cx.attempt, transient = e.is_transient(), error = %e, "cannot plan the message");
            StageError::from(e)
        })?;
        // A provider bug must not reach the executor as a malformed pipeline.
        check_plan(&plan).map_err(|e| StageError::Permanent(format!("{provider} provider planned an invalid pipeline: {e}")))?;
        tracing::info!(
            stage = cx.stage,
            provider,
            message_id = %msg.message_id,
            conversation_id = %msg.conversation_id,
            intent = %plan.intent,
            steps = plan.pipeline.len(),
            "planned"
        );
        let request = PipelineRequest {
            conversation_id: msg.conversation_id,
            user_phone: msg.user_phone,
            message_id: msg.message_id,
            intent: plan.intent.as_str().to_string(),
            language: msg.language,
            pipeline: plan.pipeline,
            reply: plan.reply,
        };
        if let Some(db) = &self.db {
            // Only context for the next message: losing it must not fail this one.
            if let Err(e) = context::set_last_intent(db, &request.user_phone, &request.intent).await {
                tracing::warn!(stage = cx.stage, message_id = %request.message_id, error = %e, "cannot remember the last intent");
            }
        }
        Ok(vec![Output::json("default", &request)?.with_header(header::CONVERSATION_ID, request.conversation_id.clone())])
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
