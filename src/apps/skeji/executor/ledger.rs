//! First wins per (correlation id, step): a step ends with whichever of its reply or its
//! deadline marker claims it first; anything arriving later for that step (a late reply,
//! a deadline that lost) is dropped. The claims live in `skeji.db`, not in memory, so they
//! hold across restarts and across executor instances.
//!
//! The claim also names the record that won. When that same record comes again (the
//! executor stopped after claiming and before its outputs were accepted, so the offset was
//! not committed), it is told so and emits its outputs again: at-least-once, never lost.
//! Downstream commands carry the same command ids, so the services answer them once.

use crate::apps::skeji::store::{Db, DbError};
use rusqlite::params;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pipeline_steps (
    correlation_id TEXT NOT NULL,
    step           INTEGER NOT NULL,
    outcome        TEXT NOT NULL,
    at             INTEGER NOT NULL,
    winner         TEXT,               -- message id of the record that ended the step
    PRIMARY KEY (correlation_id, step)
);
CREATE INDEX IF NOT EXISTS pipeline_steps_at ON pipeline_steps (at);
";

/// Adds the winner column to ledgers made before it existed (`SCHEMA` has it).
pub fn migrate_winner(db: &Db) -> Result<(), DbError> {
    db.with(|c| {
        let has: bool = c
            .prepare("SELECT 1 FROM pragma_table_info('pipeline_steps') WHERE name = 'winner'")?
            .exists([])?;
        if !has {
            c.execute_batch("ALTER TABLE pipeline_steps ADD COLUMN winner TEXT")?;
        }
        Ok(())
    })
}

/// What a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This record ended the step.
    Won,
    /// This same record had ended it before (a redelivery): emit its outputs again.
    Redelivered,
    /// Another record ended it: drop this one.
    Lost,
}

/// Claims are kept a day: longer than any topic's retention for replies and deadlines.
pub const KEEP_MS: i64 = 24 * 60 * 60 * 1000;

/// Records that `step` of `correlation_id` ended with `outcome`, by the record `winner`
/// (its message id); says whether this record won, had won before, or lost.
pub async fn claim(
    db: &Db,
    correlation_id: &str,
    step: usize,
    outcome: &str,
    winner: &str,
    now_ms: i64,
) -> Result<Claim, DbError> {
    use rusqlite::OptionalExtension;
    let (cid, outcome, winner) = (correlation_id.to_string(), outcome.to_string(), winner.to_string());
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    db.call(move |c| {
        let n = c.execute(
            "INSERT OR IGNORE INTO pipeline_steps (correlation_id, step, outcome, at, winner) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![cid, step, outcome, now_ms, winner],
        )?;
        if n == 1 {
            return Ok(Claim::Won);
        }
        let before: Option<Option<String>> = c
            .query_row(
                "SELECT winner FROM pipeline_steps WHERE correlation_id = ?1 AND step = ?2",
                params![cid, step],
                |r| r.get(0),
            )
            .optional()?;
        Ok(match before.flatten() {
            Some(w) if w == winner => Claim::Redelivered,
            _ => Claim::Lost,
        })
    })
    .await
}

/// How `step` of `correlation_id` ended, if it did.
pub async fn outcome(db: &Db, correlation_id: &str, step: usize) -> Result<Option<String>, DbError> {
    use rusqlite::OptionalExtension;
    let cid = correlation_id.to_string();
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    db.call(move |c| {
        Ok(c.query_row(
            "SELECT outcome FROM pipeline_steps WHERE correlation_id = ?1 AND step = ?2",
            params![cid, step],
            |r| r.get(0),
        )
        .optional()?)
    })
    .await
}

/// Forgets claims older than [`KEEP_MS`].
pub async fn prune(db: &Db, now_ms: i64) -> Result<usize, DbError> {
    let cutoff = now_ms - KEEP_MS;
    db.call(move |c| Ok(c.execute("DELETE FROM pipeline_steps WHERE at < ?1", [cutoff])?)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_claim_wins_and_old_claims_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Db::open(dir.path()).expect("db");
        db.migrate(SCHEMA).expect("schema");
        assert_eq!(claim(&db, "c1", 0, "ok", "m-reply", 1_000).await.expect("claim"), Claim::Won);
        assert_eq!(claim(&db, "c1", 0, "deadline", "m-deadline", 2_000).await.expect("claim"), Claim::Lost);
        assert_eq!(claim(&db, "c1", 0, "ok", "m-reply", 2_500).await.expect("claim"), Claim::Redelivered);
        assert_eq!(claim(&db, "c1", 1, "deadline", "m-deadline", 2_000).await.expect("claim"), Claim::Won);
        assert_eq!(outcome(&db, "c1", 0).await.expect("outcome").as_deref(), Some("ok"));
        assert_eq!(prune(&db, 1_500 + KEEP_MS).await.expect("prune"), 1);
        assert_eq!(outcome(&db, "c1", 0).await.expect("outcome"), None);
        assert_eq!(outcome(&db, "c1", 1).await.expect("outcome").as_deref(), Some("deadline"));
    }

    #[tokio::test]
    async fn a_ledger_from_before_the_winner_column_is_migrated() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Db::open(dir.path()).expect("db");
        db.migrate(
            "CREATE TABLE pipeline_steps (correlation_id TEXT NOT NULL, step INTEGER NOT NULL, \
             outcome TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (correlation_id, step));",
        )
        .expect("old table");
        migrate_winner(&db).expect("migrated");
        migrate_winner(&db).expect("and again: nothing to do");
        assert_eq!(claim(&db, "c1", 0, "ok", "m1", 1_000).await.expect("claim"), Claim::Won);
        assert_eq!(claim(&db, "c1", 0, "ok", "m1", 1_000).await.expect("claim"), Claim::Redelivered);
    }
}
