//! Records and their envelope: the metadata every record carries in its headers.
//!
//! Headers are ordered `(name, bytes)` pairs exactly like Kafka record headers, so the
//! Kafka transport maps them one to one. The envelope fields (message id, correlation id,
//! conversation id, producing stage, created-at, attempt, W3C trace context) are stamped
//! by `actors::producer` on every record a stage or ingress emits.

use bytes::Bytes;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Header names of the envelope.
pub mod header {
    pub const MESSAGE_ID: &str = "weir-message-id";
    /// The message id of the record this one was produced from.
    pub const CAUSATION_ID: &str = "weir-causation-id";
    pub const CORRELATION_ID: &str = "weir-correlation-id";
    pub const CONVERSATION_ID: &str = "weir-conversation-id";
    pub const STAGE: &str = "weir-stage";
    /// Milliseconds since the Unix epoch when the record was produced.
    pub const CREATED_AT: &str = "weir-created-at";
    /// Milliseconds since the Unix epoch when the first record of this flow entered weir.
    pub const ORIGIN_AT: &str = "weir-origin-at";
    /// How many attempts the producing stage needed.
    pub const ATTEMPT: &str = "weir-attempt";
    /// `business` when the record reports a business outcome (rejection, conflict).
    pub const OUTCOME: &str = "weir-outcome";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";

    /// Dead-letter headers, set on records routed to a stage's DLQ.
    pub const DLQ_STAGE: &str = "weir-dlq-stage";
    pub const DLQ_ERROR_CLASS: &str = "weir-dlq-error-class";
    pub const DLQ_REASON: &str = "weir-dlq-reason";
    pub const DLQ_TOPIC: &str = "weir-dlq-original-topic";
    pub const DLQ_PARTITION: &str = "weir-dlq-original-partition";
    pub const DLQ_OFFSET: &str = "weir-dlq-original-offset";
    pub const DLQ_ATTEMPTS: &str = "weir-dlq-attempts";

    const ALL: &[&str] = &[
        MESSAGE_ID, CAUSATION_ID, CORRELATION_ID, CONVERSATION_ID, STAGE, CREATED_AT, ORIGIN_AT, ATTEMPT, OUTCOME,
        TRACEPARENT, TRACESTATE, DLQ_STAGE, DLQ_ERROR_CLASS, DLQ_REASON, DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET,
        DLQ_ATTEMPTS,
    ];

    /// The static name for one of weir's headers, else an owned copy.
    pub fn intern(name: &str) -> super::HeaderName {
        match ALL.iter().find(|n| **n == name) {
            Some(n) => super::Cow::Borrowed(n),
            None => super::Cow::Owned(name.to_string()),
        }
    }

    /// Maps an envelope field name usable as a `key` (see `topology::ENVELOPE_FIELDS`)
    /// to its header.
    pub fn for_field(field: &str) -> Option<&'static str> {
        match field {
            "message_id" => Some(MESSAGE_ID),
            "correlation_id" => Some(CORRELATION_ID),
            "conversation_id" => Some(CONVERSATION_ID),
            _ => None,
        }
    }
}

/// A header name: weir's own names are static (no allocation per record).
pub type HeaderName = Cow<'static, str>;

/// Ordered record headers. A name may repeat (as in Kafka); `get` returns the last value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(HeaderName, Bytes)>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_ref())
    }

    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Sets `name`, replacing an earlier value in place (and dropping repeats).
    pub fn set(&mut self, name: impl Into<HeaderName>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = value.into();
        match self.0.iter().position(|(n, _)| *n == name) {
            Some(i) => {
                self.0[i].1 = value;
                let mut j = i + 1;
                while j < self.0.len() {
                    if self.0[j].0 == name {
                        self.0.remove(j);
                    } else {
                        j += 1;
                    }
                }
            }
            None => self.0.push((name, value)),
        }
    }

    pub fn set_str(&mut self, name: impl Into<HeaderName>, value: &str) {
        self.set(name, Bytes::copy_from_slice(value.as_bytes()));
    }

    /// Appends without replacing (for transports that read repeated headers). Names of
    /// weir's own headers are interned so copies of them do not allocate.
    pub fn push(&mut self, name: &str, value: Bytes) {
        self.0.push((header::intern(name), value));
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_ref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: i32) -> Self {
        TopicPartition { topic: Arc::from(topic), partition }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// A record read from a partition.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Bytes>,
    pub headers: Headers,
    pub payload: Bytes,
    /// Milliseconds since the Unix epoch, as the transport stamped it.
    pub timestamp_ms: i64,
}

impl Record {
    pub fn key_str(&self) -> Option<&str> {
        self.key.as_deref().and_then(|k| std::str::from_utf8(k).ok())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get_str(name)
    }

    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition { topic: self.topic.clone(), partition: self.partition }
    }
}

/// A record on its way to a topic.
#[derive(Debug, Clone)]
pub struct OutgoingRecord {
    pub topic: String,
    /// Set to pin a partition; otherwise the transport partitions by key (murmur2).
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub headers: Headers,
    pub payload: Bytes,
}

/// When the flow this record belongs to entered weir (ms since the epoch), if stamped.
pub fn origin_ms(headers: &Headers) -> Option<i64> {
    headers.get_str(header::ORIGIN_AT).and_then(|v| v.parse().ok())
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// W3C trace context (`traceparent`). The exporter comes with the observability work;
/// until then weir keeps the context flowing so a trace is never broken at a hop.
pub mod trace_context {
    use std::fmt::Write;

    /// A new root context: `00-<trace id>-<span id>-01`.
    pub fn new_root() -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        let _ = write!(s, "{:032x}", uuid::Uuid::new_v4().as_u128());
        s.push('-');
        push_span_id(&mut s);
        s.push_str("-01");
        s
    }

    /// A child of `parent` (same trace id, new span id), or a new root if `parent` is
    /// missing or malformed.
    pub fn child_of(parent: Option<&str>) -> String {
        match parent.and_then(parse) {
            Some((trace_id, flags)) => {
                let mut s = String::with_capacity(55);
                s.push_str("00-");
                s.push_str(trace_id);
                s.push('-');
                push_span_id(&mut s);
                s.push('-');
                s.push_str(flags);
                s
            }
            None => new_root(),
        }
    }

    /// The trace id of a `traceparent`, if well formed.
    pub fn trace_id(traceparent: &str) -> Option<&str> {
        parse(traceparent).map(|(t, _)| t)
    }

    /// `00-<32 hex>-<16 hex>-<2 hex>`, by position: this runs once per output record.
    fn parse(tp: &str) -> Option<(&str, &str)> {
        let b = tp.as_bytes();
        let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
        let ok = b.len() == 55
            && &b[..3] == b"00-"
            && b[35] == b'-'
            && b[52] == b'-'
            && hex(3..35)
            && hex(36..52)
            && hex(53..55)
            && b[3..35].iter().any(|c| *c != b'0');
        ok.then(|| (&tp[3..35], &tp[53..55]))
    }

    fn push_span_id(s: &mut String) {
        let _ = write!(s, "{:016x}", (uuid::Uuid::new_v4().as_u128() as u64) | 1);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn child_keeps_trace_id_and_changes_span() {
            let root = new_root();
            let child = child_of(Some(&root));
            assert_eq!(trace_id(&root), trace_id(&child));
            assert_ne!(root, child);
            assert_eq!(child.len(), 55);
        }

        #[test]
        fn malformed_parent_starts_a_new_trace() {
            let child = child_of(Some("00-zz-1-01"));
            assert!(trace_id(&child).is_some());
        }
    }
}

/// Stamps the envelope of a record that starts a flow (an ingress request): a new message
/// id that is also the correlation id unless one is given, the origin time, and a trace
/// context continuing `traceparent` when the caller sent one.
pub fn stamp_origin(headers: &mut Headers, stage: &str, traceparent: Option<&str>) -> String {
    let id = new_message_id();
    let now = now_ms().to_string();
    headers.set_str(header::MESSAGE_ID, &id);
    if headers.get(header::CORRELATION_ID).is_none() {
        headers.set_str(header::CORRELATION_ID, &id);
    }
    headers.set_str(header::STAGE, stage);
    headers.set_str(header::CREATED_AT, &now);
    headers.set_str(header::ORIGIN_AT, &now);
    headers.set_str(header::ATTEMPT, "1");
    headers.set_str(header::TRACEPARENT, &trace_context::child_of(traceparent));
    id
}

/// The envelope of a record a stage produced from `parent`: the parent's headers (minus
/// dead-letter ones) with a new message id, the parent's id as causation id, this stage,
/// the attempt count and a child trace context. Correlation and conversation ids and the
/// origin time carry over. Built in one pass: this runs for every output of every record.
pub fn stamp_child(parent: &Headers, stage: &str, attempt: u32) -> Headers {
    const REPLACED: &[&str] = &[
        header::MESSAGE_ID,
        header::CAUSATION_ID,
        header::STAGE,
        header::CREATED_AT,
        header::ATTEMPT,
        header::TRACEPARENT,
        header::OUTCOME,
    ];
    let mut h = Vec::with_capacity(parent.0.len() + 4);
    for (n, v) in &parent.0 {
        if !n.starts_with("weir-dlq-") && !REPLACED.contains(&n.as_ref()) {
            h.push((n.clone(), v.clone()));
        }
    }
    let mut h = Headers(h);
    let now = now_ms();
    if let Some(parent_id) = parent.get(header::MESSAGE_ID) {
        let parent_id = Bytes::copy_from_slice(parent_id);
        if parent.get(header::CORRELATION_ID).is_none() {
            h.0.push((Cow::Borrowed(header::CORRELATION_ID), parent_id.clone()));
        }
        h.0.push((Cow::Borrowed(header::CAUSATION_ID), parent_id));
    }
    if parent.get(header::ORIGIN_AT).is_none() {
        h.0.push((Cow::Borrowed(header::ORIGIN_AT), Bytes::from(now.to_string())));
    }
    h.0.push((Cow::Borrowed(header::MESSAGE_ID), Bytes::from(new_message_id())));
    h.0.push((Cow::Borrowed(header::STAGE), Bytes::copy_from_slice(stage.as_bytes())));
    h.0.push((Cow::Borrowed(header::CREATED_AT), Bytes::from(now.to_string())));
    h.0.push((Cow::Borrowed(header::ATTEMPT), Bytes::from(attempt.to_string())));
    h.0.push((
        Cow::Borrowed(header::TRACEPARENT),
        Bytes::from(trace_context::child_of(parent.get_str(header::TRACEPARENT))),
    ));
    h
}

impl Record {
    /// The record as one JSON object (`weir tail`, the admin API): payload as JSON when it
    /// parses, else as text.
    pub fn to_json(&self) -> serde_json::Value {
        let headers: serde_json::Map<String, serde_json::Value> = self
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), serde_json::Value::String(String::from_utf8_lossy(v).into_owned())))
            .collect();
        let payload = serde_json::from_slice::<serde_json::Value>(&self.payload)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&self.payload).into_owned()));
        serde_json::json!({
            "topic": &*self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": self.key_str(),
            "headers": headers,
            "payload": payload,
        })
    }
}

/// Hostile input (issue 9): any header names and values, any payload bytes. Reading the
/// envelope, stamping a child and decoding the payload never panic; a payload that does
/// not decode is an `Err` the runtime dead-letters (a permanent error).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(header::TRACEPARENT.to_string()),
            Just(header::TRACESTATE.to_string()),
            Just(header::MESSAGE_ID.to_string()),
            Just(header::CORRELATION_ID.to_string()),
            Just(header::ORIGIN_AT.to_string()),
            Just(header::DLQ_REASON.to_string()),
            any::<String>(),
        ]
    }

    fn value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            crate::telemetry::spans::props::traceparent_like().prop_map(String::into_bytes),
            "-?[0-9]{0,25}".prop_map(String::into_bytes),
        ]
    }

    fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        proptest::collection::vec((name(), value()), 0..12)
    }

    fn built(pairs: &[(String, Vec<u8>)]) -> Headers {
        let mut h = Headers::new();
        for (n, v) in pairs {
            h.push(n, Bytes::copy_from_slice(v));
        }
        h
    }

    fn one(h: &Headers, name: &str) -> usize {
        h.iter().filter(|(n, _)| *n == name).count()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn headers_read_the_last_value(pairs in headers()) {
            let h = built(&pairs);
            for (n, _) in &pairs {
                let last = pairs.iter().rev().find(|(m, _)| m == n).map(|(_, v)| v.as_slice());
                prop_assert_eq!(h.get(n), last);
                prop_assert_eq!(h.get_str(n), last.and_then(|v| std::str::from_utf8(v).ok()));
            }
            let _ = origin_ms(&h);
        }

        #[test]
        fn a_child_envelope_is_always_well_formed(pairs in headers(), stage in any::<String>(), attempt in any::<u32>()) {
            let parent = built(&pairs);
            let child = stamp_child(&parent, &stage, attempt);
            for name in [header::MESSAGE_ID, header::TRACEPARENT, header::STAGE, header::ATTEMPT, header::CREATED_AT] {
                prop_assert_eq!(one(&child, name), 1, "{}", name);
            }
            prop_assert!(child.iter().all(|(n, _)| !n.starts_with("weir-dlq-")));
            let tp = child.get_str(header::TRACEPARENT).unwrap_or_default();
            prop_assert!(trace_context::trace_id(tp).is_some(), "{tp:?}");
            // A well-formed parent context is continued, anything else starts a new trace.
            if let Some(parent_trace) = parent.get_str(header::TRACEPARENT).and_then(trace_context::trace_id) {
                prop_assert_eq!(trace_context::trace_id(tp), Some(parent_trace));
            }
            let mut origin = parent.clone();
            let id = stamp_origin(&mut origin, &stage, parent.get_str(header::TRACEPARENT));
            prop_assert_eq!(origin.get_str(header::MESSAGE_ID), Some(id.as_str()));
        }

        #[test]
        fn records_show_and_decode_without_panicking(
            pairs in headers(),
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            payload in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..256),
                any::<String>().prop_map(String::into_bytes),
                "\\{\"[a-z_]{0,12}\": ?(null|-?[0-9]{1,22}|\"[^\"]{0,8}\"|\\[|\\{)\\}?".prop_map(String::into_bytes),
            ],
        ) {
            let record = Record {
                topic: Arc::from("in"),
                partition: 0,
                offset: 0,
                key: key.map(Bytes::from),
                headers: built(&pairs),
                payload: Bytes::from(payload),
                timestamp_ms: 0,
            };
            let _ = record.key_str();
            let _ = record.to_json();
            for decoded in [
                crate::stages::decode::<TypedMessage>(&record).map(|_| ()),
                crate::stages::decode::<serde_json::Value>(&record).map(|_| ()),
            ] {
                if let Err(e) = decoded {
                    prop_assert!(matches!(e, crate::stages::StageError::Permanent(_)), "{e:?}");
                }
            }
            let _ = checks().check_bytes("typed", &record.payload);
            let _ = checks().check_bytes("schema", &record.payload);
        }
    }

    /// A typed payload with required, optional and numeric fields (the shape of a webhook
    /// message), registered below as `test.TypedMessage`.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct TypedMessage {
        id: String,
        from: String,
        #[serde(default)]
        name: Option<String>,
        text: String,
        timestamp: i64,
    }

    /// A topic with a registered payload type and one with a JSON schema.
    fn checks() -> &'static crate::stages::payload::PayloadChecks {
        static CHECKS: std::sync::OnceLock<crate::stages::payload::PayloadChecks> = std::sync::OnceLock::new();
        CHECKS.get_or_init(|| {
            let yaml = "topics:\n  typed: {partitions: 1, payload_type: test.TypedMessage}\n  schema: {partitions: 1, schema: {type: object, required: [id], properties: {id: {type: integer}}}}\n";
            let mut registry = crate::stages::Registry::builtin();
            registry.register_payload::<TypedMessage>("test.TypedMessage");
            let topology =
                crate::topology::Topology::parse("t.yaml", yaml, &|_| None, &registry).unwrap_or_else(|d| panic!("{d}"));
            let plan = topology.plan(None).expect("plan");
            crate::stages::payload::PayloadChecks::build(plan.topics.values(), registry.payloads()).expect("checks")
        })
    }
}
