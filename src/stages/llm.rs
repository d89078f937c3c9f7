//! `llm`: one chat completion per record, from a prompt template over payload fields.
//!
//! ```yaml
//! kind: llm
//! from: leads
//! to: scored
//! config:
//!   provider: {kind: openai, model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}
//!   # or {kind: openai, base_url: "http://127.0.0.1:11434/v1", model: llama3.2} (Ollama, no key)
//!   # or {kind: anthropic, …} / {kind: gemini, …} / {kind: mock, reply: '{"intent": "buy"}'}
//!   system: "You classify sales leads."
//!   prompt: "Lead {lead_id} wrote: {message}. Answer as JSON {\"intent\": …}"
//!   response_format: json             # text (default) | json
//!   schema: {type: object, required: [intent]}   # JSON Schema the answer must match
//!   into: llm                         # the answer under this field; without it, it replaces the payload
//!   prices: {gpt-4o-mini: {input: 0.15, output: 0.60}}   # USD per 1M tokens
//!   cache: {ttl: 10m, max_entries: 10000}
//!   requests_per_second: 20
//!   tokens_per_minute: 200000
//! ```
//!
//! A JSON answer that does not parse or match the schema is asked for once more with the
//! validation error appended; a second miss is permanent (dead-lettered). Provider
//! timeouts, 429 and 5xx are transient. Outputs carry `weir-llm-provider` and
//! `weir-llm-model` headers; the offline mock's also carry `weir-llm-mock: true`.
//!
//! Metrics: `weir_llm_tokens_total{stage,model,direction}`,
//! `weir_llm_cost_usd_total{stage,model}`, `weir_llm_cache_total{stage,result}`.

use super::template::{self, Template};
use super::{BuildEnv, BuildError, Output, Payload, Stage, StageContext, StageError, StageKind};
use crate::connectors::llm::{self as providers, ChatProvider, ChatRequest, Message, ProviderConfig, Usage};
use crate::envelope::Record;
use crate::telemetry::metrics::{kind_counter, KindCounter};
use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;


#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseFormat {
    #[default]
    Text,
    Json,
}

/// USD per one million tokens.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub ttl: String,
    pub max_entries: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub provider: ProviderConfig,
    pub prompt: String,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub response_format: ResponseFormat,
    #[serde(default)]
    pub schema: Option<Value>,
    #[serde(default)]
    pub into: Option<String>,
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    #[serde(default)]
    pub requests_per_second: Option<NonZeroU32>,
    #[serde(default)]
    pub tokens_per_minute: Option<NonZeroU32>,
}

/// The counters one `llm` stage owns (rendered on `/metrics`).
struct LlmCounters {
    input_tokens: Arc<KindCounter>,
    output_tokens: Arc<KindCounter>,
    cost: Arc<KindCounter>,
    hits: Arc<KindCounter>,
    misses: Arc<KindCounter>,
}

impl LlmCounters {
    fn new(stage: &str, model: &str) -> Self {
        let tokens = |direction| {
            kind_counter("weir_llm_tokens", "LLM tokens, by direction (input, output).", &[
                ("stage", stage),
                ("model", model),
                ("direction", direction),
            ])
        };
        let cache = |result| {
            kind_counter("weir_llm_cache", "LLM response cache lookups, by result (hit, miss).", &[
                ("stage", stage),
                ("result", result),
            ])
        };
        LlmCounters {
            input_tokens: tokens("input"),
            output_tokens: tokens("output"),
            cost: kind_counter("weir_llm_cost_usd", "LLM cost in USD from the stage's price table.", &[
                ("stage", stage),
                ("model", model),
            ]),
            hits: cache("hit"),
            misses: cache("miss"),
        }
    }
}

/// What the cache keeps: the answer as it goes into the payload.
#[derive(Clone)]
struct Answer {
    value: Value,
    mock: bool,
}

pub struct Llm {
    provider: Arc<dyn ChatProvider>,
    prompt: Template,
    system: Option<Template>,
    json: bool,
    schema: Option<jsonschema::Validator>,
    into: Option<String>,
    price: Option<Price>,
    counters: LlmCounters,
    cache: Option<moka::sync::Cache<String, Answer>>,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
}

fn compile_schema(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::validator_for(schema).map_err(|e| format!("`schema` is not a valid JSON Schema: {e}"))
}

impl StageKind for Llm {
    const NAME: &'static str = "llm";
    type Config = LlmConfig;

    fn required_outputs() -> Vec<&'static str> {
        vec!["default"]
    }

    fn check(c: &LlmConfig) -> Result<(), String> {
        c.provider.check()?;
        Template::parse(&c.prompt)?;
        if let Some(s) = &c.system {
            Template::parse(s)?;
        }
        if let Some(s) = &c.schema {
            if c.response_format != ResponseFormat::Json {
                return Err("`schema` needs `response_format: json`".into());
            }
            compile_schema(s)?;
        }
        if let Some(cache) = &c.cache {
            crate::topology::units::parse_duration(&cache.ttl)?;
        }
        Ok(())
    }

    fn build(c: LlmConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let err = |e: String| BuildError::new(env, e);
        Self::check(&c).map_err(err)?;
        let provider = providers::build(&c.provider).map_err(err)?;
        let cache = match &c.cache {
            Some(cc) => Some(
                moka::sync::Cache::builder()
                    .max_capacity(cc.max_entries)
                    .time_to_live(crate::topology::units::parse_duration(&cc.ttl).map_err(err)?)
                    .build(),
            ),
            None => None,
        };
        let model = provider.model().to_string();
        Ok(Arc::new(Llm {
            counters: LlmCounters::new(&env.stage.name, &model),
            price: c.prices.get(&model).copied(),
            provider,
            prompt: Template::parse(&c.prompt).map_err(err)?,
            system: c.system.as_deref().map(Template::parse).transpose().map_err(err)?,
            json: c.response_format == ResponseFormat::Json,
            schema: c.schema.as_ref().map(compile_schema).transpose().map_err(err)?,
            into: c.into,
            cache,
            requests: c.requests_per_second.map(|n| RateLimiter::direct(Quota::per_second(n))),
            tokens: c.tokens_per_minute.map(|n| (RateLimiter::direct(Quota::per_minute(n)), n)),
        }))
    }
}

/// A model's JSON answer, with a Markdown code fence around it tolerated.
fn parse_json_answer(text: &str) -> Result<Value, String> {
    let t = text.trim();
    let t = t.strip_prefix("```json").or_else(|| t.strip_prefix("```")).map_or(t, |rest| rest.trim_end_matches("```"));
    serde_json::from_str(t.trim()).map_err(|e| format!("the answer is not JSON ({e})"))
}

impl Llm {
    fn count(&self, usage: Usage) {
        self.counters.input_tokens.add(usage.input_tokens as f64);
        self.counters.output_tokens.add(usage.output_tokens as f64);
        if let Some(p) = self.price {
            let usd = (usage.input_tokens as f64 * p.input + usage.output_tokens as f64 * p.output) / 1_000_000.0;
            self.counters.cost.add(usd);
        }
    }

    /// Waits for the request and token budgets. Tokens are estimated before the call
    /// (4 characters a token), so a burst cannot overshoot the minute's budget by much.
    async fn admit(&self, request: &ChatRequest) {
        if let Some(l) = &self.requests {
            l.until_ready().await;
        }
        if let Some((l, per_minute)) = &self.tokens {
            let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
            let estimate = u32::try_from(chars / 4).unwrap_or(u32::MAX).clamp(1, per_minute.get());
            if let Some(n) = NonZeroU32::new(estimate) {
                // Err only when n exceeds the burst, which the clamp rules out.
                let _ = l.until_n_ready(n).await;
            }
        }
    }

    async fn call(&self, request: &ChatRequest) -> Result<(String, bool), StageError> {
        self.admit(request).await;
        let answer =
            self.provider.complete(request).await.map_err(StageError::from)?;
        self.count(answer.usage);
        Ok((answer.text, answer.mock))
    }

    /// Checks a JSON answer against the schema; the error is what the model is told.
    fn validate(&self, text: &str) -> Result<Value, String> {
        let value = parse_json_answer(text)?;
        if let Some(schema) = &self.schema {
            let errors: Vec<String> = schema.iter_errors(&value).take(3).map(|e| format!("{} at `{}`", e, e.instance_path())).collect();
            if !errors.is_empty() {
                return Err(format!("the answer does not match the schema: {}", errors.join("; ")));
            }
        }
        Ok(value)
    }

    async fn answer(&self, cx: &StageContext<'_>, mut request: ChatRequest) -> Result<Answer, StageError> {
        let (text, mock) = self.call(&request).await?;
        if !self.json {
            return Ok(Answer { value: Value::String(text), mock });
        }
        let problem = match self.validate(&text) {
            Ok(value) => return Ok(Answer { value, mock }),
            Err(problem) => problem,
        };
        tracing::info!(stage = cx.stage, %problem, "LLM answer invalid; asking once more");
        request.messages.push(Message::assistant(text));
        request.messages.push(Message::user(format!(
            "Your previous answer was invalid: {problem}. Answer again with only the corrected JSON."
        )));
        let (text, mock) = self.call(&request).await?;
        match self.validate(&text) {
            Ok(value) => Ok(Answer { value, mock }),
            Err(again) => Err(StageError::Permanent(format!("LLM answer invalid after one corrective retry: {again}"))),
        }
    }
}

#[async_trait]
impl Stage for Llm {
    async fn handle(&self, record: &Record, cx: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let payload: Value = super::decode(record)?;
        let prompt = self.prompt.render(&payload).map_err(StageError::Permanent)?;
        let system = self.system.as_ref().map(|s| s.render(&payload)).transpose().map_err(StageError::Permanent)?;
        let key = format!(
            "{}\u{0}{}\u{0}{}\u{0}{prompt}",
            self.provider.provider(),
            self.provider.model(),
            system.as_deref().unwrap_or("")
        );
        let cached = self.cache.as_ref().and_then(|c| c.get(&key));
        if self.cache.is_some() {
            if cached.is_some() { &self.counters.hits } else { &self.counters.misses }.add(1.0);
        }
        let answer = match cached {
            Some(a) => a,
            None => {
                let mut messages = Vec::new();
                if let Some(s) = system {
                    messages.push(Message::system(s));
                }
                messages.push(Message::user(prompt));
                let a = self.answer(cx, ChatRequest { messages, json: self.json }).await?;
                if let Some(c) = &self.cache {
                    c.insert(key, a.clone());
                }
                a
            }
        };
        let out = match &self.into {
            Some(field) => {
                let mut payload = payload;
                template::set_at(&mut payload, field, answer.value).map_err(StageError::Permanent)?;
                payload
            }
            None => answer.value,
        };
        let mut output = Output::new("default", Payload::Json(out))
            .with_header("weir-llm-provider", self.provider.provider())
            .with_header("weir-llm-model", self.provider.model());
        if answer.mock {
            output = output.with_header("weir-llm-mock", "true");
        }
        Ok(vec![output])
    }
}

