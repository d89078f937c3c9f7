//! `Topology::parse` end to end against a small fake catalog: every validation error with
//! the line (and column) it points at and the stage/topic/ingress/node it names.

use std::collections::BTreeMap;
use weir::topology::{Catalog, Diagnostic, Diagnostics, KindInfo, Topology};

struct FakeCatalog;

fn kind(outputs: &[&'static str], required: &[&'static str]) -> KindInfo {
    KindInfo {
        outputs: outputs.to_vec(),
        required_outputs: required.to_vec(),
        output_fields: BTreeMap::new(),
        check_config: Box::new(|_| Ok(())),
        ..KindInfo::default()
    }
}

impl Catalog for FakeCatalog {
    fn stage_kind(&self, name: &str) -> Option<KindInfo> {
        match name {
            "passthrough" => Some(kind(&["default"], &["default"])),
            "filter" => Some(kind(&["default", "rejected"], &["default"])),
            "router" => Some(KindInfo {
                check_config: Box::new(|c| match c.get("field") {
                    Some(serde_json::Value::String(_)) => Ok(()),
                    _ => Err("invalid config: missing field `field`".to_string()),
                }),
                ..kind(&[], &[])
            }),
            "enricher" => Some(KindInfo {
                output_fields: BTreeMap::from([("default", vec!["booking_id", "customer", "total"])]),
                ..kind(&["default"], &[])
            }),
            _ => None,
        }
    }
    fn stage_kind_names(&self) -> Vec<String> {
        ["enricher", "filter", "passthrough", "router"].map(String::from).to_vec()
    }
    fn ingress_kind(&self, name: &str) -> Option<KindInfo> {
        (name == "http-json").then(|| KindInfo {
            check_config: Box::new(|c| match c.as_object().and_then(|o| o.keys().find(|k| *k != "batch")) {
                Some(k) => Err(format!("invalid config: unknown field `{k}`")),
                None => Ok(()),
            }),
            ..kind(&[], &[])
        })
    }
    fn ingress_kind_names(&self) -> Vec<String> {
        vec!["http-json".to_string()]
    }
    fn payload_type_fields(&self, name: &str) -> Option<Vec<String>> {
        let fields: &[&str] = match name {
            "Booking" => &["booking_id", "status", "customer_id"],
            "Order" => &["order_id", "amount"],
            _ => return None,
        };
        Some(fields.iter().map(|f| f.to_string()).collect())
    }
    fn payload_type_names(&self) -> Vec<String> {
        vec!["Booking".to_string(), "Order".to_string()]
    }
}

fn parse_with(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Topology, Diagnostics> {
    Topology::parse("topology.yaml", yaml, env, &FakeCatalog)
}

fn errors(yaml: &str) -> Vec<Diagnostic> {
    match parse_with(yaml, &|_| None) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(d) => d.0,
    }
}

/// The single finding for `yaml` (fails if there are none or several).
fn only(yaml: &str) -> Diagnostic {
    let d = errors(yaml);
    assert_eq!(d.len(), 1, "expected one finding, got:\n{}", Diagnostics(d.clone()));
    d.into_iter().next().unwrap()
}

/// The 1-based column of `needle` on 1-based `line` of `yaml`.
fn col(yaml: &str, line: u32, needle: &str) -> u32 {
    let text = yaml.lines().nth(line as usize - 1).unwrap();
    let byte = text.find(needle).unwrap_or_else(|| panic!("`{needle}` not on line {line}: {text}"));
    text[..byte].chars().count() as u32 + 1
}

fn assert_at(d: &Diagnostic, yaml: &str, line: u32, needle: &str, subject: &str, message: &str) {
    assert_eq!((d.line, d.column), (line, col(yaml, line, needle)), "{d}");
    assert_eq!(d.subject, subject, "{d}");
    assert!(d.message.contains(message), "expected `{message}` in: {d}");
    assert_eq!(d.file, "topology.yaml");
}

fn assert_valid(yaml: &str) -> Topology {
    match parse_with(yaml, &|_| None) {
        Ok(t) => t,
        Err(d) => panic!("rejected:\n{d}"),
    }
}

#[path = "topology_validate/env_and_syntax.rs"]
mod env_and_syntax;
#[path = "topology_validate/payload_types.rs"]
mod payload_types;
#[path = "topology_validate/references.rs"]
mod references;
#[path = "topology_validate/values.rs"]
mod values;
#[path = "topology_validate/whole_files.rs"]
mod whole_files;
#[path = "topology_validate/wiring.rs"]
mod wiring;
