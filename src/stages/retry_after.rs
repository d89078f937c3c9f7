//! Honours a service's `Retry-After` without help from the runtime: when a call fails
//! transiently with a hint, the stage notes when the record may be tried again; on the
//! next attempt it waits out whatever the runtime's own backoff has not already covered.
//! The wait between attempts is therefore max(backoff, Retry-After), capped at
//! `retry.max`. (Once `StageError::Transient` can carry the hint, the runtime can do this
//! itself and this gate becomes a no-op.)

use crate::envelope::Record;
use crate::topology::plan::RetryPolicy;
use dashmap::DashMap;
use std::time::Duration;
use tokio::time::Instant;

pub struct RetryAfterGate {
    due: DashMap<(std::sync::Arc<str>, i32, i64), Instant>,
    cap: Duration,
    attempts: u32,
}

impl RetryAfterGate {
    pub fn new(retry: &RetryPolicy) -> Self {
        RetryAfterGate { due: DashMap::new(), cap: retry.max, attempts: retry.attempts }
    }

    fn key(record: &Record) -> (std::sync::Arc<str>, i32, i64) {
        (record.topic.clone(), record.partition, record.offset)
    }

    /// Before an attempt: waits until the time the service asked for, if it asked.
    pub async fn wait(&self, record: &Record, attempt: u32) {
        if attempt <= 1 {
            return;
        }
        if let Some((_, at)) = self.due.remove(&Self::key(record)) {
            tokio::time::sleep_until(at).await;
        }
    }

    /// After a transient failure: remembers the hint when another attempt will come.
    pub fn note(&self, record: &Record, attempt: u32, hint: Option<Duration>) {
        if let Some(h) = hint {
            if attempt < self.attempts {
                self.due.insert(Self::key(record), Instant::now() + h.min(self.cap));
            }
        }
    }

    /// Converts a connector's failure, noting its hint.
    pub fn stage_error(&self, record: &Record, attempt: u32, e: crate::connectors::ServiceError) -> super::StageError {
        if let crate::connectors::ServiceError::Transient { retry_after, .. } = &e {
            self.note(record, attempt, *retry_after);
        }
        e.into()
    }
}
