//! `skeji-business-units`: the businesses — who offers what, where, when. Actions
//! `find_businesses`, `register_business`, `get_business` (docs/apps/skeji.md); seeds the
//! businesses table from a JSON file at build when it is empty.

use super::commands::{self, event, DomainStage, Done, Service};
use super::error::{ActionError, ActionResult};
use super::params::Params;
use super::repo;
use super::types::{Business, Hours, Offer, DEFAULT_TIME_ZONE};
use crate::apps::skeji::model::Command;
use crate::apps::skeji::store::Db;
use crate::stages::{BuildEnv, BuildError, Stage, StageKind};
use rusqlite::{Connection, TransactionBehavior};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

pub struct BusinessUnits;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusinessUnitsConfig {
    /// A JSON array of businesses (with their ids) loaded when the table is empty;
    /// relative to the topology file.
    #[serde(default)]
    pub seed: Option<String>,
}

impl StageKind for BusinessUnits {
    const NAME: &'static str = "skeji-business-units";
    type Config = BusinessUnitsConfig;
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

    fn build(config: BusinessUnitsConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let db = commands::open_db(env)?;
        if let Some(seed) = &config.seed {
            let path = env.config_path(seed);
            let n = load_seed(&db, &path).map_err(|e| BuildError::new(env, e))?;
            tracing::info!(stage = %env.stage.name, path = %path.display(), inserted = n, "business seed applied");
        }
        Ok(DomainStage::build(BusinessUnitsService, db, env))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot read seed {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("seed {path} is not a JSON array of businesses: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("seed {path}: business `{business_id}`: {reason}")]
    Invalid { path: String, business_id: String, reason: String },
    #[error("seed {path}: {source}")]
    Store { path: String, source: ActionError },
}

/// Inserts the seed's businesses when the table is empty; returns how many were inserted.
/// Safe when several processes build at once: the check and the inserts share one
/// `BEGIN IMMEDIATE` transaction, and ids are the seed's own (`INSERT OR IGNORE`).
pub fn load_seed(db: &Db, path: &Path) -> Result<usize, SeedError> {
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SeedError::Read { path: p.clone(), source })?;
    let businesses: Vec<Business> =
        serde_json::from_str(&text).map_err(|source| SeedError::Parse { path: p.clone(), source })?;
    for b in &businesses {
        b.validate().map_err(|reason| SeedError::Invalid {
            path: p.clone(),
            business_id: b.business_id.clone(),
            reason,
        })?;
    }
    let now = crate::envelope::now_ms();
    db.with(|c| Ok(seed_all(c, &businesses, now)))
        .map_err(ActionError::Db)
        .and_then(|r| r)
        .map_err(|source| SeedError::Store { path: p, source })
}

fn seed_all(c: &mut Connection, businesses: &[Business], now: i64) -> ActionResult<usize> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if repo::count_businesses(&tx)? > 0 {
        return Ok(0);
    }
    let mut n = 0;
    for b in businesses {
        if repo::insert_business(&tx, b, now, true)? {
            n += 1;
        }
    }
    tx.commit()?;
    Ok(n)
}

pub struct BusinessUnitsService;

impl Service for BusinessUnitsService {
    const NAME: &'static str = "business-units";
    const ACTIONS: &'static [&'static str] = &["find_businesses", "register_business", "get_business"];

    fn execute(&self, c: &Connection, cmd: &Command, now_ms: i64) -> ActionResult<Done> {
        let p = Params(&cmd.params);
        match cmd.action.as_str() {
            "find_businesses" => find(c, &p),
            "register_business" => register(c, &p, now_ms),
            "get_business" => {
                let id = p.str("business_id")?;
                let b = repo::business(c, id)?.ok_or_else(|| ActionError::not_found(format!("no business `{id}`")))?;
                Ok(Done::result(to_value(&b)?))
            }
            other => Err(ActionError::UnknownAction { service: Self::NAME, action: other.to_string() }),
        }
    }
}

fn to_value(v: &impl serde::Serialize) -> ActionResult<Value> {
    serde_json::to_value(v).map_err(|e| ActionError::corrupt("result", e))
}

fn find(c: &Connection, p: &Params<'_>) -> ActionResult<Done> {
    let label = p.str("service_label")?;
    let city = p.opt_str("city")?;
    let found = repo::businesses_offering(c, label, city)?;
    if found.is_empty() {
        let there = city.map(|c| format!(" in {c}")).unwrap_or_default();
        return Err(ActionError::business(
            "not_found",
            format!("no business offers {label}{there}"),
            json!({"service_label": label, "city": city}),
        ));
    }
    let ids: Vec<&str> = found.iter().map(|b| b.business_id.as_str()).collect();
    let businesses: Vec<Value> = found
        .iter()
        .map(|b| {
            json!({"business_id": b.business_id, "name": b.name, "city": b.city, "address": b.address,
                   "time_zone": b.time_zone})
        })
        .collect();
    Ok(Done::result(json!({"business_ids": ids, "businesses": businesses})))
}

fn register(c: &Connection, p: &Params<'_>, now_ms: i64) -> ActionResult<Done> {
    let name = p.str("name")?;
    let city = p.str("city")?;
    let business = Business {
        business_id: format!("biz-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
        name: name.to_string(),
        city: city.to_string(),
        address: p.opt_str("address")?.unwrap_or(city).to_string(),
        owner_phone: p.phone("owner_phone")?,
        time_zone: p.opt_str("time_zone")?.unwrap_or(DEFAULT_TIME_ZONE).to_string(),
        services: p.typed::<Vec<Offer>>("services")?,
        opening_hours: p.typed::<Vec<Hours>>("opening_hours")?,
    };
    business.validate().map_err(ActionError::invalid)?;
    if let Some(existing) = repo::business_named(c, name, city)? {
        return Err(ActionError::business(
            "conflict",
            format!("{} is already registered in {}", existing.name, existing.city),
            json!({"business_id": existing.business_id}),
        ));
    }
    repo::insert_business(c, &business, now_ms, false)?;
    let data = to_value(&business)?;
    let registered = event("business.registered", &business.business_id, data.clone(), now_ms);
    Ok(Done { result: data, events: vec![registered] })
}
