//! `passthrough`: forwards every record unchanged to `default`.

use super::{BuildEnv, BuildError, Output, Stage, StageContext, StageError, StageKind};
use crate::envelope::Record;
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::Arc;

pub struct Passthrough;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughConfig {}

impl StageKind for Passthrough {
    const NAME: &'static str = "passthrough";
    type Config = PassthroughConfig;
    const FORWARDS_INPUT: bool = true;

    fn required_outputs() -> Vec<&'static str> {
        vec!["default"]
    }

    fn build(_: PassthroughConfig, _: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        Ok(Arc::new(Passthrough))
    }
}

#[async_trait]
impl Stage for Passthrough {
    async fn handle(&self, record: &Record, _: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        Ok(vec![Output::forward("default", record)])
    }
}
