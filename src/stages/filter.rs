//! `filter`: keeps records whose JSON field matches; the others go to `rejected` when that
//! output is wired, and are dropped otherwise.
//!
//! ```yaml
//! kind: filter
//! config: {field: status, equals: active}      # or: in: [a, b] / exists: true
//! ```

use super::{BuildEnv, BuildError, Output, Stage, StageContext, StageError, StageKind};
use crate::envelope::Record;
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::Arc;

pub struct Filter {
    config: FilterConfig,
    rejected_wired: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub field: String,
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub exists: Option<bool>,
    /// Keep the records that do NOT match instead.
    #[serde(default)]
    pub negate: bool,
}

impl StageKind for Filter {
    const NAME: &'static str = "filter";
    type Config = FilterConfig;
    const FORWARDS_INPUT: bool = true;

    fn outputs() -> Vec<&'static str> {
        vec!["default", "rejected"]
    }

    fn required_outputs() -> Vec<&'static str> {
        vec!["default"]
    }

    fn check(c: &FilterConfig) -> Result<(), String> {
        let set = [c.equals.is_some(), c.one_of.is_some(), c.exists.is_some()].iter().filter(|b| **b).count();
        if set != 1 {
            return Err("filter needs exactly one of `equals`, `in`, `exists`".into());
        }
        Ok(())
    }

    fn build(config: FilterConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        Filter::check(&config).map_err(|e| BuildError::new(env, e))?;
        Ok(Arc::new(Filter { config, rejected_wired: env.wired("rejected") }))
    }
}

impl Filter {
    fn matches(&self, value: &serde_json::Value) -> bool {
        let c = &self.config;
        let mut v = Some(value);
        for part in c.field.split('.') {
            v = v.and_then(|x| x.get(part));
        }
        let hit = match (&c.equals, &c.one_of, c.exists) {
            (Some(expected), _, _) => v == Some(expected),
            (_, Some(options), _) => v.is_some_and(|x| options.contains(x)),
            (_, _, Some(want)) => v.is_some_and(|x| !x.is_null()) == want,
            _ => false,
        };
        hit != c.negate
    }
}

#[async_trait]
impl Stage for Filter {
    async fn handle(&self, record: &Record, _: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let value: serde_json::Value = super::decode(record)?;
        if self.matches(&value) {
            Ok(vec![Output::forward("default", record)])
        } else if self.rejected_wired {
            Ok(vec![Output::forward("rejected", record).business(format!("filtered on `{}`", self.config.field))])
        } else {
            Ok(Vec::new())
        }
    }
}
