//! Stage kinds: what a stage does with one record. One module per kind; the registry
//! ([`Registry`]) lists every built-in kind in one place.
//!
//! A kind is a Rust type implementing [`StageKind`]: a serde config struct (the stage's
//! `config:` map in `topology.yaml`) and a `build` that returns the running [`Stage`].
//! A stage answers each record with [`Output`]s (routed by output name to the topics
//! wired in `to:`) or a classified [`StageError`]:
//! - `Transient`: retried with the stage's backoff; the offset waits.
//! - `Permanent`: the record goes to the stage's DLQ with the reason; the offset moves on.
//! - business outcomes (a rejection, a conflict) are ordinary outputs marked with
//!   [`Output::business`], routed like any other.

pub mod delay;
pub mod embed;
pub mod emitter;
pub mod filter;
pub mod http;
pub mod llm;
pub mod log;
pub mod passthrough;
pub mod payload;
mod registry;
pub mod router;
pub mod sql;
pub mod template;

pub use registry::Registry;

use crate::envelope::Record;
use crate::topology::plan::StagePlan;
use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

/// The running behaviour of a stage. Called concurrently for records of different keys
/// (never for two records of the same key at once), so shared state needs interior
/// mutability.
#[async_trait]
pub trait Stage: Send + Sync + 'static {
    async fn handle(&self, record: &Record, cx: &StageContext<'_>) -> Result<Vec<Output>, StageError>;

    /// Whether a record still in `handle` may be abandoned when the node shuts down (it is
    /// delivered again later). True for stages that only wait (e.g. `delay`); false by
    /// default, so a shutdown lets running records finish within the drain timeout.
    fn cancel_on_shutdown(&self) -> bool {
        false
    }
}

/// What a stage knows about the call.
#[derive(Debug, Clone, Copy)]
pub struct StageContext<'a> {
    pub stage: &'a str,
    /// 1 on the first attempt, 2 on the first retry, …
    pub attempt: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// May succeed if tried again (timeouts, a busy dependency).
    #[error("{0}")]
    Transient(String),
    /// Will fail however often it is tried (malformed input, a rejected request).
    #[error("{0}")]
    Permanent(String),
    /// Transient, and the service said when to try again (`Retry-After`): the runtime
    /// waits max(backoff, `retry_after`) before the next attempt, capped at `retry.max`.
    #[error("{reason}")]
    TransientAfter { reason: String, retry_after: std::time::Duration },
}

impl From<crate::connectors::ServiceError> for StageError {
    fn from(e: crate::connectors::ServiceError) -> Self {
        match e {
            crate::connectors::ServiceError::Transient { reason, retry_after: Some(retry_after) } => {
                StageError::TransientAfter { reason, retry_after }
            }
            crate::connectors::ServiceError::Transient { reason, retry_after: None } => StageError::Transient(reason),
            crate::connectors::ServiceError::Permanent(reason) => StageError::Permanent(reason),
        }
    }
}

impl StageError {
    pub fn class(&self) -> &'static str {
        match self {
            StageError::Transient(_) | StageError::TransientAfter { .. } => "transient",
            StageError::Permanent(_) => "permanent",
        }
    }

    pub fn is_transient(&self) -> bool {
        !matches!(self, StageError::Permanent(_))
    }

    /// The service's own hint for when to try again, if it gave one.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            StageError::TransientAfter { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Payload {
    /// Bytes forwarded as they are.
    Raw(Bytes),
    Json(serde_json::Value),
}

/// One record a stage emits.
#[derive(Debug, Clone)]
pub struct Output {
    /// The output name, wired to a topic in the stage's `to:`.
    pub name: Cow<'static, str>,
    pub payload: Payload,
    /// Overrides the key the stage's `key:` would compute.
    pub key: Option<String>,
    /// Extra headers (e.g. a conversation id the stage just assigned).
    pub headers: Vec<(String, String)>,
    /// Set for business outcomes: the reason, recorded in the `weir-outcome` header.
    pub business: Option<String>,
}

impl Output {
    pub fn new(name: impl Into<Cow<'static, str>>, payload: Payload) -> Self {
        Output { name: name.into(), payload, key: None, headers: Vec::new(), business: None }
    }

    /// The input's payload, unchanged, to `name`.
    pub fn forward(name: impl Into<Cow<'static, str>>, record: &Record) -> Self {
        Output::new(name, Payload::Raw(record.payload.clone()))
    }

    pub fn json(name: impl Into<Cow<'static, str>>, value: &impl serde::Serialize) -> Result<Self, StageError> {
        let v = serde_json::to_value(value)
            .map_err(|e| StageError::Permanent(format!("cannot encode output as JSON: {e}")))?;
        Ok(Output::new(name, Payload::Json(v)))
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn business(mut self, reason: impl Into<String>) -> Self {
        self.business = Some(reason.into());
        self
    }
}

/// Decodes a record's JSON payload; a record that does not decode is a permanent error
/// (it goes to the DLQ with serde's message as the reason).
pub fn decode<T: DeserializeOwned>(record: &Record) -> Result<T, StageError> {
    serde_json::from_slice(&record.payload).map_err(|e| {
        StageError::Permanent(format!("payload of {}[{}]@{} is not valid: {e}", record.topic, record.partition, record.offset))
    })
}

/// What a kind gets when a stage is built.
pub struct BuildEnv<'a> {
    pub stage: &'a StagePlan,
    pub node: Option<&'a str>,
    /// Where stages keep files (SQLite databases, outboxes).
    pub data_dir: PathBuf,
    /// The topology file's directory: relative paths in a stage's config start here.
    pub config_dir: PathBuf,
    /// Sends records on the stage's outputs outside `handle` (timers, reminders). `None`
    /// when a stage is built alone (unit tests).
    pub emitter: Option<emitter::Emitter>,
}

impl BuildEnv<'_> {
    /// Whether output `name` is wired to a topic in `to:`.
    pub fn wired(&self, name: &str) -> bool {
        self.stage.outputs.contains_key(name)
    }

    /// A path from the stage's config, relative to the topology file's directory.
    pub fn config_path(&self, path: &str) -> PathBuf {
        self.config_dir.join(path)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot build stage `{stage}` of kind `{kind}`: {reason}")]
pub struct BuildError {
    pub stage: String,
    pub kind: String,
    pub reason: String,
}

impl BuildError {
    pub fn new(env: &BuildEnv<'_>, reason: impl std::fmt::Display) -> Self {
        BuildError { stage: env.stage.name.clone(), kind: env.stage.kind.clone(), reason: reason.to_string() }
    }
}

/// A stage kind. Implement it for a type of your own and register it with
/// [`Registry::register_stage`] to use `kind: <NAME>` in a topology.
pub trait StageKind: 'static {
    /// The `kind:` value.
    const NAME: &'static str;
    /// The stage's `config:` map. Unknown fields should be refused
    /// (`#[serde(deny_unknown_fields)]`) so typos surface in `weir validate`.
    type Config: DeserializeOwned;

    /// Output names this kind emits; empty means any name (routed by config).
    fn outputs() -> Vec<&'static str> {
        vec!["default"]
    }
    /// Outputs that must be wired.
    fn required_outputs() -> Vec<&'static str> {
        Vec::new()
    }
    /// Payload fields written on an output, where known (checked against `key:`).
    fn output_fields(_output: &str) -> Option<Vec<&'static str>> {
        None
    }
    /// The registered payload type written on each output, e.g.
    /// `&[("default", "skeji.UserMessage")]`. `weir validate` refuses an output wired to a
    /// topic whose `payload_type` differs; outputs not listed are not checked.
    const OUTPUT_TYPES: &'static [(&'static str, &'static str)] = &[];
    /// Every output carries the input record unchanged (passthrough-like kinds), so the
    /// output topics must declare the `payload_type` the input topics declare.
    const FORWARDS_INPUT: bool = false;
    /// The registered payload types the kind decodes its input as; `weir validate` refuses
    /// a `from` topic declaring another. Empty: any payload.
    const INPUT_TYPES: &'static [&'static str] = &[];
    /// Checks a config beyond its shape (a regex that must compile, a range).
    fn check(_config: &Self::Config) -> Result<(), String> {
        Ok(())
    }
    fn build(config: Self::Config, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError>;
}

#[cfg(test)]
mod tests {
    use super::StageError;
    use crate::connectors::ServiceError;
    use std::time::Duration;

    #[test]
    fn a_service_hint_survives_the_conversion_and_stays_transient() {
        let hinted: StageError =
            ServiceError::Transient { reason: "HTTP 429".into(), retry_after: Some(Duration::from_secs(2)) }.into();
        assert_eq!(hinted.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!((hinted.class(), hinted.is_transient(), hinted.to_string().as_str()), ("transient", true, "HTTP 429"));
        let plain: StageError = ServiceError::transient("reset").into();
        assert_eq!((plain.retry_after(), plain.class()), (None, "transient"));
        let permanent: StageError = ServiceError::permanent("HTTP 400").into();
        assert_eq!((permanent.retry_after(), permanent.is_transient()), (None, false));
    }
}
