//! Where every key and value of the file is, by path, so that findings about the typed
//! spec can point back at the text; and the unknown-field check, which needs the keys as
//! written (serde stops at the first unknown one and cannot suggest a fix).

use super::introspect::struct_fields;
use super::spec::{
    AdminSpec, HttpSpec, MetricsSpec, TracingSpec, CircuitBreakerSpec, CommitSpec, EmbeddedSpec, IngressSpec, KafkaSecuritySpec, KafkaSpec, RateLimitSpec, RetrySpec,
    StageDefaults, StageSpec, TopicSpec, TopologySpec,
};
use super::{Diagnostic, Diagnostics};
use serde_saphyr::granit_parser::{Event, Marker, Parser};
use serde_saphyr::MessageFormatter;
use std::collections::{HashMap, HashSet};

/// 1-based (line, column); (0, 0) when unknown.
pub(crate) type Pos = (u32, u32);

#[derive(Default, Clone, Copy)]
struct Entry {
    key: Option<Pos>,
    value: Option<Pos>,
}

pub(crate) struct SourceIndex {
    file: String,
    entries: HashMap<Vec<String>, Entry>,
    /// Every scalar mapping key in file order: (path of the mapping, key, position).
    keys: Vec<(Vec<String>, String, Pos)>,
    /// Paths whose value is a sequence; nothing under them is a struct of the spec.
    sequences: HashSet<Vec<String>>,
}

enum Frame {
    /// `pending` holds the key whose value comes next.
    Map {
        pending: Option<String>,
    },
    Seq {
        next: usize,
    },
    /// Inside a complex (collection) key: indexed by nobody.
    Skip,
}

impl SourceIndex {
    pub(crate) fn build(file: &str, text: &str) -> Result<SourceIndex, Diagnostics> {
        let mut index = SourceIndex {
            file: file.to_string(),
            entries: HashMap::new(),
            keys: Vec::new(),
            sequences: HashSet::new(),
        };
        let mut frames: Vec<(Frame, bool)> = Vec::new();
        let mut path: Vec<String> = Vec::new();
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(|e| {
                let (line, column) = pos(e.marker());
                Diagnostics(vec![Diagnostic {
                    file: file.to_string(),
                    line,
                    column,
                    subject: String::new(),
                    message: format!("this is not valid YAML: {}", e.info()),
                }])
            })?;
            let at = pos(&span.start);
            match event {
                Event::Scalar(text, ..) => index.node(&mut frames, &mut path, Some(&text), at, None),
                Event::Alias(_) => index.node(&mut frames, &mut path, None, at, None),
                Event::MappingStart(..) => {
                    index.node(&mut frames, &mut path, None, at, Some(Frame::Map { pending: None }))
                }
                Event::SequenceStart(..) => index.node(&mut frames, &mut path, None, at, Some(Frame::Seq { next: 0 })),
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some((_, true)) = frames.pop() {
                        path.pop();
                    }
                }
                // Only the first document is read (serde refuses more than one).
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        Ok(index)
    }

    /// Records one node (scalar, alias or collection start) at `at`; `opens` is the frame
    /// of a collection that starts here.
    fn node(
        &mut self,
        frames: &mut Vec<(Frame, bool)>,
        path: &mut Vec<String>,
        scalar: Option<&str>,
        at: Pos,
        opens: Option<Frame>,
    ) {
        let is_seq = matches!(opens, Some(Frame::Seq { .. }));
        let segment = match frames.last_mut() {
            None => {
                self.entries.entry(Vec::new()).or_default().value = Some(at);
                if is_seq {
                    self.sequences.insert(Vec::new());
                }
                if let Some(frame) = opens {
                    frames.push((frame, false));
                }
                return;
            }
            Some((Frame::Skip, _)) => {
                if opens.is_some() {
                    frames.push((Frame::Skip, false));
                }
                return;
            }
            Some((Frame::Map { pending }, _)) => match pending.take() {
                Some(key) => key,
                None => {
                    match (scalar, &opens) {
                        (Some(key), None) => {
                            let mut child = path.clone();
                            child.push(key.to_string());
                            self.entries.entry(child).or_default().key = Some(at);
                            self.keys.push((path.clone(), key.to_string(), at));
                            *pending = Some(key.to_string());
                        }
                        _ => {
                            // A collection or alias as a key: serde will refuse it; keep
                            // the structure in step without indexing it.
                            *pending = Some("?".to_string());
                            if opens.is_some() {
                                frames.push((Frame::Skip, false));
                            }
                        }
                    }
                    return;
                }
            },
            Some((Frame::Seq { next }, _)) => {
                *next += 1;
                (*next - 1).to_string()
            }
        };
        path.push(segment);
        self.entries.entry(path.clone()).or_default().value = Some(at);
        if is_seq {
            self.sequences.insert(path.clone());
        }
        match opens {
            Some(frame) => frames.push((frame, true)),
            None => {
                path.pop();
            }
        }
    }

    fn entry(&self, path: &[&str]) -> Option<Entry> {
        let owned: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.entries.get(&owned).copied()
    }

    /// Whether the file has `path` (as a key or a value).
    pub(crate) fn has(&self, path: &[&str]) -> bool {
        self.entry(path).is_some()
    }

    /// Where the key of `path` is; else its value; else the nearest ancestor's key.
    pub(crate) fn key_pos(&self, path: &[&str]) -> Pos {
        self.find(path, |e| e.key.or(e.value))
    }

    /// Where the value of `path` is; else its key; else the nearest ancestor's key.
    pub(crate) fn value_pos(&self, path: &[&str]) -> Pos {
        self.find(path, |e| e.value.or(e.key))
    }

    fn find(&self, path: &[&str], pick: impl Fn(Entry) -> Option<Pos>) -> Pos {
        if let Some(p) = self.entry(path).and_then(&pick) {
            return p;
        }
        (0..path.len()).rev().find_map(|n| self.entry(&path[..n]).and_then(|e| e.key.or(e.value))).unwrap_or((0, 0))
    }

    /// A diagnostic at `at` about the subject of `path`.
    pub(crate) fn diag(&self, at: Pos, path: &[&str], message: String) -> Diagnostic {
        Diagnostic { file: self.file.clone(), line: at.0, column: at.1, subject: subject_of(path), message }
    }

    /// Every key that is not a field of the struct it lands in, with a suggestion.
    pub(crate) fn unknown_fields(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for (parent, key, at) in &self.keys {
            // `<<` merges an anchored mapping; serde checks what it brings in.
            if key == "<<" || (0..=parent.len()).any(|n| self.sequences.contains(&parent[..n])) {
                continue;
            }
            let parent: Vec<&str> = parent.iter().map(String::as_str).collect();
            let Some((fields, place)) = struct_at(&parent) else { continue };
            if fields.contains(&key.as_str()) {
                continue;
            }
            let hint = match did_you_mean(key, fields.iter().copied()) {
                Some(s) => format!(" (did you mean `{s}`?)"),
                None => format!("; known fields: {}", fields.join(", ")),
            };
            out.push(self.diag(*at, &parent, format!("unknown field `{key}` {place}{hint}")));
        }
        out.sort_by_key(|d| (d.line, d.column));
        out
    }

    pub(crate) fn serde_error(&self, e: &serde_saphyr::Error) -> Diagnostic {
        let (mut line, mut column) = e.location().map_or((0, 0), |l| (to_u32(l.line()), to_u32(l.column())));
        let inner = e.without_snippet();
        let message = serde_saphyr::DefaultMessageFormatter.format_message(inner).replace(['\n', '\r'], " ");
        // The deepest path whose key or value starts where serde points names the subject.
        let path = self
            .entries
            .iter()
            .filter(|(_, en)| en.key == Some((line, column)) || en.value == Some((line, column)))
            .map(|(p, _)| p)
            .max_by_key(|p| (p.len(), (*p).clone()));
        let mut path: Vec<&str> = path.map(|p| p.iter().map(String::as_str).collect()).unwrap_or_default();
        // serde points a missing field at the last key it read; the struct that lacks it
        // (e.g. the stage's name) is what the reader has to find.
        if message.starts_with("missing field") && path.split_last().is_some_and(|(_, p)| struct_at(p).is_some()) {
            path.pop();
            (line, column) = self.key_pos(&path);
        }
        let message = friendly(&message, &path);
        Diagnostic { file: self.file.clone(), line, column, subject: subject_of(&path), message }
    }
}

/// serde's wording, said in terms of the file: what the field must be and how to write it.
fn friendly(message: &str, path: &[&str]) -> String {
    // Only a field of a spec struct is worth naming; a stage or topic name is the subject.
    let field = path.split_last().filter(|(_, parent)| struct_at(parent).is_some()).map(|(f, _)| *f);
    let what = match message {
        m if m.contains("untagged enum") => match field {
            Some("from") => return "`from` must be a topic name or a list of topic names".to_string(),
            Some("to") => return "`to` must be a topic name or a map of output name to topic".to_string(),
            Some("key") => return "`key` must be a field name or a map of output name to field".to_string(),
            _ => m.to_string(),
        },
        "expected mapping start" if path.is_empty() => {
            return "the file must be a mapping of sections (`topics:`, `stages:`, …)".to_string()
        }
        "expected mapping start" => "expected a mapping (`name: value` entries)".to_string(),
        "expected sequence start" => "expected a list (`[a, b]` or `- a` lines)".to_string(),
        "expected string scalar" => "expected a single value, not a list or a mapping".to_string(),
        m if m.starts_with("invalid u") || m.starts_with("invalid i") => "expected a whole number".to_string(),
        m if m.starts_with("missing field ") => {
            format!("required field {} is missing: add it", m.trim_start_matches("missing field "))
        }
        m => m.to_string(),
    };
    match field {
        Some(f) if !what.contains(&format!("`{f}`")) => format!("`{f}`: {what}"),
        _ => what,
    }
}

/// The allowed fields of the struct a mapping at `parent` deserializes into, and how to
/// name the place in a message; `None` for free-form maps and unknown places.
fn struct_at(parent: &[&str]) -> Option<(&'static [&'static str], String)> {
    let found = match parent {
        [] => (struct_fields::<TopologySpec>(), "at the top level".to_string()),
        ["embedded"] => (struct_fields::<EmbeddedSpec>(), "in `embedded`".to_string()),
        ["kafka"] => (struct_fields::<KafkaSpec>(), "in `kafka`".to_string()),
        ["kafka", "security"] => (struct_fields::<KafkaSecuritySpec>(), "in `kafka.security`".to_string()),
        ["admin"] => (struct_fields::<AdminSpec>(), "in `admin`".to_string()),
        ["metrics"] => (struct_fields::<MetricsSpec>(), "in `metrics`".to_string()),
        ["http"] => (struct_fields::<HttpSpec>(), "in `http`".to_string()),
        ["tracing"] => (struct_fields::<TracingSpec>(), "in `tracing`".to_string()),
        ["defaults"] => (struct_fields::<StageDefaults>(), "in `defaults`".to_string()),
        ["defaults", "retry"] => (struct_fields::<RetrySpec>(), "in `defaults.retry`".to_string()),
        ["defaults", "commit"] => (struct_fields::<CommitSpec>(), "in `defaults.commit`".to_string()),
        ["topics", t] => (struct_fields::<TopicSpec>(), format!("in topic `{t}`")),
        ["stages", s] => (struct_fields::<StageSpec>(), format!("in stage `{s}`")),
        ["stages", s, "retry"] => (struct_fields::<RetrySpec>(), format!("in `retry` of stage `{s}`")),
        ["stages", s, "rate_limit"] => (struct_fields::<RateLimitSpec>(), format!("in `rate_limit` of stage `{s}`")),
        ["stages", s, "circuit_breaker"] => {
            (struct_fields::<CircuitBreakerSpec>(), format!("in `circuit_breaker` of stage `{s}`"))
        }
        ["stages", s, "commit"] => (struct_fields::<CommitSpec>(), format!("in `commit` of stage `{s}`")),
        ["ingress", i] => (struct_fields::<IngressSpec>(), format!("in ingress `{i}`")),
        _ => return None,
    };
    Some(found)
}

/// "stage `x`", "topic `t`", … for a path under one of the named sections.
pub(crate) fn subject_of(path: &[&str]) -> String {
    match path {
        ["stages", s, ..] => format!("stage `{s}`"),
        ["topics", t, ..] => format!("topic `{t}`"),
        ["ingress", i, ..] => format!("ingress `{i}`"),
        ["nodes", n, ..] => format!("node `{n}`"),
        _ => String::new(),
    }
}

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lower = word.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| {
            let c_lower = c.to_lowercase();
            let distance = strsim::damerau_levenshtein(&lower, &c_lower);
            let close_edit = distance <= (word.chars().count().max(3) / 3).max(1);
            let similar = strsim::jaro_winkler(&lower, &c_lower);
            (close_edit || similar >= 0.85 || c_lower == lower, similar, c)
        })
        .filter(|(ok, ..)| *ok)
        .max_by(|a, b| a.1.total_cmp(&b.1).then_with(|| b.2.cmp(a.2)))
        .map(|(.., c)| c.to_string())
}

fn pos(m: &Marker) -> Pos {
    (to_u32(m.line()), to_u32(m.col()) + 1)
}

fn to_u32<N: TryInto<u32>>(n: N) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
topics:
  orders: {partitons: 4}
stages:
  gateway:
    kind: passthrough
    from: [a, \"b\"]
    retry:
      atempts: 3
    config: {anything: 1}
    to: {out: x}
nodes:
  n1: [gateway]
stage: oops
";

    #[test]
    fn records_keys_and_values() {
        let s = SourceIndex::build("t.yaml", TEXT).unwrap();
        assert_eq!(s.key_pos(&["stages", "gateway"]), (4, 3));
        assert_eq!(s.value_pos(&["stages", "gateway", "kind"]), (5, 11));
        assert_eq!(s.value_pos(&["stages", "gateway", "from", "1"]), (6, 15));
        assert_eq!(s.key_pos(&["topics", "orders", "partitons"]), (2, 12));
        assert_eq!(s.value_pos(&["nodes", "n1", "0"]), (12, 8));
        // Missing paths fall back to the nearest ancestor's key.
        assert_eq!(s.value_pos(&["stages", "gateway", "dlq"]), (4, 3));
        assert!(!s.has(&["stages", "gateway", "dlq"]));
    }

    #[test]
    fn unknown_fields_everywhere_but_free_maps() {
        let s = SourceIndex::build("t.yaml", TEXT).unwrap();
        let d = s.unknown_fields();
        let found: Vec<_> = d.iter().map(|d| (d.line, d.column, d.subject.as_str(), d.message.as_str())).collect();
        assert_eq!(
            found,
            vec![
                (2, 12, "topic `orders`", "unknown field `partitons` in topic `orders` (did you mean `partitions`?)"),
                (
                    8,
                    7,
                    "stage `gateway`",
                    "unknown field `atempts` in `retry` of stage `gateway` (did you mean `attempts`?)"
                ),
                (13, 1, "", "unknown field `stage` at the top level (did you mean `stages`?)"),
            ]
        );
    }

    #[test]
    fn syntax_error_has_a_place() {
        let Err(d) = SourceIndex::build("t.yaml", "a:\n  b: [1, 2\nc: 3\n") else { panic!("accepted") };
        assert_eq!(d.len(), 1);
        assert!(d.0[0].line >= 2, "{:?}", d.0[0]);
        assert!(d.0[0].message.starts_with("this is not valid YAML"), "{}", d.0[0].message);
    }

    #[test]
    fn introspected_fields_match_the_structs() {
        let stage = struct_fields::<StageSpec>();
        for f in ["kind", "from", "to", "key", "allow_cycle", "guarantee", "config", "dlq"] {
            assert!(stage.contains(&f), "{f}");
        }
        assert_eq!(struct_fields::<RateLimitSpec>(), &["per_second", "burst"]);
    }

    #[test]
    fn suggestions() {
        let names = ["gw-to-scrub-layer", "orders", "refunds"];
        assert_eq!(did_you_mean("gw-to-scrub", names).as_deref(), Some("gw-to-scrub-layer"));
        assert_eq!(did_you_mean("ordes", names).as_deref(), Some("orders"));
        assert_eq!(did_you_mean("zzz", names), None);
    }
}
