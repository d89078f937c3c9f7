use super::*;
use crate::envelope::Headers;
use crate::apps::skeji::llm::provider::{Intent, LlmError, MockLlmProvider, Plan};
use crate::apps::skeji::llm::pipelines;
use crate::stages::Payload;
use serde_json::json;

const PHONE: &str = "972501234567";

fn message() -> ScrubbedMessage {
    ScrubbedMessage {
        message_id: "msg-1".into(),
        user_phone: PHONE.into(),
        text: "what are my bookings?".into(),
        received_at: 1_795_428_000_000,
        profile_name: Some("Dana".into()),
        conversation_id: "conv-1".into(),
        language: "en".into(),
        last_intent: Some("book".into()),
    }
}

fn record(payload: Vec<u8>) -> Record {
    Record {
        topic: Arc::from("scrub-layer-to-llm-layer"),
        partition: 0,
        offset: 7,
        key: Some(bytes::Bytes::from_static(PHONE.as_bytes())),
        headers: Headers::new(),
        payload: bytes::Bytes::from(payload),
        timestamp_ms: 0,
    }
}

fn msg_record() -> Record {
    record(serde_json::to_vec(&message()).expect("json"))
}

const CX: StageContext<'static> = StageContext { stage: "llm", attempt: 1 };

fn stage_with(mock: MockLlmProvider) -> LlmStage {
    LlmStage::new(Arc::new(mock), None)
}

fn mock_returning(result: Result<Plan, LlmError>) -> MockLlmProvider {
    let mut mock = MockLlmProvider::new();
    mock.expect_name().return_const("mock");
    mock.expect_plan().times(1).return_once(move |_| result);
    mock
}

#[tokio::test]
async fn a_plan_becomes_a_pipeline_request_with_the_message_fields() {
    let mut mock = MockLlmProvider::new();
    mock.expect_name().return_const("mock");
    mock.expect_plan()
        .withf(|i: &LlmInput| {
            i.text == "what are my bookings?"
                && i.language == "en"
                && i.last_intent.as_deref() == Some("book")
                && i.user_phone == PHONE
                && i.received_at == 1_795_428_000_000
        })
        .times(1)
        .returning(|i| Ok(Plan { intent: Intent::List, pipeline: pipelines::list(&i.user_phone), reply: None }));
    let out = stage_with(mock).handle(&msg_record(), &CX).await.expect("handled");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].name, "default");
    assert_eq!(out[0].headers, vec![(header::CONVERSATION_ID.to_string(), "conv-1".to_string())]);
    let Payload::Json(v) = &out[0].payload else { panic!("expected JSON, got {:?}", out[0].payload) };
    let req: PipelineRequest = serde_json::from_value(v.clone()).expect("a PipelineRequest");
    assert_eq!(req.conversation_id, "conv-1");
    assert_eq!(req.user_phone, PHONE);
    assert_eq!(req.message_id, "msg-1");
    assert_eq!(req.language, "en");
    assert_eq!(req.intent, "list");
    assert_eq!(req.reply, None);
    assert_eq!(req.pipeline.len(), 1);
    assert_eq!((req.pipeline[0].service.as_str(), req.pipeline[0].action.as_str()), ("bookings", "list_bookings"));
    assert_eq!(json!(req.pipeline[0].params), json!({"user_phone": PHONE}));
}

#[tokio::test]
async fn help_carries_the_reply() {
    let out = stage_with(mock_returning(Ok(Plan::help("Hi!")))).handle(&msg_record(), &CX).await.expect("handled");
    let Payload::Json(v) = &out[0].payload else { panic!("expected JSON") };
    assert_eq!(v["intent"], json!("help"));
    assert_eq!(v["pipeline"], json!([]));
    assert_eq!(v["reply"], json!("Hi!"));
}

#[tokio::test]
async fn transient_provider_errors_are_transient() {
    let stage = stage_with(mock_returning(Err(LlmError::Transient("429 from upstream".into()))));
    match stage.handle(&msg_record(), &CX).await {
        Err(StageError::Transient(m)) => assert!(m.contains("429 from upstream"), "{m}"),
        other => panic!("expected a transient error, got {other:?}"),
    }
}

#[tokio::test]
async fn permanent_provider_errors_are_permanent() {
    let stage = stage_with(mock_returning(Err(LlmError::invalid_output("unknown intent `x`"))));
    match stage.handle(&msg_record(), &CX).await {
        Err(StageError::Permanent(m)) => assert_eq!(m, "invalid LLM output: unknown intent `x`"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_invalid_plan_is_permanent() {
    let bad = Plan { intent: Intent::Book, pipeline: pipelines::list(PHONE), reply: None };
    match stage_with(mock_returning(Ok(bad))).handle(&msg_record(), &CX).await {
        Err(StageError::Permanent(m)) => assert!(m.contains("invalid pipeline") && m.contains("intent `book` needs"), "{m}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_undecodable_record_is_permanent_and_never_reaches_the_provider() {
    let mut mock = MockLlmProvider::new();
    mock.expect_plan().never();
    match stage_with(mock).handle(&record(b"{\"text\": 1}".to_vec()), &CX).await {
        Err(StageError::Permanent(m)) => assert!(m.contains("scrub-layer-to-llm-layer[0]@7"), "{m}"),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_last_intent_is_remembered() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = Db::open(dir.path()).expect("db");
    db.migrate(context::SCHEMA).expect("schema");
    let idle = 30 * 60 * 1000;
    context::enter(&db, PHONE, 1_000, idle, "en").await.expect("enter");
    let stage = LlmStage::new(Arc::new(mock_returning(Ok(Plan::help("Hi!")))), Some(db.clone()));
    stage.handle(&msg_record(), &CX).await.expect("handled");
    let ctx = context::enter(&db, PHONE, 2_000, idle, "en").await.expect("enter");
    assert_eq!(ctx.last_intent.as_deref(), Some("help"));
}

#[tokio::test]
async fn a_failing_context_store_does_not_fail_the_record() {
    let dir = tempfile::tempdir().expect("tmp");
    // No schema: the update fails, the record still gets its plan.
    let db = Db::open(dir.path()).expect("db");
    let stage = LlmStage::new(Arc::new(mock_returning(Ok(Plan::help("Hi!")))), Some(db));
    assert_eq!(stage.handle(&msg_record(), &CX).await.expect("handled").len(), 1);
}

#[test]
fn config_matches_the_topology() {
    let c: LlmConfig = serde_json::from_value(json!({
        "provider": "rules",
        "time_zone": "Asia/Jerusalem",
        "openai": {"base_url": "https://api.openai.com/v1", "model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY", "timeout": "30s"},
    }))
    .expect("config");
    assert_eq!(c.provider, ProviderName::Rules);
    assert_eq!(SkejiLlm::check(&c), Ok(()));
    let c: LlmConfig = serde_json::from_value(json!({"provider": "openai"})).expect("defaults");
    assert_eq!((c.provider, c.time_zone.as_str(), c.openai.requests_per_second), (ProviderName::Openai, "Asia/Jerusalem", 5));
    assert!(serde_json::from_value::<LlmConfig>(json!({"provider": "gpt"})).is_err());
    assert!(serde_json::from_value::<LlmConfig>(json!({"providr": "rules"})).is_err());
    assert!(serde_json::from_value::<LlmConfig>(json!({"openai": {"modle": "x"}})).is_err());
    let bad_tz: LlmConfig = serde_json::from_value(json!({"time_zone": "Mars/Olympus"})).expect("shape");
    assert!(SkejiLlm::check(&bad_tz).is_err_and(|e| e.contains("Mars/Olympus")));
}
