//! Reading a command's params. Whatever is missing or malformed is a business error
//! `invalid` (the user is told what was wrong), never a dead letter: params come from
//! the LLM layer, which can get them wrong in ordinary use.

use super::error::{ActionError, ActionResult};
use super::types::{parse_hhmm, phone_digits};
use jiff::civil::Date;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

pub struct Params<'a>(pub &'a Map<String, Value>);

impl<'a> Params<'a> {
    /// The value of `name`, with `null` and `""` counting as absent (LLMs send both for
    /// "not given").
    fn get(&self, name: &str) -> Option<&'a Value> {
        match self.0.get(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(v) => Some(v),
        }
    }

    pub fn opt_str(&self, name: &str) -> ActionResult<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim())),
            Some(other) => Err(ActionError::invalid(format!("`{name}` must be text, got {other}"))),
        }
    }

    pub fn str(&self, name: &str) -> ActionResult<&'a str> {
        self.opt_str(name)?.ok_or_else(|| ActionError::invalid(format!("`{name}` is missing")))
    }

    /// A phone number, as digits.
    pub fn phone(&self, name: &str) -> ActionResult<String> {
        self.opt_phone(name)?.ok_or_else(|| ActionError::invalid(format!("`{name}` is missing")))
    }

    pub fn opt_phone(&self, name: &str) -> ActionResult<Option<String>> {
        let Some(raw) = self.opt_str(name)? else { return Ok(None) };
        let digits = phone_digits(raw);
        if digits.is_empty() {
            return Err(ActionError::invalid(format!("`{name}` is not a phone number: {raw}")));
        }
        Ok(Some(digits))
    }

    /// `YYYY-MM-DD`.
    pub fn opt_date(&self, name: &str) -> ActionResult<Option<Date>> {
        let Some(s) = self.opt_str(name)? else { return Ok(None) };
        s.parse::<Date>()
            .map(Some)
            .map_err(|_| ActionError::invalid(format!("`{name}` must be a date as YYYY-MM-DD, got `{s}`")))
    }

    pub fn date(&self, name: &str) -> ActionResult<Date> {
        self.opt_date(name)?.ok_or_else(|| ActionError::invalid(format!("`{name}` is missing")))
    }

    /// `HH:MM` → minutes after midnight (a start time: `24:00` is not one).
    pub fn opt_time(&self, name: &str) -> ActionResult<Option<u32>> {
        let Some(s) = self.opt_str(name)? else { return Ok(None) };
        match parse_hhmm(s) {
            Some(m) if m < 24 * 60 => Ok(Some(m)),
            _ => Err(ActionError::invalid(format!("`{name}` must be a time as HH:MM, got `{s}`"))),
        }
    }

    /// A time that may be `24:00` (the end of a range).
    pub fn opt_end_time(&self, name: &str) -> ActionResult<Option<u32>> {
        let Some(s) = self.opt_str(name)? else { return Ok(None) };
        parse_hhmm(s)
            .map(Some)
            .ok_or_else(|| ActionError::invalid(format!("`{name}` must be a time as HH:MM, got `{s}`")))
    }

    /// A list of strings; a single string counts as a list of one.
    pub fn opt_str_list(&self, name: &str) -> ActionResult<Option<Vec<String>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.trim().to_string()])),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.trim().to_string()),
                    other => Err(ActionError::invalid(format!("`{name}` must list text, got {other}"))),
                })
                .collect::<ActionResult<Vec<_>>>()
                .map(Some),
            Some(other) => Err(ActionError::invalid(format!("`{name}` must be a list, got {other}"))),
        }
    }

    /// A whole number in `range`; numeric strings (`"5"`) are accepted.
    pub fn opt_count(&self, name: &str, range: std::ops::RangeInclusive<u64>) -> ActionResult<Option<u64>> {
        let n = match self.get(name) {
            None => return Ok(None),
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(_) => None,
        };
        match n {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            _ => Err(ActionError::invalid(format!(
                "`{name}` must be a whole number from {} to {}",
                range.start(),
                range.end()
            ))),
        }
    }

    /// A structured param decoded with serde; the error names the param.
    pub fn typed<T: DeserializeOwned>(&self, name: &str) -> ActionResult<T> {
        let v = self.get(name).ok_or_else(|| ActionError::invalid(format!("`{name}` is missing")))?;
        serde_json::from_value(v.clone()).map_err(|e| ActionError::invalid(format!("`{name}` is not valid: {e}")))
    }
}
