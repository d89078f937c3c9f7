//! The domain tables in the shared `skeji.db` and the queries on them. All three domain
//! services migrate the same schema at build (idempotent), since each reads the others'
//! tables: schedules and bookings read businesses, schedules reads bookings.
//!
//! Rows keep the record as JSON (`doc`) next to the columns queries filter on, so the
//! exact result shape lives in one place ([`super::types`]).

use super::error::{ActionError, ActionResult};
use super::types::{key, Booking, Business, Offer};
use rusqlite::{params, Connection, OptionalExtension};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS businesses (
    business_id   TEXT PRIMARY KEY,
    name_key      TEXT NOT NULL,
    city_key      TEXT NOT NULL,
    doc           TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    UNIQUE (name_key, city_key)
);
CREATE TABLE IF NOT EXISTS business_services (
    label_key   TEXT NOT NULL,
    business_id TEXT NOT NULL REFERENCES businesses (business_id),
    PRIMARY KEY (label_key, business_id)
);
CREATE TABLE IF NOT EXISTS bookings (
    booking_id  TEXT PRIMARY KEY,
    business_id TEXT NOT NULL,
    label_key   TEXT NOT NULL,
    user_phone  TEXT NOT NULL,
    status      TEXT NOT NULL,
    start_ms    INTEGER NOT NULL,
    end_ms      INTEGER NOT NULL,
    date        TEXT NOT NULL,
    doc         TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bookings_by_business ON bookings (business_id, start_ms);
CREATE INDEX IF NOT EXISTS bookings_by_user ON bookings (user_phone, start_ms);
CREATE TABLE IF NOT EXISTS processed_commands (
    command_id  TEXT PRIMARY KEY,
    service     TEXT NOT NULL,
    reply_json  TEXT NOT NULL,
    events_json TEXT NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS processed_commands_at ON processed_commands (at);
";

/// Statuses that hold a slot.
const ACTIVE: &str = "status IN ('pending', 'confirmed')";

fn from_doc<T: serde::de::DeserializeOwned>(what: &str, doc: &str) -> ActionResult<T> {
    serde_json::from_str(doc).map_err(|e| ActionError::corrupt(what, e))
}

fn to_doc(v: &impl serde::Serialize) -> ActionResult<String> {
    serde_json::to_string(v).map_err(|e| ActionError::corrupt("record to store", e))
}

/// Inserts a business and its services. `or_ignore` (the seed) skips one whose id or
/// name+city exists; otherwise such a clash is a constraint error.
pub fn insert_business(c: &Connection, b: &Business, now_ms: i64, or_ignore: bool) -> ActionResult<bool> {
    let verb = if or_ignore { "INSERT OR IGNORE" } else { "INSERT" };
    let n = c.execute(
        &format!(
            "{verb} INTO businesses (business_id, name_key, city_key, doc, registered_at) VALUES (?1, ?2, ?3, ?4, ?5)"
        ),
        params![b.business_id, key(&b.name), key(&b.city), to_doc(b)?, now_ms],
    )?;
    if n == 0 {
        return Ok(false);
    }
    for s in &b.services {
        c.execute(
            "INSERT OR IGNORE INTO business_services (label_key, business_id) VALUES (?1, ?2)",
            params![key(&s.label), b.business_id],
        )?;
    }
    Ok(true)
}

pub fn business_named(c: &Connection, name: &str, city: &str) -> ActionResult<Option<Business>> {
    let doc: Option<String> = c
        .query_row(
            "SELECT doc FROM businesses WHERE name_key = ?1 AND city_key = ?2",
            params![key(name), key(city)],
            |r| r.get(0),
        )
        .optional()?;
    doc.map(|d| from_doc("business", &d)).transpose()
}

pub fn business(c: &Connection, business_id: &str) -> ActionResult<Option<Business>> {
    let doc: Option<String> =
        c.query_row("SELECT doc FROM businesses WHERE business_id = ?1", [business_id], |r| r.get(0)).optional()?;
    doc.map(|d| from_doc("business", &d)).transpose()
}

pub fn count_businesses(c: &Connection) -> ActionResult<i64> {
    Ok(c.query_row("SELECT COUNT(*) FROM businesses", [], |r| r.get(0))?)
}

/// Businesses offering `label`, in `city` when given, in a stable order (by id).
pub fn businesses_offering(c: &Connection, label: &str, city: Option<&str>) -> ActionResult<Vec<Business>> {
    let mut stmt = c.prepare(
        "SELECT b.doc FROM businesses b JOIN business_services s ON s.business_id = b.business_id
         WHERE s.label_key = ?1 AND (?2 IS NULL OR b.city_key = ?2) ORDER BY b.business_id",
    )?;
    let docs = stmt
        .query_map(params![key(label), city.map(key)], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.iter().map(|d| from_doc("business", d)).collect()
}

/// The business and service a `sch-<business_id>-<label>` names. Both parts may hold
/// dashes, so every split is tried against the table.
pub fn resolve_schedule(c: &Connection, schedule_id: &str) -> ActionResult<Option<(Business, Offer)>> {
    let Some(rest) = schedule_id.trim().strip_prefix("sch-") else { return Ok(None) };
    for (i, _) in rest.match_indices('-') {
        let (id, label) = (&rest[..i], &rest[i + 1..]);
        if let Some(b) = business(c, id)? {
            if let Some(offer) = b.offer(label).cloned() {
                return Ok(Some((b, offer)));
            }
        }
    }
    Ok(None)
}

/// `[start, end)` of every booking that holds time at `business_id` and overlaps
/// `[from_ms, to_ms)`.
pub fn busy(c: &Connection, business_id: &str, from_ms: i64, to_ms: i64) -> ActionResult<Vec<(i64, i64)>> {
    let mut stmt = c.prepare(&format!(
        "SELECT start_ms, end_ms FROM bookings WHERE business_id = ?1 AND {ACTIVE} AND start_ms < ?3 AND end_ms > ?2"
    ))?;
    let rows = stmt.query_map(params![business_id, from_ms, to_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub struct NewBooking<'a> {
    pub booking: &'a Booking,
    pub label_key: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// Inserts a booking; false when its id is taken (the caller draws another).
pub fn insert_booking(c: &Connection, b: &NewBooking<'_>, now_ms: i64) -> ActionResult<bool> {
    let n = c.execute(
        "INSERT OR IGNORE INTO bookings (booking_id, business_id, label_key, user_phone, status, start_ms, end_ms, date,
             doc, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        params![
            b.booking.booking_id,
            b.booking.slot.business_id,
            b.label_key,
            b.booking.user_phone,
            b.booking.status,
            b.start_ms,
            b.end_ms,
            b.booking.slot.date,
            to_doc(b.booking)?,
            now_ms
        ],
    )?;
    Ok(n == 1)
}

pub fn booking(c: &Connection, booking_id: &str) -> ActionResult<Option<Booking>> {
    let doc: Option<String> =
        c.query_row("SELECT doc FROM bookings WHERE booking_id = ?1", [booking_id], |r| r.get(0)).optional()?;
    doc.map(|d| from_doc("booking", &d)).transpose()
}

/// What to look for among a user's bookings.
#[derive(Default)]
pub struct BookingFilter<'a> {
    pub booking_id: Option<&'a str>,
    pub label: Option<&'a str>,
    pub date: Option<String>,
}

/// The user's `pending`/`confirmed` bookings starting after `after_ms`, soonest first.
pub fn upcoming(c: &Connection, user_phone: &str, after_ms: i64, f: &BookingFilter<'_>) -> ActionResult<Vec<Booking>> {
    let mut stmt = c.prepare(&format!(
        "SELECT doc FROM bookings WHERE user_phone = ?1 AND {ACTIVE} AND start_ms > ?2
           AND (?3 IS NULL OR booking_id = ?3) AND (?4 IS NULL OR label_key = ?4) AND (?5 IS NULL OR date = ?5)
         ORDER BY start_ms, booking_id"
    ))?;
    let docs = stmt
        .query_map(params![user_phone, after_ms, f.booking_id, f.label.map(key), f.date], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    docs.iter().map(|d| from_doc("booking", d)).collect()
}

/// Stores a booking's new status (column and document).
pub fn update_status(c: &Connection, b: &Booking, now_ms: i64) -> ActionResult<()> {
    c.execute(
        "UPDATE bookings SET status = ?2, doc = ?3, updated_at = ?4 WHERE booking_id = ?1",
        params![b.booking_id, b.status, to_doc(b)?, now_ms],
    )?;
    Ok(())
}
