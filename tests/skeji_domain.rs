//! Skeji's domain services (business-units, schedules, bookings) and the pipeline
//! executor, through the public stage API: stages built from the registry on a temp data
//! dir, fed records, their outputs checked field by field against docs/apps/skeji.md.

#[path = "fixtures/skeji_domain/bookings.rs"]
mod bookings;
#[path = "fixtures/skeji_domain/executor.rs"]
mod executor;
#[path = "fixtures/skeji_domain/harness.rs"]
mod harness;
#[path = "fixtures/skeji_domain/node.rs"]
mod node;

use harness::*;
use jiff::civil::Weekday;
use serde_json::{json, Value};
use weir::stages::StageError;

#[test]
fn seed_loads_once_even_when_built_concurrently() {
    let dir = tempfile::tempdir().expect("tmp");
    let builders: Vec<_> = (0..4)
        .map(|_| {
            let d = dir.path().to_path_buf();
            std::thread::spawn(move || build(&d, "skeji-business-units", json!({"seed": SEED})).map(|_| ()))
        })
        .collect();
    for b in builders {
        b.join().expect("builder thread").expect("stage builds");
    }
    business_units(dir.path());
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM businesses"), 7);
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM business_services"), 9);
    let tlv_haircut = "SELECT COUNT(*) FROM businesses b JOIN business_services s USING (business_id)
                       WHERE s.label_key = 'haircut' AND b.city_key = 'tel aviv'";
    assert_eq!(count(dir.path(), tlv_haircut), 1, "the demo needs exactly one haircut place in Tel Aviv");
}

#[tokio::test]
async fn find_and_get_businesses() {
    let dir = tempfile::tempdir().expect("tmp");
    let bu = business_units(dir.path());
    let found = ok(
        &bu,
        &command("f:0", "business-units", "find_businesses", json!({"service_label": "haircut", "city": "Tel Aviv"})),
    )
    .await;
    assert_eq!(
        found,
        json!({"business_ids": [DANA], "businesses": [{"business_id": DANA, "name": "Dana's Salon", "city": "Tel Aviv",
               "address": "Dizengoff St 120, Tel Aviv", "time_zone": TZ}]})
    );
    let loose = ok(
        &bu,
        &command("f:1", "business-units", "find_businesses", json!({"service_label": " Haircut", "city": "tel-aviv"})),
    )
    .await;
    assert_eq!(loose["business_ids"], json!([DANA]));
    let everywhere =
        ok(&bu, &command("f:2", "business-units", "find_businesses", json!({"service_label": "haircut"}))).await;
    assert_eq!(everywhere["business_ids"], json!(["biz-hfa-carmel-cuts", "biz-jlm-old-city-barber", DANA]));

    let none =
        error_of(&bu, &command("f:3", "business-units", "find_businesses", json!({"service_label": "pedicure"}))).await;
    assert_eq!(none.code, "not_found");
    let missing = error_of(&bu, &command("f:4", "business-units", "find_businesses", json!({"city": "Haifa"}))).await;
    assert_eq!((missing.code.as_str(), missing.message.as_str()), ("invalid", "`service_label` is missing"));

    let dana = ok(&bu, &command("g:0", "business-units", "get_business", json!({"business_id": DANA}))).await;
    let seed: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(SEED).expect("seed")).expect("seed json");
    assert_eq!(dana, seed[0]);
    let unknown =
        error_of(&bu, &command("g:1", "business-units", "get_business", json!({"business_id": "biz-nope"}))).await;
    assert_eq!(unknown.code, "not_found");
}

#[tokio::test]
async fn register_business_emits_its_event_and_refuses_duplicates() {
    let dir = tempfile::tempdir().expect("tmp");
    let bu = business_units(dir.path());
    let params = json!({
        "name": "Eilat Toes", "city": "Eilat", "owner_phone": "+972 50-222-3333",
        "services": [{"label": "pedicure", "duration_min": 50, "price": 150, "currency": "ILS"}],
        "opening_hours": [{"days": ["sun", "mon", "tue", "wed", "thu"], "open": "09:00", "close": "18:00"}]
    });
    let a = ask(&bu, &command("r:0", "business-units", "register_business", params.clone())).await;
    assert_eq!(a.reply.status, "ok");
    let b = &a.reply.result;
    let id = b["business_id"].as_str().expect("business_id");
    assert!(id.starts_with("biz-"), "{id}");
    assert_eq!(b["name"], "Eilat Toes");
    assert_eq!(b["owner_phone"], "972502223333");
    assert_eq!(b["address"], "Eilat");
    assert_eq!(b["time_zone"], TZ);
    assert_eq!(b["services"], params["services"]);
    assert_eq!(a.events.len(), 1);
    assert_eq!(a.events[0].event_type, "business.registered");
    assert_eq!(a.events[0].entity_id, id);
    assert_eq!(&a.events[0].data, b);

    let found = ok(
        &bu,
        &command("r:1", "business-units", "find_businesses", json!({"service_label": "pedicure", "city": "eilat"})),
    )
    .await;
    assert_eq!(found["business_ids"], json!([id]));

    let mut again = params.clone();
    again["name"] = json!("EILAT toes");
    let dup = error_of(&bu, &command("r:2", "business-units", "register_business", again)).await;
    assert_eq!(dup.code, "conflict");
    assert_eq!(dup.details["business_id"], json!(id));

    let mut no_hours = params.clone();
    no_hours["name"] = json!("Other");
    no_hours.as_object_mut().expect("object").remove("opening_hours");
    assert_eq!(error_of(&bu, &command("r:3", "business-units", "register_business", no_hours)).await.code, "invalid");
    let mut bad_tz = params.clone();
    bad_tz["name"] = json!("Other");
    bad_tz["time_zone"] = json!("Mars/Olympus");
    assert_eq!(error_of(&bu, &command("r:4", "business-units", "register_business", bad_tz)).await.code, "invalid");
    let mut bad_day = params;
    bad_day["name"] = json!("Other");
    bad_day["opening_hours"][0]["days"] = json!(["someday"]);
    assert_eq!(error_of(&bu, &command("r:5", "business-units", "register_business", bad_day)).await.code, "invalid");
    assert_eq!(count(dir.path(), "SELECT COUNT(*) FROM businesses"), 8);
}

#[tokio::test]
async fn search_availability_exact_time_range_and_alternatives() {
    let dir = tempfile::tempdir().expect("tmp");
    business_units(dir.path());
    let sch = schedules(dir.path());
    let d = date_in(2);

    let at3 = ok(&sch, &search("s:0", d, json!({"time": "15:00", "business_ids": [DANA]}))).await;
    assert_eq!(at3, dana_slot(d, "15:00"));
    let by_city = ok(&sch, &search("s:1", d, json!({"time": "15:00", "city": "Tel Aviv"}))).await;
    assert_eq!(by_city, dana_slot(d, "15:00"));

    let morning =
        ok(&sch, &search("s:2", d, json!({"time_from": "09:00", "time_to": "10:00", "business_ids": DANA}))).await;
    assert_eq!(morning["date"], json!(d.to_string()));
    assert_eq!(morning["service_label"], "haircut");
    assert_eq!(times(&morning["slots"]), ["09:00", "09:15", "09:30", "09:45"]);
    assert_eq!(morning["slots"][0], dana_slot(d, "09:00"));
    let two = ok(&sch, &search("s:3", d, json!({"time_from": "09:00", "business_ids": [DANA], "limit": 2}))).await;
    assert_eq!(times(&two["slots"]), ["09:00", "09:15"]);
    // Closing at 20:00: a 45-minute haircut starts at 19:15 at the latest.
    let evening = ok(&sch, &search("s:4", d, json!({"time_from": "19:00", "business_ids": [DANA]}))).await;
    assert_eq!(times(&evening["slots"]), ["19:00", "19:15"]);

    // Off the 15-minute grid: the nearest slots that day instead.
    let off = error_of(&sch, &search("s:5", d, json!({"time": "15:10", "business_ids": [DANA]}))).await;
    assert_eq!(off.code, "no_slot");
    assert_eq!(off.details["requested"], json!({"date": d.to_string(), "time": "15:10"}));
    assert_eq!(times(&off.details["alternatives"]), ["15:15", "15:00", "15:30"]);

    // Carmel Cuts (Haifa) is closed on Saturdays: alternatives on Sunday, nearest to 10:00.
    let saturday = next_weekday(2, Weekday::Saturday);
    let closed =
        error_of(&sch, &search("s:6", saturday, json!({"time": "10:00", "business_ids": ["biz-hfa-carmel-cuts"]})))
            .await;
    assert_eq!(closed.code, "no_slot");
    let alts = &closed.details["alternatives"];
    assert_eq!(times(alts), ["10:00", "09:45", "10:15"]);
    let sunday = saturday.tomorrow().expect("sunday").to_string();
    assert!(alts.as_array().expect("alternatives").iter().all(|s| s["date"] == json!(sunday) && s["city"] == "Haifa"));
    let closed_range =
        error_of(&sch, &search("s:7", saturday, json!({"time_from": "12:00", "time_to": "13:00", "city": "Haifa"})))
            .await;
    assert_eq!(closed_range.code, "no_slot");
    // Without a time: the earliest in the range on the next open day.
    assert_eq!(times(&closed_range.details["alternatives"]), ["12:00", "12:15", "12:30"]);

    assert_eq!(error_of(&sch, &search("s:8", d, json!({"city": "Eilat"}))).await.code, "not_found");
    assert_eq!(error_of(&sch, &search("s:9", d, json!({"time": "3pm"}))).await.code, "invalid");
    assert_eq!(error_of(&sch, &search("s:10", d, json!({"limit": 0}))).await.code, "invalid");
    let bad_date =
        command("s:11", "schedules", "search_availability", json!({"service_label": "haircut", "date": "24/11"}));
    assert_eq!(error_of(&sch, &bad_date).await.code, "invalid");
}

#[tokio::test]
async fn unknown_actions_and_bad_records_are_dead_lettered() {
    let dir = tempfile::tempdir().expect("tmp");
    let bu = business_units(dir.path());
    let unknown = command("u:0", "business-units", "delete_everything", json!({}));
    match handle(&bu, "pipeline-executor-to-business-units", &unknown).await {
        Err(StageError::Permanent(m)) => assert!(m.contains("delete_everything"), "{m}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
    let garbage = handle(&bu, "pipeline-executor-to-business-units", &json!({"not": "a command"})).await;
    assert!(matches!(garbage, Err(StageError::Permanent(_))));
    assert!(build(dir.path(), "skeji-bookings", json!({"auto_approve": true, "typo": 1})).is_err());
    assert!(build(dir.path(), "skeji-schedules", json!({"seed": "x"})).is_err());
    assert!(build(dir.path(), "skeji-business-units", json!({"seed": "examples/skeji/missing.json"})).is_err());
}
