//! One WhatsApp message, one trace: the Skeji pipeline runs as two processes (`edge`,
//! `core`) on Kafka exporting spans to a real Jaeger (started by scripts/test.sh); the
//! trace of the message must hold the ingress request and every stage that handled it,
//! from both services, each span linked to a parent inside the same trace.

use crate::skeji::flows::{self, TopicLog};
use crate::skeji::KafkaSkeji;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use weir::envelope::header;

fn jaeger_query() -> String {
    std::env::var("WEIR_JAEGER_QUERY")
        .expect("WEIR_JAEGER_QUERY is not set: run the tests with scripts/test.sh, which starts Jaeger")
}

fn otlp_endpoint() -> String {
    std::env::var("WEIR_JAEGER_OTLP").unwrap_or_else(|_| "http://127.0.0.1:4318".into())
}

/// A span as Jaeger's query API returns it.
#[derive(Debug)]
struct Span {
    id: String,
    parent: Option<String>,
    service: String,
    operation: String,
    stage: Option<String>,
}

async fn fetch_trace(trace_id: &str) -> Vec<Span> {
    let url = format!("{}/api/traces/{trace_id}", jaeger_query());
    let resp = weir::net::client().expect("http").get(&url).send().await.expect("Jaeger answers");
    if !resp.status().is_success() {
        return Vec::new(); // not ingested yet
    }
    let body: serde_json::Value = resp.json().await.expect("json");
    let Some(trace) = body["data"].get(0) else { return Vec::new() };
    let services: HashMap<String, String> = trace["processes"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v["serviceName"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default();
    trace["spans"]
        .as_array()
        .map(|spans| {
            spans
                .iter()
                .map(|s| {
                    let tag = |key: &str| {
                        s["tags"].as_array().and_then(|t| t.iter().find(|x| x["key"] == key)).and_then(|x| x["value"].as_str()).map(str::to_string)
                    };
                    Span {
                        id: s["spanID"].as_str().unwrap_or("").to_string(),
                        parent: s["references"]
                            .as_array()
                            .and_then(|r| r.iter().find(|x| x["refType"] == "CHILD_OF"))
                            .and_then(|x| x["spanID"].as_str())
                            .map(str::to_string),
                        service: services.get(s["processID"].as_str().unwrap_or("")).cloned().unwrap_or_default(),
                        operation: s["operationName"].as_str().unwrap_or("").to_string(),
                        stage: tag("weir.stage"),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_across_both_nodes() {
    let endpoint = otlp_endpoint();
    let skeji = KafkaSkeji::start_with(&[], &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]).await;
    let log = TopicLog::follow(&flows::Deployment::transport(&skeji), &flows::Deployment::topic(&skeji, "notifications-sent")).await;
    let phone = "972541230000";
    flows::post(&skeji, phone, &format!("wamid.trace-{}", uuid::Uuid::new_v4().simple()), "Hi, book a haircut in Tel Aviv tomorrow at 3pm").await;
    let confirmation = log
        .wait_for(Duration::from_secs(15), |rs| {
            rs.iter().find(|r| flows::sent(r).is_some_and(|n| n.to == phone && n.kind == "result")).cloned()
        })
        .await
        .expect("a booking confirmation within 15 s");
    let traceparent = confirmation.headers.get_str(header::TRACEPARENT).expect("traceparent on the reply").to_string();
    let trace_id = traceparent.split('-').nth(1).expect("trace id").to_string();
    // Stopping the nodes flushes their span exporters.
    skeji.stop();

    let expected_stages = ["gateway", "scrub", "llm", "executor", "business-units", "schedules", "bookings", "notifier-pipeline"];
    let started = Instant::now();
    let spans = loop {
        let spans = fetch_trace(&trace_id).await;
        let stages: HashSet<&str> = spans.iter().filter_map(|s| s.stage.as_deref()).collect();
        let complete = expected_stages.iter().all(|s| stages.contains(s)) && spans.iter().any(|s| s.operation.starts_with("POST "));
        // Jaeger ingests asynchronously and offers no event to wait on: poll, bounded.
        if complete || started.elapsed() > Duration::from_secs(30) {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    let mut per_service: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &spans {
        *per_service.entry(s.service.as_str()).or_default() += 1;
    }
    println!("jaeger: trace {trace_id}: {} spans; per service {per_service:?}", spans.len());
    for s in &spans {
        println!("  {:<10} {:<45} stage={:?}", s.service, s.operation, s.stage);
    }
    let stages: HashSet<&str> = spans.iter().filter_map(|s| s.stage.as_deref()).collect();
    for want in expected_stages {
        assert!(stages.contains(want), "no span of stage `{want}` in trace {trace_id}: {stages:?}");
    }
    let root: Vec<&Span> = spans.iter().filter(|s| s.parent.is_none()).collect();
    assert_eq!(root.len(), 1, "one root span: {root:?}");
    assert!(root[0].operation.starts_with("POST /webhooks/whatsapp"), "the ingress request starts the trace: {root:?}");
    assert_eq!(root[0].service, "weir-edge");
    let ids: HashSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    for s in &spans {
        if let Some(p) = &s.parent {
            assert!(ids.contains(p.as_str()), "span {} ({:?}) has a parent outside the trace", s.operation, s.stage);
        }
    }
    let service_of = |stage: &str| spans.iter().find(|s| s.stage.as_deref() == Some(stage)).map(|s| s.service.clone());
    assert_eq!(service_of("gateway").as_deref(), Some("weir-edge"));
    assert_eq!(service_of("bookings").as_deref(), Some("weir-core"));
    // The gateway's span is the child of the ingress request's.
    let gateway = spans.iter().find(|s| s.stage.as_deref() == Some("gateway")).expect("gateway span");
    assert_eq!(gateway.parent.as_deref(), Some(root[0].id.as_str()));
}
