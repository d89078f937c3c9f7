//! What users and business owners are told (docs/apps/skeji.md, "What the user is told"):
//! short English WhatsApp texts built from the results, rejections and events as JSON, so
//! that a field a service adds later changes nothing here.

use crate::apps::skeji::model::{DomainEvent, PipelineResult, Rejection};
use serde_json::Value;

/// One message to send, with its idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// One message per key, however often its cause is redelivered.
    pub notification_id: String,
    pub to: String,
    pub body: String,
    /// `result`, `rejection`, `event`, `reminder`, `apology`.
    pub kind: &'static str,
    /// What ties the message to its cause (correlation, message, event or booking id).
    pub correlation_id: String,
}

pub const APOLOGY: &str = "😔 Sorry — something went wrong on our side and I couldn't handle your last message. \
Please try again in a few minutes.";
pub const TIMEOUT: &str = "😔 Sorry, that took longer than it should on our side. Please try again in a moment.";

fn s<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or("")
}

/// `2026-11-24` → `Tue 24 Nov 2026`; anything unparsable is shown as given.
pub fn date(text: &str) -> String {
    match text.parse::<jiff::civil::Date>() {
        Ok(d) => d.strftime("%a %-d %b %Y").to_string(),
        Err(_) => text.to_string(),
    }
}

/// `120 ILS`.
pub fn price(v: &Value) -> String {
    let amount = match &v["price"] {
        Value::Number(n) => n.to_string(),
        Value::String(t) => t.clone(),
        _ => return String::new(),
    };
    format!("{amount} {}", s(v, "currency")).trim().to_string()
}

/// `Tue 24 Nov 2026 at 15:00`.
fn when(slot: &Value) -> String {
    format!("{} at {}", date(s(slot, "date")), s(slot, "time"))
}

/// The address with the city, unless the address already names it (the domain falls back
/// to the city when a business gave no address).
fn place(v: &Value) -> String {
    let (address, city) = (s(v, "address"), s(v, "city"));
    if address.is_empty() {
        city.to_string()
    } else if city.is_empty() || address.contains(city) {
        address.to_string()
    } else {
        format!("{address}, {city}")
    }
}

/// A booking's details, one per line.
fn booking_details(b: &Value) -> String {
    let mut lines = vec![format!("🏷️ {} — {}", s(b, "business_name"), s(b, "service_label"))];
    let place = place(b);
    if !place.is_empty() {
        lines.push(format!("📍 {place}"));
    }
    lines.push(format!("📅 {}", when(b)));
    let p = price(b);
    if !p.is_empty() {
        lines.push(format!("💰 {p}"));
    }
    lines.push(format!("🔖 Booking id: {}", s(b, "booking_id")));
    lines.join("\n")
}

fn slot_line(slot: &Value) -> String {
    let p = price(slot);
    let p = if p.is_empty() { String::new() } else { format!(" ({p})") };
    format!("• {} — {}, {}{p}", when(slot), s(slot, "business_name"), place(slot))
}

fn booking_line(b: &Value) -> String {
    format!(
        "• {} — {} at {} ({}) · {}",
        when(b),
        s(b, "service_label"),
        s(b, "business_name"),
        s(b, "status"),
        s(b, "booking_id")
    )
}

/// The text for how a pipeline ended.
pub fn result(r: &PipelineResult) -> Message {
    let body = match r.outcome.as_str() {
        "timeout" => TIMEOUT.to_string(),
        "business_error" => business_error(r),
        "completed" => completed(r).or_else(|| r.reply.clone()).unwrap_or_else(|| "✅ Done.".to_string()),
        _ => r.reply.clone().unwrap_or_else(|| "✅ Done.".to_string()),
    };
    Message {
        notification_id: format!("result:{}", r.correlation_id),
        to: r.user_phone.clone(),
        body,
        kind: "result",
        correlation_id: r.correlation_id.clone(),
    }
}

fn business_error(r: &PipelineResult) -> String {
    let Some(e) = &r.error else {
        return "😕 Sorry, I couldn't do that.".to_string();
    };
    if e.code != "no_slot" && e.code != "conflict" {
        return format!("😕 {}", e.message);
    }
    let requested = &e.details["requested"];
    let mut text = if requested.is_object() {
        format!("😕 Sorry, {} is not available.", when(requested))
    } else if e.code == "conflict" {
        "😕 Sorry, someone just booked that time.".to_string()
    } else {
        "😕 Sorry, that time is not available.".to_string()
    };
    let alternatives: Vec<String> = e.details["alternatives"].as_array().into_iter().flatten().map(slot_line).collect();
    if alternatives.is_empty() {
        text.push_str(" I found no other free times — try another day?");
    } else {
        text.push_str(&format!("\nFree times nearby:\n{}\nReply with the one you want.", alternatives.join("\n")));
    }
    text
}

fn completed(r: &PipelineResult) -> Option<String> {
    let last = r.results.last()?;
    let text = match r.intent.as_str() {
        "book" if s(last, "status") == "pending" => {
            format!(
                "⏳ Booking request sent — waiting for {} to approve it.\n{}",
                s(last, "business_name"),
                booking_details(last)
            )
        }
        "book" => format!("✅ Booking confirmed!\n{}", booking_details(last)),
        "availability" => match last["slots"].as_array() {
            Some(slots) if slots.is_empty() => "😕 No free slots found for that time.".to_string(),
            Some(slots) => {
                let label = s(last, "service_label");
                let lines: Vec<String> = slots.iter().map(slot_line).collect();
                format!("🗓️ Free {label} slots:\n{}\nReply e.g. “book {label} at 15:00”.", lines.join("\n"))
            }
            None => format!("🗓️ Free slot:\n{}", slot_line(last)),
        },
        "cancel" => format!("❌ Your booking is cancelled.\n{}", booking_details(last)),
        "list" => match last["bookings"].as_array() {
            Some(list) if !list.is_empty() => {
                format!("📋 Your upcoming bookings:\n{}", list.iter().map(booking_line).collect::<Vec<_>>().join("\n"))
            }
            _ => "📋 You have no upcoming bookings.".to_string(),
        },
        "register_business" => format!(
            "🎉 {} in {} is registered (id {}). Customers can book it now.",
            s(last, "name"),
            s(last, "city"),
            s(last, "business_id")
        ),
        "approve" => format!("✅ Booking approved — the customer will be told.\n{}", booking_details(last)),
        _ => return r.reply.clone(),
    };
    Some(text)
}

/// Why the scrub layer declined a message.
pub fn rejection(r: &Rejection) -> Message {
    let body = match r.reason.as_str() {
        "empty" => {
            "🤔 Your message looks empty. Tell me what you'd like, e.g. “book a haircut in Tel Aviv tomorrow at 3pm”."
        }
        "too_long" => "📏 Your message is too long for me. Please send a shorter one — one request at a time.",
        "flooding" => "🐢 You're sending messages very quickly. Please slow down and try again in a minute.",
        "spam" => "🚫 Sorry, I can't help with this message. I only handle bookings.",
        _ => "😕 Sorry, I couldn't read that message. Please try again.",
    };
    Message {
        notification_id: format!("rejection:{}", r.message_id),
        to: r.user_phone.clone(),
        body: body.to_string(),
        kind: "rejection",
        correlation_id: r.message_id.clone(),
    }
}

/// What a domain event tells someone: the owner about new and cancelled bookings, the
/// user about an owner's approval. Other events tell no one.
pub fn event(e: &DomainEvent) -> Vec<Message> {
    let b = &e.data;
    let id = s(b, "booking_id");
    let (to, body) = match e.event_type.as_str() {
        "booking.created" if s(b, "status") == "pending" => (
            s(b, "owner_phone"),
            format!(
                "📥 New booking request from +{}:\n{}\nReply “approve {id}” to confirm it.",
                s(b, "user_phone"),
                booking_details(b)
            ),
        ),
        "booking.created" => {
            (s(b, "owner_phone"), format!("📥 New booking from +{}:\n{}", s(b, "user_phone"), booking_details(b)))
        }
        "booking.approved" if s(b, "approved_by") == "owner" => {
            (s(b, "user_phone"), format!("✅ {} approved your booking!\n{}", s(b, "business_name"), booking_details(b)))
        }
        "booking.cancelled" => {
            (s(b, "owner_phone"), format!("❌ Booking cancelled by +{}:\n{}", s(b, "user_phone"), booking_details(b)))
        }
        _ => return Vec::new(),
    };
    if to.is_empty() {
        tracing::warn!(event_id = %e.event_id, event_type = %e.event_type, "event has no recipient phone; nothing sent");
        return Vec::new();
    }
    vec![Message {
        notification_id: format!("event:{}:{to}", e.event_id),
        to: to.to_string(),
        body,
        kind: "event",
        correlation_id: e.event_id.clone(),
    }]
}

/// The reminder for a confirmed booking, sent `minutes` before it starts.
pub fn reminder(b: &Value, minutes: u64) -> String {
    format!(
        "⏰ Reminder: your {} at {} starts in {minutes} minutes, at {}.\n📍 {}\n🔖 Booking id: {}",
        s(b, "service_label"),
        s(b, "business_name"),
        s(b, "time"),
        place(b),
        s(b, "booking_id")
    )
}
