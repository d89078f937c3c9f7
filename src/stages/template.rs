//! `{field}` templates over a JSON payload, shared by the kinds that build requests from
//! records (`http` URLs and bodies, `llm` prompts). Fields are dotted paths
//! (`{lead.email}`); `{{` and `}}` are literal braces. A missing field is an error, so a
//! record without it is dead-lettered rather than sent with a hole.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut field = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => field.push(c),
                            None => return Err(format!("unclosed `{{` in template `{text}`")),
                        }
                    }
                    let field = field.trim().to_string();
                    if field.is_empty() {
                        return Err(format!("empty `{{}}` in template `{text}` (write `{{{{` for a literal brace)"));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(field));
                }
                '}' => return Err(format!("unmatched `}}` in template `{text}` (write `}}}}` for a literal brace)")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Template { parts })
    }

    /// The field paths the template reads.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field(f) => Some(f.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Renders with each field's text passed through `encode` (identity for prompts,
    /// percent-encoding for URLs).
    pub fn render_with(&self, payload: &Value, encode: impl Fn(&str) -> String) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Field(f) => {
                    let v = value_at(payload, f).ok_or_else(|| format!("field `{f}` is missing from the payload"))?;
                    out.push_str(&encode(&text_of(v)));
                }
            }
        }
        Ok(out)
    }

    pub fn render(&self, payload: &Value) -> Result<String, String> {
        self.render_with(payload, |s| s.to_string())
    }

    /// The single field of a template that is exactly `{path}`, if it is one.
    fn only_field(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Field(f)] => Some(f),
            _ => None,
        }
    }
}

/// The value at a dotted path.
pub fn value_at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, part| match v {
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => v.get(part),
    })
}

/// Strings as they are; anything else as JSON.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Checks every string of a JSON template parses.
pub fn check_json(template: &Value) -> Result<(), String> {
    match template {
        Value::String(s) => Template::parse(s).map(|_| ()),
        Value::Array(items) => items.iter().try_for_each(check_json),
        Value::Object(map) => map.values().try_for_each(check_json),
        _ => Ok(()),
    }
}

/// Renders a JSON template: a string that is exactly `{path}` becomes the field's value
/// (keeping its type); other strings are rendered as text templates.
pub fn render_json(template: &Value, payload: &Value) -> Result<Value, String> {
    Ok(match template {
        Value::String(s) => {
            let t = Template::parse(s)?;
            match t.only_field() {
                Some(f) => value_at(payload, f).cloned().ok_or_else(|| format!("field `{f}` is missing from the payload"))?,
                None => Value::String(t.render(payload)?),
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| render_json(i, payload)).collect::<Result<_, _>>()?),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), render_json(v, payload)?))).collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Puts `v` at a dotted path of `payload` (an object), creating objects on the way.
pub fn set_at(payload: &mut Value, path: &str, v: Value) -> Result<(), String> {
    let mut at = payload;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let obj = at.as_object_mut().ok_or_else(|| format!("cannot set `{path}`: the payload is not a JSON object there"))?;
        if parts.peek().is_none() {
            obj.insert(part.to_string(), v);
            return Ok(());
        }
        at = obj.entry(part.to_string()).or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for URL placeholders).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_dotted_fields_and_escapes() {
        let t = Template::parse("id={lead.id} n={n} {{x}}").expect("parses");
        let v = json!({"lead": {"id": "a b"}, "n": 3});
        assert_eq!(t.render(&v).expect("renders"), "id=a b n=3 {x}");
        assert_eq!(t.render_with(&v, percent_encode).expect("renders"), "id=a%20b n=3 {x}");
        assert!(t.render(&json!({"n": 1})).unwrap_err().contains("lead.id"));
        assert!(Template::parse("{open").is_err());
    }

    #[test]
    fn json_templates_keep_types() {
        let v = json!({"a": 1, "b": {"c": [1, 2]}, "s": "x"});
        let out = render_json(&json!({"n": "{a}", "list": "{b.c}", "text": "s={s}"}), &v).expect("renders");
        assert_eq!(out, json!({"n": 1, "list": [1, 2], "text": "s=x"}));
        let mut p = json!({"a": 1});
        set_at(&mut p, "x.y", json!(2)).expect("sets");
        assert_eq!(p, json!({"a": 1, "x": {"y": 2}}));
    }
}
