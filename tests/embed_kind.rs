//! The `embed` kind: the offline hashing embedder by default (unit vectors, equal texts
//! equal vectors), and the OpenAI-compatible `/embeddings` client against a fake server.

mod common;
#[path = "services/mod.rs"]
mod services;

use common::*;
use services::{MockService, Reply};

fn topology(name: &str, provider: &str) -> String {
    format!(
        r#"
topics:
  {name}-in: {{partitions: 2}}
  {name}-out: {{partitions: 2}}
stages:
  {name}:
    kind: embed
    from: {name}-in
    to: {name}-out
    config:
      text: "{{title}}"
      into: vec
{provider}
"#
    )
}

fn vector(r: &weir::envelope::Record) -> Vec<f64> {
    json(r)["vec"].as_array().expect("vec").iter().map(|x| x.as_f64().expect("number")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_embedder_by_default() {
    let node = start(&topology("emb-hash", "      provider: {kind: hashing, dims: 32}"), Options::default()).await;
    let n = 10;
    let records = (0..n).map(|id| record("emb-hash-in", id, &format!("k{id}"), id, serde_json::json!({"title": if id % 2 == 0 {"red shoes"} else {"blue hat"}}))).collect();
    produce(&node.transport, records).await;
    let out = collect_unique(&node.transport, "emb-hash-out", n as usize).await;
    let unit = out.iter().filter(|r| (vector(r).iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-5).count();
    let dims_ok = out.iter().filter(|r| vector(r).len() == 32).count();
    let (even, odd): (Vec<_>, Vec<_>) = out.iter().partition(|r| id_of(r) % 2 == 0);
    let same_text_same_vector = even.windows(2).all(|w| vector(w[0]) == vector(w[1])) && odd.windows(2).all(|w| vector(w[0]) == vector(w[1]));
    println!("embed hashing: sent {n}, received {}, unit vectors {unit}, 32 dims {dims_ok}, equal texts equal vectors {same_text_same_vector}", out.len());
    assert_eq!((unit, dims_ok), (n as usize, n as usize));
    assert!(same_text_same_vector);
    assert_ne!(vector(even[0]), vector(odd[0]));
    assert!(out.iter().all(|r| r.header("weir-embed-provider") == Some("hashing")));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_embeddings() {
    let service = MockService::start(|seen, _| {
        let input = seen.json()["input"][0].as_str().unwrap_or("").len() as f64;
        Reply::json(serde_json::json!({"data": [{"index": 0, "embedding": [input, 0.5, -1.0]}], "model": "fake-embed"}))
    })
    .await;
    let provider = format!("      provider: {{kind: openai, model: fake-embed, base_url: \"{}/v1\"}}", service.url());
    let node = start(&topology("emb-openai", &provider), Options::default()).await;
    let n = 6;
    let records = (0..n).map(|id| record("emb-openai-in", id, &format!("k{id}"), id, serde_json::json!({"title": "x".repeat(id as usize + 1)}))).collect();
    produce(&node.transport, records).await;
    let out = collect_unique(&node.transport, "emb-openai-out", n as usize).await;
    let right = out.iter().filter(|r| vector(r) == vec![(id_of(r) + 1) as f64, 0.5, -1.0]).count();
    let seen = service.seen();
    println!("embed openai: sent {n}, received {}, right vectors {right}, requests {}", out.len(), seen.len());
    assert_eq!(right, n as usize);
    assert_eq!(seen.len(), n as usize);
    assert!(seen.iter().all(|s| s.path == "/v1/embeddings" && s.json()["model"] == "fake-embed"));
    node.shutdown().await;
}
