//! Skeji's domain services: `skeji-business-units`, `skeji-schedules` and
//! `skeji-bookings`. Each reads `Command`s from `pipeline-executor-to-<service>`, answers
//! with a `Reply` on output `reply` (the command's slip unchanged) and publishes
//! `DomainEvent`s on output `events`. The rules every command follows (idempotency,
//! deadlines, error classes) are in [`commands`]; the action catalogue is docs/apps/skeji.md.

pub mod bookings;
pub mod business_units;
pub mod commands;
pub mod error;
pub mod params;
pub mod repo;
pub mod schedules;
pub mod slots;
pub mod types;

use crate::apps::skeji::model::types as payload;
use crate::stages::Registry;

/// The outputs of every domain service.
pub(crate) const OUTPUTS: [&str; 2] = ["reply", "events"];

/// What every domain service reads, and writes per output.
pub(crate) const INPUT_TYPES: &[&str] = &[payload::COMMAND];
pub(crate) const OUTPUT_TYPES: &[(&str, &str)] = &[("reply", payload::REPLY), ("events", payload::DOMAIN_EVENT)];

/// Payload fields per output, for `key:` checks in `weir validate`.
pub(crate) fn output_fields(output: &str) -> Option<Vec<&'static str>> {
    match output {
        "reply" => Some(vec!["command_id", "correlation_id", "service", "action", "status", "result", "error", "slip"]),
        "events" => Some(vec!["event_id", "event_type", "entity_id", "occurred_at", "data"]),
        _ => None,
    }
}

/// Registers this module's kinds.
pub fn register(r: &mut Registry) {
    r.register_stage::<business_units::BusinessUnits>()
        .register_stage::<schedules::Schedules>()
        .register_stage::<bookings::Bookings>();
}
