//! First wins per (correlation id, step): a step ends with whichever of its reply or its
//! deadline marker claims it first; anything arriving later for that step (a redelivery,
//! a late reply, a deadline that lost) is dropped. The claims live in `skeji.db`, not in
//! memory, so they hold across restarts and across executor instances — they are the
//! dedup for at-least-once redelivery.

use crate::stages::skeji::store::{Db, DbError};
use rusqlite::params;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pipeline_steps (
    correlation_id TEXT NOT NULL,
    step           INTEGER NOT NULL,
    outcome        TEXT NOT NULL,
    at             INTEGER NOT NULL,
    PRIMARY KEY (correlation_id, step)
);
CREATE INDEX IF NOT EXISTS pipeline_steps_at ON pipeline_steps (at);
";

/// Claims are kept a day: longer than any topic's retention for replies and deadlines.
pub const KEEP_MS: i64 = 24 * 60 * 60 * 1000;

/// Records that `step` of `correlation_id` ended with `outcome`; false when it had
/// already ended (this record lost).
pub async fn claim(db: &Db, correlation_id: &str, step: usize, outcome: &str, now_ms: i64) -> Result<bool, DbError> {
    let (cid, outcome) = (correlation_id.to_string(), outcome.to_string());
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    db.call(move |c| {
        let n = c.execute(
            "INSERT OR IGNORE INTO pipeline_steps (correlation_id, step, outcome, at) VALUES (?1, ?2, ?3, ?4)",
            params![cid, step, outcome, now_ms],
        )?;
        Ok(n == 1)
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
        assert!(claim(&db, "c1", 0, "ok", 1_000).await.expect("claim"));
        assert!(!claim(&db, "c1", 0, "deadline", 2_000).await.expect("claim"));
        assert!(claim(&db, "c1", 1, "deadline", 2_000).await.expect("claim"));
        assert_eq!(outcome(&db, "c1", 0).await.expect("outcome").as_deref(), Some("ok"));
        assert_eq!(prune(&db, 1_500 + KEEP_MS).await.expect("prune"), 1);
        assert_eq!(outcome(&db, "c1", 0).await.expect("outcome"), None);
        assert_eq!(outcome(&db, "c1", 1).await.expect("outcome").as_deref(), Some("deadline"));
    }
}
