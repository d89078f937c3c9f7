//! `skeji-scrub`: the scrub layer. Declines messages the assistant should not spend an LLM
//! call on — empty, too long, flooding (per-phone rate), spam — as a [`Rejection`] on
//! output `rejected` (a business outcome: the notifier tells the user why), and passes
//! the rest on as a [`ScrubbedMessage`] with the user's conversation (new after
//! `conversation_idle` of silence), language and last intent.
//!
//! ```yaml
//! config: {max_chars: 1000, flood: {per_minute: 20, burst: 10}, conversation_idle: 30m}
//! ```
//! Optional: `spam_patterns` (regexes, replacing the defaults) and `max_repeat` (a run of
//! one character this long is spam; default 20).

use super::context;
use super::model::{types, Rejection, ScrubbedMessage, UserMessage};
use super::store::{Db, DbError};
use crate::envelope::Record;
use crate::stages::{decode, BuildEnv, BuildError, Output, Registry, Stage, StageContext, StageError, StageKind};
use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use regex::RegexSet;
use serde::Deserialize;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Registers `skeji-scrub`.
pub fn register(r: &mut Registry) {
    r.register_stage::<Scrub>();
}

/// Used when the config lists no `spam_patterns`: links through URL shorteners (they hide
/// where they lead), the usual money/crypto bait, and prize scams.
pub const DEFAULT_SPAM_PATTERNS: &[&str] = &[
    r"(?i)\b(bit\.ly|tinyurl\.com|t\.co|goo\.gl|ow\.ly|is\.gd|buff\.ly|cutt\.ly|rb\.gy|shorturl\.at|tiny\.cc|t\.ly)/\S+",
    r"(?i)\bfree\s+(money|cash|crypto|bitcoin|btc|eth|usdt)\b",
    r"(?i)\b(crypto|bitcoin|btc|eth|usdt)\s+(giveaway|airdrop|doubler)\b",
    r"(?i)\b(giveaway|airdrop)\b.{0,40}\b(crypto|bitcoin|btc|eth|usdt|wallet)\b",
    r"(?i)\b(you\s+(have\s+)?won|claim\s+your\s+(prize|reward))\b",
    r"(?i)\b(double|triple)\s+your\s+(money|investment|bitcoin)\b",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrubConfig {
    pub max_chars: usize,
    pub flood: FloodConfig,
    /// Silence after which the next message starts a new conversation, e.g. `30m`.
    #[serde(default = "default_idle")]
    pub conversation_idle: String,
    /// Regexes (Rust `regex` syntax); a match makes the message spam.
    #[serde(default)]
    pub spam_patterns: Option<Vec<String>>,
    /// A run of one character this long is spam (the `regex` crate has no backreferences,
    /// so this is checked in code).
    #[serde(default = "default_max_repeat")]
    pub max_repeat: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloodConfig {
    pub per_minute: u32,
    pub burst: u32,
}

fn default_idle() -> String {
    "30m".into()
}

fn default_max_repeat() -> usize {
    20
}

pub struct Scrub {
    db: Db,
    max_chars: usize,
    idle_ms: i64,
    spam: RegexSet,
    max_repeat: usize,
    flood: DefaultKeyedRateLimiter<String>,
    seen: AtomicU64,
}

impl ScrubConfig {
    fn compile(&self) -> Result<(RegexSet, Quota, i64), String> {
        let patterns: Vec<&str> = match &self.spam_patterns {
            Some(p) => p.iter().map(String::as_str).collect(),
            None => DEFAULT_SPAM_PATTERNS.to_vec(),
        };
        let spam = RegexSet::new(patterns).map_err(|e| format!("spam_patterns: {e}"))?;
        let per_minute = NonZeroU32::new(self.flood.per_minute).ok_or("flood.per_minute must be at least 1")?;
        let burst = NonZeroU32::new(self.flood.burst).ok_or("flood.burst must be at least 1")?;
        let idle = crate::topology::units::parse_duration(&self.conversation_idle)?;
        if self.max_chars == 0 || self.max_repeat < 2 {
            return Err("max_chars must be at least 1 and max_repeat at least 2".into());
        }
        Ok((
            spam,
            Quota::per_minute(per_minute).allow_burst(burst),
            i64::try_from(idle.as_millis()).unwrap_or(i64::MAX),
        ))
    }
}

impl StageKind for Scrub {
    const NAME: &'static str = "skeji-scrub";
    type Config = ScrubConfig;
    const INPUT_TYPES: &'static [&'static str] = &[types::USER_MESSAGE];
    const OUTPUT_TYPES: &'static [(&'static str, &'static str)] =
        &[("default", types::SCRUBBED_MESSAGE), ("rejected", types::REJECTION)];

    fn outputs() -> Vec<&'static str> {
        vec!["default", "rejected"]
    }

    fn required_outputs() -> Vec<&'static str> {
        vec!["default", "rejected"]
    }

    fn output_fields(output: &str) -> Option<Vec<&'static str>> {
        match output {
            "default" => Some(vec![
                "message_id",
                "user_phone",
                "text",
                "received_at",
                "profile_name",
                "conversation_id",
                "language",
                "last_intent",
            ]),
            "rejected" => Some(vec!["message_id", "user_phone", "reason", "detail", "language"]),
            _ => None,
        }
    }

    fn check(c: &ScrubConfig) -> Result<(), String> {
        c.compile().map(|_| ())
    }

    fn build(c: ScrubConfig, env: &BuildEnv<'_>) -> Result<Arc<dyn Stage>, BuildError> {
        let (spam, quota, idle_ms) = c.compile().map_err(|e| BuildError::new(env, e))?;
        let db = Db::open(&env.data_dir).map_err(|e| BuildError::new(env, e))?;
        db.migrate(context::SCHEMA).map_err(|e| BuildError::new(env, e))?;
        Ok(Arc::new(Scrub {
            db,
            max_chars: c.max_chars,
            idle_ms,
            spam,
            max_repeat: c.max_repeat,
            flood: RateLimiter::keyed(quota),
            seen: AtomicU64::new(0),
        }))
    }
}

/// The message's language by script: Hebrew, Arabic or Cyrillic letters decide; anything
/// else is taken as English (the LLM layer copes with other Latin-script languages).
pub fn detect_language(text: &str) -> &'static str {
    let (mut he, mut ar, mut ru) = (0usize, 0usize, 0usize);
    for c in text.chars() {
        match c {
            '\u{0590}'..='\u{05FF}' | '\u{FB1D}'..='\u{FB4F}' => he += 1,
            '\u{0600}'..='\u{06FF}' | '\u{0750}'..='\u{077F}' | '\u{FB50}'..='\u{FDFF}' | '\u{FE70}'..='\u{FEFF}' => {
                ar += 1
            }
            '\u{0400}'..='\u{04FF}' => ru += 1,
            _ => {}
        }
    }
    match [(he, "he"), (ar, "ar"), (ru, "ru")].into_iter().max_by_key(|(n, _)| *n) {
        Some((n, lang)) if n > 0 => lang,
        _ => "en",
    }
}

/// The longest run of one character.
fn longest_run(text: &str) -> usize {
    let (mut best, mut run, mut prev) = (0, 0, None);
    for c in text.chars() {
        run = if Some(c) == prev { run + 1 } else { 1 };
        prev = Some(c);
        best = best.max(run);
    }
    best
}

impl Scrub {
    /// Why the message is declined, if it is: (reason, detail for logs and the notifier).
    fn verdict(&self, m: &UserMessage, cx: &StageContext<'_>) -> Option<(&'static str, String)> {
        let chars = m.text.chars().count();
        if chars == 0 {
            return Some(("empty", "the message has no text".into()));
        }
        if chars > self.max_chars {
            return Some(("too_long", format!("{chars} characters; at most {} are read", self.max_chars)));
        }
        // A retry of a message that already passed must not use up the user's allowance.
        if cx.attempt == 1 && self.flood.check_key(&m.user_phone).is_err() {
            return Some(("flooding", "too many messages in a short time".into()));
        }
        if self.spam.is_match(&m.text) {
            return Some(("spam", "the message matches a spam pattern".into()));
        }
        if longest_run(&m.text) >= self.max_repeat {
            return Some(("spam", format!("one character repeated {} times or more", self.max_repeat)));
        }
        None
    }
}

#[async_trait]
impl Stage for Scrub {
    async fn handle(&self, record: &Record, cx: &StageContext<'_>) -> Result<Vec<Output>, StageError> {
        let m: UserMessage = decode(record)?;
        // The limiter keeps a cell per phone; forget idle phones now and then.
        if self.seen.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.flood.retain_recent();
        }
        let language = detect_language(&m.text);
        if let Some((reason, detail)) = self.verdict(&m, cx) {
            tracing::info!(stage = cx.stage, message_id = %m.message_id, reason, "message rejected");
            let rejection = Rejection {
                message_id: m.message_id,
                user_phone: m.user_phone,
                reason: reason.to_string(),
                detail,
                language: language.to_string(),
            };
            return Ok(vec![Output::json("rejected", &rejection)?.business(reason)]);
        }
        let ctx = context::enter(&self.db, &m.user_phone, m.received_at, self.idle_ms, language)
            .await
            .map_err(DbError::into_stage_error)?;
        let out = ScrubbedMessage {
            message_id: m.message_id,
            user_phone: m.user_phone,
            text: m.text,
            received_at: m.received_at,
            profile_name: m.profile_name,
            conversation_id: ctx.conversation_id.clone(),
            language: language.to_string(),
            last_intent: ctx.last_intent,
        };
        Ok(vec![
            Output::json("default", &out)?.with_header(crate::envelope::header::CONVERSATION_ID, ctx.conversation_id)
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_by_script() {
        assert_eq!(detect_language("Hi, book a haircut"), "en");
        assert_eq!(detect_language("שלום, אני רוצה תור"), "he");
        assert_eq!(detect_language("مرحبا"), "ar");
        assert_eq!(detect_language("Привет"), "ru");
        assert_eq!(detect_language("123 !?"), "en");
    }

    #[test]
    fn default_spam_patterns_compile_and_match() {
        let set = RegexSet::new(DEFAULT_SPAM_PATTERNS).expect("patterns compile");
        assert!(set.is_match("claim it at bit.ly/abc123"));
        assert!(set.is_match("FREE MONEY for everyone"));
        assert!(set.is_match("huge crypto giveaway today"));
        assert!(!set.is_match("book a haircut in Tel Aviv tomorrow at 3pm"));
        assert_eq!(longest_run("heyyyyy"), 5);
    }
}
