//! The core node SIGKILLed while Skeji's replies are going out, then restarted with the
//! same data dir and instance name: 20 users ask for the same slot at once, and each must
//! get exactly one answer in the outbox (exactly one of them the confirmation), every
//! answer within 10 s of the restart — no waiting for the dead process's claim leases.
//! The two processes and the topology are those of tests/kafka/skeji.rs.

use super::skeji::{flows, free_addr, own_topology};
use crate::support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const USERS: usize = 20;
/// Every reply must be out this soon after the restart.
const AFTER_RESTART: Duration = Duration::from_secs(10);
/// Safety timeout for the first replies (two processes, consumer groups joining).
const FIRST_REPLY: Duration = Duration::from_secs(90);

/// One outbox line and when the test first saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    line: serde_json::Value,
}

/// Follows `outbox.jsonl` from a thread (the file is the users' inbox here) and sends each
/// new whole line with the moment it was seen.
fn follow_outbox(path: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> mpsc::Receiver<Seen> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut read = 0usize;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let text = std::fs::read(&path).unwrap_or_default();
            // A rewritten partial tail can make the file shorter: whole lines only, by count.
            let whole: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
            let complete = whole.len().saturating_sub(1);
            for l in &whole[read.min(complete)..complete] {
                let line = serde_json::from_slice(l).expect("every whole outbox line is JSON");
                if tx.send(Seen { at: Instant::now(), line }).is_err() {
                    return;
                }
            }
            read = read.max(complete);
            // Sampling the file is how its lines are observed; 10 ms is the resolution of
            // the waits measured below, not a synchronisation.
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    rx
}

/// What the killed core left in `skeji.db`: notifications it had claimed and not finished,
/// and outbox rows it had committed but not appended to the file.
async fn left_by_the_dead(data_dir: &Path) -> (i64, i64) {
    let db = weir::apps::skeji::store::Db::open(data_dir).expect("skeji.db");
    let in_file = std::fs::read_to_string(data_dir.join("outbox.jsonl")).unwrap_or_default().matches('\n').count();
    let in_file = i64::try_from(in_file).expect("line count");
    db.call(move |c| {
        let claimed: i64 = c.query_row("SELECT COUNT(*) FROM notifier_sent WHERE state = 'claimed'", [], |r| r.get(0))?;
        let rows: i64 = c.query_row("SELECT COUNT(*) FROM notifier_outbox", [], |r| r.get(0))?;
        Ok((claimed, rows - in_file))
    })
    .await
    .expect("query skeji.db")
}

fn start_node(node: &str, file: &Path, data_dir: &str, instance: &str, listen: &str) -> Worker {
    let brokers = brokers();
    let env = [
        ("WEIR_TRANSPORT", "kafka"),
        ("KAFKA_BROKERS", brokers.as_str()),
        ("WEIR_LISTEN", listen),
        ("WEIR_ADMIN_LISTEN", "127.0.0.1:0"),
        ("WEIR_METRICS_LISTEN", "127.0.0.1:0"),
        ("WEIR_GROUP_INSTANCE", instance),
    ];
    Worker::start(node, file, &["--node", node, "--data-dir", data_dir, "--instance", instance], &env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_sigkilled_while_replying_then_restarted_answers_everyone_once() {
    let prefix = unique("corecrash");
    let (text, _topics) = own_topology(&prefix);
    // Static group membership: the restarted core (same instance) takes its partitions
    // back at once instead of after the dead members' session timeout.
    let text = text.replacen(
        "  auto_create_topics: true\n",
        "  auto_create_topics: true\n  consumer: {group.instance.id: \"${WEIR_GROUP_INSTANCE}\"}\n",
        1,
    );
    assert!(text.contains("group.instance.id"), "the kafka section of topology.yaml moved");
    let dir = tempfile::tempdir().expect("tmp");
    let file = write_topology(dir.path(), &text);
    let data = tempfile::tempdir().expect("tmp");
    let data_dir = data.path().to_str().expect("utf-8 temp path").to_string();
    let edge_listen = free_addr();
    let core_instance = format!("{prefix}-core");
    let (edge, mut core) = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let edge = s.spawn(|| start_node("edge", &file, &data_dir, &format!("{prefix}-edge"), &edge_listen));
            let core = s.spawn(|| start_node("core", &file, &data_dir, &core_instance, "127.0.0.1:0"));
            (edge.join().expect("edge starts"), core.join().expect("core starts"))
        })
    });
    let stop_following = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lines = follow_outbox(data.path().join("outbox.jsonl"), stop_following.clone());

    // 20 users ask for the same slot at once.
    let users: Vec<String> = (0..USERS).map(|i| format!("97254{:07}", 1_000 + i)).collect();
    let webhook = format!("http://{edge_listen}/webhooks/whatsapp");
    let http = weir::net::client().expect("http");
    let posts = users.iter().map(|u| {
        let body = flows::webhook_body(u, &format!("wamid.{u}.slot"), "Hi, book a haircut in Tel Aviv tomorrow at 3pm");
        let req = http.post(&webhook).header("content-type", "application/json").body(body).send();
        async move { req.await.expect("webhook answers").status() }
    });
    for status in futures::future::join_all(posts).await {
        assert_eq!(status, 200);
    }
    let asked = Instant::now();

    // The first reply is out: replies are going out now. Kill core.
    let mut seen: Vec<Seen> = Vec::new();
    let first = tokio::task::block_in_place(|| lines.recv_timeout(FIRST_REPLY)).expect("a first reply in the outbox");
    seen.push(first);
    core.kill();
    let killed = Instant::now();
    // What the dead process wrote before it died (the thread samples every 10 ms).
    tokio::task::block_in_place(|| {
        while let Ok(s) = lines.recv_timeout(Duration::from_millis(50)) {
            seen.push(s);
        }
    });
    let before_restart = seen.len();
    let (claims_left, lines_owed) = left_by_the_dead(data.path()).await;

    // Restart with the same data dir and instance name.
    let restarted = Instant::now();
    let core = tokio::task::block_in_place(|| start_node("core", &file, &data_dir, &core_instance, "127.0.0.1:0"));
    let user_set: BTreeSet<&str> = users.iter().map(String::as_str).collect();
    let answered = |seen: &[Seen]| -> BTreeSet<String> {
        seen.iter().filter_map(|s| s.line["to"].as_str()).filter(|to| user_set.contains(to)).map(str::to_string).collect()
    };
    tokio::task::block_in_place(|| {
        let deadline = restarted + AFTER_RESTART + Duration::from_secs(50);
        // The business owner hears of the one booking too (the domain event's path).
        let owner_told = |seen: &[Seen]| seen.iter().any(|s| s.line["to"].as_str().is_some_and(|to| !user_set.contains(to)));
        while answered(&seen).len() < USERS || !owner_told(&seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(s) => seen.push(s),
                Err(_) => break,
            }
        }
    });
    // Quiescence is the nodes' clean stop: whatever was still in flight (a redelivery, a
    // retry) is drained and written before they exit.
    let mut edge = edge;
    let mut core = core;
    let (edge_exit, core_exit) = tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let e = s.spawn(|| edge.stop());
            let c = s.spawn(|| core.stop());
            (e.join().expect("edge stop"), c.join().expect("core stop"))
        })
    });
    tokio::task::block_in_place(|| {
        while let Ok(s) = lines.recv_timeout(Duration::from_millis(100)) {
            seen.push(s);
        }
    });
    stop_following.store(true, std::sync::atomic::Ordering::Relaxed);

    let mut per_user: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        if let Some(to) = s.line["to"].as_str().filter(|to| user_set.contains(to)) {
            per_user.entry(to).or_default().push(s);
        }
    }
    let answered_n = per_user.len();
    let duplicated: usize = per_user.values().map(|v| v.len() - 1).sum();
    let body = |s: &Seen| s.line["text"]["body"].as_str().unwrap_or_default().to_lowercase();
    let confirmations = per_user.values().flatten().filter(|s| body(s).contains("confirmed")).count();
    let refusals = per_user.values().flatten().filter(|s| body(s).contains("not available")).count();
    let after_restart: Vec<Duration> =
        per_user.values().flatten().filter(|s| s.at > restarted).map(|s| s.at - restarted).collect();
    let longest = after_restart.iter().max().copied().unwrap_or_default();
    let to_others = seen.iter().filter(|s| !s.line["to"].as_str().is_some_and(|to| user_set.contains(to))).count();
    let outbox_ids: Vec<i64> = seen.iter().filter_map(|s| s.line["outbox_id"].as_i64()).collect();
    let distinct_ids: BTreeSet<i64> = outbox_ids.iter().copied().collect();
    let missing: Vec<&str> = users.iter().map(String::as_str).filter(|u| !per_user.contains_key(u)).collect();
    println!(
        "kafka core SIGKILL while replying: users {USERS}, answered {answered_n}, duplicated {duplicated}, \
         confirmations {confirmations}, refusals {refusals}; {before_restart} lines before the restart \
         (kill {} ms after the asks; it left {claims_left} claims and {lines_owed} committed lines not yet in the file), \
         {} after it, longest wait after restart {} ms; outbox lines {} ({} distinct ids, {to_others} to the business owner)",
        (killed - asked).as_millis(),
        after_restart.len(),
        longest.as_millis(),
        outbox_ids.len(),
        distinct_ids.len()
    );
    let mut waits: Vec<u128> = after_restart.iter().map(Duration::as_millis).collect();
    waits.sort_unstable();
    println!("  waits after restart (ms): {waits:?}");
    for (u, v) in per_user.iter().filter(|(_, v)| v.len() > 1) {
        println!("  {u} answered {} times: {:?}", v.len(), v.iter().map(|s| &s.line["notification_id"]).collect::<Vec<_>>());
    }
    assert!(missing.is_empty(), "users never answered: {missing:?}");
    assert_eq!(duplicated, 0, "every user answered exactly once");
    assert_eq!(confirmations, 1, "exactly one user got the slot");
    assert_eq!(confirmations + refusals, USERS, "the others were told the slot is taken");
    assert_eq!(outbox_ids.len(), distinct_ids.len(), "no outbox line is written twice");
    assert_eq!(to_others, 1, "the business owner is told of the one booking, once");
    assert!(longest <= AFTER_RESTART, "a reply came {longest:?} after the restart (bound {AFTER_RESTART:?})");
    assert!(edge_exit.is_some_and(|s| s.success()), "edge exits 0 on SIGTERM: {edge_exit:?}");
    assert!(core_exit.is_some_and(|s| s.success()), "restarted core exits 0 on SIGTERM: {core_exit:?}");
}
