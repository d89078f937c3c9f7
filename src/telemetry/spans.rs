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

/// Whether a `traceparent` says its trace is recorded (flags bit 0).
fn sampled(traceparent: &str) -> bool {
    traceparent.len() == 55 && u8::from_str_radix(&traceparent[53..55], 16).is_ok_and(|f| f & 1 == 1)
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
}
