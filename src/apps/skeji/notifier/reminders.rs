//! Sends due reminders in the background. Reminders live in SQLite, so they survive a
//! restart, and each is claimed before it is sent, so the four notifier stages (each runs
//! this task) and other processes never send one twice.
//!
//! The task sleeps until the earliest due reminder; scheduling an earlier one wakes it
//! ([`Notify`]). Reminders scheduled by another process are found at the next wake-up, at
//! most [`RESCAN`] later.

use super::deliver::Deliverer;
use super::ledger::{self, Reminder};
use super::render::Message;
use crate::envelope::now_ms;
use crate::apps::skeji::model::SentNotification;
use crate::stages::StageError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// The longest sleep, so reminders another process scheduled are not missed for long.
const RESCAN: Duration = Duration::from_secs(60);
/// After a failed transient send, try again this much later (while the booking is ahead).
const RETRY_MS: i64 = 30_000;
/// How often old rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Stops the task when the stage instance that started it is dropped.
pub struct TaskGuard(AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the reminder task on `rt`.
pub fn spawn(rt: &tokio::runtime::Handle, deliverer: Deliverer, wake: Arc<Notify>, stage: String) -> TaskGuard {
    TaskGuard(rt.spawn(run(deliverer, wake, stage)).abort_handle())
}

async fn run(d: Deliverer, wake: Arc<Notify>, stage: String) {
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            let pruned = match ledger::prune(&d.db).await {
                Ok(n) => super::outbox::prune(&d.db).await.map(|m| n + m),
                Err(e) => Err(e),
            };
            match pruned {
                Ok(n) => tracing::debug!(%stage, rows = n, "notifier tables pruned"),
                Err(e) => tracing::warn!(%stage, error = %e, "cannot prune notifier tables"),
            }
            last_prune = Some(tokio::time::Instant::now());
        }
        let wait = match pass(&d, &stage).await {
            Ok(Some(next)) => Duration::from_millis(u64::try_from(next - now_ms()).unwrap_or(0)).min(RESCAN),
            Ok(None) => RESCAN,
            Err(e) => {
                // The database is busy or broken: try again soon, without spinning.
                tracing::warn!(%stage, error = %e, "reminder pass failed");
                Duration::from_secs(1)
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => {}
            }
        }
    }
}

/// Sends every due reminder; returns when the next one is due.
async fn pass(d: &Deliverer, stage: &str) -> Result<Option<i64>, crate::apps::skeji::store::DbError> {
    for r in ledger::claim_due(&d.db, now_ms(), d.owner.id(), d.lease_ms).await? {
        let outcome = send(d, &r).await;
        let (state, due) = match &outcome {
            Ok(_) => ("sent", None),
            Err(StageError::Transient(_)) if now_ms() + RETRY_MS < r.start_ms => {
                ("scheduled", Some(now_ms() + RETRY_MS))
            }
            Err(_) => ("failed", None),
        };
        if let Err(e) = &outcome {
            tracing::warn!(%stage, booking_id = %r.booking_id, error = %e, next = state, "reminder not sent");
        }
        ledger::finish(&d.db, &r.booking_id, state, due).await?;
        // Observers hear of it once it is recorded as done.
        if let Ok(Some(sent)) = &outcome {
            super::deliver::announce(sent);
        }
    }
    ledger::next_due(&d.db, d.lease_ms).await
}

async fn send(d: &Deliverer, r: &Reminder) -> Result<Option<SentNotification>, StageError> {
    if r.user_phone.is_empty() {
        return Err(StageError::Permanent("the reminder has no recipient".into()));
    }
    let m = Message {
        notification_id: format!("reminder:{}", r.booking_id),
        to: r.user_phone.clone(),
        body: r.body.clone(),
        kind: "reminder",
        correlation_id: r.booking_id.clone(),
    };
    // Already sent (a crash before `finish`) counts as sent.
    d.send_once(&m).await
}
