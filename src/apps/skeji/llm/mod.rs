//! The LLM layer (`skeji-llm`): turns a user's message into a `PipelineRequest` — an
//! intent and the steps the executor runs (`docs/apps/skeji.md`, "Pipelines").
//!
//! - [`stage`]: the stage kind and its config; maps provider errors to stage errors.
//! - [`provider`]: the provider trait, its input/plan and typed errors.
//! - [`rules`]: the default provider, deterministic English parsing (with [`dates`] — the
//!   date rules are documented there —, [`lexicon`] and [`register`]).
//! - [`openai`]: any OpenAI-compatible Chat Completions endpoint with structured output;
//!   [`prompt`] generates its system prompt and JSON schema.
//! - [`catalog`]: the intents and the action catalogue as data; [`pipelines`] builds each
//!   intent's steps; [`validate`] checks plans against the catalogue.
use crate::stages::Registry;

pub mod catalog;
pub mod dates;
pub mod lexicon;
pub mod openai;
pub mod pipelines;
pub mod prompt;
pub mod provider;
pub mod register;
pub mod rules;
pub mod stage;
pub mod validate;

pub use openai::{OpenAiConfig, OpenAiProvider, OpenAiSettings};
pub use provider::{Intent, LlmError, LlmInput, LlmProvider, Plan};
pub use rules::RulesProvider;
pub use stage::{LlmConfig, LlmStage, SkejiLlm};

/// Registers `skeji-llm`.
pub fn register(r: &mut Registry) {
    r.register_stage::<SkejiLlm>();
}
