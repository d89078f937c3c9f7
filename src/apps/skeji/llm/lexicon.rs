//! Words the rules provider knows: services, cities, booking ids, and the text
//! normalization every matcher runs on.

use regex::Regex;
use std::sync::LazyLock;

/// The services users can ask for, by canonical label, with the pattern of their names
/// (simple plurals included).
const SERVICES: &[(&str, &str)] = &[
    ("haircut", r"\bhair[\s-]*cut(?:s|ting)?\b"),
    ("manicure", r"\bmanicures?\b"),
    ("pedicure", r"\bpedicures?\b"),
    ("massage", r"\bmassages?\b"),
    ("facial", r"\bfacials?\b"),
    ("beard trim", r"\bbeard[\s-]*trim(?:s|ming)?\b"),
];

/// Cities by canonical name, with the spellings users send.
const CITIES: &[(&str, &str)] = &[
    ("Tel Aviv", r"\btel[\s-]*aviv(?:[\s-]*(?:yafo|jaffa))?\b|\btlv\b"),
    ("Jerusalem", r"\bjerusalem\b|\bjlm\b"),
    ("Haifa", r"\bhaifa\b"),
    ("Eilat", r"\beilat\b"),
    ("Be'er Sheva", r"\bbe'?er[\s-]*sheva\b|\bbeer[\s-]*sheba\b|\bbeersheba\b|\bbeersheva\b"),
    ("Netanya", r"\bnetanya\b|\bnatanya\b"),
    ("Herzliya", r"\bherzliy?a\b|\bhertzliy?a\b"),
    ("Ramat Gan", r"\bramat[\s-]*gan\b"),
];

/// The canonical labels of the known services.
pub fn service_labels() -> impl Iterator<Item = &'static str> {
    SERVICES.iter().map(|(label, _)| *label)
}

/// The canonical names of the known cities.
pub fn city_names() -> impl Iterator<Item = &'static str> {
    CITIES.iter().map(|(name, _)| *name)
}

struct Patterns {
    services: Vec<(&'static str, Regex)>,
    cities: Vec<(&'static str, Regex)>,
    booking_id: Regex,
}

impl Patterns {
    fn compile() -> Result<Patterns, regex::Error> {
        let all = |list: &[(&'static str, &str)]| -> Result<Vec<(&'static str, Regex)>, regex::Error> {
            list.iter().map(|(name, p)| Ok((*name, Regex::new(p)?))).collect()
        };
        Ok(Patterns {
            services: all(SERVICES)?,
            cities: all(CITIES)?,
            booking_id: Regex::new(r"\bb-[a-z0-9]{3,16}\b")?,
        })
    }
}

static PATTERNS: LazyLock<Result<Patterns, regex::Error>> = LazyLock::new(Patterns::compile);

/// Fails when a pattern of this module does not compile (checked when the provider is
/// built, so a bad pattern stops the stage instead of silently matching nothing).
pub fn check() -> Result<(), String> {
    PATTERNS.as_ref().map(|_| ()).map_err(|e| format!("lexicon pattern: {e}"))
}

fn patterns() -> Option<&'static Patterns> {
    PATTERNS.as_ref().ok()
}

/// Lower case, typographic quotes made plain, punctuation that never carries meaning
/// (`,!?;()"`…) turned into spaces, runs of spaces collapsed. Keeps `: / - . ' $ ₪ €`
/// which times, dates, ids, names and prices need.
pub fn normalize(text: &str) -> String {
    let mapped: String = text
        .chars()
        .map(|c| match c {
            '\u{2019}' | '\u{2018}' | '`' | '\u{b4}' => '\'',
            '\u{2013}' | '\u{2014}' => '-',
            c if c.is_alphanumeric() || c.is_whitespace() => c,
            ':' | '/' | '-' | '.' | '\'' | '$' | '\u{20aa}' | '\u{20ac}' => c,
            _ => ' ',
        })
        .flat_map(char::to_lowercase)
        .collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The earliest `(label, pattern)` match in `text`.
fn first_match(list: &[(&'static str, Regex)], text: &str) -> Option<&'static str> {
    list.iter().filter_map(|(name, re)| re.find(text).map(|m| (m.start(), *name))).min_by_key(|(at, _)| *at).map(|(_, n)| n)
}

/// The first known service named in normalized `text`, as its canonical label.
pub fn find_service(text: &str) -> Option<&'static str> {
    first_match(&patterns()?.services, text)
}

/// The first known city named in normalized `text`, as its canonical name.
pub fn find_city(text: &str) -> Option<&'static str> {
    first_match(&patterns()?.cities, text)
}

/// A known city's canonical name when all of `text` names it (after normalization).
pub fn canonical_city(text: &str) -> Option<&'static str> {
    let norm = normalize(text);
    patterns()?.cities.iter().find(|(_, re)| re.find(&norm).is_some_and(|m| m.start() == 0 && m.end() == norm.len())).map(|(n, _)| *n)
}

/// A known city named at the very start of `lower` (lower case): its canonical name and
/// where its mention ends.
pub fn city_prefix(lower: &str) -> Option<(&'static str, usize)> {
    patterns()?.cities.iter().find_map(|(n, re)| re.find(lower).filter(|m| m.start() == 0).map(|m| (*n, m.end())))
}

/// A known service's canonical label when all of `text` names it.
pub fn canonical_service(text: &str) -> Option<&'static str> {
    let norm = normalize(text);
    patterns()?.services.iter().find(|(_, re)| re.find(&norm).is_some_and(|m| m.start() == 0 && m.end() == norm.len())).map(|(n, _)| *n)
}

/// A booking id (`B-` + letters/digits) in normalized `text`, upper case.
pub fn find_booking_id(text: &str) -> Option<String> {
    patterns()?.booking_id.find(text).map(|m| m.as_str().to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile() {
        assert_eq!(check(), Ok(()));
    }

    #[test]
    fn normalizes_case_punctuation_and_quotes() {
        assert_eq!(normalize("  Hi,  Book a HAIRCUT!! please?"), "hi book a haircut please");
        assert_eq!(normalize("Dana\u{2019}s Salon (TLV)"), "dana's salon tlv");
        assert_eq!(normalize("at 15:30, on 18/11."), "at 15:30 on 18/11.");
    }

    #[test]
    fn services_with_plurals_and_spellings() {
        let cases = [
            ("book a haircut", Some("haircut")),
            ("any haircuts tomorrow", Some("haircut")),
            ("a hair cut please", Some("haircut")),
            ("two manicures", Some("manicure")),
            ("pedicure", Some("pedicure")),
            ("massages on friday", Some("massage")),
            ("a facial", Some("facial")),
            ("beard trim at 3", Some("beard trim")),
            ("beard-trims", Some("beard trim")),
            ("a massage and a facial", Some("massage")),
            ("a tattoo", None),
        ];
        for (text, want) in cases {
            assert_eq!(find_service(text), want, "{text}");
        }
    }

    #[test]
    fn cities_normalize_to_canonical_names() {
        let cases = [
            ("in tel aviv", Some("Tel Aviv")),
            ("in tel-aviv", Some("Tel Aviv")),
            ("tlv tomorrow", Some("Tel Aviv")),
            ("jerusalem", Some("Jerusalem")),
            ("haifa", Some("Haifa")),
            ("eilat", Some("Eilat")),
            ("be'er sheva", Some("Be'er Sheva")),
            ("beer sheva", Some("Be'er Sheva")),
            ("netanya", Some("Netanya")),
            ("herzliya", Some("Herzliya")),
            ("ramat gan", Some("Ramat Gan")),
            ("ramat-gan", Some("Ramat Gan")),
            ("london", None),
        ];
        for (text, want) in cases {
            assert_eq!(find_city(text), want, "{text}");
        }
        assert_eq!(canonical_city("Tel-Aviv"), Some("Tel Aviv"));
        assert_eq!(canonical_city("Tel Aviv north"), None);
        assert_eq!(canonical_service("Haircuts"), Some("haircut"));
    }

    #[test]
    fn booking_ids_upper_case() {
        assert_eq!(find_booking_id("approve b-7q2k"), Some("B-7Q2K".to_string()));
        assert_eq!(find_booking_id("approve"), None);
    }
}
