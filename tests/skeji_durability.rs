//! The embedded default keeps what it acknowledged: `weir run` with the repo's
//! `topology.yaml` takes 200 booking requests from 200 users, is killed (SIGKILL, or
//! stopped with SIGTERM) while replies are going out, and is started again on the same
//! `--data-dir`. Every user must be answered exactly once, counted in `outbox.jsonl`.
//!
//! The poster behaves like WhatsApp: a webhook delivery that did not get a 200 (the node
//! was down) is delivered again, with the same message id, to the restarted node.

use futures::StreamExt;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_weir");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const USERS: usize = 200;

struct Node {
    child: Option<Child>,
    webhook: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Starts `weir run` on `data` and waits until its webhook listens.
    fn start(data: &Path) -> Node {
        let mut child = Command::new(BIN)
            .args(["run", "-t", &format!("{ROOT}/topology.yaml"), "--data-dir"])
            .arg(data)
            .args(["--shutdown-timeout", "20s"])
            .env("WEIR_LISTEN", "127.0.0.1:0")
            .env("WEIR_ADMIN_LISTEN", "127.0.0.1:0")
            .env("WEIR_METRICS_LISTEN", "127.0.0.1:0")
            .env("WEIR_TRANSPORT", "embedded")
            .env("SKEJI_SINK", "outbox")
            .env("SKEJI_LLM_PROVIDER", "rules")
            .env("WEIR_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("weir run starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().expect("log").push(line.clone());
                let _ = tx.send(line);
            }
        });
        // "ingress listening" comes from the server's task, so it may follow "running".
        let (mut webhook, mut running) = (None, false);
        while webhook.is_none() || !running {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => l,
                Err(_) => panic!("weir did not start:\n{}", log.lock().expect("log").join("\n")),
            };
            if line.contains("ingress listening") {
                webhook = addr_in(&line).map(|a| format!("http://{a}/webhooks/whatsapp"));
            }
            running |= line.contains("weir is running");
        }
        let Some(webhook) = webhook else {
            panic!("the webhook's address is not in the log:\n{}", log.lock().expect("log").join("\n"))
        };
        Node { child: Some(child), webhook, log }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().expect("kill").success());
    }

    /// Waits (bounded) for the process to end and returns whether it exited 0.
    fn wait(&mut self, within: Duration) -> bool {
        let mut child = self.child.take().expect("running");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(within) {
            Ok(Ok(status)) => status.success(),
            _ => panic!("weir did not exit within {within:?}:\n{}", self.log_text()),
        }
    }

    fn log_text(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn addr_in(line: &str) -> Option<std::net::SocketAddr> {
    line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).and_then(|a| a.parse().ok())
}

fn phone(n: usize) -> String {
    format!("97254{n:07}")
}

fn webhook_body(from: &str, wamid: &str, text: &str) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Test"}, "wa_id": from}],
            "messages": [{"from": from, "id": wamid, "timestamp": weir::envelope::now_ms() / 1000,
                "type": "text", "text": {"body": text}}]
        }}]}]
    })
    .to_string()
}

/// Replies per user in the outbox (lines to other numbers, e.g. the owner's, are not ours).
fn replies(data: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let text = std::fs::read_to_string(data.join("outbox.jsonl")).unwrap_or_default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let Some(to) = v["to"].as_str() {
            *out.entry(to.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// Polls `cond` (a file the node writes) until it holds or `within` passed.
async fn until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Posts every user's booking request, each until it gets a 200 (from whichever node is
/// up: the address is swapped on restart).
async fn post_all(webhook: Arc<Mutex<String>>, users: Vec<String>) -> usize {
    let http = weir::net::client().expect("http client");
    let text = "Hi, book a haircut in Tel Aviv tomorrow at 3pm";
    let redelivered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    futures::stream::iter(users)
        .for_each_concurrent(16, |user| {
            let (http, webhook, redelivered) = (http.clone(), webhook.clone(), redelivered.clone());
            async move {
                let body = webhook_body(&user, &format!("wamid.durability.{user}"), text);
                let started = Instant::now();
                loop {
                    let url = webhook.lock().expect("url").clone();
                    let sent = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .timeout(Duration::from_secs(10))
                        .send()
                        .await;
                    if matches!(&sent, Ok(r) if r.status() == 200) {
                        return;
                    }
                    assert!(started.elapsed() < Duration::from_secs(120), "{user}'s webhook never got a 200: {sent:?}");
                    redelivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // WhatsApp's redelivery backoff, shortened.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .await;
    redelivered.load(std::sync::atomic::Ordering::Relaxed)
}

async fn crash_and_restart(signal: &str) {
    let data = tempfile::tempdir().expect("tmp");
    let data_dir: PathBuf = data.path().to_path_buf();
    let users: Vec<String> = (0..USERS).map(phone).collect();

    let mut first = Node::start(&data_dir);
    let webhook = Arc::new(Mutex::new(first.webhook.clone()));
    let poster = tokio::spawn(post_all(webhook.clone(), users.clone()));

    // Stop the node as soon as replies are going out.
    let started = until(Duration::from_secs(60), || !replies(&data_dir).is_empty()).await;
    assert!(started, "no reply within 60 s:\n{}", first.log_text());
    first.signal(signal);
    let at_stop = replies(&data_dir).len();
    if signal == "-TERM" {
        assert!(first.wait(Duration::from_secs(40)), "SIGTERM exits 0:\n{}", first.log_text());
        let log = first.log_text();
        assert!(log.contains("drained") || log.contains("drain bound reached"), "the drain ran:\n{log}");
    } else {
        first.wait(Duration::from_secs(10));
    }
    let answered_before_restart = replies(&data_dir).len();

    let mut second = Node::start(&data_dir);
    *webhook.lock().expect("url") = second.webhook.clone();
    let redelivered = tokio::time::timeout(Duration::from_secs(180), poster)
        .await
        .expect("every webhook delivery got a 200 (bounded)")
        .expect("poster");

    let all = until(Duration::from_secs(120), || {
        let r = replies(&data_dir);
        users.iter().all(|u| r.contains_key(u))
    })
    .await;
    // A clean stop drains what is left, so a late duplicate would be counted too.
    second.signal("-TERM");
    assert!(second.wait(Duration::from_secs(40)), "the restarted node exits 0:\n{}", second.log_text());

    let r = replies(&data_dir);
    let answered = users.iter().filter(|u| r.contains_key(*u)).count();
    let missing: Vec<&String> = users.iter().filter(|u| !r.contains_key(*u)).collect();
    let duplicated: Vec<(&String, usize)> =
        users.iter().filter_map(|u| r.get(u).filter(|n| **n > 1).map(|n| (u, *n))).collect();
    println!(
        "{signal}: users {USERS}, answered at stop {at_stop}, answered before restart {answered_before_restart}, \
         webhook redeliveries {redelivered}, answered {answered}, missing {}, duplicated {}",
        missing.len(),
        duplicated.len()
    );
    if !duplicated.is_empty() {
        println!("  duplicated: {duplicated:?}");
    }
    assert!(all && missing.is_empty(), "users without a reply: {missing:?}\n{}", second.log_text());
    assert!(duplicated.is_empty(), "users answered more than once: {duplicated:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_replying_then_restart_answers_every_user_exactly_once() {
    crash_and_restart("-KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_replying_then_restart_answers_every_user_exactly_once() {
    crash_and_restart("-TERM").await;
}
