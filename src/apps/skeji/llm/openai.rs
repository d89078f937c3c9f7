//! The `openai` provider: any OpenAI-compatible Chat Completions endpoint, asked for
//! structured output (`response_format: json_schema`) and checked against the catalogue
//! before anything reaches the executor.
//!
//! The HTTP call is the shared OpenAI connector's ([`crate::connectors::llm::OpenAiChat`]):
//! its pooled client, bearer key and status classification. Errors: 408, 429, 5xx,
//! timeouts and connection failures are transient (the stage retries with backoff); other
//! 4xx, an unparseable body and output that breaks the contract are permanent
//! (dead-lettered, the user gets an apology).

use super::dates::LocalNow;
use super::prompt;
use super::provider::{LlmError, LlmInput, LlmProvider, Plan};
use super::validate::plan_from_model;
use crate::connectors::llm::OpenAiChat;
use crate::connectors::{Secret, ServiceError};
use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use jiff::tz::TimeZone;
use serde::Deserialize;
use serde_json::{json, Value};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// The `openai:` map of the stage config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default = "default_model")]
    pub model: String,
    /// The name of the environment variable holding the API key (never the key itself,
    /// so it stays out of topology files and logs).
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// The whole request, e.g. `30s`.
    #[serde(default = "default_timeout")]
    pub timeout: String,
    /// Outgoing requests per second (per stage instance); requests over it wait.
    #[serde(default = "default_rps")]
    pub requests_per_second: u32,
}

fn default_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_model() -> String {
    "gpt-4o-mini".into()
}
fn default_api_key_env() -> String {
    "OPENAI_API_KEY".into()
}
fn default_timeout() -> String {
    "30s".into()
}
fn default_rps() -> u32 {
    5
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        OpenAiConfig {
            base_url: default_base_url(),
            model: default_model(),
            api_key_env: default_api_key_env(),
            timeout: default_timeout(),
            requests_per_second: default_rps(),
        }
    }
}

impl OpenAiConfig {
    /// Checks what can be checked without the environment (for `weir validate`).
    pub fn check(&self) -> Result<(), String> {
        self.timeout()?;
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!("openai.base_url must be an http(s) URL, got {:?}", self.base_url));
        }
        if self.model.trim().is_empty() {
            return Err("openai.model must not be empty".into());
        }
        if self.requests_per_second == 0 {
            return Err("openai.requests_per_second must be at least 1".into());
        }
        Ok(())
    }

    fn timeout(&self) -> Result<Duration, String> {
        crate::topology::units::parse_duration(&self.timeout).map_err(|e| format!("openai.timeout: {e}"))
    }

    /// The settings, with the API key read through `env` (the process environment in
    /// production). A missing or empty key is an error naming the variable.
    pub fn settings(&self, env: impl Fn(&str) -> Option<String>) -> Result<OpenAiSettings, String> {
        self.check()?;
        let key = env(&self.api_key_env).filter(|k| !k.trim().is_empty()).ok_or_else(|| {
            format!("provider `openai` needs an API key in the environment variable `{}` (openai.api_key_env), which is not set", self.api_key_env)
        })?;
        Ok(OpenAiSettings {
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            api_key: ApiKey(key),
            timeout: self.timeout()?,
            requests_per_second: NonZeroU32::new(self.requests_per_second).ok_or("openai.requests_per_second must be at least 1")?,
        })
    }
}

/// An API key; its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey(pub String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    pub base_url: String,
    pub model: String,
    pub api_key: ApiKey,
    pub timeout: Duration,
    pub requests_per_second: NonZeroU32,
}

pub struct OpenAiProvider {
    /// The connector's client; holds the key (never logged).
    chat: OpenAiChat,
    url: String,
    model: String,
    timeout: Duration,
    tz: TimeZone,
    tz_name: String,
    limiter: DefaultDirectRateLimiter,
    system_prompt: String,
    schema: Value,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider").field("url", &self.url).field("model", &self.model).field("timeout", &self.timeout).finish()
    }
}

impl OpenAiProvider {
    /// A provider resolving dates in `tz`. The prompt and schema are generated once here.
    pub fn new(settings: OpenAiSettings, tz: TimeZone) -> Result<OpenAiProvider, LlmError> {
        let chat = OpenAiChat::connect(&settings.base_url, &settings.model, Some(Secret::new(settings.api_key.0)), settings.timeout)
            .map_err(LlmError::Permanent)?;
        let tz_name = tz.iana_name().unwrap_or("UTC").to_string();
        Ok(OpenAiProvider {
            url: chat.url().to_string(),
            chat,
            model: settings.model,
            timeout: settings.timeout,
            tz,
            tz_name,
            limiter: RateLimiter::direct(Quota::per_second(settings.requests_per_second)),
            system_prompt: prompt::system_prompt(),
            schema: prompt::response_schema(),
        })
    }

    fn request_body(&self, input: &LlmInput, now: &LocalNow) -> Value {
        // No `temperature`: some models refuse any value but the default, and the
        // schema plus validation already pin the output down.
        json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": prompt::user_message(input, now, &self.tz_name)},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": prompt::SCHEMA_NAME, "strict": true, "schema": self.schema},
            },
        })
    }
}

/// At most `max` characters of `s`, for error messages.
fn snippet(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The connector's classification, kept: transient stays transient.
fn llm_error(e: ServiceError) -> LlmError {
    match e {
        ServiceError::Transient { reason, .. } => LlmError::Transient(reason),
        ServiceError::Permanent(reason) => LlmError::Permanent(reason),
    }
}

#[derive(Debug, Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ChatMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

/// The plan in a successful response body.
fn plan_from_body(body: &str, url: &str, user_phone: &str) -> Result<Plan, LlmError> {
    let response: ChatResponse = serde_json::from_str(body)
        .map_err(|e| LlmError::Permanent(format!("unparseable response from {url}: {e}: {}", snippet(body, 200))))?;
    let choice = response.choices.into_iter().next().ok_or_else(|| LlmError::invalid_output("the response has no choices"))?;
    if let Some(refusal) = choice.message.refusal.filter(|r| !r.is_empty()) {
        return Err(LlmError::invalid_output(format!("the model refused: {}", snippet(&refusal, 200))));
    }
    if choice.finish_reason.as_deref() == Some("length") {
        return Err(LlmError::invalid_output("the answer was cut off (finish_reason: length)"));
    }
    let content = choice.message.content.ok_or_else(|| LlmError::invalid_output("the answer has no content"))?;
    plan_from_model(&content, user_phone)
}

#[async_trait]
impl LlmProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn plan(&self, input: &LlmInput) -> Result<Plan, LlmError> {
        let now = LocalNow::at(input.received_at, &self.tz).map_err(LlmError::Permanent)?;
        let body = self.request_body(input, &now);
        self.limiter.until_ready().await;
        let started = Instant::now();
        let answer = self.chat.post(&body).await.map_err(llm_error)?;
        tracing::debug!(url = %self.url, model = %self.model, elapsed_ms = started.elapsed().as_millis() as u64, "LLM answered");
        plan_from_body(&String::from_utf8_lossy(&answer), &self.url, &input.user_phone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_the_key_from_the_named_variable() {
        let c = OpenAiConfig { api_key_env: "SKEJI_TEST_KEY".into(), ..OpenAiConfig::default() };
        let e = c.settings(|_| None).expect_err("no key");
        assert!(e.contains("`SKEJI_TEST_KEY`"), "{e}");
        assert!(c.settings(|_| Some("  ".into())).is_err());
        let s = c.settings(|name| (name == "SKEJI_TEST_KEY").then(|| "sk-secret".to_string())).expect("settings");
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert!(!format!("{s:?}").contains("sk-secret"), "the key must never be printed");
    }

    #[test]
    fn config_checks() {
        assert!(OpenAiConfig { timeout: "soon".into(), ..OpenAiConfig::default() }.check().is_err());
        assert!(OpenAiConfig { base_url: "api.openai.com".into(), ..OpenAiConfig::default() }.check().is_err());
        assert!(OpenAiConfig { requests_per_second: 0, ..OpenAiConfig::default() }.check().is_err());
        assert_eq!(OpenAiConfig::default().check(), Ok(()));
    }

    #[test]
    fn connector_errors_keep_their_class() {
        assert!(llm_error(ServiceError::transient("HTTP 503 from POST u: busy")).is_transient());
        assert!(!llm_error(ServiceError::permanent("HTTP 400 from POST u: bad")).is_transient());
    }

    #[test]
    fn bodies_are_checked() {
        let refusal = r#"{"choices":[{"message":{"content":null,"refusal":"I can't"},"finish_reason":"stop"}]}"#;
        assert!(matches!(plan_from_body(refusal, "u", "1"), Err(LlmError::Permanent(m)) if m.contains("refused")));
        let cut = r#"{"choices":[{"message":{"content":"{\"intent\""},"finish_reason":"length"}]}"#;
        assert!(matches!(plan_from_body(cut, "u", "1"), Err(LlmError::Permanent(m)) if m.contains("cut off")));
        assert!(matches!(plan_from_body("<html>", "u", "1"), Err(LlmError::Permanent(m)) if m.contains("unparseable")));
        assert!(matches!(plan_from_body(r#"{"choices":[]}"#, "u", "1"), Err(LlmError::Permanent(m)) if m.contains("no choices")));
        assert_eq!(snippet("héllo", 2), "hé…");
    }
}
