//! Sends a message once per notification id: claim the id, send, mark it sent.
//!
//! - `outbox`: the line and the sent mark are one SQLite transaction, and the file is a
//!   projection of that table ([`super::outbox`]): exactly once, crash or not.
//! - `whatsapp`: the POST cannot join a local transaction, so the mark follows the API's
//!   answer at once (one SQLite UPDATE). A crash in that window sends the message once more
//!   when its cause is redelivered — a duplicate is better than a message never sent.
//!
//! A claim names its owner; a delivery finding the claim of an owner that is gone (killed,
//! or its stage rebuilt) takes it over at once instead of waiting for the lease.

use super::ledger::{self, Claim};
use super::outbox::{self, Committed};
use super::owner::Owner;
use super::render::Message;
use super::sink::{Sink, Text};
use crate::apps::skeji::model::SentNotification;
use crate::apps::skeji::store::{Db, DbError};
use crate::stages::StageError;
use std::path::PathBuf;
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

/// Tells this process's observers ([`subscribe_sent`]) that `sent` went out.
pub fn announce(sent: &SentNotification) {
    // No receiver is the normal case.
    let _ = SENT.send(sent.clone());
}

const POLL: Duration = Duration::from_millis(250);

/// Where a notifier's messages go.
#[derive(Clone)]
pub enum Route {
    /// `<dir>/outbox.jsonl`, projected from `skeji.db` in that same directory.
    Outbox { dir: PathBuf },
    /// An external API (WhatsApp).
    Sink(Arc<dyn Sink>),
}

impl Route {
    pub fn name(&self) -> &'static str {
        match self {
            Route::Outbox { .. } => "outbox",
            Route::Sink(s) => s.name(),
        }
    }
}

#[derive(Clone)]
pub struct Deliverer {
    pub db: Db,
    pub route: Route,
    /// This stage instance, named in its claims.
    pub owner: Arc<Owner>,
    /// How long a live owner's claim is respected (the last resort for a stuck one).
    pub lease_ms: i64,
}

impl Deliverer {
    /// Sends `m` unless it was sent before, and tells in-process observers; returns what
    /// was sent.
    pub async fn deliver(&self, m: &Message) -> Result<Option<SentNotification>, StageError> {
        let sent = self.send_once(m).await?;
        if let Some(s) = &sent {
            announce(s);
        }
        Ok(sent)
    }

    /// [`Deliverer::deliver`] without telling observers: for a caller that has more to record
    /// first and then calls [`announce`] (reminders).
    pub async fn send_once(&self, m: &Message) -> Result<Option<SentNotification>, StageError> {
        let id = m.notification_id.as_str();
        let started = tokio::time::Instant::now();
        // A delivery waiting on a live owner's claim gives up a little after its lease.
        let max_wait = Duration::from_millis(u64::try_from(self.lease_ms).unwrap_or(0) + 5_000);
        loop {
            match ledger::claim(&self.db, id, self.owner.id(), self.lease_ms).await.map_err(DbError::into_stage_error)? {
                Claim::Mine => break,
                Claim::AlreadySent => {
                    tracing::debug!(notification_id = %id, "already sent; not sending again");
                    self.heal_outbox().await?;
                    return Ok(None);
                }
                // Another live delivery of the same cause (a redelivery racing the first)
                // is sending it: wait for its outcome rather than send twice.
                Claim::Busy(ms) if started.elapsed() < max_wait => {
                    let wait =
                        Duration::from_millis(u64::try_from(ms).unwrap_or(0)).clamp(Duration::from_millis(10), POLL);
                    tokio::time::sleep(wait).await;
                }
                Claim::Busy(_) => {
                    return Err(StageError::Transient(format!("notification {id} is being sent by another delivery")));
                }
            }
        }
        let text = Text { to: m.to.clone(), body: m.body.clone(), correlation_id: m.correlation_id.clone() };
        match &self.route {
            Route::Outbox { dir } => {
                let mut body = text.cloud_api_body();
                body["correlation_id"] = text.correlation_id.clone().into();
                body["notification_id"] = id.into();
                let committed = match outbox::commit(&self.db, id, self.owner.id(), &body).await {
                    Ok(committed) => committed,
                    Err(e) => {
                        // Nothing was written: give the claim back, or this owner's own
                        // retry would find it "busy" (alive by definition) and wait out
                        // the whole lease.
                        self.release(id).await;
                        return Err(e.into_stage_error());
                    }
                };
                match committed {
                    Committed::Written => {}
                    Committed::AlreadySent | Committed::NotMine => {
                        tracing::debug!(notification_id = %id, "sent by another delivery meanwhile");
                        self.heal_outbox().await?;
                        return Ok(None);
                    }
                }
                // Committed: the line is owed to the file. If this append fails, the
                // retry (or any later delivery, or the next start) appends it.
                outbox::project(&self.db, dir).await.map_err(outbox::OutboxError::into_stage_error)?;
            }
            Route::Sink(sink) => {
                if let Err(e) = sink.send(&text).await {
                    self.release(id).await;
                    return Err(e.into());
                }
                // The at-least-once window: the API accepted it; until this mark commits, a
                // crash means one more send.
                if let Err(e) = ledger::mark_sent(&self.db, id).await {
                    tracing::warn!(notification_id = %id, error = %e, "sent but not recorded as sent");
                }
            }
        }
        let sent = SentNotification {
            notification_id: m.notification_id.clone(),
            to: m.to.clone(),
            body: m.body.clone(),
            kind: m.kind.to_string(),
            correlation_id: Some(m.correlation_id.clone()),
            sink: self.route.name().to_string(),
        };
        tracing::info!(notification_id = %sent.notification_id, kind = %sent.kind, sink = %sent.sink, "notification sent");
        Ok(Some(sent))
    }

    /// Gives up this owner's claim of `id` after a failed delivery, so its retry can claim
    /// it again at once.
    async fn release(&self, id: &str) {
        if let Err(release) = ledger::release(&self.db, id, self.owner.id()).await {
            // The claim is then freed when this owner is gone, or by its lease.
            tracing::warn!(notification_id = %id, error = %release, "cannot release the claim");
        }
    }

    /// Appends outbox lines still owed to the file (a sender that committed and then died,
    /// or whose append failed). Nothing for other sinks.
    async fn heal_outbox(&self) -> Result<(), StageError> {
        if let Route::Outbox { dir } = &self.route {
            outbox::project(&self.db, dir).await.map_err(outbox::OutboxError::into_stage_error)?;
        }
        Ok(())
    }
}
