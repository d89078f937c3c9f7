//! `/metrics` adds up: N good and B bad records through a router and a passthrough on the
//! embedded transport; the Prometheus text (parsed with a text-format parser) must count
//! N + B consumed by the router, B dead-lettered, N through the second stage, and report
//! lag 0 on every partition once the commits are in.

mod common;

use common::{run_router_audit, start, Options, ROUTER_AUDIT};
use std::collections::HashMap;


struct Scraped(Vec<prometheus_parse::Sample>, String);

impl Scraped {
    async fn fetch(metrics: std::net::SocketAddr) -> Scraped {
        let text = weir::net::client()
            .expect("client")
            .get(format!("http://{metrics}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("body");
        let lines = text.lines().map(|l| Ok(l.to_string()));
        Scraped(prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text").samples, text)
    }

    /// The samples named `name` whose labels include `labels`.
    fn values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.0
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{name}: unexpected sample {other:?}"),
            })
            .collect()
    }

    fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.values(name, labels).as_slice() {
            [v] => *v,
            other => panic!("{name}{labels:?}: expected one sample, got {other:?} in\n{}", self.1),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_record_and_lag_returns_to_zero() {
    let node = start(ROUTER_AUDIT, Options::default()).await;
    let metrics = node.metrics.expect("metrics port");
    let (good, bad) = (300u64, 17u64);
    run_router_audit(&node, good, bad).await;

    let m = Scraped::fetch(metrics).await;
    let total = (good + bad) as f64;
    assert_eq!(m.one("weir_records_consumed_total", &[("stage", "router"), ("topic", "orders-in")]), total);
    assert_eq!(m.one("weir_records_completed_total", &[("stage", "router")]), total);
    assert_eq!(m.one("weir_records_produced_total", &[("stage", "router"), ("topic", "routed")]), good as f64);
    assert_eq!(m.one("weir_records_dead_lettered_total", &[("stage", "router"), ("topic", "dlq-router")]), bad as f64);
    assert_eq!(m.one("weir_records_failed_total", &[("stage", "router"), ("class", "permanent")]), bad as f64);
    assert_eq!(m.one("weir_records_consumed_total", &[("stage", "audit"), ("topic", "routed")]), good as f64);
    assert_eq!(m.one("weir_records_produced_total", &[("stage", "audit"), ("topic", "audited")]), good as f64);
    assert_eq!(m.one("weir_stage_processing_seconds_count", &[("stage", "audit")]), good as f64);
    assert_eq!(m.one("weir_node_healthy", &[]), 1.0);

    let lags: HashMap<(String, String), f64> = m
        .0
        .iter()
        .filter(|s| s.metric == "weir_consumer_lag")
        .map(|s| {
            let label = |k: &str| s.labels.get(k).unwrap_or_default().to_string();
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            };
            ((label("stage"), format!("{}[{}]", label("topic"), label("partition"))), v)
        })
        .collect();
    assert_eq!(lags.len(), 8, "a lag sample per consumed partition: {lags:?}");
    assert!(lags.values().all(|v| *v == 0.0), "lag back to 0 everywhere: {lags:?}");
    println!(
        "metrics: router consumed {total}, dead-lettered {bad}, audit consumed {good}; {} partitions at lag 0",
        lags.len()
    );

    let ready =
        weir::net::client().expect("client").get(format!("http://{metrics}/readyz")).send().await.expect("GET /readyz");
    assert_eq!(ready.status(), 200, "ready once both stages joined");
    assert_eq!(node.shutdown().await.code, 0);
}
