//! `${VAR}` / `${VAR:-default}` substitution on the raw text, before YAML parsing.
//!
//! Working on text (not on parsed values) lets a variable stand anywhere, including in
//! keys and flow collections, and keeps every line where it was: a value containing a
//! newline is refused, so the locations the parser reports still match the file the user
//! edits (columns after a substitution on the same line shift by the length difference).

use super::{Diagnostic, Diagnostics};

pub(crate) fn substitute(file: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Diagnostics> {
    let mut out = String::with_capacity(text.len());
    let mut diags = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = u32::try_from(index + 1).unwrap_or(u32::MAX);
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        substitute_line(line, env, &mut out, &mut |column, subject, message| {
            diags.push(Diagnostic { file: file.to_string(), line: line_no, column, subject, message });
        });
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(Diagnostics(diags))
    }
}

/// Appends `line` with its references replaced to `out`; reports problems through `report`
/// as (1-based character column of the `$`, subject, message).
fn substitute_line(
    line: &str,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
    report: &mut dyn FnMut(u32, String, String),
) {
    let mut rest = line;
    // Character column of `rest`'s start, for reporting.
    let mut column = 1u32;
    while let Some(at) = rest.find('$') {
        let (before, from_dollar) = rest.split_at(at);
        out.push_str(before);
        column += char_len(before);
        if let Some(after) = from_dollar.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            column += 3;
            continue;
        }
        let Some(body_and_rest) = from_dollar.strip_prefix("${") else {
            out.push('$');
            rest = &from_dollar[1..];
            column += 1;
            continue;
        };
        let Some(close) = body_and_rest.find('}') else {
            report(
                column,
                String::new(),
                "unterminated `${`: close it with `}` on the same line, or write `$${` for a literal `${`".to_string(),
            );
            out.push_str(from_dollar);
            return;
        };
        let body = &body_and_rest[..close];
        match resolve(body, env) {
            Ok(value) => out.push_str(&value),
            Err((subject, message)) => {
                report(column, subject, message);
                // Keep the reference so the rest of the line still lines up.
                out.push_str(&from_dollar[..close + 3]);
            }
        }
        column += char_len(&from_dollar[..close + 3]);
        rest = &body_and_rest[close + 1..];
    }
    out.push_str(rest);
}

/// The value of one `${...}` body, or (subject, message) saying why there is none.
fn resolve(body: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, (String, String)> {
    let (name, default) = match body.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (body, None),
    };
    let subject = format!("variable `{name}`");
    if name.is_empty() {
        return Err((
            String::new(),
            format!("`${{{body}}}` has an empty variable name: write `${{NAME}}` or `${{NAME:-default}}`"),
        ));
    }
    if !is_valid_name(name) {
        let hint =
            if name.contains(':') || name.contains('-') { " (a default is written `${NAME:-default}`)" } else { "" };
        return Err((
            subject,
            format!("`{name}` is not a variable name: use letters, digits and `_`, not starting with a digit{hint}"),
        ));
    }
    if default.is_some_and(|d| d.contains("${")) {
        return Err((
            subject,
            "a default cannot contain another `${`: nested references are not supported".to_string(),
        ));
    }
    // As in the shell, `:-` also replaces a variable that is set but empty.
    let value = match (env(name), default) {
        (Some(v), Some(d)) if v.is_empty() => d.to_string(),
        (Some(v), _) => v,
        (None, Some(d)) => d.to_string(),
        (None, None) => {
            return Err((
                subject,
                format!("`{name}` is not set: set it in the environment or give a default with `${{{name}:-value}}`"),
            ))
        }
    };
    if value.contains('\n') || value.contains('\r') {
        return Err((
            subject,
            format!("the value of `{name}` contains a line break, which would change the structure of the file; set it on one line"),
        ));
    }
    Ok(value)
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn char_len(s: &str) -> u32 {
    u32::try_from(s.chars().count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".into()),
            _ => None,
        }
    }

    fn sub(text: &str) -> Result<String, Diagnostics> {
        substitute("t.yaml", text, &env)
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        assert_eq!(sub("a: ${HOST}\n").unwrap(), "a: db.internal\n");
        assert_eq!(sub("a: ${UNSET:-127.0.0.1:9092}").unwrap(), "a: 127.0.0.1:9092");
        assert_eq!(sub("a: ${UNSET:-}x").unwrap(), "a: x");
        // As in the shell, an empty value takes the default; without one it stays empty.
        assert_eq!(sub("a: ${EMPTY:-fallback}.").unwrap(), "a: fallback.");
        assert_eq!(sub("a: ${EMPTY}.").unwrap(), "a: .");
        assert_eq!(sub("{a: ${HOST}, b: ${HOST}}").unwrap(), "{a: db.internal, b: db.internal}");
    }

    #[test]
    fn escapes_and_lone_dollars_stay() {
        assert_eq!(sub("a: $${HOST} and $HOST and $$ and 5$").unwrap(), "a: ${HOST} and $HOST and $$ and 5$");
        // The escape does not start a reference, so its `}` is plain text.
        assert_eq!(sub("a: $${UNSET:-x}").unwrap(), "a: ${UNSET:-x}");
    }

    #[test]
    fn comment_lines_are_left_alone() {
        let text = "# uses ${UNSET}\n  # and ${ALSO_UNSET\na: ${HOST} # ${HOST}\n";
        assert_eq!(sub(text).unwrap(), "# uses ${UNSET}\n  # and ${ALSO_UNSET\na: db.internal # db.internal\n");
    }

    #[test]
    fn collects_every_error_with_its_place() {
        let text = "a: 1\nb: ${UNSET}\nc: ééé ${MULTI} ${\nd: ${}\ne: ${X:default}\n";
        let d = sub(text).unwrap_err().0;
        let found: Vec<_> = d.iter().map(|d| (d.line, d.column, d.subject.as_str())).collect();
        assert_eq!(
            found,
            vec![
                (2, 4, "variable `UNSET`"),
                (3, 8, "variable `MULTI`"),
                (3, 17, ""),
                (4, 4, ""),
                (5, 4, "variable `X:default`"),
            ]
        );
        assert!(d[0].message.contains("`UNSET` is not set"), "{}", d[0].message);
        assert!(d[1].message.contains("line break"), "{}", d[1].message);
        assert!(d[2].message.starts_with("unterminated"), "{}", d[2].message);
        assert!(d[3].message.contains("empty variable name"), "{}", d[3].message);
        assert!(d[4].message.contains("${NAME:-default}"), "{}", d[4].message);
    }

    #[test]
    fn keeps_line_count() {
        let text = "a: ${HOST}\r\nb: ${UNSET:-x}\r\n\r\nc: 1";
        let out = sub(text).unwrap();
        assert_eq!(out.lines().count(), text.lines().count());
        assert_eq!(out, "a: db.internal\r\nb: x\r\n\r\nc: 1");
    }

    #[test]
    fn nested_default_is_refused() {
        let d = sub("a: ${A:-${B}}").unwrap_err().0;
        assert_eq!(d.len(), 1);
        assert!(d[0].message.contains("nested"), "{}", d[0].message);
    }
}

/// Hostile input (issue 9): `${VAR}` substitution over any text and any variable values
/// returns the text or diagnostics, never a panic, and never changes the line count.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Text rich in the characters substitution looks at, mixed with anything.
    fn text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("$".to_string()),
            Just("${".to_string()),
            Just("$${".to_string()),
            Just("}".to_string()),
            Just(":-".to_string()),
            Just("\n".to_string()),
            Just("\r\n".to_string()),
            Just("#".to_string()),
            Just("SET".to_string()),
            Just("MULTI".to_string()),
            "[A-Za-z_0-9:-]{1,6}",
            "\\PC{1,3}",
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn substitution_never_panics(input in text(), value in any::<String>()) {
            let env = |name: &str| match name {
                "SET" => Some(value.clone()),
                "MULTI" => Some("a\nb".to_string()),
                _ => None,
            };
            match substitute("t.yaml", &input, &env) {
                Ok(out) => prop_assert_eq!(out.matches('\n').count(), input.matches('\n').count()),
                Err(d) => {
                    let lines = u32::try_from(input.split_inclusive('\n').count()).unwrap_or(u32::MAX);
                    prop_assert!(d.0.iter().all(|d| d.line >= 1 && d.line <= lines.max(1) && d.column >= 1));
                }
            }
        }

        #[test]
        fn text_without_a_dollar_is_unchanged(input in any::<String>()) {
            let input = input.replace('$', "");
            prop_assert_eq!(substitute("t.yaml", &input, &|_| None).ok(), Some(input));
        }
    }
}
