//! `router`: sends each record to the output named for the value of one JSON field.
//!
//! ```yaml
//! kind: router
//! to: {orders: orders-topic, refunds: refunds-topic, other: misc}
//! config:
//!   field: type            # dotted paths work: meta.type
//!   routes: {order: orders, refund: refunds}
//!   default: other         # optional; without it an unmatched record goes to the DLQ
//! ```

use super::{BuildEnv, BuildError, Output, Stage, StageContext, StageError, StageKind};
use crate::envelope::Record;
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct Router {
    field: String,
    routes: BTreeMap<String, String>,
    default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    pub field: String,
    pub routes: BTreeMap<String, String>,
    #[serde(default)]
    pub default: Option<String>,
}

impl StageKind for Router {
    const NAME: &'static str = "router";
    type Config = RouterConfig;
    const FORWARDS_INPUT: bool = true;

    fn outputs() -> Vec<&'static str> {
        Vec::new()
    }

    fn check(c: &RouterConfig) -> Result<(), String> {
        if c.routes.is_empty() && c.default.is_none() {
            return Err("router needs at least one route or a default".into());
        }
        Ok(())
    }

    fn build(c: RouterConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        for out in c.routes.values().chain(c.default.iter()) {
            if !env.wired(out) {
                return Err(BuildError::new(env, format!("route output `{out}` is not wired in `to`")));
            }
        }
        Ok(Arc::new(Router { field: c.field, routes: c.routes, default: c.default }))
    }
}

/// The value at a dotted path, as text (strings unquoted, other scalars as JSON).
pub fn field_text(value: &serde_json::Value, path: &str) -> Option<String> {
    let mut v = value;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null | serde_json::Value::Object(_) | serde_json::Value::Array(_) => None,
        other => Some(other.to_string()),
    }
}

#[async_trait]
impl Stage for Router {
    async fn handle(&self, record: &Record, _: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let value: serde_json::Value = super::decode(record)?;
        let found = field_text(&value, &self.field);
        let out = found
            .as_ref()
            .and_then(|v| self.routes.get(v))
            .or(self.default.as_ref())
            .ok_or_else(|| {
                StageError::Permanent(match &found {
                    Some(v) => format!("no route for `{}` = `{v}` and no default", self.field),
                    None => format!("field `{}` is missing and there is no default route", self.field),
                })
            })?;
        Ok(vec![Output::forward(out.clone(), record)])
    }
}
