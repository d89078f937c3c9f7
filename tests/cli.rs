//! The `weir` binary as a user runs it: validate, graph, and run → SIGTERM → exit 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_weir");
const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pipeline.yaml");

fn weir(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env("WEIR_LOG", "warn").output().expect("weir runs")
}

#[test]
fn validate_accepts_a_good_file_with_a_one_line_summary() {
    let out = weir(&["validate", "-t", FIXTURE]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("valid") && stdout.contains("5 topics") && stdout.contains("2 stages"), "{stdout}");
}

#[test]
fn validate_refuses_a_bad_file_naming_line_and_stage() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "topics:\n  in: {partitions: 1}\nstages:\n  copy:\n    kind: passthrough\n    from: in\n    to: nowhere\n",
    )
    .expect("write");
    let out = weir(&["validate", "-t", bad.to_str().expect("path")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad.yaml:7:"), "{stderr}");
    assert!(stderr.contains("copy") && stderr.contains("nowhere"), "{stderr}");

    // `run` refuses the same file before starting anything.
    let run = weir(&["run", "-t", bad.to_str().expect("path")]);
    assert_eq!(run.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&run.stderr).contains("nothing was started"));
}

#[test]
fn graph_prints_stages_topics_and_dlq() {
    let out = weir(&["graph", "-t", FIXTURE]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for name in ["router", "audit-log", "events-in", "dlq-router", "events-api"] {
        assert!(text.contains(name), "graph lacks {name}:\n{text}");
    }
    let dot = weir(&["graph", "-t", FIXTURE, "--format", "dot"]);
    assert!(String::from_utf8_lossy(&dot.stdout).contains("digraph"));
}

#[test]
fn version_and_help() {
    let v = weir(&["--version"]);
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("weir "));
    let h = weir(&["--help"]);
    let text = String::from_utf8_lossy(&h.stdout);
    for cmd in ["run", "validate", "graph", "produce", "tail"] {
        assert!(text.contains(cmd), "{text}");
    }
}

/// `weir run` serves the ingress, processes records, and on SIGTERM drains, commits and
/// exits 0 well within its shutdown bound.
#[tokio::test]
async fn run_processes_records_and_exits_zero_on_sigterm() {
    let data = tempfile::tempdir().expect("tmp");
    let mut child = KillOnDrop(Some(
        Command::new(BIN)
            .args(["run", "-t", FIXTURE, "--data-dir"])
            .arg(data.path())
            .args(["--shutdown-timeout", "10s"])
            .env("WEIR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir run starts"),
    ));
    let stderr = child.get().stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let (mut ingress, mut admin) = (None, None);
    while ingress.is_none() || admin.is_none() || !log.iter().any(|l: &String| l.contains("weir is running")) {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("weir logs its start");
        if line.contains("ingress listening") {
            ingress = addr_in(&line);
        }
        if line.contains("admin port listening") {
            admin = addr_in(&line);
        }
        log.push(line);
    }
    let (ingress, admin) = (ingress.expect("ingress addr"), admin.expect("admin addr"));

    let http = weir::net::client().expect("http client");
    let body = r#"[{"customer_id":"c1","type":"order"},{"customer_id":"c2","type":"refund"},{"customer_id":"c3","type":"unknown"}]"#;
    let resp = http.post(format!("http://{ingress}/events")).body(body).send().await.expect("post");
    assert_eq!(resp.status(), 200);
    // Two records reach the audit topic, the third the DLQ.
    let audit = tail(&http, admin, "audit", 2).await;
    assert_eq!(audit.lines().count(), 2, "{audit}");
    let dlq = tail(&http, admin, "dlq-router", 1).await;
    assert!(dlq.contains("no route for `type` = `unknown`"), "{dlq}");

    let pid = child.get().id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut waiting = child.0.take().expect("child");
    std::thread::spawn(move || {
        let _ = done_tx.send(waiting.wait());
    });
    let status = done_rx.recv_timeout(Duration::from_secs(20)).expect("weir exits within 20 s").expect("status");
    log.extend(rx.try_iter());
    let log = log.join("\n");
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(log.contains("node stopped") && log.contains("code=0"), "{log}");
}

/// The first `n` records of `topic` as JSON lines, waiting for them to arrive.
async fn tail(http: &reqwest::Client, admin: std::net::SocketAddr, topic: &str, n: usize) -> String {
    let url = format!("http://{admin}/topics/{topic}/records?follow=true&limit={n}");
    let resp = http.get(url).timeout(Duration::from_secs(30)).send().await.expect("tail");
    resp.text().await.expect("body")
}

/// Kills the child if the test fails before it exits, so no process outlives the test.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn get(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("child still owned")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn addr_in(line: &str) -> Option<std::net::SocketAddr> {
    line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).and_then(|a| a.parse().ok())
}
