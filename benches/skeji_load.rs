//! Skeji under load: N distinct users each post one booking request to the WhatsApp
//! webhook of the repo's `topology.yaml`, and the harness times each one from its POST to
//! its reply in `<data-dir>/outbox.jsonl` (the `outbox` sink; the file is polled every
//! 2 ms). `cargo bench --bench skeji_load`. Environment:
//! - `SKEJI_LOAD_USERS` (2000): users per run, each with its own phone and request;
//! - `SKEJI_LOAD_RATES` (`max,500`): one run per entry: `max` posts as fast as
//!   `SKEJI_LOAD_CONCURRENCY` (64) connections allow, a number offers that many
//!   conversations per second;
//! - `SKEJI_LOAD_TRANSPORTS` (`embedded,kafka`): `embedded` is one `weir run` process;
//!   `kafka` is `--node edge` and `--node core` as two processes on the local broker
//!   (`WEIR_KAFKA_BROKERS`, required for it), each run on its own prefixed topics and groups, started as
//!   tests/kafka/skeji.rs starts them;
//! - `SKEJI_LOAD_LLM_RATE` (1000000): the LLM layer's `rate_limit` (per second and
//!   burst) through `SKEJI_LLM_RATE_PER_SECOND`/`SKEJI_LLM_RATE_BURST`; `seed` keeps the
//!   topology's default (50/s).
//!
//! A run reports conversations/s (users answered ÷ first POST → last reply), p50/p99/max
//! of POST → reply, the users answered within the bound, the replies beyond each user's
//! first (2 s are waited for late ones), what the replies said and, on embedded, the
//! cores the process used.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/weir_process.rs"]
mod weir_process;
// The two-process Kafka deployment of the Skeji end-to-end tests, reused as it is.
#[allow(dead_code, unused_imports)]
#[path = "../tests/kafka/skeji.rs"]
mod kafka_skeji;
#[allow(dead_code, unused_imports)]
#[path = "../tests/kafka/support.rs"]
mod support;

use kafka_skeji::flows::{webhook_body, Deployment};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_process::{load_average, pct, WeirProcess};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The longest the harness waits for the last reply after the last POST.
const ANSWER_BOUND: Duration = Duration::from_secs(120);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// A booking request that differs per user: one of the seed's (city, service) pairs, one
/// of `days` (seven working days, `DD/MM`) and a quarter hour in opening hours (1,792
/// combinations).
fn request(i: usize, days: &[String]) -> String {
    const PAIRS: [(&str, &str); 8] = [
        ("Tel Aviv", "haircut"),
        ("Tel Aviv", "manicure"),
        ("Tel Aviv", "massage"),
        ("Haifa", "haircut"),
        ("Haifa", "massage"),
        ("Jerusalem", "haircut"),
        ("Jerusalem", "manicure"),
        ("Jerusalem", "massage"),
    ];
    // Whole hours first (the first 448 users ask for slots that cannot overlap), then the
    // quarter hours in between, which may collide with an earlier booking: those users
    // are offered alternatives, as a real user would be.
    let (city, service) = PAIRS[i % PAIRS.len()];
    let hour = 10 + (i / PAIRS.len()) % 8;
    let day = &days[(i / (PAIRS.len() * 8)) % days.len()];
    let minute = ((i / (PAIRS.len() * 8 * days.len())) % 4) * 15;
    format!("Hi, book a {service} in {city} on {day} at {hour}:{minute:02}")
}

/// The next seven working days (Sunday to Thursday, when the seed's businesses are open
/// all day) in their time zone, as a user writes them (`DD/MM`).
fn next_week() -> Vec<String> {
    use jiff::civil::Weekday;
    let today = jiff::Zoned::now().in_tz("Asia/Jerusalem").map(|z| z.date()).unwrap_or_else(|_| jiff::Zoned::now().date());
    (1..=14i32)
        .filter_map(|d| today.checked_add(jiff::Span::new().days(d)).ok())
        .filter(|d| !matches!(d.weekday(), Weekday::Friday | Weekday::Saturday))
        .take(7)
        .map(|d| format!("{:02}/{:02}", d.day(), d.month()))
        .collect()
}

/// What a reply told the user, in a word or three.
fn outcome(text: &str) -> String {
    let known = [("Booking confirmed", "confirmed"), ("is not available", "not available"), ("just booked", "conflict")];
    match known.iter().find(|(phrase, _)| text.contains(phrase)) {
        Some((_, what)) => what.to_string(),
        None => text.split_whitespace().take(4).collect::<Vec<_>>().join(" "),
    }
}

/// Follows `outbox.jsonl` as it grows and reports each line's `to` and the first words
/// of its text with the time it was seen, until `stop`.
fn follow_outbox(file: PathBuf, stop: Arc<AtomicBool>) -> std::sync::mpsc::Receiver<(String, String, Instant)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut pos = 0u64;
        let mut partial = Vec::new();
        let mut buf = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut f) = std::fs::File::open(&file) {
                if f.seek(SeekFrom::Start(pos)).is_ok() {
                    buf.clear();
                    if let Ok(read) = f.read_to_end(&mut buf) {
                        pos += read as u64;
                        let seen = Instant::now();
                        partial.extend_from_slice(&buf);
                        while let Some(nl) = partial.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = partial.drain(..=nl).collect();
                            let v: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
                            if let Some(to) = v["to"].as_str() {
                                // The line is the Cloud API body: its text says what the
                                // user was told.
                                let kind = outcome(v["text"]["body"].as_str().unwrap_or_default());
                                if tx.send((to.to_string(), kind, seen)).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    rx
}

struct Outcome {
    answered: usize,
    per_s: f64,
    latencies_ms: Vec<u64>,
    failed_posts: usize,
    /// Replies beyond a user's first (a duplicate, or a second message).
    extra_replies: usize,
    /// How many first replies said what (confirmed, not available, …).
    kinds: std::collections::BTreeMap<String, usize>,
}

/// Posts every user's request to `webhook` (paced at `rate` per second, or as fast as
/// `concurrency` allows) and collects the replies from `data_dir`'s outbox.
async fn drive(webhook: &str, data_dir: &Path, users: &[String], rate: Option<f64>, concurrency: usize) -> Outcome {
    let days = next_week();
    let stop = Arc::new(AtomicBool::new(false));
    let replies = follow_outbox(data_dir.join("outbox.jsonl"), stop.clone());
    let http = weir::net::client().expect("http client");
    let posted: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::with_capacity(users.len())));
    let failed = Arc::new(AtomicUsize::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let run = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let mut posts = Vec::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        if let Some(rate) = rate {
            let due = Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let permit = permits.clone().acquire_owned().await.expect("semaphore");
        let body = webhook_body(user, &format!("wamid.load.{run}.{i}"), &request(i, &days));
        let (http, url, posted, failed, user) = (http.clone(), webhook.to_string(), posted.clone(), failed.clone(), user.clone());
        posts.push(tokio::spawn(async move {
            let _permit = permit;
            posted.lock().expect("posted").insert(user, Instant::now());
            let sent = http.post(&url).header("content-type", "application/json").body(body).timeout(Duration::from_secs(30)).send().await;
            if !matches!(&sent, Ok(r) if r.status() == 200) {
                failed.fetch_add(1, Ordering::Relaxed);
                eprintln!("POST failed: {sent:?}");
            }
        }));
    }
    for p in posts {
        p.await.expect("post");
    }
    let last_post = Instant::now();
    let first_post = posted.lock().expect("posted").values().min().copied().unwrap_or(started);

    let mut answered: HashMap<String, Instant> = HashMap::with_capacity(users.len());
    let mut kinds = std::collections::BTreeMap::new();
    let mut extra_replies = 0;
    let wanted: std::collections::HashSet<&String> = users.iter().collect();
    while answered.len() < users.len() && last_post.elapsed() < ANSWER_BOUND {
        let reply = tokio::task::block_in_place(|| replies.recv_timeout(Duration::from_millis(200)));
        if let Ok((to, kind, at)) = reply {
            if wanted.contains(&to) {
                if answered.contains_key(&to) {
                    extra_replies += 1;
                } else {
                    answered.insert(to, at);
                    *kinds.entry(kind).or_insert(0) += 1;
                }
            }
        }
    }
    // Late duplicates would come within moments of the last reply: listen a little longer.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(2) {
        let reply = tokio::task::block_in_place(|| replies.recv_timeout(Duration::from_millis(100)));
        if let Ok((to, _, _)) = reply {
            if wanted.contains(&to) {
                extra_replies += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let posted = posted.lock().expect("posted");
    let mut latencies_ms: Vec<u64> =
        answered.iter().filter_map(|(u, at)| posted.get(u).map(|p| at.saturating_duration_since(*p).as_millis() as u64)).collect();
    latencies_ms.sort_unstable();
    let last_reply = answered.values().max().copied().unwrap_or(last_post);
    let span = last_reply.saturating_duration_since(first_post).as_secs_f64().max(1e-3);
    Outcome { answered: answered.len(), per_s: answered.len() as f64 / span, latencies_ms, failed_posts: failed.load(Ordering::Relaxed), extra_replies, kinds }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn report(transport: &str, label: &str, users: usize, o: &Outcome, extra: &str) {
    println!(
        "  {transport:<8} {label:<10} {:>7.0} conversations/s  p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms  answered {}/{users}, {} extra {:?}{}{extra}  load {}",
        o.per_s,
        pct(&o.latencies_ms, 0.5),
        pct(&o.latencies_ms, 0.99),
        o.latencies_ms.last().copied().unwrap_or_default(),
        o.answered,
        o.extra_replies,
        o.kinds,
        if o.failed_posts > 0 { format!(", {} POSTs failed", o.failed_posts) } else { String::new() },
        load_average()
    );
}

/// The rate-limit variables for the LLM layer, as `SKEJI_LOAD_LLM_RATE` asks.
fn llm_rate_env() -> Vec<(&'static str, String)> {
    let v = env_or("SKEJI_LOAD_LLM_RATE", "1000000");
    if v == "seed" {
        Vec::new()
    } else {
        vec![("SKEJI_LLM_RATE_PER_SECOND", v.clone()), ("SKEJI_LLM_RATE_BURST", v)]
    }
}

async fn embedded_run(users: &[String], rate: Option<f64>, concurrency: usize, label: &str) {
    let data = tempfile::tempdir().expect("tmp");
    let data_dir = data.path().to_str().expect("utf-8 path").to_string();
    let llm = llm_rate_env();
    let mut env: Vec<(&str, &str)> = vec![
        ("WEIR_TRANSPORT", "embedded"),
        ("WEIR_LISTEN", "127.0.0.1:0"),
        ("WEIR_ADMIN_LISTEN", "127.0.0.1:0"),
        ("WEIR_METRICS_LISTEN", "127.0.0.1:0"),
        ("SKEJI_SINK", "outbox"),
        ("SKEJI_LLM_PROVIDER", "rules"),
    ];
    env.extend(llm.iter().map(|(k, v)| (*k, v.as_str())));
    let topology = PathBuf::from(ROOT).join("topology.yaml");
    let mut node = WeirProcess::start("skeji", &topology, &["--data-dir", &data_dir], &env, true);
    let Some(addr) = node.logged_addr("ingress listening") else {
        panic!("the webhook's address is not in the log:\n{}", node.log_text());
    };
    let webhook = format!("http://{addr}/webhooks/whatsapp");
    let cpu_before = cpu_seconds(node.pid()).unwrap_or(0.0);
    let wall = Instant::now();
    let o = drive(&webhook, data.path(), users, rate, concurrency).await;
    let cores = (cpu_seconds(node.pid()).unwrap_or(0.0) - cpu_before) / wall.elapsed().as_secs_f64();
    report("embedded", label, users.len(), &o, &format!(", {cores:.2} cores"));
    node.stop(Duration::from_secs(30));
}

async fn kafka_run(users: &[String], rate: Option<f64>, concurrency: usize, label: &str) {
    let llm = llm_rate_env();
    let edge_env: Vec<(&str, &str)> = llm.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let skeji = kafka_skeji::KafkaSkeji::start_with(&edge_env, &[]).await;
    let o = drive(&skeji.webhook(), &skeji.data_dir(), users, rate, concurrency).await;
    report("kafka", label, users.len(), &o, " (edge + core)");
    skeji.stop();
}

fn kafka_reachable(brokers: &str) -> bool {
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    first.parse::<std::net::SocketAddr>().is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = env_or("SKEJI_LOAD_USERS", "2000").parse().expect("SKEJI_LOAD_USERS is a number");
    let concurrency: usize = env_or("SKEJI_LOAD_CONCURRENCY", "64").parse().expect("SKEJI_LOAD_CONCURRENCY is a number");
    let rates = env_or("SKEJI_LOAD_RATES", "max,500");
    let transports = env_or("SKEJI_LOAD_TRANSPORTS", "embedded,kafka");
    println!(
        "Skeji load: {n} users, one booking request each; LLM rate limit {}; load average {}",
        env_or("SKEJI_LOAD_LLM_RATE", "1000000"),
        load_average()
    );
    let mut scenario = 0usize;
    for transport in transports.split(',').map(str::trim) {
        if transport == "kafka" {
            match std::env::var("WEIR_KAFKA_BROKERS") {
                Ok(b) if kafka_reachable(&b) => {}
                Ok(b) => {
                    println!("  kafka: skipped, no broker at {b}");
                    continue;
                }
                Err(_) => {
                    println!("  kafka: skipped, WEIR_KAFKA_BROKERS is not set (e.g. 127.0.0.1:9092)");
                    continue;
                }
            }
        }
        for entry in rates.split(',').map(str::trim) {
            let (rate, label) = match entry {
                "max" => (None, format!("max ({concurrency} conn.)")),
                r => {
                    let r: f64 = r.parse().expect("SKEJI_LOAD_RATES: `max` or a number");
                    (Some(r), format!("{r:.0}/s offered"))
                }
            };
            // Each run its own users: nothing is deduplicated or flood-limited across runs.
            let users: Vec<String> = (0..n).map(|i| format!("9725{scenario}{i:07}")).collect();
            scenario += 1;
            match transport {
                "embedded" => embedded_run(&users, rate, concurrency, &label).await,
                "kafka" => kafka_run(&users, rate, concurrency, &label).await,
                other => println!("  unknown transport `{other}` (embedded or kafka)"),
            }
        }
    }
}
