use super::*;
use crate::apps::skeji::llm::validate::check_plan;
use crate::apps::skeji::model::Step;
use jiff::civil::{date, time};
use serde_json::{json, Value};

const PHONE: &str = "972501234567";

/// Monday 2026-11-23, 10:00 local.
fn monday() -> LocalNow {
    LocalNow { date: date(2026, 11, 23), time: time(10, 0, 0, 0) }
}

fn run(text: &str) -> Plan {
    run_at(text, &monday())
}

fn run_at(text: &str, now: &LocalNow) -> Plan {
    let p = plan(text, PHONE, now);
    if let Err(e) = check_plan(&p) {
        panic!("{text:?} planned an invalid {p:?}: {e}");
    }
    p
}

fn steps(p: &Plan) -> Vec<(String, String, Value)> {
    p.pipeline.iter().map(|s: &Step| (s.service.clone(), s.action.clone(), Value::Object(s.params.clone()))).collect()
}

fn one(service: &str, action: &str, params: Value) -> Vec<(String, String, Value)> {
    vec![(service.to_string(), action.to_string(), params)]
}

fn book(city: Option<&str>, service: &str, date: &str, time: &str) -> Vec<(String, String, Value)> {
    let mut find = json!({"service_label": service});
    if let Some(c) = city {
        find["city"] = json!(c);
    }
    vec![
        ("business-units".into(), "find_businesses".into(), find),
        (
            "schedules".into(),
            "search_availability".into(),
            json!({"business_ids": "${previous_step.business_ids}", "service_label": service, "date": date, "time": time}),
        ),
        (
            "bookings".into(),
            "create_booking".into(),
            json!({"schedule_id": "${previous_step.schedule_id}", "start_time": "${previous_step.start_time}", "user_phone": PHONE}),
        ),
    ]
}

fn avail(service: &str, date: &str, from: &str, to: &str, city: Option<&str>) -> Vec<(String, String, Value)> {
    let mut params = json!({"service_label": service, "date": date, "time_from": from, "time_to": to});
    if let Some(c) = city {
        params["city"] = json!(c);
    }
    one("schedules", "search_availability", params)
}

#[test]
fn bookings() {
    let cases = [
        ("book a haircut in Tel Aviv tomorrow at 3pm", book(Some("Tel Aviv"), "haircut", "2026-11-24", "15:00")),
        ("Hi, book a haircut in Tel Aviv tomorrow at 3pm", book(Some("Tel Aviv"), "haircut", "2026-11-24", "15:00")),
        ("HI!! Please BOOK a HAIRCUT in tel-aviv tomorrow at 3 pm.", book(Some("Tel Aviv"), "haircut", "2026-11-24", "15:00")),
        ("manicure on Friday 15:30 in Haifa", book(Some("Haifa"), "manicure", "2026-11-27", "15:30")),
        // 18/11 has passed this year (received 2026-11-23): next year's.
        ("massage 18/11 at 10:00", book(None, "massage", "2027-11-18", "10:00")),
        ("massage 25/11 at 10", book(None, "massage", "2026-11-25", "10:00")),
        ("I'd like a pedicure in TLV the day after tomorrow at noon", book(Some("Tel Aviv"), "pedicure", "2026-11-25", "12:00")),
        ("book 2 facials on 2026-11-24 at 9am in Jerusalem", book(Some("Jerusalem"), "facial", "2026-11-24", "09:00")),
        ("beard trim at 3 in ramat-gan", book(Some("Ramat Gan"), "beard trim", "2026-11-23", "15:00")),
        // The time has passed today: tomorrow.
        ("book a haircut at 9am", book(None, "haircut", "2026-11-24", "09:00")),
        ("book a haircut monday at 9am", book(None, "haircut", "2026-11-30", "09:00")),
        ("book a haircut monday 12pm in be'er sheva", book(Some("Be'er Sheva"), "haircut", "2026-11-23", "12:00")),
        ("book a haircut tomorrow at 12am", book(None, "haircut", "2026-11-24", "00:00")),
        ("Can I get a massage on Sunday at 11?", book(None, "massage", "2026-11-29", "11:00")),
        ("haircut tmrw 4pm please", book(None, "haircut", "2026-11-24", "16:00")),
        ("book a haircut at 3:30 in Herzliya", book(Some("Herzliya"), "haircut", "2026-11-23", "15:30")),
        ("book pedicure next sunday 10am", book(None, "pedicure", "2026-11-29", "10:00")),
        ("book a haircut on the 25th at 11", book(None, "haircut", "2026-11-25", "11:00")),
    ];
    for (text, want) in cases {
        let p = run(text);
        assert_eq!(p.intent, Intent::Book, "{text}");
        assert_eq!(steps(&p), want, "{text}");
        assert_eq!(p.reply, None, "{text}");
    }
}

#[test]
fn availability_questions() {
    let cases = [
        ("any haircut slots tomorrow afternoon?", avail("haircut", "2026-11-24", "12:00", "18:00", None)),
        ("Any free manicure slots tomorrow morning in Haifa?", avail("manicure", "2026-11-24", "08:00", "12:00", Some("Haifa"))),
        ("massage availability friday evening", avail("massage", "2026-11-27", "17:00", "21:00", None)),
        ("any haircut slots tomorrow?", avail("haircut", "2026-11-24", "00:00", "23:59", None)),
        ("any slots for a manicure on 1/12?", avail("manicure", "2026-12-01", "00:00", "23:59", None)),
        ("what appointments are available tomorrow for a haircut", avail("haircut", "2026-11-24", "00:00", "23:59", None)),
        ("any haircut slots tomorrow at 3pm?", avail("haircut", "2026-11-24", "15:00", "16:00", None)),
        // Today: from now on, rounded up to the quarter hour.
        ("any haircut slots today?", avail("haircut", "2026-11-23", "10:00", "23:59", None)),
        ("is there a facial this afternoon", avail("facial", "2026-11-23", "12:00", "18:00", None)),
        // A booking without an exact time shows the day's free slots.
        ("book a haircut tomorrow", avail("haircut", "2026-11-24", "00:00", "23:59", None)),
        ("book a haircut tomorrow afternoon in Netanya", avail("haircut", "2026-11-24", "12:00", "18:00", Some("Netanya"))),
    ];
    for (text, want) in cases {
        let p = run(text);
        assert_eq!(p.intent, Intent::Availability, "{text}");
        assert_eq!(steps(&p), want, "{text}");
    }
    let late = LocalNow { date: date(2026, 11, 23), time: time(13, 7, 30, 0) };
    assert_eq!(steps(&run_at("any haircut slots today?", &late)), avail("haircut", "2026-11-23", "13:15", "23:59", None));
    assert_eq!(steps(&run_at("any haircut slots this afternoon?", &late)), avail("haircut", "2026-11-23", "13:15", "18:00", None));
    // The morning is over: tomorrow morning.
    assert_eq!(steps(&run_at("any haircut slots in the morning?", &late)), avail("haircut", "2026-11-24", "08:00", "12:00", None));
}

#[test]
fn cancellations_lists_approvals() {
    let cases = [
        ("cancel my booking", Intent::Cancel, one("bookings", "cancel_booking", json!({"user_phone": PHONE}))),
        (
            "cancel my haircut tomorrow",
            Intent::Cancel,
            one("bookings", "cancel_booking", json!({"user_phone": PHONE, "service_label": "haircut", "date": "2026-11-24"})),
        ),
        ("Please cancel B-7Q2K", Intent::Cancel, one("bookings", "cancel_booking", json!({"user_phone": PHONE, "booking_id": "B-7Q2K"}))),
        ("what are my bookings?", Intent::List, one("bookings", "list_bookings", json!({"user_phone": PHONE}))),
        ("Show my appointments", Intent::List, one("bookings", "list_bookings", json!({"user_phone": PHONE}))),
        ("I want to see my bookings", Intent::List, one("bookings", "list_bookings", json!({"user_phone": PHONE}))),
        ("do I have any appointments?", Intent::List, one("bookings", "list_bookings", json!({"user_phone": PHONE}))),
        ("approve B-7Q2K", Intent::Approve, one("bookings", "confirm_booking", json!({"booking_id": "B-7Q2K", "owner_phone": PHONE}))),
        ("Approve b-9x1z please", Intent::Approve, one("bookings", "confirm_booking", json!({"booking_id": "B-9X1Z", "owner_phone": PHONE}))),
    ];
    for (text, intent, want) in cases {
        let p = run(text);
        assert_eq!(p.intent, intent, "{text}");
        assert_eq!(steps(&p), want, "{text}");
    }
}

#[test]
fn registration() {
    let p = run("register my business Dana's Salon in Tel Aviv, haircut 45 min 120 ILS, Sun-Thu 9-18");
    assert_eq!(p.intent, Intent::RegisterBusiness);
    assert_eq!(
        steps(&p),
        one(
            "business-units",
            "register_business",
            json!({
                "name": "Dana's Salon",
                "city": "Tel Aviv",
                "owner_phone": PHONE,
                "services": [{"label": "haircut", "duration_min": 45, "price": 120, "currency": "ILS"}],
                "opening_hours": [{"days": ["sun", "mon", "tue", "wed", "thu"], "open": "09:00", "close": "18:00"}],
            })
        )
    );
    let p = run("register my business Dana's Salon in Haifa");
    assert_eq!(p.intent, Intent::Help);
    let reply = p.reply.expect("reply");
    assert!(reply.contains("services") && reply.contains("opening hours") && reply.contains("register my business"), "{reply}");
}

#[test]
fn help_for_everything_else() {
    for text in ["hi", "", "what's the weather?", "\u{05e9}\u{05dc}\u{05d5}\u{05dd}, \u{05d0}\u{05e0}\u{05d9} \u{05e8}\u{05d5}\u{05e6}\u{05d4} \u{05ea}\u{05d5}\u{05e8}", "thanks!"] {
        let p = run(text);
        assert_eq!(p.intent, Intent::Help, "{text}");
        assert!(p.pipeline.is_empty());
        assert_eq!(p.reply.as_deref(), Some(help_text().as_str()), "{text}");
    }
    let help = help_text();
    for example in ["book a haircut in Tel Aviv tomorrow at 3pm", "what are my bookings?", "approve B-7Q2K", "haircut", "Tel Aviv"] {
        assert!(help.contains(example), "help lacks {example:?}:\n{help}");
    }
}

#[test]
fn clarifications() {
    let p = run("book something tomorrow at 3pm");
    assert_eq!(p.intent, Intent::Help);
    assert!(p.reply.as_deref().is_some_and(|r| r.starts_with("Which service")), "{p:?}");
    let p = run("approve it");
    assert!(p.reply.as_deref().is_some_and(|r| r.contains("approve B-7Q2K")), "{p:?}");
    let p = run("book a haircut on 31/11 at 10:00");
    assert_eq!(p.reply.as_deref(), Some(NO_SUCH_DATE));
}

#[tokio::test]
async fn provider_resolves_in_the_business_time_zone() {
    let tz = TimeZone::get("Asia/Jerusalem").expect("tz");
    let rules = RulesProvider::new(tz).expect("rules");
    // 2026-11-23T22:30Z is Tuesday 00:30 in Jerusalem: "tomorrow" is Wednesday there,
    // though it is still Monday in UTC.
    let received_at = "2026-11-23T22:30:00Z".parse::<jiff::Timestamp>().expect("ts").as_millisecond();
    let input = LlmInput {
        text: "book a haircut tomorrow at 3pm".into(),
        language: "en".into(),
        last_intent: None,
        user_phone: PHONE.into(),
        received_at,
    };
    let p = rules.plan(&input).await.expect("plan");
    assert_eq!(p.pipeline[1].params["date"], json!("2026-11-25"));
    assert_eq!(rules.name(), "rules");
}

#[test]
fn quarter_hours() {
    let q = |h, m, s| next_quarter(time(h, m, s, 0)).map(fmt_time);
    assert_eq!(q(10, 0, 0).as_deref(), Some("10:00"));
    assert_eq!(q(10, 0, 1).as_deref(), Some("10:15"));
    assert_eq!(q(10, 46, 0).as_deref(), Some("11:00"));
    assert_eq!(q(23, 50, 0), None);
}
