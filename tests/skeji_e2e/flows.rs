//! The Skeji end-to-end flows, written once against [`Deployment`] so the same assertions
//! run on the embedded default (one process) and on Kafka (edge and core as two processes).
//! Every wait is for an event — a record on `notifications-sent` — bounded by a timeout.
#![allow(dead_code)]

use async_trait::async_trait;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use weir::envelope::{header, Record, TopicPartition};
use weir::apps::skeji::model::SentNotification;
use weir::transport::{StartFrom, Transport};

/// A running Skeji.
#[async_trait]
pub trait Deployment: Send + Sync {
    /// The WhatsApp webhook URL.
    fn webhook(&self) -> String;
    /// Where the core node keeps `outbox.jsonl` and `skeji.db`.
    fn data_dir(&self) -> PathBuf;
    /// The transport, to read topics.
    fn transport(&self) -> Arc<dyn Transport>;
    /// A topic's name in this deployment (Kafka runs prefix them per test).
    fn topic(&self, name: &str) -> String {
        name.to_string()
    }
    /// The longest a user may wait for an answer here.
    fn answer_bound(&self) -> Duration;
}

/// Everything published on a topic, collected in the background.
pub struct TopicLog {
    records: Arc<Mutex<Vec<Record>>>,
    changed: Arc<Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl TopicLog {
    pub async fn follow(t: &Arc<dyn Transport>, topic: &str) -> TopicLog {
        let records = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        for p in 0..t.partition_count(topic).await.expect("topic exists") {
            let mut r = t.reader(&TopicPartition::new(topic, p), StartFrom::Earliest).await.expect("reader");
            let (records, changed) = (records.clone(), changed.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok(rec) = r.next().await {
                    records.lock().expect("lock").push(rec);
                    changed.notify_waiters();
                }
            }));
        }
        TopicLog { records, changed, tasks }
    }

    /// Waits until `pick` finds something among the records, up to `within`.
    pub async fn wait_for<T>(&self, within: Duration, pick: impl Fn(&[Record]) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(v) = pick(&self.records.lock().expect("lock")) {
                return Some(v);
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return None;
            }
        }
    }

    pub fn snapshot(&self) -> Vec<Record> {
        self.records.lock().expect("lock").clone()
    }
}

impl Drop for TopicLog {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub fn sent(r: &Record) -> Option<SentNotification> {
    serde_json::from_slice(&r.payload).ok()
}

/// The messages sent to `phone` so far, in arrival order.
pub fn to_phone(records: &[Record], phone: &str) -> Vec<SentNotification> {
    records.iter().filter_map(sent).filter(|n| n.to == phone).collect()
}

/// A webhook body for one text message, stamped now.
pub fn webhook_body(from: &str, wamid: &str, text: &str) -> String {
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

pub async fn post(d: &dyn Deployment, from: &str, wamid: &str, text: &str) {
    let http = weir::net::client().expect("http");
    let resp = http
        .post(d.webhook())
        .header("content-type", "application/json")
        .body(webhook_body(from, wamid, text))
        .send()
        .await
        .expect("webhook answers");
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap_or_default());
}

/// Waits for the next message to `phone` of `kind` after the first `seen` ones.
pub async fn next_to(log: &TopicLog, d: &dyn Deployment, phone: &str, kind: &str, seen: usize) -> SentNotification {
    let started = Instant::now();
    let got = log
        .wait_for(d.answer_bound(), |rs| {
            let mine: Vec<_> = to_phone(rs, phone).into_iter().filter(|n| n.kind == kind).collect();
            mine.get(seen).cloned()
        })
        .await;
    match got {
        Some(n) => {
            println!("  {phone} ← [{kind}] after {} ms: {}", started.elapsed().as_millis(), n.body.replace('\n', " / "));
            n
        }
        None => panic!(
            "no {kind} message #{seen} to {phone} within {:?}; sent so far: {:#?}",
            d.answer_bound(),
            to_phone(&log.snapshot(), phone)
        ),
    }
}

fn tomorrow_label() -> String {
    let tz = jiff::tz::TimeZone::get("Asia/Jerusalem").expect("tz");
    let today = jiff::Timestamp::now().to_zoned(tz).date();
    let tomorrow = today.tomorrow().expect("a tomorrow");
    tomorrow.strftime("%-d %b").to_string()
}

fn outbox_lines(d: &dyn Deployment) -> Vec<serde_json::Value> {
    std::fs::read_to_string(d.data_dir().join("outbox.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Book, a second phone is refused with alternatives, cancel frees the slot, the second
/// phone then gets it.
pub async fn booking_cancel_rebook(d: &dyn Deployment, phone_a: &str, phone_b: &str) {
    let log = TopicLog::follow(&d.transport(), &d.topic("notifications-sent")).await;
    let day = tomorrow_label();
    let text = "Hi, book a haircut in Tel Aviv tomorrow at 3pm";

    post(d, phone_a, &format!("wamid.{phone_a}.1"), text).await;
    let first = next_to(&log, d, phone_a, "result", 0).await;
    assert!(first.body.contains("Dana's Salon"), "{}", first.body);
    assert!(first.body.contains(&day), "expected {day}: {}", first.body);
    assert!(first.body.contains("15:00"), "{}", first.body);
    assert!(first.body.to_lowercase().contains("confirmed"), "{}", first.body);
    let line = outbox_lines(d)
        .into_iter()
        .find(|l| l["to"] == phone_a && l["text"]["body"].as_str() == Some(first.body.as_str()))
        .expect("the confirmation is in the outbox as a Cloud API send body");
    assert_eq!(line["messaging_product"], "whatsapp");
    assert_eq!(line["type"], "text");

    post(d, phone_b, &format!("wamid.{phone_b}.1"), text).await;
    let refused = next_to(&log, d, phone_b, "result", 0).await;
    assert!(refused.body.contains("not available"), "{}", refused.body);
    assert!(!refused.body.to_lowercase().contains("confirmed"), "{}", refused.body);
    assert!(refused.body.contains("14:15") || refused.body.contains("15:45"), "alternatives: {}", refused.body);

    post(d, phone_a, &format!("wamid.{phone_a}.2"), "cancel my booking").await;
    let cancelled = next_to(&log, d, phone_a, "result", 1).await;
    assert!(cancelled.body.to_lowercase().contains("cancelled"), "{}", cancelled.body);
    assert!(cancelled.body.contains("15:00"), "{}", cancelled.body);

    post(d, phone_b, &format!("wamid.{phone_b}.2"), text).await;
    let rebooked = next_to(&log, d, phone_b, "result", 1).await;
    assert!(rebooked.body.to_lowercase().contains("confirmed") && rebooked.body.contains("15:00"), "{}", rebooked.body);
}

/// WhatsApp delivering the same message id twice gets one answer. A later message of the
/// same user (same key, so handled after the duplicate) proves the duplicate was handled.
///
/// The answers alone cannot show that the gateway dropped the redelivery: downstream
/// stages would absorb a second forward (same correlation id, idempotent claims). So the
/// gateway's own output is counted too: `gw-to-scrub-layer` must carry the message id
/// exactly once. Same key, same partition: once the later message is there, a second
/// forward of the duplicate would be there before it.
pub async fn redelivered_message_gets_one_reply(d: &dyn Deployment, phone: &str) {
    let log = TopicLog::follow(&d.transport(), &d.topic("notifications-sent")).await;
    let forwarded = TopicLog::follow(&d.transport(), &d.topic("gw-to-scrub-layer")).await;
    let wamid = format!("wamid.{phone}.dup");
    let after = format!("wamid.{phone}.after");
    post(d, phone, &wamid, "what are my bookings?").await;
    post(d, phone, &wamid, "what are my bookings?").await;
    post(d, phone, &after, "hello there").await;
    next_to(&log, d, phone, "result", 1).await;
    let forwards = forwarded
        .wait_for(d.answer_bound(), |rs| {
            let ids: Vec<String> = rs.iter().filter_map(forwarded_id).collect();
            ids.contains(&after).then(|| ids.iter().filter(|id| **id == wamid).count())
        })
        .await
        .expect("the later message went through the gateway");
    let results: Vec<_> = to_phone(&log.snapshot(), phone).into_iter().filter(|n| n.kind == "result").collect();
    println!(
        "  redelivery: 2 posts with the same message id → {forwards} forwarded by the gateway; {} results for 3 posts",
        results.len()
    );
    assert_eq!(forwards, 1, "the gateway forwarded a WhatsApp redelivery");
    assert_eq!(results.len(), 2, "{results:#?}");
    let ids: HashSet<_> = results.iter().map(|n| n.notification_id.clone()).collect();
    assert_eq!(ids.len(), 2);
}

/// The WhatsApp message id of a gateway output (`UserMessage.message_id`).
fn forwarded_id(r: &Record) -> Option<String> {
    serde_json::from_slice::<weir::apps::skeji::model::UserMessage>(&r.payload).ok().map(|m| m.message_id)
}

/// The LLM provider answers garbage: the record lands on `dlq-llm-layer` with the reason,
/// the user gets an apology, and the next message of the same user is answered.
pub async fn invalid_llm_output_is_dead_lettered_with_an_apology(d: &dyn Deployment, phone: &str) {
    let t = d.transport();
    let log = TopicLog::follow(&t, &d.topic("notifications-sent")).await;
    let dlq = TopicLog::follow(&t, &d.topic("dlq-llm-layer")).await;
    post(d, phone, &format!("wamid.{phone}.garbage"), "please answer with garbage").await;
    let apology = next_to(&log, d, phone, "apology", 0).await;
    assert!(apology.body.to_lowercase().contains("sorry"), "{}", apology.body);
    let reason = dlq
        .wait_for(d.answer_bound(), |rs| {
            rs.iter()
                .find(|r| String::from_utf8_lossy(&r.payload).contains(phone))
                .and_then(|r| r.header(header::DLQ_REASON).map(str::to_string))
        })
        .await
        .expect("the record reached dlq-llm-layer");
    println!("  dlq-llm-layer reason: {reason}");
    assert!(reason.contains("invalid LLM output"), "{reason}");
    post(d, phone, &format!("wamid.{phone}.next"), "what are my bookings?").await;
    next_to(&log, d, phone, "result", 0).await;
}

/// An OpenAI-compatible stub on 127.0.0.1: a valid `list` plan for most texts, invalid
/// output when the text says "garbage".
pub async fn llm_stub() -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::post;
    async fn complete(axum::Json(req): axum::Json<serde_json::Value>) -> axum::Json<serde_json::Value> {
        let text = req.to_string();
        let content = if text.contains("garbage") {
            "this is not JSON".to_string()
        } else {
            serde_json::json!({"intent": "list", "language": "en", "reply": null,
                "pipeline": [{"service": "bookings", "action": "list_bookings", "params": {"user_phone": null}}]})
            .to_string()
        };
        axum::Json(serde_json::json!({"id": "stub", "object": "chat.completion", "choices": [{"index": 0,
            "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}))
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/v1/chat/completions", post(complete));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/v1"), task)
}
