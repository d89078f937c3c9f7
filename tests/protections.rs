//! The runtime's protections around every stage, on the embedded transport with an
//! `http` stage calling a scripted service on 127.0.0.1:
//! - `timeout`: attempts on requests that hang are cancelled and retried;
//! - `circuit_breaker`: a 10 s outage opens it; records wait, none is dead-lettered or
//!   lost, and all are delivered once a probe closes it;
//! - `rate_limit`: one limit for all of a stage's partitions in the node.
//!
//! Each test counts what came out (lost, duplicated), what was dead-lettered and what the
//! service saw.

mod common;
#[path = "services/mod.rs"]
mod services;

use common::*;
use services::{metric, MockService, Reply};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An `http` stage `name` over 4 partitions calling `{base}/{path}/{id}`; `settings` are
/// extra stage settings (indented under the stage), `top` extra top-level sections.
fn topology(name: &str, base: &str, path: &str, top: &str, settings: &str) -> String {
    format!(
        r#"
metrics: {{listen: "127.0.0.1:0"}}
{top}
topics:
  {name}-in: {{partitions: 4}}
  {name}-out: {{partitions: 4}}
  {name}-dlq: {{partitions: 1}}
stages:
  {name}:
    kind: http
    from: {name}-in
    to: {name}-out
    dlq: {name}-dlq
    concurrency: 8
    commit: {{every: 10, interval: 50ms}}
{settings}
    config:
      url: "{base}/{path}/{{id}}"
      method: POST
      into: reply
"#
    )
}

/// The last path segment as a number (the record id the URL template put there).
fn path_id(path: &str) -> u64 {
    path.rsplit('/').next().and_then(|s| s.parse().ok()).expect("path ends in an id")
}

async fn dlq_len(node: &weir::runtime::NodeHandle, topic: &str) -> i64 {
    node.transport.end_offset(&weir::envelope::TopicPartition::new(topic, 0)).await.expect("dlq end")
}

async fn send(node: &weir::runtime::NodeHandle, topic: &str, n: u64) {
    let records = (0..n).map(|id| record(topic, id, &format!("k{id}"), id, serde_json::json!({}))).collect();
    produce(&node.transport, records).await;
}

fn lost_and_duplicated(out: &[weir::envelope::Record], n: u64) -> (usize, usize) {
    let got: BTreeSet<u64> = out.iter().map(id_of).collect();
    ((0..n).filter(|id| !got.contains(id)).count(), out.len() - got.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_that_hang_are_cancelled_by_the_timeout_and_retried() {
    // Every third record's first request hangs for a minute (longer than the kind's own
    // 30 s request timeout), so only the stage's `timeout` (from `defaults:`) ends it.
    let service = MockService::start(|seen, earlier| {
        let id = path_id(&seen.path);
        let reply = Reply::json(serde_json::json!({"echo": id}));
        if id % 3 == 0 && earlier == 0 { reply.after(Duration::from_secs(60)) } else { reply }
    })
    .await;
    let (name, n) = ("protect-timeout", 30u64);
    let hanging = (0..n).filter(|id| id % 3 == 0).count() as u64;
    let yaml = topology(
        name,
        &service.url(),
        "slow",
        "defaults: {timeout: 300ms}",
        "    retry: {attempts: 3, backoff: fixed, initial: 20ms, max: 1s}",
    );
    let node = start(&yaml, Options::default()).await;
    send(&node, &format!("{name}-in"), n).await;
    let out = collect_unique(&node.transport, &format!("{name}-out"), n as usize).await;
    wait_fully_committed(&node, name, &format!("{name}-in")).await;
    let (lost, dup) = lost_and_duplicated(&out, n);
    let dead = dlq_len(&node, &format!("{name}-dlq")).await;
    let stats = node.stats.stage(name);
    let (timed_out, retried) = (stats.timeouts.load(Ordering::Relaxed), stats.retried.load(Ordering::Relaxed));
    let port = node.metrics.expect("metrics port");
    let timed_out_metric = metric(port, "weir_attempts_timed_out_total", &[("stage", name)]).await;
    let requests = service.seen().len() as u64;
    println!(
        "timeout: sent {n}, delivered {}, lost {lost}, duplicated {dup}, dead-lettered {dead}, \
         hanging {hanging}, timed out {timed_out} (metric {timed_out_metric}), retried {retried}, requests {requests}",
        out.len()
    );
    assert_eq!((lost, dup, dead), (0, 0, 0));
    assert_eq!(timed_out, hanging, "each hanging attempt was cancelled once");
    assert_eq!(timed_out_metric, hanging as f64);
    assert_eq!(retried, hanging, "and retried");
    assert_eq!(requests, n + hanging, "one more request per hanging record, none for the others");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_breaker_records_wait_and_all_are_delivered_after_it() {
    // The service answers 503 while `down`; the test flips it back after 10 s.
    let down = Arc::new(AtomicBool::new(true));
    let service = {
        let down = down.clone();
        MockService::start(move |seen, _| {
            if down.load(Ordering::SeqCst) {
                Reply::status(503, "down for maintenance")
            } else {
                Reply::json(serde_json::json!({"echo": path_id(&seen.path)}))
            }
        })
        .await
    };
    let (name, n) = ("protect-breaker", 40u64);
    // 3 attempts with a 50 ms backoff: without the breaker, every record would be
    // dead-lettered within a second of the outage's start.
    let settings = "    retry: {attempts: 3, backoff: fixed, initial: 50ms, max: 1s}\n    \
                    circuit_breaker: {failure_ratio: 0.5, min_calls: 5, window: 5s, open_for: 1s}";
    let node = start(&topology(name, &service.url(), "flaky", "", settings), Options::default()).await;
    let stats = node.stats.stage(name);
    let port = node.metrics.expect("metrics port");
    assert_eq!(metric(port, "weir_circuit_state", &[("stage", name)]).await, 0.0, "closed at the start");

    let outage = Duration::from_secs(10);
    let t0 = Instant::now();
    send(&node, &format!("{name}-in"), n).await;
    tokio::time::timeout(DEADLINE, stats.wait_circuit(|s| s >= 1)).await.expect("the breaker opens");
    let opened_at = t0.elapsed();
    let gauge = metric(port, "weir_circuit_state", &[("stage", name)]).await;
    let ready: serde_json::Value = weir::net::client()
        .expect("client")
        .get(format!("http://{port}/readyz"))
        .send()
        .await
        .expect("GET /readyz")
        .json()
        .await
        .expect("readyz body");
    let ready_state = ready["circuit_breakers"][name].as_str().unwrap_or_default().to_string();

    // The outage itself is the scenario: it lasts 10 s from the first record.
    tokio::time::sleep(outage.saturating_sub(t0.elapsed())).await;
    let dead_during = dlq_len(&node, &format!("{name}-dlq")).await;
    let requests_during = service.seen().len();
    down.store(false, Ordering::SeqCst);
    let back_at = t0.elapsed();

    tokio::time::timeout(DEADLINE, stats.wait_circuit(|s| s == 0)).await.expect("a probe closes the breaker");
    let closed_at = t0.elapsed();
    let out = collect_unique(&node.transport, &format!("{name}-out"), n as usize).await;
    wait_fully_committed(&node, name, &format!("{name}-in")).await;
    let (lost, dup) = lost_and_duplicated(&out, n);
    let dead = dlq_len(&node, &format!("{name}-dlq")).await;
    let opens = stats.circuit_opens.load(Ordering::Relaxed);
    let gauge_after = metric(port, "weir_circuit_state", &[("stage", name)]).await;
    println!(
        "circuit breaker: sent {n}, delivered {}, dead-lettered {dead}, lost {lost}, duplicated {dup}; \
         breaker opened at {opened_at:.2?} (gauge {gauge}, /readyz `{ready_state}`), opened {opens} times, \
         service back at {back_at:.2?}, closed at {closed_at:.2?} (gauge {gauge_after}); \
         requests during the 10 s outage {requests_during}, in all {}",
        out.len(),
        service.seen().len()
    );
    assert!(gauge == 1.0 || gauge == 2.0, "open (or already probing) while the service is down, gauge {gauge}");
    assert!(ready_state == "open" || ready_state == "half-open", "/readyz shows the breaker: {ready}");
    assert!(opened_at < back_at && closed_at >= back_at, "opened during the outage, closed after it");
    assert_eq!((dead_during, dead, lost, dup), (0, 0, 0, 0));
    assert!(opens >= 2, "failed probes re-opened it during the outage ({opens} openings)");
    // Without the breaker the records would have made 3 requests each (120) and been
    // dead-lettered; with it, the first attempts and one probe per `open_for`.
    assert!(requests_during < n as usize, "records waited instead of calling: {requests_during} requests");
    assert_eq!(gauge_after, 0.0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_shared_by_all_partitions_of_the_stage() {
    let service = MockService::start(|seen, _| Reply::json(serde_json::json!({"echo": path_id(&seen.path)}))).await;
    let (name, n, per_second) = ("protect-rate", 40u64, 20u32);
    let settings = format!("    rate_limit: {{per_second: {per_second}, burst: 1}}");
    let node = start(&topology(name, &service.url(), "limited", "", &settings), Options::default()).await;
    send(&node, &format!("{name}-in"), n).await;
    let out = collect_unique(&node.transport, &format!("{name}-out"), n as usize).await;
    wait_fully_committed(&node, name, &format!("{name}-in")).await;
    let (lost, dup) = lost_and_duplicated(&out, n);
    let partitions = node.stats.stage(name).partitions.len();
    let mut times: Vec<Instant> = service.seen().iter().map(|s| s.at).collect();
    times.sort();
    let span = times[times.len() - 1] - times[0];
    // The most requests any one second saw, over all partitions together.
    let busiest = (0..times.len())
        .map(|i| times[i..].iter().take_while(|t| **t - times[i] < Duration::from_secs(1)).count())
        .max()
        .unwrap_or(0);
    let shared_floor = Duration::from_secs_f64((n - 1) as f64 / f64::from(per_second) * 0.9);
    println!(
        "rate limit: sent {n}, delivered {}, lost {lost}, duplicated {dup}, partitions {partitions}, \
         requests {}, span {span:.2?} (shared limit: ≥ {shared_floor:.2?}; per partition it would be a quarter), \
         busiest second {busiest} (limit {per_second}/s)",
        out.len(),
        times.len()
    );
    assert_eq!((lost, dup), (0, 0));
    assert_eq!(partitions, 4, "the stage consumes all four partitions in this node");
    assert!(span >= shared_floor, "{n} requests at {per_second}/s take at least {shared_floor:?}, took {span:?}");
    assert!(busiest <= per_second as usize + 2, "at most the limit (+ burst) in any second, saw {busiest}");
    node.shutdown().await;
}
