//! Observability: Prometheus metrics (`metrics`), distributed tracing over OTLP (`trace`)
//! and the spans weir makes (`spans`).

pub mod metrics;
pub mod spans;
pub mod trace;
