//! End to end: `examples/enrich/topology.yaml` as shipped (`http` → `llm` with the mock
//! provider → `sql`), on the embedded transport, fed through its HTTP ingress, against a
//! scripted intent service on 127.0.0.1 and the real PostgreSQL. Counts the rows written
//! (every lead once, redeliveries included) and checks `weir validate` accepts the file.
//! Skips, saying so, when `WEIR_POSTGRES_URL` is unset.

mod common;
#[path = "services/mod.rs"]
mod services;

use services::{metric, MockService, Reply};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use weir::runtime::{self, NodeOptions};
use weir::topology::Topology;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/enrich/topology.yaml");
const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/enrich/schema.sql");

#[test]
fn weir_validate_accepts_the_example() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["validate", "-t", EXAMPLE])
        .output()
        .expect("run weir validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("weir validate: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success());
    assert!(stdout.contains("3 stages"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leads_are_enriched_scored_and_written_once() {
    let pg = std::env::var("WEIR_POSTGRES_URL")
        .expect("WEIR_POSTGRES_URL is not set: run the tests with scripts/test.sh, which starts PostgreSQL");
    common::init_logging();
    let (db, conn) = tokio_postgres::connect(&pg, tokio_postgres::NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    db.batch_execute(&std::fs::read_to_string(SCHEMA).expect("schema.sql")).await.expect("apply schema.sql");
    let run = format!("e2e-{}-", std::process::id());
    db.execute("DELETE FROM enrich_leads WHERE event_id LIKE $1", &[&format!("{run}%")]).await.expect("clean");

    // The intent service: "buy" when the message asks about pricing.
    let intent = MockService::start(|seen, _| {
        let message = seen.json()["message"].as_str().unwrap_or("").to_string();
        let kind = if message.contains("pricing") { "buy" } else { "browse" };
        Reply::json(serde_json::json!({"type": kind})).after(Duration::from_millis(5))
    })
    .await;

    let vars: BTreeMap<&str, String> = BTreeMap::from([
        ("INTENT_URL", intent.url()),
        ("ENRICH_LISTEN", "127.0.0.1:0".to_string()),
        ("ENRICH_METRICS_LISTEN", "127.0.0.1:0".to_string()),
    ]);
    let env = |name: &str| vars.get(name).cloned();
    let text = std::fs::read_to_string(EXAMPLE).expect("example");
    let topology = match Topology::parse(EXAMPLE, &text, &env, &common::registry()) {
        Ok(t) => t,
        Err(d) => panic!("example is invalid:\n{d}"),
    };
    let mut options = NodeOptions::new(topology.plan(None).expect("plan"), Arc::new(common::registry()));
    options.data_dir = std::env::temp_dir().join(format!("weir-enrich-{}", std::process::id()));
    options.worker_threads = Some(2);
    let node = runtime::start(options).await.expect("node starts");

    let n = 60u64;
    let again = 15u64;
    let lead = |i: u64| {
        let message = if i % 3 == 0 { "what is your pricing for 20 seats?" } else { "just looking around" };
        serde_json::json!({"event_id": format!("{run}{i}"), "lead_id": format!("L{}", i % 20), "message": message})
    };
    // Every lead once, then the first 15 again, as a client retrying its POST would.
    let body: Vec<_> = (0..n).chain(0..again).map(lead).collect();
    let (_, ingress) = node.ingress.first().cloned().expect("the example has an ingress");
    let answer = weir::net::client()
        .expect("client")
        .post(format!("http://{ingress}/leads"))
        .json(&body)
        .send()
        .await
        .expect("POST /leads");
    assert!(answer.status().is_success(), "ingress answered {}", answer.status());

    let rows = tokio::time::timeout(common::DEADLINE, async {
        loop {
            let rows = db
                .query("SELECT event_id, intent_type, priority FROM enrich_leads WHERE event_id LIKE $1", &[&format!("{run}%")])
                .await
                .expect("select");
            if rows.len() as u64 >= n {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("every lead written within the deadline");
    common::wait_fully_committed(&node, "store", "leads-scored").await;

    let mut right_intent = 0;
    let mut scored = 0;
    for row in &rows {
        let event: String = row.get(0);
        let i: u64 = event.trim_start_matches(&run).parse().expect("event id");
        let kind: String = row.get(1);
        if kind == if i % 3 == 0 { "buy" } else { "browse" } {
            right_intent += 1;
        }
        if row.get::<_, String>(2) == "high" {
            scored += 1;
        }
    }
    let port = node.metrics.expect("metrics port");
    let dead = node.transport.end_offset(&weir::envelope::TopicPartition::new("dlq-enrich", 0)).await.expect("dlq");
    let hits = metric(port, "weir_llm_cache_total", &[("stage", "score"), ("result", "hit")]).await;
    let tokens = metric(port, "weir_llm_tokens_total", &[("stage", "score"), ("direction", "input")]).await;
    println!(
        "enrich e2e: posted {} ({n} leads + {again} repeats), rows written {}, with the service's intent {right_intent}, scored by the mock {scored}, dead-lettered {dead}, intent calls {}, llm cache hits {hits}, llm input tokens {tokens}",
        n + again,
        rows.len(),
        intent.seen().len()
    );
    assert_eq!(rows.len() as u64, n, "each lead exactly once");
    assert_eq!(right_intent, n);
    assert_eq!(scored, n);
    assert_eq!(dead, 0);
    assert_eq!(intent.seen().len() as u64, n + again, "one intent call per record");
    // The prompt is a function of (lead_id, message): every record after the first with
    // the same pair is answered from the cache.
    let distinct: std::collections::BTreeSet<(String, String)> =
        (0..n).map(lead).map(|v| (v["lead_id"].to_string(), v["message"].to_string())).collect();
    assert_eq!(hits, (n + again - distinct.len() as u64) as f64, "repeated prompts are answered from the cache");
    node.shutdown().await;
}
