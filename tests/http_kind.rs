//! The `http` kind against a scripted service on 127.0.0.1, on the embedded transport:
//! 200, 429 with `Retry-After: 1` (the wait between attempts measured), 503 then success,
//! 400 to the DLQ with the status, and a per-request timeout that is retried. Each test
//! counts what came out, what was dead-lettered and what the service saw.

mod common;
#[path = "services/mod.rs"]
mod services;

use common::*;
use services::{MockService, Reply};
use std::collections::BTreeSet;
use std::time::Duration;
use weir::envelope::header;

fn topology(name: &str, base: &str, path: &str, extra: &str) -> String {
    format!(
        r#"
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
    retry: {{attempts: 4, backoff: fixed, initial: 20ms, max: 5s}}
    config:
      url: "{base}{path}"
      method: POST
      into: reply
{extra}
"#
    )
}

/// The last path segment as a number (the record id the URL template put there).
fn path_id(path: &str) -> u64 {
    path.rsplit('/').next().and_then(|s| s.parse().ok()).expect("path ends in an id")
}

async fn dlq_len(node: &weir::runtime::NodeHandle, topic: &str) -> i64 {
    let tp = weir::envelope::TopicPartition::new(topic, 0);
    node.transport.end_offset(&tp).await.expect("dlq end")
}

async fn run(name: &str, service: &MockService, path: &str, extra: &str, n: u64) -> (weir::runtime::NodeHandle, Vec<weir::envelope::Record>) {
    let node = start(&topology(name, &service.url(), path, extra), Options::default()).await;
    let in_topic = format!("{name}-in");
    let records = (0..n).map(|id| record(&in_topic, id, &format!("k{}", id % 5), id, serde_json::json!({}))).collect();
    produce(&node.transport, records).await;
    let out = collect_unique(&node.transport, &format!("{name}-out"), n as usize).await;
    wait_fully_committed(&node, name, &in_topic).await;
    (node, out)
}

fn lost_and_duplicated(out: &[weir::envelope::Record], n: u64) -> (usize, usize) {
    let got: BTreeSet<u64> = out.iter().map(id_of).collect();
    ((0..n).filter(|id| !got.contains(id)).count(), out.len() - got.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_responses_go_under_into() {
    let service = MockService::start(|seen, _| Reply::json(serde_json::json!({"echo": path_id(&seen.path), "body": seen.json()}))).await;
    let n = 40;
    // A header from an env secret (a unique name: tests of this binary share the process).
    std::env::set_var("WEIR_TEST_HTTP_TOKEN", "Bearer t0ken");
    let headers = "      headers:\n        authorization: {value_env: WEIR_TEST_HTTP_TOKEN}\n        x-team: growth";
    let (node, out) = run("http-ok", &service, "/ok/{id}", headers, n).await;
    let (lost, dup) = lost_and_duplicated(&out, n);
    let mismatched = out.iter().filter(|r| json(r)["reply"]["echo"] != json(r)["id"]).count();
    let bodies_ok = out.iter().filter(|r| json(r)["reply"]["body"]["id"] == json(r)["id"]).count();
    let dead = dlq_len(&node, "http-ok-dlq").await;
    println!("http 200: sent {n}, received {}, lost {lost}, duplicated {dup}, mismatched {mismatched}, dead-lettered {dead}, requests {}", out.len(), service.seen().len());
    assert_eq!((lost, dup, mismatched, dead), (0, 0, 0, 0));
    assert_eq!(bodies_ok, n as usize, "the payload is the request body");
    assert_eq!(service.seen().len(), n as usize, "one request per record");
    let authorized = service.seen().iter().filter(|s| {
        s.headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer t0ken")
            && s.headers.get("x-team").and_then(|v| v.to_str().ok()) == Some("growth")
    }).count();
    assert_eq!(authorized, n as usize, "headers, the secret one from the environment");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    // The first request per path answers 429 with `Retry-After: 1`; the stage's own
    // backoff is 20 ms, so a gap of a second can only come from the header.
    let service = MockService::start(|seen, earlier| match earlier {
        0 => Reply::status(429, "slow down").with_header("retry-after", "1"),
        _ => Reply::json(serde_json::json!({"echo": path_id(&seen.path)})),
    })
    .await;
    let n = 3;
    let (node, out) = run("http-429", &service, "/limited/{id}", "", n).await;
    let (lost, dup) = lost_and_duplicated(&out, n);
    let mut gaps = Vec::new();
    for id in 0..n {
        let times: Vec<_> = service.seen_under(&format!("/limited/{id}")).iter().map(|s| s.at).collect();
        assert_eq!(times.len(), 2, "id {id}: one 429, one success");
        gaps.push(times[1] - times[0]);
    }
    let dead = dlq_len(&node, "http-429-dlq").await;
    println!("http 429: sent {n}, received {}, lost {lost}, duplicated {dup}, dead-lettered {dead}, waits between attempts {gaps:?}", out.len());
    assert_eq!((lost, dup, dead), (0, 0, 0));
    for g in &gaps {
        assert!(*g >= Duration::from_secs(1), "Retry-After: 1 must hold the retry at least 1 s, waited {g:?}");
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_then_success_is_retried() {
    let service = MockService::start(|seen, earlier| match earlier {
        0 => Reply::status(503, "warming up"),
        _ => Reply::json(serde_json::json!({"echo": path_id(&seen.path)})),
    })
    .await;
    let n = 20;
    let (node, out) = run("http-503", &service, "/flaky/{id}", "", n).await;
    let (lost, dup) = lost_and_duplicated(&out, n);
    let dead = dlq_len(&node, "http-503-dlq").await;
    let requests = service.seen().len();
    println!("http 503→200: sent {n}, received {}, lost {lost}, duplicated {dup}, dead-lettered {dead}, requests {requests}", out.len());
    assert_eq!((lost, dup, dead), (0, 0, 0));
    assert_eq!(requests, 2 * n as usize, "one failed and one good request per record");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_is_dead_lettered_with_status() {
    let service = MockService::start(|_, _| Reply::status(400, "field `email` is required")).await;
    let n = 6u64;
    let name = "http-400";
    let node = start(&topology(name, &service.url(), "/bad/{id}", ""), Options::default()).await;
    let records = (0..n).map(|id| record("http-400-in", id, &format!("k{id}"), id, serde_json::json!({}))).collect();
    produce(&node.transport, records).await;
    let dlq = collect(&node.transport, "http-400-dlq", n as usize).await;
    wait_fully_committed(&node, name, "http-400-in").await;
    let dead: BTreeSet<u64> = dlq.iter().map(id_of).collect();
    let with_status = dlq
        .iter()
        .filter(|r| {
            let reason = r.header(header::DLQ_REASON).unwrap_or("");
            reason.contains("HTTP 400") && reason.contains("field `email` is required")
        })
        .count();
    let permanent = dlq.iter().filter(|r| r.header(header::DLQ_ERROR_CLASS) == Some("permanent")).count();
    let out_end = node.transport.end_offset(&weir::envelope::TopicPartition::new("http-400-out", 0)).await.expect("end");
    println!(
        "http 400: sent {n}, dead-lettered {} ({with_status} with status and body, {permanent} permanent), requests {}, reason: {:?}",
        dead.len(),
        service.seen().len(),
        dlq[0].header(header::DLQ_REASON)
    );
    assert_eq!(dead.len(), n as usize);
    assert_eq!(with_status, n as usize);
    assert_eq!(permanent, n as usize);
    assert_eq!(service.seen().len(), n as usize, "a 400 is not retried");
    assert_eq!(out_end, 0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_retried() {
    // The first request per path hangs for 5 s; the stage's per-request timeout is 200 ms.
    let service = MockService::start(|seen, earlier| {
        let reply = Reply::json(serde_json::json!({"echo": path_id(&seen.path)}));
        if earlier == 0 { reply.after(Duration::from_secs(5)) } else { reply }
    })
    .await;
    let n = 8;
    let (node, out) = run("http-timeout", &service, "/slow/{id}", "      timeout: 200ms", n).await;
    let (lost, dup) = lost_and_duplicated(&out, n);
    let dead = dlq_len(&node, "http-timeout-dlq").await;
    let retried = node.stats.stage("http-timeout").retried.load(std::sync::atomic::Ordering::Relaxed);
    println!("http timeout: sent {n}, received {}, lost {lost}, duplicated {dup}, dead-lettered {dead}, retried {retried}, requests {}", out.len(), service.seen().len());
    assert_eq!((lost, dup, dead), (0, 0, 0));
    assert_eq!(retried, n, "each record timed out once and was retried");
    assert_eq!(service.seen().len(), 2 * n as usize);
    node.shutdown().await;
}
