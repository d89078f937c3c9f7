//! Checks a plan against the catalogue: the intent's exact steps, known params with the
//! right shapes, references only where a previous step exists. Model output is parsed
//! and checked here before it can reach the executor; the rules provider's plans pass
//! the same check in tests.

use super::catalog::{self, Fill, ParamKind, ParamSpec, DAYS};
use super::provider::{Intent, LlmError, Plan};
use crate::apps::skeji::model::Step;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The JSON object a model answers with (see `prompt::response_schema`).
#[derive(Debug, Deserialize)]
struct ModelOutput {
    intent: String,
    // `language` is in the schema but not read: the scrub layer's detection travels with
    // the message and is what the request carries.
    #[serde(default)]
    pipeline: Vec<ModelStep>,
    #[serde(default)]
    reply: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ModelStep {
    service: String,
    action: String,
    #[serde(default)]
    params: Option<Map<String, Value>>,
}

/// Parses a model's answer into a checked plan. Nulls stand for absent optional params
/// (strict structured output lists every param); the sender's phone is set here, whatever
/// the model wrote.
pub fn plan_from_model(content: &str, user_phone: &str) -> Result<Plan, LlmError> {
    let out: ModelOutput =
        serde_json::from_str(content).map_err(|e| LlmError::invalid_output(format!("not the expected JSON object: {e}")))?;
    let intent = Intent::parse(&out.intent).ok_or_else(|| LlmError::invalid_output(format!("unknown intent `{}`", out.intent)))?;
    let mut pipeline = Vec::with_capacity(out.pipeline.len());
    for (i, step) in out.pipeline.into_iter().enumerate() {
        if !catalog::SERVICES.contains(&step.service.as_str()) {
            return Err(LlmError::invalid_output(format!("step {}: unknown service `{}`", i + 1, step.service)));
        }
        let spec = catalog::action(&step.service, &step.action)
            .ok_or_else(|| LlmError::invalid_output(format!("step {}: unknown action `{}.{}`", i + 1, step.service, step.action)))?;
        let mut params: Map<String, Value> = step.params.unwrap_or_default().into_iter().filter(|(_, v)| !v.is_null()).collect();
        for p in spec.params.iter().filter(|p| p.fill == Fill::UserPhone) {
            params.insert(p.name.to_string(), Value::String(user_phone.to_string()));
        }
        pipeline.push(Step { service: step.service, action: step.action, params });
    }
    let reply = out.reply.filter(|r| intent == Intent::Help && !r.trim().is_empty());
    let plan = Plan { intent, pipeline, reply };
    check_plan(&plan).map_err(LlmError::invalid_output)?;
    Ok(plan)
}

/// Whether `plan` follows the contract; the reason when not.
pub fn check_plan(plan: &Plan) -> Result<(), String> {
    let spec = catalog::intent_spec(plan.intent).ok_or_else(|| format!("intent `{}` has no pipeline spec", plan.intent))?;
    let got: Vec<(&str, &str)> = plan.pipeline.iter().map(|s| (s.service.as_str(), s.action.as_str())).collect();
    if got != spec.steps {
        let show = |steps: &[(&str, &str)]| {
            if steps.is_empty() {
                "no steps".to_string()
            } else {
                steps.iter().map(|(s, a)| format!("{s}.{a}")).collect::<Vec<_>>().join(" → ")
            }
        };
        return Err(format!("intent `{}` needs {}, got {}", plan.intent, show(spec.steps), show(&got)));
    }
    if plan.intent == Intent::Help && plan.reply.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err("intent `help` needs a reply".to_string());
    }
    for (i, step) in plan.pipeline.iter().enumerate() {
        check_step(i, step).map_err(|e| format!("step {} ({}.{}): {e}", i + 1, step.service, step.action))?;
    }
    Ok(())
}

fn check_step(index: usize, step: &Step) -> Result<(), String> {
    let spec = catalog::action(&step.service, &step.action).ok_or("unknown action")?;
    for (name, value) in &step.params {
        let p = spec.param(name).ok_or_else(|| format!("unknown param `{name}`"))?;
        if catalog::is_reference(value) {
            if index == 0 {
                return Err(format!("param `{name}` refers to a previous step, but this is the first step"));
            }
            continue;
        }
        check_value(p, value).map_err(|e| format!("param `{name}`: {e}"))?;
    }
    if let Some(p) = spec.params.iter().find(|p| p.required && !step.params.contains_key(p.name)) {
        return Err(format!("missing param `{}`", p.name));
    }
    Ok(())
}

fn text(v: &Value) -> Result<&str, String> {
    v.as_str().filter(|s| !s.trim().is_empty()).ok_or_else(|| format!("expected a non-empty string, got {v}"))
}

fn time(v: &Value) -> Result<(), String> {
    let s = text(v)?;
    let b = s.as_bytes();
    let ok = b.len() == 5 && b[2] == b':' && s[..2].parse::<u8>().is_ok_and(|h| h < 24) && s[3..].parse::<u8>().is_ok_and(|m| m < 60);
    if ok && b[0].is_ascii_digit() && b[3].is_ascii_digit() {
        Ok(())
    } else {
        Err(format!("expected HH:MM, got {v}"))
    }
}

fn positive_int(v: &Value) -> Result<(), String> {
    v.as_u64().filter(|n| *n > 0).map(|_| ()).ok_or_else(|| format!("expected a positive integer, got {v}"))
}

fn list(v: &Value) -> Result<&Vec<Value>, String> {
    v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| format!("expected a non-empty array, got {v}"))
}

fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Result<&'a Value, String> {
    o.get(name).ok_or_else(|| format!("missing `{name}`"))
}

fn check_value(p: &ParamSpec, v: &Value) -> Result<(), String> {
    match p.kind {
        ParamKind::Text => text(v).map(|_| ()),
        ParamKind::Date => {
            let s = text(v)?;
            match s.parse::<jiff::civil::Date>() {
                Ok(_) if s.len() == 10 => Ok(()),
                _ => Err(format!("expected a date YYYY-MM-DD, got {v}")),
            }
        }
        ParamKind::Time => time(v),
        ParamKind::Instant => text(v)?
            .parse::<jiff::Timestamp>()
            .map(|_| ())
            .map_err(|e| format!("expected an RFC 3339 instant with offset, got {v}: {e}")),
        ParamKind::Count => positive_int(v),
        ParamKind::TextList => list(v)?.iter().try_for_each(|s| text(s).map(|_| ())),
        ParamKind::Services => list(v)?.iter().try_for_each(|s| {
            let o = s.as_object().ok_or_else(|| format!("expected a service object, got {s}"))?;
            text(field(o, "label")?)?;
            positive_int(field(o, "duration_min")?)?;
            field(o, "price")?.as_f64().filter(|p| *p >= 0.0).ok_or("`price` must be a number ≥ 0")?;
            let currency = text(field(o, "currency")?)?;
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!("`currency` must be an ISO 4217 code like ILS, got {currency:?}"));
            }
            Ok(())
        }),
        ParamKind::OpeningHours => list(v)?.iter().try_for_each(|h| {
            let o = h.as_object().ok_or_else(|| format!("expected an opening-hours object, got {h}"))?;
            for d in list(field(o, "days")?)? {
                if !d.as_str().is_some_and(|d| DAYS.contains(&d)) {
                    return Err(format!("`days` holds {d}, expected one of {}", DAYS.join(", ")));
                }
            }
            time(field(o, "open")?)?;
            time(field(o, "close")?)
        }),
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
