//! The pipeline of each intent, exactly as `docs/apps/skeji.md` lists it. The rules provider
//! builds its plans here and the OpenAI prompt shows examples built here, so the two
//! providers cannot drift apart.

use crate::apps::skeji::model::Step;
use serde_json::{json, Map, Value};

fn step(service: &str, action: &str, params: Map<String, Value>) -> Step {
    Step { service: service.to_string(), action: action.to_string(), params }
}

/// A params map from `(name, value)` pairs, leaving out the absent ones.
fn params<const N: usize>(pairs: [(&str, Option<Value>); N]) -> Map<String, Value> {
    pairs.into_iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v))).collect()
}

fn s(v: &str) -> Option<Value> {
    Some(Value::String(v.to_string()))
}

fn os(v: Option<&str>) -> Option<Value> {
    v.map(|v| Value::String(v.to_string()))
}

/// What a booking request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRequest<'a> {
    pub service: &'a str,
    pub city: Option<&'a str>,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `HH:MM`.
    pub time: String,
}

/// `book`: find the businesses, find one free at that time, book it.
pub fn book(r: &BookingRequest<'_>, user_phone: &str) -> Vec<Step> {
    vec![
        step("business-units", "find_businesses", params([("city", os(r.city)), ("service_label", s(r.service))])),
        step(
            "schedules",
            "search_availability",
            params([
                ("business_ids", s("${previous_step.business_ids}")),
                ("service_label", s(r.service)),
                ("date", s(&r.date)),
                ("time", s(&r.time)),
            ]),
        ),
        step(
            "bookings",
            "create_booking",
            params([
                ("schedule_id", s("${previous_step.schedule_id}")),
                ("start_time", s("${previous_step.start_time}")),
                ("user_phone", s(user_phone)),
            ]),
        ),
    ]
}

/// What an availability question names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailabilityRequest<'a> {
    pub service: &'a str,
    pub city: Option<&'a str>,
    pub date: String,
    pub time_from: String,
    pub time_to: String,
}

/// `availability`: the free slots in a window of one day.
pub fn availability(r: &AvailabilityRequest<'_>) -> Vec<Step> {
    vec![step(
        "schedules",
        "search_availability",
        params([
            ("service_label", s(r.service)),
            ("date", s(&r.date)),
            ("time_from", s(&r.time_from)),
            ("time_to", s(&r.time_to)),
            ("city", os(r.city)),
        ]),
    )]
}

/// `cancel`: the soonest upcoming booking matching what the user named.
pub fn cancel(user_phone: &str, booking_id: Option<&str>, service: Option<&str>, date: Option<&str>) -> Vec<Step> {
    vec![step(
        "bookings",
        "cancel_booking",
        params([
            ("user_phone", s(user_phone)),
            ("booking_id", os(booking_id)),
            ("service_label", os(service)),
            ("date", os(date)),
        ]),
    )]
}

/// `list`: the user's upcoming bookings.
pub fn list(user_phone: &str) -> Vec<Step> {
    vec![step("bookings", "list_bookings", params([("user_phone", s(user_phone))]))]
}

/// One service a business offers.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferedService {
    pub label: String,
    pub duration_min: u32,
    pub price: f64,
    pub currency: String,
}

/// Opening hours for a set of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours {
    /// `sun` … `sat`.
    pub days: Vec<&'static str>,
    pub open: String,
    pub close: String,
}

/// What a registration names.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub name: String,
    pub city: String,
    pub services: Vec<OfferedService>,
    pub opening_hours: Vec<Hours>,
}

/// A price as JSON: an integer when it is whole (`120`, not `120.0`).
fn price(p: f64) -> Value {
    if p.fract() == 0.0 && p.abs() < 1e15 {
        json!(p as i64)
    } else {
        json!(p)
    }
}

/// `register_business`: the sender becomes the owner.
pub fn register(r: &Registration, owner_phone: &str) -> Vec<Step> {
    let services: Vec<Value> = r
        .services
        .iter()
        .map(|s| json!({"label": s.label, "duration_min": s.duration_min, "price": price(s.price), "currency": s.currency}))
        .collect();
    let hours: Vec<Value> = r.opening_hours.iter().map(|h| json!({"days": h.days, "open": h.open, "close": h.close})).collect();
    vec![step(
        "business-units",
        "register_business",
        params([
            ("name", s(&r.name)),
            ("city", s(&r.city)),
            ("owner_phone", s(owner_phone)),
            ("services", Some(Value::Array(services))),
            ("opening_hours", Some(Value::Array(hours))),
        ]),
    )]
}

/// `approve`: the sender confirms a pending booking of their business.
pub fn approve(booking_id: &str, owner_phone: &str) -> Vec<Step> {
    vec![step("bookings", "confirm_booking", params([("booking_id", s(booking_id)), ("owner_phone", s(owner_phone))]))]
}
