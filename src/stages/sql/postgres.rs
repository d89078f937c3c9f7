//! PostgreSQL through a deadpool pool of tokio-postgres connections (no TLS: for
//! databases on a private network or 127.0.0.1).

use super::{Database, Mode, Outcome};
use crate::stages::StageError;
use async_trait::async_trait;
use bytes::BytesMut;
use serde_json::Value;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

pub struct Postgres {
    pool: deadpool_postgres::Pool,
}

impl Postgres {
    /// Builds the pool; connections are opened on first use, so a database that is down
    /// now shows as transient failures later, not as a build error.
    pub fn new(url: &str, size: usize) -> Result<Postgres, String> {
        let mut cfg = deadpool_postgres::Config::new();
        cfg.url = Some(url.to_string());
        cfg.manager = Some(deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast });
        cfg.pool = Some(deadpool_postgres::PoolConfig::new(size));
        let pool = cfg
            .create_pool(Some(deadpool_postgres::Runtime::Tokio1), tokio_postgres::NoTls)
            // The error text may quote the URL; say what is wrong without it.
            .map_err(|_| "the PostgreSQL URL is not valid (see https://docs.rs/tokio-postgres/latest/tokio_postgres/config/struct.Config.html)".to_string())?;
        Ok(Postgres { pool })
    }
}

/// Transient or permanent, by SQLSTATE; errors without one (I/O, a closed connection) are
/// transient.
pub fn classify(e: &tokio_postgres::Error) -> StageError {
    match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let reason = format!("PostgreSQL error {code}: {}", db.message());
            let transient = code.starts_with("08")
                || code == "40001"
                || code == "40P01"
                || code.starts_with("57P")
                || code.starts_with("53");
            if transient {
                StageError::Transient(reason)
            } else {
                StageError::Permanent(reason)
            }
        }
        None => StageError::Transient(format!("PostgreSQL connection failed: {e}")),
    }
}

/// A JSON value bound as the statement's parameter type.
#[derive(Debug)]
enum Param {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(String),
    Json(Value),
}

impl Param {
    fn bind(v: &Value, ty: &Type, n: usize) -> Result<Param, String> {
        let bad = || format!("parameter ${n} = {v} cannot be bound as {ty}; cast it in the statement (e.g. ${n}::text)");
        if v.is_null() {
            return Ok(Param::Null);
        }
        let int = || v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
        Ok(match *ty {
            Type::BOOL => Param::Bool(v.as_bool().ok_or_else(bad)?),
            Type::INT2 => Param::I16(int().and_then(|i| i16::try_from(i).ok()).ok_or_else(bad)?),
            Type::INT4 => Param::I32(int().and_then(|i| i32::try_from(i).ok()).ok_or_else(bad)?),
            Type::INT8 => Param::I64(int().ok_or_else(bad)?),
            Type::FLOAT4 => Param::F32(v.as_f64().ok_or_else(bad)? as f32),
            Type::FLOAT8 => Param::F64(v.as_f64().ok_or_else(bad)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Param::Text(crate::stages::template::text_of(v))
            }
            Type::JSON | Type::JSONB => Param::Json(v.clone()),
            _ => return Err(bad()),
        })
    }
}

impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Null => Ok(IsNull::Yes),
            Param::Bool(v) => v.to_sql(ty, out),
            Param::I16(v) => v.to_sql(ty, out),
            Param::I32(v) => v.to_sql(ty, out),
            Param::I64(v) => v.to_sql(ty, out),
            Param::F32(v) => v.to_sql(ty, out),
            Param::F64(v) => v.to_sql(ty, out),
            Param::Text(v) => v.to_sql(ty, out),
            Param::Json(v) => v.to_sql(ty, out),
        }
    }

    /// Bound per the prepared statement's types in [`Param::bind`].
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn column(row: &tokio_postgres::Row, i: usize) -> Result<Value, String> {
    let col = &row.columns()[i];
    let ty = col.type_();
    let get_err = |e: tokio_postgres::Error| format!("column `{}`: {e}", col.name());
    Ok(match *ty {
        Type::BOOL => row.try_get::<_, Option<bool>>(i).map_err(get_err)?.map(Value::from),
        Type::INT2 => row.try_get::<_, Option<i16>>(i).map_err(get_err)?.map(Value::from),
        Type::INT4 => row.try_get::<_, Option<i32>>(i).map_err(get_err)?.map(Value::from),
        Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(get_err)?.map(Value::from),
        Type::OID => row.try_get::<_, Option<u32>>(i).map_err(get_err)?.map(Value::from),
        Type::FLOAT4 => row.try_get::<_, Option<f32>>(i).map_err(get_err)?.map(Value::from),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map_err(get_err)?.map(Value::from),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            row.try_get::<_, Option<String>>(i).map_err(get_err)?.map(Value::from)
        }
        Type::JSON | Type::JSONB => row.try_get::<_, Option<Value>>(i).map_err(get_err)?,
        _ => {
            return Err(format!(
                "column `{}` has type {ty}, which has no JSON mapping here; select it as `{}::text`",
                col.name(),
                col.name()
            ))
        }
    }
    .unwrap_or(Value::Null))
}

#[async_trait]
impl Database for Postgres {
    async fn run(&self, statement: &str, params: &[Value], mode: Mode) -> Result<Outcome, StageError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| StageError::Transient(format!("no PostgreSQL connection: {e}")))?;
        let prepared = client.prepare_cached(statement).await.map_err(|e| classify(&e))?;
        let types = prepared.params();
        if types.len() != params.len() {
            return Err(StageError::Permanent(format!(
                "the statement takes {} parameters, `params` gives {}",
                types.len(),
                params.len()
            )));
        }
        let bound = params
            .iter()
            .zip(types)
            .enumerate()
            .map(|(i, (v, ty))| Param::bind(v, ty, i + 1))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StageError::Permanent)?;
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        match mode {
            Mode::Execute => Ok(Outcome::Affected(client.execute(&prepared, &refs).await.map_err(|e| classify(&e))?)),
            Mode::Query => {
                let rows = client.query(&prepared, &refs).await.map_err(|e| classify(&e))?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut obj = serde_json::Map::new();
                    for (i, col) in row.columns().iter().enumerate() {
                        obj.insert(col.name().to_string(), column(row, i).map_err(StageError::Permanent)?);
                    }
                    out.push(Value::Object(obj));
                }
                Ok(Outcome::Rows(out))
            }
        }
    }
}
