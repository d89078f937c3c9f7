//! `skeji-bookings`: `create_booking`, `confirm_booking`, `cancel_booking`,
//! `list_bookings` (docs/apps/skeji.md). No double booking: the overlap check and the insert
//! run in the command's `BEGIN IMMEDIATE` transaction ([`super::commands`]), which holds
//! SQLite's write lock for every process sharing the file.

use super::commands::{self, event, DomainStage, Done, Service};
use super::error::{ActionError, ActionResult};
use super::params::Params;
use super::repo::{self, BookingFilter, NewBooking};
use super::slots::{self, Candidate, GRID_MIN};
use super::types::{format_hhmm, key, Booking};
use crate::apps::skeji::model::{Command, DomainEvent};
use crate::stages::{BuildEnv, BuildError, Stage, StageKind};
use jiff::Timestamp;
use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct Bookings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookingsConfig {
    /// Confirm new bookings at once instead of waiting for the owner's `approve`.
    #[serde(default)]
    pub auto_approve: bool,
}

impl StageKind for Bookings {
    const NAME: &'static str = "skeji-bookings";
    type Config = BookingsConfig;
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

    fn build(config: BookingsConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let db = commands::open_db(env)?;
        Ok(DomainStage::build(BookingsService { auto_approve: config.auto_approve }, db, env))
    }
}

pub struct BookingsService {
    pub auto_approve: bool,
}

impl Service for BookingsService {
    const NAME: &'static str = "bookings";
    const ACTIONS: &'static [&'static str] = &["create_booking", "confirm_booking", "cancel_booking", "list_bookings"];

    fn execute(&self, c: &Connection, cmd: &Command, now_ms: i64) -> ActionResult<Done> {
        let p = Params(&cmd.params);
        match cmd.action.as_str() {
            "create_booking" => create(c, &p, now_ms, self.auto_approve),
            "confirm_booking" => confirm(c, &p, now_ms),
            "cancel_booking" => cancel(c, &p, now_ms),
            "list_bookings" => {
                let user = p.phone("user_phone")?;
                let bookings = repo::upcoming(c, &user, now_ms, &BookingFilter::default())?;
                Ok(Done::result(json!({"bookings": to_value(&bookings)?})))
            }
            other => Err(ActionError::UnknownAction { service: Self::NAME, action: other.to_string() }),
        }
    }
}

fn to_value(v: &impl serde::Serialize) -> ActionResult<Value> {
    serde_json::to_value(v).map_err(|e| ActionError::corrupt("result", e))
}

/// `B-` and 5 characters of `[A-Z0-9]`: short enough to type in "approve B-7Q2K1".
pub fn new_booking_id() -> String {
    const ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let random = uuid::Uuid::new_v4().into_bytes();
    let tail: String = random.iter().take(5).map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect();
    format!("B-{tail}")
}

/// The booking as event data, with extra fields (e.g. `approved_by`).
fn event_of(kind: &str, b: &Booking, extra: Value, now_ms: i64) -> ActionResult<DomainEvent> {
    let mut data = to_value(b)?;
    if let (Some(obj), Value::Object(more)) = (data.as_object_mut(), extra) {
        obj.extend(more);
    }
    Ok(event(kind, &b.booking_id, data, now_ms))
}

fn create(c: &Connection, p: &Params<'_>, now_ms: i64, auto_approve: bool) -> ActionResult<Done> {
    let schedule_id = p.str("schedule_id")?;
    let start_raw = p.str("start_time")?;
    let user_phone = p.phone("user_phone")?;
    let (business, offer) = repo::resolve_schedule(c, schedule_id)?
        .ok_or_else(|| ActionError::not_found(format!("no schedule `{schedule_id}`")))?;
    let cand = Candidate::new(business, offer)?;
    let start: Timestamp = start_raw.parse().map_err(|_| {
        ActionError::invalid(format!(
            "`start_time` must be RFC 3339 with offset (2026-11-24T15:00:00+02:00), got `{start_raw}`"
        ))
    })?;
    let local = start.to_zoned(cand.tz().clone());
    let date = local.date();
    let minute = u32::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute())).unwrap_or(0);
    let requested = json!({"date": date.to_string(), "time": format_hhmm(minute)});
    if start.as_millisecond() <= now_ms {
        return Err(ActionError::business(
            "invalid",
            format!("{date} {} has already passed", format_hhmm(minute)),
            json!({"requested": requested}),
        ));
    }
    if !cand.open_at(date, minute)? {
        let alternatives = slots::alternatives(c, std::slice::from_ref(&cand), date, Some(minute), None, true, now_ms)?;
        return Err(ActionError::business(
            "closed",
            format!("{} is closed for {} at {date} {}", cand.business.name, cand.offer.label, format_hhmm(minute)),
            json!({"requested": requested, "alternatives": to_value(&alternatives)?}),
        ));
    }
    let placed = match cand.place(date, minute)? {
        Some(p) if minute % GRID_MIN == 0 && local.second() == 0 && local.subsec_nanosecond() == 0 => p,
        _ => {
            return Err(ActionError::business(
                "invalid",
                format!("bookings start every {GRID_MIN} minutes (:00, :15, :30, :45)"),
                json!({"requested": requested}),
            ))
        }
    };
    // The authoritative check: inside the write transaction, so no one books in between.
    let taken = repo::busy(c, &cand.business.business_id, placed.start_ms, placed.end_ms)?;
    if !taken.is_empty() {
        let alternatives = slots::alternatives(c, std::slice::from_ref(&cand), date, Some(minute), None, true, now_ms)?;
        return Err(ActionError::business(
            "conflict",
            format!("{} is already booked at {date} {}", cand.business.name, format_hhmm(minute)),
            json!({"requested": requested, "alternatives": to_value(&alternatives)?}),
        ));
    }
    let mut booking = Booking {
        slot: placed.slot,
        booking_id: new_booking_id(),
        status: if auto_approve { "confirmed" } else { "pending" }.to_string(),
        user_phone,
        owner_phone: cand.business.owner_phone.clone(),
    };
    let label_key = key(&cand.offer.label);
    // 36^5 ids: a clash is rare, but possible; draw again rather than fail.
    let mut attempts = 0;
    while !repo::insert_booking(
        c,
        &NewBooking {
            booking: &booking,
            label_key: label_key.clone(),
            start_ms: placed.start_ms,
            end_ms: placed.end_ms,
        },
        now_ms,
    )? {
        attempts += 1;
        if attempts >= 20 {
            return Err(ActionError::corrupt("bookings", "no free booking id after 20 draws"));
        }
        booking.booking_id = new_booking_id();
    }
    let mut events = vec![event_of("booking.created", &booking, Value::Null, now_ms)?];
    if auto_approve {
        events.push(event_of("booking.approved", &booking, json!({"approved_by": "auto"}), now_ms)?);
    }
    tracing::info!(
        booking_id = %booking.booking_id,
        business_id = %booking.slot.business_id,
        start = %booking.slot.start_time,
        status = %booking.status,
        "booking created"
    );
    Ok(Done { result: to_value(&booking)?, events })
}

fn confirm(c: &Connection, p: &Params<'_>, now_ms: i64) -> ActionResult<Done> {
    let id = p.str("booking_id")?.to_uppercase();
    let owner = p.opt_phone("owner_phone")?;
    let mut booking = repo::booking(c, &id)?.ok_or_else(|| ActionError::not_found(format!("no booking {id}")))?;
    // Only the business's owner may approve: to anyone else the booking does not exist.
    if owner.as_ref().is_some_and(|o| *o != booking.owner_phone) {
        return Err(ActionError::not_found(format!("no booking {id} at your business")));
    }
    if booking.status != "pending" {
        return Err(ActionError::invalid(format!("booking {id} is {}, not pending", booking.status)));
    }
    booking.status = "confirmed".to_string();
    repo::update_status(c, &booking, now_ms)?;
    let approved = event_of("booking.approved", &booking, json!({"approved_by": "owner"}), now_ms)?;
    Ok(Done { result: to_value(&booking)?, events: vec![approved] })
}

fn cancel(c: &Connection, p: &Params<'_>, now_ms: i64) -> ActionResult<Done> {
    let user = p.phone("user_phone")?;
    let booking_id = p.opt_str("booking_id")?.map(str::to_uppercase);
    let filter = BookingFilter {
        booking_id: booking_id.as_deref(),
        label: p.opt_str("service_label")?,
        date: p.opt_date("date")?.map(|d| d.to_string()),
    };
    let mut booking = repo::upcoming(c, &user, now_ms, &filter)?
        .into_iter()
        .next()
        .ok_or_else(|| ActionError::not_found("no upcoming booking matches"))?;
    booking.status = "cancelled".to_string();
    repo::update_status(c, &booking, now_ms)?;
    let cancelled = event_of("booking.cancelled", &booking, Value::Null, now_ms)?;
    Ok(Done { result: to_value(&booking)?, events: vec![cancelled] })
}
