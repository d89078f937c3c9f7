//! Skeji's state: one SQLite database, `<data-dir>/skeji.db`, shared by every Skeji stage
//! of every process on the machine (WAL mode; writers take turns through SQLite's own
//! locking), so no stage holds state only in memory and any instance can continue what
//! another began. Each stage module owns its tables and creates them with
//! [`Db::migrate`] when it is built.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("sqlite: {0}")]
    Query(#[from] rusqlite::Error),
    #[error("the database task failed: {0}")]
    Task(String),
}

impl DbError {
    /// Busy/locked databases clear up by themselves: worth a retry. Anything else is not.
    pub fn is_transient(&self) -> bool {
        let code = match self {
            DbError::Sqlite { source, .. } | DbError::Query(source) => source.sqlite_error_code(),
            DbError::Task(_) => return true,
        };
        matches!(code, Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
    }

    /// As a stage error: busy → transient (retried), anything else → permanent (DLQ).
    pub fn into_stage_error(self) -> crate::stages::StageError {
        if self.is_transient() {
            crate::stages::StageError::Transient(self.to_string())
        } else {
            crate::stages::StageError::Permanent(self.to_string())
        }
    }
}

/// A connection to the shared database, used from async code.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<rusqlite::Connection>>,
    path: PathBuf,
}

impl Db {
    pub const FILE: &'static str = "skeji.db";

    /// Opens (creating if needed) `<data_dir>/skeji.db`.
    pub fn open(data_dir: &Path) -> Result<Db, DbError> {
        let path = data_dir.join(Self::FILE);
        let wrap = |source| DbError::Sqlite { path: path.clone(), source };
        let conn = rusqlite::Connection::open(&path).map_err(wrap)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(wrap)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(wrap)?;
        Ok(Db { conn: Arc::new(Mutex::new(conn)), path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a module's tables (statements must be idempotent: `IF NOT EXISTS`).
    pub fn migrate(&self, schema: &str) -> Result<(), DbError> {
        self.with(|c| c.execute_batch(schema).map_err(DbError::from))
    }

    /// Runs `f` on the connection on this thread (for build time and tests).
    pub fn with<T>(&self, f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// Runs `f` on the connection on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T, DbError> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.with(f)).await.map_err(|e| DbError::Task(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_handles_share_one_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = Db::open(dir.path()).expect("open");
        let b = Db::open(dir.path()).expect("open");
        a.migrate("CREATE TABLE IF NOT EXISTS t (v INTEGER)").expect("schema");
        a.call(|c| Ok(c.execute("INSERT INTO t VALUES (7)", [])?)).await.expect("insert");
        let v: i64 = b.call(|c| Ok(c.query_row("SELECT v FROM t", [], |r| r.get(0))?)).await.expect("select");
        assert_eq!(v, 7);
    }
}
