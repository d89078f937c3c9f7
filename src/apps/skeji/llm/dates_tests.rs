use super::*;
use jiff::civil::{date, time};

/// Monday 2026-11-23 at the given local time.
fn monday(h: i8, m: i8) -> LocalNow {
    LocalNow { date: date(2026, 11, 23), time: time(h, m, 0, 0) }
}

fn on(d: Date, h: i8, m: i8) -> LocalNow {
    LocalNow { date: d, time: time(h, m, 0, 0) }
}

fn resolve_text(text: &str, now: &LocalNow) -> Option<String> {
    let t = find_time(text);
    resolve(find_date(text), t, now).map(fmt_date)
}

#[test]
fn patterns_compile() {
    assert_eq!(check(), Ok(()));
}

#[test]
fn local_now_uses_the_business_time_zone() {
    let tz = TimeZone::get("Asia/Jerusalem").expect("tz");
    // 2026-11-23T22:30:00Z is already Tuesday 00:30 in Jerusalem (UTC+2).
    let ms = "2026-11-23T22:30:00Z".parse::<jiff::Timestamp>().expect("ts").as_millisecond();
    let now = LocalNow::at(ms, &tz).expect("now");
    assert_eq!(fmt_date(now.date), "2026-11-24");
    assert_eq!(fmt_time(now.time), "00:30");
    let utc = LocalNow::at(ms, &TimeZone::UTC).expect("now");
    assert_eq!(fmt_date(utc.date), "2026-11-23");
}

#[test]
fn times() {
    let cases = [
        ("at 3pm", Some("15:00")),
        ("at 3 pm", Some("15:00")),
        ("3 p.m.", Some("15:00")),
        ("3:30pm", Some("15:30")),
        ("3.30 pm", Some("15:30")),
        ("11am", Some("11:00")),
        ("12am", Some("00:00")),
        ("12pm", Some("12:00")),
        ("12:30 am", Some("00:30")),
        ("15:30", Some("15:30")),
        ("friday 15:30 in haifa", Some("15:30")),
        ("at 10:00", Some("10:00")),
        ("at 3:30", Some("15:30")),
        ("7:45", Some("19:45")),
        ("07:45", Some("07:45")),
        ("9:15", Some("09:15")),
        ("0:30", Some("00:30")),
        ("at 10", Some("10:00")),
        ("at 3", Some("15:00")),
        ("at 7 o'clock", Some("19:00")),
        ("at 8", Some("08:00")),
        ("at 20", Some("20:00")),
        ("at noon", Some("12:00")),
        ("midnight", Some("00:00")),
        ("massage 18/11 at 10:00", Some("10:00")),
        ("on 18/11", None),
        ("at 18/11", None),
        ("this afternoon", None),
        ("25:00", None),
        ("13pm", None),
        ("at 24", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(find_time(text).map(fmt_time).as_deref(), want, "{text:?}");
    }
}

#[test]
fn day_parts() {
    assert_eq!(find_day_part("tomorrow afternoon"), Some(DayPart::Afternoon));
    assert_eq!(find_day_part("in the morning"), Some(DayPart::Morning));
    assert_eq!(find_day_part("this evening"), Some(DayPart::Evening));
    assert_eq!(find_day_part("tonight"), Some(DayPart::Evening));
    assert_eq!(find_day_part("at noon"), None);
    let (from, to) = DayPart::Afternoon.window();
    assert_eq!((fmt_time(from), fmt_time(to)), ("12:00".to_string(), "18:00".to_string()));
    let (from, to) = DayPart::Evening.window();
    assert_eq!((fmt_time(from), fmt_time(to)), ("17:00".to_string(), "21:00".to_string()));
}

#[test]
fn dates_from_monday_morning() {
    let now = monday(10, 0);
    let cases = [
        ("today", Some("2026-11-23")),
        ("tonight", Some("2026-11-23")),
        ("tomorrow at 3pm", Some("2026-11-24")),
        ("tmrw", Some("2026-11-24")),
        ("the day after tomorrow", Some("2026-11-25")),
        ("day after tomorrow at 10", Some("2026-11-25")),
        ("on friday 15:30", Some("2026-11-27")),
        ("fri", Some("2026-11-27")),
        ("sunday", Some("2026-11-29")),
        ("next wednesday", Some("2026-11-25")),
        ("this thursday", Some("2026-11-26")),
        // Monday named on a Monday: today while the time is ahead, else next week.
        ("monday at 3pm", Some("2026-11-23")),
        ("monday at 9am", Some("2026-11-30")),
        ("monday", Some("2026-11-23")),
        ("next monday", Some("2026-11-30")),
        ("18/11", Some("2027-11-18")),
        ("25/11", Some("2026-11-25")),
        ("23/11", Some("2026-11-23")),
        ("1/1", Some("2027-01-01")),
        ("18.11", Some("2027-11-18")),
        ("18/11/2026", Some("2026-11-18")),
        ("24/11/26", Some("2026-11-24")),
        ("2026-11-24", Some("2026-11-24")),
        ("24 nov", Some("2026-11-24")),
        ("24th of november", Some("2026-11-24")),
        ("december 1st", Some("2026-12-01")),
        ("dec 1 2027", Some("2027-12-01")),
        ("the 24th", Some("2026-11-24")),
        ("the 20th", Some("2026-12-20")),
        ("31/11", None),
        ("30/02", None),
        // No date: today while the time is ahead, else tomorrow.
        ("at 3pm", Some("2026-11-23")),
        ("at 9am", Some("2026-11-24")),
        ("", Some("2026-11-23")),
    ];
    for (text, want) in cases {
        assert_eq!(resolve_text(text, &now).as_deref(), want, "{text:?}");
    }
}

#[test]
fn month_and_year_rollover() {
    let eom = on(date(2026, 11, 30), 12, 0);
    assert_eq!(resolve_text("tomorrow", &eom).as_deref(), Some("2026-12-01"));
    let eoy = on(date(2026, 12, 31), 12, 0);
    assert_eq!(resolve_text("tomorrow", &eoy).as_deref(), Some("2027-01-01"));
    assert_eq!(resolve_text("the day after tomorrow", &eoy).as_deref(), Some("2027-01-02"));
    assert_eq!(resolve_text("friday", &eoy).as_deref(), Some("2027-01-01"));
    assert_eq!(resolve_text("5/1", &eoy).as_deref(), Some("2027-01-05"));
    assert_eq!(resolve_text("the 31st", &on(date(2026, 11, 15), 9, 0)).as_deref(), Some("2026-12-31"));
    assert_eq!(resolve_text("at 9am", &eoy).as_deref(), Some("2027-01-01"));
    // 29/02 exists in 2028 only.
    assert_eq!(resolve_text("29/02", &on(date(2027, 3, 1), 9, 0)).as_deref(), Some("2028-02-29"));
}

#[test]
fn weekday_today_with_a_part_of_the_day() {
    // Friday 19:00: "Friday afternoon" is over (ends 18:00) → next Friday.
    let fri = on(date(2026, 11, 27), 19, 0);
    let end = DayPart::Afternoon.window().1;
    assert_eq!(resolve(find_date("friday afternoon"), Some(end), &fri).map(fmt_date).as_deref(), Some("2026-12-04"));
    let end = DayPart::Evening.window().1;
    assert_eq!(resolve(find_date("friday evening"), Some(end), &fri).map(fmt_date).as_deref(), Some("2026-11-27"));
}

#[test]
fn numbers_that_are_not_dates() {
    assert_eq!(find_date("3.30pm"), None);
    assert_eq!(find_date("at 10.30 am"), None);
    assert_eq!(find_date("45 min 120 ils"), None);
    assert_eq!(find_date("may i book"), None);
}
