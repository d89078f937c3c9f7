//! Slots: when a business can take a booking for one of its services. Shared by
//! `schedules.search_availability` and `bookings.create_booking` (its conflict
//! alternatives), so both answer from the same rules:
//! - a slot starts on the clock's 15-minute grid (:00, :15, :30, :45) inside an opening
//!   window of that weekday and ends by the window's close;
//! - it does not overlap `[start, end)` of any pending or confirmed booking of the business
//!   (whatever the service: one business serves one customer at a time);
//! - it starts after now;
//! - dates and times are wall-clock in the business's zone; a time the zone skips (a DST
//!   gap) is no slot.

use super::error::{ActionError, ActionResult};
use super::repo;
use super::types::{format_hhmm, Business, Offer, Slot, Window};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Zoned;
use rusqlite::Connection;
use std::collections::BTreeSet;

pub const GRID_MIN: u32 = 15;
/// How many days ahead alternatives are looked for.
pub const HORIZON_DAYS: usize = 14;
/// How many alternatives a `no_slot` / `conflict` offers.
pub const ALTERNATIVES: usize = 3;

/// A business with the service asked for.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub business: Business,
    pub offer: Offer,
    tz: TimeZone,
}

/// A slot with the numbers the rules need.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Minutes after midnight (wall clock).
    pub minute: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub slot: Slot,
}

fn rfc3339(z: &Zoned) -> String {
    z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

fn time_error(e: jiff::Error) -> ActionError {
    ActionError::invalid(format!("that date or time cannot be used: {e}"))
}

impl Candidate {
    pub fn new(business: Business, offer: Offer) -> ActionResult<Self> {
        let tz = business.tz()?;
        Ok(Candidate { business, offer, tz })
    }

    pub fn tz(&self) -> &TimeZone {
        &self.tz
    }

    /// The instant `date` `minute` in the business's zone, or None when the zone skips it.
    fn instant(&self, date: Date, minute: u32) -> ActionResult<Option<Zoned>> {
        // minute < 1440 by construction: both fit in i8.
        let (h, m) = ((minute / 60) as i8, (minute % 60) as i8);
        let z = date.at(h, m, 0, 0).to_zoned(self.tz.clone()).map_err(time_error)?;
        Ok((z.date() == date && z.hour() == h && z.minute() == m).then_some(z))
    }

    /// The slot starting at `date` `minute`, free or not (None in a DST gap).
    pub fn place(&self, date: Date, minute: u32) -> ActionResult<Option<Placed>> {
        let Some(start) = self.instant(date, minute)? else { return Ok(None) };
        let end_ts = start
            .timestamp()
            .checked_add(jiff::SignedDuration::from_mins(i64::from(self.offer.duration_min)))
            .map_err(time_error)?;
        let end = end_ts.to_zoned(self.tz.clone());
        let b = &self.business;
        let slot = Slot {
            schedule_id: b.schedule_id(&self.offer),
            business_id: b.business_id.clone(),
            business_name: b.name.clone(),
            address: b.address.clone(),
            city: b.city.clone(),
            service_label: self.offer.label.clone(),
            date: date.to_string(),
            time: format_hhmm(minute),
            start_time: rfc3339(&start),
            end_time: rfc3339(&end),
            duration_min: self.offer.duration_min,
            price: self.offer.price.clone(),
            currency: self.offer.currency.clone(),
        };
        Ok(Some(Placed { minute, start_ms: start.timestamp().as_millisecond(), end_ms: end_ts.as_millisecond(), slot }))
    }

    /// Whether a service starting at `minute` fits inside an opening window of `date`.
    pub fn open_at(&self, date: Date, minute: u32) -> ActionResult<bool> {
        let windows = self.business.windows(date.weekday())?;
        Ok(windows.iter().any(|w| w.open <= minute && minute + self.offer.duration_min <= w.close))
    }

    /// Grid starts of `date` that fit in the opening windows, ignoring bookings.
    fn starts(&self, date: Date) -> ActionResult<BTreeSet<u32>> {
        let mut starts = BTreeSet::new();
        for Window { open, close } in self.business.windows(date.weekday())? {
            let mut t = open.div_ceil(GRID_MIN) * GRID_MIN;
            while t + self.offer.duration_min <= close && t < 24 * 60 {
                starts.insert(t);
                t += GRID_MIN;
            }
        }
        Ok(starts)
    }

    /// The free slots of `date`, in time order.
    pub fn free(&self, c: &Connection, date: Date, now_ms: i64) -> ActionResult<Vec<Placed>> {
        let starts = self.starts(date)?;
        let mut placed = Vec::with_capacity(starts.len());
        for minute in starts {
            if let Some(p) = self.place(date, minute)? {
                if p.start_ms > now_ms {
                    placed.push(p);
                }
            }
        }
        let (Some(first), Some(last)) = (placed.first(), placed.last()) else { return Ok(placed) };
        let busy = repo::busy(c, &self.business.business_id, first.start_ms, last.end_ms)?;
        placed.retain(|p| !busy.iter().any(|&(s, e)| p.start_ms < e && s < p.end_ms));
        Ok(placed)
    }
}

/// The businesses among `businesses` that offer `label`, as candidates.
pub fn candidates(businesses: Vec<Business>, label: &str) -> ActionResult<Vec<Candidate>> {
    businesses.into_iter().filter_map(|b| b.offer(label).cloned().map(|o| Candidate::new(b, o))).collect()
}

/// Free slots of `date` at all `cands`, each with its candidate's index, optionally only
/// those starting in `[from, to)`.
pub fn free_on(
    c: &Connection,
    cands: &[Candidate],
    date: Date,
    range: Option<(u32, u32)>,
    now_ms: i64,
) -> ActionResult<Vec<(usize, Placed)>> {
    let mut all = Vec::new();
    for (i, cand) in cands.iter().enumerate() {
        for p in cand.free(c, date, now_ms)? {
            if range.is_none_or(|(from, to)| p.minute >= from && p.minute < to) {
                all.push((i, p));
            }
        }
    }
    Ok(all)
}

/// Up to `n` slots from `found`: nearest to `around` when given (earlier first on a tie),
/// else earliest; then by business order.
fn pick(mut found: Vec<(usize, Placed)>, around: Option<u32>, n: usize) -> Vec<Slot> {
    found.sort_by_key(|(i, p)| (around.map_or(0, |a| p.minute.abs_diff(a)), p.minute, *i));
    found.into_iter().take(n).map(|(_, p)| p.slot).collect()
}

/// What to offer instead of a taken or impossible time: up to [`ALTERNATIVES`] free slots
/// nearest to `around` on `date` (when `same_day`), else on the next day within
/// [`HORIZON_DAYS`] that has any (in `range` when given).
pub fn alternatives(
    c: &Connection,
    cands: &[Candidate],
    date: Date,
    around: Option<u32>,
    range: Option<(u32, u32)>,
    same_day: bool,
    now_ms: i64,
) -> ActionResult<Vec<Slot>> {
    if same_day {
        let today = free_on(c, cands, date, range, now_ms)?;
        if !today.is_empty() {
            return Ok(pick(today, around, ALTERNATIVES));
        }
    }
    let mut day = date;
    for _ in 0..HORIZON_DAYS {
        let Ok(next) = day.tomorrow() else { break };
        day = next;
        let found = free_on(c, cands, day, range, now_ms)?;
        if !found.is_empty() {
            return Ok(pick(found, around, ALTERNATIVES));
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::skeji::domain::types::Hours;

    fn cand(open: &str, close: &str, duration_min: u32) -> Candidate {
        let b = Business {
            business_id: "b1".into(),
            name: "B".into(),
            city: "Haifa".into(),
            address: "Main 1".into(),
            owner_phone: "972500000000".into(),
            time_zone: "Asia/Jerusalem".into(),
            services: vec![Offer { label: "haircut".into(), duration_min, price: 100.into(), currency: "ILS".into() }],
            opening_hours: vec![Hours { days: vec!["mon".into()], open: open.into(), close: close.into() }],
        };
        let offer = b.services[0].clone();
        Candidate::new(b, offer).expect("candidate")
    }

    #[test]
    fn grid_starts_fit_inside_opening_hours() {
        // 2030-01-07 is a Monday; 2030-01-08 a Tuesday (closed).
        let monday: Date = "2030-01-07".parse().expect("date");
        let c = cand("09:10", "10:30", 45);
        let starts: Vec<u32> = c.starts(monday).expect("starts").into_iter().collect();
        assert_eq!(starts, vec![9 * 60 + 15, 9 * 60 + 30, 9 * 60 + 45]);
        assert!(c.starts("2030-01-08".parse().expect("date")).expect("starts").is_empty());
        assert!(c.open_at(monday, 9 * 60 + 45).expect("open"));
        assert!(!c.open_at(monday, 10 * 60).expect("open"));
    }

    #[test]
    fn slot_times_carry_the_zone_offset() {
        let c = cand("09:00", "18:00", 45);
        let winter = c.place("2030-01-07".parse().expect("date"), 15 * 60).expect("place").expect("slot");
        assert_eq!(winter.slot.start_time, "2030-01-07T15:00:00+02:00");
        assert_eq!(winter.slot.end_time, "2030-01-07T15:45:00+02:00");
        assert_eq!(winter.end_ms - winter.start_ms, 45 * 60 * 1000);
        let summer = c.place("2030-07-01".parse().expect("date"), 15 * 60).expect("place").expect("slot");
        assert_eq!(summer.slot.start_time, "2030-07-01T15:00:00+03:00");
        assert_eq!(summer.slot.schedule_id, "sch-b1-haircut");
    }

    #[test]
    fn nearest_first_then_earlier() {
        let c = cand("09:00", "18:00", 30);
        let d: Date = "2030-01-07".parse().expect("date");
        let found: Vec<(usize, Placed)> = [13 * 60, 14 * 60, 16 * 60, 17 * 60]
            .into_iter()
            .map(|m| (0, c.place(d, m).expect("place").expect("slot")))
            .collect();
        let times: Vec<String> = pick(found, Some(15 * 60), 3).into_iter().map(|s| s.time).collect();
        assert_eq!(times, vec!["14:00", "16:00", "13:00"]);
    }
}
