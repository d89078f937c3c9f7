//! Distributed tracing: one trace per flow, across stages and nodes.
//!
//! The W3C trace context travels in record headers (`traceparent`, `tracestate`) on every
//! transport. The ingress request starts the trace; each stage's handling of a record is a
//! span whose parent is read from the record's headers, and the stage's outputs carry that
//! span's context onwards. Spans are exported over OTLP/HTTP when an endpoint is set
//! (topology `tracing.endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT`); without one no span is
//! even created on the record path ([`enabled`] is false), so tracing costs nothing.

use crate::envelope::{header, Headers};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported. The record path checks this before building a span.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Where and how to export spans.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// OTLP/HTTP base URL (e.g. `http://127.0.0.1:4318`); `/v1/traces` is appended.
    pub endpoint: String,
    /// `service.name` of this process's spans (`weir-edge`, `weir-core`, …).
    pub service_name: String,
    /// Fraction of new traces (started at ingress) that are recorded, 0.0..=1.0.
    /// Downstream stages follow the decision carried in `traceparent`.
    pub sampling: f64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up trace export to {endpoint}: {reason}")]
pub struct TracingError {
    endpoint: String,
    reason: String,
}

/// Keeps the exporter alive; flushes what is buffered when dropped.
pub struct TracingGuard {
    provider: SdkTracerProvider,
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("weir: flushing spans at exit failed: {e}");
        }
    }
}

/// Builds the OpenTelemetry layer for the subscriber and turns span creation on.
pub fn layer<S>(settings: &TracingSettings) -> Result<(impl tracing_subscriber::Layer<S>, TracingGuard), TracingError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let endpoint = traces_url(&settings.endpoint);
    crate::net::install_tls_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|e| TracingError { endpoint: endpoint.clone(), reason: e.to_string() })?;
    let ratio = settings.sampling.clamp(0.0, 1.0);
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .with_resource(Resource::builder().with_service_name(settings.service_name.clone()).build())
        .build();
    let tracer = provider.tracer("weir");
    ENABLED.store(true, Ordering::Relaxed);
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), TracingGuard { provider }))
}

fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

struct HeaderReader<'a>(&'a Headers);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get_str(key)
    }
    fn keys(&self) -> Vec<&str> {
        vec![header::TRACEPARENT, header::TRACESTATE]
    }
}

struct HeaderWriter<'a>(&'a mut Headers);

impl Injector for HeaderWriter<'_> {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.0.set_str(header::TRACEPARENT, &value),
            "tracestate" => self.0.set_str(header::TRACESTATE, &value),
            _ => {}
        }
    }
}

/// Makes `span` a child of the trace context in `headers` (if any).
pub fn adopt_parent(span: &tracing::Span, headers: &Headers) {
    if headers.get_str(header::TRACEPARENT).is_none() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderReader(headers));
    // Fails only for a span that already started recording: ours are fresh.
    let _ = span.set_parent(parent);
}

/// Makes `span` a child of a `traceparent` value (an HTTP request's header).
pub fn adopt_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(tp) = traceparent {
        let mut h = Headers::new();
        h.set_str(header::TRACEPARENT, tp);
        adopt_parent(span, &h);
    }
}

/// Writes `span`'s context into `headers`, so what is produced continues its trace.
pub fn inject(span: &tracing::Span, headers: &mut Headers) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderWriter(headers));
}

/// The `traceparent` of `span`, for a record that starts a flow under it.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut h = Headers::new();
    inject(span, &mut h);
    h.get_str(header::TRACEPARENT).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_gets_the_traces_path_once() {
        assert_eq!(traces_url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://127.0.0.1:4318/"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }

    #[test]
    fn headers_round_trip_the_trace_context() {
        let mut h = Headers::new();
        h.set_str(header::TRACEPARENT, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let cx = TraceContextPropagator::new().extract(&HeaderReader(&h));
        let mut out = Headers::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderWriter(&mut out));
        assert_eq!(out.get_str(header::TRACEPARENT), h.get_str(header::TRACEPARENT));
    }
}
