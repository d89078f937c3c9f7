//! The description of a pipeline — parse, validate, plan — with no I/O.
//!
//! `topology.yaml` text goes in (the caller reads the file and supplies the environment);
//! out comes either a [`Topology`] that passed every check, or [`Diagnostics`] naming the
//! file, line, column and stage/topic of every problem. A valid topology gives a [`Plan`]
//! per node, which is all the runtime (`crate::actors`, `crate::runtime`) looks at.
//!
//! Pipeline: `env` substitutes `${VAR}` in the text (line numbers kept) → `source` indexes
//! every key and value with its location and flags unknown fields → serde reads the typed
//! [`spec::TopologySpec`] → `validate` checks references, groups, cycles, keys, payload
//! types, units → `plan` applies defaults for one node.

mod diagnostic;
mod env;
pub mod introspect;
pub mod graph;
pub mod plan;
mod source;
pub mod spec;
pub mod strimzi;
pub mod units;
mod validate;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use graph::GraphFormat;
pub use plan::{Plan, PlanError};
pub use spec::TopologySpec;

use std::collections::BTreeMap;

/// What the topology needs to know about the stage kinds, ingress kinds and payload types
/// the binary was built with. The stage registry implements it; the topology stays pure.
pub trait Catalog {
    fn stage_kind(&self, kind: &str) -> Option<KindInfo>;
    fn stage_kind_names(&self) -> Vec<String>;
    fn ingress_kind(&self, kind: &str) -> Option<KindInfo>;
    fn ingress_kind_names(&self) -> Vec<String>;
    /// The top-level fields of a registered payload type, or `None` if no such type.
    fn payload_type_fields(&self, type_name: &str) -> Option<Vec<String>>;
    fn payload_type_names(&self) -> Vec<String>;
}

/// Checks a kind's `config` map; the message explains what is wrong.
pub type ConfigCheck = Box<dyn Fn(&serde_json::Value) -> Result<(), String> + Send + Sync>;

/// What a kind declares about itself, for validation and docs.
pub struct KindInfo {
    /// Output names the kind emits; empty means any name is accepted (e.g. `router`).
    pub outputs: Vec<&'static str>,
    /// Outputs that must be wired in `to`.
    pub required_outputs: Vec<&'static str>,
    /// The fields of the payload the kind writes on an output, where the kind knows them;
    /// used to check that a stage's `key` exists.
    pub output_fields: BTreeMap<&'static str, Vec<&'static str>>,
    /// Checks the `config` map; the message is reported at the stage's `config` key.
    pub check_config: ConfigCheck,
    /// The registered payload type the kind writes on an output, by output name (an
    /// ingress writes on `default`). Outputs not listed are not checked against the
    /// topic's `payload_type`.
    pub output_types: BTreeMap<&'static str, &'static str>,
    /// Every output carries the input record unchanged (passthrough, filter, router, log,
    /// delay): the output topics must then declare what the input topics declare.
    pub forwards_input: bool,
    /// The registered payload types the kind decodes its input as; empty: any payload
    /// (not checked against the `from` topics' `payload_type`).
    pub input_types: Vec<&'static str>,
}

impl Default for KindInfo {
    /// Any output name, nothing required, nothing declared, any config.
    fn default() -> Self {
        KindInfo {
            outputs: Vec::new(),
            required_outputs: Vec::new(),
            output_fields: BTreeMap::new(),
            check_config: Box::new(|_| Ok(())),
            output_types: BTreeMap::new(),
            forwards_input: false,
            input_types: Vec::new(),
        }
    }
}

impl KindInfo {
    /// What the kind writes on `output`, as far as it says.
    pub fn writes(&self, output: &str) -> Writes<'_> {
        match self.output_types.get(output) {
            Some(ty) => Writes::Type(ty),
            None if self.forwards_input => Writes::Input,
            None => Writes::Undeclared,
        }
    }
}

/// The payload a kind writes on one output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writes<'a> {
    /// Not declared: any payload, not checked.
    Undeclared,
    /// Always this registered payload type.
    Type(&'a str),
    /// The input record, unchanged.
    Input,
}

/// Envelope fields every record carries in its headers; a `key` may always name them.
pub const ENVELOPE_FIELDS: &[&str] = &["message_id", "correlation_id", "conversation_id"];

/// A topology that passed every check.
#[derive(Debug, Clone)]
pub struct Topology {
    file: String,
    spec: TopologySpec,
}

impl Topology {
    /// Parses and validates `text` (the contents of `file`). `env` looks up variables for
    /// `${VAR}` / `${VAR:-default}`. Returns every problem found, not just the first.
    pub fn parse(
        file: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        catalog: &dyn Catalog,
    ) -> Result<Topology, Diagnostics> {
        let text = env::substitute(file, text, env)?;
        let source = source::SourceIndex::build(file, &text)?;
        let mut diags = source.unknown_fields();
        let spec: TopologySpec = match serde_saphyr::from_str(&text) {
            Ok(spec) => spec,
            Err(e) => {
                diags.push(source.serde_error(&e));
                diags.sort_by_key(|d| (d.line, d.column));
                return Err(Diagnostics(diags));
            }
        };
        diags.extend(validate::check(&spec, &source, catalog));
        if diags.is_empty() {
            Ok(Topology { file: file.to_string(), spec })
        } else {
            diags.sort_by_key(|d| (d.line, d.column));
            Err(Diagnostics(diags))
        }
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    pub fn spec(&self) -> &TopologySpec {
        &self.spec
    }

    /// The name used in logs and the graph title: `name:` or the file stem.
    pub fn name(&self) -> String {
        self.spec.name.clone().unwrap_or_else(|| file_stem(&self.file))
    }

    /// What `node` runs (`None`: everything, in one process).
    pub fn plan(&self, node: Option<&str>) -> Result<Plan, PlanError> {
        plan::build(&self.spec, &file_stem(&self.file), node)
    }

    /// One line for `weir validate`.
    pub fn summary(&self) -> String {
        let s = &self.spec;
        format!(
            "{}: valid — {} topics, {} stages, {} ingress, {} nodes, transport {:?}",
            self.file,
            s.topics.len(),
            s.stages.len(),
            s.ingress.len(),
            s.nodes.len(),
            s.transport
        )
        .replace("Embedded", "embedded")
        .replace("Kafka", "kafka")
    }

    pub fn graph(&self, format: GraphFormat) -> String {
        graph::render(&self.name(), &self.spec, format)
    }
}

fn file_stem(file: &str) -> String {
    std::path::Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("topology")
        .to_string()
}
