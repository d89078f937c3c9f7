//! The offline mock provider: deterministic, never calls anything, and says so
//! ([`ChatResponse::mock`] is true; the `llm` kind adds `weir-llm-mock: true` to its outputs).
//!
//! It answers `reply` when configured, else `mock answer: <the last user message>`. Token
//! usage is counted as whitespace-separated words, so counters move predictably in tests.

use super::{ChatProvider, ChatRequest, ChatResponse, Role, Usage};
use crate::connectors::ServiceError;
use async_trait::async_trait;

pub struct MockChat {
    model: String,
    reply: Option<String>,
}

impl MockChat {
    pub fn new(model: &str, reply: Option<String>) -> Self {
        MockChat { model: model.to_string(), reply }
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

#[async_trait]
impl ChatProvider for MockChat {
    fn provider(&self) -> &'static str {
        "mock"
    }
    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, ServiceError> {
        let last_user = request.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.as_str());
        let text = match &self.reply {
            Some(r) => r.clone(),
            None => format!("mock answer: {}", last_user.unwrap_or("")),
        };
        let input_tokens = request.messages.iter().map(|m| words(&m.content)).sum();
        Ok(ChatResponse {
            usage: Usage { input_tokens, output_tokens: words(&text) },
            text,
            model: self.model.clone(),
            mock: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::llm::Message;

    #[tokio::test]
    async fn mock_is_deterministic_and_labelled() {
        let m = MockChat::new("mock", None);
        let req = ChatRequest { messages: vec![Message::system("be brief"), Message::user("hello there")], json: false };
        let a = m.complete(&req).await.expect("mock answers");
        let b = m.complete(&req).await.expect("mock answers");
        assert_eq!(a.text, "mock answer: hello there");
        assert_eq!(a.text, b.text);
        assert!(a.mock);
        assert_eq!(a.usage, Usage { input_tokens: 4, output_tokens: 4 });
    }
}
