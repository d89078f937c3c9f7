//! Gemini `POST {base_url}/v1beta/models/{model}:generateContent`, key in `x-goog-api-key`.

use super::{tokens, ChatProvider, ChatRequest, ChatResponse, Endpoint, Role, Usage};
use crate::connectors::ServiceError;
use async_trait::async_trait;
use serde_json::json;

pub struct GeminiChat {
    endpoint: Endpoint,
    url: String,
}

impl GeminiChat {
    pub(super) fn new(endpoint: Endpoint) -> Self {
        let url = format!("{}/v1beta/models/{}:generateContent", endpoint.base_url, endpoint.model);
        GeminiChat { endpoint, url }
    }
}

#[async_trait]
impl ChatProvider for GeminiChat {
    fn provider(&self) -> &'static str {
        "gemini"
    }
    fn model(&self) -> &str {
        &self.endpoint.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ServiceError> {
        let e = &self.endpoint;
        let system: Vec<_> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| json!({"text": m.content}))
            .collect();
        let contents: Vec<_> = request
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| json!({"role": if m.role == Role::Assistant {"model"} else {"user"}, "parts": [{"text": m.content}]}))
            .collect();
        let mut generation = json!({});
        if let Some(n) = e.max_tokens {
            generation["maxOutputTokens"] = json!(n);
        }
        if let Some(t) = e.temperature {
            generation["temperature"] = json!(t);
        }
        if request.json {
            generation["responseMimeType"] = json!("application/json");
        }
        let mut body = json!({"contents": contents, "generationConfig": generation});
        if !system.is_empty() {
            body["systemInstruction"] = json!({"parts": system});
        }
        let mut req = e.client.post(&self.url).json(&body);
        if let Some(key) = &e.key {
            let mut value = reqwest::header::HeaderValue::from_str(key.expose())
                .map_err(|_| ServiceError::permanent("the Gemini API key is not a valid header value"))?;
            value.set_sensitive(true);
            req = req.header("x-goog-api-key", value);
        }
        let what = format!("POST {}", self.url);
        let answer = crate::connectors::http::send_json(&what, req).await?;
        let parts = answer
            .pointer("/candidates/0/content/parts")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| ServiceError::permanent(format!("answer of {what} has no candidates[0].content.parts")))?;
        let text: String = parts.iter().filter_map(|p| p.get("text").and_then(|t| t.as_str())).collect();
        Ok(ChatResponse {
            text,
            usage: Usage {
                input_tokens: tokens(&answer, "/usageMetadata/promptTokenCount"),
                output_tokens: tokens(&answer, "/usageMetadata/candidatesTokenCount"),
            },
            model: answer.get("modelVersion").and_then(|m| m.as_str()).unwrap_or(&e.model).to_string(),
            mock: false,
        })
    }
}
