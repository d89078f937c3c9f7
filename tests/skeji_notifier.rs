//! The Skeji notifier: what each cause renders to, the outbox line, idempotency, the
//! WhatsApp sink against a local stub, reminders (sent once, not when cancelled, and
//! still after a restart), and what a crash leaves behind: claims of a dead sender taken
//! over at once, and an outbox written exactly once. The stage is built and driven
//! directly, as the runtime would.

use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use weir::envelope::{now_ms, Headers, Record};
use weir::apps::skeji::model::{BusinessError, DomainEvent, PipelineResult, Rejection, SentNotification};
use weir::apps::skeji::notifier::sink::{self, Sink, SinkError, Text};
use weir::apps::skeji::notifier::{ledger, outbox as outbox_table, owner, render, subscribe_sent};
use weir::apps::skeji::store::Db;
use weir::stages::{BuildEnv, Output, Payload, Registry, Stage, StageContext};
use weir::topology::Topology;

/// Upper bound for any wait: a hang fails the test instead of blocking it.
const DEADLINE: Duration = Duration::from_secs(30);
const CX: StageContext<'static> = StageContext { stage: "notifier", attempt: 1 };
const OWNER: &str = "972509999999";

fn topology(config: &str) -> String {
    format!(
        r#"
topics:
  causes: {{partitions: 1}}
  notifications-sent: {{partitions: 1, payload_type: skeji.SentNotification}}
stages:
  notifier:
    kind: skeji-notifier
    from: causes
    to: {{sent: notifications-sent}}
    key: {{sent: to}}
    config: {config}
"#
    )
}

fn build(config: &str, data_dir: &Path) -> Result<Arc<dyn Stage>, String> {
    let registry = Registry::with_apps();
    let t = Topology::parse("test.yaml", &topology(config), &|_| None, &registry).map_err(|d| d.to_string())?;
    let plan = t.plan(None).map_err(|e| e.to_string())?;
    let stage = &plan.stages[0];
    let env = BuildEnv { stage, node: None, data_dir: data_dir.to_path_buf(), config_dir: ".".into(), emitter: None };
    registry.stage_factory(&stage.kind).ok_or("no kind")?.build(&stage.config, &env).map_err(|e| e.to_string())
}

fn outbox_notifier(data_dir: &Path) -> Arc<dyn Stage> {
    build("{sink: outbox, reminder_before: 10m}", data_dir).expect("notifier builds")
}

fn lease_notifier(data_dir: &Path, lease: &str) -> Arc<dyn Stage> {
    build(&format!("{{sink: outbox, reminder_before: 10m, claim_lease: {lease}}}"), data_dir).expect("notifier builds")
}

/// The owner id of a process that was SIGKILLed: its lock file is still there, but no
/// process holds the lock any more (the kernel released it with the process).
fn killed_owner(data_dir: &Path, name: &str) -> String {
    let dir = data_dir.join("notifier-owners");
    std::fs::create_dir_all(&dir).expect("owners dir");
    let id = format!("notifier.g1.{name}-4242-deadbeef");
    std::fs::write(dir.join(format!("{id}.lock")), b"").expect("lock file");
    id
}

fn record(topic: &str, offset: i64, payload: &impl serde::Serialize) -> Record {
    let payload = serde_json::to_vec(payload).expect("json").into();
    Record {
        topic: Arc::from(topic),
        partition: 0,
        offset,
        key: None,
        headers: Headers::new(),
        payload,
        timestamp_ms: 0,
    }
}

fn sent_of(outputs: &[Output]) -> Vec<SentNotification> {
    outputs
        .iter()
        .map(|o| {
            assert_eq!(o.name, "sent");
            match &o.payload {
                Payload::Json(v) => serde_json::from_value(v.clone()).expect("a SentNotification"),
                Payload::Raw(b) => serde_json::from_slice(b).expect("a SentNotification"),
            }
        })
        .collect()
}

fn outbox(data_dir: &Path) -> Vec<Value> {
    match std::fs::read_to_string(data_dir.join("outbox.jsonl")) {
        Ok(text) => text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect(),
        Err(_) => Vec::new(),
    }
}

fn booking(id: &str, user: &str, status: &str, start_time: &str) -> Value {
    json!({
        "schedule_id": "sch-b1-haircut", "business_id": "b1", "business_name": "Dana's Salon",
        "address": "Dizengoff 100, Tel Aviv", "city": "Tel Aviv", "service_label": "haircut",
        "date": "2026-11-24", "time": "15:00", "start_time": start_time, "end_time": "2026-11-24T15:45:00+02:00",
        "duration_min": 45, "price": 120, "currency": "ILS",
        "booking_id": id, "status": status, "user_phone": user, "owner_phone": OWNER
    })
}

fn slot(time: &str) -> Value {
    let mut s = booking("", "", "", &format!("2026-11-24T{time}:00+02:00"));
    s["time"] = json!(time);
    s
}

fn result(intent: &str, outcome: &str, results: Vec<Value>, error: Option<BusinessError>) -> PipelineResult {
    PipelineResult {
        correlation_id: format!("corr-{intent}-{outcome}"),
        conversation_id: "conv-1".into(),
        user_phone: "972501234567".into(),
        message_id: "wamid.1".into(),
        intent: intent.into(),
        language: "en".into(),
        outcome: outcome.into(),
        results,
        error,
        reply: None,
    }
}

fn event(id: &str, event_type: &str, data: Value) -> DomainEvent {
    let entity_id = data["booking_id"].as_str().unwrap_or_default().to_string();
    DomainEvent { event_id: id.into(), event_type: event_type.into(), entity_id, occurred_at: now_ms(), data }
}

#[test]
fn results_render_the_facts_users_need() {
    let confirmed = booking("B-7Q2K", "972501234567", "confirmed", "2026-11-24T15:00:00+02:00");
    let body =
        render::result(&result("book", "completed", vec![json!({}), slot("15:00"), confirmed.clone()], None)).body;
    for fact in
        ["Dana's Salon", "Dizengoff 100, Tel Aviv", "Tue 24 Nov 2026", "15:00", "120 ILS", "B-7Q2K", "confirmed"]
    {
        assert!(body.contains(fact), "confirmation lacks {fact:?}:\n{body}");
    }
    let mut pending = confirmed.clone();
    pending["status"] = json!("pending");
    let body = render::result(&result("book", "completed", vec![pending], None)).body;
    assert!(body.contains("waiting") && body.contains("B-7Q2K"), "{body}");

    let no_slot = BusinessError {
        code: "no_slot".into(),
        message: "no free slot".into(),
        details: json!({"requested": {"date": "2026-11-24", "time": "15:00"}, "alternatives": [slot("15:30"), slot("16:15")]}),
    };
    let body = render::result(&result("book", "business_error", vec![], Some(no_slot))).body;
    for fact in ["15:00", "15:30", "16:15", "Dana's Salon", "Tue 24 Nov 2026"] {
        assert!(body.contains(fact), "no_slot lacks {fact:?}:\n{body}");
    }
    let conflict = BusinessError {
        code: "conflict".into(),
        message: "taken".into(),
        details: json!({"alternatives": [slot("17:00")]}),
    };
    assert!(render::result(&result("book", "business_error", vec![], Some(conflict))).body.contains("17:00"));
    let other = BusinessError {
        code: "not_found".into(),
        message: "No business offers pedicure in Haifa".into(),
        details: Value::Null,
    };
    assert!(render::result(&result("book", "business_error", vec![], Some(other)))
        .body
        .contains("No business offers pedicure in Haifa"));

    let timeout = render::result(&result("book", "timeout", vec![], None));
    assert!(timeout.body.contains("Sorry") && timeout.body.contains("try again"), "{}", timeout.body);
    assert_eq!(timeout.notification_id, "result:corr-book-timeout");
    let mut help = result("help", "reply", vec![], None);
    help.reply = Some("I can book, cancel and list appointments.".into());
    assert_eq!(render::result(&help).body, "I can book, cancel and list appointments.");

    let slots = json!({"date": "2026-11-24", "service_label": "haircut", "slots": [slot("13:00"), slot("14:15")]});
    let body = render::result(&result("availability", "completed", vec![slots], None)).body;
    assert!(body.contains("13:00") && body.contains("14:15"), "{body}");
    let list = json!({"bookings": [confirmed.clone()]});
    assert!(render::result(&result("list", "completed", vec![list], None)).body.contains("B-7Q2K"));
    let mut cancelled = confirmed;
    cancelled["status"] = json!("cancelled");
    let body = render::result(&result("cancel", "completed", vec![cancelled], None)).body;
    assert!(body.contains("cancelled") && body.contains("B-7Q2K"), "{body}");
}

#[test]
fn rejections_and_events_render_for_the_right_person() {
    let mut bodies = Vec::new();
    for reason in ["empty", "too_long", "flooding", "spam"] {
        let r = Rejection {
            message_id: format!("m-{reason}"),
            user_phone: "972501234567".into(),
            reason: reason.into(),
            detail: String::new(),
            language: "en".into(),
        };
        let m = render::rejection(&r);
        assert_eq!(
            (m.to.as_str(), m.notification_id.as_str()),
            ("972501234567", format!("rejection:m-{reason}").as_str())
        );
        bodies.push(m.body);
    }
    assert!(bodies[2].contains("slow down"), "{}", bodies[2]);
    bodies.dedup();
    assert_eq!(bodies.len(), 4, "each reason has its own text");

    let b = booking("B-1", "972501234567", "pending", "2026-11-24T15:00:00+02:00");
    let created = render::event(&event("e1", "booking.created", b.clone()));
    assert_eq!(created.len(), 1);
    assert_eq!((created[0].to.as_str(), created[0].notification_id.as_str()), (OWNER, "event:e1:972509999999"));
    assert!(created[0].body.contains("approve B-1") && created[0].body.contains("15:00"), "{}", created[0].body);

    let mut approved = b.clone();
    approved["approved_by"] = json!("owner");
    let told = render::event(&event("e2", "booking.approved", approved.clone()));
    assert_eq!(told[0].to, "972501234567");
    assert!(told[0].body.contains("approved") && told[0].body.contains("Dana's Salon"));
    approved["approved_by"] = json!("auto");
    assert!(
        render::event(&event("e3", "booking.approved", approved)).is_empty(),
        "the confirmation already told the user"
    );
    let cancelled = render::event(&event("e4", "booking.cancelled", b));
    assert_eq!(cancelled[0].to, OWNER);
    assert!(cancelled[0].body.contains("cancelled") && cancelled[0].body.contains("B-1"));
}

#[tokio::test]
async fn outbox_lines_are_cloud_api_bodies_sent_once_per_cause() {
    let dir = tempfile::tempdir().expect("tmp");
    let notifier = outbox_notifier(dir.path());
    let booked = booking("B-7Q2K", "972501234567", "confirmed", "2026-11-24T15:00:00+02:00");
    let cause = record("pipeline-executor-to-notifier", 3, &result("book", "completed", vec![booked], None));

    let sent = sent_of(&notifier.handle(&cause, &CX).await.expect("handled"));
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].notification_id.as_str(), sent[0].kind.as_str()), ("result:corr-book-completed", "result"));
    assert_eq!((sent[0].to.as_str(), sent[0].sink.as_str()), ("972501234567", "outbox"));
    // Redelivered, and delivered twice at once by another instance: nothing more is sent.
    assert!(notifier.handle(&cause, &CX).await.expect("handled").is_empty());
    let other = outbox_notifier(dir.path());
    let (a, b) = tokio::join!(notifier.handle(&cause, &CX), other.handle(&cause, &CX));
    assert!(a.expect("handled").is_empty() && b.expect("handled").is_empty());

    let lines = outbox(dir.path());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let expected = json!({
        "messaging_product": "whatsapp", "recipient_type": "individual", "to": "972501234567", "type": "text",
        "text": {"preview_url": false, "body": sent[0].body}, "correlation_id": "corr-book-completed",
        "notification_id": "result:corr-book-completed", "outbox_id": 1
    });
    assert_eq!(lines[0], expected);
}

fn rejection(message_id: &str, user: &str) -> Rejection {
    Rejection {
        message_id: message_id.into(),
        user_phone: user.into(),
        reason: "spam".into(),
        detail: String::new(),
        language: "en".into(),
    }
}

/// Two live notifiers (two owners, each holding its claims) get the same causes at once:
/// each cause is sent once, and neither ever takes the other's claim, however long the
/// other takes. The lease is an hour, so a wrong takeover cannot hide behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_live_claimers_send_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let (a, b) = (lease_notifier(dir.path(), "1h"), lease_notifier(dir.path(), "1h"));
    let n = 20;
    let mut sent = 0;
    for i in 0..n {
        let cause = record("scrub-layer-to-notifier", i, &rejection(&format!("m-race-{i}"), "972501234567"));
        let (x, y) = tokio::time::timeout(DEADLINE, async { tokio::join!(a.handle(&cause, &CX), b.handle(&cause, &CX)) })
            .await
            .expect("both deliveries end (the loser waits for the winner, not for the lease)");
        sent += sent_of(&x.expect("handled")).len() + sent_of(&y.expect("handled")).len();
    }
    let lines = outbox(dir.path());
    let ids: std::collections::BTreeSet<_> = lines.iter().map(|l| l["notification_id"].to_string()).collect();
    println!("live claimers: {n} causes delivered twice at once → {sent} sent, {} lines, {} distinct", lines.len(), ids.len());
    assert_eq!((sent, lines.len(), ids.len()), (n as usize, n as usize, n as usize));

    // A live owner's claim is not taken by anyone else before its lease ends.
    let db = Db::open(dir.path()).expect("db");
    let live = owner::Owner::register(dir.path(), "notifier").expect("owner");
    let other = owner::Owner::register(dir.path(), "notifier").expect("owner");
    assert_eq!(ledger::claim(&db, "rejection:held", live.id(), 3_600_000).await.expect("claim"), ledger::Claim::Mine);
    let second = ledger::claim(&db, "rejection:held", other.id(), 3_600_000).await.expect("claim");
    assert!(matches!(second, ledger::Claim::Busy(ms) if ms > 3_500_000), "{second:?}");
    // Once its owner is gone, it is.
    drop(live);
    assert_eq!(ledger::claim(&db, "rejection:held", other.id(), 3_600_000).await.expect("claim"), ledger::Claim::Mine);
}

#[tokio::test]
async fn dead_letters_get_an_apology_when_the_user_is_known() {
    let dir = tempfile::tempdir().expect("tmp");
    let notifier = outbox_notifier(dir.path());
    let command = json!({"command_id": "c:0", "correlation_id": "c", "action": "create_booking", "params": {},
        "user_phone": "", "slip": {"user_phone": "972501112222", "message_id": "wamid.dead"}});
    let sent = sent_of(&notifier.handle(&record("dlq-domain-services", 0, &command), &CX).await.expect("handled"));
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].to.as_str(), sent[0].kind.as_str()), ("972501112222", "apology"));
    assert_eq!(sent[0].notification_id, "apology:wamid.dead");
    assert!(sent[0].body.contains("Sorry"));
    let scrubbed = json!({"message_id": "wamid.llm", "user_phone": "972501113333", "text": "hi"});
    let sent = sent_of(&notifier.handle(&record("dlq-llm-layer", 1, &scrubbed), &CX).await.expect("handled"));
    assert_eq!(sent[0].to, "972501113333");
    // No user to apologize to: nothing sent, and no error (the record is done with).
    assert!(notifier.handle(&record("dlq-llm-layer", 2, &json!({"x": 1})), &CX).await.expect("handled").is_empty());
    assert_eq!(outbox(dir.path()).len(), 2);
}

/// A Cloud API stand-in: answers with the scripted statuses in turn (then 200) and
/// records every request.
#[derive(Clone, Default)]
struct Stub {
    script: Arc<Mutex<Vec<u16>>>,
    seen: Arc<Mutex<Vec<(String, String, Value)>>>,
}

async fn start_stub(script: Vec<u16>) -> (String, Stub) {
    use axum::extract::{Path as UrlPath, State};
    let state = Stub { script: Arc::new(Mutex::new(script.into_iter().rev().collect())), ..Stub::default() };
    let handler = |State(s): State<Stub>,
                   UrlPath(id): UrlPath<String>,
                   headers: axum::http::HeaderMap,
                   body: axum::Json<Value>| async move {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        s.seen.lock().expect("lock").push((id, auth, body.0));
        let status = s.script.lock().expect("lock").pop().unwrap_or(200);
        let code = axum::http::StatusCode::from_u16(status).expect("status");
        (code, [("retry-after", "0")], axum::Json(json!({"messages": [{"id": "wamid.out"}]})))
    };
    let app = axum::Router::new().route("/v21.0/{id}/messages", axum::routing::post(handler)).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v21.0"), state)
}

fn text() -> Text {
    Text { to: "972501234567".into(), body: "✅ Booking confirmed!".into(), correlation_id: "corr-1".into() }
}

#[tokio::test]
async fn whatsapp_sink_posts_with_the_bearer_token_and_retries_429() {
    let (base, stub) = start_stub(vec![429]).await;
    let wa = sink::WhatsApp::new(
        &base,
        "106540352242922",
        "test-token".into(),
        Some(sink::Rate { per_second: 50, burst: 50 }),
    )
    .expect("sink");
    wa.send(&text()).await.expect("sent after one retry");
    let seen = stub.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "one 429, then the retry");
    let (id, auth, body) = &seen[1];
    assert_eq!((id.as_str(), auth.as_str()), ("106540352242922", "Bearer test-token"));
    let expected = json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "972501234567",
        "type": "text", "text": {"preview_url": false, "body": "✅ Booking confirmed!"}});
    assert_eq!(body, &expected);
}

#[tokio::test]
async fn whatsapp_sink_errors_are_classified() {
    let (base, stub) = start_stub(vec![400]).await;
    let wa = sink::WhatsApp::new(&base, "1", "t".into(), None).expect("sink");
    assert!(matches!(wa.send(&text()).await, Err(SinkError::Permanent { .. })));
    assert_eq!(stub.seen.lock().expect("lock").len(), 1, "a 400 is not retried");

    let (base, stub) = start_stub(vec![503, 503, 503, 503]).await;
    let wa = sink::WhatsApp::new(&base, "1", "t".into(), None).expect("sink");
    assert!(matches!(wa.send(&text()).await, Err(SinkError::Transient { .. })));
    assert_eq!(stub.seen.lock().expect("lock").len(), 4, "retried inside the sink, then left to the stage");

    let cfg = "{sink: whatsapp, whatsapp: {api_base: http://127.0.0.1:9, phone_number_id: 1, token_env: SKEJI_TEST_UNSET_TOKEN}}";
    let err = build(cfg, tempfile::tempdir().expect("tmp").path()).err().expect("no token, no stage");
    assert!(err.contains("SKEJI_TEST_UNSET_TOKEN"), "{err}");
}

async fn await_sent(rx: &mut broadcast::Receiver<SentNotification>, id: &str) -> SentNotification {
    let found = tokio::time::timeout(DEADLINE, async {
        loop {
            match rx.recv().await {
                Ok(s) if s.notification_id == id => return s,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("observer channel closed"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{id} not sent within {DEADLINE:?}"))
}

/// A booking starting `reminder_before` (10 min) plus `lead_ms` from now.
fn approved(event_id: &str, booking_id: &str, user: &str, lead_ms: i64) -> DomainEvent {
    let start = jiff::Timestamp::from_millisecond(now_ms() + 600_000 + lead_ms).expect("timestamp");
    let mut b = booking(booking_id, user, "confirmed", &start.to_string());
    b["approved_by"] = json!("auto");
    event(event_id, "booking.approved", b)
}

async fn reminder_state(dir: &Path, booking_id: &str) -> Option<String> {
    ledger::reminder_state(&Db::open(dir).expect("db"), booking_id).await.expect("state")
}

#[tokio::test]
async fn a_reminder_is_sent_once_before_the_booking() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rx = subscribe_sent();
    let (a, b) = (outbox_notifier(dir.path()), outbox_notifier(dir.path()));
    let out =
        a.handle(&record("domain-events-to-notifier", 0, &approved("ev-r1", "B-R1", "972501000001", 800)), &CX).await;
    assert!(out.expect("handled").is_empty(), "an auto approval tells no one now");
    let sent = await_sent(&mut rx, "reminder:B-R1").await;
    assert_eq!((sent.to.as_str(), sent.kind.as_str()), ("972501000001", "reminder"));
    assert!(sent.body.contains("15:00") && sent.body.contains("10 minutes"), "{}", sent.body);
    assert_eq!(reminder_state(dir.path(), "B-R1").await.as_deref(), Some("sent"));
    drop(b);
    let to_user = outbox(dir.path()).into_iter().filter(|l| l["to"] == "972501000001").count();
    assert_eq!(to_user, 1, "two notifier instances, one reminder");
}

#[tokio::test]
async fn a_cancelled_booking_gets_no_reminder() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rx = subscribe_sent();
    let notifier = outbox_notifier(dir.path());
    let events = [approved("ev-c1", "B-C1", "972501000002", 2000), approved("ev-c2", "B-C2", "972501000003", 3000)];
    for (i, e) in events.iter().enumerate() {
        notifier.handle(&record("domain-events-to-notifier", i as i64, e), &CX).await.expect("handled");
    }
    let cancel =
        event("ev-c3", "booking.cancelled", booking("B-C1", "972501000002", "cancelled", "2026-11-24T15:00:00+02:00"));
    let owner =
        sent_of(&notifier.handle(&record("domain-events-to-notifier", 2, &cancel), &CX).await.expect("handled"));
    assert_eq!(owner[0].to, OWNER, "the owner hears of the cancellation");
    // B-C2 is due after B-C1: once its reminder went out, B-C1's would have gone before.
    await_sent(&mut rx, "reminder:B-C2").await;
    assert_eq!(reminder_state(dir.path(), "B-C1").await.as_deref(), Some("cancelled"));
    let to_cancelled = outbox(dir.path()).into_iter().filter(|l| l["to"] == "972501000002").count();
    assert_eq!(to_cancelled, 0);
}

#[tokio::test]
async fn reminders_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rx = subscribe_sent();
    let before = outbox_notifier(dir.path());
    before
        .handle(&record("domain-events-to-notifier", 0, &approved("ev-s1", "B-S1", "972501000004", 2500)), &CX)
        .await
        .expect("handled");
    assert_eq!(reminder_state(dir.path(), "B-S1").await.as_deref(), Some("scheduled"));
    drop(before); // stops its reminder task
    let _after = outbox_notifier(dir.path());
    let sent = await_sent(&mut rx, "reminder:B-S1").await;
    assert_eq!(sent.to, "972501000004");
    assert_eq!(reminder_state(dir.path(), "B-S1").await.as_deref(), Some("sent"));
}

/// The owner of a claim died mid-send (killed, or its stage rebuilt): the redelivered cause
/// is sent at once by the next notifier, although the lease is an hour.
#[tokio::test]
async fn a_claim_of_a_dead_sender_is_taken_over_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Db::open(dir.path()).expect("db");
    let notifier = lease_notifier(dir.path(), "1h");
    // A previous process of this node, SIGKILLed after claiming.
    let killed = killed_owner(dir.path(), "core");
    assert_eq!(ledger::claim(&db, "rejection:m-killed", &killed, 3_600_000).await.expect("claim"), ledger::Claim::Mine);
    // A previous generation of a stage in this process, rebuilt after claiming.
    let rebuilt = owner::Owner::register(dir.path(), "notifier").expect("owner");
    assert_eq!(ledger::claim(&db, "rejection:m-rebuilt", rebuilt.id(), 3_600_000).await.expect("claim"), ledger::Claim::Mine);
    drop(rebuilt);

    let started = std::time::Instant::now();
    for (i, m) in ["m-killed", "m-rebuilt"].into_iter().enumerate() {
        let cause = record("scrub-layer-to-notifier", i as i64, &rejection(m, "972501230000"));
        let out = tokio::time::timeout(DEADLINE, notifier.handle(&cause, &CX))
            .await
            .expect("sent without waiting for the one-hour lease");
        let sent = sent_of(&out.expect("handled"));
        assert_eq!(sent.len(), 1, "{m}: sent once by the new owner");
        let (state, holder) = ledger::claim_state(&db, &format!("rejection:{m}")).await.expect("state").expect("row");
        assert_eq!(state, "sent");
        assert_ne!(holder.as_deref(), Some(killed.as_str()), "{m}: the claim changed hands");
    }
    println!("dead senders' claims taken over: 2 of 2 sent after {} ms (lease 1 h)", started.elapsed().as_millis());
    assert_eq!(outbox(dir.path()).len(), 2);
}

/// A crash of the outbox sink at each point, as the ledger and the file are left by it,
/// then a restart and every cause delivered again: exactly one line per notification id.
/// - A: sent and appended before the crash;
/// - B: committed (line and sent mark), killed before the append;
/// - C: committed, killed in the middle of the append (a partial last line);
/// - D: claimed, killed before the commit.
#[tokio::test]
async fn an_outbox_crash_at_any_point_leaves_one_line_per_notification() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Db::open(dir.path()).expect("db");
    let causes: Vec<Record> = ["A", "B", "C", "D"]
        .iter()
        .enumerate()
        .map(|(i, m)| record("scrub-layer-to-notifier", i as i64, &rejection(&format!("m-crash-{m}"), &format!("97250100000{i}"))))
        .collect();
    let before = lease_notifier(dir.path(), "1h");
    assert_eq!(sent_of(&before.handle(&causes[0], &CX).await.expect("handled")).len(), 1);
    drop(before);

    let killed = killed_owner(dir.path(), "core");
    let body = |m: &str, to: &str| {
        let text = Text { to: to.into(), body: format!("rejected {m}"), correlation_id: format!("m-crash-{m}") };
        let mut b = text.cloud_api_body();
        b["correlation_id"] = json!(format!("m-crash-{m}"));
        b["notification_id"] = json!(format!("rejection:m-crash-{m}"));
        b
    };
    for (m, to) in [("B", "972501000001"), ("C", "972501000002")] {
        let id = format!("rejection:m-crash-{m}");
        assert_eq!(ledger::claim(&db, &id, &killed, 3_600_000).await.expect("claim"), ledger::Claim::Mine);
        let done = outbox_table::commit(&db, &id, &killed, &body(m, to)).await.expect("commit");
        assert_eq!(done, outbox_table::Committed::Written);
    }
    // C's append was cut short by the kill.
    let partial = format!("{}", json!({"outbox_id": 3, "to": "972501000002"}));
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("outbox.jsonl")).expect("outbox");
    std::io::Write::write_all(&mut f, &partial.as_bytes()[..partial.len() / 2]).expect("partial line");
    drop(f);
    assert_eq!(ledger::claim(&db, "rejection:m-crash-D", &killed, 3_600_000).await.expect("claim"), ledger::Claim::Mine);

    // Restart: the new notifier completes the file, then every cause comes again.
    let after = lease_notifier(dir.path(), "1h");
    let text = std::fs::read_to_string(dir.path().join("outbox.jsonl")).expect("outbox");
    assert!(text.ends_with('\n'), "no partial line is left: {text:?}");
    let mut sent = 0;
    for c in &causes {
        let out = tokio::time::timeout(DEADLINE, after.handle(c, &CX)).await.expect("no lease wait");
        sent += sent_of(&out.expect("handled")).len();
    }
    let lines = outbox(dir.path());
    let mut per_id: std::collections::BTreeMap<String, usize> = Default::default();
    for l in &lines {
        *per_id.entry(l["notification_id"].as_str().expect("notification_id").to_string()).or_default() += 1;
    }
    let ids: Vec<i64> = lines.iter().map(|l| l["outbox_id"].as_i64().expect("outbox_id")).collect();
    let duplicated: usize = per_id.values().map(|n| n - 1).sum();
    println!("outbox after a crash at each point: {} notifications, {} lines, {duplicated} duplicated, ids {ids:?}, {sent} sent after the restart", per_id.len(), lines.len());
    assert_eq!(per_id.len(), 4, "{per_id:?}");
    assert_eq!(duplicated, 0, "{per_id:?}");
    assert_eq!(ids, vec![1, 2, 3, 4], "lines in table order, each once");
    assert_eq!(sent, 1, "only D was still owed to the user");
    // Once more, as another restart would: nothing is appended again.
    drop(after);
    let _again = lease_notifier(dir.path(), "1h");
    assert_eq!(outbox(dir.path()).len(), 4);
}

/// A ledger from before claims named their owner is migrated in place: what it says was
/// sent stays sent, and its claims are freed by their lease.
#[tokio::test]
async fn an_old_ledger_is_migrated_and_its_claims_still_expire() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Db::open(dir.path()).expect("db");
    let old = now_ms() - 61_000;
    db.with(|c| {
        c.execute_batch(
            "CREATE TABLE notifier_sent (notification_id TEXT PRIMARY KEY, state TEXT NOT NULL,
                 claimed_ms INTEGER NOT NULL, sent_ms INTEGER);
             CREATE TABLE notifier_reminders (booking_id TEXT PRIMARY KEY, user_phone TEXT NOT NULL, body TEXT NOT NULL,
                 due_ms INTEGER NOT NULL, start_ms INTEGER NOT NULL, state TEXT NOT NULL, claimed_ms INTEGER, sent_ms INTEGER);",
        )?;
        c.execute("INSERT INTO notifier_sent VALUES ('rejection:m-old-sent', 'sent', ?1, ?1)", [old])?;
        c.execute("INSERT INTO notifier_sent VALUES ('rejection:m-old-claimed', 'claimed', ?1, NULL)", [old])?;
        Ok(())
    })
    .expect("old schema");
    let notifier = outbox_notifier(dir.path());
    let sent_before = record("scrub-layer-to-notifier", 0, &rejection("m-old-sent", "972501000010"));
    assert!(notifier.handle(&sent_before, &CX).await.expect("handled").is_empty(), "sent before the migration: not again");
    let expired = record("scrub-layer-to-notifier", 1, &rejection("m-old-claimed", "972501000011"));
    let out = notifier.handle(&expired, &CX).await.expect("handled");
    assert_eq!(sent_of(&out).len(), 1, "an old claim past its lease is taken");
    assert_eq!(outbox(dir.path()).len(), 1);
}

/// A reminder a killed process had claimed (`sending`) is sent by the next notifier at
/// once, not after the (here one-hour) lease.
#[tokio::test]
async fn a_reminder_claimed_by_a_killed_process_is_sent_at_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut rx = subscribe_sent();
    let db = Db::open(dir.path()).expect("db");
    drop(lease_notifier(dir.path(), "1h")); // creates the tables
    let start_ms = now_ms() + 600_000;
    let r = ledger::Reminder {
        booking_id: "B-K1".into(),
        user_phone: "972501000020".into(),
        body: "⏰ Reminder: haircut in 10 minutes".into(),
        start_ms,
    };
    ledger::schedule(&db, r, now_ms() - 1).await.expect("scheduled");
    let killed = killed_owner(dir.path(), "core");
    let claimed = ledger::claim_due(&db, now_ms(), &killed, 3_600_000).await.expect("claimed");
    assert_eq!(claimed.len(), 1, "the killed process had claimed it");
    assert_eq!(reminder_state(dir.path(), "B-K1").await.as_deref(), Some("sending"));

    let _after = lease_notifier(dir.path(), "1h");
    let sent = await_sent(&mut rx, "reminder:B-K1").await;
    assert_eq!(sent.to, "972501000020");
    assert_eq!(reminder_state(dir.path(), "B-K1").await.as_deref(), Some("sent"));
    assert_eq!(outbox(dir.path()).iter().filter(|l| l["to"] == "972501000020").count(), 1);
}

/// The `whatsapp` sink after a crash: a claim left by a killed sender is taken at once and
/// the message is POSTed (once more, if the dead one had got as far as the POST: the
/// documented at-least-once window); a redelivery after that POSTs nothing.
#[tokio::test]
async fn whatsapp_takes_over_a_killed_senders_claim_at_once() {
    let (base, stub) = start_stub(vec![]).await;
    let dir = tempfile::tempdir().expect("tmp");
    let token_env = "SKEJI_TEST_TAKEOVER_TOKEN";
    // A name no other test reads; set before any notifier reads it.
    std::env::set_var(token_env, "takeover-token");
    let cfg = format!(
        "{{sink: whatsapp, claim_lease: 1h, whatsapp: {{api_base: \"{base}\", phone_number_id: \"42\", token_env: {token_env}}}}}"
    );
    let notifier = build(&cfg, dir.path()).expect("notifier builds");
    let db = Db::open(dir.path()).expect("db");
    let killed = killed_owner(dir.path(), "core");
    assert_eq!(ledger::claim(&db, "rejection:m-wa", &killed, 3_600_000).await.expect("claim"), ledger::Claim::Mine);
    let cause = record("scrub-layer-to-notifier", 0, &rejection("m-wa", "972501000030"));
    let out = tokio::time::timeout(DEADLINE, notifier.handle(&cause, &CX)).await.expect("no lease wait");
    let sent = sent_of(&out.expect("handled"));
    assert_eq!((sent.len(), sent[0].sink.as_str()), (1, "whatsapp"));
    assert!(notifier.handle(&cause, &CX).await.expect("handled").is_empty(), "redelivered: not again");
    let seen = stub.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "one POST");
    assert_eq!((seen[0].0.as_str(), seen[0].2["to"].as_str()), ("42", Some("972501000030")));
}

/// An outbox commit that fails (here a trigger aborts the insert, as a busy or full
/// database would) gives the claim back: the same notifier's retry sends at once instead
/// of finding its own claim "busy" and waiting out the lease (an hour here).
#[tokio::test]
async fn a_failed_outbox_commit_releases_the_claim_for_the_retry() {
    let dir = tempfile::tempdir().expect("tmp");
    let notifier = lease_notifier(dir.path(), "1h");
    let cause = record("scrub-layer-to-notifier", 0, &rejection("m-commit-fails", "972501234567"));
    let db = rusqlite::Connection::open(dir.path().join("skeji.db")).expect("open skeji.db");
    db.execute_batch(
        "CREATE TRIGGER fail_outbox BEFORE INSERT ON notifier_outbox BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .expect("trigger");
    let failed = notifier.handle(&cause, &CX).await;
    assert!(failed.is_err(), "the delivery reports the failed commit");
    assert!(outbox(dir.path()).is_empty());
    let (state, holder) = ledger::claim_state(&Db::open(dir.path()).expect("db"), "rejection:m-commit-fails")
        .await
        .expect("state")
        .unwrap_or_default();
    println!("failed commit: claim state {state:?}, holder {holder:?}");
    assert_ne!(state, "sent");

    db.execute_batch("DROP TRIGGER fail_outbox;").expect("drop trigger");
    let retried = tokio::time::timeout(Duration::from_secs(10), notifier.handle(&cause, &CX))
        .await
        .expect("the retry does not wait for its own claim's lease")
        .expect("handled");
    assert_eq!(sent_of(&retried).len(), 1);
    assert_eq!(outbox(dir.path()).len(), 1);
}
