//! The Skeji LLM layer through its public API: the `openai` provider against a local
//! OpenAI-compatible stub (status and error mapping, what is sent), the `rules` provider
//! on the contract's examples at a fixed received time, and the `skeji-llm` kind in a node.

#[path = "common/mod.rs"]
mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir::envelope::{Headers, Record};
use weir::apps::skeji::llm::openai::ApiKey;
use weir::apps::skeji::llm::{LlmError, LlmInput, LlmProvider, LlmStage, OpenAiProvider, OpenAiSettings, RulesProvider};
use weir::apps::skeji::model::{PipelineRequest, ScrubbedMessage, Step};
use weir::stages::{Payload, Stage, StageContext, StageError};

const PHONE: &str = "972501234567";
const KEY: &str = "sk-test-not-a-real-key";

/// Monday 2026-11-23 10:00 in Jerusalem, in ms since the epoch.
fn monday_10am() -> i64 {
    "2026-11-23T10:00[Asia/Jerusalem]".parse::<jiff::Zoned>().expect("zoned").timestamp().as_millisecond()
}

fn jerusalem() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::get("Asia/Jerusalem").expect("tz")
}

// ---- the stub ------------------------------------------------------------------------

#[derive(Clone)]
enum Answer {
    Status(StatusCode, String),
    /// Never answers: the client's timeout must fire.
    Never,
}

type Seen = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

async fn handler(State((answer, seen)): State<(Answer, Seen)>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().expect("lock").push((headers, body));
    match answer {
        Answer::Status(status, body) => (status, [("content-type", "application/json")], body).into_response(),
        Answer::Never => std::future::pending().await,
    }
}

/// An OpenAI-compatible endpoint on 127.0.0.1:0 answering every request with `answer`;
/// returns its base URL and what it received.
async fn stub(answer: Answer) -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new().route("/v1/chat/completions", post(handler)).with_state((answer, seen.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1/"), seen)
}

/// A chat completion whose message content is `content`.
fn completion(content: &str) -> Answer {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "finish_reason": "stop"}],
    });
    Answer::Status(StatusCode::OK, body.to_string())
}

fn openai(base_url: &str, timeout: Duration, rps: u32) -> OpenAiProvider {
    let settings = OpenAiSettings {
        base_url: base_url.to_string(),
        model: "test-model".into(),
        api_key: ApiKey(KEY.into()),
        timeout,
        requests_per_second: NonZeroU32::new(rps).expect("rps"),
    };
    OpenAiProvider::new(settings, jerusalem()).expect("provider")
}

fn input(text: &str) -> LlmInput {
    LlmInput { text: text.into(), language: "en".into(), last_intent: None, user_phone: PHONE.into(), received_at: monday_10am() }
}

async fn openai_error(answer: Answer, timeout: Duration) -> LlmError {
    let (url, _) = stub(answer).await;
    match openai(&url, timeout, 50).plan(&input("book a haircut")).await {
        Err(e) => e,
        Ok(p) => panic!("expected an error, got {p:?}"),
    }
}

// ---- the stage, driven directly --------------------------------------------------------

fn message(text: &str) -> ScrubbedMessage {
    ScrubbedMessage {
        message_id: "msg-1".into(),
        user_phone: PHONE.into(),
        text: text.into(),
        received_at: monday_10am(),
        profile_name: None,
        conversation_id: "conv-1".into(),
        language: "en".into(),
        last_intent: None,
    }
}

fn record(msg: &ScrubbedMessage) -> Record {
    Record {
        topic: Arc::from("scrub-layer-to-llm-layer"),
        partition: 0,
        offset: 0,
        key: None,
        headers: Headers::new(),
        payload: bytes::Bytes::from(serde_json::to_vec(msg).expect("json")),
        timestamp_ms: 0,
    }
}

async fn run(stage: &LlmStage, text: &str) -> Result<PipelineRequest, StageError> {
    let cx = StageContext { stage: "llm", attempt: 1 };
    let out = stage.handle(&record(&message(text)), &cx).await?;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].name, "default");
    match &out[0].payload {
        Payload::Json(v) => Ok(serde_json::from_value(v.clone()).expect("a PipelineRequest")),
        Payload::Raw(_) => panic!("expected JSON"),
    }
}

fn step(service: &str, action: &str, params: Value) -> Step {
    let Value::Object(params) = params else { panic!("params must be an object") };
    Step { service: service.into(), action: action.into(), params }
}

fn book(city: Option<&str>, service: &str, date: &str, time: &str) -> Vec<Step> {
    let mut find = json!({"service_label": service});
    if let Some(c) = city {
        find["city"] = json!(c);
    }
    vec![
        step("business-units", "find_businesses", find),
        step(
            "schedules",
            "search_availability",
            json!({"business_ids": "${previous_step.business_ids}", "service_label": service, "date": date, "time": time}),
        ),
        step(
            "bookings",
            "create_booking",
            json!({"schedule_id": "${previous_step.schedule_id}", "start_time": "${previous_step.start_time}", "user_phone": PHONE}),
        ),
    ]
}

// ---- openai -------------------------------------------------------------------------

#[tokio::test]
async fn openai_structured_output_becomes_a_pipeline_request() {
    // What a strict structured-output model answers: every param present, unknown ones null,
    // a phone it made up (replaced by the sender's).
    let content = json!({
        "intent": "book", "language": "en", "reply": null,
        "pipeline": [
            {"service": "business-units", "action": "find_businesses", "params": {"service_label": "haircut", "city": "Tel Aviv"}},
            {"service": "schedules", "action": "search_availability", "params": {
                "business_ids": "${previous_step.business_ids}", "service_label": "haircut", "date": "2026-11-24", "time": "15:00",
                "time_from": null, "time_to": null, "city": null, "limit": null}},
            {"service": "bookings", "action": "create_booking", "params": {
                "schedule_id": "${previous_step.schedule_id}", "start_time": "${previous_step.start_time}"}},
        ],
    });
    let (url, seen) = stub(completion(&content.to_string())).await;
    let stage = LlmStage::new(Arc::new(openai(&url, Duration::from_secs(10), 50)), None);
    let req = run(&stage, "book a haircut in Tel Aviv tomorrow at 3pm").await.expect("planned");
    assert_eq!(
        req,
        PipelineRequest {
            conversation_id: "conv-1".into(),
            user_phone: PHONE.into(),
            message_id: "msg-1".into(),
            intent: "book".into(),
            language: "en".into(),
            pipeline: book(Some("Tel Aviv"), "haircut", "2026-11-24", "15:00"),
            reply: None,
        }
    );

    let seen = seen.lock().expect("lock");
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    assert_eq!(headers.get("authorization").and_then(|v| v.to_str().ok()), Some(format!("Bearer {KEY}").as_str()));
    assert_eq!(body["model"], json!("test-model"));
    assert_eq!(body["response_format"]["type"], json!("json_schema"));
    assert_eq!(body["response_format"]["json_schema"]["strict"], json!(true));
    assert_eq!(body["response_format"]["json_schema"]["schema"]["required"], json!(["intent", "language", "pipeline", "reply"]));
    assert_eq!(body["messages"][0]["role"], json!("system"));
    assert!(body["messages"][0]["content"].as_str().is_some_and(|s| s.contains("bookings.create_booking")));
    let user = body["messages"][1]["content"].as_str().expect("user turn");
    assert!(user.contains("2026-11-23 (Monday)") && user.contains("Asia/Jerusalem"), "{user}");
    assert!(user.ends_with("book a haircut in Tel Aviv tomorrow at 3pm"), "{user}");
}

#[tokio::test]
async fn openai_invalid_output_is_permanent() {
    for content in [
        "Sure! I booked it for you.".to_string(),
        json!({"intent": "book", "language": "en", "pipeline": [], "reply": null}).to_string(),
        json!({"intent": "list", "language": "en", "reply": null,
               "pipeline": [{"service": "bookings", "action": "delete_everything", "params": {}}]})
        .to_string(),
    ] {
        match openai_error(completion(&content), Duration::from_secs(10)).await {
            LlmError::Permanent(m) => assert!(m.contains("invalid LLM output"), "{content}: {m}"),
            e => panic!("{content}: expected permanent, got {e:?}"),
        }
    }
    let (url, _) = stub(completion("not json")).await;
    let stage = LlmStage::new(Arc::new(openai(&url, Duration::from_secs(10), 50)), None);
    match run(&stage, "book a haircut").await {
        Err(StageError::Permanent(m)) => assert!(m.starts_with("invalid LLM output"), "{m}"),
        other => panic!("expected a permanent stage error, got {other:?}"),
    }
}

#[tokio::test]
async fn openai_rate_limits_and_server_errors_are_transient() {
    for status in [StatusCode::TOO_MANY_REQUESTS, StatusCode::INTERNAL_SERVER_ERROR, StatusCode::SERVICE_UNAVAILABLE] {
        let e = openai_error(Answer::Status(status, r#"{"error":{"message":"busy"}}"#.into()), Duration::from_secs(10)).await;
        assert!(matches!(&e, LlmError::Transient(m) if m.contains(status.as_str()) && m.contains("busy")), "{status}: {e:?}");
    }
    let (url, _) = stub(Answer::Status(StatusCode::TOO_MANY_REQUESTS, "{}".into())).await;
    let stage = LlmStage::new(Arc::new(openai(&url, Duration::from_secs(10), 50)), None);
    assert!(matches!(run(&stage, "hi").await, Err(StageError::Transient(_))));
}

#[tokio::test]
async fn openai_client_errors_and_garbage_bodies_are_permanent() {
    for status in [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED, StatusCode::NOT_FOUND] {
        let e = openai_error(Answer::Status(status, r#"{"error":{"message":"bad schema"}}"#.into()), Duration::from_secs(10)).await;
        assert!(matches!(&e, LlmError::Permanent(m) if m.contains(status.as_str())), "{status}: {e:?}");
        assert!(!e.to_string().contains(KEY), "the key must not leak into errors");
    }
    let e = openai_error(Answer::Status(StatusCode::OK, "<html>oops</html>".into()), Duration::from_secs(10)).await;
    assert!(matches!(&e, LlmError::Permanent(m) if m.contains("unparseable")), "{e:?}");
}

#[tokio::test]
async fn openai_slow_answers_and_refused_connections_are_transient() {
    let started = Instant::now();
    let e = openai_error(Answer::Never, Duration::from_millis(300)).await;
    assert!(matches!(&e, LlmError::Transient(m) if m.contains("timed out")), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout fired late: {:?}", started.elapsed());

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let e = openai(&format!("http://{addr}/v1"), Duration::from_secs(5), 50).plan(&input("hi")).await.expect_err("refused");
    assert!(e.is_transient(), "{e:?}");
}

#[tokio::test]
async fn openai_requests_over_the_rate_wait_instead_of_failing() {
    let content = json!({"intent": "help", "language": "en", "pipeline": [], "reply": "Hi!"}).to_string();
    let (url, seen) = stub(completion(&content)).await;
    let provider = openai(&url, Duration::from_secs(10), 2);
    let started = Instant::now();
    let hi = input("hi");
    let (a, b, c) = tokio::join!(provider.plan(&hi), provider.plan(&hi), provider.plan(&hi));
    for r in [a, b, c] {
        assert_eq!(r.expect("planned").reply.as_deref(), Some("Hi!"));
    }
    // Two fit the burst; the third waits for the next permit (500 ms at 2/s).
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
    assert_eq!(seen.lock().expect("lock").len(), 3);
}

// ---- rules ----------------------------------------------------------------------------

#[tokio::test]
async fn rules_plan_the_contract_examples() {
    let stage = LlmStage::new(Arc::new(RulesProvider::new(jerusalem()).expect("rules")), None);
    let avail = |params: Value| vec![step("schedules", "search_availability", params)];
    let cases: Vec<(&str, &str, Vec<Step>)> = vec![
        ("book a haircut in Tel Aviv tomorrow at 3pm", "book", book(Some("Tel Aviv"), "haircut", "2026-11-24", "15:00")),
        ("Hi, book a haircut in Tel Aviv tomorrow at 3pm", "book", book(Some("Tel Aviv"), "haircut", "2026-11-24", "15:00")),
        ("manicure on Friday 15:30 in Haifa", "book", book(Some("Haifa"), "manicure", "2026-11-27", "15:30")),
        ("massage 18/11 at 10:00", "book", book(None, "massage", "2027-11-18", "10:00")),
        (
            "any haircut slots tomorrow afternoon?",
            "availability",
            avail(json!({"service_label": "haircut", "date": "2026-11-24", "time_from": "12:00", "time_to": "18:00"})),
        ),
        ("cancel my booking", "cancel", vec![step("bookings", "cancel_booking", json!({"user_phone": PHONE}))]),
        (
            "cancel my haircut tomorrow",
            "cancel",
            vec![step("bookings", "cancel_booking", json!({"user_phone": PHONE, "service_label": "haircut", "date": "2026-11-24"}))],
        ),
        ("what are my bookings?", "list", vec![step("bookings", "list_bookings", json!({"user_phone": PHONE}))]),
        (
            "register my business Dana's Salon in Tel Aviv, haircut 45 min 120 ILS, Sun-Thu 9-18",
            "register_business",
            vec![step(
                "business-units",
                "register_business",
                json!({
                    "name": "Dana's Salon", "city": "Tel Aviv", "owner_phone": PHONE,
                    "services": [{"label": "haircut", "duration_min": 45, "price": 120, "currency": "ILS"}],
                    "opening_hours": [{"days": ["sun", "mon", "tue", "wed", "thu"], "open": "09:00", "close": "18:00"}],
                }),
            )],
        ),
        ("approve B-7Q2K", "approve", vec![step("bookings", "confirm_booking", json!({"booking_id": "B-7Q2K", "owner_phone": PHONE}))]),
    ];
    for (text, intent, pipeline) in cases {
        let req = run(&stage, text).await.unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!((req.intent.as_str(), &req.pipeline), (intent, &pipeline), "{text}");
        assert_eq!((req.conversation_id.as_str(), req.message_id.as_str(), req.reply.as_deref()), ("conv-1", "msg-1", None));
    }
    let help = run(&stage, "what's up?").await.expect("help");
    assert_eq!(help.intent, "help");
    assert!(help.pipeline.is_empty());
    assert!(help.reply.as_deref().is_some_and(|r| r.contains("book a haircut in Tel Aviv tomorrow at 3pm")), "{help:?}");
}

// ---- the kind in a node -----------------------------------------------------------------

const NODE: &str = r#"
topics:
  in: {partitions: 2, payload_type: skeji.ScrubbedMessage}
  out: {partitions: 2, payload_type: skeji.PipelineRequest}
  dlq-llm: {partitions: 1}
stages:
  llm:
    kind: skeji-llm
    from: in
    to: out
    key: conversation_id
    dlq: dlq-llm
    config:
      provider: PROVIDER
      time_zone: Asia/Jerusalem
      openai: {base_url: "http://127.0.0.1:9/v1", model: m, api_key_env: WEIR_SKEJI_LLM_TEST_KEY_THAT_IS_NEVER_SET, timeout: 2s}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kind_plans_in_a_node_keyed_by_conversation() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = common::Options { data_dir: Some(dir.path().to_path_buf()), ..common::Options::default() };
    let node = common::start(&NODE.replace("PROVIDER", "rules"), opts).await;
    let msg = message("what are my bookings?");
    let payload = serde_json::to_vec(&msg).expect("json");
    common::produce(&node.transport, vec![common::raw("in", Some(PHONE), payload)]).await;
    let out = common::collect(&node.transport, "out", 1).await;
    assert_eq!(out[0].key_str(), Some("conv-1"));
    let req: PipelineRequest = serde_json::from_slice(&out[0].payload).expect("request");
    assert_eq!((req.intent.as_str(), req.pipeline.len()), ("list", 1));
    assert_eq!(node.shutdown().await.code, 0);
}

#[tokio::test]
async fn openai_without_its_key_fails_to_build_with_a_clear_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let opts = common::Options {
        data_dir: Some(dir.path().to_path_buf()),
        budget: weir::actors::supervisor::RestartBudget { max_restarts: 1, window: Duration::from_secs(60) },
        ..common::Options::default()
    };
    let mut node = common::start(&NODE.replace("PROVIDER", "openai"), opts).await;
    let exit = tokio::time::timeout(common::DEADLINE, node.wait()).await.expect("node gives up in time");
    assert_eq!(exit.code, 1);
    assert!(exit.reason.contains("WEIR_SKEJI_LLM_TEST_KEY_THAT_IS_NEVER_SET"), "{}", exit.reason);
}
