//! The domain's records as they appear in results and events (docs/apps/skeji.md: business,
//! slot, booking), and the normalisations used to match what users type against them.

use super::error::{ActionError, ActionResult};
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use serde_json::Number;

pub const DEFAULT_TIME_ZONE: &str = "Asia/Jerusalem";

/// A service a business offers. Unknown fields are ignored: these come from the LLM
/// layer in `register_business`, which may add some.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub label: String,
    pub duration_min: u32,
    /// A JSON number as given (`120` stays `120`, not `120.0`, in what users are shown).
    pub price: Number,
    /// Skeji serves Israel: shekels unless said otherwise.
    #[serde(default = "default_currency")]
    pub currency: String,
}

fn default_currency() -> String {
    "ILS".to_string()
}

/// Opening hours for some weekdays, `HH:MM` wall-clock times in the business's zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hours {
    pub days: Vec<String>,
    pub open: String,
    pub close: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Business {
    pub business_id: String,
    pub name: String,
    pub city: String,
    /// Always a string so renderers need no null case; the city when none was given.
    pub address: String,
    pub owner_phone: String,
    pub time_zone: String,
    pub services: Vec<Offer>,
    pub opening_hours: Vec<Hours>,
}

/// An opening window of one day, in minutes after midnight: `[open, close)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub open: u32,
    pub close: u32,
}

impl Business {
    /// Checks what `register_business` and the seed accept; the message is for the user.
    pub fn validate(&self) -> Result<(), String> {
        for (what, v) in [("name", &self.name), ("city", &self.city), ("owner_phone", &self.owner_phone)] {
            if v.trim().is_empty() {
                return Err(format!("`{what}` is missing"));
            }
        }
        if phone_digits(&self.owner_phone).is_empty() {
            return Err("`owner_phone` has no digits".into());
        }
        TimeZone::get(&self.time_zone).map_err(|e| format!("unknown time zone `{}`: {e}", self.time_zone))?;
        if self.services.is_empty() {
            return Err("at least one service is needed".into());
        }
        for s in &self.services {
            if key(&s.label).is_empty() || s.currency.trim().is_empty() {
                return Err("every service needs a label and a currency".into());
            }
            if s.duration_min == 0 || s.duration_min > 24 * 60 {
                return Err(format!("service `{}`: duration_min must be 1..1440", s.label));
            }
            if s.price.as_f64().is_none_or(|p| p < 0.0) {
                return Err(format!("service `{}`: price must not be negative", s.label));
            }
        }
        let mut labels: Vec<String> = self.services.iter().map(|s| key(&s.label)).collect();
        labels.sort();
        labels.dedup();
        if labels.len() != self.services.len() {
            return Err("a service label appears twice".into());
        }
        if self.opening_hours.is_empty() {
            return Err("opening hours are missing".into());
        }
        for h in &self.opening_hours {
            parse_hours(h)?;
        }
        Ok(())
    }

    /// The offer whose label matches `label` (case and spacing aside).
    pub fn offer(&self, label: &str) -> Option<&Offer> {
        let k = key(label);
        self.services.iter().find(|s| key(&s.label) == k)
    }

    pub fn tz(&self) -> ActionResult<TimeZone> {
        TimeZone::get(&self.time_zone)
            .map_err(|e| ActionError::corrupt(format!("time zone of {}", self.business_id), e))
    }

    /// The business's opening windows on `day`, sorted.
    pub fn windows(&self, day: Weekday) -> ActionResult<Vec<Window>> {
        let mut out = Vec::new();
        for h in &self.opening_hours {
            let (days, w) =
                parse_hours(h).map_err(|e| ActionError::corrupt(format!("hours of {}", self.business_id), e))?;
            if days.contains(&day) {
                out.push(w);
            }
        }
        out.sort_by_key(|w| w.open);
        Ok(out)
    }

    /// `sch-<business_id>-<label>`: names the business's service in slots and bookings.
    pub fn schedule_id(&self, offer: &Offer) -> String {
        format!("sch-{}-{}", self.business_id, key(&offer.label))
    }
}

/// A bookable time (docs/apps/skeji.md "slot").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slot {
    pub schedule_id: String,
    pub business_id: String,
    pub business_name: String,
    pub address: String,
    pub city: String,
    pub service_label: String,
    /// `YYYY-MM-DD` in the business's zone.
    pub date: String,
    /// `HH:MM` in the business's zone.
    pub time: String,
    /// RFC 3339 with offset.
    pub start_time: String,
    pub end_time: String,
    pub duration_min: u32,
    pub price: Number,
    pub currency: String,
}

/// A slot someone booked (docs/apps/skeji.md "booking").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    #[serde(flatten)]
    pub slot: Slot,
    pub booking_id: String,
    /// `pending`, `confirmed` or `cancelled`.
    pub status: String,
    pub user_phone: String,
    pub owner_phone: String,
}

/// Matching key for labels, names and cities: case, dashes and spacing do not matter
/// ("Tel-Aviv" = "tel aviv").
pub fn key(s: &str) -> String {
    s.to_lowercase().replace(['-', '_'], " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Phones compare as digits only (`+972 50-111` = `97250111`), as the gateway normalises them.
pub fn phone_digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// `HH:MM` → minutes after midnight; `24:00` is allowed (a closing time at midnight).
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(24 * 60),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

pub fn format_hhmm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// `sun`, `Sunday`, `SUN` … → the weekday.
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    let k = s.trim().to_lowercase();
    let short = k.get(..3)?;
    let day = match short {
        "sun" => Weekday::Sunday,
        "mon" => Weekday::Monday,
        "tue" => Weekday::Tuesday,
        "wed" => Weekday::Wednesday,
        "thu" => Weekday::Thursday,
        "fri" => Weekday::Friday,
        "sat" => Weekday::Saturday,
        _ => return None,
    };
    // Only the abbreviation or the full English name, not anything starting with it.
    let full = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];
    (k.len() == 3 || full.contains(&k.as_str())).then_some(day)
}

fn parse_hours(h: &Hours) -> Result<(Vec<Weekday>, Window), String> {
    let days = h
        .days
        .iter()
        .map(|d| parse_weekday(d).ok_or_else(|| format!("`{d}` is not a weekday (write sun, mon, …)")))
        .collect::<Result<Vec<_>, _>>()?;
    if days.is_empty() {
        return Err("opening hours without days".into());
    }
    let open = parse_hhmm(&h.open).ok_or_else(|| format!("opening time `{}` is not HH:MM", h.open))?;
    let close = parse_hhmm(&h.close).ok_or_else(|| format!("closing time `{}` is not HH:MM", h.close))?;
    if close <= open {
        return Err(format!("closing time {} is not after opening time {}", h.close, h.open));
    }
    Ok((days, Window { open, close }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_times() {
        assert_eq!(key("  Tel-Aviv "), "tel aviv");
        assert_eq!(key("Hair_Cut"), "hair cut");
        assert_eq!(phone_digits("+972 50-111"), "97250111");
        assert_eq!(parse_hhmm("09:00"), Some(540));
        assert_eq!(parse_hhmm("9:30"), Some(570));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("24:30"), None);
        assert_eq!(parse_hhmm("12:5"), None);
        assert_eq!(parse_hhmm("noon"), None);
        assert_eq!(format_hhmm(905), "15:05");
        assert_eq!(parse_weekday("Sunday"), Some(Weekday::Sunday));
        assert_eq!(parse_weekday("fri"), Some(Weekday::Friday));
        assert_eq!(parse_weekday("frisbee"), None);
        assert_eq!(parse_weekday("fr"), None);
    }
}
