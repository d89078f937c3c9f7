//! The two ports: management (`admin.listen`) needs the bearer token, and a request
//! without it or with a wrong one changes nothing (the topic's record count, read from the
//! transport's watermarks, stays where it was); the read-only port (`metrics.listen`)
//! serves `/metrics` without a token and serves no produce/tail. `weir run` with a
//! non-loopback admin and no token refuses to start. The listener limits answer with JSON:
//! 408 for a body that does not arrive, 503 over the concurrency bound.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::ingress::listener::HttpLimits;
use weir::envelope::TopicPartition;
use weir::runtime::{self, NodeHandle, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;

const BIN: &str = env!("CARGO_BIN_EXE_weir");
const TOKEN: &str = "test-admin-token-5f1c";
/// A safety bound on waits that should end much sooner.
const DEADLINE: Duration = Duration::from_secs(30);

const YAML: &str = r#"
name: admin-security
metrics: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0", token: "test-admin-token-5f1c"}
topics:
  orders: {partitions: 3}
"#;

/// A node of `yaml`; `limits` replace what the topology's `http:` says.
async fn start(yaml: &str, limits: Option<HttpLimits>) -> (NodeHandle, tempfile::TempDir) {
    let registry = Registry::builtin();
    let topology = Topology::parse("admin-security.yaml", yaml, &|_| None, &registry).unwrap_or_else(|d| panic!("{d}"));
    let data = tempfile::tempdir().expect("tmp");
    let mut opts = NodeOptions::new(topology.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = data.path().to_path_buf();
    if let Some(l) = limits {
        opts.http_limits = l;
    }
    opts.worker_threads = Some(2);
    (runtime::start(opts).await.expect("node starts"), data)
}

/// Records in `topic`, from the transport's watermarks.
async fn count(node: &NodeHandle, topic: &str) -> i64 {
    let parts = node.transport.partition_count(topic).await.expect("topic");
    let mut n = 0;
    for p in 0..parts {
        let (low, high) = node.transport.watermarks(&TopicPartition::new(topic, p)).await.expect("watermarks");
        n += high - low;
    }
    n
}

fn http() -> reqwest::Client {
    weir::net::client().expect("http client")
}

const BODY: &str = r#"[{"id":1},{"id":2},{"id":3}]"#;

async fn post(url: &str, auth: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = http().post(url).body(BODY).timeout(DEADLINE);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("POST");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_needs_the_token_and_a_refused_request_changes_nothing() {
    let (node, _data) = start(YAML, None).await;
    let admin = node.admin.expect("admin port");
    let produce = format!("http://{admin}/topics/orders/records");
    assert_eq!(count(&node, "orders").await, 0);

    let (status, body) = post(&produce, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("Authorization")), "{body}");
    let after_none = count(&node, "orders").await;

    let mut wrong_statuses = Vec::new();
    for wrong in ["Bearer wrong", "Bearer test-admin-token-5f1", "Bearer test-admin-token-5f1cX", "Basic dGVzdA==", TOKEN] {
        let (status, body) = post(&produce, Some(wrong)).await;
        assert_eq!(status, 401, "{wrong}: {body}");
        assert!(body["error"].is_string(), "{body}");
        wrong_statuses.push(status);
    }
    let after_wrong = count(&node, "orders").await;

    // Reading needs the token as much as writing.
    for path in ["/topics/orders/records?follow=false", "/stats"] {
        let resp = http().get(format!("http://{admin}{path}")).timeout(DEADLINE).send().await.expect("GET");
        assert_eq!(resp.status(), 401, "{path}");
    }

    let (status, body) = post(&produce, Some(&format!("Bearer {TOKEN}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 3, "{body}");
    let after_right = count(&node, "orders").await;
    println!(
        "admin: no token -> 401, records {after_none}; wrong tokens -> {wrong_statuses:?}, records {after_wrong}; \
         right token -> 200, records {after_right}"
    );
    assert_eq!((after_none, after_wrong, after_right), (0, 0, 3));

    let stats = http().get(format!("http://{admin}/stats")).bearer_auth(TOKEN).timeout(DEADLINE).send().await.expect("GET");
    assert_eq!(stats.status(), 200);
    assert_eq!(node.shutdown().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_port_serves_metrics_without_a_token_and_no_management() {
    let (node, _data) = start(YAML, None).await;
    let metrics = node.metrics.expect("metrics port");
    assert_ne!(Some(metrics), node.admin, "two ports");

    let resp = http().get(format!("http://{metrics}/metrics")).timeout(DEADLINE).send().await.expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert!(text.contains("weir_node_healthy"), "{text}");
    for probe in ["/healthz", "/readyz"] {
        let resp = http().get(format!("http://{metrics}{probe}")).timeout(DEADLINE).send().await.expect("GET");
        assert_eq!(resp.status(), 200, "{probe}");
    }

    // No produce, tail or stats here, with or without a token.
    let (status, _) = post_raw(&format!("http://{metrics}/topics/orders/records"), TOKEN).await;
    assert_eq!(status, 404);
    for path in ["/topics/orders/records", "/stats"] {
        let resp = http().get(format!("http://{metrics}{path}")).bearer_auth(TOKEN).timeout(DEADLINE).send().await.expect("GET");
        assert_eq!(resp.status(), 404, "{path}");
    }
    assert_eq!(count(&node, "orders").await, 0, "nothing was produced through the metrics port");
    // And the management endpoints of the admin port are not where metrics are.
    let resp = http().get(format!("http://{}/metrics", node.admin.expect("admin"))).bearer_auth(TOKEN).send().await.expect("GET");
    assert_eq!(resp.status(), 404);
    println!("metrics port: /metrics 200 without a token; produce/tail/stats 404; records 0");
    assert_eq!(node.shutdown().await.code, 0);
}

async fn post_raw(url: &str, token: &str) -> (u16, String) {
    let resp = http().post(url).bearer_auth(token).body(BODY).timeout(DEADLINE).send().await.expect("POST");
    (resp.status().as_u16(), resp.text().await.unwrap_or_default())
}

/// `weir produce` sends `WEIR_ADMIN_TOKEN`; without it the node refuses and the CLI says
/// where the token comes from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_the_token_from_the_environment() {
    let (node, data) = start(YAML, None).await;
    let admin = node.admin.expect("admin port");
    let file = data.path().join("cli.yaml");
    let yaml = format!(
        "name: admin-cli\nadmin: {{listen: \"{admin}\", token: ${{WEIR_ADMIN_TOKEN:-}}}}\ntopics:\n  orders: {{partitions: 3}}\n"
    );
    std::fs::write(&file, yaml).expect("write topology");
    let run = |token: Option<&'static str>| {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(BIN);
            cmd.args(["produce", "orders", "-t"]).arg(&file).env("WEIR_LOG", "warn").env_remove("WEIR_ADMIN_TOKEN");
            if let Some(t) = token {
                cmd.env("WEIR_ADMIN_TOKEN", t);
            }
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("weir produce runs");
            if let Some(mut stdin) = child.stdin.take() {
                std::io::Write::write_all(&mut stdin, b"{\"id\":1}\n{\"id\":2}\n").expect("stdin");
            }
            child.wait_with_output().expect("weir produce ends")
        })
    };
    let without = run(None).await.expect("join");
    let stderr = String::from_utf8_lossy(&without.stderr).to_string();
    assert_eq!(without.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401") && stderr.contains("WEIR_ADMIN_TOKEN"), "{stderr}");
    assert_eq!(count(&node, "orders").await, 0);

    let with = run(Some(TOKEN)).await.expect("join");
    assert!(with.status.success(), "{}", String::from_utf8_lossy(&with.stderr));
    let records = count(&node, "orders").await;
    println!("weir produce: without WEIR_ADMIN_TOKEN exit 1 (401), records 0; with it exit 0, records {records}");
    assert_eq!(records, 2);
    assert_eq!(node.shutdown().await.code, 0);
}

/// A non-loopback admin without a token: `weir run` exits non-zero naming `admin.token`
/// and the variable to set, before it binds anything.
#[test]
fn run_refuses_a_non_loopback_admin_without_a_token() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("exposed.yaml");
    std::fs::write(
        &file,
        "name: exposed\nadmin: {listen: \"0.0.0.0:0\", token: ${WEIR_ADMIN_TOKEN:-}}\ntopics:\n  orders: {partitions: 1}\n",
    )
    .expect("write topology");
    let out = std::process::Command::new(BIN)
        .args(["run", "-t"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("WEIR_LOG", "warn")
        .env_remove("WEIR_ADMIN_TOKEN")
        .output()
        .expect("weir run runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("weir run with admin 0.0.0.0:0 and no token: exit {:?}", out.status.code());
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("admin.token") && stderr.contains("WEIR_ADMIN_TOKEN"), "{stderr}");
}

/// Raw requests on the admin port with small limits (the topology's `http:`): a body that
/// stops arriving gets a JSON 408, one request over the bound a JSON 503, and neither
/// publishes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_time_out_and_excess_requests_are_refused() {
    let yaml = format!(
        "{YAML}http: {{header_timeout: 1s, body_timeout: 3s, max_concurrent_requests: 2, shutdown_grace: 2s}}\n"
    );
    let (node, _data) = start(&yaml, None).await;
    let admin = node.admin.expect("admin port");
    let head = format!(
        "POST /topics/orders/records HTTP/1.1\r\nhost: {admin}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: 64\r\n\r\n{{\"id\":"
    );
    // Two requests whose bodies never finish hold both slots...
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(admin).await.expect("connect");
        s.write_all(head.as_bytes()).await.expect("send head");
        slow.push(s);
    }
    // ...so a third is refused at once. Nothing says when the two reached the server, so
    // ask (a read, which publishes nothing) until the bound shows.
    let refused = async {
        loop {
            let resp = http().get(format!("http://{admin}/stats")).bearer_auth(TOKEN).send().await.expect("GET");
            if resp.status() == 503 {
                break resp.text().await.expect("body");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let body = tokio::time::timeout(DEADLINE, refused).await.expect("the bound is reached");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(body["error"].as_str().is_some_and(|e| e.contains("requests")), "{body}");

    for mut s in slow {
        let mut answer = Vec::new();
        tokio::time::timeout(DEADLINE, s.read_to_end(&mut answer)).await.expect("answered in time").expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let json: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"));
        assert!(json["error"].as_str().is_some_and(|e| e.contains("did not arrive")), "{json}");
    }

    // Headers that never finish: the connection is closed without a request being served.
    let mut s = tokio::net::TcpStream::connect(admin).await.expect("connect");
    s.write_all(b"GET /stats HTTP/1.1\r\nhost: x\r\n").await.expect("send part of the head");
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest)).await.expect("closed in time").expect("read");
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"), "{}", String::from_utf8_lossy(&rest));

    let records = count(&node, "orders").await;
    println!("limits: 2 slow bodies -> 408 JSON, third request -> 503 JSON, unfinished head -> closed; records {records}");
    assert_eq!(records, 0);
    assert_eq!(node.shutdown().await.code, 0);
}

/// Open follows are bounded, and one ends with its client: once the clients of the
/// MAX_TAILS open follows go away, as many can be opened again (the permit and the
/// per-partition readers go with the response body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_are_bounded_and_end_with_their_client() {
    let (node, _data) = start(YAML, None).await;
    let admin = node.admin.expect("admin port");
    let url = format!("http://{admin}/topics/orders/records?follow=true");
    let follow = || async {
        let resp = http().get(&url).bearer_auth(TOKEN).send().await.expect("GET follow");
        (resp.status().as_u16(), resp)
    };
    let mut open = Vec::new();
    for _ in 0..weir::runtime::admin::MAX_TAILS {
        let (status, resp) = follow().await;
        assert_eq!(status, 200);
        open.push(resp);
    }
    let (status, over) = follow().await;
    let over_body = over.text().await.expect("body");
    assert_eq!(status, 503, "{over_body}");
    assert!(over_body.contains("tails are open"), "{over_body}");

    // The clients go; the node notices and frees the slots.
    drop(open);
    let reopened = async {
        loop {
            let (status, resp) = follow().await;
            if status == 200 {
                break resp;
            }
            drop(resp);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut again = vec![tokio::time::timeout(DEADLINE, reopened).await.expect("a slot is free again")];
    for _ in 1..weir::runtime::admin::MAX_TAILS {
        let (status, resp) = follow().await;
        assert_eq!(status, 200, "every slot came back");
        again.push(resp);
    }
    println!(
        "tails: {} open, one more -> 503; clients gone -> {} open again",
        weir::runtime::admin::MAX_TAILS,
        again.len()
    );
    drop(again);
    assert_eq!(node.shutdown().await.code, 0);
}

/// The token is a secret: the parsed topology and the plan print it redacted.
#[test]
fn the_token_never_shows_in_debug_output() {
    let registry = Registry::builtin();
    let topology = Topology::parse("admin-security.yaml", YAML, &|_| None, &registry).unwrap_or_else(|d| panic!("{d}"));
    let plan = topology.plan(None).expect("plan");
    let printed = format!("{:?} {:?}", topology.spec(), plan);
    assert!(!printed.contains(TOKEN), "{printed}");
    assert!(printed.contains("AdminToken(<redacted>)"), "{printed}");
    // Without `http:`, the listeners keep the defaults.
    assert_eq!(HttpLimits::default().with_plan(&plan.http), HttpLimits::default());
    assert_eq!(plan.admin_token.as_ref().map(|t| t.expose()), Some(TOKEN));
}

/// `metrics:` is checked like the rest of the file: a bad address and an unknown key are
/// errors with their place.
#[test]
fn metrics_section_is_validated() {
    let registry = Registry::builtin();
    let bad = "name: x\nmetrics: {listen: \"9464\", lisen: \"127.0.0.1:1\"}\ntopics:\n  t: {partitions: 1}\n";
    let err = match Topology::parse("bad.yaml", bad, &|_| None, &registry) {
        Ok(_) => panic!("a bad metrics section validated"),
        Err(d) => d.to_string(),
    };
    assert!(err.contains("`9464` is not a host:port address"), "{err}");
    assert!(err.contains("lisen") && err.contains("in `metrics`"), "{err}");

    let bad = "name: x\nhttp: {body_timeout: soon, max_concurrent_requests: 0}\ntopics:\n  t: {partitions: 1}\n";
    let err = match Topology::parse("bad.yaml", bad, &|_| None, &registry) {
        Ok(_) => panic!("a bad http section validated"),
        Err(d) => d.to_string(),
    };
    assert!(err.contains("`body_timeout`") && err.contains("`max_concurrent_requests` must be at least 1"), "{err}");
}
