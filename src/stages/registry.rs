//! Every stage kind, ingress kind and payload type a binary knows, in one place.
//! `Registry::builtin()` is the list to grep: the generic kinds only. Applications' kinds
//! (`src/apps/`) are added by `Registry::with_apps()`, defined there so the runtime never
//! imports an app; a user crate adds its own with `register_stage::<MyKind>()` and runs them
//! with the same machinery.

use super::payload::{PayloadType, PayloadTypes};
use super::{BuildEnv, BuildError, Stage, StageKind};
use crate::ingress::{IngressEnv, IngressKind};
use crate::topology::{Catalog, KindInfo};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Builds stages of one kind from JSON config (object-safe face of [`StageKind`]).
pub trait StageFactory: Send + Sync {
    fn info(&self) -> KindInfo;
    fn build(&self, config: &serde_json::Value, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError>;
}

/// Builds the HTTP routes of one ingress kind (object-safe face of [`IngressKind`]).
pub trait IngressFactory: Send + Sync {
    fn info(&self) -> KindInfo;
    fn router(&self, config: &serde_json::Value, env: IngressEnv) -> Result<axum::Router, BuildError>;
}

#[derive(Clone, Default)]
pub struct Registry {
    stages: BTreeMap<&'static str, Arc<dyn StageFactory>>,
    ingress: BTreeMap<&'static str, Arc<dyn IngressFactory>>,
    payloads: PayloadTypes,
}

impl Registry {
    /// No kinds at all (for tests that register exactly what they use).
    pub fn empty() -> Self {
        Registry::default()
    }

    /// Every generic built-in kind (no application's: see `Registry::with_apps()` in `crate::apps`).
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        r.register_stage::<super::passthrough::Passthrough>();
        r.register_stage::<super::router::Router>();
        r.register_stage::<super::filter::Filter>();
        r.register_stage::<super::log::Log>();
        r.register_stage::<super::delay::Delay>();
        r.register_stage::<super::http::Http>();
        r.register_stage::<super::llm::Llm>();
        r.register_stage::<super::embed::Embed>();
        r.register_stage::<super::sql::Sql>();
        r.register_ingress::<crate::ingress::http_json::HttpJson>();
        r
    }

    pub fn register_stage<K: StageKind>(&mut self) -> &mut Self {
        self.stages.insert(K::NAME, Arc::new(KindAdapter::<K>(std::marker::PhantomData)));
        self
    }

    pub fn register_ingress<K: IngressKind>(&mut self) -> &mut Self {
        self.ingress.insert(K::NAME, Arc::new(IngressAdapter::<K>(std::marker::PhantomData)));
        self
    }

    /// Lets topics declare `payload_type: <name>`; records on them must decode into `T`.
    pub fn register_payload<T: DeserializeOwned + 'static>(&mut self, name: &str) -> &mut Self {
        self.payloads.register(name, PayloadType::of::<T>());
        self
    }

    pub fn stage_factory(&self, kind: &str) -> Option<Arc<dyn StageFactory>> {
        self.stages.get(kind).cloned()
    }

    pub fn ingress_factory(&self, kind: &str) -> Option<Arc<dyn IngressFactory>> {
        self.ingress.get(kind).cloned()
    }

    pub fn payloads(&self) -> &PayloadTypes {
        &self.payloads
    }
}

impl Catalog for Registry {
    fn stage_kind(&self, kind: &str) -> Option<KindInfo> {
        self.stages.get(kind).map(|f| f.info())
    }
    fn stage_kind_names(&self) -> Vec<String> {
        self.stages.keys().map(|k| k.to_string()).collect()
    }
    fn ingress_kind(&self, kind: &str) -> Option<KindInfo> {
        self.ingress.get(kind).map(|f| f.info())
    }
    fn ingress_kind_names(&self) -> Vec<String> {
        self.ingress.keys().map(|k| k.to_string()).collect()
    }
    fn payload_type_fields(&self, type_name: &str) -> Option<Vec<String>> {
        self.payloads.get(type_name).map(|t| t.fields.clone())
    }
    fn payload_type_names(&self) -> Vec<String> {
        self.payloads.names()
    }
}

fn parse_config<C: DeserializeOwned>(config: &serde_json::Value) -> Result<C, String> {
    serde_json::from_value(config.clone()).map_err(|e| format!("invalid config: {e}"))
}

struct KindAdapter<K>(std::marker::PhantomData<fn() -> K>);

impl<K: StageKind> StageFactory for KindAdapter<K> {
    fn info(&self) -> KindInfo {
        let outputs = K::outputs();
        let output_fields = outputs.iter().filter_map(|o| K::output_fields(o).map(|f| (*o, f))).collect();
        KindInfo {
            outputs,
            required_outputs: K::required_outputs(),
            output_fields,
            check_config: Box::new(|v| K::check(&parse_config::<K::Config>(v)?)),
            output_types: K::OUTPUT_TYPES.iter().copied().collect(),
            forwards_input: K::FORWARDS_INPUT,
            input_types: K::INPUT_TYPES.to_vec(),
        }
    }

    fn build(&self, config: &serde_json::Value, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let config = parse_config::<K::Config>(config).map_err(|e| BuildError::new(env, e))?;
        K::build(config, env)
    }
}

struct IngressAdapter<K>(std::marker::PhantomData<fn() -> K>);

impl<K: IngressKind> IngressFactory for IngressAdapter<K> {
    fn info(&self) -> KindInfo {
        KindInfo {
            check_config: Box::new(|v| K::check(&parse_config::<K::Config>(v)?)),
            // An ingress has one topic, `to`, which is its `default` output.
            output_types: K::OUTPUT_TYPE.map(|t| ("default", t)).into_iter().collect(),
            ..KindInfo::default()
        }
    }

    fn router(&self, config: &serde_json::Value, env: IngressEnv) -> Result<axum::Router, BuildError> {
        let config = parse_config::<K::Config>(config).map_err(|reason| BuildError {
            stage: env.plan.name.clone(),
            kind: env.plan.kind.clone(),
            reason,
        })?;
        K::router(config, env)
    }
}
