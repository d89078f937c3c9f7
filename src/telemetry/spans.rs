//! The spans weir makes, named and attributed after the OpenTelemetry messaging semantic
//! conventions (`messaging.*`) plus weir's own (`weir.*`). Built only while trace export
//! is on (see `trace::enabled`).

use super::trace;
use crate::actors::processing::Processed;
use crate::envelope::{header, Record};
use crate::topology::plan::StagePlan;
use std::sync::atomic::{AtomicU8, Ordering};

/// `messaging.system` of this process's transport ("kafka" or "weir-embedded").
static SYSTEM: AtomicU8 = AtomicU8::new(0);

pub fn set_messaging_system(transport_kind: &str) {
    SYSTEM.store(u8::from(transport_kind == "kafka"), Ordering::Relaxed);
}

fn messaging_system() -> &'static str {
    if SYSTEM.load(Ordering::Relaxed) == 1 {
        "kafka"
    } else {
        "weir-embedded"
    }
}

/// Whether a `traceparent` says its trace is recorded (flags bit 0). The header comes from
/// whoever produced the record, so it is read with `get`: byte 53 of a crafted value may
/// fall inside a multi-byte character, where slicing would panic before the record could
/// be dead-lettered.
fn sampled(traceparent: &str) -> bool {
    traceparent.len() == 55
        && traceparent.get(53..55).is_some_and(|flags| {
            flags.bytes().all(|b| b.is_ascii_hexdigit()) && u8::from_str_radix(flags, 16).is_ok_and(|f| f & 1 == 1)
        })
}

/// The span of one stage handling one record: a consumer span, child of the span that
/// produced the record (from its `traceparent` header). `None` when the trace was not
/// sampled where it started: no span is built, and the record's `traceparent` (flag
/// unset) travels on unchanged, so an unsampled trace costs almost nothing.
pub fn record_span(plan: &StagePlan, record: &Record) -> Option<tracing::Span> {
    if record.headers.get_str(header::TRACEPARENT).is_some_and(|tp| !sampled(tp)) {
        return None;
    }
    let span = tracing::info_span!(
        target: "weir::record",
        "process",
        otel.name = format!("process {}", record.topic),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = messaging_system(),
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = &*record.topic,
        messaging.destination.partition.id = record.partition,
        messaging.kafka.offset = record.offset,
        messaging.consumer.group.name = %plan.group,
        messaging.message.id = record.headers.get_str(header::MESSAGE_ID).unwrap_or(""),
        messaging.message.conversation_id = record.headers.get_str(header::CORRELATION_ID).unwrap_or(""),
        weir.stage = %plan.name,
        weir.kind = %plan.kind,
        weir.attempt = tracing::field::Empty,
        weir.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    trace::adopt_parent(&span, &record.headers);
    Some(span)
}

/// Records how the handling ended on the current record span (no-op without one).
pub fn note_outcome(outcome: &str, attempt: u32, error_class: Option<&str>) {
    if !trace::enabled() {
        return;
    }
    let span = tracing::Span::current();
    if span.is_none() {
        return;
    }
    span.record("weir.outcome", outcome);
    span.record("weir.attempt", attempt);
    if let Some(class) = error_class {
        span.record("error.type", class);
        span.record("otel.status_code", "ERROR");
    }
}

/// Outcomes the record path cannot note itself (interrupted, panicked).
pub fn record_outcome(span: &tracing::Span, processed: &Processed) {
    match processed {
        Processed::Enqueued(_) => {}
        Processed::Abandoned => {
            span.record("weir.outcome", "abandoned");
        }
        Processed::Fenced => {
            span.record("weir.outcome", "fenced");
        }
        Processed::StageFailed(_) => {
            span.record("weir.outcome", "panic");
            span.record("error.type", "panic");
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The span of an HTTP ingress request: a server span that starts the flow's trace (or
/// continues the caller's, if the request carried a `traceparent`).
pub fn ingress_span(names: &str, method: &str, path: &str, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        target: "weir::ingress",
        "ingress",
        otel.name = format!("{method} {path}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        url.path = path,
        http.response.status_code = tracing::field::Empty,
        weir.ingress = names,
        messaging.system = messaging_system(),
    );
    trace::adopt_traceparent(&span, traceparent);
    span
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sampled_flag_is_read_from_traceparent() {
        assert!(super::sampled("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        assert!(!super::sampled("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"));
        assert!(!super::sampled("garbage"));
    }

    /// Regression (issue 9): a 55-byte `traceparent` with a multi-byte character across
    /// byte 53 panicked on `&tp[53..55]`.
    #[test]
    fn a_multibyte_character_at_byte_53_is_not_sampled_and_does_not_panic() {
        // 52 ASCII bytes, then `é` over bytes 52..54: byte 53 is inside it.
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331é1";
        assert_eq!((tp.len(), tp.is_char_boundary(53)), (55, false));
        assert!(!super::sampled(tp));
        // `+1` parses as a number for `from_str_radix`; flags are two hex digits only.
        assert!(!super::sampled("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-+1"));
    }
}

/// Hostile input (issue 9): whatever a producer puts in `traceparent`/`tracestate`, building
/// the record's span and reading its parent never panic.
#[cfg(test)]
pub(crate) mod props {
    use super::*;
    use crate::envelope::Headers;
    use proptest::prelude::*;
    use std::sync::{Arc, OnceLock};

    const VALID: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    /// Strings shaped like a `traceparent`, damaged where it hurts: arbitrary text, the
    /// valid form with any character spliced in or any byte range replaced.
    pub(crate) fn traceparent_like() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[0-9a-f-]{50,58}",
            (0usize..=55, any::<char>()).prop_map(|(at, c)| {
                let mut s = VALID.to_string();
                s.insert(at, c);
                s
            }),
            (0usize..55, 0usize..4, "\\PC{0,3}").prop_map(|(at, len, with)| {
                let end = (at + len).min(VALID.len());
                format!("{}{with}{}", &VALID[..at], &VALID[end..])
            }),
        ]
    }

    fn plan() -> &'static StagePlan {
        static PLAN: OnceLock<StagePlan> = OnceLock::new();
        PLAN.get_or_init(|| {
            let yaml = "topics:\n  in: {partitions: 1}\n  out: {partitions: 1}\nstages:\n  s: {kind: passthrough, from: in, to: out}\n";
            let registry = crate::stages::Registry::builtin();
            let topology =
                crate::topology::Topology::parse("t.yaml", yaml, &|_| None, &registry).unwrap_or_else(|d| panic!("{d}"));
            topology.plan(None).expect("plan").stages.into_iter().next().expect("one stage")
        })
    }

    fn record(headers: Headers) -> Record {
        Record {
            topic: Arc::from("in"),
            partition: 0,
            offset: 0,
            key: None,
            headers,
            payload: bytes::Bytes::new(),
            timestamp_ms: 0,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn sampled_never_panics(tp in traceparent_like()) {
            let flag_set = sampled(&tp);
            // Only a 55-byte value ending in two hex digits with bit 0 set counts as sampled.
            if flag_set {
                let flags = tp.get(53..55).map(|f| u8::from_str_radix(f, 16));
                prop_assert!(matches!(flags, Some(Ok(f)) if f & 1 == 1), "{tp:?}");
            }
        }

        #[test]
        fn record_span_and_parent_never_panic(
            tp in traceparent_like(),
            ts in any::<String>(),
            raw in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let mut h = Headers::new();
            h.set_str(header::TRACEPARENT, &tp);
            h.set_str(header::TRACESTATE, &ts);
            let _ = record_span(plan(), &record(h.clone()));
            trace::adopt_parent(&tracing::Span::none(), &h);
            trace::adopt_traceparent(&tracing::Span::none(), Some(&tp));
            // Bytes that are not UTF-8 read as absent, never as a panic.
            let mut h = Headers::new();
            h.set(header::TRACEPARENT, raw.clone());
            h.set(header::TRACESTATE, raw);
            let _ = record_span(plan(), &record(h.clone()));
            trace::adopt_parent(&tracing::Span::none(), &h);
        }
    }
}
