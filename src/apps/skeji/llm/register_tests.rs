use super::*;

fn svc(label: &str, duration_min: u32, price: f64, currency: &str) -> OfferedService {
    OfferedService { label: label.to_string(), duration_min, price, currency: currency.to_string() }
}

fn hrs(days: &[&'static str], open: &str, close: &str) -> Hours {
    Hours { days: days.to_vec(), open: open.to_string(), close: close.to_string() }
}

const SUN_THU: [&str; 5] = ["sun", "mon", "tue", "wed", "thu"];

#[test]
fn patterns_compile() {
    assert_eq!(check(), Ok(()));
}

#[test]
fn the_contract_example() {
    let r = parse("register my business Dana's Salon in Tel Aviv, haircut 45 min 120 ILS, Sun-Thu 9-18").expect("parses");
    assert_eq!(r.name, "Dana's Salon");
    assert_eq!(r.city, "Tel Aviv");
    assert_eq!(r.services, vec![svc("haircut", 45, 120.0, "ILS")]);
    assert_eq!(r.opening_hours, vec![hrs(&SUN_THU, "09:00", "18:00")]);
}

#[test]
fn several_services_and_hour_groups() {
    let r = parse(
        "Register my business Dana\u{2019}s Salon in tel-aviv, haircut 45 min 120 ILS; manicure 30 min 80 NIS and beard trims 20 minutes \u{20aa}50, Sun-Thu 9-18, Fri 9-13",
    )
    .expect("parses");
    assert_eq!(r.name, "Dana's Salon");
    assert_eq!(r.city, "Tel Aviv");
    assert_eq!(
        r.services,
        vec![svc("haircut", 45, 120.0, "ILS"), svc("manicure", 30, 80.0, "ILS"), svc("beard trim", 20, 50.0, "ILS")]
    );
    assert_eq!(r.opening_hours, vec![hrs(&SUN_THU, "09:00", "18:00"), hrs(&["fri"], "09:00", "13:00")]);
}

#[test]
fn day_lists_wraps_and_am_pm() {
    let r = parse("register Barber Bob in Haifa, haircut 30 min 70, Sun, Tue and Thu 10:30-19:00, Fri-Sat 8am-2pm").expect("parses");
    assert_eq!(r.name, "Barber Bob");
    assert_eq!(r.opening_hours, vec![hrs(&["sun", "tue", "thu"], "10:30", "19:00"), hrs(&["fri", "sat"], "08:00", "14:00")]);
    let r = parse("register my salon Nails in Eilat, pedicure 1h 150 ILS, Fri-Sun 9-6").expect("parses");
    assert_eq!(r.opening_hours, vec![hrs(&["sun", "fri", "sat"], "09:00", "18:00")]);
    assert_eq!(r.services, vec![svc("pedicure", 60, 150.0, "ILS")]);
    let r = parse("register business Spa One in Netanya, massage 50 min $40.5, daily 9-21").expect("parses");
    assert_eq!(r.services, vec![svc("massage", 50, 40.5, "USD")]);
    assert_eq!(r.opening_hours, vec![hrs(&DAYS, "09:00", "21:00")]);
}

#[test]
fn city_without_in_or_without_comma() {
    let r = parse("register my business Dana's Salon, Kfar Saba, haircut 45 min 120 ILS, Sun-Thu 9-18").expect("parses");
    assert_eq!(r.city, "Kfar Saba");
    let r = parse("register my business Dana's Salon in TLV haircut 45 min 120 ILS Sun-Thu 9-18").expect("parses");
    assert_eq!((r.name.as_str(), r.city.as_str()), ("Dana's Salon", "Tel Aviv"));
    assert_eq!(r.services, vec![svc("haircut", 45, 120.0, "ILS")]);
    let r = parse("register my business Dana's Salon in Be'er Sheva, coloring 90 min 300 ILS, Sun-Thu 9-18").expect("parses");
    assert_eq!(r.city, "Be'er Sheva");
    assert_eq!(r.services, vec![svc("coloring", 90, 300.0, "ILS")]);
}

#[test]
fn missing_and_unreadable_parts() {
    assert_eq!(
        parse("register my business"),
        Err(RegistrationError::Missing(vec![
            "the business name",
            "the city",
            "services (e.g. haircut 45 min 120 ILS)",
            "opening hours (e.g. Sun-Thu 9-18)"
        ]))
    );
    assert_eq!(
        parse("register my business Dana's Salon in Haifa, haircut 45 min 120 ILS"),
        Err(RegistrationError::Missing(vec!["opening hours (e.g. Sun-Thu 9-18)"]))
    );
    assert_eq!(
        parse("register my business Dana's Salon in Haifa, haircut 45 min 120 ILS, 9-18"),
        Err(RegistrationError::Unreadable("9-18".to_string()))
    );
}

#[test]
fn recognizes_registrations() {
    assert!(is_registration("Register my business X"));
    assert!(is_registration("please register a salon"));
    assert!(!is_registration("book a haircut"));
}
