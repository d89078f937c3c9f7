//! Skeji's edge: the WhatsApp webhook ingress (through a real node's HTTP listener on the
//! embedded transport), the gateway (through a node, and its stage directly for the
//! redelivery cases) and the scrub layer (its stage directly).

#[path = "common/mod.rs"]
mod common;

use common::{start, Options};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use weir::envelope::{Headers, Record, TopicPartition};
use weir::connectors::whatsapp::webhook::counters;
use weir::runtime::NodeHandle;
use weir::apps::skeji::model::{InboundMessage, UserMessage};
use weir::stages::{BuildEnv, Output, Payload, Registry, Stage, StageContext};
use weir::topology::Topology;

fn ingress_yaml(name: &str, app_secret: &str) -> String {
    format!(
        r#"
topics:
  inbound: {{partitions: 2, payload_type: skeji.InboundMessage}}
ingress:
  {name}:
    kind: whatsapp
    listen: 127.0.0.1:0
    path: /webhooks/whatsapp
    to: inbound
    key: from
    max_body: 4KiB
    config: {{verify_token: tok-123, app_secret: "{app_secret}"}}
"#
    )
}

fn example(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn url(node: &NodeHandle, ingress: &str) -> String {
    format!("http://{}/webhooks/whatsapp", node.ingress_addr(ingress).expect("ingress bound"))
}

fn client() -> reqwest::Client {
    weir::net::client().expect("http client")
}

fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let hex: String = ring::hmac::sign(&key, body).as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Records on `topic` right now: the publisher answers only after the transport accepted
/// its records, so after a response this count is final for that request.
async fn published(node: &NodeHandle, topic: &str) -> i64 {
    let parts = node.transport.partition_count(topic).await.expect("topic");
    let mut n = 0;
    for p in 0..parts {
        n += node.transport.end_offset(&TopicPartition::new(topic, p)).await.expect("end offset");
    }
    n
}

async fn post(node: &NodeHandle, ingress: &str, body: Vec<u8>, signature: Option<String>) -> (u16, Value) {
    let mut req = client().post(url(node, ingress)).header("content-type", "application/json").body(body);
    if let Some(s) = signature {
        req = req.header("x-hub-signature-256", s);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_verification_handshake() {
    let node = start(&ingress_yaml("wa-verify", ""), Options::default()).await;
    let get = |q: &'static str| {
        let u = format!("{}{q}", url(&node, "wa-verify"));
        async move { client().get(u).send().await.expect("request") }
    };
    let ok = get("?hub.mode=subscribe&hub.verify_token=tok-123&hub.challenge=1158201444").await;
    assert_eq!(ok.status().as_u16(), 200);
    assert_eq!(ok.text().await.expect("body"), "1158201444");

    let wrong = get("?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1").await;
    assert_eq!(wrong.status().as_u16(), 403);
    let body: Value = wrong.json().await.expect("JSON error");
    assert_eq!(body["status"], 403);
    assert!(body["error"].as_str().is_some_and(|e| e.contains("token")), "{body}");

    let missing = get("?hub.mode=subscribe&hub.challenge=1").await;
    assert_eq!(missing.status().as_u16(), 400);
    assert_eq!(missing.json::<Value>().await.expect("JSON error")["status"], 400);
    assert_eq!(node.shutdown().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_and_publish_nothing() {
    let node = start(&ingress_yaml("wa-malformed", ""), Options::default()).await;
    let (status, body) = post(&node, "wa-malformed", b"{\"entry\": [".to_vec(), None).await;
    assert_eq!((status, body["status"].as_u64()), (400, Some(400)), "{body}");
    let (status, body) =
        post(&node, "wa-malformed", br#"{"object": "whatsapp_business_account"}"#.to_vec(), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("entry")), "{body}");
    assert_eq!(published(&node, "inbound").await, 0);
    assert_eq!(counters("wa-malformed").snapshot().malformed, 2);
    assert_eq!(node.shutdown().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_required_when_an_app_secret_is_set() {
    let node = start(&ingress_yaml("wa-signed", "s3cret"), Options::default()).await;
    let body = example("examples/skeji/webhook-book.json");

    let (status, answer) = post(&node, "wa-signed", body.clone(), None).await;
    assert_eq!(status, 401, "{answer}");
    let (status, _) = post(&node, "wa-signed", body.clone(), Some(sign("other-secret", &body))).await;
    assert_eq!(status, 401);
    let (status, _) = post(&node, "wa-signed", body.clone(), Some("sha256=zz".into())).await;
    assert_eq!(status, 401);
    let refused = published(&node, "inbound").await;
    println!("signed webhook: 3 badly signed requests → 401, {refused} records published");
    assert_eq!(refused, 0, "a refused request published something");

    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let resp = client()
        .post(url(&node, "wa-signed"))
        .header("x-hub-signature-256", sign("s3cret", &body))
        .header("traceparent", trace)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<Value>().await.expect("JSON"), json!({"received": 1, "published": 1, "ignored": 0}));
    let records = common::collect(&node.transport, "inbound", 1).await;
    let m: InboundMessage = serde_json::from_slice(&records[0].payload).expect("an InboundMessage");
    assert_eq!((m.from.as_str(), m.text.as_str()), ("972501234567", "Hi, book a haircut in Tel Aviv tomorrow at 3pm"));
    assert_eq!((m.profile_name.as_deref(), m.timestamp), (Some("Dana"), 1_764_000_000));
    assert_eq!(records[0].key_str(), Some("972501234567"));
    let tp = records[0].header("traceparent").expect("traceparent");
    assert_eq!(weir::envelope::trace_context::trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(counters("wa-signed").snapshot().unauthorized, 3);
    assert_eq!(node.shutdown().await.code, 0);
}

/// No `app_secret` on a listener others can reach: the node does not start, and the
/// error names the config key and the variable to set. (Refused before anything binds,
/// so the test never listens beyond loopback.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_webhook_on_a_non_loopback_listener_refuses_to_start() {
    let yaml = ingress_yaml("wa-exposed", "").replace("listen: 127.0.0.1:0", "listen: 0.0.0.0:0");
    let registry = Registry::with_apps();
    let topology = Topology::parse("test.yaml", &yaml, &|_| None, &registry).unwrap_or_else(|d| panic!("{d}"));
    let dir = tempfile::tempdir().expect("tmp");
    let mut opts = weir::runtime::NodeOptions::new(topology.plan(None).expect("plan"), Arc::new(registry));
    opts.data_dir = dir.path().to_path_buf();
    let error = match weir::runtime::start(opts).await {
        Ok(node) => {
            node.shutdown().await;
            panic!("an unsigned webhook on 0.0.0.0 started");
        }
        Err(e) => e.to_string(),
    };
    println!("unsigned webhook on 0.0.0.0: refused: {error}");
    assert!(error.contains("app_secret") && error.contains("WHATSAPP_APP_SECRET"), "{error}");
    assert_eq!(counters("wa-exposed").snapshot().requests, 0);
}

/// The same through the binary with the repo's topology.yaml, as an operator would run it:
/// `WEIR_LISTEN=0.0.0.0:…` without `WHATSAPP_APP_SECRET` exits non-zero naming both.
#[test]
fn weir_run_with_an_exposed_unsigned_webhook_exits_non_zero() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "-t", "topology.yaml", "--data-dir"])
        .arg(dir.path())
        .env("WEIR_LOG", "warn")
        .env("WEIR_TRANSPORT", "embedded")
        .env("WEIR_LISTEN", "0.0.0.0:0")
        .env("WEIR_ADMIN_LISTEN", "127.0.0.1:0")
        .env("WEIR_METRICS_LISTEN", "127.0.0.1:0")
        .env_remove("WHATSAPP_APP_SECRET")
        .output()
        .expect("weir runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("weir run exit {:?}: {}", out.status.code(), stderr.trim());
    assert!(!out.status.success(), "weir run started with an unsigned webhook on 0.0.0.0");
    assert!(stderr.contains("app_secret") && stderr.contains("WHATSAPP_APP_SECRET"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_other_types_are_acknowledged_not_published() {
    let node = start(&ingress_yaml("wa-status", ""), Options::default()).await;
    let (status, answer) = post(&node, "wa-status", example("examples/skeji/webhook-status.json"), None).await;
    assert_eq!((status, answer), (200, json!({"received": 1, "published": 0, "ignored": 1})));
    assert_eq!(published(&node, "inbound").await, 0);

    // Two text messages, an image, a reaction and a read receipt over two entries.
    let (status, answer) =
        post(&node, "wa-status", example("tests/fixtures/skeji_edge/webhook-mixed.json"), None).await;
    assert_eq!((status, answer), (200, json!({"received": 5, "published": 2, "ignored": 3})));
    assert_eq!(published(&node, "inbound").await, 2);
    let c = counters("wa-status").snapshot();
    assert_eq!((c.requests, c.published, c.ignored_messages, c.statuses), (2, 2, 2, 2));
    assert_eq!(node.shutdown().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_are_413() {
    let node = start(&ingress_yaml("wa-large", ""), Options::default()).await;
    let big = json!({"entry": [], "padding": "x".repeat(5000)}).to_string().into_bytes();
    let (status, answer) = post(&node, "wa-large", big, None).await;
    assert_eq!((status, answer["status"].as_u64()), (413, Some(413)), "{answer}");
    assert_eq!(published(&node, "inbound").await, 0);
    assert_eq!(node.shutdown().await.code, 0);
}

/// A transport whose broker never acknowledges.
struct Down;

#[async_trait::async_trait]
impl weir::transport::Producer for Down {
    async fn enqueue(
        &self,
        _: weir::envelope::OutgoingRecord,
    ) -> Result<weir::transport::DeliveryFuture, weir::transport::EnqueueError> {
        Ok(Box::pin(async { Err(weir::transport::TransportError::Unavailable("broker down".into())) }))
    }
    async fn flush(&self, _: std::time::Duration) -> Result<(), weir::transport::TransportError> {
        Ok(())
    }
}

#[tokio::test]
async fn an_unavailable_transport_is_503_so_whatsapp_retries() {
    let registry = Registry::with_apps();
    let checks = weir::stages::payload::PayloadChecks::build([], registry.payloads()).expect("checks");
    let plan = weir::topology::plan::IngressPlan {
        name: "wa-down".into(),
        kind: "whatsapp".into(),
        listen: "127.0.0.1:0".into(),
        path: None,
        topic: "inbound".into(),
        key: Some("from".into()),
        max_body: 64 * 1024,
        config: json!({"verify_token": "t"}),
    };
    let publisher = weir::ingress::Publisher::new(Arc::new(Down), "inbound", Some("from".into()), "wa-down", checks);
    let env = weir::ingress::IngressEnv { plan, publisher, data_dir: ".".into(), config_dir: ".".into() };
    let router = registry.ingress_factory("whatsapp").expect("kind").router(&json!({"verify_token": "t"}), env);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router.expect("router")).await });
    let resp = client()
        .post(format!("http://{addr}/webhooks/whatsapp"))
        .body(example("examples/skeji/webhook-cancel.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.json::<Value>().await.expect("JSON error")["status"], 503);
    assert_eq!(counters("wa-down").snapshot().published, 0);
}

const GATEWAY: &str = r#"
topics:
  inbound: {partitions: 2, payload_type: skeji.InboundMessage}
  users: {partitions: 2, payload_type: skeji.UserMessage}
  gateway-dlq: {partitions: 1}
stages:
  gateway:
    kind: skeji-gateway
    from: inbound
    to: users
    key: user_phone
    dlq: gateway-dlq
    config: {default_country_code: "972", dedup_window: 24h}
"#;

fn inbound(id: &str, from: &str, text: &str) -> weir::envelope::OutgoingRecord {
    let m = InboundMessage {
        wa_message_id: id.into(),
        from: from.into(),
        profile_name: None,
        text: text.into(),
        timestamp: 1_764_000_000,
        phone_number_id: None,
    };
    common::raw("inbound", Some(from), serde_json::to_vec(&m).expect("json"))
}

fn user_messages(records: &[Record]) -> Vec<UserMessage> {
    records.iter().map(|r| serde_json::from_slice(&r.payload).expect("a UserMessage")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_normalizes_phones_and_text() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start(GATEWAY, Options { data_dir: Some(dir.path().to_path_buf()), ..Options::default() }).await;
    let cases = [
        ("wamid.n1", "972501234567", "  Hi, book a haircut  \n", "972501234567", "Hi, book a haircut"),
        ("wamid.n2", "+972 50-123-4568", "hello", "972501234568", "hello"),
        ("wamid.n3", "00972 (50) 1234569", "hello", "972501234569", "hello"),
        ("wamid.n4", "050-123-4560", "hello", "972501234560", "hello"),
    ];
    let records = cases.iter().map(|(id, from, text, _, _)| inbound(id, from, text)).collect();
    common::produce(&node.transport, records).await;
    let out = user_messages(&common::collect(&node.transport, "users", cases.len()).await);
    for (id, _, _, phone, text) in cases {
        let m = out.iter().find(|m| m.message_id == id).unwrap_or_else(|| panic!("{id} not forwarded"));
        assert_eq!((m.user_phone.as_str(), m.text.as_str(), m.received_at), (phone, text, 1_764_000_000_000));
    }
    // A sender that is no phone number is dead-lettered, not forwarded.
    common::produce(&node.transport, vec![inbound("wamid.bad", "not-a-phone", "hi")]).await;
    let dead = common::collect(&node.transport, "gateway-dlq", 1).await;
    assert!(dead[0].header("weir-dlq-reason").is_some_and(|r| r.contains("not-a-phone")));
    assert_eq!(node.shutdown().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_whatsapp_message_is_forwarded_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let node = start(GATEWAY, Options { data_dir: Some(dir.path().to_path_buf()), ..Options::default() }).await;
    let phone = "972501230000";
    // The same WhatsApp id in two records (WhatsApp retried the webhook), then a sentinel
    // of the same sender: one key, one partition, so a second forward of the duplicate
    // would come before the sentinel.
    let records = vec![
        inbound("wamid.dup", phone, "book"),
        inbound("wamid.dup", phone, "book"),
        inbound("wamid.after", phone, "x"),
    ];
    common::produce(&node.transport, records).await;
    let out = user_messages(&common::collect(&node.transport, "users", 2).await);
    let forwards = out.iter().filter(|m| m.message_id == "wamid.dup").count();
    println!("redelivered wa id: 2 records in, {forwards} forwarded");
    assert_eq!((forwards, out[1].message_id.as_str()), (1, "wamid.after"));
    assert_eq!(node.shutdown().await.code, 0);
}

/// Builds stage `name` of `yaml` on `data_dir`, as the runtime would.
fn build_stage(yaml: &str, name: &str, data_dir: &Path) -> Arc<dyn Stage> {
    let registry = Registry::with_apps();
    let topology = Topology::parse("test.yaml", yaml, &|_| None, &registry).unwrap_or_else(|d| panic!("{d}"));
    let plan = topology.plan(None).expect("plan");
    let stage = plan.stages.iter().find(|s| s.name == name).expect("stage in plan");
    let env = BuildEnv { stage, node: None, data_dir: data_dir.to_path_buf(), config_dir: ".".into(), emitter: None };
    registry.stage_factory(&stage.kind).expect("kind").build(&stage.config, &env).unwrap_or_else(|e| panic!("{e}"))
}

fn record(topic: &str, offset: i64, payload: &impl serde::Serialize) -> Record {
    Record {
        topic: Arc::from(topic),
        partition: 0,
        offset,
        key: None,
        headers: Headers::new(),
        payload: serde_json::to_vec(payload).expect("json").into(),
        timestamp_ms: 0,
    }
}

fn json_of(o: &Output) -> Value {
    match &o.payload {
        Payload::Json(v) => v.clone(),
        Payload::Raw(b) => serde_json::from_slice(b).expect("JSON output"),
    }
}

const CX: StageContext<'static> = StageContext { stage: "test", attempt: 1 };

#[tokio::test]
async fn the_same_kafka_record_redelivered_is_forwarded_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let gateway = build_stage(GATEWAY, "gateway", dir.path());
    let m = InboundMessage {
        wa_message_id: "wamid.same".into(),
        from: "972501239999".into(),
        profile_name: None,
        text: "hi".into(),
        timestamp: 1,
        phone_number_id: None,
    };
    let first = record("inbound", 7, &m);
    assert_eq!(gateway.handle(&first, &CX).await.expect("handled").len(), 1);
    // The runtime retries or redelivers the same record (its output may never have landed).
    let retry = StageContext { attempt: 2, ..CX };
    assert_eq!(gateway.handle(&first, &retry).await.expect("handled").len(), 1);
    assert_eq!(gateway.handle(&first, &CX).await.expect("handled").len(), 1);
    // A new record with that id is WhatsApp's redelivery: dropped, even by a new instance.
    drop(gateway);
    let gateway = build_stage(GATEWAY, "gateway", dir.path());
    assert!(gateway.handle(&record("inbound", 8, &m), &CX).await.expect("handled").is_empty());
    let out = gateway.handle(&first, &CX).await.expect("handled");
    assert_eq!(json_of(&out[0])["message_id"], "wamid.same");
}

const SCRUB: &str = r#"
topics:
  users: {partitions: 1, payload_type: skeji.UserMessage}
  scrubbed: {partitions: 1, payload_type: skeji.ScrubbedMessage}
  rejected: {partitions: 1, payload_type: skeji.Rejection}
stages:
  scrub:
    kind: skeji-scrub
    from: users
    to: {default: scrubbed, rejected: rejected}
    key: user_phone
    config: {max_chars: 40, flood: {per_minute: 1, burst: 3}, conversation_idle: 30m}
"#;

fn user_message(id: &str, phone: &str, text: &str, received_at: i64) -> Record {
    let m = UserMessage {
        message_id: id.into(),
        user_phone: phone.into(),
        text: text.into(),
        received_at,
        profile_name: None,
    };
    record("users", 0, &m)
}

/// (output name, business reason, payload) of the one output.
async fn scrub_one(stage: &Arc<dyn Stage>, m: Record) -> (String, Option<String>, Value) {
    let out = stage.handle(&m, &CX).await.expect("handled");
    assert_eq!(out.len(), 1);
    (out[0].name.to_string(), out[0].business.clone(), json_of(&out[0]))
}

#[tokio::test]
async fn scrub_rejects_empty_long_spam_and_flooding() {
    let dir = tempfile::tempdir().expect("tmp");
    let scrub = build_stage(SCRUB, "scrub", dir.path());
    let cases = [
        ("r-empty", "972500000001", "", "empty"),
        ("r-long", "972500000002", "please book me a haircut tomorrow at 3pm or 4pm", "too_long"),
        ("r-link", "972500000003", "win at bit.ly/3xYz", "spam"),
        ("r-crypto", "972500000004", "FREE crypto giveaway!!", "spam"),
        ("r-repeat", "972500000005", "aaaaaaaaaaaaaaaaaaaaaaaaa", "spam"),
    ];
    for (id, phone, text, reason) in cases {
        let (name, business, v) = scrub_one(&scrub, user_message(id, phone, text, 1_000)).await;
        assert_eq!((name.as_str(), business.as_deref()), ("rejected", Some(reason)), "{id}");
        assert_eq!(
            (v["message_id"].as_str(), v["user_phone"].as_str(), v["reason"].as_str()),
            (Some(id), Some(phone), Some(reason))
        );
    }
    // A burst of 3 passes; the 4th message within the minute is flooding. Other phones are not affected.
    let flooder = "972500000009";
    for i in 0..3 {
        let (name, ..) = scrub_one(&scrub, user_message(&format!("f{i}"), flooder, "hello", 1_000 + i)).await;
        assert_eq!(name, "default", "message {i} of the burst");
    }
    let (name, business, _) = scrub_one(&scrub, user_message("f3", flooder, "hello", 1_004)).await;
    assert_eq!((name.as_str(), business.as_deref()), ("rejected", Some("flooding")));
    let (name, ..) = scrub_one(&scrub, user_message("other", "972500000010", "hello", 1_005)).await;
    assert_eq!(name, "default");
}

#[tokio::test]
async fn scrub_keeps_the_conversation_until_30_minutes_of_silence() {
    let dir = tempfile::tempdir().expect("tmp");
    let scrub = build_stage(SCRUB, "scrub", dir.path());
    let phone = "972500000020";
    let t0 = 1_764_000_000_000;
    let (name, business, first) = scrub_one(&scrub, user_message("c1", phone, "book a haircut", t0)).await;
    assert_eq!((name.as_str(), business), ("default", None));
    assert_eq!((first["language"].as_str(), first["text"].as_str()), (Some("en"), Some("book a haircut")));
    let conversation = first["conversation_id"].as_str().expect("conversation id").to_string();

    let (_, _, second) = scrub_one(&scrub, user_message("c2", phone, "שלום, תור מחר", t0 + 29 * 60_000)).await;
    assert_eq!(second["conversation_id"].as_str(), Some(conversation.as_str()));
    assert_eq!(second["language"], "he");

    let (_, _, third) = scrub_one(&scrub, user_message("c3", phone, "hi again", t0 + 60 * 60_000)).await;
    assert_ne!(third["conversation_id"].as_str(), Some(conversation.as_str()), "a new conversation after 30 min");
    assert!(third["conversation_id"].as_str().is_some_and(|c| !c.is_empty()));
}
