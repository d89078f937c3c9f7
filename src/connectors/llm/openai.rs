//! OpenAI-compatible `POST {base_url}/chat/completions` (OpenAI, Ollama, vLLM, LiteLLM…).

use super::{tokens, ChatProvider, ChatRequest, ChatResponse, Endpoint, Role, Usage};
use crate::connectors::ServiceError;
use async_trait::async_trait;
use serde_json::json;

pub struct OpenAiChat {
    endpoint: Endpoint,
    url: String,
}

impl OpenAiChat {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        let url = format!("{}/chat/completions", endpoint.base_url);
        OpenAiChat { endpoint, url }
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
        let mut req = e.client.post(&self.url).json(&body);
        if let Some(key) = &e.key {
            req = req.bearer_auth(key.expose());
        }
        let what = format!("POST {}", self.url);
        let answer = crate::connectors::http::send_json(&what, req).await?;
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
