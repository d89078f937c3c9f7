//! Chat-completion clients behind one trait: messages in, text and token usage out.
//!
//! - `openai`: any OpenAI-compatible `/chat/completions` endpoint, including a local
//!   Ollama (`http://127.0.0.1:11434/v1`) or vLLM base URL with no key;
//! - `anthropic`: the Messages API;
//! - `gemini`: `generateContent`;
//! - `mock`: deterministic and offline, for tests and default topologies. Its answers
//!   are labelled `mock` (see [`ChatResponse::mock`]); it never calls anything.
//!
//! Keys come from the environment variable named by `api_key_env`; they are held in a
//! [`Secret`](super::Secret) and never logged.

mod anthropic;
mod gemini;
mod mock;
mod openai;

pub use mock::MockChat;
pub use openai::OpenAiChat;

use super::ServiceError;
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Message { role: Role::User, content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message { role: Role::Assistant, content: content.into() }
    }
    pub fn system(content: impl Into<String>) -> Self {
        Message { role: Role::System, content: content.into() }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Ask for a JSON answer where the provider supports it.
    pub json: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
}

#[derive(Debug, Clone)]
pub struct ChatResponse {
    pub text: String,
    pub usage: Usage,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// True for the offline mock: the answer is canned, not a model's.
    pub mock: bool,
}

/// A chat-completion provider.
#[async_trait]
pub trait ChatProvider: Send + Sync {
    /// `openai`, `anthropic`, `gemini` or `mock`.
    fn provider(&self) -> &'static str;
    /// The configured model.
    fn model(&self) -> &str;
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ServiceError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    Mock,
}

/// `provider:` in an `llm` stage's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Required for real providers; the mock defaults to `mock`.
    #[serde(default)]
    pub model: Option<String>,
    /// Overrides the provider's public endpoint (a local Ollama/vLLM, a proxy, a test
    /// server). For `openai` it is the base that `/chat/completions` is appended to.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable holding the API key (never the key itself). Optional for
    /// `openai` (local servers need none).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Per-request timeout, default 60s.
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Mock only: the canned answer (default: a deterministic echo of the prompt).
    #[serde(default)]
    pub reply: Option<String>,
}

impl ProviderConfig {
    pub fn model_name(&self) -> &str {
        self.model.as_deref().unwrap_or("mock")
    }

    /// Checks what can be checked without the environment.
    pub fn check(&self) -> Result<(), String> {
        if self.kind != ProviderKind::Mock {
            if self.model.is_none() {
                return Err("provider needs a `model`".into());
            }
            if self.reply.is_some() {
                return Err("`reply` is for the mock provider only".into());
            }
        }
        if matches!(self.kind, ProviderKind::Anthropic | ProviderKind::Gemini) && self.api_key_env.is_none() {
            return Err("provider needs `api_key_env` (the variable holding the key)".into());
        }
        if let Some(t) = &self.timeout {
            crate::topology::units::parse_duration(t)?;
        }
        Ok(())
    }
}

/// Settings every HTTP provider shares.
struct Endpoint {
    client: reqwest::Client,
    base_url: String,
    model: String,
    key: Option<super::Secret>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
}

impl Endpoint {
    fn new(c: &ProviderConfig, default_base: &str) -> Result<Endpoint, String> {
        let timeout = match &c.timeout {
            Some(t) => crate::topology::units::parse_duration(t)?,
            None => Duration::from_secs(60),
        };
        let key = match &c.api_key_env {
            Some(var) => Some(super::Secret::from_env(var)?),
            None => None,
        };
        Ok(Endpoint {
            client: super::http::pooled_client(timeout)?,
            base_url: c.base_url.clone().unwrap_or_else(|| default_base.to_string()).trim_end_matches('/').to_string(),
            model: c.model_name().to_string(),
            key,
            max_tokens: c.max_tokens,
            temperature: c.temperature,
        })
    }
}

/// Builds the provider `config` names (reads the key from the environment now).
pub fn build(config: &ProviderConfig) -> Result<Arc<dyn ChatProvider>, String> {
    config.check()?;
    Ok(match config.kind {
        ProviderKind::Openai => Arc::new(openai::OpenAiChat::new(Endpoint::new(config, "https://api.openai.com/v1")?)),
        ProviderKind::Anthropic => {
            Arc::new(anthropic::AnthropicChat::new(Endpoint::new(config, "https://api.anthropic.com")?))
        }
        ProviderKind::Gemini => {
            Arc::new(gemini::GeminiChat::new(Endpoint::new(config, "https://generativelanguage.googleapis.com")?))
        }
        ProviderKind::Mock => Arc::new(MockChat::new(config.model_name(), config.reply.clone())),
    })
}

/// A number at `path` in a JSON answer, 0 when absent (usage is informative).
fn tokens(v: &serde_json::Value, pointer: &str) -> u64 {
    v.pointer(pointer).and_then(serde_json::Value::as_u64).unwrap_or(0)
}
