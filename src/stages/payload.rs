//! Payload declarations of topics: a registered Rust type (`payload_type:`) or an inline
//! JSON Schema (`schema:`). A record on a declared topic that does not match is a
//! permanent error: inputs go to the reading stage's DLQ, outputs are refused before they
//! are sent (the producing stage's input goes to its DLQ instead).

use crate::topology::plan::{PayloadDecl, TopicPlan};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type Decoder = Arc<dyn Fn(&[u8]) -> Result<(), String> + Send + Sync>;

/// A registered payload type: its top-level fields (for `key` checks) and a decoder.
#[derive(Clone)]
pub struct PayloadType {
    pub fields: Vec<String>,
    decode: Decoder,
}

impl PayloadType {
    pub fn of<T: DeserializeOwned + 'static>() -> Self {
        PayloadType {
            fields: crate::topology::introspect::struct_fields::<T>().iter().map(|f| f.to_string()).collect(),
            decode: Arc::new(|bytes| serde_json::from_slice::<T>(bytes).map(|_| ()).map_err(|e| e.to_string())),
        }
    }
}

#[derive(Clone, Default)]
pub struct PayloadTypes(BTreeMap<String, PayloadType>);

impl PayloadTypes {
    pub fn register(&mut self, name: &str, t: PayloadType) {
        self.0.insert(name.to_string(), t);
    }
    pub fn get(&self, name: &str) -> Option<&PayloadType> {
        self.0.get(name)
    }
    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

enum Check {
    Type(String, Decoder),
    Schema(Box<jsonschema::Validator>),
}

/// The compiled checks of every declared topic, built once per node.
#[derive(Clone, Default)]
pub struct PayloadChecks(Arc<HashMap<String, Check>>);

impl PayloadChecks {
    pub fn build<'a>(topics: impl IntoIterator<Item = &'a TopicPlan>, types: &PayloadTypes) -> Result<Self, String> {
        let mut checks = HashMap::new();
        for t in topics {
            let check = match &t.payload {
                PayloadDecl::Any => continue,
                PayloadDecl::Type(name) => {
                    let ty = types.get(name).ok_or_else(|| format!("topic `{}`: unknown payload type `{name}`", t.name))?;
                    Check::Type(name.clone(), ty.decode.clone())
                }
                PayloadDecl::Schema(schema) => Check::Schema(Box::new(
                    jsonschema::validator_for(schema).map_err(|e| format!("topic `{}`: invalid schema: {e}", t.name))?,
                )),
            };
            checks.insert(t.name.clone(), check);
        }
        Ok(PayloadChecks(Arc::new(checks)))
    }

    /// Whether the topic declares a payload at all (skips work when it does not).
    pub fn declares(&self, topic: &str) -> bool {
        self.0.contains_key(topic)
    }

    pub fn check_bytes(&self, topic: &str, payload: &[u8]) -> Result<(), String> {
        match self.0.get(topic) {
            None => Ok(()),
            Some(Check::Type(name, decode)) => {
                decode(payload).map_err(|e| format!("payload does not decode as `{name}` (topic `{topic}`): {e}"))
            }
            Some(Check::Schema(v)) => {
                let value: serde_json::Value = serde_json::from_slice(payload)
                    .map_err(|e| format!("payload is not JSON (topic `{topic}` declares a schema): {e}"))?;
                schema_errors(v, &value, topic)
            }
        }
    }

    pub fn check_json(&self, topic: &str, value: &serde_json::Value) -> Result<(), String> {
        match self.0.get(topic) {
            None => Ok(()),
            Some(Check::Schema(v)) => schema_errors(v, value, topic),
            Some(Check::Type(..)) => match serde_json::to_vec(value) {
                Ok(bytes) => self.check_bytes(topic, &bytes),
                Err(e) => Err(e.to_string()),
            },
        }
    }
}

fn schema_errors(v: &jsonschema::Validator, value: &serde_json::Value, topic: &str) -> Result<(), String> {
    let errors: Vec<String> = v.iter_errors(value).take(3).map(|e| format!("{} at `{}`", e, e.instance_path())).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!("payload does not match the schema of topic `{topic}`: {}", errors.join("; ")))
    }
}
