//! What every domain service does with a command, in one place:
//!
//! - **Idempotent by `command_id`.** The answer (reply and events) is stored in
//!   `processed_commands` in the same SQLite transaction as the domain change, so either
//!   both happen or neither. A redelivered command re-emits the stored reply *and the
//!   stored events with their original `event_id`s* and changes nothing: re-emitting
//!   (rather than dropping) the events closes the window where the change committed but
//!   the process died before publishing them; the notifier acts on each `event_id` once.
//! - **Deadline.** A command first seen after its slip's `step_deadline` is not executed
//!   and nothing is emitted: the executor has already ended that pipeline with a timeout.
//! - **Errors.** Business outcomes (including `invalid` params) are replies; an unknown
//!   action is permanent (DLQ); a busy database is transient (retried).
//! - Each command runs in a `BEGIN IMMEDIATE` transaction: the write lock is taken up
//!   front, so check-then-write (a slot is free → book it) holds across processes.

use super::error::{ActionError, ActionResult};
use super::repo;
use crate::envelope::{now_ms, Record};
use crate::apps::skeji::model::{Command, DomainEvent, Reply};
use crate::apps::skeji::store::{Db, DbError};
use crate::stages::{decode, BuildEnv, BuildError, Output, Stage, StageContext, StageError};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde_json::Value;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Answers are kept this long; commands are never redelivered later than their topic's
/// retention (1 day in `topology.yaml`).
const KEEP_ANSWERS_MS: i64 = 2 * 24 * 60 * 60 * 1000;
const PRUNE_EVERY_MS: i64 = 60 * 60 * 1000;

/// One domain service's actions.
pub trait Service: Send + Sync + 'static {
    /// The service name: the reply's `service` and `processed_commands.service`.
    const NAME: &'static str;
    const ACTIONS: &'static [&'static str];

    /// Runs `cmd` (an action from [`Service::ACTIONS`]) inside the command's transaction.
    /// A business error rolls back whatever the action wrote.
    fn execute(&self, c: &Connection, cmd: &Command, now_ms: i64) -> ActionResult<Done>;
}

/// A successful action: its result and the events it caused.
pub struct Done {
    pub result: Value,
    pub events: Vec<DomainEvent>,
}

impl Done {
    pub fn result(result: Value) -> Self {
        Done { result, events: Vec::new() }
    }
}

/// A new event with a fresh id.
pub fn event(event_type: &str, entity_id: &str, data: Value, now_ms: i64) -> DomainEvent {
    DomainEvent {
        event_id: format!("evt-{}", uuid::Uuid::now_v7().simple()),
        event_type: event_type.to_string(),
        entity_id: entity_id.to_string(),
        occurred_at: now_ms,
        data,
    }
}

/// What became of a command.
#[derive(Debug)]
pub enum Handled {
    /// Past its deadline, never executed.
    Skipped,
    Answered {
        reply: Box<Reply>,
        events: Vec<DomainEvent>,
        replayed: bool,
    },
}

fn corrupt(what: &str) -> impl Fn(serde_json::Error) -> ActionError + '_ {
    move |e| ActionError::corrupt(what, e)
}

/// Runs one command with the rules in the module docs.
pub fn run<S: Service>(c: &mut Connection, svc: &S, cmd: &Command, now_ms: i64) -> ActionResult<Handled> {
    let mut tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<(String, String)> = tx
        .query_row(
            "SELECT reply_json, events_json FROM processed_commands WHERE command_id = ?1",
            [&cmd.command_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((reply, events)) = stored {
        let reply = serde_json::from_str(&reply).map_err(corrupt("stored reply"))?;
        let events = serde_json::from_str(&events).map_err(corrupt("stored events"))?;
        return Ok(Handled::Answered { reply: Box::new(reply), events, replayed: true });
    }
    if cmd.slip.step_deadline < now_ms {
        return Ok(Handled::Skipped);
    }
    let sp = tx.savepoint()?;
    let (status, result, error, events) = match svc.execute(&sp, cmd, now_ms) {
        Ok(done) => {
            sp.commit()?;
            ("ok", done.result, None, done.events)
        }
        Err(ActionError::Business(e)) => {
            // A savepoint finishes by rolling back (its default): undoes anything the
            // action wrote before failing, keeps the transaction for the answer.
            sp.finish()?;
            ("business_error", Value::Null, Some(e), Vec::new())
        }
        Err(other) => return Err(other),
    };
    let reply = Reply {
        command_id: cmd.command_id.clone(),
        correlation_id: cmd.correlation_id.clone(),
        service: S::NAME.to_string(),
        action: cmd.action.clone(),
        status: status.to_string(),
        result,
        error,
        slip: cmd.slip.clone(),
    };
    let reply_json = serde_json::to_string(&reply).map_err(corrupt("reply"))?;
    let events_json = serde_json::to_string(&events).map_err(corrupt("events"))?;
    tx.execute(
        "INSERT INTO processed_commands (command_id, service, reply_json, events_json, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![cmd.command_id, S::NAME, reply_json, events_json, now_ms],
    )?;
    tx.commit()?;
    Ok(Handled::Answered { reply: Box::new(reply), events, replayed: false })
}

/// A domain service as a stage: reads `Command`s, answers on `reply`, publishes on `events`.
pub struct DomainStage<S> {
    svc: Arc<S>,
    db: Db,
    emit_events: bool,
    last_prune_ms: AtomicI64,
}

/// Opens the shared database and creates the domain tables.
pub fn open_db(env: &BuildEnv<'_>) -> Result<Db, BuildError> {
    std::fs::create_dir_all(&env.data_dir)
        .map_err(|e| BuildError::new(env, format!("cannot create data dir {}: {e}", env.data_dir.display())))?;
    let db = Db::open(&env.data_dir).map_err(|e| BuildError::new(env, e))?;
    db.migrate(repo::SCHEMA).map_err(|e| BuildError::new(env, e))?;
    Ok(db)
}

impl<S: Service> DomainStage<S> {
    /// The running stage for `svc`.
    pub fn build(svc: S, db: Db, env: &BuildEnv<'_>) -> Arc<dyn Stage> {
        let emit_events = env.wired("events");
        if !emit_events {
            tracing::warn!(stage = %env.stage.name, "output `events` is not wired: domain events are dropped");
        }
        Arc::new(DomainStage { svc: Arc::new(svc), db, emit_events, last_prune_ms: AtomicI64::new(now_ms()) })
    }

    /// Forgets answers older than [`KEEP_ANSWERS_MS`], at most once an hour per stage.
    async fn maybe_prune(&self, now: i64) {
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now - last < PRUNE_EVERY_MS
            || self.last_prune_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return;
        }
        let cutoff = now - KEEP_ANSWERS_MS;
        let pruned =
            self.db.call(move |c| Ok(c.execute("DELETE FROM processed_commands WHERE at < ?1", [cutoff])?)).await;
        match pruned {
            Ok(n) => tracing::debug!(service = S::NAME, rows = n, "pruned old command answers"),
            // Not worth failing a command over: the next prune tries again.
            Err(e) => tracing::warn!(service = S::NAME, error = %e, "cannot prune old command answers"),
        }
    }
}

#[async_trait]
impl<S: Service> Stage for DomainStage<S> {
    async fn handle(&self, record: &Record, _: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let cmd: Command = decode(record)?;
        if !S::ACTIONS.contains(&cmd.action.as_str()) {
            return Err(ActionError::UnknownAction { service: S::NAME, action: cmd.action }.into_stage_error());
        }
        let now = now_ms();
        let svc = self.svc.clone();
        let command_id = cmd.command_id.clone();
        let handled =
            self.db.call(move |c| Ok(run(c, &*svc, &cmd, now))).await.map_err(DbError::into_stage_error)?.map_err(
                |e| {
                    tracing::warn!(service = S::NAME, %command_id, error = %e, "command failed");
                    e.into_stage_error()
                },
            )?;
        self.maybe_prune(now).await;
        let (reply, events, replayed) = match handled {
            Handled::Skipped => {
                tracing::debug!(service = S::NAME, %command_id, "command past its step deadline: not executed");
                return Ok(Vec::new());
            }
            Handled::Answered { reply, events, replayed } => (reply, events, replayed),
        };
        tracing::debug!(service = S::NAME, %command_id, status = %reply.status, replayed, events = events.len(), "answered");
        let mut out = Vec::with_capacity(1 + events.len());
        let mut reply_out = Output::json("reply", &*reply)?;
        if let Some(e) = &reply.error {
            reply_out = reply_out.business(e.code.clone());
        }
        out.push(reply_out);
        if self.emit_events {
            for e in &events {
                out.push(Output::json("events", e)?);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::skeji::model::{RoutingSlip, Step};

    /// Writes a row, then fails as the params say.
    struct Writes;

    impl Service for Writes {
        const NAME: &'static str = "test";
        const ACTIONS: &'static [&'static str] = &["write"];
        fn execute(&self, c: &Connection, cmd: &Command, now_ms: i64) -> ActionResult<Done> {
            c.execute("INSERT INTO t (v) VALUES (?1)", [&cmd.command_id])?;
            if cmd.params.contains_key("fail") {
                return Err(ActionError::invalid("asked to fail"));
            }
            Ok(Done { result: Value::from(1), events: vec![event("test.written", "t", Value::Null, now_ms)] })
        }
    }

    fn cmd(id: &str, fail: bool) -> Command {
        let mut params = serde_json::Map::new();
        if fail {
            params.insert("fail".into(), Value::Bool(true));
        }
        let step = Step { service: "test".into(), action: "write".into(), params: params.clone() };
        let slip = RoutingSlip {
            correlation_id: "c".into(),
            conversation_id: "v".into(),
            user_phone: "1".into(),
            message_id: "m".into(),
            intent: "i".into(),
            language: "en".into(),
            steps: vec![step],
            current: 0,
            results: vec![],
            step_deadline: 1_000,
        };
        Command {
            command_id: id.into(),
            correlation_id: "c".into(),
            action: "write".into(),
            params,
            user_phone: "1".into(),
            slip,
        }
    }

    fn rows(c: &Connection) -> i64 {
        c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).expect("count")
    }

    #[test]
    fn business_errors_roll_back_and_answers_replay() {
        let mut c = Connection::open_in_memory().expect("db");
        c.execute_batch(repo::SCHEMA).expect("schema");
        c.execute_batch("CREATE TABLE t (v TEXT)").expect("table");

        let failed = run(&mut c, &Writes, &cmd("c:0", true), 500).expect("runs");
        assert!(
            matches!(&failed, Handled::Answered { reply, replayed: false, .. } if reply.status == "business_error")
        );
        assert_eq!(rows(&c), 0, "the action's write is rolled back");

        let Handled::Answered { reply, events, .. } = run(&mut c, &Writes, &cmd("c:1", false), 500).expect("runs")
        else {
            panic!("answered")
        };
        assert_eq!((reply.status.as_str(), events.len(), rows(&c)), ("ok", 1, 1));
        // Redelivered after the deadline: still the stored answer, nothing written.
        let Handled::Answered { reply: again, events: same, replayed } =
            run(&mut c, &Writes, &cmd("c:1", false), 5_000).expect("runs")
        else {
            panic!("answered")
        };
        assert!(replayed);
        assert_eq!((again, same), (reply, events));
        assert_eq!(rows(&c), 1);
        // First seen after the deadline: skipped, nothing stored.
        assert!(matches!(run(&mut c, &Writes, &cmd("c:2", false), 5_000).expect("runs"), Handled::Skipped));
        assert_eq!(rows(&c), 1);
    }
}
