//! Sends a message at most once per notification id (give or take a crash): claim the id,
//! send, then mark it sent. Marking only after the sink accepted the message means a
//! crash between the two sends it once more when its cause is redelivered (after the
//! claim's lease) — a duplicate is better than a message never sent.

use super::ledger::{self, Claim};
use super::render::Message;
use super::sink::{Sink, Text};
use crate::stages::skeji::model::SentNotification;
use crate::stages::skeji::store::{Db, DbError};
use crate::stages::StageError;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// Every notification sent in this process, for in-process observers (tests, tools). The
/// `notifications-sent` topic is the durable record; this also sees reminders, which a
/// background task sends with no record to answer.
static SENT: LazyLock<broadcast::Sender<SentNotification>> = LazyLock::new(|| broadcast::channel(4096).0);

/// Receives every notification this process sends from now on.
pub fn subscribe_sent() -> broadcast::Receiver<SentNotification> {
    SENT.subscribe()
}

/// The longest a delivery waits for another delivery of the same notification (its
/// claim's lease) before it fails transiently.
const MAX_WAIT: Duration = Duration::from_millis(ledger::LEASE_MS as u64 + 5_000);
const POLL: Duration = Duration::from_millis(250);

#[derive(Clone)]
pub struct Deliverer {
    pub db: Db,
    pub sink: Arc<dyn Sink>,
}

impl Deliverer {
    /// Sends `m` unless it was sent before; returns what was sent.
    pub async fn deliver(&self, m: &Message) -> Result<Option<SentNotification>, StageError> {
        let started = tokio::time::Instant::now();
        loop {
            match ledger::claim(&self.db, &m.notification_id).await.map_err(DbError::into_stage_error)? {
                Claim::Mine => break,
                Claim::AlreadySent => {
                    tracing::debug!(notification_id = %m.notification_id, "already sent; not sending again");
                    return Ok(None);
                }
                // Another delivery of the same cause (a redelivery racing the first) is
                // sending it: wait for its outcome rather than send twice.
                Claim::Busy(ms) if started.elapsed() < MAX_WAIT => {
                    let wait =
                        Duration::from_millis(u64::try_from(ms).unwrap_or(0)).clamp(Duration::from_millis(10), POLL);
                    tokio::time::sleep(wait).await;
                }
                Claim::Busy(_) => {
                    return Err(StageError::Transient(format!(
                        "notification {} is being sent by another delivery",
                        m.notification_id
                    )));
                }
            }
        }
        let text = Text { to: m.to.clone(), body: m.body.clone(), correlation_id: m.correlation_id.clone() };
        if let Err(e) = self.sink.send(&text).await {
            if let Err(release) = ledger::release(&self.db, &m.notification_id).await {
                // The claim then expires after its lease; the retry waits until then.
                tracing::warn!(notification_id = %m.notification_id, error = %release, "cannot release the claim");
            }
            return Err(e.into());
        }
        if let Err(e) = ledger::mark_sent(&self.db, &m.notification_id).await {
            // Sent, but not recorded: a redelivery after the lease would send it again.
            tracing::warn!(notification_id = %m.notification_id, error = %e, "sent but not recorded as sent");
        }
        let sent = SentNotification {
            notification_id: m.notification_id.clone(),
            to: m.to.clone(),
            body: m.body.clone(),
            kind: m.kind.to_string(),
            correlation_id: Some(m.correlation_id.clone()),
            sink: self.sink.name().to_string(),
        };
        tracing::info!(notification_id = %sent.notification_id, kind = %sent.kind, sink = %sent.sink, "notification sent");
        // No receiver is the normal case.
        let _ = SENT.send(sent.clone());
        Ok(Some(sent))
    }
}
