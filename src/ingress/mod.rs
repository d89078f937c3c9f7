//! Ingress: HTTP listeners that publish requests into a topic (`ingress:` in the
//! topology). An ingress kind turns requests into records through a [`Publisher`], which
//! stamps the envelope, keys the records and answers only once the transport accepted
//! every record of the request.

pub mod http;
pub mod http_json;
pub mod listener;
mod publisher;
pub mod server;

pub use publisher::{Publish, PublishError, Publisher};

use crate::stages::BuildError;
use crate::topology::plan::IngressPlan;
use serde::de::DeserializeOwned;
use std::path::PathBuf;

/// What an ingress kind gets when its routes are built.
pub struct IngressEnv {
    pub plan: IngressPlan,
    pub publisher: Publisher,
    pub data_dir: PathBuf,
    /// The topology file's directory: relative paths in config start here.
    pub config_dir: PathBuf,
}

impl IngressEnv {
    /// The route path: `path:` from the topology, else the kind's default.
    pub fn path_or(&self, default: &str) -> String {
        self.plan.path.clone().unwrap_or_else(|| default.to_string())
    }
}

/// An ingress kind. Register with `Registry::register_ingress`.
pub trait IngressKind: 'static {
    const NAME: &'static str;
    type Config: DeserializeOwned;
    /// The registered payload type every record it publishes has; `weir validate` refuses
    /// a `to` topic whose `payload_type` differs. `None`: whatever the client sent.
    const OUTPUT_TYPE: Option<&'static str> = None;
    fn check(_config: &Self::Config) -> Result<(), String> {
        Ok(())
    }
    fn router(config: Self::Config, env: IngressEnv) -> Result<axum::Router, BuildError>;
}
