//! The user's conversation context, shared by the scrub layer (which opens or continues a
//! conversation on every message) and the LLM layer (which records the last intent).

use super::store::{Db, DbError};
use rusqlite::OptionalExtension;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS user_context (
    user_phone      TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    language        TEXT NOT NULL,
    last_intent     TEXT
);";

/// A user's context after [`enter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserContext {
    pub conversation_id: String,
    pub last_intent: Option<String>,
    /// True when this message started a new conversation.
    pub new_conversation: bool,
}

/// Records a message from `user_phone` at `now_ms`: continues the user's conversation if
/// the previous message is less than `idle_ms` old, otherwise starts a new one (and forgets
/// the last intent). Atomic, so two messages racing still share one conversation.
pub async fn enter(db: &Db, user_phone: &str, now_ms: i64, idle_ms: i64, language: &str) -> Result<UserContext, DbError> {
    let (phone, language) = (user_phone.to_string(), language.to_string());
    db.call(move |c| {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let row: Option<(String, i64, Option<String>)> = tx
            .query_row(
                "SELECT conversation_id, last_seen_ms, last_intent FROM user_context WHERE user_phone = ?1",
                [&phone],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let ctx = match row {
            Some((conversation_id, last_seen, last_intent)) if now_ms - last_seen < idle_ms => {
                UserContext { conversation_id, last_intent, new_conversation: false }
            }
            _ => UserContext {
                conversation_id: format!("conv-{}", uuid::Uuid::now_v7().simple()),
                last_intent: None,
                new_conversation: true,
            },
        };
        tx.execute(
            "INSERT INTO user_context (user_phone, conversation_id, last_seen_ms, language, last_intent)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (user_phone) DO UPDATE SET conversation_id = ?2, last_seen_ms = MAX(last_seen_ms, ?3),
                 language = ?4, last_intent = ?5",
            rusqlite::params![phone, ctx.conversation_id, now_ms, language, ctx.last_intent],
        )?;
        tx.commit()?;
        Ok(ctx)
    })
    .await
}

/// Remembers what the user asked for last (the scrub layer passes it to the LLM layer).
pub async fn set_last_intent(db: &Db, user_phone: &str, intent: &str) -> Result<(), DbError> {
    let (phone, intent) = (user_phone.to_string(), intent.to_string());
    db.call(move |c| {
        c.execute("UPDATE user_context SET last_intent = ?2 WHERE user_phone = ?1", [&phone, &intent])?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn new_conversation_after_idle_time() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = Db::open(dir.path()).expect("db");
        db.migrate(SCHEMA).expect("schema");
        let idle = 30 * 60 * 1000;
        let first = enter(&db, "972500000001", 0, idle, "en").await.expect("enter");
        assert!(first.new_conversation);
        set_last_intent(&db, "972500000001", "book").await.expect("intent");
        let again = enter(&db, "972500000001", idle - 1, idle, "en").await.expect("enter");
        assert_eq!(again.conversation_id, first.conversation_id);
        assert_eq!(again.last_intent.as_deref(), Some("book"));
        let later = enter(&db, "972500000001", 2 * idle, idle, "en").await.expect("enter");
        assert_ne!(later.conversation_id, first.conversation_id);
        assert_eq!(later.last_intent, None);
    }
}
