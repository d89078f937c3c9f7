//! `key:` fields that the payload cannot have. Checked only where the payload's fields are
//! knowable (payload type, inline schema, or what the kind declares it writes); otherwise
//! any key is accepted, since refusing it would be a guess.

use super::{hint, list, Cx};
use crate::topology::spec::{KeySpec, TopicSpec};
use crate::topology::{Catalog, KindInfo, ENVELOPE_FIELDS};

pub(super) fn check(cx: &mut Cx<'_>) {
    let spec = cx.spec;
    for (name, s) in &spec.stages {
        let Some(key) = &s.key else { continue };
        let name = name.as_str();
        let wired = s.to.to_map();
        if let KeySpec::PerOutput(per_output) = key {
            for out in per_output.keys().filter(|o| !wired.contains_key(*o)) {
                cx.at_key(
                    &["stages", name, "key", out],
                    format!(
                        "`key` names output `{out}`, which is not wired in `to`{}",
                        hint(out, wired.keys().map(String::as_str))
                    ),
                );
            }
        }
        let info = cx.catalog.stage_kind(&s.kind);
        for (out, topic) in &wired {
            let Some(field) = key.for_output(out) else { continue };
            let head = field.split('.').next().unwrap_or(field);
            if ENVELOPE_FIELDS.contains(&head) {
                continue;
            }
            let declared = spec.topics.get(topic);
            let Some((fields, from)) = payload_fields(cx.catalog, declared, info.as_ref().map(|i| (i, out.as_str())))
            else {
                continue;
            };
            if fields.iter().any(|f| f == head) {
                continue;
            }
            let names = fields.iter().map(String::as_str).chain(ENVELOPE_FIELDS.iter().copied());
            let message = format!(
                "key `{field}` is not a field of the payload on output `{out}` (topic `{topic}`, fields from {from}){}; key by one of: {}",
                hint(head, names.clone()),
                list(names)
            );
            match key {
                KeySpec::All(_) => cx.at_value(&["stages", name, "key"], message),
                KeySpec::PerOutput(_) => cx.at_value(&["stages", name, "key", out], message),
            }
        }
    }
    for (name, i) in &spec.ingress {
        let Some(field) = &i.key else { continue };
        let head = field.split('.').next().unwrap_or(field);
        // The ingress reads its key from the request body only, so envelope fields do not count.
        let Some((fields, from)) = payload_fields(cx.catalog, spec.topics.get(&i.to), None) else { continue };
        if !fields.iter().any(|f| f == head) {
            let names = fields.iter().map(String::as_str);
            cx.at_value(
                &["ingress", name, "key"],
                format!(
                    "key `{field}` is not a field of the payload of topic `{}` (fields from {from}){}; key by one of: {}",
                    i.to,
                    hint(head, names.clone()),
                    list(names)
                ),
            );
        }
    }
}

/// The top-level payload fields on a topic written by a kind's output, and where they are
/// known from; `None` when nothing says.
fn payload_fields(
    catalog: &dyn Catalog,
    topic: Option<&TopicSpec>,
    writer: Option<(&KindInfo, &str)>,
) -> Option<(Vec<String>, String)> {
    if let Some(ty) = topic.and_then(|t| t.payload_type.as_deref()) {
        if let Some(fields) = catalog.payload_type_fields(ty) {
            return Some((fields, format!("payload type `{ty}`")));
        }
    }
    if let Some(props) = topic.and_then(|t| t.schema.as_ref()).and_then(|s| s.get("properties")?.as_object()) {
        return Some((props.keys().cloned().collect(), "the topic's `schema`".to_string()));
    }
    let (info, out) = writer?;
    let fields = info.output_fields.get(out)?;
    Some((fields.iter().map(|f| f.to_string()).collect(), "what the stage kind writes".to_string()))
}
