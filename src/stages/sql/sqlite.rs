//! SQLite through rusqlite (bundled), one connection behind a mutex, statements run on
//! the blocking pool. `SQLITE_BUSY`/`LOCKED` are transient; everything else permanent.

use super::{Database, Mode, Outcome};
use crate::stages::StageError;
use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;
use std::sync::{Arc, Mutex};

pub struct Sqlite {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

impl Sqlite {
    pub fn open(path: &str) -> Result<Sqlite, String> {
        let conn = rusqlite::Connection::open(path).map_err(|e| format!("cannot open SQLite database `{path}`: {e}"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(|e| format!("SQLite `{path}`: {e}"))?;
        Ok(Sqlite { conn: Arc::new(Mutex::new(conn)) })
    }
}

fn classify(e: rusqlite::Error) -> StageError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if matches!(f.code, DatabaseBusy | DatabaseLocked) => {
            StageError::Transient(format!("SQLite is busy: {e}"))
        }
        _ => StageError::Permanent(format!("SQLite error: {e}")),
    }
}

fn to_sql(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

fn to_json(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => Value::from(i),
        SqlValue::Real(f) => Value::from(f),
        SqlValue::Text(s) => Value::String(s),
        SqlValue::Blob(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
    }
}

fn run_blocking(conn: &rusqlite::Connection, statement: &str, params: &[Value], mode: Mode) -> Result<Outcome, StageError> {
    let mut stmt = conn.prepare(statement).map_err(classify)?;
    let values: Vec<SqlValue> = params.iter().map(to_sql).collect();
    let bound = rusqlite::params_from_iter(values.iter());
    match mode {
        Mode::Execute => Ok(Outcome::Affected(stmt.execute(bound).map_err(classify)? as u64)),
        Mode::Query => {
            let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
            let mut rows = stmt.query(bound).map_err(classify)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(classify)? {
                let mut obj = serde_json::Map::new();
                for (i, name) in names.iter().enumerate() {
                    obj.insert(name.clone(), to_json(row.get::<_, SqlValue>(i).map_err(classify)?));
                }
                out.push(Value::Object(obj));
            }
            Ok(Outcome::Rows(out))
        }
    }
}

#[async_trait]
impl Database for Sqlite {
    async fn run(&self, statement: &str, params: &[Value], mode: Mode) -> Result<Outcome, StageError> {
        let conn = self.conn.clone();
        let statement = statement.to_string();
        let params = params.to_vec();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().map_err(|_| StageError::Permanent("SQLite connection poisoned".into()))?;
            run_blocking(&conn, &statement, &params, mode)
        })
        .await
        .map_err(|e| StageError::Transient(format!("SQLite task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_execute_query_and_constraint_is_permanent() {
        let db = Sqlite::open(":memory:").expect("opens");
        db.run("CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER)", &[], Mode::Execute).await.expect("create");
        let ins = "INSERT INTO t (id, n) VALUES ($1, $2)";
        match db.run(ins, &[Value::from("a"), Value::from(1)], Mode::Execute).await {
            Ok(Outcome::Affected(1)) => {}
            _ => panic!("one row inserted"),
        }
        match db.run(ins, &[Value::from("a"), Value::from(2)], Mode::Execute).await {
            Err(StageError::Permanent(m)) => assert!(m.contains("UNIQUE"), "{m}"),
            _ => panic!("a duplicate key is permanent"),
        }
        match db.run("SELECT id, n FROM t", &[], Mode::Query).await {
            Ok(Outcome::Rows(rows)) => assert_eq!(rows, vec![serde_json::json!({"id": "a", "n": 1})]),
            _ => panic!("query answers rows"),
        }
    }
}
