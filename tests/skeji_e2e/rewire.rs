//! A rewire between compatible types validates and answers: the repository's
//! `topology.yaml` with a `passthrough` (`audit`) inserted between the gateway and the
//! scrub layer through a new topic of the same payload type, and the LLM layer moved to
//! the core node, run on the embedded default. A booking still gets its confirmation,
//! every record went through the new hop, and nothing was dead-lettered.

use crate::flows::{self, Deployment, TopicLog};
use crate::EmbeddedSkeji;
use std::time::Duration;

#[path = "../fixtures/topology/rewire.rs"]
mod topology_rewire;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_between_topics_of_one_type_still_confirms_a_booking() {
    let text = topology_rewire::audit_passthrough_and_llm_on_core(topology_rewire::TOPOLOGY_YAML);
    let skeji = EmbeddedSkeji::start_text(&text, &[], Duration::from_secs(10)).await;
    let t = skeji.transport();
    let sent = TopicLog::follow(&t, "notifications-sent").await;
    let audited = TopicLog::follow(&t, "gw-audited").await;
    let dlqs = [
        TopicLog::follow(&t, "dlq-gateway").await,
        TopicLog::follow(&t, "dlq-scrub-layer").await,
        TopicLog::follow(&t, "dlq-llm-layer").await,
        TopicLog::follow(&t, "dlq-pipeline-executor").await,
    ];

    let phone = "972541239876";
    flows::post(&skeji, phone, &format!("wamid.{phone}.rewire"), "Hi, book a haircut in Tel Aviv tomorrow at 3pm").await;
    let confirmation = flows::next_to(&sent, &skeji, phone, "result", 0).await;
    assert!(confirmation.body.contains("Dana's Salon"), "{}", confirmation.body);
    assert!(confirmation.body.to_lowercase().contains("confirmed"), "{}", confirmation.body);

    // The answer came through the inserted hop, once.
    let through_audit = audited.snapshot().len();
    let dead_lettered: usize = dlqs.iter().map(|d| d.snapshot().len()).sum();
    let results = flows::to_phone(&sent.snapshot(), phone).into_iter().filter(|n| n.kind == "result").count();
    println!("rewire: {through_audit} record(s) through `audit`, {results} result(s) to the user, {dead_lettered} dead-lettered");
    assert_eq!(through_audit, 1, "the message did not go through the passthrough");
    assert_eq!(results, 1);
    assert_eq!(dead_lettered, 0);
    assert_eq!(skeji.node.shutdown().await.code, 0);
}
