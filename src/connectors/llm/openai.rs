//! OpenAI-compatible `POST {base_url}/chat/completions` (OpenAI, Ollama, vLLM, LiteLLM…).

use super::{tokens, ChatProvider, ChatRequest, ChatResponse, Endpoint, Role, Usage};
use crate::connectors::{Secret, ServiceError};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::time::Duration;

pub struct OpenAiChat {
    endpoint: Endpoint,
    url: String,
}

impl OpenAiChat {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        let url = format!("{}/chat/completions", endpoint.base_url);
        OpenAiChat { endpoint, url }
    }

    /// A client for `{base_url}/chat/completions` with a key the caller already read
    /// (`None`: no `Authorization`, for local servers) and a per-request timeout, for
    /// callers that build their own request bodies (an app's strict JSON schema).
    pub fn connect(base_url: &str, model: &str, key: Option<Secret>, timeout: Duration) -> Result<Self, String> {
        Ok(OpenAiChat::new(Endpoint {
            client: crate::connectors::http::pooled_client(timeout)?,
            base_url: base_url.trim_end_matches('/').to_string(),
            model: model.to_string(),
            key,
            max_tokens: None,
            temperature: None,
        }))
    }

    /// The endpoint it posts to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs a complete Chat Completions `body` and returns the raw body of a 2xx answer;
    /// other statuses, timeouts and connection failures are classified as in
    /// [`crate::connectors::http::send`]. The key never appears in an error.
    pub async fn post(&self, body: &Value) -> Result<bytes::Bytes, ServiceError> {
        let what = format!("POST {}", self.url);
        let (_, answer) = crate::connectors::http::send(&what, self.request(body)).await?;
        Ok(answer)
    }

    fn request(&self, body: &Value) -> reqwest::RequestBuilder {
        let req = self.endpoint.client.post(&self.url).json(body);
        match &self.endpoint.key {
            Some(key) => req.bearer_auth(key.expose()),
            None => req,
        }
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

#[async_trait]
impl ChatProvider for OpenAiChat {
    fn provider(&self) -> &'static str {
        "openai"
    }
    fn model(&self) -> &str {
        &self.endpoint.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ServiceError> {
        let e = &self.endpoint;
        let messages: Vec<_> = request.messages.iter().map(|m| json!({"role": role(m.role), "content": m.content})).collect();
        let mut body = json!({"model": e.model, "messages": messages});
        if let Some(n) = e.max_tokens {
            body["max_tokens"] = json!(n);
        }
        if let Some(t) = e.temperature {
            body["temperature"] = json!(t);
        }
        if request.json {
            body["response_format"] = json!({"type": "json_object"});
        }
        let what = format!("POST {}", self.url);
        let answer = crate::connectors::http::send_json(&what, self.request(&body)).await?;
        let text = answer
            .pointer("/choices/0/message/content")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| ServiceError::permanent(format!("answer of {what} has no choices[0].message.content")))?;
        Ok(ChatResponse {
            text: text.to_string(),
            usage: Usage {
                input_tokens: tokens(&answer, "/usage/prompt_tokens"),
                output_tokens: tokens(&answer, "/usage/completion_tokens"),
            },
            model: answer.get("model").and_then(|m| m.as_str()).unwrap_or(&e.model).to_string(),
            mock: false,
        })
    }
}
