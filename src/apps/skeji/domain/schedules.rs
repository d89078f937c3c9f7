//! `skeji-schedules`: free slots. One action, `search_availability` (docs/apps/skeji.md);
//! the slot rules live in [`super::slots`], shared with bookings.

use super::commands::{self, DomainStage, Done, Service};
use super::error::{ActionError, ActionResult};
use super::params::Params;
use super::repo;
use super::slots::{self, Candidate};
use super::types::{format_hhmm, key};
use crate::apps::skeji::model::Command;
use crate::stages::{BuildEnv, BuildError, Stage, StageKind};
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub const DEFAULT_LIMIT: u64 = 5;

pub struct Schedules;

/// No settings; the empty map is still checked so typos surface in `weir validate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulesConfig {}

impl StageKind for Schedules {
    const NAME: &'static str = "skeji-schedules";
    type Config = SchedulesConfig;
    const INPUT_TYPES: &'static [&'static str] = super::INPUT_TYPES;
    const OUTPUT_TYPES: &'static [(&'static str, &'static str)] = super::OUTPUT_TYPES;

    fn outputs() -> Vec<&'static str> {
        super::OUTPUTS.to_vec()
    }
    fn required_outputs() -> Vec<&'static str> {
        vec!["reply"]
    }
    fn output_fields(output: &str) -> Option<Vec<&'static str>> {
        super::output_fields(output)
    }

    fn build(_: SchedulesConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let db = commands::open_db(env)?;
        Ok(DomainStage::build(SchedulesService, db, env))
    }
}

pub struct SchedulesService;

impl Service for SchedulesService {
    const NAME: &'static str = "schedules";
    const ACTIONS: &'static [&'static str] = &["search_availability"];

    fn execute(&self, c: &Connection, cmd: &Command, now_ms: i64) -> ActionResult<Done> {
        match cmd.action.as_str() {
            "search_availability" => search(c, &Params(&cmd.params), now_ms),
            other => Err(ActionError::UnknownAction { service: Self::NAME, action: other.to_string() }),
        }
    }
}

fn to_value(v: &impl serde::Serialize) -> ActionResult<Value> {
    serde_json::to_value(v).map_err(|e| ActionError::corrupt("result", e))
}

/// The candidates a search looks at: the given businesses (in the given order) or all
/// offering the service; in `city` when given.
fn candidates(c: &Connection, p: &Params<'_>, label: &str) -> ActionResult<Vec<Candidate>> {
    let city = p.opt_str("city")?;
    let businesses = match p.opt_str_list("business_ids")? {
        Some(ids) => {
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                if let Some(b) = repo::business(c, id)? {
                    if city.is_none_or(|city| key(city) == key(&b.city)) {
                        found.push(b);
                    }
                }
            }
            found
        }
        None => repo::businesses_offering(c, label, city)?,
    };
    let cands = slots::candidates(businesses, label)?;
    if cands.is_empty() {
        let there = city.map(|c| format!(" in {c}")).unwrap_or_default();
        return Err(ActionError::business(
            "not_found",
            format!("no business offers {label}{there}"),
            json!({"service_label": label, "city": city}),
        ));
    }
    Ok(cands)
}

pub fn search(c: &Connection, p: &Params<'_>, now_ms: i64) -> ActionResult<Done> {
    let label = p.str("service_label")?;
    let date = p.date("date")?;
    let time = p.opt_time("time")?;
    let from = p.opt_time("time_from")?;
    let to = p.opt_end_time("time_to")?;
    let limit = p.opt_count("limit", 1..=50)?.unwrap_or(DEFAULT_LIMIT);
    let cands = candidates(c, p, label)?;
    let date_s = date.to_string();

    if let Some(t) = time {
        // The first business (in candidate order) free at exactly that time.
        for cand in &cands {
            if let Some(free) = cand.free(c, date, now_ms)?.into_iter().find(|s| s.minute == t) {
                return Ok(Done::result(to_value(&free.slot)?));
            }
        }
        let alternatives = slots::alternatives(c, &cands, date, Some(t), None, true, now_ms)?;
        return Err(ActionError::business(
            "no_slot",
            format!("no {label} free on {date_s} at {}", format_hhmm(t)),
            json!({"requested": {"date": date_s, "time": format_hhmm(t)}, "alternatives": to_value(&alternatives)?}),
        ));
    }

    let range = (from.unwrap_or(0), to.unwrap_or(24 * 60));
    if range.0 >= range.1 {
        return Err(ActionError::invalid("`time_from` must be before `time_to`"));
    }
    let mut found = slots::free_on(c, &cands, date, Some(range), now_ms)?;
    if found.is_empty() {
        let alternatives = slots::alternatives(c, &cands, date, None, Some(range), false, now_ms)?;
        let requested = json!({"date": date_s, "time_from": from.map(format_hhmm), "time_to": to.map(format_hhmm)});
        return Err(ActionError::business(
            "no_slot",
            format!("no {label} free on {date_s}"),
            json!({"requested": requested, "alternatives": to_value(&alternatives)?}),
        ));
    }
    found.sort_by_key(|(i, s)| (s.minute, *i));
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let slots: Vec<_> = found.into_iter().take(limit).map(|(_, s)| s.slot).collect();
    Ok(Done::result(json!({"date": date_s, "service_label": label, "slots": to_value(&slots)?})))
}
