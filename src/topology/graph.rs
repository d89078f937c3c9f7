//! The wiring as a picture for `weir graph`: Mermaid (pastes into Markdown) or Graphviz
//! dot. Topics are cylinders, stages boxes, ingress listeners sources; each entry of
//! `nodes:` is a cluster. Output is sorted so that a diff of two renderings is a diff of
//! the wiring.

use super::spec::{OneOrMany, Outputs, StageSpec, TopologySpec};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum GraphFormat {
    #[default]
    Mermaid,
    Dot,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Topic,
    Stage,
    Ingress,
}

struct Vertex {
    id: String,
    label: Vec<String>,
    shape: Shape,
}

struct Edge {
    from: String,
    to: String,
    label: Option<String>,
    dashed: bool,
}

/// The drawing, independent of syntax.
struct Drawing {
    /// node name → (cluster id, the vertices it runs).
    clusters: BTreeMap<String, (String, Vec<Vertex>)>,
    loose: Vec<Vertex>,
    edges: Vec<Edge>,
}

pub fn render(name: &str, spec: &TopologySpec, format: GraphFormat) -> String {
    let d = layout(spec);
    match format {
        GraphFormat::Mermaid => mermaid(name, &d),
        GraphFormat::Dot => dot(name, &d),
    }
}

fn layout(spec: &TopologySpec) -> Drawing {
    let mut ids = Ids::default();
    let mut topics: BTreeSet<&str> = spec.topics.keys().map(String::as_str).collect();
    for s in spec.stages.values() {
        topics.extend(from_topics(s));
        topics.extend(written_topics(s));
    }
    topics.extend(spec.ingress.values().map(|i| i.to.as_str()));

    // Where each stage/ingress goes: the one node that runs it, else outside clusters
    // (run by none, or by several: a vertex can only be drawn once).
    let mut runners: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (node, members) in &spec.nodes {
        for m in members {
            runners.entry(m.as_str()).or_default().push(node.as_str());
        }
    }
    let mut d = Drawing { clusters: BTreeMap::new(), loose: Vec::new(), edges: Vec::new() };
    for node in spec.nodes.keys() {
        d.clusters.insert(node.clone(), (ids.get("n", node), Vec::new()));
    }
    let place = |d: &mut Drawing, name: &str, mut v: Vertex| match runners.get(name).map(Vec::as_slice) {
        Some([only]) => match d.clusters.get_mut(*only) {
            Some((_, members)) => members.push(v),
            None => d.loose.push(v),
        },
        Some(many) => {
            v.label.push(format!("on {}", many.join(", ")));
            d.loose.push(v);
        }
        None => d.loose.push(v),
    };

    for t in &topics {
        let v = Vertex { id: ids.get("t", t), label: vec![t.to_string()], shape: Shape::Topic };
        d.loose.push(v);
    }
    for (name, s) in &spec.stages {
        let id = ids.get("s", name);
        for t in from_topics(s) {
            d.edges.push(Edge { from: ids.get("t", t), to: id.clone(), label: None, dashed: false });
        }
        for (out, t) in s.to.to_map() {
            let label = match s.key.as_ref().and_then(|k| k.for_output(&out)) {
                Some(key) => format!("{out} · key {key}"),
                None => out,
            };
            d.edges.push(Edge { from: id.clone(), to: ids.get("t", &t), label: Some(label), dashed: false });
        }
        if let Some(t) = &s.dlq {
            d.edges.push(Edge { from: id.clone(), to: ids.get("t", t), label: Some("dlq".into()), dashed: true });
        }
        let v = Vertex { id, label: vec![name.clone(), format!("({})", s.kind)], shape: Shape::Stage };
        place(&mut d, name, v);
    }
    for (name, i) in &spec.ingress {
        let id = ids.get("i", name);
        let label = i.key.as_ref().map(|k| format!("key {k}"));
        d.edges.push(Edge { from: id.clone(), to: ids.get("t", &i.to), label, dashed: false });
        let at = format!("{}{}", i.listen, i.path.as_deref().unwrap_or(""));
        let v = Vertex { id, label: vec![name.clone(), format!("{} {at}", i.kind)], shape: Shape::Ingress };
        place(&mut d, name, v);
    }
    d
}

fn from_topics(s: &StageSpec) -> Vec<&str> {
    match &s.from {
        OneOrMany::One(t) => vec![t.as_str()],
        OneOrMany::Many(ts) => ts.iter().map(String::as_str).collect(),
    }
}

/// Every topic a stage writes, the DLQ included.
fn written_topics(s: &StageSpec) -> Vec<&str> {
    let mut v: Vec<&str> = match &s.to {
        Outputs::Default(t) => vec![t.as_str()],
        Outputs::Named(m) => m.values().map(String::as_str).collect(),
    };
    v.extend(s.dlq.as_deref());
    v
}

/// Identifiers safe in both syntaxes (`[A-Za-z0-9_]`), unique even when two names differ
/// only in characters that had to be replaced (`a-b` vs `a_b`).
#[derive(Default)]
struct Ids {
    by_name: BTreeMap<(String, String), String>,
    taken: BTreeSet<String>,
}

impl Ids {
    fn get(&mut self, prefix: &str, name: &str) -> String {
        let key = (prefix.to_string(), name.to_string());
        if let Some(id) = self.by_name.get(&key) {
            return id.clone();
        }
        let base: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let base = format!("{prefix}_{base}");
        let mut id = base.clone();
        let mut n = 2;
        while self.taken.contains(&id) {
            id = format!("{base}_{n}");
            n += 1;
        }
        self.taken.insert(id.clone());
        self.by_name.insert(key, id.clone());
        id
    }
}

fn mermaid(name: &str, d: &Drawing) -> String {
    // Mermaid reads entity codes in quoted labels; quotes and angle brackets must be coded.
    let text = |s: &str| {
        s.replace('#', "#35;").replace('"', "#quot;").replace('<', "#lt;").replace('>', "#gt;").replace('|', "#124;")
    };
    let vertex = |v: &Vertex| {
        let label = v.label.iter().map(|l| text(l)).collect::<Vec<_>>().join("<br/>");
        match v.shape {
            Shape::Topic => format!("{}[(\"{label}\")]", v.id),
            Shape::Stage => format!("{}[\"{label}\"]", v.id),
            Shape::Ingress => format!("{}>\"{label}\"]", v.id),
        }
    };
    let mut out = String::new();
    let title = serde_json::to_string(name).unwrap_or_else(|_| "\"topology\"".to_string());
    let _ = writeln!(out, "---\ntitle: {title}\n---\nflowchart LR");
    for (node, (id, members)) in &d.clusters {
        let _ = writeln!(out, "  subgraph {id}[\"node {}\"]", text(node));
        for v in members {
            let _ = writeln!(out, "    {}", vertex(v));
        }
        let _ = writeln!(out, "  end");
    }
    for v in &d.loose {
        let _ = writeln!(out, "  {}", vertex(v));
    }
    for e in &d.edges {
        let arrow = if e.dashed { "-.->" } else { "-->" };
        match &e.label {
            Some(l) => {
                let _ = writeln!(out, "  {} {arrow}|\"{}\"| {}", e.from, text(l), e.to);
            }
            None => {
                let _ = writeln!(out, "  {} {arrow} {}", e.from, e.to);
            }
        }
    }
    out
}

fn dot(name: &str, d: &Drawing) -> String {
    // Inside a quoted dot string only `\\` and `"` are special; line breaks are `\\n`.
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace(['\n', '\r'], " ");
    let q = |s: &str| format!("\"{}\"", esc(s));
    let vertex = |v: &Vertex| {
        let shape = match v.shape {
            Shape::Topic => "cylinder",
            Shape::Stage => "box",
            Shape::Ingress => "cds",
        };
        let label = v.label.iter().map(|l| esc(l)).collect::<Vec<_>>().join("\\n");
        format!("{} [shape={shape}, label=\"{label}\"];", v.id)
    };
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{\n  label={};\n  labelloc=t;\n  rankdir=LR;", q(name), q(name));
    for (node, (id, members)) in &d.clusters {
        // Graphviz draws a subgraph as a box only when its id starts with `cluster`.
        let _ = writeln!(out, "  subgraph cluster_{id} {{\n    label={};", q(&format!("node {node}")));
        for v in members {
            let _ = writeln!(out, "    {}", vertex(v));
        }
        let _ = writeln!(out, "  }}");
    }
    for v in &d.loose {
        let _ = writeln!(out, "  {}", vertex(v));
    }
    for e in &d.edges {
        let mut attrs = Vec::new();
        if let Some(l) = &e.label {
            attrs.push(format!("label={}", q(l)));
        }
        if e.dashed {
            attrs.push("style=dashed".to_string());
        }
        let attrs = if attrs.is_empty() { String::new() } else { format!(" [{}]", attrs.join(", ")) };
        let _ = writeln!(out, "  {} -> {}{attrs};", e.from, e.to);
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
topics:
  in: {}
  out-1: {}
  out_1: {}
  dlq: {}
stages:
  work: {kind: passthrough, from: in, to: {default: out-1}, key: id, dlq: dlq}
  copy: {kind: log, from: in, to: out_1}
ingress:
  api: {kind: http-json, listen: "0.0.0.0:80", path: /in, to: in}
nodes:
  edge: [api, copy]
  "say \"hi\"": [copy]
"#;

    fn spec() -> TopologySpec {
        serde_saphyr::from_str(SPEC).unwrap()
    }

    #[test]
    fn mermaid_output() {
        let expected = r#"---
title: "demo"
---
flowchart LR
  subgraph n_edge["node edge"]
    i_api>"api<br/>http-json 0.0.0.0:80/in"]
  end
  subgraph n_say__hi_["node say #quot;hi#quot;"]
  end
  t_dlq[("dlq")]
  t_in[("in")]
  t_out_1[("out-1")]
  t_out_1_2[("out_1")]
  s_copy["copy<br/>(log)<br/>on edge, say #quot;hi#quot;"]
  s_work["work<br/>(passthrough)"]
  t_in --> s_copy
  s_copy -->|"default"| t_out_1_2
  t_in --> s_work
  s_work -->|"default · key id"| t_out_1
  s_work -.->|"dlq"| t_dlq
  i_api --> t_in
"#;
        assert_eq!(render("demo", &spec(), GraphFormat::Mermaid), expected);
    }

    #[test]
    fn dot_output() {
        let expected = r#"digraph "demo \"x\"" {
  label="demo \"x\"";
  labelloc=t;
  rankdir=LR;
  subgraph cluster_n_edge {
    label="node edge";
    i_api [shape=cds, label="api\nhttp-json 0.0.0.0:80/in"];
  }
  subgraph cluster_n_say__hi_ {
    label="node say \"hi\"";
  }
  t_dlq [shape=cylinder, label="dlq"];
  t_in [shape=cylinder, label="in"];
  t_out_1 [shape=cylinder, label="out-1"];
  t_out_1_2 [shape=cylinder, label="out_1"];
  s_copy [shape=box, label="copy\n(log)\non edge, say \"hi\""];
  s_work [shape=box, label="work\n(passthrough)"];
  t_in -> s_copy;
  s_copy -> t_out_1_2 [label="default"];
  t_in -> s_work;
  s_work -> t_out_1 [label="default · key id"];
  s_work -> t_dlq [label="dlq", style=dashed];
  i_api -> t_in;
}
"#;
        assert_eq!(render("demo \"x\"", &spec(), GraphFormat::Dot), expected);
    }

    #[test]
    fn without_nodes_nothing_is_clustered() {
        let mut s = spec();
        s.nodes.clear();
        let m = render("demo", &s, GraphFormat::Mermaid);
        assert!(!m.contains("subgraph"), "{m}");
        assert!(m.contains("  s_copy[\"copy<br/>(log)\"]"), "{m}");
    }

    #[test]
    fn ids_are_unique_and_safe() {
        let mut ids = Ids::default();
        assert_eq!(ids.get("t", "a-b"), "t_a_b");
        assert_eq!(ids.get("t", "a_b"), "t_a_b_2");
        assert_eq!(ids.get("t", "a-b"), "t_a_b");
        assert_eq!(ids.get("s", "a-b"), "s_a_b");
        assert_eq!(ids.get("t", "é x"), "t___x");
    }
}
