//! Dates and times in messages ("tomorrow at 3pm", "Friday 15:30", "18/11 at 10:00"),
//! found in normalized text (`lexicon::normalize`) and resolved against the moment the
//! message was received, in the business's time zone.
//!
//! Resolution rules (documented in the module so the prompt, the tests and the report agree):
//! - `today`/`tonight`, `tomorrow`, `the day after tomorrow`: relative to the local date.
//! - A weekday (`Friday`, `on Friday`, `this Friday`): the next day with that name; when
//!   today has that name it means today if the requested time (or the end of the named
//!   part of the day) is still ahead, or no time was given, else the same day next week.
//!   `next Friday` is the coming Friday too, but never today.
//! - `18/11`, `18.11`, `18 Nov`, `Nov 18`: that day this year, or next year if it is
//!   already past (today counts as not past; 29/02 is the next leap year's). An explicit
//!   year (`18/11/2027`) is kept.
//! - `the 24th`: that day this month, or the next month that has it if it is past.
//! - `2026-11-24`: as written.
//! - No date: today if the requested time is still ahead (or none was given), else tomorrow.
//! - Times: `3pm`, `3 pm`, `3:30pm`, `15:30`, `10:00`, `noon`, `midnight`; `12am` is 00:00
//!   and `12pm` is 12:00. Without am/pm a time is taken as business hours: a bare hour
//!   after `at` or a one-digit `H:MM` of 1–7 means the afternoon (`at 3` and `3:30` are
//!   15:00 and 15:30); 8–23 and zero-padded times (`07:30`) are as written.

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::ToSpan;
use regex::Regex;
use std::sync::LazyLock;

/// The local date and time a message was received at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalNow {
    pub date: Date,
    pub time: Time,
}

impl LocalNow {
    /// `received_at` (ms since the epoch) in `tz`.
    pub fn at(received_at: i64, tz: &TimeZone) -> Result<LocalNow, String> {
        let ts = jiff::Timestamp::from_millisecond(received_at).map_err(|e| format!("received_at {received_at} is out of range: {e}"))?;
        let z = ts.to_zoned(tz.clone());
        Ok(LocalNow { date: z.date(), time: z.time() })
    }
}

/// A date as the user named it, before resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateSpec {
    Today,
    Tomorrow,
    DayAfterTomorrow,
    Weekday { day: Weekday, next: bool },
    DayMonth { day: i8, month: i8, year: Option<i16> },
    DayOfMonth { day: i8 },
    Exact(Date),
}

/// A named part of the day, searched as a window of start times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayPart {
    Morning,
    Afternoon,
    Evening,
}

impl DayPart {
    /// `(from, to)`: morning 08:00–12:00, afternoon 12:00–18:00, evening 17:00–21:00.
    pub fn window(self) -> (Time, Time) {
        let t = |h| Time::constant(h, 0, 0, 0);
        match self {
            DayPart::Morning => (t(8), t(12)),
            DayPart::Afternoon => (t(12), t(18)),
            DayPart::Evening => (t(17), t(21)),
        }
    }
}

const WEEKDAY: &str = r"monday|mon|tuesday|tues|tue|wednesday|wed|thursday|thurs|thur|thu|friday|fri|saturday|sat|sunday|sun";
const MONTH: &str = r"january|jan|february|feb|march|mar|april|apr|may|june|jun|july|jul|august|aug|september|sept|sep|october|oct|november|nov|december|dec";

struct Patterns {
    iso: Regex,
    day_month: Regex,
    day_month_name: Regex,
    month_name_day: Regex,
    day_after_tomorrow: Regex,
    tomorrow: Regex,
    today: Regex,
    weekday: Regex,
    day_of_month: Regex,
    am_pm: Regex,
    clock: Regex,
    at_hour: Regex,
    noon: Regex,
    midnight: Regex,
    day_part: Regex,
}

impl Patterns {
    fn compile() -> Result<Patterns, regex::Error> {
        Ok(Patterns {
            iso: Regex::new(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")?,
            day_month: Regex::new(r"\b(\d{1,2})[/.](\d{1,2})(?:[/.](\d{4}|\d{2}))?\b")?,
            day_month_name: Regex::new(&format!(r"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({MONTH})\b\.?(?:\s+(\d{{4}})\b)?"))?,
            month_name_day: Regex::new(&format!(r"\b({MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:\s+(\d{{4}})\b)?"))?,
            day_after_tomorrow: Regex::new(r"\bday\s+after\s+tomorrow\b")?,
            tomorrow: Regex::new(r"\b(?:tomorrow|tmrw|tmr|tomorow|tommorow|tommorrow)\b")?,
            today: Regex::new(r"\b(?:today|tonight)\b")?,
            weekday: Regex::new(&format!(r"\b(?:(next|this|coming|on)\s+)?({WEEKDAY})\b"))?,
            day_of_month: Regex::new(r"\bthe\s+(\d{1,2})(?:st|nd|rd|th)\b")?,
            am_pm: Regex::new(r"\b(\d{1,2})(?:[:.](\d{2}))?\s*([ap])\.?m\b\.?")?,
            clock: Regex::new(r"\b(\d{1,2}):(\d{2})\b")?,
            at_hour: Regex::new(r"\bat\s+(\d{1,2})\b")?,
            noon: Regex::new(r"\b(?:noon|midday)\b")?,
            midnight: Regex::new(r"\bmidnight\b")?,
            day_part: Regex::new(r"\b(morning|afternoon|evening|tonight|night)\b")?,
        })
    }
}

static PATTERNS: LazyLock<Result<Patterns, regex::Error>> = LazyLock::new(Patterns::compile);

/// Fails when a pattern of this module does not compile (checked when the provider is built).
pub fn check() -> Result<(), String> {
    PATTERNS.as_ref().map(|_| ()).map_err(|e| format!("date pattern: {e}"))
}

fn patterns() -> Option<&'static Patterns> {
    PATTERNS.as_ref().ok()
}

fn num<T: std::str::FromStr>(c: &regex::Captures<'_>, i: usize) -> Option<T> {
    c.get(i).and_then(|m| m.as_str().parse().ok())
}

fn month_number(name: &str) -> Option<i8> {
    let n = match name.get(..3)? {
        "jan" => 1,
        "feb" => 2,
        "mar" => 3,
        "apr" => 4,
        "may" => 5,
        "jun" => 6,
        "jul" => 7,
        "aug" => 8,
        "sep" => 9,
        "oct" => 10,
        "nov" => 11,
        "dec" => 12,
        _ => return None,
    };
    Some(n)
}

fn weekday(name: &str) -> Option<Weekday> {
    let d = match name.get(..3)? {
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        "sun" => Weekday::Sunday,
        _ => return None,
    };
    Some(d)
}

/// Whether the text right after a number makes it a time (`3.30pm`), not a date.
fn followed_by_am_pm(rest: &str) -> bool {
    let r = rest.trim_start();
    ["am", "pm", "a.m", "p.m"].iter().any(|p| r.starts_with(p))
}

/// A valid day/month pair (the year is checked on resolution).
fn plausible(day: i8, month: i8) -> bool {
    (1..=12).contains(&month) && (1..=31).contains(&day)
}

fn year_of(c: &regex::Captures<'_>, i: usize) -> Option<i16> {
    let y: i16 = num(c, i)?;
    Some(if y < 100 { 2000 + y } else { y })
}

/// The date named in normalized `text`, most explicit form first.
pub fn find_date(text: &str) -> Option<DateSpec> {
    let p = patterns()?;
    if let Some(d) = p.iso.captures_iter(text).find_map(|c| Date::new(num(&c, 1)?, num(&c, 2)?, num(&c, 3)?).ok()) {
        return Some(DateSpec::Exact(d));
    }
    let dm = p.day_month.captures_iter(text).find_map(|c| {
        let end = c.get(0)?.end();
        let (day, month) = (num(&c, 1)?, num(&c, 2)?);
        (plausible(day, month) && !followed_by_am_pm(&text[end..])).then(|| DateSpec::DayMonth { day, month, year: year_of(&c, 3) })
    });
    if dm.is_some() {
        return dm;
    }
    let named = p
        .day_month_name
        .captures_iter(text)
        .find_map(|c| Some((num(&c, 1)?, month_number(c.get(2)?.as_str())?, year_of(&c, 3))))
        .or_else(|| {
            p.month_name_day
                .captures_iter(text)
                .find_map(|c| Some((num(&c, 2)?, month_number(c.get(1)?.as_str())?, year_of(&c, 3))))
        });
    if let Some((day, month, year)) = named.filter(|(d, m, _)| plausible(*d, *m)) {
        return Some(DateSpec::DayMonth { day, month, year });
    }
    if p.day_after_tomorrow.is_match(text) {
        return Some(DateSpec::DayAfterTomorrow);
    }
    if p.tomorrow.is_match(text) {
        return Some(DateSpec::Tomorrow);
    }
    if p.today.is_match(text) {
        return Some(DateSpec::Today);
    }
    if let Some(c) = p.weekday.captures(text) {
        let day = weekday(c.get(2)?.as_str())?;
        return Some(DateSpec::Weekday { day, next: c.get(1).is_some_and(|m| m.as_str() == "next") });
    }
    let day = p.day_of_month.captures(text).and_then(|c| num::<i8>(&c, 1)).filter(|d| (1..=31).contains(d))?;
    Some(DateSpec::DayOfMonth { day })
}

fn hm(h: i8, m: i8) -> Option<Time> {
    Time::new(h, m, 0, 0).ok()
}

/// The time of day named in normalized `text`.
pub fn find_time(text: &str) -> Option<Time> {
    let p = patterns()?;
    let am_pm = p.am_pm.captures_iter(text).find_map(|c| {
        let (h, m): (i8, i8) = (num(&c, 1)?, c.get(2).map_or(Some(0), |m| m.as_str().parse().ok())?);
        if !(1..=12).contains(&h) {
            return None;
        }
        let pm = c.get(3)?.as_str() == "p";
        hm(h % 12 + if pm { 12 } else { 0 }, m)
    });
    if am_pm.is_some() {
        return am_pm;
    }
    let clock = p.clock.captures_iter(text).find_map(|c| {
        let hour = c.get(1)?.as_str();
        let h: i8 = hour.parse().ok()?;
        // `3:30` is business hours like `at 3`; `03:30` is written as meant.
        hm(if hour.len() == 1 && (1..=7).contains(&h) { h + 12 } else { h }, num(&c, 2)?)
    });
    if let Some(t) = clock {
        return Some(t);
    }
    let at = p.at_hour.captures_iter(text).find_map(|c| {
        let rest = &text[c.get(0)?.end()..];
        // `at 18/11`, `at 9-18`, `at 10.5` are not hours.
        let mut chars = rest.chars();
        if let (Some('/' | '.' | '-'), Some(d)) = (chars.next(), chars.next()) {
            if d.is_ascii_digit() {
                return None;
            }
        }
        let h: i8 = num(&c, 1)?;
        hm(if (1..=7).contains(&h) { h + 12 } else { h }, 0)
    });
    if at.is_some() {
        return at;
    }
    if p.noon.is_match(text) {
        return hm(12, 0);
    }
    if p.midnight.is_match(text) {
        return hm(0, 0);
    }
    None
}

/// The part of the day named in normalized `text` (`tonight` is the evening).
pub fn find_day_part(text: &str) -> Option<DayPart> {
    let c = patterns()?.day_part.captures(text)?;
    match c.get(1)?.as_str() {
        "morning" => Some(DayPart::Morning),
        "afternoon" => Some(DayPart::Afternoon),
        _ => Some(DayPart::Evening),
    }
}

fn add_days(d: Date, n: i64) -> Option<Date> {
    d.checked_add(n.days()).ok()
}

/// The date `spec` means when received at `now`; `wanted` is the time the user asked for
/// (or the end of the part of the day), which decides between today and a later day
/// where the rules above say so. `None` when the date does not exist (31/11).
pub fn resolve(spec: Option<DateSpec>, wanted: Option<Time>, now: &LocalNow) -> Option<Date> {
    let still_ahead = wanted.is_none_or(|t| t > now.time);
    match spec {
        None => add_days(now.date, if still_ahead { 0 } else { 1 }),
        Some(DateSpec::Today) => Some(now.date),
        Some(DateSpec::Tomorrow) => add_days(now.date, 1),
        Some(DateSpec::DayAfterTomorrow) => add_days(now.date, 2),
        Some(DateSpec::Weekday { day, next }) => {
            let delta = i64::from((day.to_sunday_zero_offset() - now.date.weekday().to_sunday_zero_offset()).rem_euclid(7));
            let delta = if delta == 0 && (next || !still_ahead) { 7 } else { delta };
            add_days(now.date, delta)
        }
        Some(DateSpec::DayMonth { day, month, year: Some(y) }) => Date::new(y, month, day).ok(),
        Some(DateSpec::DayMonth { day, month, year: None }) => {
            // The first such day from today on; 29/02 may be years away.
            (0..=8).find_map(|k| Date::new(now.date.year().checked_add(k)?, month, day).ok().filter(|d| *d >= now.date))
        }
        Some(DateSpec::DayOfMonth { day }) => {
            let first = now.date.first_of_month();
            (0..12).find_map(|k| {
                let m = first.checked_add(k.months()).ok()?;
                Date::new(m.year(), m.month(), day).ok().filter(|d| *d >= now.date)
            })
        }
        Some(DateSpec::Exact(d)) => Some(d),
    }
}

/// `YYYY-MM-DD`.
pub fn fmt_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// `Monday` … `Sunday`.
pub fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Monday => "Monday",
        Weekday::Tuesday => "Tuesday",
        Weekday::Wednesday => "Wednesday",
        Weekday::Thursday => "Thursday",
        Weekday::Friday => "Friday",
        Weekday::Saturday => "Saturday",
        Weekday::Sunday => "Sunday",
    }
}

/// `HH:MM`.
pub fn fmt_time(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

#[cfg(test)]
#[path = "dates_tests.rs"]
mod tests;
