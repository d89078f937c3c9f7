//! The action catalogue and the intents of `docs/apps/skeji.md`, as data: the one place the
//! OpenAI system prompt, its JSON schema and the output validation are generated from.
//! Change the contract here and all three follow.

use super::provider::Intent;

/// The domain services a step may address.
pub const SERVICES: [&str; 3] = ["business-units", "schedules", "bookings"];

/// The shape of a param value. Any param of a step after the first may instead be a
/// `${previous_step.FIELD}` reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A non-empty string.
    Text,
    /// `YYYY-MM-DD`.
    Date,
    /// `HH:MM`.
    Time,
    /// RFC 3339 with offset.
    Instant,
    /// A positive integer.
    Count,
    /// An array of strings.
    TextList,
    /// `[{label, duration_min, price, currency}]`.
    Services,
    /// `[{days: ["sun", …], open: "HH:MM", close: "HH:MM"}]`.
    OpeningHours,
}

/// Who fills a param.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The provider (model or rules) from the message.
    Message,
    /// Always the sender's phone, set by code: a model is never trusted with whose
    /// bookings it touches (a prompt could name someone else's number).
    UserPhone,
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub required: bool,
    pub fill: Fill,
    pub doc: &'static str,
}

const fn req(name: &'static str, kind: ParamKind, doc: &'static str) -> ParamSpec {
    ParamSpec { name, kind, required: true, fill: Fill::Message, doc }
}

const fn opt(name: &'static str, kind: ParamKind, doc: &'static str) -> ParamSpec {
    ParamSpec { name, kind, required: false, fill: Fill::Message, doc }
}

const fn phone(name: &'static str) -> ParamSpec {
    ParamSpec { name, kind: ParamKind::Text, required: true, fill: Fill::UserPhone, doc: "the sender's phone (set by the system)" }
}

#[derive(Debug, Clone, Copy)]
pub struct ActionSpec {
    pub service: &'static str,
    pub action: &'static str,
    pub params: &'static [ParamSpec],
    /// The result fields, for `${previous_step.*}` references.
    pub result: &'static str,
}

impl ActionSpec {
    pub fn param(&self, name: &str) -> Option<&'static ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    /// `service.action`, as the prompt and errors name it.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.service, self.action)
    }
}

use ParamKind::*;

pub const ACTIONS: &[ActionSpec] = &[
    ActionSpec {
        service: "business-units",
        action: "find_businesses",
        params: &[req("service_label", Text, "the service, e.g. haircut"), opt("city", Text, "canonical city name")],
        result: "{business_ids: [..], businesses: [{business_id, name, city, address, time_zone}]}",
    },
    ActionSpec {
        service: "business-units",
        action: "register_business",
        params: &[
            req("name", Text, "the business name as written"),
            req("city", Text, "canonical city name"),
            phone("owner_phone"),
            req("services", Services, "[{label, duration_min, price, currency}], currency like ILS"),
            req("opening_hours", OpeningHours, "[{days: [\"sun\",…], open: \"09:00\", close: \"18:00\"}]"),
            opt("address", Text, "street address"),
            opt("time_zone", Text, "IANA zone, default Asia/Jerusalem"),
        ],
        result: "the business with its business_id",
    },
    ActionSpec {
        service: "business-units",
        action: "get_business",
        params: &[req("business_id", Text, "the business id")],
        result: "the business",
    },
    ActionSpec {
        service: "schedules",
        action: "search_availability",
        params: &[
            req("service_label", Text, "the service"),
            req("date", Date, "YYYY-MM-DD"),
            opt("time", Time, "HH:MM, an exact start time (booking)"),
            opt("time_from", Time, "HH:MM, start of a window"),
            opt("time_to", Time, "HH:MM, end of a window"),
            opt("business_ids", TextList, "only these businesses"),
            opt("city", Text, "canonical city name"),
            opt("limit", Count, "how many slots, default 5"),
        ],
        result: "with time: a slot {schedule_id, business_id, business_name, address, city, service_label, date, time, start_time, end_time, duration_min, price, currency}; without: {date, service_label, slots: [slot, …]}",
    },
    ActionSpec {
        service: "bookings",
        action: "create_booking",
        params: &[req("schedule_id", Text, "sch-<business_id>-<service_label>"), req("start_time", Instant, "RFC 3339 with offset"), phone("user_phone")],
        result: "the booking {booking_id, status, …slot}",
    },
    ActionSpec {
        service: "bookings",
        action: "confirm_booking",
        params: &[req("booking_id", Text, "B- followed by letters/digits, upper case"), phone("owner_phone")],
        result: "the booking, now confirmed",
    },
    ActionSpec {
        service: "bookings",
        action: "cancel_booking",
        params: &[
            phone("user_phone"),
            opt("booking_id", Text, "B-…, when given"),
            opt("service_label", Text, "the service, when given"),
            opt("date", Date, "YYYY-MM-DD, when given"),
        ],
        result: "the cancelled booking",
    },
    ActionSpec {
        service: "bookings",
        action: "list_bookings",
        params: &[phone("user_phone")],
        result: "{bookings: [booking, …]}",
    },
];

pub fn action(service: &str, action: &str) -> Option<&'static ActionSpec> {
    ACTIONS.iter().find(|a| a.service == service && a.action == action)
}

/// What an intent means and the exact steps its pipeline has.
#[derive(Debug, Clone, Copy)]
pub struct IntentSpec {
    pub intent: Intent,
    /// What the intent does, for the help text.
    pub title: &'static str,
    pub when: &'static str,
    /// An example message, shown in the prompt and the help text.
    pub example: &'static str,
    /// `(service, action)` of each step, in order; empty for help.
    pub steps: &'static [(&'static str, &'static str)],
    /// How to fill the params where it is not obvious.
    pub notes: &'static str,
}

pub const INTENTS: &[IntentSpec] = &[
    IntentSpec {
        intent: Intent::Book,
        title: "Book an appointment",
        when: "the user wants to book a service at a given date and exact time",
        example: "book a haircut in Tel Aviv tomorrow at 3pm",
        steps: &[("business-units", "find_businesses"), ("schedules", "search_availability"), ("bookings", "create_booking")],
        notes: "step 2 gets business_ids \"${previous_step.business_ids}\", service_label, date, time; step 3 gets schedule_id \"${previous_step.schedule_id}\" and start_time \"${previous_step.start_time}\". city is null when none is named. Without an exact time use availability instead.",
    },
    IntentSpec {
        intent: Intent::Availability,
        title: "See free slots",
        when: "the user asks which slots are free",
        example: "any haircut slots tomorrow afternoon?",
        steps: &[("schedules", "search_availability")],
        notes: "service_label, date, time_from, time_to (morning 08:00-12:00, afternoon 12:00-18:00, evening 17:00-21:00, whole day 00:00-23:59), city null unless named.",
    },
    IntentSpec {
        intent: Intent::Cancel,
        title: "Cancel a booking",
        when: "the user wants to cancel a booking",
        example: "cancel my haircut tomorrow",
        steps: &[("bookings", "cancel_booking")],
        notes: "booking_id, service_label and date are null unless the user names them.",
    },
    IntentSpec {
        intent: Intent::List,
        title: "See your bookings",
        when: "the user asks for their bookings",
        example: "what are my bookings?",
        steps: &[("bookings", "list_bookings")],
        notes: "no params to fill.",
    },
    IntentSpec {
        intent: Intent::RegisterBusiness,
        title: "Register your business",
        when: "a business owner registers a business",
        example: "register my business Dana's Salon in Tel Aviv, haircut 45 min 120 ILS, Sun-Thu 9-18",
        steps: &[("business-units", "register_business")],
        notes: "days are sun, mon, tue, wed, thu, fri, sat (ranges expanded: Sun-Thu is sun..thu); hours 9-18 are open 09:00, close 18:00; currency ILS unless another is named.",
    },
    IntentSpec {
        intent: Intent::Approve,
        title: "Approve a booking (business owners)",
        when: "a business owner approves a pending booking",
        example: "approve B-7Q2K",
        steps: &[("bookings", "confirm_booking")],
        notes: "booking_id upper case.",
    },
    IntentSpec {
        intent: Intent::Help,
        title: "Get this help",
        when: "anything else, or a request too incomplete to run (then ask for what is missing)",
        example: "hi",
        steps: &[],
        notes: "empty pipeline; reply holds the answer in the user's language.",
    },
];

pub fn intent_spec(intent: Intent) -> Option<&'static IntentSpec> {
    INTENTS.iter().find(|s| s.intent == intent)
}

/// The prefix of a reference to the previous step's result.
pub const PREVIOUS_STEP: &str = "${previous_step.";

/// Whether `v` is a string holding a `${previous_step.FIELD}` reference.
pub fn is_reference(v: &serde_json::Value) -> bool {
    v.as_str().is_some_and(|s| s.contains(PREVIOUS_STEP))
}

/// The days of the week as opening hours name them, Sunday first (the Israeli week).
pub const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_intent_has_a_spec_with_known_actions() {
        for intent in Intent::ALL {
            let spec = intent_spec(intent).unwrap_or_else(|| panic!("no spec for {intent}"));
            for (service, name) in spec.steps {
                assert!(SERVICES.contains(service), "{service}");
                assert!(action(service, name).is_some(), "{service}.{name}");
            }
        }
    }

    #[test]
    fn references_are_recognized() {
        assert!(is_reference(&serde_json::json!("${previous_step.business_ids}")));
        assert!(!is_reference(&serde_json::json!("haircut")));
        assert!(!is_reference(&serde_json::json!(3)));
    }
}
