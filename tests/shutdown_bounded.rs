//! SIGTERM ends `weir run` with exit 0 in bounded time while everything that used to hold
//! a shutdown open is holding: a `tail -f` on the admin port, a client trickling a request
//! body into the ingress, and producers blocked on full embedded partitions (the stage's,
//! writing to a topic whose only reader runs on another node and so never commits, and the
//! ingress's, writing to the stage's input that cannot drain).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_weir");
const TOKEN: &str = "shutdown-bounded-token";
/// A safety bound on waits that should end much sooner.
const DEADLINE: Duration = Duration::from_secs(30);
const DRAIN: Duration = Duration::from_secs(2);
/// What "a few seconds" beyond `drain_timeout` is allowed to be.
const SLACK: Duration = Duration::from_secs(4);
const CAPACITY: usize = 4;

const YAML: &str = r#"
name: shutdown-bounded
embedded: {max_records_per_partition: 4}
metrics: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0", token: "${WEIR_ADMIN_TOKEN}"}
defaults:
  drain_timeout: 2s
  commit: {every: 1, interval: 50ms}
topics:
  jobs: {partitions: 1}
  stuck: {partitions: 1}
  drained: {partitions: 1}
ingress:
  api: {kind: http-json, listen: "127.0.0.1:0", path: /jobs, to: jobs}
stages:
  mover: {kind: passthrough, from: jobs, to: stuck}
  # Runs on the other node: on this one, nobody commits `stuck`, so it stays full.
  sink: {kind: passthrough, from: stuck, to: drained}
nodes:
  front: [api, mover]
  back: [sink]
"#;

fn addr_in(line: &str) -> Option<std::net::SocketAddr> {
    line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).and_then(|a| a.parse().ok())
}

/// Kills the child if the test fails before it exits, so no process outlives the test.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn stage_stats(http: &reqwest::Client, admin: std::net::SocketAddr) -> serde_json::Value {
    let resp = http.get(format!("http://{admin}/stats")).bearer_auth(TOKEN).send().await.expect("GET /stats");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("stats JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_in_bounded_time_with_a_tail_a_slow_body_and_full_partitions() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("shutdown.yaml");
    std::fs::write(&file, YAML).expect("write topology");
    let mut child = KillOnDrop(Some(
        Command::new(BIN)
            .args(["run", "--node", "front", "-t"])
            .arg(&file)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--shutdown-timeout", "5s"])
            .env("WEIR_LOG", "info")
            .env("WEIR_ADMIN_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir run starts"),
    ));
    let stderr = child.0.as_mut().and_then(|c| c.stderr.take()).expect("stderr");
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
        let line = rx.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("weir logs its start:\n{}", log.join("\n")));
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

    // A follow on `stuck`: it prints what the stage wrote, then waits for more.
    let tail = http
        .get(format!("http://{admin}/topics/stuck/records?follow=true"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("tail -f");
    assert_eq!(tail.status(), 200);
    let mut tail = tail.bytes_stream();

    // Far more records than both partitions hold: the request waits for room that never comes.
    let many: Vec<serde_json::Value> = (0..20).map(|i| serde_json::json!({"job": i})).collect();
    let post = {
        let http = http.clone();
        tokio::spawn(async move {
            let resp = http.post(format!("http://{ingress}/jobs")).json(&many).timeout(DEADLINE * 2).send().await;
            resp.map(|r| r.status().as_u16())
        })
    };

    // `stuck` fills up: the tail sees its CAPACITY records...
    let mut seen = String::new();
    let filled = async {
        while seen.lines().count() < CAPACITY {
            let chunk = futures::StreamExt::next(&mut tail).await.expect("tail open").expect("tail chunk");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    tokio::time::timeout(DEADLINE, filled).await.expect("the stage filled `stuck`");
    // ...and the stage has consumed one more whose output waits for room (nothing shows
    // it but the counters, so read them until they do).
    let blocked = async {
        loop {
            let s = stage_stats(&http, admin).await;
            let mover = &s["stages"]["mover"];
            if mover["consumed"].as_u64().unwrap_or(0) > CAPACITY as u64 {
                break mover.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mover = tokio::time::timeout(DEADLINE, blocked).await.expect("the stage waits on the full partition");
    assert_eq!(mover["produced"].as_u64(), Some(CAPACITY as u64), "{mover}");
    assert!(!post.is_finished(), "the ingress request waits for room in `jobs`");

    // A client that sends its headers, then a byte of body now and then.
    let mut slow = tokio::net::TcpStream::connect(ingress).await.expect("connect");
    slow.write_all(
        format!("POST /jobs HTTP/1.1\r\nhost: {ingress}\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n[")
            .as_bytes(),
    )
    .await
    .expect("send head");
    let (mut slow_read, mut slow_write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let mut sent = 0u32;
        while slow_write.write_all(b" ").await.is_ok() {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sent
    });

    let pid = child.0.as_ref().map(|c| c.id()).expect("pid").to_string();
    let started = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    let mut waiting = child.0.take().expect("child");
    let exited = tokio::task::spawn_blocking(move || {
        let status = waiting.wait();
        (status, Instant::now())
    });
    let (status, at) = tokio::time::timeout(DEADLINE * 2, exited).await.expect("weir exits").expect("join");
    let took = at.duration_since(started);
    let status = status.expect("exit status");
    log.extend(rx.try_iter());
    let log = log.join("\n");

    // What the clients saw: the tail ended, the waiting request and the slow body were answered or cut.
    let tail_ended = tokio::time::timeout(DEADLINE, async {
        while let Some(chunk) = futures::StreamExt::next(&mut tail).await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await
    .is_ok();
    let post_status = tokio::time::timeout(DEADLINE, post).await.expect("request ended").expect("join");
    let mut slow_answer = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, slow_read.read_to_end(&mut slow_answer)).await.expect("slow client cut");
    let slow_answer = String::from_utf8_lossy(&slow_answer).lines().next().unwrap_or("(closed)").to_string();
    trickle.abort();

    println!(
        "SIGTERM -> exit {:?} in {:.2}s (drain_timeout {}s + {}s allowed); tail ended: {tail_ended}; \
         blocked ingress request: {post_status:?}; slow body: {slow_answer}; stage consumed {} produced {}",
        status.code(),
        took.as_secs_f64(),
        DRAIN.as_secs(),
        SLACK.as_secs(),
        mover["consumed"],
        mover["produced"],
    );
    assert!(status.success(), "exit {status:?}\n{log}");
    assert!(took < DRAIN + SLACK, "shutdown took {took:?}\n{log}");
    assert!(tail_ended, "the tail ended with the node");
    assert!(log.contains("node stopped") && log.contains("code=0"), "{log}");
}
