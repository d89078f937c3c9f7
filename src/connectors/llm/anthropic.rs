//! Anthropic Messages API: `POST {base_url}/v1/messages`, key in `x-api-key`.

use super::{tokens, ChatProvider, ChatRequest, ChatResponse, Endpoint, Role, Usage};
use crate::connectors::ServiceError;
use async_trait::async_trait;
use serde_json::json;

/// The API version this client speaks.
const VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API.
const DEFAULT_MAX_TOKENS: u32 = 1024;

pub struct AnthropicChat {
    endpoint: Endpoint,
    url: String,
}

impl AnthropicChat {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        let url = format!("{}/v1/messages", endpoint.base_url);
        AnthropicChat { endpoint, url }
    }
}

#[async_trait]
impl ChatProvider for AnthropicChat {
    fn provider(&self) -> &'static str {
        "anthropic"
    }
    fn model(&self) -> &str {
        &self.endpoint.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ServiceError> {
        let e = &self.endpoint;
        // System text is a top-level field here, not a message.
        let system: Vec<&str> =
            request.messages.iter().filter(|m| m.role == Role::System).map(|m| m.content.as_str()).collect();
        let messages: Vec<_> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| json!({"role": if m.role == Role::Assistant {"assistant"} else {"user"}, "content": m.content}))
            .collect();
        let mut body = json!({"model": e.model, "max_tokens": e.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS), "messages": messages});
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if let Some(t) = e.temperature {
            body["temperature"] = json!(t);
        }
        let mut req = e.client.post(&self.url).header("anthropic-version", VERSION).json(&body);
        if let Some(key) = &e.key {
            let mut value = reqwest::header::HeaderValue::from_str(key.expose())
                .map_err(|_| ServiceError::permanent("the Anthropic API key is not a valid header value"))?;
            value.set_sensitive(true);
            req = req.header("x-api-key", value);
        }
        let what = format!("POST {}", self.url);
        let answer = crate::connectors::http::send_json(&what, req).await?;
        let blocks = answer
            .get("content")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| ServiceError::permanent(format!("answer of {what} has no `content`")))?;
        let text: String = blocks
            .iter()
            .filter(|b| b.get("type").and_then(|t| t.as_str()) == Some("text"))
            .filter_map(|b| b.get("text").and_then(|t| t.as_str()))
            .collect();
        Ok(ChatResponse {
            text,
            usage: Usage {
                input_tokens: tokens(&answer, "/usage/input_tokens"),
                output_tokens: tokens(&answer, "/usage/output_tokens"),
            },
            model: answer.get("model").and_then(|m| m.as_str()).unwrap_or(&e.model).to_string(),
            mock: false,
        })
    }
}
