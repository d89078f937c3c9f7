//! What every LLM provider implements: a message in, a plan (intent + pipeline) out.
//! The stage (`super::stage`) owns the envelope fields of the `PipelineRequest`; a
//! provider only decides what to run.

use crate::apps::skeji::model::Step;
use crate::stages::StageError;
use async_trait::async_trait;

/// The intents of `docs/apps/skeji.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Intent {
    Book,
    Availability,
    Cancel,
    List,
    RegisterBusiness,
    Approve,
    Help,
}

impl Intent {
    pub const ALL: [Intent; 7] = [
        Intent::Book,
        Intent::Availability,
        Intent::Cancel,
        Intent::List,
        Intent::RegisterBusiness,
        Intent::Approve,
        Intent::Help,
    ];

    /// The wire name (`PipelineRequest::intent`).
    pub fn as_str(self) -> &'static str {
        match self {
            Intent::Book => "book",
            Intent::Availability => "availability",
            Intent::Cancel => "cancel",
            Intent::List => "list",
            Intent::RegisterBusiness => "register_business",
            Intent::Approve => "approve",
            Intent::Help => "help",
        }
    }

    pub fn parse(s: &str) -> Option<Intent> {
        Intent::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a provider gets: the user's message and what is known about it.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmInput {
    pub text: String,
    /// ISO 639-1 code as the scrub layer detected it.
    pub language: String,
    pub last_intent: Option<String>,
    /// E.164 digits without `+`; providers put it into params where the contract says so.
    pub user_phone: String,
    /// Milliseconds since the Unix epoch. Relative dates ("tomorrow") are resolved from
    /// this instant, never from the machine's clock, so a redelivered message plans the
    /// same way and tests are deterministic.
    pub received_at: i64,
}

/// A provider's answer: the pieces of a `PipelineRequest` that depend on the text.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub intent: Intent,
    pub pipeline: Vec<Step>,
    /// The text to send as is when there is nothing to run (help, a clarifying question).
    pub reply: Option<String>,
}

impl Plan {
    /// A plan that runs nothing and answers with `reply`.
    pub fn help(reply: impl Into<String>) -> Plan {
        Plan { intent: Intent::Help, pipeline: Vec::new(), reply: Some(reply.into()) }
    }
}

/// Why a provider could not plan. The class decides what happens to the record: a
/// transient error is retried with the stage's backoff, a permanent one dead-letters it
/// (and the user gets an apology from the DLQ notifier).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// Timeouts, 429, 5xx, connection errors: worth another try.
    #[error("LLM provider unavailable: {0}")]
    Transient(String),
    /// Rejected requests (4xx), invalid output: another try gives the same answer.
    #[error("{0}")]
    Permanent(String),
}

impl LlmError {
    /// A permanent error for model output that breaks the contract.
    pub fn invalid_output(detail: impl std::fmt::Display) -> LlmError {
        LlmError::Permanent(format!("invalid LLM output: {detail}"))
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, LlmError::Transient(_))
    }
}

impl From<LlmError> for StageError {
    fn from(e: LlmError) -> StageError {
        match e {
            LlmError::Transient(_) => StageError::Transient(e.to_string()),
            LlmError::Permanent(_) => StageError::Permanent(e.to_string()),
        }
    }
}

/// An LLM provider. Object-safe so the stage holds `Arc<dyn LlmProvider>` chosen by config.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait LlmProvider: Send + Sync {
    /// A short name for logs (`rules`, `openai`).
    fn name(&self) -> &'static str;

    async fn plan(&self, input: &LlmInput) -> Result<Plan, LlmError>;
}
