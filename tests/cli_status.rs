//! `weir status` against a node started in-process: N good and B bad records through a
//! router and a passthrough; once the commits are in, the binary's JSON must count N + B
//! consumed by the router, B dead-lettered, N through the second stage and lag 0; a node
//! that does not answer makes it exit 1 with "unreachable".

mod common;

use common::{run_router_audit, start, Options, ROUTER_AUDIT};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_weir");


/// Runs the binary off the runtime's threads (the node runs on them).
async fn weir(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        // No topology file on purpose: `--metrics` must be enough.
        Command::new(BIN).args(&args).env("WEIR_LOG", "warn").env("WEIR_TOPOLOGY", "/nonexistent.yaml").output()
    })
    .await
    .expect("join")
    .expect("weir runs")
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn stage<'a>(node: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    node["stages"].as_array().and_then(|a| a.iter().find(|s| s["stage"] == name)).unwrap_or_else(|| panic!("no stage {name} in {node:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_what_the_node_processed() {
    let node = start(ROUTER_AUDIT, Options::default()).await;
    let metrics = node.metrics.expect("metrics port").to_string();
    let (good, bad) = (300u64, 17u64);
    run_router_audit(&node, good, bad).await;

    let args = |more: &[&str]| -> Vec<String> {
        ["status", "--metrics", metrics.as_str(), "--interval", "200ms"].iter().chain(more).map(|s| s.to_string()).collect()
    };
    let out = weir(args(&["--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let n = &report["nodes"][0];
    assert_eq!(n["reachable"], true, "{report:#}");
    assert_eq!((n["node"].as_str(), n["transport"].as_str()), (Some("all"), Some("embedded")), "{report:#}");
    assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!((n["healthy"].as_bool(), n["ready"].as_bool()), (Some(true), Some(true)), "{report:#}");

    let router = stage(n, "router");
    assert_eq!(router["consumed_total"], good + bad, "{router:#}");
    assert_eq!(router["completed_total"], good + bad, "{router:#}");
    assert_eq!(router["dead_lettered_total"], bad, "{router:#}");
    assert_eq!(router["failed_total"], bad, "{router:#}");
    assert_eq!((router["lag"].as_u64(), router["lag_max_partition"].as_u64()), (Some(0), Some(0)), "{router:#}");
    assert_eq!(router["in_flight"], 0);
    assert_eq!(router["consumed_per_second"], 0.0, "nothing arrived between the scrapes: {router:#}");
    assert!(router["p95_processing_seconds"].as_f64().is_some_and(|s| s > 0.0), "{router:#}");

    let audit = stage(n, "audit");
    assert_eq!(audit["consumed_total"], good, "{audit:#}");
    assert_eq!(audit["dead_lettered_total"], 0, "{audit:#}");
    assert_eq!((audit["lag"].as_u64(), audit["lag_max_partition"].as_u64()), (Some(0), Some(0)), "{audit:#}");
    assert_eq!(audit["restarts"], 0);

    // The table: the node line, then a row per stage.
    let out = weir(args(&[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.starts_with(&format!("node all (embedded, weir {}) at http://{metrics}: healthy, ready\n", env!("CARGO_PKG_VERSION"))),
        "{table}"
    );
    let row: Vec<&str> = table.lines().find(|l| l.trim_start().starts_with("router")).expect("router row").split_whitespace().collect();
    assert_eq!(row[..10], ["router", "0.0", "317", "17", "17", "0", "0", "0", "0", "0"], "{table}");
    println!("{table}");

    // One node down among several: the others are still reported, and the exit code is 1.
    let out = weir(args(&["--metrics", "127.0.0.1:1", "--json"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["nodes"][0]["reachable"], true);
    assert_eq!(stage(&report["nodes"][0], "router")["dead_lettered_total"], bad);
    assert_eq!(report["nodes"][1]["reachable"], false);
    assert!(report["nodes"][1]["error"].as_str().is_some_and(|e| !e.is_empty()), "{report:#}");

    assert_eq!(node.shutdown().await.code, 0);
}

#[test]
fn a_node_that_does_not_answer_is_unreachable_and_exits_1() {
    let out = Command::new(BIN)
        .args(["status", "--metrics", "127.0.0.1:1", "--interval", "200ms"])
        .env("WEIR_LOG", "warn")
        .output()
        .expect("weir runs");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("http://127.0.0.1:1: unreachable: "), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 1 node(s) unreachable"), "{}", text(&out));
}
