//! The notifier's tables in the shared SQLite database: which notifications were sent
//! (idempotency, and a claim so two deliveries of one cause never send twice at once) and
//! the reminders still to send.
//!
//! A claim names its owner ([`super::owner`]): a claim whose owner is gone (its process
//! died, or its stage was rebuilt) is taken over at once; one whose owner is alive is
//! waited for, up to the lease, the last resort for an owner alive but stuck.

use crate::envelope::now_ms;
use crate::apps::skeji::store::{Db, DbError};
use rusqlite::OptionalExtension;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifier_sent (
    notification_id TEXT PRIMARY KEY,
    state           TEXT NOT NULL,      -- 'claimed' while being sent, then 'sent'
    claimed_ms      INTEGER NOT NULL,
    sent_ms         INTEGER,
    owner           TEXT                -- the claim's owner (super::owner); NULL in old rows
);
CREATE TABLE IF NOT EXISTS notifier_reminders (
    booking_id  TEXT PRIMARY KEY,
    user_phone  TEXT NOT NULL,
    body        TEXT NOT NULL,
    due_ms      INTEGER NOT NULL,
    start_ms    INTEGER NOT NULL,
    -- 'scheduled', 'sending' (claimed by one notifier), 'sent', 'cancelled', 'failed'
    state       TEXT NOT NULL,
    claimed_ms  INTEGER,
    sent_ms     INTEGER,
    owner       TEXT                    -- who is sending it (state 'sending')
);
CREATE INDEX IF NOT EXISTS notifier_reminders_due ON notifier_reminders (state, due_ms);";

/// Adds the `owner` columns to ledgers made before claims named their owner (`SCHEMA`
/// has them). Old claims keep `owner` NULL: only their lease can free them.
pub fn migrate_owner(db: &Db) -> Result<(), DbError> {
    db.with(|c| {
        for table in ["notifier_sent", "notifier_reminders"] {
            let has = c
                .prepare(&format!("SELECT 1 FROM pragma_table_info('{table}') WHERE name = 'owner'"))?
                .exists([])?;
            if !has {
                c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN owner TEXT"))?;
            }
        }
        Ok(())
    })
}

/// How long a claim protects a notification being sent when its owner is still alive;
/// after that another delivery may take it over (its sender is taken for stuck). Longer
/// than the slowest sink send. A claim whose owner is gone is taken at once.
pub const LEASE_MS: i64 = 60_000;

/// Where owners keep their lock files: beside the database.
fn data_dir(db: &Db) -> std::path::PathBuf {
    db.path().parent().map(std::path::Path::to_path_buf).unwrap_or_default()
}

/// Rows of sent notifications and finished reminders are kept this long (longer than any
/// topic's retention, so a redelivered cause still finds its row).
const KEEP_MS: i64 = 30 * 24 * 3600 * 1000;

/// The outcome of [`claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This caller sends it.
    Mine,
    /// Sent before: send nothing.
    AlreadySent,
    /// Another delivery is sending it; ask again after this many milliseconds.
    Busy(i64),
}

/// Claims `id` for sending, for `owner`; a claim older than `lease_ms` or held by an owner
/// that is gone is taken over.
pub async fn claim(db: &Db, id: &str, owner: &str, lease_ms: i64) -> Result<Claim, DbError> {
    let (id, owner, dir) = (id.to_string(), owner.to_string(), data_dir(db));
    db.call(move |c| {
        let now = now_ms();
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO notifier_sent (notification_id, state, claimed_ms, owner) VALUES (?1, 'claimed', ?2, ?3)",
            rusqlite::params![id, now, owner],
        )?;
        let claim = if inserted == 1 {
            Claim::Mine
        } else {
            let (state, claimed, holder): (String, i64, Option<String>) = tx.query_row(
                "SELECT state, claimed_ms, owner FROM notifier_sent WHERE notification_id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            // Another delivery in this same stage holds it (two causes of one id at once):
            // alive by definition.
            let gone = holder.as_deref().is_some_and(|h| h != owner && !super::owner::is_alive(&dir, h));
            if state == "sent" {
                Claim::AlreadySent
            } else if gone || now - claimed >= lease_ms {
                tracing::info!(notification_id = %id, previous = ?holder, owner_gone = gone,
                    "taking over the claim of a notification its sender did not finish");
                tx.execute(
                    "UPDATE notifier_sent SET claimed_ms = ?2, owner = ?3 WHERE notification_id = ?1",
                    rusqlite::params![id, now, owner],
                )?;
                Claim::Mine
            } else {
                Claim::Busy(claimed + lease_ms - now)
            }
        };
        tx.commit()?;
        Ok(claim)
    })
    .await
}

/// Who holds the claim of `id`, and in which state (for tests and diagnostics).
pub async fn claim_state(db: &Db, id: &str) -> Result<Option<(String, Option<String>)>, DbError> {
    let id = id.to_string();
    db.call(move |c| {
        Ok(c.query_row("SELECT state, owner FROM notifier_sent WHERE notification_id = ?1", [&id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
    })
    .await
}

/// Records that `id` was accepted by the sink.
pub async fn mark_sent(db: &Db, id: &str) -> Result<(), DbError> {
    let id = id.to_string();
    db.call(move |c| {
        c.execute(
            "UPDATE notifier_sent SET state = 'sent', sent_ms = ?2 WHERE notification_id = ?1",
            rusqlite::params![id, now_ms()],
        )?;
        Ok(())
    })
    .await
}

/// Gives up `owner`'s claim after a failed send, so the retry can claim it again (a claim
/// another owner took over meanwhile is theirs and stays).
pub async fn release(db: &Db, id: &str, owner: &str) -> Result<(), DbError> {
    let (id, owner) = (id.to_string(), owner.to_string());
    db.call(move |c| {
        c.execute(
            "DELETE FROM notifier_sent WHERE notification_id = ?1 AND state = 'claimed' AND owner IS ?2",
            rusqlite::params![id, owner],
        )?;
        Ok(())
    })
    .await
}

/// A reminder to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub booking_id: String,
    pub user_phone: String,
    pub body: String,
    pub start_ms: i64,
}

/// Schedules (or moves) the reminder of a booking; a cancelled or sent one stays so.
pub async fn schedule(db: &Db, r: Reminder, due_ms: i64) -> Result<(), DbError> {
    db.call(move |c| {
        c.execute(
            "INSERT INTO notifier_reminders (booking_id, user_phone, body, due_ms, start_ms, state)
             VALUES (?1, ?2, ?3, ?4, ?5, 'scheduled')
             ON CONFLICT (booking_id) DO UPDATE SET user_phone = ?2, body = ?3, due_ms = ?4, start_ms = ?5
             WHERE state = 'scheduled'",
            rusqlite::params![r.booking_id, r.user_phone, r.body, due_ms, r.start_ms],
        )?;
        Ok(())
    })
    .await
}

/// Cancels a booking's reminder. Leaves a tombstone when there is none yet, so an approval
/// processed after the cancellation (a redelivery) does not schedule it again.
pub async fn cancel(db: &Db, booking_id: &str) -> Result<(), DbError> {
    let id = booking_id.to_string();
    db.call(move |c| {
        c.execute(
            "INSERT INTO notifier_reminders (booking_id, user_phone, body, due_ms, start_ms, state)
             VALUES (?1, '', '', 0, 0, 'cancelled')
             ON CONFLICT (booking_id) DO UPDATE SET state = 'cancelled' WHERE state IN ('scheduled', 'sending')",
            [&id],
        )?;
        Ok(())
    })
    .await
}

/// Claims every reminder due at `now`, and any whose sender is gone or whose claim is
/// older than `lease_ms`. A reminder changes from `scheduled` to `sending` (owned by
/// `owner`) in one transaction, so only one notifier gets it.
pub async fn claim_due(db: &Db, now: i64, owner: &str, lease_ms: i64) -> Result<Vec<Reminder>, DbError> {
    let (owner, dir) = (owner.to_string(), data_dir(db));
    db.call(move |c| {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let candidates: Vec<(Reminder, String, Option<String>, i64)> = {
            let mut q = tx.prepare(
                "SELECT booking_id, user_phone, body, start_ms, state, owner, COALESCE(claimed_ms, 0) FROM notifier_reminders
                 WHERE (state = 'scheduled' AND due_ms <= ?1) OR state = 'sending'
                 ORDER BY due_ms LIMIT 256",
            )?;
            let rows = q.query_map([now], |r| {
                let reminder =
                    Reminder { booking_id: r.get(0)?, user_phone: r.get(1)?, body: r.get(2)?, start_ms: r.get(3)? };
                Ok((reminder, r.get(4)?, r.get(5)?, r.get(6)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut due = Vec::new();
        for (r, state, holder, claimed) in candidates {
            let takeable = state == "scheduled"
                || now - claimed >= lease_ms
                || holder.as_deref().is_some_and(|h| h != owner && !super::owner::is_alive(&dir, h));
            if takeable && due.len() < 64 {
                due.push(r);
            }
        }
        for r in &due {
            tx.execute(
                "UPDATE notifier_reminders SET state = 'sending', claimed_ms = ?2, owner = ?3 WHERE booking_id = ?1",
                rusqlite::params![r.booking_id, now, owner],
            )?;
        }
        tx.commit()?;
        Ok(due)
    })
    .await
}

/// Ends a claimed reminder: `state` is `sent` or `failed`, or `scheduled` with a new due
/// time to try again. Only while it is still claimed (a cancellation meanwhile wins).
pub async fn finish(db: &Db, booking_id: &str, state: &'static str, due_ms: Option<i64>) -> Result<(), DbError> {
    let id = booking_id.to_string();
    db.call(move |c| {
        c.execute(
            "UPDATE notifier_reminders SET state = ?2, due_ms = COALESCE(?3, due_ms), sent_ms = ?4
             WHERE booking_id = ?1 AND state = 'sending'",
            rusqlite::params![id, state, due_ms, (state == "sent").then(now_ms)],
        )?;
        Ok(())
    })
    .await
}

/// When the next reminder needs attention, if any (a reminder being sent by another
/// owner: when its lease ends).
pub async fn next_due(db: &Db, lease_ms: i64) -> Result<Option<i64>, DbError> {
    db.call(move |c| {
        let next: Option<i64> = c
            .query_row(
                "SELECT MIN(CASE state WHEN 'scheduled' THEN due_ms ELSE claimed_ms + ?1 END) FROM notifier_reminders
                 WHERE state IN ('scheduled', 'sending')",
                [lease_ms],
                |r| r.get(0),
            )
            .optional()?
            .flatten();
        Ok(next)
    })
    .await
}

/// The state of a booking's reminder (for tests and diagnostics).
pub async fn reminder_state(db: &Db, booking_id: &str) -> Result<Option<String>, DbError> {
    let id = booking_id.to_string();
    db.call(move |c| {
        Ok(c.query_row("SELECT state FROM notifier_reminders WHERE booking_id = ?1", [&id], |r| r.get(0)).optional()?)
    })
    .await
}

/// Deletes old rows of both tables.
pub async fn prune(db: &Db) -> Result<usize, DbError> {
    db.call(|c| {
        let before = now_ms() - KEEP_MS;
        let a = c.execute("DELETE FROM notifier_sent WHERE state = 'sent' AND sent_ms < ?1", [before])?;
        let b = c.execute(
            "DELETE FROM notifier_reminders WHERE state IN ('sent', 'cancelled', 'failed') AND due_ms < ?1",
            [before],
        )?;
        Ok(a + b)
    })
    .await
}
