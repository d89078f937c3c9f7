//! The `outbox` sink, exactly once: a message and its "sent" mark are one SQLite
//! transaction (a row of `notifier_outbox`), and `<data-dir>/outbox.jsonl` is a projection
//! of that table, appended in id order. Each line carries its `outbox_id`, so whoever
//! projects (every delivery right after its commit, and every notifier when it is built)
//! first reads the last id the file holds and appends only the rows after it. A crash
//! between the commit and the append leaves the row for the next projection; a crash in the
//! middle of an append leaves a partial last line, which the next projection cuts off and
//! writes whole. Projections of all processes take turns through a `flock` on the file.
//!
//! The highest id written is also kept in `notifier_outbox_file`, so a file an operator
//! moved away (a relay consumed it) is continued, not refilled from the table.

use crate::envelope::now_ms;
use crate::apps::skeji::store::{Db, DbError};
use rusqlite::OptionalExtension;
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifier_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id TEXT NOT NULL UNIQUE,
    body            TEXT NOT NULL,      -- the line without its outbox_id (JSON object)
    created_ms      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS notifier_outbox_file (
    file       TEXT PRIMARY KEY,
    written_id INTEGER NOT NULL
);";

pub const FILE: &str = "outbox.jsonl";

/// Rows already in the file are kept this long, then pruned.
const KEEP_MS: i64 = 7 * 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("outbox row {id} is not a JSON object: {reason}")]
    Row { id: i64, reason: String },
}

impl From<rusqlite::Error> for OutboxError {
    fn from(e: rusqlite::Error) -> Self {
        OutboxError::Db(DbError::Query(e))
    }
}

impl OutboxError {
    /// The disk or the database may clear up: transient, except a row that cannot be a line.
    pub fn into_stage_error(self) -> crate::stages::StageError {
        match self {
            OutboxError::Db(e) => e.into_stage_error(),
            e @ OutboxError::Io { .. } => crate::stages::StageError::Transient(e.to_string()),
            e @ OutboxError::Row { .. } => crate::stages::StageError::Permanent(e.to_string()),
        }
    }
}

/// What [`commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// The row is in the table and the notification is marked sent.
    Written,
    /// Sent before (by another delivery): nothing written.
    AlreadySent,
    /// The claim is no longer this owner's (taken over after its lease): nothing written.
    NotMine,
}

/// Writes the message of `notification_id` (claimed by `owner`) to the outbox table and
/// marks it sent, in one transaction.
pub async fn commit(db: &Db, notification_id: &str, owner: &str, body: &Value) -> Result<Committed, DbError> {
    let (id, owner) = (notification_id.to_string(), owner.to_string());
    let body = body.to_string();
    db.call(move |c| {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let claim: Option<(String, Option<String>)> = tx
            .query_row("SELECT state, owner FROM notifier_sent WHERE notification_id = ?1", [&id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let done = match claim {
            Some((state, _)) if state == "sent" => Committed::AlreadySent,
            Some((_, holder)) if holder.as_deref() == Some(owner.as_str()) => {
                let now = now_ms();
                let n = tx.execute(
                    "INSERT OR IGNORE INTO notifier_outbox (notification_id, body, created_ms) VALUES (?1, ?2, ?3)",
                    rusqlite::params![id, body, now],
                )?;
                tx.execute(
                    "UPDATE notifier_sent SET state = 'sent', sent_ms = ?2 WHERE notification_id = ?1",
                    rusqlite::params![id, now],
                )?;
                if n == 1 {
                    Committed::Written
                } else {
                    Committed::AlreadySent
                }
            }
            _ => Committed::NotMine,
        };
        tx.commit()?;
        Ok(done)
    })
    .await
}

/// Appends to `<data_dir>/outbox.jsonl` every row the file lacks; returns how many.
pub async fn project(db: &Db, data_dir: &Path) -> Result<usize, OutboxError> {
    let path = data_dir.join(FILE);
    db.call(move |c| Ok(project_with(c, &path))).await?
}

/// [`project`] on this thread (build time).
pub fn project_now(db: &Db, data_dir: &Path) -> Result<usize, OutboxError> {
    let path = data_dir.join(FILE);
    db.with(|c| Ok(project_with(c, &path)))?
}

fn project_with(c: &mut rusqlite::Connection, path: &Path) -> Result<usize, OutboxError> {
    let io = |source| OutboxError::Io { path: path.to_path_buf(), source };
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
    // Blocks until other projections (any process) are done; released when `file` closes.
    super::owner::lock(&file).map_err(io)?;
    let in_file = last_id(&mut file).map_err(io)?;
    let watermark: i64 = c
        .query_row("SELECT written_id FROM notifier_outbox_file WHERE file = ?1", [FILE], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    let after = in_file.unwrap_or(0).max(watermark);
    let rows: Vec<(i64, String)> = {
        let mut q = c.prepare("SELECT id, body FROM notifier_outbox WHERE id > ?1 ORDER BY id")?;
        let rows = q.query_map([after], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    for (id, body) in &rows {
        let mut line: Value =
            serde_json::from_str(body).map_err(|e| OutboxError::Row { id: *id, reason: e.to_string() })?;
        let Some(fields) = line.as_object_mut() else {
            return Err(OutboxError::Row { id: *id, reason: "not an object".into() });
        };
        fields.insert("outbox_id".into(), Value::from(*id));
        serde_json::to_writer(&mut out, &line).map_err(|e| OutboxError::Row { id: *id, reason: e.to_string() })?;
        out.push(b'\n');
    }
    if !out.is_empty() {
        file.seek(SeekFrom::End(0)).map_err(io)?;
        file.write_all(&out).map_err(io)?;
        file.flush().map_err(io)?;
    }
    let written = rows.last().map_or(after, |(id, _)| *id);
    if written > watermark {
        c.execute(
            "INSERT INTO notifier_outbox_file (file, written_id) VALUES (?1, ?2)
             ON CONFLICT (file) DO UPDATE SET written_id = MAX(written_id, ?2)",
            rusqlite::params![FILE, written],
        )?;
    }
    Ok(rows.len())
}

/// The `outbox_id` of the file's last whole line (`None`: empty, or a line from before
/// lines had ids). A partial last line — a writer killed in the middle — is cut off.
fn last_id(file: &mut File) -> std::io::Result<Option<i64>> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut chunk = 4096u64;
    loop {
        let start = len.saturating_sub(chunk);
        let mut tail = vec![0u8; usize::try_from(len - start).unwrap_or(usize::MAX)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut tail)?;
        // Cut a partial last line (no newline after it).
        let end = match tail.iter().rposition(|b| *b == b'\n') {
            Some(i) if i + 1 == tail.len() => tail.len(),
            Some(i) => {
                let keep = start + i as u64 + 1;
                tracing::warn!(cut = len - keep, "outbox.jsonl ends with a partial line (a writer was killed); rewriting it");
                file.set_len(keep)?;
                return last_id(file);
            }
            None if start == 0 => {
                tracing::warn!(cut = len, "outbox.jsonl holds one partial line (a writer was killed); rewriting it");
                file.set_len(0)?;
                return Ok(None);
            }
            None => {
                chunk *= 4;
                continue;
            }
        };
        let body = &tail[..end - 1];
        match body.iter().rposition(|b| *b == b'\n') {
            Some(i) => return Ok(id_of(&body[i + 1..])),
            None if start == 0 => return Ok(id_of(body)),
            None => chunk *= 4,
        }
    }
}

fn id_of(line: &[u8]) -> Option<i64> {
    serde_json::from_slice::<Value>(line).ok()?.get("outbox_id")?.as_i64()
}

/// Deletes rows written to the file long ago.
pub async fn prune(db: &Db) -> Result<usize, DbError> {
    db.call(|c| {
        let n = c.execute(
            "DELETE FROM notifier_outbox WHERE created_ms < ?1
             AND id <= COALESCE((SELECT written_id FROM notifier_outbox_file WHERE file = ?2), 0)",
            rusqlite::params![now_ms() - KEEP_MS, FILE],
        )?;
        Ok(n)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(text: &str) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(FILE);
        std::fs::write(&path, text).expect("write");
        let f = OpenOptions::new().read(true).write(true).open(&path).expect("open");
        (dir, f)
    }

    #[test]
    fn the_last_whole_line_names_the_last_id_and_a_partial_one_is_cut() {
        let (_d, mut f) = file_with("{\"outbox_id\":1}\n{\"outbox_id\":2}\n");
        assert_eq!(last_id(&mut f).expect("read"), Some(2));
        let (d, mut f) = file_with("{\"outbox_id\":1}\n{\"outbox_id\":2}\n{\"outbox_i");
        assert_eq!(last_id(&mut f).expect("read"), Some(2));
        assert_eq!(std::fs::read_to_string(d.path().join(FILE)).expect("read"), "{\"outbox_id\":1}\n{\"outbox_id\":2}\n");
        let (d, mut f) = file_with("{\"outbox_");
        assert_eq!(last_id(&mut f).expect("read"), None);
        assert_eq!(std::fs::read_to_string(d.path().join(FILE)).expect("read"), "");
        let long = format!("{{\"outbox_id\":9,\"pad\":\"{}\"}}\n", "x".repeat(10_000));
        let (_d, mut f) = file_with(&format!("{{\"outbox_id\":8}}\n{long}"));
        assert_eq!(last_id(&mut f).expect("read"), Some(9));
    }
}
