//! Payload types along the wiring: what a kind writes on an output (or an ingress on its
//! topic) must be what the output topic's `payload_type` declares, and what a kind reads
//! must be what its `from` topics declare. At run time a mismatch dead-letters every
//! record, so it is refused here, before anything starts.
//!
//! Only what is known on both sides is compared: a topic without `payload_type` (or with
//! a `schema` instead) and a kind that declares nothing are not checked.

use super::Cx;
use crate::topology::spec::{OneOrMany, Outputs};
use crate::topology::{KindInfo, Writes};

pub(super) fn check(cx: &mut Cx<'_>) {
    stages(cx);
    ingress(cx);
}

/// One `from` or `to` entry: where it is written, how to name it in a fix, its topic.
struct Wire {
    path: Vec<String>,
    field: String,
    topic: String,
}

impl Wire {
    fn path(&self) -> Vec<&str> {
        self.path.iter().map(String::as_str).collect()
    }
}

fn stages(cx: &mut Cx<'_>) {
    for (name, s) in cx.stages_in_file_order() {
        let Some(info) = cx.catalog.stage_kind(&s.kind) else { continue };
        let inputs: Vec<Wire> = match &s.from {
            OneOrMany::One(t) => vec![Wire { path: path(&["stages", name, "from"]), field: "from".into(), topic: t.clone() }],
            OneOrMany::Many(v) => v
                .iter()
                .enumerate()
                .map(|(i, t)| Wire {
                    path: path(&["stages", name, "from", &i.to_string()]),
                    field: "from".into(),
                    topic: t.clone(),
                })
                .collect(),
        };
        let outputs: Vec<(String, Wire)> = match &s.to {
            Outputs::Default(t) => vec![(
                "default".to_string(),
                Wire { path: path(&["stages", name, "to"]), field: "to".into(), topic: t.clone() },
            )],
            Outputs::Named(m) => m
                .iter()
                .map(|(out, t)| {
                    let wire =
                        Wire { path: path(&["stages", name, "to", out]), field: format!("to.{out}"), topic: t.clone() };
                    (out.clone(), wire)
                })
                .collect(),
        };
        reads(cx, &s.kind, &info, &inputs);
        for (out, wire) in &outputs {
            writes(cx, &s.kind, &info, out, wire, &inputs);
        }
    }
}

/// Each typed `from` topic must carry a type the kind decodes.
fn reads(cx: &mut Cx<'_>, kind: &str, info: &KindInfo, inputs: &[Wire]) {
    if info.input_types.is_empty() {
        return;
    }
    for wire in inputs {
        let Some(declared) = topic_type(cx, &wire.topic) else { continue };
        if info.input_types.contains(&declared) {
            continue;
        }
        let readable: Vec<&str> = info.input_types.clone();
        let message = format!(
            "kind `{kind}` reads {}, but `{}` topic `{}` declares payload_type `{declared}`, so every record would be dead-lettered: read a topic with payload_type {}{}, or change the topic's payload_type",
            one_of(&readable),
            wire.field,
            wire.topic,
            one_of(&readable),
            examples(cx, &readable, &wire.topic),
        );
        cx.at_value(&wire.path(), message);
    }
}

/// The typed topic of output `out` must carry what the kind writes there.
fn writes(cx: &mut Cx<'_>, kind: &str, info: &KindInfo, out: &str, wire: &Wire, inputs: &[Wire]) {
    let Some(declared) = topic_type(cx, &wire.topic) else { return };
    let message = match info.writes(out) {
        Writes::Undeclared => return,
        Writes::Type(written) if written == declared => return,
        Writes::Type(written) => format!(
            "output `{out}` of kind `{kind}` writes `{written}`, but its topic `{}` declares payload_type `{declared}`, so every record would be dead-lettered: point `{}` at a topic with payload_type `{written}`{}, or change the topic's payload_type",
            wire.topic,
            wire.field,
            examples(cx, &[written], &wire.topic),
        ),
        Writes::Input => {
            // Each typed input is forwarded as it is; untyped inputs cannot be judged.
            let Some((input, carried)) = inputs
                .iter()
                .filter_map(|w| topic_type(cx, &w.topic).map(|t| (w, t)))
                .find(|(_, t)| *t != declared)
            else {
                return;
            };
            format!(
                "kind `{kind}` forwards its input unchanged, and `{}` topic `{}` declares payload_type `{carried}`, but output `{out}` goes to topic `{}`, which declares payload_type `{declared}`, so those records would be dead-lettered: point `{}` at a topic with payload_type `{carried}`{}, or change the topic's payload_type",
                input.field,
                input.topic,
                wire.topic,
                wire.field,
                examples(cx, &[carried], &wire.topic),
            )
        }
    };
    cx.at_value(&wire.path(), message);
}

fn ingress(cx: &mut Cx<'_>) {
    let spec = cx.spec;
    for (name, i) in cx.in_file_order("ingress", &spec.ingress) {
        let Some(info) = cx.catalog.ingress_kind(&i.kind) else { continue };
        let Writes::Type(written) = info.writes("default") else { continue };
        let Some(declared) = topic_type(cx, &i.to) else { continue };
        if written == declared {
            continue;
        }
        let message = format!(
            "ingress kind `{}` writes `{written}`, but its topic `{}` declares payload_type `{declared}`, so every record would be dead-lettered: point `to` at a topic with payload_type `{written}`{}, or change the topic's payload_type",
            i.kind,
            i.to,
            examples(cx, &[written], &i.to),
        );
        cx.at_value(&["ingress", name, "to"], message);
    }
}

/// The registered payload type a topic declares; `None` when it declares none, or one the
/// binary does not know (reported by the value checks already).
fn topic_type<'a>(cx: &Cx<'a>, topic: &str) -> Option<&'a str> {
    let spec = cx.spec;
    let ty = spec.topics.get(topic)?.payload_type.as_deref()?;
    cx.catalog.payload_type_fields(ty).is_some().then_some(ty)
}

/// `, e.g. `a`` (up to two topics of one of `types`, other than `except`, in file order),
/// or how to get one.
fn examples(cx: &Cx<'_>, types: &[&str], except: &str) -> String {
    let spec = cx.spec;
    let found: Vec<&str> = cx
        .in_file_order("topics", &spec.topics)
        .into_iter()
        .filter(|(name, t)| *name != except && t.payload_type.as_deref().is_some_and(|ty| types.contains(&ty)))
        .map(|(name, _)| name)
        .take(2)
        .collect();
    if found.is_empty() {
        " (declare one under `topics`)".to_string()
    } else {
        format!(", e.g. {}", found.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(" or "))
    }
}

/// `` `a` `` or `` `a`, `b` or `c` `` … as a choice.
fn one_of(types: &[&str]) -> String {
    match types.split_last() {
        Some((last, [])) => format!("`{last}`"),
        Some((last, rest)) => format!("{} or `{last}`", rest.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")),
        None => "none".to_string(),
    }
}

fn path(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}
