//! Business registrations: "register my business Dana's Salon in Tel Aviv, haircut 45 min
//! 120 ILS; manicure 30 min 80 ILS, Sun-Thu 9-18, Fri 9-13".
//!
//! Read from the original text (case kept for the name): the name runs to the first
//! `,`/`;` (or to ` in <city>`), opening hours are found anywhere (`<days> <open>-<close>`,
//! days as ranges `Sun-Thu` or lists `Sun, Tue`, `daily`), and every other part separated
//! by `,`, `;` or `and` is a service (`<label> <duration> <price> [currency]`) or the city.
//! Hours like `9-6` whose close is not after the open are read as 9am–6pm.

use super::catalog::DAYS;
use super::dates::fmt_time;
use super::lexicon;
use super::pipelines::{Hours, OfferedService, Registration};
use jiff::civil::Time;
use regex::Regex;
use std::sync::LazyLock;

/// Why a registration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("missing {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    #[error("cannot read \"{0}\"")]
    Unreadable(String),
}

const DAY: &str = r"(?:sun(?:day)?|mon(?:day)?|tue(?:s(?:day)?)?|wed(?:nesday)?|thu(?:r(?:s(?:day)?)?)?|fri(?:day)?|sat(?:urday)?)";
const CLOCK: &str = r"\d{1,2}(?::\d{2})?\s*(?:[ap]\.?m\.?)?";

struct Patterns {
    intro: Regex,
    hours: Regex,
    day_item: Regex,
    clock: Regex,
    separators: Regex,
    in_city: Regex,
    duration: Regex,
    price: Regex,
}

impl Patterns {
    fn compile() -> Result<Patterns, regex::Error> {
        let item = format!(r"{DAY}(?:\s*(?:-|to)\s*{DAY})?");
        Ok(Patterns {
            intro: Regex::new(
                r"(?i)\bregister\s+(?:(?:my|a|the|our|new)\s+)*(?:business|salon|shop|store|studio|clinic|barbershop|spa)?\b\s*(?:(?:called|named)\b)?\s*:?\s*",
            )?,
            hours: Regex::new(&format!(
                r"(?i)\b(?P<days>daily|every\s*day|{item}(?:\s*(?:,|/|&|\band\b)\s*{item})*)\b\s*:?\s*(?P<open>{CLOCK})\s*(?:-|to|until)\s*(?P<close>{CLOCK})"
            ))?,
            day_item: Regex::new(&format!(r"(?i)(?P<a>{DAY})(?:\s*(?:-|to)\s*(?P<b>{DAY}))?"))?,
            clock: Regex::new(r"(?i)^(\d{1,2})(?::(\d{2}))?\s*(?:([ap])\.?m\.?)?$")?,
            separators: Regex::new(r"(?i)[,;\n]|\band\b")?,
            in_city: Regex::new(r"(?i)\s+in\s+")?,
            duration: Regex::new(r"(?i)(\d+(?:\.\d+)?)\s*(minutes|minute|mins|min|m|hours|hour|hrs|hr|h)\b\.?")?,
            price: Regex::new(
                r"(?i)(?P<sym>[₪$€])\s*(?P<p1>\d+(?:\.\d+)?)|(?P<p2>\d+(?:\.\d+)?)\s*(?P<cur>ils|nis|shekels|shekel|usd|dollars|dollar|eur|euros|euro|[₪$€])?",
            )?,
        })
    }
}

static PATTERNS: LazyLock<Result<Patterns, regex::Error>> = LazyLock::new(Patterns::compile);

/// Fails when a pattern of this module does not compile (checked when the provider is built).
pub fn check() -> Result<(), String> {
    PATTERNS.as_ref().map(|_| ()).map_err(|e| format!("registration pattern: {e}"))
}

/// Whether `text` asks to register a business (the caller then calls [`parse`]).
pub fn is_registration(text: &str) -> bool {
    PATTERNS.as_ref().is_ok_and(|p| p.intro.is_match(text))
}

/// Reads a registration from the user's original text.
pub fn parse(text: &str) -> Result<Registration, RegistrationError> {
    let p = PATTERNS.as_ref().map_err(|e| RegistrationError::Unreadable(e.to_string()))?;
    let text = text.replace(['\u{2019}', '\u{2018}'], "'").replace(['\u{2013}', '\u{2014}'], "-");
    let rest = p.intro.find(&text).map_or("", |m| &text[m.end()..]);

    let mut opening_hours = Vec::new();
    for c in p.hours.captures_iter(rest) {
        let (Some(days), Some(open), Some(close)) = (c.name("days"), c.name("open"), c.name("close")) else { continue };
        let whole = c.get(0).map_or("", |m| m.as_str());
        let (open, close) = hours(p, open.as_str(), close.as_str()).ok_or_else(|| RegistrationError::Unreadable(whole.to_string()))?;
        opening_hours.push(Hours { days: expand_days(p, days.as_str()), open, close });
    }
    let rest = p.hours.replace_all(rest, ",");

    let (head, tail) = match rest.find([',', ';', '\n']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..], ""),
    };
    let mut name = head.trim();
    let mut city: Option<String> = None;
    let mut extra = String::new();
    if let Some(m) = p.in_city.find(head) {
        name = head[..m.start()].trim();
        let after = head[m.end()..].trim();
        let lower = after.to_lowercase();
        match lexicon::city_prefix(&lower) {
            Some((canonical, end)) => {
                city = Some(canonical.to_string());
                extra = lower.get(end..).unwrap_or("").to_string();
            }
            None => city = Some(after.to_string()),
        }
    }
    let name = name.trim_matches(|c: char| c == '"' || c == '.' || c.is_whitespace()).to_string();

    let segments: Vec<&str> = p
        .separators
        .split(&extra)
        .chain(p.separators.split(tail))
        .map(|s| s.trim().trim_end_matches('.').trim())
        .filter(|s| !s.is_empty())
        .collect();
    let mut services = Vec::new();
    let mut i = 0;
    while i < segments.len() {
        let segment = segments[i];
        i += 1;
        if let Some(s) = service(p, segment) {
            services.push(s);
        } else if let Some(s) = segments
            .get(i)
            .filter(|_| segment.chars().any(|c| c.is_ascii_digit()))
            .and_then(|next| service(p, &format!("{segment} {next}")))
        {
            // A comma inside one service (`beard trim 20 min, ₪50`).
            services.push(s);
            i += 1;
        } else if !segment.chars().any(|c| c.is_ascii_digit()) && city.is_none() {
            city = Some(lexicon::canonical_city(segment).map_or_else(|| segment.to_string(), str::to_string));
        } else {
            return Err(RegistrationError::Unreadable(segment.to_string()));
        }
    }

    let mut missing = Vec::new();
    if name.is_empty() {
        missing.push("the business name");
    }
    if city.as_deref().is_none_or(str::is_empty) {
        missing.push("the city");
    }
    if services.is_empty() {
        missing.push("services (e.g. haircut 45 min 120 ILS)");
    }
    if opening_hours.is_empty() {
        missing.push("opening hours (e.g. Sun-Thu 9-18)");
    }
    match city {
        Some(city) if missing.is_empty() => Ok(Registration { name, city, services, opening_hours }),
        _ => Err(RegistrationError::Missing(missing)),
    }
}

/// `9`, `9:30`, `6pm` as a time of day.
fn clock(p: &Patterns, s: &str) -> Option<Time> {
    let c = p.clock.captures(s.trim())?;
    let mut h: i8 = c.get(1)?.as_str().parse().ok()?;
    let m: i8 = c.get(2).map_or(Some(0), |m| m.as_str().parse().ok())?;
    match c.get(3).map(|m| m.as_str().to_ascii_lowercase()) {
        Some(ap) if (1..=12).contains(&h) => h = h % 12 + if ap == "p" { 12 } else { 0 },
        Some(_) => return None,
        None => {}
    }
    // `24` closes at the end of the day.
    if h == 24 && m == 0 {
        return Some(Time::constant(23, 59, 0, 0));
    }
    Time::new(h, m, 0, 0).ok()
}

/// Opening and closing times; a close not after the open without am/pm (`9-6`) is the
/// afternoon.
fn hours(p: &Patterns, open: &str, close: &str) -> Option<(String, String)> {
    let o = clock(p, open)?;
    let mut c = clock(p, close)?;
    if c <= o && c.hour() < 12 && !close.to_ascii_lowercase().contains('m') {
        c = Time::new(c.hour() + 12, c.minute(), 0, 0).ok()?;
    }
    Some((fmt_time(o), fmt_time(c)))
}

fn day_index(name: &str) -> Option<usize> {
    let key = name.get(..3)?.to_ascii_lowercase();
    DAYS.iter().position(|d| *d == key)
}

/// `Sun-Thu` → sun…thu, `Fri-Sun` → fri, sat, sun, `Sun, Tue` → sun, tue, `daily` → all;
/// in week order, Sunday first.
fn expand_days(p: &Patterns, spec: &str) -> Vec<&'static str> {
    let lower = spec.to_ascii_lowercase();
    if lower.starts_with("daily") || lower.starts_with("every") {
        return DAYS.to_vec();
    }
    let mut on = [false; 7];
    for c in p.day_item.captures_iter(spec) {
        let Some(a) = c.name("a").and_then(|m| day_index(m.as_str())) else { continue };
        let b = c.name("b").and_then(|m| day_index(m.as_str())).unwrap_or(a);
        let len = (b + 7 - a) % 7;
        for k in 0..=len {
            on[(a + k) % 7] = true;
        }
    }
    DAYS.iter().zip(on).filter(|(_, on)| *on).map(|(d, _)| *d).collect()
}

/// `haircut 45 min 120 ILS`, `beard trim: 20 min, ₪50`, `massage 1h 250`.
fn service(p: &Patterns, segment: &str) -> Option<OfferedService> {
    let first_digit = segment.find(|c: char| c.is_ascii_digit() || "₪$€".contains(c))?;
    let label = segment[..first_digit].trim().trim_end_matches([':', '-', ',']).trim();
    if !label.chars().any(char::is_alphabetic) {
        return None;
    }
    let label = lexicon::canonical_service(label).map_or_else(|| lexicon::normalize(label), str::to_string);
    let rest = &segment[first_digit..];
    let d = p.duration.captures(rest)?;
    let amount: f64 = d.get(1)?.as_str().parse().ok()?;
    let unit = d.get(2)?.as_str().to_ascii_lowercase();
    let minutes = if unit.starts_with('h') { amount * 60.0 } else { amount };
    let whole = d.get(0)?;
    let remaining = format!("{} {}", &rest[..whole.start()], &rest[whole.end()..]);
    let c = p.price.captures(&remaining)?;
    let price: f64 = c.name("p1").or(c.name("p2"))?.as_str().parse().ok()?;
    let currency = match c.name("sym").or(c.name("cur")).map(|m| m.as_str().to_lowercase()).as_deref() {
        Some("$" | "usd" | "dollar" | "dollars") => "USD",
        Some("€" | "eur" | "euro" | "euros") => "EUR",
        _ => "ILS",
    };
    if !(1.0..=24.0 * 60.0).contains(&minutes) || minutes.fract() != 0.0 || price < 0.0 {
        return None;
    }
    Some(OfferedService { label, duration_min: minutes as u32, price, currency: currency.to_string() })
}

#[cfg(test)]
#[path = "register_tests.rs"]
mod tests;
