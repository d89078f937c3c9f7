//! `embed`: a vector for a text built from the payload, put under `into`.
//!
//! ```yaml
//! kind: embed
//! config:
//!   text: "{title} {body}"
//!   into: embedding
//!   provider: {kind: hashing, dims: 256}   # the default: offline feature hashing, NOT semantic
//!   # provider: {kind: openai, model: text-embedding-3-small, api_key_env: OPENAI_API_KEY}
//! ```
//!
//! The default embedder is deterministic and offline (see `connectors::embed`): good for
//! tests and for wiring a pipeline before choosing a model, not for semantic search.

use super::template::{self, Template};
use super::{BuildEnv, BuildError, Output, Payload, Stage, StageContext, StageError, StageKind};
use crate::connectors::embed::{self as embedders, Embedder, EmbedderConfig};
use crate::envelope::Record;
use async_trait::async_trait;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    pub text: String,
    pub into: String,
    #[serde(default)]
    pub provider: EmbedderConfig,
}

pub struct Embed {
    embedder: Arc<dyn Embedder>,
    text: Template,
    into: String,
}

impl StageKind for Embed {
    const NAME: &'static str = "embed";
    type Config = EmbedConfig;

    fn required_outputs() -> Vec<&'static str> {
        vec!["default"]
    }

    fn check(c: &EmbedConfig) -> Result<(), String> {
        Template::parse(&c.text)?;
        c.provider.check()
    }

    fn build(c: EmbedConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let err = |e: String| BuildError::new(env, e);
        Ok(Arc::new(Embed {
            embedder: embedders::build(&c.provider).map_err(err)?,
            text: Template::parse(&c.text).map_err(err)?,
            into: c.into,
        }))
    }
}

#[async_trait]
impl Stage for Embed {
    async fn handle(&self, record: &Record, _cx: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let mut payload: serde_json::Value = super::decode(record)?;
        let text = self.text.render(&payload).map_err(StageError::Permanent)?;
        let mut vectors =
            self.embedder.embed(&[text]).await.map_err(StageError::from)?;
        let vector = vectors.pop().ok_or_else(|| StageError::Permanent("the embedder returned no vector".into()))?;
        template::set_at(&mut payload, &self.into, serde_json::json!(vector)).map_err(StageError::Permanent)?;
        Ok(vec![Output::new("default", Payload::Json(payload))
            .with_header("weir-embed-provider", self.embedder.provider())
            .with_header("weir-embed-model", self.embedder.model())])
    }
}
