//! `sql`: one parameterised statement per record, against PostgreSQL or SQLite (chosen by
//! the URL scheme).
//!
//! ```yaml
//! kind: sql
//! config:
//!   url_env: WEIR_POSTGRES_URL     # or url: "postgres://…" / "sqlite://data/leads.db"
//!   statement: "INSERT INTO leads (event_id, intent) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING"
//!   params: [event_id, intent.type]   # dotted payload paths, bound as $1, $2, …
//!   mode: execute                  # execute (default) | query
//!   into: rows                     # query: the rows (JSON objects) under this field;
//!                                  # execute: {"rows_affected": n}; without it the payload passes on
//!   pool_size: 8                   # PostgreSQL connections per stage (default 8)
//! ```
//!
//! Without `to:` the stage is a sink (its offset is committed once the statement ran).
//!
//! Writes are retried (at-least-once), so make them idempotent: key them by an event id
//! and `ON CONFLICT (event_id) DO NOTHING` (or `DO UPDATE`).
//!
//! Classification: lost connections, SQLSTATE class 08, 40001 (serialization), 40P01
//! (deadlock), 57P (server shutting down / backend terminated) and 53 (resources) are
//! transient; everything else the server rejects — class 23 (constraints), 42 (syntax,
//! undefined table), 22 (bad data) — is permanent. A parameter that cannot be bound to
//! the statement's type is permanent.

mod postgres;
mod sqlite;

use super::template;
use super::{BuildEnv, BuildError, Output, Payload, Stage, StageContext, StageError, StageKind};
use crate::envelope::Record;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Execute,
    Query,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// The database URL. It may hold a password: prefer `url_env`.
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the URL (read at build time, never logged).
    #[serde(default)]
    pub url_env: Option<String>,
    pub statement: String,
    #[serde(default)]
    pub params: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub into: Option<String>,
    #[serde(default)]
    pub pool_size: Option<usize>,
}

/// A database the statement runs against.
#[async_trait]
trait Database: Send + Sync {
    /// Runs the statement; `Execute` answers the rows affected, `Query` the rows.
    async fn run(&self, statement: &str, params: &[Value], mode: Mode) -> Result<Outcome, StageError>;
}

enum Outcome {
    Affected(u64),
    Rows(Vec<Value>),
}

pub struct Sql {
    db: Arc<dyn Database>,
    statement: String,
    params: Vec<String>,
    mode: Mode,
    into: Option<String>,
    /// Without a `to:`, the stage is a sink: it writes and emits nothing.
    wired: bool,
}

impl StageKind for Sql {
    const NAME: &'static str = "sql";
    type Config = SqlConfig;

    fn required_outputs() -> Vec<&'static str> {
        Vec::new()
    }

    fn check(c: &SqlConfig) -> Result<(), String> {
        match (&c.url, &c.url_env) {
            (Some(_), Some(_)) | (None, None) => return Err("sql needs exactly one of `url` and `url_env`".into()),
            (Some(url), None) => scheme(url).map(|_| ())?,
            _ => {}
        }
        if c.mode == Mode::Query && c.into.is_none() {
            return Err("`mode: query` needs `into` (the field the rows go under)".into());
        }
        if c.pool_size == Some(0) {
            return Err("`pool_size` must be at least 1".into());
        }
        Ok(())
    }

    fn build(c: SqlConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let err = |e: String| BuildError::new(env, e);
        Self::check(&c).map_err(err)?;
        let url = match (&c.url, &c.url_env) {
            (Some(u), _) => u.clone(),
            (None, Some(var)) => crate::connectors::Secret::from_env(var).map_err(err)?.expose().to_string(),
            (None, None) => return Err(err("sql needs `url` or `url_env`".into())),
        };
        let db: Arc<dyn Database> = match scheme(&url).map_err(err)? {
            Scheme::Postgres => Arc::new(postgres::Postgres::new(&url, c.pool_size.unwrap_or(8)).map_err(err)?),
            Scheme::Sqlite(path) => {
                let path = if path == ":memory:" { path.to_string() } else { env.config_path(path).display().to_string() };
                Arc::new(sqlite::Sqlite::open(&path).map_err(err)?)
            }
        };
        Ok(Arc::new(Sql { db, statement: c.statement, params: c.params, mode: c.mode, into: c.into, wired: env.wired("default") }))
    }
}

enum Scheme<'a> {
    Postgres,
    Sqlite(&'a str),
}

fn scheme(url: &str) -> Result<Scheme<'_>, String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Scheme::Postgres)
    } else if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Scheme::Sqlite(path))
    } else {
        Err("the database URL must start with `postgres://`, `postgresql://` or `sqlite://`".into())
    }
}

#[async_trait]
impl Stage for Sql {
    async fn handle(&self, record: &Record, cx: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let mut payload: Value = super::decode(record)?;
        let params = self
            .params
            .iter()
            .map(|p| {
                template::value_at(&payload, p)
                    .cloned()
                    .ok_or_else(|| StageError::Permanent(format!("parameter `{p}` is missing from the payload")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outcome = self.db.run(&self.statement, &params, self.mode).await?;
        let value = match outcome {
            Outcome::Affected(n) => {
                tracing::debug!(stage = cx.stage, rows_affected = n, "sql statement executed");
                serde_json::json!({"rows_affected": n})
            }
            Outcome::Rows(rows) => Value::Array(rows),
        };
        if !self.wired {
            return Ok(Vec::new());
        }
        match &self.into {
            Some(field) => {
                template::set_at(&mut payload, field, value).map_err(StageError::Permanent)?;
                Ok(vec![Output::new("default", Payload::Json(payload))])
            }
            None => Ok(vec![Output::forward("default", record)]),
        }
    }
}
