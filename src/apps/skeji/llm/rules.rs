//! The `rules` provider: deterministic, offline English parsing into the intents of
//! `docs/apps/skeji.md`. Everything here is a pure function of the text, the sender and the
//! local time the message was received at (see `dates` for the date rules).
//!
//! Intent by precedence: approve (`approve`/`confirm` + a booking id), register
//! (`register …`), cancel (`cancel`), list (`my bookings` …, without `book`/`reserve`), then a
//! request naming a service: with an exact time and either a booking verb or no
//! availability question (`any`, `free`, `slots`, …) it is a booking, otherwise an
//! availability search (a booking request without an exact time lists the free slots of
//! that day instead). Anything else gets the help text.

use super::catalog::INTENTS;
use super::dates::{self, fmt_date, fmt_time, DayPart, LocalNow};
use super::lexicon::{self, normalize};
use super::pipelines::{self, AvailabilityRequest, BookingRequest};
use super::provider::{Intent, LlmError, LlmInput, LlmProvider, Plan};
use super::register::{self, RegistrationError};
use async_trait::async_trait;
use jiff::civil::Time;
use jiff::tz::TimeZone;
use regex::Regex;
use std::sync::LazyLock;

/// The rules provider for one business time zone.
#[derive(Debug, Clone)]
pub struct RulesProvider {
    tz: TimeZone,
}

impl RulesProvider {
    /// Fails only if one of the parser's patterns does not compile.
    pub fn new(tz: TimeZone) -> Result<RulesProvider, LlmError> {
        for check in [lexicon::check, dates::check, register::check, check] {
            check().map_err(LlmError::Permanent)?;
        }
        Ok(RulesProvider { tz })
    }
}

#[async_trait]
impl LlmProvider for RulesProvider {
    fn name(&self) -> &'static str {
        "rules"
    }

    async fn plan(&self, input: &LlmInput) -> Result<Plan, LlmError> {
        let now = LocalNow::at(input.received_at, &self.tz).map_err(LlmError::Permanent)?;
        Ok(plan(&input.text, &input.user_phone, &now))
    }
}

struct Patterns {
    approve: Regex,
    cancel: Regex,
    list: Regex,
    /// Verbs that make a request about bookings a new booking (`book my appointment`).
    book_strict: Regex,
    book: Regex,
    availability: Regex,
}

static PATTERNS: LazyLock<Result<Patterns, regex::Error>> = LazyLock::new(|| {
    Ok(Patterns {
        approve: Regex::new(r"\b(?:approve|confirm|accept)\b")?,
        cancel: Regex::new(r"\b(?:cancel|delete|remove|call off)\b")?,
        list: Regex::new(
            r"\b(?:my|upcoming|list|show|all)\b.*\b(?:bookings?|appointments?|reservations?)\b|\bwhat did i book\b|\bdo i have any\b",
        )?,
        book_strict: Regex::new(r"\b(?:book|reserve)\b")?,
        book: Regex::new(r"\b(?:book|reserve|schedule|want|would like|i'd like|need|get me|make)\b")?,
        availability: Regex::new(
            r"\b(?:any|available|availability|free|slots?|openings?|open|vacanc(?:y|ies))\b|\bis there\b|\bwhen can\b|\bwhat times?\b",
        )?,
    })
});

fn check() -> Result<(), String> {
    PATTERNS.as_ref().map(|_| ()).map_err(|e| format!("intent pattern: {e}"))
}

/// Plans `text` from `user_phone`, received at local time `now`.
pub fn plan(text: &str, user_phone: &str, now: &LocalNow) -> Plan {
    let Ok(p) = PATTERNS.as_ref() else { return Plan::help(help_text()) };
    let norm = normalize(text);
    let booking_id = lexicon::find_booking_id(&norm);

    if p.approve.is_match(&norm) && !p.cancel.is_match(&norm) {
        return match booking_id {
            Some(id) => Plan { intent: Intent::Approve, pipeline: pipelines::approve(&id, user_phone), reply: None },
            None => Plan::help("To approve a booking, send \"approve\" and its id, e.g. \"approve B-7Q2K\"."),
        };
    }
    if register::is_registration(text) {
        return match register::parse(text) {
            Ok(r) => Plan { intent: Intent::RegisterBusiness, pipeline: pipelines::register(&r, user_phone), reply: None },
            Err(e) => Plan::help(registration_help(&e)),
        };
    }

    let service = lexicon::find_service(&norm);
    let city = lexicon::find_city(&norm);
    let spec = dates::find_date(&norm);
    let time = dates::find_time(&norm);
    let part = dates::find_day_part(&norm);

    if p.cancel.is_match(&norm) {
        let date = match spec {
            Some(s) => match dates::resolve(Some(s), None, now) {
                Some(d) => Some(fmt_date(d)),
                None => return Plan::help(NO_SUCH_DATE),
            },
            None => None,
        };
        let pipeline = pipelines::cancel(user_phone, booking_id.as_deref(), service, date.as_deref());
        return Plan { intent: Intent::Cancel, pipeline, reply: None };
    }
    if p.list.is_match(&norm) && !p.book_strict.is_match(&norm) {
        return Plan { intent: Intent::List, pipeline: pipelines::list(user_phone), reply: None };
    }
    let book_verb = p.book.is_match(&norm);
    let asks_availability = p.availability.is_match(&norm);
    let Some(service) = service else {
        return if book_verb || asks_availability { Plan::help(which_service()) } else { Plan::help(help_text()) };
    };

    if let Some(t) = time.filter(|_| book_verb || !asks_availability) {
        let Some(date) = dates::resolve(spec, Some(t), now) else { return Plan::help(NO_SUCH_DATE) };
        let request = BookingRequest { service, city, date: fmt_date(date), time: fmt_time(t) };
        return Plan { intent: Intent::Book, pipeline: pipelines::book(&request, user_phone), reply: None };
    }
    match availability(service, city, spec, time, part, now) {
        Some(request) => Plan { intent: Intent::Availability, pipeline: pipelines::availability(&request), reply: None },
        None => Plan::help(NO_SUCH_DATE),
    }
}

const NO_SUCH_DATE: &str = "I couldn't find that date on the calendar. Please send it as day/month, e.g. \"24/11\".";

/// The search window: the named part of the day, an hour from an exact time, or the whole
/// day; on the day itself never earlier than now (rounded up to the 15-minute grid) while
/// some of the window is left.
fn availability<'a>(
    service: &'a str,
    city: Option<&'a str>,
    spec: Option<dates::DateSpec>,
    time: Option<Time>,
    part: Option<DayPart>,
    now: &LocalNow,
) -> Option<AvailabilityRequest<'a>> {
    let end_of_day = Time::constant(23, 59, 0, 0);
    let (from, to) = match (time, part) {
        (Some(t), _) => (t, t.checked_add(jiff::SignedDuration::from_hours(1)).ok().filter(|e| *e > t).unwrap_or(end_of_day)),
        (None, Some(part)) => part.window(),
        (None, None) => (Time::midnight(), end_of_day),
    };
    let date = dates::resolve(spec, Some(to), now)?;
    let from = match next_quarter(now.time) {
        Some(q) if date == now.date && q > from && q < to => q,
        _ => from,
    };
    Some(AvailabilityRequest { service, city, date: fmt_date(date), time_from: fmt_time(from), time_to: fmt_time(to) })
}

/// `t` rounded up to a quarter hour; `None` past 23:45.
fn next_quarter(t: Time) -> Option<Time> {
    let minutes = i32::from(t.hour()) * 60 + i32::from(t.minute()) + i32::from(t.second() > 0 || t.subsec_nanosecond() > 0);
    let up = (minutes + 14) / 15 * 15;
    Time::new(i8::try_from(up / 60).ok()?, i8::try_from(up % 60).ok()?, 0, 0).ok()
}

fn quoted_examples(intents: &[Intent]) -> String {
    INTENTS.iter().filter(|s| intents.contains(&s.intent)).map(|s| format!("\"{}\"", s.example)).collect::<Vec<_>>().join(" or ")
}

fn which_service() -> String {
    let services: Vec<&str> = lexicon::service_labels().collect();
    format!("Which service would you like? I know: {}. For example: {}.", services.join(", "), quoted_examples(&[Intent::Book]))
}

fn registration_help(e: &RegistrationError) -> String {
    let problem = match e {
        RegistrationError::Missing(parts) => format!("To register your business I also need {}.", parts.join(", ")),
        RegistrationError::Unreadable(part) => format!("I couldn't read \"{part}\" in your registration."),
    };
    format!("{problem} For example: {}.", quoted_examples(&[Intent::RegisterBusiness]))
}

/// What the assistant can do, with an example of each intent (from the catalogue).
pub fn help_text() -> String {
    let mut out = String::from("Hi! I'm Skeji, your booking assistant. I can:\n");
    for spec in INTENTS.iter().filter(|s| s.intent != Intent::Help) {
        out.push_str(&format!("\u{2022} {}: \"{}\"\n", spec.title, spec.example));
    }
    out.push_str(&format!("Services: {}.\n", lexicon::service_labels().collect::<Vec<_>>().join(", ")));
    out.push_str(&format!("Cities: {}.", lexicon::city_names().collect::<Vec<_>>().join(", ")));
    out
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
