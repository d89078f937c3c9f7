//! Semantic checks of a spec that serde accepted: references, wiring, consumer groups,
//! cycles, keys, payload types, units and transport settings. Every finding is collected
//! (never just the first) and points at the key or value at fault through the
//! [`SourceIndex`].

mod cycles;
mod keys;
mod payload_types;
mod refs;
mod values;

use super::source::{did_you_mean, SourceIndex};
use super::spec::{StageSpec, TopologySpec};
use super::{Catalog, Diagnostic};
use std::collections::BTreeMap;

pub(crate) fn check(spec: &TopologySpec, source: &SourceIndex, catalog: &dyn Catalog) -> Vec<Diagnostic> {
    let mut cx = Cx { spec, src: source, catalog, out: Vec::new() };
    refs::check(&mut cx);
    cycles::check(&mut cx);
    keys::check(&mut cx);
    payload_types::check(&mut cx);
    values::check(&mut cx);
    cx.out
}

/// What every check needs, and where findings go.
struct Cx<'a> {
    spec: &'a TopologySpec,
    src: &'a SourceIndex,
    catalog: &'a dyn Catalog,
    out: Vec<Diagnostic>,
}

impl<'a> Cx<'a> {
    /// A finding at the key of `path` (e.g. a stage's name, or `config:`).
    fn at_key(&mut self, path: &[&str], message: String) {
        let at = self.src.key_pos(path);
        self.out.push(self.src.diag(at, path, message));
    }

    /// A finding at the value of `path` (e.g. the topic name in `from`).
    fn at_value(&mut self, path: &[&str], message: String) {
        let at = self.src.value_pos(path);
        self.out.push(self.src.diag(at, path, message));
    }

    /// Stages in the order they are written, so that "the first one" means what the
    /// reader sees first.
    fn stages_in_file_order(&self) -> Vec<(&'a str, &'a StageSpec)> {
        let spec: &'a TopologySpec = self.spec;
        self.in_file_order("stages", &spec.stages)
    }

    fn in_file_order<T>(&self, section: &str, map: &'a BTreeMap<String, T>) -> Vec<(&'a str, &'a T)> {
        let mut v: Vec<_> = map.iter().map(|(n, s)| (n.as_str(), s)).collect();
        v.sort_by_key(|(n, _)| (self.src.key_pos(&[section, n]), *n));
        v
    }
}

/// ` (did you mean `x`?)`, or nothing.
fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates).map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

/// `a, b, c` with backticks, or `none`.
fn list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let v: Vec<String> = names.into_iter().map(|n| format!("`{n}`")).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}
