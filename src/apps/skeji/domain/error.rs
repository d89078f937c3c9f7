//! How a domain action can fail: a business outcome (answered to the executor as a
//! `business_error` reply and stored like any answer) or a technical failure (a stage
//! error: busy database → retried, anything else → DLQ).

use crate::apps::skeji::model::BusinessError;
use crate::apps::skeji::store::DbError;
use crate::stages::StageError;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Shown to the user; ends the pipeline.
    #[error("{}: {}", .0.code, .0.message)]
    Business(BusinessError),
    #[error("{service} has no action `{action}`")]
    UnknownAction { service: &'static str, action: String },
    /// Stored data that no longer parses (a hand-edited row, a newer schema).
    #[error("stored {what} is not valid: {reason}")]
    Corrupt { what: String, reason: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for ActionError {
    fn from(e: rusqlite::Error) -> Self {
        ActionError::Db(DbError::Query(e))
    }
}

impl ActionError {
    pub fn business(code: &str, message: impl Into<String>, details: Value) -> Self {
        ActionError::Business(BusinessError { code: code.to_string(), message: message.into(), details })
    }

    /// Params missing or malformed: the user is told, the record is not dead-lettered.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::business("invalid", message, Value::Null)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::business("not_found", message, Value::Null)
    }

    pub fn corrupt(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        ActionError::Corrupt { what: what.into(), reason: reason.to_string() }
    }

    /// For the technical failures; business outcomes never become stage errors.
    pub fn into_stage_error(self) -> StageError {
        match self {
            ActionError::Db(e) => e.into_stage_error(),
            other => StageError::Permanent(other.to_string()),
        }
    }
}

pub type ActionResult<T> = Result<T, ActionError>;
