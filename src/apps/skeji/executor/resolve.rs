//! `${previous_step.FIELD}` references in step params (docs/apps/skeji.md "Pipelines"):
//! - a string that is exactly one reference becomes that field's JSON value, any type;
//! - a reference inside a longer string is interpolated as text (strings as they are,
//!   `null` as nothing, anything else as compact JSON);
//! - `FIELD` is a dotted path; a numeric segment indexes an array (`slots.0.start_time`);
//!   `${previous_step}` alone is the whole previous result;
//! - a field the previous result lacks is an error (the pipeline cannot go on);
//! - other `${...}` text is left as it is, and references are resolved in nested arrays
//!   and objects too.

use serde_json::{Map, Value};

const ROOT: &str = "previous_step";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("param `{param}` uses `${{{reference}}}` but this is the first step")]
    NoPreviousStep { param: String, reference: String },
    #[error("param `{param}` uses `${{{reference}}}` but the previous step's result has no `{path}`")]
    Missing { param: String, reference: String, path: String },
}

/// `params` with every reference replaced from `previous` (the previous step's result).
pub fn resolve_params(
    params: &Map<String, Value>,
    previous: Option<&Value>,
) -> Result<Map<String, Value>, ResolveError> {
    params.iter().map(|(k, v)| Ok((k.clone(), resolve_value(v, previous, k)?))).collect()
}

fn resolve_value(v: &Value, previous: Option<&Value>, param: &str) -> Result<Value, ResolveError> {
    match v {
        Value::String(s) => resolve_str(s, previous, param),
        Value::Array(items) => {
            items.iter().map(|i| resolve_value(i, previous, param)).collect::<Result<_, _>>().map(Value::Array)
        }
        Value::Object(m) => resolve_params(m, previous).map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// The path of a reference body (`previous_step.a.b` → `a.b`, `previous_step` → ``), or
/// None for a body that is not a previous-step reference.
fn reference_path(body: &str) -> Option<&str> {
    let rest = body.trim().strip_prefix(ROOT)?;
    if rest.is_empty() {
        return Some("");
    }
    rest.strip_prefix('.')
}

fn fetch<'a>(previous: Option<&'a Value>, body: &str, path: &str, param: &str) -> Result<&'a Value, ResolveError> {
    let reference = body.trim().to_string();
    let root = previous
        .ok_or_else(|| ResolveError::NoPreviousStep { param: param.to_string(), reference: reference.clone() })?;
    lookup(root, path).ok_or_else(|| ResolveError::Missing {
        param: param.to_string(),
        reference,
        path: path.to_string(),
    })
}

fn resolve_str(s: &str, previous: Option<&Value>, param: &str) -> Result<Value, ResolveError> {
    // Whole-string reference: the value keeps its JSON type.
    let trimmed = s.trim();
    if let Some(body) = trimmed.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        if !body.contains('}') {
            if let Some(path) = reference_path(body) {
                return fetch(previous, body, path, param).cloned();
            }
        }
    }
    if !s.contains("${") {
        return Ok(Value::String(s.to_string()));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            // An unclosed `${`: plain text.
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let body = &after[..end];
        match reference_path(body) {
            Some(path) => out.push_str(&as_text(fetch(previous, body, path, param)?)),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The value at a dotted `path` in `root` (`""` is `root` itself).
pub fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(root);
    }
    path.split('.').try_fold(root, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("params must be an object"),
        }
    }

    fn prev() -> Value {
        json!({
            "business_ids": ["b1", "b2"],
            "schedule_id": "sch-b1-haircut",
            "start_time": "2030-01-07T15:00:00+02:00",
            "price": 120,
            "ok": true,
            "nothing": null,
            "slot": {"time": "15:00", "business": {"name": "Dana's"}},
            "slots": [{"time": "09:00"}, {"time": "09:15"}]
        })
    }

    #[test]
    fn whole_string_keeps_the_json_type() {
        let p = params(json!({
            "ids": "${previous_step.business_ids}",
            "price": "${previous_step.price}",
            "ok": " ${previous_step.ok} ",
            "nothing": "${previous_step.nothing}",
            "name": "${previous_step.slot.business.name}",
            "second": "${previous_step.slots.1.time}",
            "all": "${previous_step}",
            "plain": "haircut",
            "n": 3
        }));
        let r = resolve_params(&p, Some(&prev())).expect("resolves");
        assert_eq!(r["ids"], json!(["b1", "b2"]));
        assert_eq!(r["price"], json!(120));
        assert_eq!(r["ok"], json!(true));
        assert_eq!(r["nothing"], Value::Null);
        assert_eq!(r["name"], json!("Dana's"));
        assert_eq!(r["second"], json!("09:15"));
        assert_eq!(r["all"], prev());
        assert_eq!(r["plain"], json!("haircut"));
        assert_eq!(r["n"], json!(3));
    }

    #[test]
    fn embedded_references_interpolate_as_text() {
        let p = params(json!({
            "note": "at ${previous_step.slot.time} for ${previous_step.price} ILS${previous_step.nothing}",
            "ids": "ids=${previous_step.business_ids}",
            "two": "${previous_step.price}${previous_step.price}",
            "other": "cost ${USD} and ${previous_step.price",
            "nested": {"list": ["${previous_step.schedule_id}", "x ${previous_step.ok}"]}
        }));
        let r = resolve_params(&p, Some(&prev())).expect("resolves");
        assert_eq!(r["note"], json!("at 15:00 for 120 ILS"));
        assert_eq!(r["ids"], json!("ids=[\"b1\",\"b2\"]"));
        assert_eq!(r["two"], json!("120120"));
        assert_eq!(r["other"], json!("cost ${USD} and ${previous_step.price"));
        assert_eq!(r["nested"], json!({"list": ["sch-b1-haircut", "x true"]}));
    }

    #[test]
    fn missing_fields_and_first_steps_are_errors() {
        let missing = resolve_params(&params(json!({"id": "${previous_step.booking_id}"})), Some(&prev()));
        assert_eq!(
            missing,
            Err(ResolveError::Missing {
                param: "id".into(),
                reference: "previous_step.booking_id".into(),
                path: "booking_id".into()
            })
        );
        let deep = resolve_params(&params(json!({"t": "at ${previous_step.slots.7.time}"})), Some(&prev()));
        assert!(matches!(deep, Err(ResolveError::Missing { path, .. }) if path == "slots.7.time"));
        let through_scalar = resolve_params(&params(json!({"t": "${previous_step.price.amount}"})), Some(&prev()));
        assert!(matches!(through_scalar, Err(ResolveError::Missing { .. })));
        let first = resolve_params(&params(json!({"t": "${previous_step.x}"})), None);
        assert!(matches!(first, Err(ResolveError::NoPreviousStep { .. })));
        // No references: fine on a first step.
        let plain = resolve_params(&params(json!({"t": "3pm", "u": "${other}"})), None).expect("plain");
        assert_eq!(plain["u"], json!("${other}"));
    }
}
