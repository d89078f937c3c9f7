//! Names that must resolve: kinds, topics, outputs, node members, consumer groups.

use super::{hint, list, Cx};
use crate::topology::plan::stage_group;
use crate::topology::spec::{OneOrMany, Outputs};
use crate::topology::KindInfo;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn check(cx: &mut Cx<'_>) {
    stages(cx);
    ingress(cx);
    nodes(cx);
    groups(cx);
}

fn stages(cx: &mut Cx<'_>) {
    let spec = cx.spec;
    let kinds = cx.catalog.stage_kind_names();
    for (name, s) in &spec.stages {
        let name = name.as_str();
        match cx.catalog.stage_kind(&s.kind) {
            None => cx.at_value(
                &["stages", name, "kind"],
                format!(
                    "unknown stage kind `{}`{}; known kinds: {}",
                    s.kind,
                    hint(&s.kind, kinds.iter().map(String::as_str)),
                    list(kinds.iter().map(String::as_str))
                ),
            ),
            Some(info) => {
                config(cx, "stages", name, &s.kind, &s.config, &info);
                outputs(cx, name, &s.kind, &s.to, &info);
            }
        }
        match &s.from {
            OneOrMany::One(t) => topic_ref(cx, &["stages", name, "from"], "from", "", t),
            OneOrMany::Many(v) if v.is_empty() => cx.at_value(
                &["stages", name, "from"],
                "`from` is empty: name the topic (or topics) this stage reads".to_string(),
            ),
            OneOrMany::Many(v) => {
                for (i, t) in v.iter().enumerate() {
                    topic_ref(cx, &["stages", name, "from", &i.to_string()], "from", "", t);
                }
            }
        }
        match &s.to {
            Outputs::Default(t) => topic_ref(cx, &["stages", name, "to"], "to", "", t),
            Outputs::Named(m) => {
                for (out, t) in m {
                    topic_ref(cx, &["stages", name, "to", out], "to", &format!(" (output `{out}`)"), t);
                }
            }
        }
        if let Some(t) = &s.dlq {
            topic_ref(cx, &["stages", name, "dlq"], "dlq", "", t);
        }
    }
}

fn ingress(cx: &mut Cx<'_>) {
    let spec = cx.spec;
    let kinds = cx.catalog.ingress_kind_names();
    for (name, i) in &spec.ingress {
        let name = name.as_str();
        match cx.catalog.ingress_kind(&i.kind) {
            None => cx.at_value(
                &["ingress", name, "kind"],
                format!(
                    "unknown ingress kind `{}`{}; known kinds: {}",
                    i.kind,
                    hint(&i.kind, kinds.iter().map(String::as_str)),
                    list(kinds.iter().map(String::as_str))
                ),
            ),
            Some(info) => config(cx, "ingress", name, &i.kind, &i.config, &info),
        }
        topic_ref(cx, &["ingress", name, "to"], "to", "", &i.to);
        if spec.stages.contains_key(name) {
            cx.at_key(
                &["ingress", name],
                format!("ingress `{name}` has the same name as a stage, so `nodes` cannot tell them apart: rename one"),
            );
        }
    }
}

/// The kind's own check of `config`, reported at `config:` (or at `kind:` without one).
fn config(
    cx: &mut Cx<'_>,
    section: &str,
    name: &str,
    kind: &str,
    config: &serde_json::Map<String, serde_json::Value>,
    info: &KindInfo,
) {
    if let Err(e) = (info.check_config)(&serde_json::Value::Object(config.clone())) {
        let reason = e.strip_prefix("invalid config: ").unwrap_or(&e);
        let message = format!("invalid `config` for kind `{kind}`: {reason}");
        if cx.src.has(&[section, name, "config"]) {
            cx.at_key(&[section, name, "config"], message);
        } else {
            cx.at_value(&[section, name, "kind"], message);
        }
    }
}

/// `{field} topic `{topic}`{detail} is not declared in `topics``, unless it is.
fn topic_ref(cx: &mut Cx<'_>, path: &[&str], field: &str, detail: &str, topic: &str) {
    let topics = &cx.spec.topics;
    if topics.contains_key(topic) {
        return;
    }
    let fix = match super::did_you_mean(topic, topics.keys().map(String::as_str)) {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => ": declare it under `topics` or fix the name".to_string(),
    };
    cx.at_value(path, format!("{field} topic `{topic}`{detail} is not declared in `topics`{fix}"));
}

/// Output names the kind does not emit, and required outputs left unwired.
fn outputs(cx: &mut Cx<'_>, name: &str, kind: &str, to: &Outputs, info: &KindInfo) {
    let wired = to.to_map();
    if !info.outputs.is_empty() {
        for out in wired.keys() {
            if info.outputs.contains(&out.as_str()) {
                continue;
            }
            let known = list(info.outputs.iter().copied());
            match to {
                Outputs::Default(_) => cx.at_value(
                    &["stages", name, "to"],
                    format!(
                        "`to: <topic>` wires output `default`, which kind `{kind}` does not have; its outputs are {known}: write `to: {{<output>: <topic>}}`"
                    ),
                ),
                Outputs::Named(_) => cx.at_key(
                    &["stages", name, "to", out],
                    format!(
                        "kind `{kind}` has no output `{out}`{}; its outputs are {known}",
                        hint(out, info.outputs.iter().copied())
                    ),
                ),
            }
        }
    }
    for required in &info.required_outputs {
        if wired.contains_key(*required) {
            continue;
        }
        let message =
            format!("required output `{required}` of kind `{kind}` is not wired: add `{required}: <topic>` under `to`");
        if cx.src.has(&["stages", name, "to"]) {
            cx.at_key(&["stages", name, "to"], message);
        } else {
            cx.at_key(&["stages", name], message);
        }
    }
}

fn nodes(cx: &mut Cx<'_>) {
    let spec = cx.spec;
    if spec.nodes.is_empty() {
        return;
    }
    let runnable: Vec<&str> = spec.stages.keys().chain(spec.ingress.keys()).map(String::as_str).collect();
    let mut assigned = BTreeSet::new();
    for (node, members) in &spec.nodes {
        if members.is_empty() {
            cx.at_key(
                &["nodes", node],
                format!("node `{node}` runs nothing: list the stages and ingress it runs, or remove it"),
            );
        }
        for (i, m) in members.iter().enumerate() {
            assigned.insert(m.as_str());
            if !runnable.contains(&m.as_str()) {
                cx.at_value(
                    &["nodes", node, &i.to_string()],
                    format!("`{m}` is neither a stage nor an ingress{}", hint(m, runnable.iter().copied())),
                );
            }
        }
    }
    let unassigned = |names: Vec<&'_ String>| -> Vec<String> {
        names.into_iter().filter(|n| !assigned.contains(n.as_str())).cloned().collect()
    };
    for name in unassigned(spec.stages.keys().collect()) {
        cx.at_key(&["stages", &name], format!("stage `{name}` is run by no node: add it to a list under `nodes`"));
    }
    for name in unassigned(spec.ingress.keys().collect()) {
        cx.at_key(&["ingress", &name], format!("ingress `{name}` is run by no node: add it to a list under `nodes`"));
    }
}

/// Two stages in one consumer group would split the records between them.
fn groups(cx: &mut Cx<'_>) {
    let mut first_user: BTreeMap<String, String> = BTreeMap::new();
    for (name, s) in cx.stages_in_file_order() {
        let group = stage_group(name, s.group.as_deref());
        match first_user.get(&group) {
            Some(other) => {
                let message = format!(
                    "consumer group `{group}` is also used by stage `{other}`; stages sharing a group split the records between them: give this stage its own `group`"
                );
                cx.at_value(&["stages", name, "group"], message);
            }
            None => {
                first_user.insert(group, name.to_string());
            }
        }
    }
}
