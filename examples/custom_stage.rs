//! A stage kind of your own, run by the same `weir` machinery.
//!
//! `redact` replaces the digits of one JSON field with `*` (say, a phone number before it
//! reaches a log topic). Register it next to the built-in kinds and hand the registry to
//! the CLI:
//!
//! ```sh
//! cargo run --example custom_stage -- validate -t examples/custom_stage.yaml
//! cargo run --example custom_stage -- run -t examples/custom_stage.yaml
//! curl -s localhost:8090/in -d '{"user_phone":"+972501234567","text":"hi"}'
//! cargo run --example custom_stage -- tail -t examples/custom_stage.yaml redacted
//! ```

use async_trait::async_trait;
use serde::Deserialize;
use std::process::ExitCode;
use std::sync::Arc;
use weir::envelope::Record;
use weir::stages::{decode, BuildEnv, BuildError, Output, Registry, Stage, StageContext, StageError, StageKind};

struct Redact {
    field: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactConfig {
    field: String,
}

impl StageKind for Redact {
    const NAME: &'static str = "redact";
    type Config = RedactConfig;

    fn required_outputs() -> Vec<&'static str> {
        vec!["default"]
    }

    fn build(config: RedactConfig, _: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        Ok(Arc::new(Redact { field: config.field }))
    }
}

#[async_trait]
impl Stage for Redact {
    async fn handle(&self, record: &Record, _: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let mut value: serde_json::Value = decode(record)?;
        if let Some(serde_json::Value::String(s)) = value.get_mut(&self.field) {
            *s = s.chars().map(|c| if c.is_ascii_digit() { '*' } else { c }).collect();
        }
        Ok(vec![Output::json("default", &value)?])
    }
}

fn main() -> ExitCode {
    let mut registry = Registry::builtin();
    registry.register_stage::<Redact>();
    weir::cli::main_with(registry)
}
