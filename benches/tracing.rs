//! What trace export costs: the embedded 3-stage passthrough topology (as in
//! `benches/embedded.rs`) with span export off, on with 100 % sampling and on with 1 %.
//!
//! The tracing subscriber is global to a process, so each mode runs in a child process
//! of this harness. Records enter with a `traceparent` whose sampled flag was decided at
//! the given ratio, as an ingress request's would be. Spans go over OTLP/HTTP to a sink served here on 127.0.0.1 (it counts
//! what it receives and answers 200), so the measurement includes encoding and sending.
//!
//! Run: `cargo bench --bench tracing`. Prints records/s per mode (best of 3 runs of
//! 50 000 records) and the ratio to the mode without export. Numbers go in benches/README.md.

mod common;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir::envelope::Headers;

const RECORDS: u64 = 50_000;
const RUNS: usize = 3;
const MODE_VAR: &str = "WEIR_BENCH_TRACING_MODE";


fn main() {
    // `cargo bench` passes `--bench`; a child gets its mode through the environment.
    match std::env::var(MODE_VAR) {
        Ok(mode) => child(&mode),
        Err(_) => parent(),
    }
}

fn parent() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let addr = rt.block_on(async move {
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(body.len() as u64, Ordering::Relaxed);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let exe = std::env::current_exe().expect("own path");
    let mut baseline = None;
    println!("{RECORDS} records through 3 passthrough stages (embedded), best of {RUNS}:");
    for mode in ["off", "1.0", "0.01"] {
        let before = received.load(Ordering::Relaxed);
        let out = std::process::Command::new(&exe)
            .env(MODE_VAR, mode)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let rate: f64 = text.trim().parse().unwrap_or_else(|_| panic!("child `{mode}` printed {text:?}; stderr: {}", String::from_utf8_lossy(&out.stderr)));
        let sent = received.load(Ordering::Relaxed) - before;
        let base = *baseline.get_or_insert(rate);
        let label = match mode {
            "off" => "export off".to_string(),
            r => format!("export on, sampling {:.0} %", r.parse::<f64>().unwrap_or(0.0) * 100.0),
        };
        println!("  {label:<28} {:>9.0} records/s  ({:.2}× off)  {:>8} KiB of spans received", rate, rate / base, sent / 1024);
    }
}

fn child(mode: &str) {
    // The subscriber `weir run` installs: logs at info to stderr, plus span export.
    let settings = (mode != "off").then(|| weir::telemetry::trace::TracingSettings {
        endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").expect("endpoint"),
        service_name: "weir-bench".into(),
        sampling: mode.parse().expect("a sampling ratio"),
    });
    let _guard = weir::cli::init_logging(settings.as_ref()).expect("subscriber");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let best = rt.block_on(async {
        let mut best = Duration::MAX;
        for _ in 0..RUNS {
            best = best.min(run_once().await);
        }
        best
    });
    println!("{:.0}", RECORDS as f64 / best.as_secs_f64());
}

async fn run_once() -> Duration {
    let ratio: f64 = std::env::var(MODE_VAR).ok().and_then(|m| m.parse().ok()).unwrap_or(0.0);
    common::three_stages_once(RECORDS, "weir-bench-tracing", |i| {
        // As from an HTTP ingress: the flow's trace context with the sampling decision
        // made where the trace started (`ratio` of the traces are recorded).
        let mut headers = Headers::new();
        if ratio > 0.0 {
            let sampled = (i as f64 * ratio).floor() != ((i + 1) as f64 * ratio).floor();
            let tp = weir::envelope::trace_context::new_root();
            let tp = if sampled { tp } else { format!("{}00", &tp[..53]) };
            headers.set_str(weir::envelope::header::TRACEPARENT, &tp);
        }
        common::record("in", i, headers)
    })
    .await
}
