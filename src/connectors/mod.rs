//! Clients of outside services that several kinds and apps use: LLM providers, embedders,
//! the shared HTTP plumbing and the WhatsApp Cloud API (its webhook is an ingress kind an
//! app registers under its own payload type name). Nothing here knows about an app or the
//! actors; a call answers with a value or a [`ServiceError`] that says whether trying again
//! may help.

pub mod embed;
pub mod http;
pub mod llm;
pub mod whatsapp;

use std::time::Duration;

/// Why a call to an outside service failed, classified for retrying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// May succeed later (a timeout, a refused connection, 408, 429, 5xx). `retry_after`
    /// is the service's own hint (`Retry-After`), when it gave one.
    #[error("{reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// Will fail again (another 4xx, an answer that does not parse).
    #[error("{0}")]
    Permanent(String),
}

impl ServiceError {
    pub fn transient(reason: impl Into<String>) -> Self {
        ServiceError::Transient { reason: reason.into(), retry_after: None }
    }
    pub fn permanent(reason: impl Into<String>) -> Self {
        ServiceError::Permanent(reason.into())
    }
}

/// A secret read from the environment at build time. Its `Debug` never shows the value,
/// so a client holding one can be logged safely.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Reads variable `name`; the error names the variable, never a value.
    pub fn from_env(name: &str) -> Result<Secret, String> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok(Secret(v)),
            Ok(_) => Err(format!("environment variable `{name}` is empty")),
            Err(_) => Err(format!("environment variable `{name}` is not set")),
        }
    }
    /// A secret the caller already holds (read from its own configuration).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_show_in_debug() {
        std::env::set_var("WEIR_TEST_CONNECTOR_SECRET", "hunter2");
        let s = Secret::from_env("WEIR_TEST_CONNECTOR_SECRET").expect("set");
        assert_eq!(s.expose(), "hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let missing = Secret::from_env("WEIR_TEST_CONNECTOR_SECRET_UNSET").unwrap_err();
        assert!(missing.contains("WEIR_TEST_CONNECTOR_SECRET_UNSET") && missing.contains("not set"), "{missing}");
    }
}
