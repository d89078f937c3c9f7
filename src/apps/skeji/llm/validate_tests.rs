use super::*;
use serde_json::json;

const PHONE: &str = "972501234567";

fn model(v: Value) -> Result<Plan, LlmError> {
    plan_from_model(&v.to_string(), PHONE)
}

fn book_output() -> Value {
    json!({
        "intent": "book",
        "language": "en",
        "pipeline": [
            {"service": "business-units", "action": "find_businesses", "params": {"service_label": "haircut", "city": "Tel Aviv"}},
            {"service": "schedules", "action": "search_availability", "params": {
                "business_ids": "${previous_step.business_ids}", "service_label": "haircut", "date": "2026-11-24", "time": "15:00",
                "time_from": null, "time_to": null, "city": null, "limit": null}},
            {"service": "bookings", "action": "create_booking", "params": {
                "schedule_id": "${previous_step.schedule_id}", "start_time": "${previous_step.start_time}", "user_phone": "972000000000"}},
        ],
        "reply": null,
    })
}

fn invalid(v: Value) -> String {
    match model(v) {
        Err(LlmError::Permanent(m)) => m,
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[test]
fn a_valid_booking_with_nulls_dropped_and_the_phone_set() {
    let p = model(book_output()).expect("valid");
    assert_eq!(p.intent, Intent::Book);
    assert_eq!(p.pipeline.len(), 3);
    assert!(!p.pipeline[1].params.contains_key("time_from"));
    // Whatever the model wrote, the sender's phone is used.
    assert_eq!(p.pipeline[2].params["user_phone"], json!(PHONE));
    assert_eq!(p.reply, None);
}

#[test]
fn help_needs_a_reply_and_no_steps() {
    let p = model(json!({"intent": "help", "language": "he", "pipeline": [], "reply": "Hello!"})).expect("valid");
    assert_eq!(p, Plan::help("Hello!"));
    let m = invalid(json!({"intent": "help", "pipeline": [], "reply": " "}));
    assert!(m.contains("needs a reply"), "{m}");
}

#[test]
fn registrations_are_checked_deeply() {
    let reg = |services: Value, hours: Value| {
        json!({"intent": "register_business", "pipeline": [{"service": "business-units", "action": "register_business", "params": {
            "name": "Dana's Salon", "city": "Tel Aviv", "services": services, "opening_hours": hours, "address": null, "time_zone": null}}]})
    };
    let good_services = json!([{"label": "haircut", "duration_min": 45, "price": 120, "currency": "ILS"}]);
    let good_hours = json!([{"days": ["sun", "mon"], "open": "09:00", "close": "18:00"}]);
    let p = model(reg(good_services.clone(), good_hours.clone())).expect("valid");
    assert_eq!(p.pipeline[0].params["owner_phone"], json!(PHONE));
    let m = invalid(reg(json!([{"label": "haircut", "duration_min": 45, "price": 120, "currency": "shekels"}]), good_hours.clone()));
    assert!(m.contains("currency"), "{m}");
    let m = invalid(reg(good_services.clone(), json!([{"days": ["sunday"], "open": "09:00", "close": "18:00"}])));
    assert!(m.contains("days"), "{m}");
    let m = invalid(reg(good_services, json!([{"days": ["sun"], "open": "9", "close": "18:00"}])));
    assert!(m.contains("HH:MM"), "{m}");
}

#[test]
fn contract_violations_are_invalid_output() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"intent": "order_pizza", "pipeline": []}), "unknown intent `order_pizza`"),
        (
            json!({"intent": "list", "pipeline": [{"service": "payments", "action": "list_bookings", "params": {}}]}),
            "unknown service `payments`",
        ),
        (
            json!({"intent": "list", "pipeline": [{"service": "bookings", "action": "drop_tables", "params": {}}]}),
            "unknown action `bookings.drop_tables`",
        ),
        (
            json!({"intent": "list", "pipeline": [{"service": "bookings", "action": "cancel_booking", "params": {}}]}),
            "intent `list` needs bookings.list_bookings, got bookings.cancel_booking",
        ),
        (
            json!({"intent": "cancel", "pipeline": [{"service": "bookings", "action": "cancel_booking", "params": {"date": "tomorrow"}}]}),
            "expected a date YYYY-MM-DD",
        ),
        (
            json!({"intent": "cancel", "pipeline": [{"service": "bookings", "action": "cancel_booking", "params": {"reason": "x"}}]}),
            "unknown param `reason`",
        ),
        (
            json!({"intent": "availability", "pipeline": [{"service": "schedules", "action": "search_availability",
                "params": {"service_label": "haircut", "date": "${previous_step.date}"}}]}),
            "first step",
        ),
        (
            json!({"intent": "availability", "pipeline": [{"service": "schedules", "action": "search_availability",
                "params": {"service_label": "haircut"}}]}),
            "missing param `date`",
        ),
        (json!({"intent": "book", "pipeline": []}), "intent `book` needs business-units.find_businesses"),
        (json!(["not", "an", "object"]), "not the expected JSON object"),
    ];
    for (output, want) in cases {
        let m = invalid(output.clone());
        assert!(m.starts_with("invalid LLM output: "), "{m}");
        assert!(m.contains(want), "{output}: {m:?} lacks {want:?}");
    }
    let m = match plan_from_model("Sure! Here is your booking.", PHONE) {
        Err(LlmError::Permanent(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(m.contains("invalid LLM output"), "{m}");
}

#[test]
fn a_reply_on_a_pipeline_is_dropped() {
    let mut out = book_output();
    out["reply"] = json!("Booking now!");
    assert_eq!(model(out).expect("valid").reply, None);
}
