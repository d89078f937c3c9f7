//! A rewire between compatible types validates and answers: the repository's
//! `topology.yaml` with a `passthrough` (`audit`) inserted between the gateway and the
//! scrub layer through a new topic of the same payload type, and the LLM layer moved to
//! the core node, run on the embedded default. A booking still gets its confirmation,
//! every record went through the new hop, and nothing was dead-lettered.

use crate::flows::{self, Deployment, TopicLog};
use async_trait::async_trait;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weir::runtime::{self, NodeHandle, NodeOptions};
use weir::stages::Registry;
use weir::topology::Topology;
use weir::transport::Transport;

#[path = "../fixtures/topology/rewire.rs"]
mod topology_rewire;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Rewired {
    node: NodeHandle,
    data: tempfile::TempDir,
}

impl Rewired {
    async fn start(text: &str) -> Rewired {
        let env = |name: &str| match name {
            "WEIR_LISTEN" | "WEIR_ADMIN_LISTEN" | "WEIR_METRICS_LISTEN" => Some("127.0.0.1:0".to_string()),
            _ => None,
        };
        let registry = Registry::builtin();
        let file = format!("{ROOT}/topology.yaml");
        let topology = Topology::parse(&file, text, &env, &registry).unwrap_or_else(|d| panic!("the rewire is refused:\n{d}"));
        let data = tempfile::tempdir().expect("tmp");
        let mut opts = NodeOptions::new(topology.plan(None).expect("plan"), Arc::new(registry));
        opts.data_dir = data.path().to_path_buf();
        opts.config_dir = PathBuf::from(ROOT);
        opts.shutdown_timeout = Duration::from_secs(20);
        Rewired { node: runtime::start(opts).await.expect("the rewired topology starts"), data }
    }
}

#[async_trait]
impl Deployment for Rewired {
    fn webhook(&self) -> String {
        let addr = self.node.ingress_addr("whatsapp-webhook").expect("webhook listener");
        format!("http://{addr}/webhooks/whatsapp")
    }
    fn data_dir(&self) -> PathBuf {
        self.data.path().to_path_buf()
    }
    fn transport(&self) -> Arc<dyn Transport> {
        self.node.transport.clone()
    }
    fn answer_bound(&self) -> Duration {
        Duration::from_secs(10)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_between_topics_of_one_type_still_confirms_a_booking() {
    let text = topology_rewire::audit_passthrough_and_llm_on_core(topology_rewire::TOPOLOGY_YAML);
    let skeji = Rewired::start(&text).await;
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
